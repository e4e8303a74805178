//! A memory file: the Markdown body, then its fields as JSON in a trailing
//! `<!-- MEMORY_FIELDS ... -->` comment (the layout OpenViking 0.5.2 writes, so either server
//! reads the other's files). Merging an extracted memory into an existing file follows each
//! field's merge operation (immutable, replace, patch) and, for a plain patch value, the
//! field's shape: a scalar is replaced, Markdown fact lines are merged by key.

use serde_json::{Map, Value};

use super::types::{Field, MemoryType, MergeOp, Shape};

const OPEN: &str = "<!-- MEMORY_FIELDS";
const CLOSE: &str = "-->";

#[derive(Debug, Clone, PartialEq)]
pub struct MemoryFile {
    pub body: String,
    pub fields: Map<String, Value>,
}

/// Split a stored file into body and fields (a file without the trailer is all body).
pub fn parse(text: &str) -> MemoryFile {
    if let Some(at) = text.rfind(OPEN) {
        let rest = &text[at + OPEN.len()..];
        if let Some(end) = rest.rfind(CLOSE) {
            if let Ok(Value::Object(fields)) = serde_json::from_str(rest[..end].trim()) {
                return MemoryFile {
                    body: text[..at].trim_end().to_string(),
                    fields,
                };
            }
        }
    }
    MemoryFile {
        body: text.trim_end().to_string(),
        fields: Map::new(),
    }
}

/// The stored text of a memory file.
pub fn render(file: &MemoryFile) -> String {
    let json = serde_json::to_string_pretty(&Value::Object(file.fields.clone()))
        .unwrap_or_else(|_| "{}".into())
        // A "-->" inside a value would end the comment early; this spelling reads back the same.
        .replace("-->", "--\\u003e");
    if file.body.trim().is_empty() {
        format!("{OPEN}\n{json}\n{CLOSE}\n")
    } else {
        format!("{}\n\n{OPEN}\n{json}\n{CLOSE}\n", file.body.trim_end())
    }
}

