//! Heading-based splitting of large Markdown documents into a directory of sections, after
//! OpenViking 0.5.2's `MarkdownParser` layout:
//!
//! * a document within the token budget stays one file, `<doc>/<doc>.md`;
//! * a larger one becomes `<doc>/` with one file per top-level section (`<Heading>.md`);
//!   sections below the minimum are merged with neighbours (`<First>_<n>more_<hash>.md`,
//!   or folded into the next/previous section), a section too large with subsections becomes
//!   a directory of its subsections, one without subsections is cut by paragraphs
//!   (`<name>_1.md`, `<name>_2.md`, …);
//! * text before the first top-level heading is a virtual section named after the document.

use std::collections::HashSet;

use super::names::{deduplicate, doc_name, short_hash};
use crate::text::is_cjk;

/// Token estimate used by 0.5.2: CJK characters ~0.7 token, other non-space characters 0.3.
pub fn estimate_tokens(text: &str) -> usize {
    let mut cjk = 0usize;
    let mut other = 0usize;
    for c in text.chars() {
        if is_cjk(c) {
            cjk += 1;
        } else if !c.is_whitespace() {
            other += 1;
        }
    }
    (cjk as f64 * 0.7 + other as f64 * 0.3) as usize
}

/// Splitting limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A piece above this many tokens is split further.
    pub max_tokens: usize,
    /// Pieces below this many tokens are merged with neighbours.
    pub min_tokens: usize,
    /// A piece above this many characters is split further.
    pub max_chars: usize,
}

impl Limits {
    pub fn new(max_tokens: usize) -> Limits {
        Limits {
            max_tokens,
            min_tokens: max_tokens / 2,
            max_chars: (max_tokens * 6).max(1000),
        }
    }
}

/// One file of a laid-out document: path relative to the document directory, and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub path: String,
    pub text: String,
}

/// (start of heading line, end of heading line, title, level) for ATX headings outside code
/// fences.
fn find_headings(content: &str) -> Vec<(usize, usize, String, usize)> {
    let mut out = Vec::new();
    let mut fence: Option<&str> = None;
    let mut pos = 0;
    for line in content.split_inclusive('\n') {
        let start = pos;
        pos += line.len();
        let trimmed = line.trim_start();
        for marker in ["```", "~~~"] {
            if trimmed.starts_with(marker) {
                match fence {
                    None => fence = Some(marker),
                    Some(open) if open == marker => fence = None,
                    _ => {}
                }
            }
        }
        if fence.is_some() || trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            continue;
        }
        if line.starts_with("    ") {
            continue;
        }
        let hashes = trimmed.bytes().take_while(|&b| b == b'#').count();
        if !(1..=6).contains(&hashes) {
            continue;
        }
        let rest = &trimmed[hashes..];
        if !(rest.starts_with(' ') || rest.starts_with('\t')) {
            continue;
        }
        let title = rest.trim().trim_end_matches('#').trim();
        if title.is_empty() {
            continue;
        }
        out.push((start, pos, title.to_string(), hashes));
    }
    out
}

struct Section {
    name: String,
    content: String,
    tokens: usize,
    /// Indices (into the heading list) of direct children; empty = none.
    children: Vec<usize>,
    direct: String,
}

struct Layout<'a> {
    content: &'a str,
    headings: Vec<(usize, usize, String, usize)>,
    limits: Limits,
    out: Vec<Piece>,
    used: HashSet<String>,
}

