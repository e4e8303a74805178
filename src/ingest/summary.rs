//! Extractive L0/L1 summaries, computed bottom-up over a parsed tree with no model: a
//! directory's overview (L1, ≤ 4,000 characters) has its title, the lead of its main document,
//! that document's headings and the list of its children with their abstracts; its abstract
//! (L0, ≤ 256 characters) is the title and the first sentence, or what it contains.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use super::names::stem;

pub const ABSTRACT_MAX: usize = 256;
pub const OVERVIEW_MAX: usize = 4000;
/// How much of each file is read for its summary.
const HEAD_BYTES: u64 = 64 * 1024;

/// The summaries of one directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DirSummary {
    pub abstract_text: String,
    pub overview: String,
}

/// One child of a directory as summaries see it.
#[derive(Debug, Clone)]
pub struct ChildInfo {
    pub name: String,
    pub is_dir: bool,
    pub abstract_text: String,
}

/// Summaries for every directory under `root` (keyed by path relative to it, `""` = root),
/// children before parents.
pub fn summarize_tree(root: &Path, root_name: &str) -> BTreeMap<String, DirSummary> {
    let mut out = BTreeMap::new();
    summarize_dir(root, root_name, "", &mut out);
    out
}

fn summarize_dir(
    dir: &Path,
    name: &str,
    rel: &str,
    out: &mut BTreeMap<String, DirSummary>,
) -> String {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map(|r| r.filter_map(Result::ok).collect())
        .unwrap_or_default();
    entries.sort_by_key(|e| e.file_name());
    let mut children = Vec::new();
    let mut docs: Vec<(String, String)> = Vec::new();
    for entry in entries {
        let child = entry.file_name().to_string_lossy().into_owned();
        if child.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            let child_rel = if rel.is_empty() {
                child.clone()
            } else {
                format!("{rel}/{child}")
            };
            let abstract_text = summarize_dir(&path, &child, &child_rel, out);
            children.push(ChildInfo {
                name: child,
                is_dir: true,
                abstract_text,
            });
        } else {
            let head = read_head(&path);
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            let (abstract_text, is_doc) = child_abstract(&child, head.as_deref(), size);
            if let (Some(text), true) = (head, is_doc) {
                docs.push((child.clone(), text));
            }
            children.push(ChildInfo {
                name: child,
                is_dir: false,
                abstract_text,
            });
        }
    }
    let main = main_document(name, &docs);
    let summary = extractive(name, main.map(|(_, t)| t.as_str()), &children);
    let abstract_text = summary.abstract_text.clone();
    out.insert(rel.to_string(), summary);
    abstract_text
}

/// A file child's abstract from its first bytes (`None` = not text), and whether it is a
/// document that may speak for its directory (text that is not source code).
pub fn child_abstract(name: &str, head: Option<&str>, size: u64) -> (String, bool) {
    let is_code = head
        .is_some_and(|h| super::convert::kind_of(name, h.as_bytes()) == super::convert::Kind::Code);
    match head {
        Some(text) if is_code => (code_abstract(name, text), false),
        Some(text) => (file_abstract(name, text), true),
        None => (format!("{name} ({size} bytes, binary)"), false),
    }
}

fn read_head(path: &Path) -> Option<String> {
    let mut buf = Vec::new();
    fs::File::open(path)
        .ok()?
        .take(HEAD_BYTES)
        .read_to_end(&mut buf)
        .ok()?;
    text_head(&buf)
}

/// The first bytes of a file as text, `None` when they are not UTF-8 text (the cut may fall
/// inside a character).
pub fn text_head(buf: &[u8]) -> Option<String> {
    match std::str::from_utf8(buf) {
        Ok(s) if !s.contains('\0') => Some(s.to_string()),
        Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => {
            Some(String::from_utf8_lossy(&buf[..e.valid_up_to()]).into_owned())
        }
        _ => None,
    }
}

