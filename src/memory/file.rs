//! A memory file: the Markdown body, then its fields as JSON in a trailing
//! `<!-- MEMORY_FIELDS ... -->` comment (the layout OpenViking 0.5.2 writes, so either server
//! reads the other's files). Merging an extracted memory into an existing file follows each
//! field's merge operation.

use serde_json::{Map, Value};

use super::types::{MemoryType, MergeOp};

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

/// Old text plus the new lines it does not already contain.
pub fn patch_lines(old: &str, new: &str) -> String {
    let seen: std::collections::HashSet<String> = old
        .lines()
        .map(norm_line)
        .filter(|l| !l.is_empty())
        .collect();
    let mut out = old.trim_end().to_string();
    let mut added = std::collections::HashSet::new();
    for line in new.lines() {
        let n = norm_line(line);
        if n.is_empty() || seen.contains(&n) || !added.insert(n) {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(line.trim_end());
    }
    out
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

/// Merge the extracted `fields` into the stored ones by each field's merge operation.
pub fn merge_fields(
    t: &MemoryType,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
) -> Map<String, Value> {
    let mut out = old.clone();
    for f in &t.fields {
        let Some(v) = new.get(f.name).and_then(Value::as_str) else {
            continue;
        };
        let merged = match (f.merge, old.get(f.name).and_then(Value::as_str)) {
            (MergeOp::Immutable, Some(existing)) if !existing.is_empty() => continue,
            (MergeOp::Patch, Some(existing)) => patch_lines(existing, v),
            _ => v.to_string(),
        };
        out.insert(f.name.to_string(), Value::String(merged));
    }
    out
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
            patch_lines("- Likes tea.\n- runs", "- likes tea\n- swims\n- swims"),
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
        );
        assert_eq!(m["user"], "bob");
        assert_eq!(m["content"], "- green\n- black");
    }
}
