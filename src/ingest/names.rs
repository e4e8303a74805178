//! Names that are safe as `viking://` path segments (spec §5.4): what documents, sections and
//! archive entries are stored as.

use sha2::{Digest, Sha256};

/// 0.5.2's document/section naming (`MarkdownParser._sanitize_for_path`): keep letters,
/// digits, `_`, `-`, `.` and whitespace, turn whitespace runs into `_`, trim `.`/`_`, cap at
/// `max_len` characters with an 8-hex hash of the original; `section` if nothing is left.
pub fn doc_name(text: &str, max_len: usize) -> String {
    // Drop disallowed characters first, then collapse whitespace runs (as upstream's two
    // regex passes do).
    let mut kept = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text
        .chars()
        .filter(|c| c.is_whitespace() || c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        if c.is_whitespace() {
            if !in_space {
                kept.push('_');
            }
            in_space = true;
            continue;
        }
        in_space = false;
        kept.push(c);
    }
    let trimmed = kept.trim_matches(|c| c == '.' || c == '_');
    if trimmed.is_empty() {
        return "section".into();
    }
    if trimmed.chars().count() > max_len {
        let head: String = trimmed.chars().take(max_len.saturating_sub(9)).collect();
        return format!("{head}_{}", short_hash(text));
    }
    trimmed.to_string()
}

/// First 8 hex digits of sha256(text).
pub fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..4])
}

/// A file or directory name from an archive or upload made safe for storage: no separators,
/// no control characters, not `.`/`..`, no leading dot (hidden names are skipped elsewhere),
/// at most 255 bytes (long names keep a prefix and a hash, as spec §5.4). A name the API's
/// segment rules refuse (`%2e%2e`, look-alike dots, a drive prefix) is `None`: stored, it
/// could be found but never read, stat-ed or removed.
pub fn entry_name(raw: &str) -> Option<String> {
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | ':' | '?' | '*' | '"' | '<' | '>' | '|') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        return None;
    }
    // Whitespace inside names is renamed the way content/write does (0.5.2).
    let cleaned = crate::storage::fs::write::sanitize_segment(cleaned).into_owned();
    let name = if cleaned.len() <= 255 {
        cleaned
    } else {
        let mut cut = 200;
        while !cleaned.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}_{}", &cleaned[..cut], short_hash(&cleaned))
    };
    crate::storage::uri::is_api_segment(&name).then_some(name)
}

/// The stem of a file name (`guide.md` → `guide`, `archive.tar.gz` → `archive.tar`).
pub fn stem(name: &str) -> &str {
    match name.rfind('.') {
        Some(0) | None => name,
        Some(i) => &name[..i],
    }
}

/// The lower-case extension of a file name without the dot.
pub fn extension(name: &str) -> String {
    match name.rfind('.') {
        Some(i) if i > 0 => name[i + 1..].to_ascii_lowercase(),
        _ => String::new(),
    }
}

/// `name`, or `name_1`, `name_2`, … (before the extension for files) — the first for which
/// `taken` is false.
pub fn deduplicate(name: &str, is_file: bool, mut taken: impl FnMut(&str) -> bool) -> String {
    if !taken(name) {
        return name.to_string();
    }
    let (base, ext) = match (is_file, name.rfind('.')) {
        (true, Some(i)) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    (1..)
        .map(|n| format!("{base}_{n}{ext}"))
        .find(|candidate| !taken(candidate))
        .unwrap_or_else(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_names_follow_upstream() {
        assert_eq!(doc_name("Getting Started!", 50), "Getting_Started");
        assert_eq!(doc_name("  ..  ", 50), "section");
        assert_eq!(doc_name("API v2.0 — Reference", 50), "API_v2.0_Reference");
        let long = "x".repeat(80);
        let n = doc_name(&long, 50);
        assert_eq!(n.chars().count(), 50);
        assert!(n.starts_with("xxxx"));
    }

    #[test]
    fn entry_names_are_safe() {
        assert_eq!(entry_name(".."), None);
        assert_eq!(entry_name("%2e%2e"), None);
        assert_eq!(entry_name("%252e%252e"), None);
        assert_eq!(entry_name("\u{FF0E}\u{FF0E}"), None);
        assert_eq!(entry_name("100%.md").as_deref(), Some("100%.md"));
        assert_eq!(entry_name("a/b").as_deref(), Some("a_b"));
        assert_eq!(entry_name("my file.md").as_deref(), Some("my_file.md"));
        assert!(entry_name(&"é".repeat(300)).unwrap().len() <= 255);
        assert_eq!(deduplicate("a.md", true, |n| n == "a.md"), "a_1.md");
        assert_eq!(
            deduplicate("dir", false, |n| n == "dir" || n == "dir_1"),
            "dir_2"
        );
        assert_eq!(stem("guide.md"), "guide");
        assert_eq!(extension("X.PDF"), "pdf");
    }
}
