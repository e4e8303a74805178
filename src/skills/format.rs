//! The Agent Skills `SKILL.md` format as OpenViking 0.5.2 reads it: YAML front matter between
//! `---` fences (`name` and `description` required; `allowed-tools`, `tags` and `metadata`
//! kept), then the Markdown instructions. Parsing for installation ([`parse_definition`],
//! [`from_structured`]), the `validate` verdict ([`verdict`]), and what is stored: the
//! re-serialized `SKILL.md` ([`to_skill_md`]) and the L0 abstract, a YAML block of the header
//! fields ([`abstract_yaml`]) that listings read back ([`abstract_meta`]).

use std::sync::OnceLock;

use regex::Regex;
use serde_json::{json, Map, Value};

use crate::error::ServiceError;

/// Longest skill name (0.5.2).
pub const MAX_NAME_CHARS: usize = 64;
/// Longest description before `validate` flags it (0.5.2; a warning unless strict).
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Body lines above which a strict `validate` warns (0.5.2).
pub const MAX_BODY_LINES: usize = 500;
/// Largest `SKILL.md` accepted (inline text or uploaded file). 0.5.2 has no bound of its own
/// beyond the request size; this keeps YAML parsing and the stored definition small.
pub const MAX_DEFINITION_BYTES: usize = 1024 * 1024;

/// A skill ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct SkillDef {
    pub name: String,
    pub description: String,
    /// The Markdown instructions (trimmed).
    pub body: String,
    pub allowed_tools: Vec<String>,
    /// `allowed-tools` was present (even empty): kept on re-serialization.
    pub allowed_tools_declared: bool,
    pub tags: Vec<Value>,
    pub metadata: Option<Value>,
}

fn front_matter_re() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    // The fence rule of 0.5.2's loader: `---`, optional blanks, newline, the YAML (shortest),
    // a newline, `---`, optional blanks, newline, the body.
    RE.get_or_init(|| Regex::new(r"(?s)\A---\s*\n(.*?)\n---\s*\n(.*)\z").ok())
        .as_ref()
}

/// (front matter, body), or `None` when the text has no front matter.
pub fn split_front_matter(text: &str) -> Option<(&str, &str)> {
    let caps = front_matter_re()?.captures(text)?;
    Some((caps.get(1)?.as_str(), caps.get(2)?.as_str()))
}

/// The front matter as a JSON object (a YAML mapping with string keys).
fn front_matter_map(text: &str) -> Result<(Map<String, Value>, String), String> {
    let (front, body) = split_front_matter(text)
        .ok_or_else(|| "SKILL.md must have YAML frontmatter".to_string())?;
    let value: Value =
        serde_norway::from_str(front).map_err(|e| format!("Invalid YAML frontmatter: {e}"))?;
    match value {
        Value::Object(map) => Ok((map, body.trim().to_string())),
        _ => Err("Invalid YAML frontmatter".into()),
    }
}

/// 0.5.2's name rule: a non-empty string of at most 64 ASCII letters, digits, `_` and `-`
/// (surrounding blanks trimmed). Returns the trimmed name.
pub fn check_name(name: Option<&Value>) -> Result<String, ServiceError> {
    let name = match name {
        None | Some(Value::Null) => {
            return Err(
                ServiceError::invalid_argument("Skill must have 'name' field")
                    .with_details(json!({"field": "name"})),
            )
        }
        Some(Value::String(s)) => s.trim(),
        Some(_) => {
            return Err(
                ServiceError::invalid_argument("Skill 'name' must be a non-empty string")
                    .with_details(json!({"field": "name"})),
            )
        }
    };
    if name.is_empty() {
        return Err(
            ServiceError::invalid_argument("Skill 'name' must be a non-empty string")
                .with_details(json!({"field": "name"})),
        );
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(ServiceError::invalid_argument(format!(
            "Skill name cannot exceed {MAX_NAME_CHARS} characters"
        ))
        .with_details(
            json!({"field": "name", "max_length": MAX_NAME_CHARS, "actual_length": chars}),
        ));
    }
    if !name_chars_ok(name) {
        return Err(
            ServiceError::invalid_argument(format!("Invalid skill name: {name}")).with_details(
                json!({"field": "name", "reason": "skill name may only contain ASCII letters, \
                       numbers, underscores, and hyphens"}),
            ),
        );
    }
    Ok(name.to_string())
}