impl Layout<'_> {
    fn section_info(&self, idx: usize) -> Section {
        let (_, end_pos, ref title, level) = self.headings[idx];
        let mut section_end = self.content.len();
        let mut next_same = self.headings.len();
        for j in idx + 1..self.headings.len() {
            if self.headings[j].3 <= level {
                section_end = self.headings[j].0;
                next_same = j;
                break;
            }
        }
        let mut direct_end = section_end;
        let mut children = Vec::new();
        for j in idx + 1..next_same {
            if self.headings[j].3 == level + 1 {
                if children.is_empty() {
                    direct_end = self.headings[j].0;
                }
                children.push(j);
            }
        }
        let prefix = "#".repeat(level);
        let body = self.content[end_pos.min(section_end)..section_end].trim();
        let content = format!("{prefix} {title}\n\n{body}");
        let direct = if children.is_empty() {
            String::new()
        } else {
            let d = self.content[end_pos.min(direct_end)..direct_end].trim();
            if d.is_empty() {
                String::new()
            } else {
                format!("{prefix} {title}\n\n{d}")
            }
        };
        Section {
            name: doc_name(title, 50),
            tokens: estimate_tokens(&content),
            content,
            children,
            direct,
        }
    }

    fn write(&mut self, dir: &str, name: &str, text: String) {
        let file = deduplicate(&format!("{name}.md"), true, |n| {
            self.used.contains(&join(dir, n))
        });
        let path = join(dir, &file);
        self.used.insert(path.clone());
        self.out.push(Piece { path, text });
    }

    fn fits(&self, tokens: usize, text: &str) -> bool {
        tokens <= self.limits.max_tokens && text.len() <= self.limits.max_chars
    }

    fn process(&mut self, dir: &str, sections: Vec<Section>) {
        let mut pending: Vec<(String, String, usize)> = Vec::new();
        let mut buffered: Option<Section> = None;
        for mut sec in sections {
            if sec.tokens < self.limits.min_tokens {
                if !pending.is_empty()
                    && pending.iter().map(|p| p.2).sum::<usize>() + sec.tokens
                        > self.limits.max_tokens
                {
                    if let Some(b) = buffered.take() {
                        self.save_section(dir, b);
                    }
                    self.save_merged(dir, std::mem::take(&mut pending));
                }
                pending.push((sec.name, sec.content, sec.tokens));
                continue;
            }
            if let Some(b) = buffered.take() {
                self.save_section(dir, b);
            }
            if !pending.is_empty() {
                let sum: usize = pending.iter().map(|p| p.2).sum();
                if sum + sec.tokens <= self.limits.max_tokens && sec.children.is_empty() {
                    pending.push((sec.name, sec.content, sec.tokens));
                    self.save_merged(dir, std::mem::take(&mut pending));
                    continue;
                }
                if pending.len() == 1 && pending[0].2 <= self.limits.min_tokens {
                    let (_, text, _) = pending.remove(0);
                    sec.content = format!("{text}\n\n{}", sec.content).trim().to_string();
                    sec.tokens = estimate_tokens(&sec.content);
                    if !sec.children.is_empty() {
                        sec.direct = format!("{text}\n\n{}", sec.direct).trim().to_string();
                    }
                } else {
                    self.save_merged(dir, std::mem::take(&mut pending));
                }
            }
            buffered = Some(sec);
        }
        if !pending.is_empty() {
            match buffered.as_mut() {
                Some(b) if pending.len() == 1 && pending[0].2 <= self.limits.min_tokens => {
                    let (_, text, _) = pending.remove(0);
                    b.content = format!("{}\n\n{text}", b.content).trim().to_string();
                    b.tokens = estimate_tokens(&b.content);
                    if !b.children.is_empty() {
                        b.direct = format!("{}\n\n{text}", b.direct).trim().to_string();
                    }
                }
                _ => {
                    if let Some(b) = buffered.take() {
                        self.save_section(dir, b);
                    }
                    self.save_merged(dir, std::mem::take(&mut pending));
                }
            }
        }
        if let Some(b) = buffered.take() {
            self.save_section(dir, b);
        }
    }

    fn save_section(&mut self, dir: &str, sec: Section) {
        if self.fits(sec.tokens, &sec.content) {
            self.write(dir, &sec.name, sec.content);
            return;
        }
        let sub = deduplicate(&sec.name, false, |n| {
            let p = join(dir, n);
            self.used.contains(&p) || self.used.contains(&format!("{p}.md"))
        });
        let section_dir = join(dir, &sub);
        self.used.insert(section_dir.clone());
        if sec.children.is_empty() {
            for (i, part) in self.smart_split(&sec.content).into_iter().enumerate() {
                self.write(&section_dir, &format!("{}_{}", sec.name, i + 1), part);
            }
            return;
        }
        let mut children = Vec::new();
        if !sec.direct.is_empty() {
            children.push(Section {
                name: sec.name.clone(),
                tokens: estimate_tokens(&sec.direct),
                content: sec.direct.clone(),
                children: Vec::new(),
                direct: String::new(),
            });
        }
        for idx in sec.children {
            children.push(self.section_info(idx));
        }
        self.process(&section_dir, children);
    }

    fn save_merged(&mut self, dir: &str, pending: Vec<(String, String, usize)>) {
        if pending.is_empty() {
            return;
        }
        let name = merged_name(&pending);
        let text = pending
            .iter()
            .map(|p| p.1.as_str())
            .collect::<Vec<_>>()
            .join("\n\n");
        if text.len() > self.limits.max_chars {
            for (i, part) in self.smart_split(&text).into_iter().enumerate() {
                self.write(dir, &format!("{name}_{}", i + 1), part);
            }
        } else {
            self.write(dir, &name, text);
        }
    }

    /// Paragraph packing within the limits; a paragraph too large alone is cut by characters;
    /// a small last part joins the previous one.
    fn smart_split(&self, content: &str) -> Vec<String> {
        let max_tokens = self.limits.max_tokens;
        let max_chars = self.limits.max_chars;
        let mut parts: Vec<String> = Vec::new();
        let mut current = String::new();
        let mut current_tokens = 0;
        for para in content.split("\n\n") {
            let tokens = estimate_tokens(para);
            if tokens > max_tokens || para.len() > max_chars {
                // A short prefix (a heading, an intro) goes with the oversized paragraph
                // rather than into a tiny piece of its own (as 0.5.2).
                let mut big = para.to_string();
                if !current.is_empty() {
                    if current_tokens < self.limits.min_tokens {
                        big = format!("{current}\n\n{para}");
                        current.clear();
                    } else {
                        parts.push(std::mem::take(&mut current));
                    }
                    current_tokens = 0;
                }
                parts.extend(cut_paragraph(&big, max_tokens, max_chars));
                continue;
            }
            if !current.is_empty()
                && (current_tokens + tokens > max_tokens
                    || current.len() + para.len() + 2 > max_chars)
            {
                parts.push(std::mem::take(&mut current));
                current_tokens = 0;
            }
            if !current.is_empty() {
                current.push_str("\n\n");
            }
            current.push_str(para);
            current_tokens += tokens;
        }
        if !current.is_empty() {
            if current_tokens < self.limits.min_tokens && !parts.is_empty() {
                let last = parts.len() - 1;
                if parts[last].len() + current.len() + 2 <= max_chars {
                    parts[last].push_str("\n\n");
                    parts[last].push_str(&current);
                    return parts;
                }
            }
            parts.push(current);
        }
        parts
    }
}