/// The document that speaks for a directory: one named like it, a README or index, or the
/// only/first Markdown file.
pub fn main_document<'a>(
    dir_name: &str,
    docs: &'a [(String, String)],
) -> Option<&'a (String, String)> {
    let lower = dir_name.to_lowercase();
    docs.iter()
        .find(|(n, _)| stem(n).to_lowercase() == lower)
        .or_else(|| {
            docs.iter().find(|(n, _)| {
                let s = stem(n).to_lowercase();
                s == "readme" || s == "index" || s == "overview"
            })
        })
        .or_else(|| docs.iter().find(|(n, _)| n.ends_with(".md")))
        .or_else(|| docs.first())
}

/// L0/L1 of a directory from its main document's text and its children.
pub fn extractive(name: &str, main_text: Option<&str>, children: &[ChildInfo]) -> DirSummary {
    let title = main_text
        .and_then(first_heading)
        .unwrap_or_else(|| name.to_string());
    let lead = main_text.map(lead_paragraph).unwrap_or_default();
    let mut overview = format!("# {title}\n\n");
    if !lead.is_empty() {
        overview.push_str(&truncate(&lead, 800));
        overview.push_str("\n\n");
    }
    if let Some(text) = main_text {
        let heads = headings(text);
        if heads.len() > 1 {
            overview.push_str("## Headings\n\n");
            for h in heads.iter().take(20) {
                overview.push_str(&format!("- {h}\n"));
            }
            overview.push('\n');
        }
    }
    if !children.is_empty() {
        overview.push_str("## Contents\n\n");
        for (i, c) in children.iter().enumerate() {
            let slash = if c.is_dir { "/" } else { "" };
            let line = if c.abstract_text.is_empty() {
                format!("- {}{slash}\n", c.name)
            } else {
                format!("- {}{slash}: {}\n", c.name, truncate(&c.abstract_text, 200))
            };
            if overview.len() + line.len() > OVERVIEW_MAX - 40 {
                overview.push_str(&format!("- … and {} more\n", children.len() - i));
                break;
            }
            overview.push_str(&line);
        }
    }
    let abstract_text = if !lead.is_empty() {
        format!("{title}: {}", first_sentence(&lead))
    } else if let [only] = children {
        // A directory holding one file speaks with that file's abstract.
        match only.abstract_text.split_once(": ") {
            Some((_, rest)) if !only.is_dir => format!("{title}: {rest}"),
            _ => format!("{title}: {}", only.abstract_text),
        }
    } else {
        let files = children.iter().filter(|c| !c.is_dir).count();
        let dirs = children.len() - files;
        let names: Vec<&str> = children.iter().take(6).map(|c| c.name.as_str()).collect();
        format!(
            "{title}: {files} file(s), {dirs} folder(s){}{}",
            if names.is_empty() { "" } else { " — " },
            names.join(", ")
        )
    };
    DirSummary {
        abstract_text: truncate(&abstract_text, ABSTRACT_MAX),
        overview: truncate(overview.trim_end(), OVERVIEW_MAX),
    }
}

/// A source file's abstract: its leading comment when it has one, else its size.
fn code_abstract(name: &str, text: &str) -> String {
    let comment: Vec<&str> = text
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty() || l.starts_with("#!"))
        .take_while(|l| {
            l.starts_with("//")
                || l.starts_with('#')
                || l.starts_with("--")
                || l.starts_with("/*")
                || l.starts_with('*')
        })
        .map(|l| l.trim_start_matches(['/', '#', '-', '*', '!', ' ']))
        .filter(|l| !l.is_empty())
        .collect();
    let lines = text.lines().count();
    if comment.is_empty() {
        truncate(&format!("{name}: source file, {lines} lines"), ABSTRACT_MAX)
    } else {
        let lead = plain(&comment.join(" "));
        truncate(&format!("{name}: {}", first_sentence(&lead)), ABSTRACT_MAX)
    }
}

/// A file's one-line abstract: its title and first sentence.
pub fn file_abstract(name: &str, text: &str) -> String {
    let title = first_heading(text).unwrap_or_else(|| name.to_string());
    let lead = lead_paragraph(text);
    if lead.is_empty() {
        truncate(&title, ABSTRACT_MAX)
    } else {
        truncate(&format!("{title}: {}", first_sentence(&lead)), ABSTRACT_MAX)
    }
}