fn name_chars_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A skill name from a URL path, checked like a front-matter name.
pub fn check_path_name(name: &str) -> Result<String, ServiceError> {
    check_name(Some(&Value::String(name.to_string())))
}

/// `allowed-tools` as 0.5.2's loader reads it: a list of strings, or one string split on
/// blanks and commas outside parentheses (`Bash(git add:*) Read`).
fn split_allowed_tools(value: &Value) -> Result<Vec<String>, String> {
    const WRONG: &str =
        "Skill 'allowed-tools' must be a space-separated string or an array of strings";
    match value {
        Value::Array(items) => items
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| WRONG.to_string())
            })
            .collect(),
        Value::String(s) => {
            let mut tools = Vec::new();
            let mut current = String::new();
            let mut depth: i64 = 0;
            for c in s.trim().chars() {
                if c == '(' {
                    depth += 1;
                } else if c == ')' {
                    depth -= 1;
                    if depth < 0 {
                        return Err("Skill 'allowed-tools' has unbalanced parentheses".into());
                    }
                }
                if depth == 0 && (c.is_whitespace() || c == ',') {
                    if !current.is_empty() {
                        tools.push(std::mem::take(&mut current));
                    }
                    continue;
                }
                current.push(c);
            }
            if depth != 0 {
                return Err("Skill 'allowed-tools' has unbalanced parentheses".into());
            }
            if !current.is_empty() {
                tools.push(current);
            }
            Ok(tools)
        }
        _ => Err(WRONG.into()),
    }
}

fn as_list(v: Option<&Value>) -> Vec<Value> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(other) => vec![other.clone()],
    }
}

/// The description: a non-empty string. (0.5.2 stores whatever the key holds, and then its
/// own listing hides a skill whose description is empty; refusing it here keeps every
/// installed skill listable.)
fn check_description(v: Option<&Value>) -> Result<String, ServiceError> {
    match v {
        None | Some(Value::Null) => Err(ServiceError::invalid_argument(
            "Skill must have 'description' field",
        )
        .with_details(json!({"field": "description"}))),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(_) => Err(ServiceError::invalid_argument(
            "Skill 'description' must be a non-empty string",
        )
        .with_details(json!({"field": "description"}))),
    }
}

fn bad_definition(message: String) -> ServiceError {
    ServiceError::invalid_argument(message).with_details(json!({"field": "data"}))
}

/// Parse `SKILL.md` text for installation (0.5.2's loader, then its name check).
pub fn parse_definition(text: &str) -> Result<SkillDef, ServiceError> {
    if text.len() > MAX_DEFINITION_BYTES {
        return Err(too_large(text.len()));
    }
    let (meta, body) = front_matter_map(text).map_err(bad_definition)?;
    let name = check_name(meta.get("name"))?;
    let description = check_description(meta.get("description"))?;
    let declared = meta.contains_key("allowed-tools");
    let allowed_tools = match meta.get("allowed-tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => split_allowed_tools(v).map_err(bad_definition)?,
    };
    Ok(SkillDef {
        name,
        description,
        body,
        allowed_tools,
        allowed_tools_declared: declared,
        tags: as_list(meta.get("tags")),
        metadata: meta.get("metadata").cloned(),
    })
}

/// The refusal of a definition over [`MAX_DEFINITION_BYTES`].
pub fn too_large(bytes: usize) -> ServiceError {
    ServiceError::new(
        crate::error::ErrorCode::PayloadTooLarge,
        format!("SKILL.md is {bytes} bytes; at most {MAX_DEFINITION_BYTES} are accepted"),
    )
    .with_details(json!({"field": "data", "max_bytes": MAX_DEFINITION_BYTES}))
}