/// A paragraph too large for one piece, cut into pieces within both limits, at whitespace
/// where there is some near the limit (0.5.2 cuts at a fixed worst-case character count, which
/// fragments Latin text into pieces far below the budget).
fn cut_paragraph(para: &str, max_tokens: usize, max_chars: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut tokens = 0.0f64;
    let mut last_space: Option<usize> = None;
    for (i, c) in para.char_indices() {
        tokens += if is_cjk(c) {
            0.7
        } else if c.is_whitespace() {
            0.0
        } else {
            0.3
        };
        if c.is_whitespace() {
            last_space = Some(i);
        }
        let len = i + c.len_utf8() - start;
        if tokens > max_tokens as f64 || len > max_chars {
            let cut = match last_space {
                Some(sp) if sp > start && (sp - start) * 5 > len * 4 => sp,
                _ => i,
            };
            if cut > start {
                out.push(para[start..cut].trim().to_string());
                start = cut;
            }
            tokens = estimate_tokens(&para[start..i + c.len_utf8()]) as f64;
            last_space = None;
        }
    }
    if start < para.len() {
        out.push(para[start..].trim().to_string());
    }
    out.retain(|p| !p.is_empty());
    out
}

/// 0.5.2's merged file name: `<first>_<n>more_<hash8>` (or `<name>_<hash8>`), at most 32
/// characters.
fn merged_name(sections: &[(String, String, usize)]) -> String {
    let key = sections
        .iter()
        .map(|(n, _, t)| format!("{n}:{t}"))
        .collect::<Vec<_>>()
        .join("_");
    let hash = short_hash(&key);
    let base = if sections.len() == 1 {
        sections[0].0.clone()
    } else {
        let suffix = format!("_{}more", sections.len());
        let keep = 32usize.saturating_sub(suffix.len() + 9).max(1);
        format!(
            "{}{suffix}",
            sections[0].0.chars().take(keep).collect::<String>()
        )
    };
    let mut name = format!("{base}_{hash}");
    if name.chars().count() > 32 {
        name = format!("{}_{hash}", name.chars().take(23).collect::<String>());
    }
    let name = name.trim_matches('_').to_string();
    if name.is_empty() {
        "merged".into()
    } else {
        name
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Lay out `content` (a document named `name`) as files relative to the document directory.
/// A document within the limits is one piece, `<name>.md`.
pub fn layout(content: &str, name: &str, limits: Limits) -> Vec<Piece> {
    let mut l = Layout {
        content,
        headings: find_headings(content),
        limits,
        out: Vec::new(),
        used: HashSet::new(),
    };
    if l.fits(estimate_tokens(content), content) {
        l.write("", name, content.to_string());
        return l.out;
    }
    if l.headings.is_empty() {
        for (i, part) in l.smart_split(content).into_iter().enumerate() {
            l.write("", &format!("{name}_{}", i + 1), part);
        }
        return l.out;
    }
    let min_level = l.headings.iter().map(|h| h.3).min().unwrap_or(1);
    let mut sections = Vec::new();
    if let Some(first) = l.headings.iter().find(|h| h.3 == min_level) {
        let pre = content[..first.0].trim();
        if !pre.is_empty() {
            sections.push(Section {
                name: name.to_string(),
                content: pre.to_string(),
                tokens: estimate_tokens(pre),
                children: Vec::new(),
                direct: String::new(),
            });
        }
    }
    let top: Vec<usize> = (0..l.headings.len())
        .filter(|&i| l.headings[i].3 == min_level)
        .collect();
    for i in top {
        sections.push(l.section_info(i));
    }
    l.process("", sections);
    l.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn para(words: usize, seed: &str) -> String {
        (0..words)
            .map(|i| format!("{seed}{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn small_documents_stay_whole() {
        let out = layout("# Title\n\nshort text", "guide", Limits::new(1024));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].path, "guide.md");
    }

    #[test]
    fn large_documents_split_by_heading() {
        let doc = format!(
            "intro line\n\n# Install\n\n{}\n\n# Usage\n\n{}\n\n## Advanced\n\n{}\n\n# Tiny\n\nsmall\n",
            para(600, "a"),
            para(600, "b"),
            para(600, "c")
        );
        let out = layout(&doc, "guide", Limits::new(1024));
        let paths: Vec<&str> = out.iter().map(|p| p.path.as_str()).collect();
        // The short intro merges with the next section (0.5.2's `_can_merge`).
        assert!(
            paths.iter().any(|p| p.starts_with("guide_2more_")),
            "{paths:?}"
        );
        assert!(paths.contains(&"Usage/Usage.md"), "{paths:?}");
        assert!(paths.contains(&"Usage/Advanced.md"), "{paths:?}");
        // Every piece fits and the text is preserved.
        let limits = Limits::new(1024);
        for p in &out {
            assert!(
                estimate_tokens(&p.text) <= limits.max_tokens * 2,
                "{}",
                p.path
            );
        }
        let all: String = out.iter().map(|p| p.text.clone()).collect();
        assert!(all.contains("a599") && all.contains("c0") && all.contains("small"));
        assert!(all.contains("intro line"));
    }

    #[test]
    fn headings_inside_code_fences_are_ignored() {
        let h = find_headings("# A\n```\n# not a heading\n```\n## B\n");
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].2, "B");
    }

    #[test]
    fn huge_paragraphs_are_cut_near_the_budget() {
        let p = para(3000, "w");
        let parts = cut_paragraph(&p, 1024, 6144);
        assert!(parts.len() >= 3 && parts.len() <= 6, "{}", parts.len());
        for part in &parts {
            assert!(estimate_tokens(part) <= 1024 && part.len() <= 6144);
        }
        assert_eq!(parts.join(" "), p);
        let cjk = "文".repeat(5000);
        let parts = cut_paragraph(&cjk, 1024, 6144);
        assert!(parts.iter().all(|x| estimate_tokens(x) <= 1024));
        assert_eq!(parts.concat(), cjk);
    }

    #[test]
    fn no_headings_split_by_paragraphs() {
        let doc = (0..40)
            .map(|i| para(100, &format!("p{i}w")))
            .collect::<Vec<_>>()
            .join("\n\n");
        let out = layout(&doc, "notes", Limits::new(1024));
        assert!(out.len() > 1);
        assert!(out[0].path.starts_with("notes_1"));
    }
}
