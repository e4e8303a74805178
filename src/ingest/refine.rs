//! After a tree is visible: with a chat model configured, rewrite every directory's L0/L1
//! bottom-up from its children (file heads and the children's new abstracts). A model that
//! fails or times out leaves the extractive sidecars in place and records a warning — a failing
//! model degrades summaries, never the ingestion.

use std::collections::HashMap;

use super::chat::{ChatClient, ChatSession};
use super::pipeline::write_sidecar_pair;
use super::summary::{self, ABSTRACT_MAX, OVERVIEW_MAX};
use crate::storage::fs::entry::{sidecar_text, ABSTRACT_FILE};
use crate::storage::uri::VikingUri;
use crate::storage::Storage;

/// What the refinement did.
#[derive(Debug, Default, Clone)]
pub struct Refined {
    /// Directories whose summaries the model wrote.
    pub processed: usize,
    /// Directories left with extractive summaries because the model failed.
    pub errors: Vec<String>,
}

const SYSTEM: &str = "You summarise documentation directories for a retrieval system. \
Be factual and concise; use only the material given.";

/// Rewrite the summaries of `dirs` (deepest first) with `chat`.
pub fn refine(storage: &dyn Storage, chat: &ChatClient, dirs: &[(String, VikingUri)]) -> Refined {
    let mut out = Refined::default();
    let session = match chat.session() {
        Ok(s) => s,
        Err(e) => {
            out.errors = dirs.iter().map(|(_, d)| format!("{d}: {e}")).collect();
            return out;
        }
    };
    let mut abstracts: HashMap<String, String> = HashMap::new();
    for (_, dir) in dirs {
        let material = gather(storage, dir, &abstracts);
        match summarize_dir(&session, dir, &material) {
            Ok((abs, overview)) => {
                match write_sidecar_pair(storage, dir.store_path(), dir, &abs, &overview) {
                    Ok(()) => {
                        out.processed += 1;
                        abstracts.insert(dir.uri(), abs);
                    }
                    Err(e) => out.errors.push(format!("{dir}: {}", e.message)),
                }
            }
            Err(e) => {
                out.errors
                    .push(format!("{dir}: {e}; kept the extractive summary"));
                abstracts.insert(dir.uri(), sidecar_text(storage, dir, ABSTRACT_FILE));
            }
        }
    }
    out
}

/// The model's abstract and overview of `dir` from `material` (its children, as [`gather`]
/// writes them), each within its length bound.
pub fn summarize_dir(
    session: &ChatSession<'_>,
    dir: &VikingUri,
    material: &str,
) -> Result<(String, String), String> {
    let prompt = format!(
        "Directory: {}\n\n{material}\n\nReply exactly in this form:\nABSTRACT: <one sentence, \
         at most 200 characters>\nOVERVIEW:\n<a Markdown overview of the directory and what \
         each child holds, at most 3000 characters>",
        dir.name()
    );
    let (reply, (input, output)) = session.complete_counted(SYSTEM, &prompt)?;
    // Summary tokens are the account's (no user asked for them).
    crate::telemetry::usage::record(crate::telemetry::usage::Usage {
        account: dir
            .store_path()
            .segments()
            .next()
            .unwrap_or_default()
            .to_string(),
        user: None,
        source: "vlm",
        model: session.model().to_string(),
        input_tokens: input,
        output_tokens: output,
        at: crate::time::iso_micros_now(),
    });
    let (abs, overview) = parse_reply(&reply)?;
    Ok((
        summary::truncate(&abs, ABSTRACT_MAX),
        summary::truncate(&overview, OVERVIEW_MAX),
    ))
}

/// Children of `dir` with what is known about them (a child directory's abstract from
/// `abstracts` or its sidecar, the head of each file), within a prompt budget.
pub fn gather(
    storage: &dyn Storage,
    dir: &VikingUri,
    abstracts: &HashMap<String, String>,
) -> String {
    let mut entries = storage.list(dir.store_path()).unwrap_or_default();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let mut text = String::new();
    for e in entries.into_iter().filter(|e| !e.name.starts_with('.')) {
        if text.len() > 12_000 {
            text.push_str("\n(more entries omitted)\n");
            break;
        }
        let Ok(child) = dir.child(&e.name) else {
            continue;
        };
        if e.meta.is_dir() {
            let abs = abstracts
                .get(&child.uri())
                .cloned()
                .unwrap_or_else(|| sidecar_text(storage, &child, ABSTRACT_FILE));
            text.push_str(&format!("- {}/ (directory): {abs}\n", e.name));
        } else {
            let head = storage
                .read_range(child.store_path(), 0, 3000)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_else(|| "(binary)".into());
            text.push_str(&format!("- {} (file):\n{}\n", e.name, head.trim()));
        }
    }
    text
}

fn parse_reply(reply: &str) -> Result<(String, String), String> {
    let a = reply
        .find("ABSTRACT:")
        .ok_or("the model's reply had no ABSTRACT: line")?;
    let o = reply
        .find("OVERVIEW:")
        .ok_or("the model's reply had no OVERVIEW: section")?;
    if o < a {
        return Err("the model's reply was not in the requested form".into());
    }
    let abs = reply[a + 9..o].trim().to_string();
    let overview = reply[o + 9..].trim().to_string();
    if abs.is_empty() || overview.is_empty() {
        return Err("the model's reply was empty".into());
    }
    Ok((abs, overview))
}

#[cfg(test)]
mod tests {
    use super::parse_reply;

    #[test]
    fn replies() {
        let (a, o) = parse_reply("ABSTRACT: Short.\nOVERVIEW:\n# X\nbody").unwrap();
        assert_eq!(a, "Short.");
        assert_eq!(o, "# X\nbody");
        assert!(parse_reply("nothing").is_err());
    }
}