/// A skill given as a JSON object (`{"name", "description", "content", "tags",
/// "allowed_tools" | "allowed-tools", "metadata"}`), as 0.5.2 accepts structured data.
pub fn from_structured(data: &Map<String, Value>) -> Result<SkillDef, ServiceError> {
    let name = check_name(data.get("name"))?;
    let description = check_description(data.get("description"))?;
    let body = match data.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(_) => {
            return Err(
                ServiceError::invalid_argument("Skill 'content' must be a string")
                    .with_details(json!({"field": "content"})),
            )
        }
    };
    if body.len() > MAX_DEFINITION_BYTES {
        return Err(too_large(body.len()));
    }
    let tools_value = data
        .get("allowed_tools")
        .filter(|v| !is_empty_value(v))
        .or_else(|| data.get("allowed-tools"));
    let declared = tools_value.is_some();
    let allowed_tools = match tools_value {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => split_allowed_tools(v).map_err(bad_definition)?,
    };
    Ok(SkillDef {
        name,
        description,
        body,
        allowed_tools,
        allowed_tools_declared: declared,
        tags: as_list(data.get("tags")),
        metadata: data.get("metadata").cloned(),
    })
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn yaml(value: &Value) -> String {
    // Serializing a JSON value cannot fail (string keys only).
    serde_norway::to_string(value).unwrap_or_default()
}

/// The stored `SKILL.md`: the header fields 0.5.2 keeps, in its order, then the body.
pub fn to_skill_md(def: &SkillDef) -> String {
    let mut front = Map::new();
    front.insert("name".into(), def.name.clone().into());
    front.insert("description".into(), def.description.clone().into());
    if !def.allowed_tools.is_empty() || def.allowed_tools_declared {
        front.insert("allowed-tools".into(), def.allowed_tools.join(" ").into());
    }
    if !def.tags.is_empty() {
        front.insert("tags".into(), Value::Array(def.tags.clone()));
    }
    if let Some(m) = &def.metadata {
        front.insert("metadata".into(), m.clone());
    }
    format!("---\n{}---\n\n{}", yaml(&Value::Object(front)), def.body)
}

/// The L0 abstract: a YAML block of name, description, tags and allowed tools.
pub fn abstract_yaml(def: &SkillDef) -> String {
    let mut meta = Map::new();
    meta.insert("name".into(), def.name.clone().into());
    meta.insert("description".into(), def.description.clone().into());
    if !def.tags.is_empty() {
        meta.insert("tags".into(), Value::Array(def.tags.clone()));
    }
    if !def.allowed_tools.is_empty() {
        meta.insert(
            "allowed_tools".into(),
            Value::Array(def.allowed_tools.iter().cloned().map(Value::from).collect()),
        );
    }
    yaml(&Value::Object(meta)).trim().to_string()
}

