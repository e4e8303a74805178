//! The user memory types Longship extracts, described in Longship's own words. Type names,
//! directories, file-name templates, field names and merge operations follow OpenViking
//! 0.5.2's built-in templates (so a client reading memory files written by OpenViking reads
//! these); descriptions are ours. File names and bodies are Jinja templates rendered with
//! minijinja.

use std::collections::BTreeMap;

use minijinja::Environment;
use serde_json::{Map, Value};

/// How a field of an existing memory combines with a newly extracted value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeOp {
    /// Part of the memory's identity; never changes once written.
    Immutable,
    /// The new value replaces the old one.
    Replace,
    /// Markdown lines: the old ones stay, new lines not already present (ignoring case,
    /// spacing and bullet markers) are appended.
    Patch,
}

impl MergeOp {
    pub fn as_str(self) -> &'static str {
        match self {
            MergeOp::Immutable => "immutable",
            MergeOp::Replace => "replace",
            MergeOp::Patch => "patch",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Field {
    pub name: &'static str,
    /// What the model reads (an account may rewrite it: `memory::templates`).
    pub description: String,
    pub merge: MergeOp,
}

/// Whether a type updates existing files or only ever adds new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Upsert,
    AddOnly,
}

#[derive(Debug, Clone)]
pub struct MemoryType {
    pub name: &'static str,
    /// What the model reads (an account may rewrite it: `memory::templates`).
    pub description: String,
    /// Relative to the user's space (`user/<user>/`).
    pub directory: &'static str,
    pub filename_template: &'static str,
    /// The file body; `None` = the `content` field as written.
    pub content_template: Option<String>,
    pub fields: Vec<Field>,
    pub mode: Mode,
}

impl MemoryType {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Fields the file name is made of (they must be present and non-empty).
    pub fn identity_fields(&self) -> Vec<&'static str> {
        self.fields
            .iter()
            .filter(|f| self.filename_template.contains(f.name))
            .map(|f| f.name)
            .collect()
    }

    /// Fields a model must fill for a new memory.
    pub fn required_fields(&self) -> Vec<&'static str> {
        let mut out = self.identity_fields();
        if self.field("content").is_some() {
            out.push("content");
        }
        if self.field("summary").is_some() {
            out.push("summary");
        }
        out
    }
}

fn field(name: &'static str, merge: MergeOp, description: &str) -> Field {
    Field {
        name,
        description: description.to_string(),
        merge,
    }
}

/// The built-in user memory types, in extraction order.
pub fn builtin() -> Vec<MemoryType> {
    vec![
        MemoryType {
            name: "profile",
            description: "Lasting facts about who the user is right now: name, home, work, \
                          studies, family situation, long-term health. Not events, plans, \
                          tastes or moods. One file per user."
                .into(),
            directory: "memories",
            filename_template: "profile.md",
            content_template: None,
            fields: vec![field(
                "content",
                MergeOp::Patch,
                "Markdown: a '# <name>' heading, then one '- ' bullet per lasting fact, each \
                 ending with '(as of YYYY-MM-DD)'.",
            )],
            mode: Mode::Upsert,
        },
        MemoryType {
            name: "preferences",
            description: "What the user likes, dislikes or habitually chooses, one topic per \
                          memory (coding style, tools, food, travel, ...). Keep unrelated \
                          topics apart."
                .into(),
            directory: "memories/preferences",
            filename_template: "{{ user|lower }}/{{ topic|lower }}.md",
            content_template: None,
            fields: vec![
                field(
                    "user",
                    MergeOp::Immutable,
                    "Name of the person who has the preference.",
                ),
                field(
                    "topic",
                    MergeOp::Immutable,
                    "Short topic naming the preference, lowercase words joined by underscores \
                     (at most 3 words); the same topic always names the same memory.",
                ),
                field(
                    "content",
                    MergeOp::Patch,
                    "Markdown bullets, one per distinct preference on this topic.",
                ),
            ],
            mode: Mode::Upsert,
        },
        MemoryType {
            name: "entities",
            description: "Cards for people, pets, places, organisations, products, works and \
                          projects the user talks about: what each is and how it relates to \
                          the user. One memory per real-world thing."
                .into(),
            directory: "memories/entities",
            filename_template: "{{ category|lower }}/{{ name|lower }}.md",
            content_template: None,
            fields: vec![
                field(
                    "category",
                    MergeOp::Replace,
                    "Kind of thing, lowercase with underscores (person, pet, place, \
                     organization, product, project, ...).",
                ),
                field(
                    "name",
                    MergeOp::Replace,
                    "The thing's name, lowercase with underscores, at most 3 words.",
                ),
                field(
                    "content",
                    MergeOp::Patch,
                    "Markdown card: '# <display name>', one sentence saying what it is, then \
                     '- ' bullets of facts.",
                ),
            ],
            mode: Mode::Upsert,
        },
        MemoryType {
            name: "events",
            description: "Things that happened or were decided, promised or scheduled, one \
                          atomic occurrence per memory, with concrete dates (YYYY-MM-DD) instead \
                          of relative ones. Not the conversation itself."
                .into(),
            directory: "memories/events",
            filename_template: "{{ year }}/{{ month }}/{{ day }}/{{ event_name }}.md",
            content_template: Some("{{ summary }}".into()),
            fields: vec![
                field(
                    "event_name",
                    MergeOp::Immutable,
                    "What happened, lowercase with underscores, at most 3 words, no dates or \
                     numbers.",
                ),
                field(
                    "goal",
                    MergeOp::Replace,
                    "Its purpose in five words or fewer.",
                ),
                field(
                    "summary",
                    MergeOp::Replace,
                    "One or two sentences in the third person: who did or decided what, and \
                     when.",
                ),
                field(
                    "ranges",
                    MergeOp::Immutable,
                    "Indexes of the messages it comes from, like \"0-3,7\"; include a user \
                     message.",
                ),
            ],
            mode: Mode::AddOnly,
        },
    ]
}

