//! OKF sidecar files (`.abstract.md`, `.overview.md`): YAML front matter + Markdown body
//! (spec §4.4). Rendered with a fixed key order and exactly one trailing newline.

/// Who generated a sidecar (`generated_by.component` / `.trigger`).
#[derive(Debug, Clone, Copy)]
pub struct GeneratedBy {
    pub component: &'static str,
    pub trigger: &'static str,
}

/// Sidecars written when accounts and users are scaffolded.
pub const CONTEXT_WRITE: GeneratedBy = GeneratedBy {
    component: "VikingFS.write_context",
    trigger: "context_write",
};

/// A skill package's own sidecars (its header fields and instructions): directory-summary
/// refreshes leave them as they are, like presets.
pub const SKILL_INGEST: GeneratedBy = GeneratedBy {
    component: "SkillProcessor",
    trigger: "skill_ingest",
};

/// Sidecars written by `fs/mkdir`.
pub const MKDIR: GeneratedBy = GeneratedBy {
    component: "FSService",
    trigger: "mkdir",
};

/// Render a sidecar for `directory_uri` (written with a trailing `/`). `with_freshness` adds
/// the zeroed `freshness` block that mkdir writes.
pub fn render(
    directory_uri: &str,
    generated_by: GeneratedBy,
    with_freshness: bool,
    body: &str,
) -> String {
    let dir = if directory_uri.ends_with('/') {
        directory_uri.to_string()
    } else {
        format!("{directory_uri}/")
    };
    let mut out = format!(
        "---\ndirectory: {dir}\ngenerated_by:\n  component: {}\n  trigger: {}\n",
        generated_by.component, generated_by.trigger
    );
    if with_freshness {
        out.push_str(
            "freshness:\n  total_entries: 0\n  sampled_entries: 0\n  unsampled_entries: 0\n  pending_child_changes: 0\n",
        );
    }
    out.push_str("---\n\n");
    out.push_str(body.trim_end_matches('\n'));
    out.push('\n');
    out
}

/// Split a sidecar into (front matter without the `---` fences, body). Files without front
/// matter (legacy) are all body.
pub fn split(text: &str) -> (Option<&str>, &str) {
    let Some(rest) = text.strip_prefix("---\n") else {
        return (None, text);
    };
    if let Some(end) = rest.find("\n---\n") {
        let front = &rest[..end + 1];
        let body = &rest[end + 5..];
        (Some(front), body)
    } else if let Some(front) = rest.strip_suffix("\n---") {
        (Some(front), "")
    } else {
        (None, text)
    }
}

/// The body of a sidecar as clients see it: front matter removed, surrounding blank lines and
/// trailing newlines stripped.
pub fn body(text: &str) -> &str {
    let (_, body) = split(text);
    body.trim_start_matches('\n').trim_end_matches(['\n', '\r'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_strips() {
        let text = render(
            "viking://user/bob/memories",
            CONTEXT_WRITE,
            false,
            "Memories.\n\n",
        );
        assert_eq!(
            text,
            "---\ndirectory: viking://user/bob/memories/\ngenerated_by:\n  component: VikingFS.write_context\n  trigger: context_write\n---\n\nMemories.\n"
        );
        assert_eq!(body(&text), "Memories.");
        let (front, _) = split(&text);
        assert!(front
            .unwrap()
            .starts_with("directory: viking://user/bob/memories/"));
        let mk = render("viking://resources/p/", MKDIR, true, "# p");
        assert!(mk.contains("freshness:\n  total_entries: 0\n"));
        assert_eq!(body(&mk), "# p");
        assert_eq!(body("legacy text\n"), "legacy text");
    }
}