/// The header fields read back from an abstract (empty when it is not a YAML mapping).
pub fn abstract_meta(text: &str) -> Map<String, Value> {
    match serde_norway::from_str::<Value>(text) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// Whether an abstract describes a valid skill (a valid name and a non-empty description).
pub fn meta_is_skill(meta: &Map<String, Value>) -> bool {
    check_name(meta.get("name")).is_ok()
        && meta
            .get("description")
            .and_then(Value::as_str)
            .is_some_and(|d| !d.trim().is_empty())
}

fn issue(rule: &str, message: &str, field: &str) -> Value {
    let mut m = Map::new();
    m.insert("rule".into(), rule.into());
    m.insert("message".into(), message.into());
    if !field.is_empty() {
        m.insert("field".into(), field.into());
    }
    Value::Object(m)
}

/// The `validate` verdict of 0.5.2 (always an answer, never a refusal): `data` is `SKILL.md`
/// text or a structured skill.
pub fn verdict(
    data: &Value,
    strict: bool,
    skill_dir_name: Option<&str>,
    source_path: Option<&str>,
) -> Value {
    let source = source_path.unwrap_or("");
    let parsed: Result<Map<String, Value>, String> = match data {
        Value::Object(m) => {
            let mut m = m.clone();
            let content = m.get("content").filter(|c| !is_falsy(c)).cloned();
            m.insert("content".into(), content.unwrap_or_else(|| "".into()));
            Ok(m)
        }
        Value::String(text) if text.len() > MAX_DEFINITION_BYTES => Err(format!(
            "SKILL.md is {} bytes; at most {MAX_DEFINITION_BYTES} are accepted",
            text.len()
        )),
        Value::String(text) => front_matter_map(text).map(|(mut m, body)| {
            m.insert("content".into(), body.into());
            m
        }),
        other => Err(format!("Unsupported data type: {}", type_name(other))),
    };
    let mut parsed = match parsed {
        Ok(p) => p,
        Err(message) => {
            return json!({
                "valid": false, "strict": strict,
                "errors": [issue("yaml_format", &message, "data")],
                "warnings": [], "source_path": source,
            })
        }
    };
    let tools = parsed
        .get("allowed_tools")
        .filter(|v| !is_falsy(v))
        .or_else(|| parsed.get("allowed-tools"))
        .cloned();
    if let Some(t) = tools {
        let list = if t.is_array() {
            t
        } else {
            Value::Array(vec![t])
        };
        parsed.insert("allowed_tools".into(), list);
    }
    parsed.remove("allowed-tools");
    if let Some(t) = parsed.get("tags").cloned() {
        if !t.is_array() && !t.is_null() {
            parsed.insert("tags".into(), Value::Array(vec![t]));
        }
    }
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let name = parsed.get("name").cloned().unwrap_or(Value::Null);
    let description = parsed.get("description").cloned().unwrap_or(Value::Null);
    let content = parsed
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name_str = name.as_str().map(str::trim).filter(|s| !s.is_empty());
    if name_str.is_none() {
        errors.push(issue("name_required", "name is required", "name"));
    }
    if description.as_str().is_none_or(|d| d.trim().is_empty()) {
        errors.push(issue(
            "description_required",
            "description is required",
            "description",
        ));
    }
    let mut mode_issue = |i: Value| {
        if strict {
            errors.push(i)
        } else {
            warnings.push(i)
        }
    };
    if let Some(n) = name_str {
        let dir = skill_dir_name.unwrap_or("").trim();
        if !dir.is_empty() && n != dir {
            mode_issue(issue(
                "name_matches_directory",
                &format!("name '{n}' does not match directory name '{dir}'"),
                "name",
            ));
        }
        if n.chars().count() > MAX_NAME_CHARS {
            mode_issue(issue(
                "name_max_length",
                "name must not exceed 64 characters",
                "name",
            ));
        }
        if !name_chars_ok(n) {
            mode_issue(issue(
                "name_allowed_characters",
                "name may only contain letters, numbers, underscores, and hyphens",
                "name",
            ));
        }
    }
    if description
        .as_str()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
    {
        mode_issue(issue(
            "description_max_length",
            "description must not exceed 1024 characters",
            "description",
        ));
    }
    let body_lines = content.lines().count();
    if strict && body_lines > MAX_BODY_LINES {
        warnings.push(issue(
            "body_max_lines",
            "SKILL.md body exceeds 500 lines",
            "content",
        ));
    }
    let or_empty = |v: &Value| {
        if is_falsy(v) {
            Value::from("")
        } else {
            v.clone()
        }
    };
    let or_list = |v: Option<&Value>| match v {
        Some(v) if !is_falsy(v) => v.clone(),
        _ => json!([]),
    };
    json!({
        "valid": errors.is_empty(),
        "strict": strict,
        "name": or_empty(&name),
        "description": or_empty(&description),
        "tags": or_list(parsed.get("tags")),
        "allowed_tools": or_list(parsed.get("allowed_tools")),
        "body_lines": body_lines,
        "source_path": source,
        "skill_dir_name": skill_dir_name.unwrap_or(""),
        "errors": errors,
        "warnings": warnings,
    })
}

/// Python truthiness of a JSON value (what 0.5.2's `or` defaults test).
fn is_falsy(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "---\nname: pdf-tools\ndescription: Fill and merge PDF forms.\nallowed-tools: Bash(git add:*) Read, Write\ntags: [pdf, forms]\n---\n\n# PDF tools\n\nUse pdftk.\n";

    #[test]
    fn parses_front_matter_and_round_trips() {
        let def = parse_definition(GOOD).unwrap();
        assert_eq!(def.name, "pdf-tools");
        assert_eq!(def.description, "Fill and merge PDF forms.");
        assert_eq!(def.allowed_tools, ["Bash(git add:*)", "Read", "Write"]);
        assert_eq!(def.tags, [json!("pdf"), json!("forms")]);
        assert_eq!(def.body, "# PDF tools\n\nUse pdftk.");
        let again = parse_definition(&to_skill_md(&def)).unwrap();
        assert_eq!(again, def);
        let meta = abstract_meta(&abstract_yaml(&def));
        assert!(meta_is_skill(&meta));
        assert_eq!(
            meta["allowed_tools"],
            json!(["Bash(git add:*)", "Read", "Write"])
        );
    }

    #[test]
    fn refuses_missing_or_wrong_front_matter() {
        let no_front = parse_definition("# just markdown\n").unwrap_err();
        assert!(
            no_front.message.contains("frontmatter"),
            "{}",
            no_front.message
        );
        let bad_yaml = parse_definition("---\nname: [unclosed\n---\nbody\n").unwrap_err();
        assert!(
            bad_yaml.message.contains("Invalid YAML"),
            "{}",
            bad_yaml.message
        );
        let list = parse_definition("---\n- a\n- b\n---\nbody\n").unwrap_err();
        assert_eq!(list.message, "Invalid YAML frontmatter");
        let no_desc = parse_definition("---\nname: x\n---\nbody\n").unwrap_err();
        assert!(no_desc.message.contains("description"));
        let bad_name = parse_definition("---\nname: ../etc\ndescription: d\n---\nb\n").unwrap_err();
        assert!(bad_name.message.contains("Invalid skill name"));
        let long = format!("---\nname: {}\ndescription: d\n---\nb\n", "a".repeat(65));
        assert!(parse_definition(&long).unwrap_err().message.contains("64"));
        let unbalanced =
            parse_definition("---\nname: x\ndescription: d\nallowed-tools: Bash(a\n---\nb\n");
        assert!(unbalanced.unwrap_err().message.contains("unbalanced"));
        let huge = format!(
            "---\nname: x\ndescription: d\n---\n{}",
            "a".repeat(MAX_DEFINITION_BYTES)
        );
        assert_eq!(
            parse_definition(&huge).unwrap_err().code,
            crate::error::ErrorCode::PayloadTooLarge
        );
    }

    #[test]
    fn verdicts_follow_0_5_2() {
        let ok = verdict(&json!(GOOD), false, Some("pdf-tools"), Some("x/SKILL.md"));
        assert_eq!(ok["valid"], true);
        assert_eq!(ok["source_path"], "x/SKILL.md");
        assert_eq!(ok["body_lines"], 3);
        let missing = verdict(&json!("no front matter"), false, None, None);
        assert_eq!(missing["valid"], false);
        assert_eq!(missing["errors"][0]["rule"], "yaml_format");
        assert_eq!(missing["errors"][0]["field"], "data");
        let text = "---\nname: Bad Name!\ndescription: d\n---\nb\n";
        let lax = verdict(&json!(text), false, Some("other"), None);
        assert_eq!(lax["valid"], true);
        assert_eq!(lax["warnings"].as_array().unwrap().len(), 2);
        let strict = verdict(&json!(text), true, Some("other"), None);
        assert_eq!(strict["valid"], false);
        let rules: Vec<_> = strict["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["rule"].clone())
            .collect();
        assert_eq!(
            rules,
            [
                json!("name_matches_directory"),
                json!("name_allowed_characters")
            ]
        );
        let structured = verdict(&json!({"name": "a"}), false, None, None);
        assert_eq!(structured["errors"][0]["rule"], "description_required");
        assert_eq!(
            verdict(&json!(3), false, None, None)["errors"][0]["message"],
            "Unsupported data type: int"
        );
    }
}
