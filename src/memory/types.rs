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
    /// An edit of the stored value (see `memory::file::patch_value`): SEARCH/REPLACE/DELETE
    /// blocks, or a plain new value merged by the field's [`Shape`].
    Patch,
}

/// What a text field holds, which decides how a plain (non-block) patch value merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One value (a name, a sentence, a paragraph): a new value replaces it, as 0.5.2 does
    /// with a plain patch string.
    Scalar,
    /// Markdown bullets, one fact per line: a new `- Key: value` line replaces the stored line
    /// with the same key (a stale fact is replaced), other new lines are appended unless
    /// already present — so a model that reports only what is new never erases the rest.
    Lines,
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
    pub shape: Shape,
    /// The value a memory file of a single-file type starts with (Longship's words).
    pub init_value: Option<&'static str>,
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
    /// May be written for a peer (`user/<user>/peers/<peer_id>/...`) as well as the user.
    pub peer_enabled: bool,
}

impl MemoryType {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Fields the file name is made of (they must be present and non-empty).
    pub fn identity_fields(&self) -> Vec<&'static str> {
        let used = template_variables(self.filename_template);
        self.fields
            .iter()
            .filter(|f| used.iter().any(|u| u == f.name))
            .map(|f| f.name)
            .collect()
    }

    /// One file per user (the file name has no variables): `profile.md`, `soul.md`, ...
    pub fn single_file(&self) -> bool {
        !self.filename_template.contains("{{")
    }

    /// The fields a new file of this type starts with (empty when no field has a start value).
    pub fn init_fields(&self) -> Map<String, Value> {
        if self.fields.iter().all(|f| f.init_value.is_none()) {
            return Map::new();
        }
        self.fields
            .iter()
            .map(|f| {
                (
                    f.name.to_string(),
                    Value::String(f.init_value.unwrap_or("").into()),
                )
            })
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

/// The first identifier of every `{{ ... }}` expression of a template.
fn template_variables(template: &str) -> Vec<String> {
    template
        .split("{{")
        .skip(1)
        .filter_map(|part| {
            let expr = part.split("}}").next()?.trim_start();
            let name: String = expr
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

fn field(name: &'static str, merge: MergeOp, description: &str) -> Field {
    let shape = if name == "content" {
        Shape::Lines
    } else {
        Shape::Scalar
    };
    Field {
        name,
        description: description.to_string(),
        merge,
        shape,
        init_value: None,
    }
}

fn with_init(mut f: Field, init: &'static str) -> Field {
    f.init_value = Some(init);
    f
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
                "Markdown: a '# <name>' heading, then one bullet per lasting fact written as \
                 '- <Attribute>: <value> (as of YYYY-MM-DD)', e.g. '- Residence: Lisbon (as of \
                 2026-12-07)'. A fact that changed is given again with the same attribute and \
                 its new value; it replaces the old one.",
            )],
            mode: Mode::Upsert,
            peer_enabled: true,
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
            peer_enabled: true,
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
            peer_enabled: true,
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
                    MergeOp::Patch,
                    "Its purpose in five words or fewer.",
                ),
                field(
                    "summary",
                    MergeOp::Patch,
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
            peer_enabled: true,
        },
        MemoryType {
            name: "soul",
            description: "Who the assistant is for this user: the values it holds, the lines \
                          it does not cross, its manner, and how it keeps continuity. Change it \
                          only when the user shapes the assistant's character or asks for a \
                          different way of working together."
                .into(),
            directory: "memories",
            filename_template: "soul.md",
            content_template: Some(
                "# soul.md\n\n## Core truths\n{{ core_truths }}\n\n## Boundaries\n\
                 {{ boundaries }}\n\n## Vibe\n{{ vibe }}\n\n## Continuity\n{{ continuity }}\n"
                    .into(),
            ),
            fields: vec![
                with_init(
                    field("core_truths", MergeOp::Patch, "The assistant's values."),
                    "Be useful rather than impressive. Hold real opinions. Look things up \
                     before asking. Earn trust by getting things right.",
                ),
                with_init(
                    field(
                        "boundaries",
                        MergeOp::Patch,
                        "What the assistant will not do, and what it asks first.",
                    ),
                    "Keep the user's private matters private. Ask before acting outside this \
                     conversation. Do not send unfinished answers.",
                ),
                with_init(
                    field("vibe", MergeOp::Patch, "How the assistant talks."),
                    "Brief when that serves, thorough when the task needs it.",
                ),
                with_init(
                    field(
                        "continuity",
                        MergeOp::Patch,
                        "How the assistant carries memory between conversations.",
                    ),
                    "These memory files are what carries over between conversations: read \
                     them, keep them current, and say so when this one changes.",
                ),
            ],
            mode: Mode::Upsert,
            peer_enabled: true,
        },
        MemoryType {
            name: "identity",
            description: "The assistant's own identity as agreed with this user: its name, \
                          what kind of being it is, its temperament, emoji, avatar and how it \
                          introduces itself. Change it only when the user names or describes \
                          the assistant."
                .into(),
            directory: "memories",
            filename_template: "identity.md",
            content_template: Some(
                "# identity.md\n\n- Name: {{ name }}\n- Creature: {{ creature }}\n\
                 - Vibe: {{ vibe }}\n- Emoji: {{ emoji }}\n- Avatar: {{ avatar }}\n\n\
                 {{ introduction }}\n"
                    .into(),
            ),
            fields: vec![
                with_init(
                    field(
                        "creature",
                        MergeOp::Patch,
                        "What kind of being the assistant is (AI, robot, familiar, ...).",
                    ),
                    "AI assistant",
                ),
                with_init(
                    field("name", MergeOp::Immutable, "The assistant's name."),
                    "",
                ),
                field("vibe", MergeOp::Patch, "The assistant's temperament."),
                field("emoji", MergeOp::Patch, "The assistant's signature emoji."),
                field(
                    "avatar",
                    MergeOp::Patch,
                    "Path or URL of the assistant's avatar.",
                ),
                with_init(
                    field(
                        "introduction",
                        MergeOp::Patch,
                        "How the assistant introduces itself, in its own voice.",
                    ),
                    "Not introduced yet.",
                ),
            ],
            mode: Mode::Upsert,
            peer_enabled: true,
        },
    ]
}

/// The agent-evolution types of 0.5.2 (`cases` and the execution types). Longship does not
/// extract them (agent evolution is off for every account, as 0.5.2's default), but a
/// `memory_policy` may name them: they are known names that select nothing.
pub const AGENT_EVOLUTION: &[&str] = &["cases", "experiences", "trajectories"];

/// Every type name a `memory_policy.memory_types` may list (0.5.2's enabled built-ins).
pub fn known_names() -> Vec<&'static str> {
    let mut out = names();
    out.extend_from_slice(AGENT_EVOLUTION);
    out.sort_unstable();
    out
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