/// Names of the built-in types.
pub fn names() -> Vec<&'static str> {
    builtin().iter().map(|t| t.name).collect()
}

/// Instructions one rendering may execute (a loop cannot run away).
pub const RENDER_FUEL: u64 = 50_000;

/// Render a template with string variables; undefined variables are empty.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
    // Account templates are client text: bound the work one rendering may do.
    env.set_fuel(Some(RENDER_FUEL));
    env.render_str(template, vars)
        .map_err(|e| format!("template: {e}"))
}

/// One file-name segment from model text: trimmed, control and path characters replaced by
/// `_`, at most 96 characters; `None` when nothing usable is left.
pub fn clean_segment(raw: &str) -> Option<String> {
    let mut out: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_control()
                || matches!(
                    c,
                    '/' | '\\' | '?' | '#' | '%' | '*' | ':' | '"' | '<' | '>' | '|'
                )
                || c.is_whitespace()
            {
                '_'
            } else {
                c
            }
        })
        .take(96)
        .collect();
    while out.starts_with('.') || out.starts_with('_') {
        out.remove(0);
    }
    let out = out.trim_end_matches('_').to_string();
    if out.is_empty() || !crate::storage::uri::is_api_segment(&out) {
        None
    } else {
        Some(out)
    }
}

/// The file path of a memory inside the type's directory, from its fields (identity fields
/// cleaned to safe segments first) and the extra variables (`year`, `month`, `day`).
pub fn relative_path(
    t: &MemoryType,
    fields: &Map<String, Value>,
    extra: &BTreeMap<String, String>,
) -> Result<String, String> {
    let mut vars = extra.clone();
    for name in t.identity_fields() {
        let raw = fields.get(name).and_then(Value::as_str).unwrap_or("");
        let clean = clean_segment(raw)
            .ok_or_else(|| format!("{}: field '{name}' is empty or unusable", t.name))?;
        vars.insert(name.to_string(), clean);
    }
    let rendered = render(t.filename_template, &vars)?;
    let mut segments = Vec::new();
    for seg in rendered.split('/') {
        let seg =
            clean_segment(seg).ok_or_else(|| format!("{}: empty file name segment", t.name))?;
        segments.push(seg);
    }
    Ok(segments.join("/"))
}

/// The body of a memory file from its fields.
pub fn body(t: &MemoryType, fields: &Map<String, Value>) -> Result<String, String> {
    match t.content_template.as_deref() {
        None => Ok(fields
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_string()),
        Some(tpl) => {
            let vars = fields
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect();
            Ok(render(tpl, &vars)?.trim().to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_come_from_templates() {
        let types = builtin();
        let prefs = &types[1];
        let f = json!({"user": "Bob", "topic": "Coffee Style", "content": "- oat milk"});
        let p = relative_path(prefs, f.as_object().unwrap(), &BTreeMap::new()).unwrap();
        assert_eq!(p, "bob/coffee_style.md");
        let bad = json!({"user": "Bob", "topic": "  ", "content": "x"});
        assert!(relative_path(prefs, bad.as_object().unwrap(), &BTreeMap::new()).is_err());
        let evil = json!({"user": "..", "topic": "../../x", "content": "x"});
        let p = relative_path(prefs, evil.as_object().unwrap(), &BTreeMap::new());
        assert!(p.map(|p| !p.contains("..")).unwrap_or(true));
        let events = &types[3];
        let mut date = BTreeMap::new();
        date.insert("year".into(), "2026".into());
        date.insert("month".into(), "12".into());
        date.insert("day".into(), "07".into());
        let f = json!({"event_name": "launch_moved", "summary": "The launch moved."});
        assert_eq!(
            relative_path(events, f.as_object().unwrap(), &date).unwrap(),
            "2026/12/07/launch_moved.md"
        );
        assert_eq!(
            body(events, f.as_object().unwrap()).unwrap(),
            "The launch moved."
        );
        assert_eq!(types[0].identity_fields(), Vec::<&str>::new());
    }
}