/// A line compared ignoring bullet markers, case, spacing and trailing punctuation.
pub fn norm_line(line: &str) -> String {
    let t = line
        .trim()
        .trim_start_matches(['-', '*', '+'])
        .trim()
        .trim_end_matches(['.', ';', ','])
        .to_lowercase();
    t.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// True when every non-empty line of `new` is already in `old` (the conversation only
/// repeated what is stored).
pub fn lines_contained(old: &str, new: &str) -> bool {
    let seen: std::collections::HashSet<String> = old.lines().map(norm_line).collect();
    let mut any = false;
    for line in new.lines() {
        let n = norm_line(line);
        if n.is_empty() {
            continue;
        }
        any = true;
        if !seen.contains(&n) {
            return false;
        }
    }
    any
}

/// The key of a `- Key: value` fact line (lowercase, bullets and emphasis dropped), if any.
pub fn line_key(line: &str) -> Option<String> {
    let t = line.trim().trim_start_matches(['-', '*', '+']).trim();
    let (key, value) = t.split_once(':')?;
    let key = key.trim().trim_matches('*').trim().to_lowercase();
    let key = key.split_whitespace().collect::<Vec<_>>().join(" ");
    let value = value.trim().trim_start_matches('*').trim();
    let plausible = !key.is_empty()
        && key.chars().count() <= 48
        && key.split(' ').count() <= 6
        && !key.contains("http")
        && !value.is_empty();
    plausible.then_some(key)
}

/// Old Markdown lines merged with new ones: a new `Key: value` line replaces the old lines of
/// that key (in place of the first), other new lines are appended unless already present.
pub fn merge_lines(old: &str, new: &str) -> String {
    let mut lines: Vec<String> = old.trim_end().lines().map(str::to_string).collect();
    for line in new.lines() {
        let n = norm_line(line);
        if n.is_empty() || lines.iter().any(|l| norm_line(l) == n) {
            continue;
        }
        let key = line_key(line);
        let same_key: Vec<usize> = match &key {
            Some(k) => lines
                .iter()
                .enumerate()
                .filter(|(_, l)| line_key(l).as_ref() == Some(k))
                .map(|(i, _)| i)
                .collect(),
            None => Vec::new(),
        };
        match same_key.first() {
            Some(&first) => {
                lines[first] = line.trim_end().to_string();
                for &i in same_key[1..].iter().rev() {
                    lines.remove(i);
                }
            }
            None => lines.push(line.trim_end().to_string()),
        }
    }
    lines.join("\n")
}

/// SEARCH/REPLACE and DELETE blocks (0.5.2's patch form) applied to `old`: each searched text
/// must occur exactly once. `None` for `old` = no stored value: the replacements, joined.
pub fn apply_blocks(old: Option<&str>, blocks: &[Value]) -> Result<String, String> {
    let Some(old) = old else {
        let parts: Vec<&str> = blocks
            .iter()
            .filter_map(|b| b.get("replace").and_then(Value::as_str))
            .collect();
        return Ok(parts.join("\n"));
    };
    let mut text = old.to_string();
    for (i, b) in blocks.iter().enumerate() {
        let (search, replace, whole_lines) = match (
            b.get("search").and_then(Value::as_str),
            b.get("replace").and_then(Value::as_str),
            b.get("delete").and_then(Value::as_str),
        ) {
            (Some(s), Some(r), None) => (s, r, false),
            (None, None, Some(d)) => (d, "", true),
            _ => return Err(format!("block {i} is neither search/replace nor delete")),
        };
        if search.is_empty() {
            return Err(format!("block {i} searches for empty text"));
        }
        let found = text.matches(search).count();
        if found != 1 {
            return Err(format!(
                "block {i}: the searched text occurs {found} times in the stored memory (must be once)"
            ));
        }
        let at = text.find(search).unwrap_or(0);
        let mut end = at + search.len();
        if whole_lines && text[end..].starts_with('\n') {
            end += 1; // a deleted line takes its line break with it
        }
        text.replace_range(at..end, replace);
    }
    Ok(text.trim_end().to_string())
}

/// A field's new value from its stored value and the extracted one (a string, or
/// `{"blocks": [...]}` on a patch field), by the field's merge operation and shape.
pub fn merge_value(f: &Field, old: Option<&str>, new: &Value) -> Result<Option<String>, String> {
    let old = old.filter(|o| !o.is_empty());
    match (f.merge, old) {
        (MergeOp::Immutable, Some(_)) => return Ok(None),
        (MergeOp::Replace, _) | (MergeOp::Immutable, None) => {
            return Ok(new.as_str().map(str::to_string))
        }
        (MergeOp::Patch, _) => {}
    }
    if let Some(blocks) = new.get("blocks").and_then(Value::as_array) {
        return apply_blocks(old, blocks).map(Some);
    }
    let Some(v) = new.as_str() else {
        return Ok(None);
    };
    if v.trim().is_empty() {
        return Ok(None); // an empty patch keeps the stored value (as 0.5.2)
    }
    Ok(Some(match (f.shape, old) {
        (Shape::Lines, Some(existing)) => merge_lines(existing, v),
        _ => v.to_string(),
    }))
}

/// Merge the extracted `fields` into the stored ones by each field's merge operation.
/// `Err` = a patch could not be applied (the operation is skipped, nothing is written).
pub fn merge_fields(
    t: &MemoryType,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    let mut out = old.clone();
    for f in &t.fields {
        let Some(v) = new.get(f.name) else {
            continue;
        };
        let merged = merge_value(f, old.get(f.name).and_then(Value::as_str), v)
            .map_err(|e| format!("{}.{}: {e}", t.name, f.name))?;
        if let Some(m) = merged {
            out.insert(f.name.to_string(), Value::String(m));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_and_merge() {
        let mut fields = Map::new();
        fields.insert("topic".into(), json!("tea --> coffee"));
        let f = MemoryFile {
            body: "- likes tea".into(),
            fields,
        };
        let text = render(&f);
        assert!(text.starts_with("- likes tea\n\n<!-- MEMORY_FIELDS\n"));
        assert_eq!(parse(&text), f);
        assert_eq!(parse("plain").body, "plain");
        assert_eq!(
            merge_lines("- Likes tea.\n- runs", "- likes tea\n- swims\n- swims"),
            "- Likes tea.\n- runs\n- swims"
        );
        assert!(lines_contained("- Likes tea.\n- runs", "* likes TEA"));
        assert!(!lines_contained("- Likes tea.", "- likes coffee"));
        let types = super::super::types::builtin();
        let old = json!({"user": "bob", "topic": "tea", "content": "- green"});
        let new = json!({"user": "eve", "topic": "tea", "content": "- black\n- green"});
        let m = merge_fields(
            &types[1],
            old.as_object().unwrap(),
            new.as_object().unwrap(),
        )
        .unwrap();
        assert_eq!(m["user"], "bob");
        assert_eq!(m["content"], "- green\n- black");
    }

    #[test]
    fn a_stale_fact_is_replaced_by_its_new_value() {
        let profile = &super::super::types::builtin()[0];
        let old = json!({"content": "# alice\n- Residence: Berlin (as of 2025-01-02)\n- Occupation: nurse (as of 2025-01-02)\n- Allergic to peanuts"});
        let new = json!({"content": "# alice\n- **Residence:** Lisbon (as of 2026-12-07)\n- allergic to peanuts."});
        let m = merge_fields(profile, old.as_object().unwrap(), new.as_object().unwrap()).unwrap();
        assert_eq!(
            m["content"],
            "# alice\n- **Residence:** Lisbon (as of 2026-12-07)\n- Occupation: nurse (as of 2025-01-02)\n- Allergic to peanuts"
        );
        // Lines without a key are a union (a weak model that reports only news loses nothing).
        assert_eq!(merge_lines("- a\n- b", "- c\n- B"), "- a\n- b\n- c");
        assert_eq!(line_key("- see https://x.y/z"), None);
        assert_eq!(line_key("# alice"), None);
        // 0.5.2's block form edits the stored text exactly, or is refused.
        let blocks = json!({"content": {"blocks": [
            {"search": "Occupation: nurse", "replace": "Occupation: doctor"},
            {"delete": "- Allergic to peanuts"}]}});
        let m = merge_fields(
            profile,
            old.as_object().unwrap(),
            blocks.as_object().unwrap(),
        )
        .unwrap();
        assert_eq!(
            m["content"],
            "# alice\n- Residence: Berlin (as of 2025-01-02)\n- Occupation: doctor (as of 2025-01-02)"
        );
        let missing =
            json!({"content": {"blocks": [{"search": "Occupation: pilot", "replace": "x"}]}});
        assert!(merge_fields(
            profile,
            old.as_object().unwrap(),
            missing.as_object().unwrap()
        )
        .is_err());
        // A scalar patch field takes the new value; an immutable one keeps a non-empty value.
        let types = super::super::types::builtin();
        let identity = types.iter().find(|t| t.name == "identity").unwrap();
        let old = identity.init_fields();
        let new = json!({"creature": "robot", "name": "Nova"});
        let m = merge_fields(identity, &old, new.as_object().unwrap()).unwrap();
        assert_eq!(m["creature"], "robot");
        assert_eq!(m["name"], "Nova");
        let again = json!({"name": "Other"});
        let m2 = merge_fields(identity, &m, again.as_object().unwrap()).unwrap();
        assert_eq!(m2["name"], "Nova");
    }
}