fn first_heading(text: &str) -> Option<String> {
    headings(text).into_iter().next()
}

fn headings(text: &str) -> Vec<String> {
    let mut fence = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            fence = !fence;
            continue;
        }
        if fence {
            continue;
        }
        let hashes = t.bytes().take_while(|&b| b == b'#').count();
        if (1..=6).contains(&hashes) && t[hashes..].starts_with(' ') {
            let h = t[hashes..].trim().trim_end_matches('#').trim();
            if !h.is_empty() {
                out.push(plain(h));
            }
        }
    }
    out
}

/// The first paragraph of prose: not a heading, code, table, list of links, HTML or front
/// matter.
fn lead_paragraph(text: &str) -> String {
    let body = match text.strip_prefix("---\n") {
        Some(rest) => rest.find("\n---").map_or(text, |i| &rest[i + 4..]),
        None => text,
    };
    let mut fence = false;
    let mut para: Vec<&str> = Vec::new();
    for line in body.lines() {
        let t = line.trim();
        if t.starts_with("```") || t.starts_with("~~~") {
            fence = !fence;
            if !para.is_empty() {
                break;
            }
            continue;
        }
        if fence {
            continue;
        }
        let skip = t.is_empty()
            || t.starts_with('#')
            || t.starts_with('|')
            || t.starts_with('<')
            || t.starts_with("![")
            || t.starts_with("---")
            || t.starts_with("===");
        if skip {
            if !para.is_empty() {
                break;
            }
            continue;
        }
        para.push(t);
    }
    plain(&para.join(" "))
}

/// Markdown decoration removed: emphasis, inline code ticks, link targets.
fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' | '_' | '`' => {}
            ']' if chars.peek() == Some(&'(') => {
                for d in chars.by_ref() {
                    if d == ')' {
                        break;
                    }
                }
            }
            '[' => {}
            _ => out.push(c),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn first_sentence(text: &str) -> String {
    let mut end = text.len();
    for (i, c) in text.char_indices() {
        if matches!(c, '。' | '！' | '？') {
            end = i + c.len_utf8();
            break;
        }
        if matches!(c, '.' | '!' | '?') {
            let next = text[i + 1..].chars().next();
            if next.is_none_or(char::is_whitespace) && i > 10 {
                end = i + 1;
                break;
            }
        }
    }
    text[..end].to_string()
}

/// At most `max` characters (not bytes), cut at a word boundary where possible, with `…`.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max.saturating_sub(1)).collect();
    let trimmed = match cut.rfind(char::is_whitespace) {
        Some(i) if i > cut.len() / 2 => &cut[..i],
        _ => &cut[..],
    };
    format!("{}…", trimmed.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_summaries_are_bottom_up_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("guide");
        fs::create_dir_all(root.join("api")).unwrap();
        fs::write(
            root.join("guide.md"),
            "# The Guide\n\nLongship stores context for agents. It is fast.\n\n## Install\n\nx\n",
        )
        .unwrap();
        fs::write(
            root.join("api/auth.md"),
            "# Auth\n\nKeys are **hashed** with Argon2id.\n",
        )
        .unwrap();
        fs::write(root.join("logo.png"), [0u8, 1, 2]).unwrap();
        let s = summarize_tree(&root, "guide");
        let top = &s[""];
        assert_eq!(
            top.abstract_text,
            "The Guide: Longship stores context for agents."
        );
        assert!(top.overview.contains("## Contents"));
        assert!(
            top.overview
                .contains("api/: Auth: Keys are hashed with Argon2id."),
            "{}",
            top.overview
        );
        assert!(top.overview.contains("## Headings"));
        assert!(s["api"].abstract_text.starts_with("Auth"));
        assert!(top.abstract_text.chars().count() <= ABSTRACT_MAX);
    }

    #[test]
    fn truncation_counts_characters() {
        let t = truncate(&"é".repeat(300), 256);
        assert_eq!(t.chars().count(), 256);
        assert!(t.ends_with('…'));
    }
}
