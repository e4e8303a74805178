//! One directory's refresh: read what it holds now (bounded), compute its L0/L1 (extractive,
//! or the chat model's when one is configured), and write them fenced by the versions read
//! before the children were, so a slower concurrent refresh never overwrites a newer one.

use std::collections::HashMap;

use super::marks;
use crate::ingest::chat::ChatClient;
use crate::ingest::refine;
use crate::ingest::summary::{self, ChildInfo, DirSummary};
use crate::storage::fs::entry::{ABSTRACT_FILE, OVERVIEW_FILE};
use crate::storage::okf::{self, GeneratedBy};
use crate::storage::uri::VikingUri;
use crate::storage::{is_internal_name, Storage, StorageError, StorageResult, StorePath, Version};

/// Files whose first bytes are read for a refresh (the rest are listed by name).
const MAX_FILES_READ: usize = 32;
/// Child directories whose abstracts are read for a refresh.
const MAX_DIRS_READ: usize = 32;
/// How much of each file is read.
const HEAD_BYTES: u64 = 16 * 1024;

/// Sidecars a refresh writes (0.5.2 names the refresh after a content write so).
const REFRESH_SIDECARS: GeneratedBy = GeneratedBy {
    component: "SemanticProcessor",
    trigger: "content_write",
};

/// What one refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// No mark was left: another refresh (maybe on another instance) already did it.
    NothingPending,
    /// The directory is gone (or is a file now); its marks were dropped.
    Gone,
    /// A preset directory (scaffolded with its own description): left as it is.
    Preset,
    /// Sidecars written (the paths written, and whether the abstract changed, which changes
    /// the parent's overview in turn).
    Written {
        written: Vec<StorePath>,
        abstract_changed: bool,
    },
    /// Another writer replaced a sidecar meanwhile: the marks stay, try again later.
    Conflict,
}

/// One sidecar as read before the refresh.
struct Current {
    path: StorePath,
    text: Option<String>,
    version: Option<Version>,
}

fn current(storage: &dyn Storage, dir: &StorePath, name: &str) -> StorageResult<Current> {
    let path = dir.join(name)?;
    match storage.read_versioned(&path) {
        Ok((bytes, version)) => Ok(Current {
            path,
            text: Some(String::from_utf8_lossy(&bytes).into_owned()),
            version: Some(version),
        }),
        Err(StorageError::NotFound(_)) => Ok(Current {
            path,
            text: None,
            version: None,
        }),
        Err(e) => Err(e),
    }
}

/// The `generated_by.trigger` of a sidecar's front matter.
fn trigger_of(text: &str) -> Option<&str> {
    let (front, _) = okf::split(text);
    front?
        .lines()
        .find_map(|l| l.trim().strip_prefix("trigger:"))
        .map(str::trim)
}

/// Refresh `dir` (a full storage path). `chat`: the model, when configured.
pub fn refresh(
    storage: &dyn Storage,
    dir: &StorePath,
    chat: Option<&ChatClient>,
) -> StorageResult<Refreshed> {
    let listed = marks::list(storage, dir)?;
    if listed.is_empty() {
        return Ok(Refreshed::NothingPending);
    }
    let abstract_now = current(storage, dir, ABSTRACT_FILE)?;
    let overview_now = current(storage, dir, OVERVIEW_FILE)?;
    let trigger = abstract_now.text.as_deref().and_then(trigger_of);
    // Presets keep their text, and so does a skill package's own summary (its header fields,
    // which skill listings read back).
    if trigger == Some(okf::CONTEXT_WRITE.trigger) || trigger == Some(okf::SKILL_INGEST.trigger) {
        marks::clear(storage, dir, &listed)?;
        return Ok(Refreshed::Preset);
    }
    let entries = match storage.list(dir) {
        Ok(e) => e,
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => {
            marks::clear(storage, dir, &listed)?;
            return Ok(Refreshed::Gone);
        }
        Err(e) => return Err(e),
    };
    let Some(uri) = uri_of(dir) else {
        marks::clear(storage, dir, &listed)?;
        return Ok(Refreshed::Gone);
    };
    let mut summary = extractive(storage, dir, uri.name(), entries)?;
    if let Some(chat) = chat {
        match model_summary(storage, chat, &uri) {
            Ok(s) => summary = s,
            Err(e) => {
                tracing::warn!(uri = %uri, error = %e, "chat model failed; kept the extractive summary")
            }
        }
    }
    // mkdir's own description (not its default `# name`) stays the abstract.
    let keep_abstract = trigger == Some(okf::MKDIR.trigger)
        && abstract_now
            .text
            .as_deref()
            .is_some_and(|t| okf::body(t) != format!("# {}", uri.name()));
    // A directory removed while this refresh read it (an rm, an account deleted) must not
    // come back holding only sidecars: writes create missing parents.
    if !storage.stat(dir)?.is_some_and(|m| m.is_dir()) {
        marks::clear(storage, dir, &listed)?;
        return Ok(Refreshed::Gone);
    }
    let shown = uri.uri();
    let mut written = Vec::new();
    let mut abstract_changed = false;
    if !keep_abstract {
        let text = okf::render(&shown, REFRESH_SIDECARS, false, &summary.abstract_text);
        if abstract_now.text.as_deref().map(okf::body) != Some(okf::body(&text)) {
            if !write_fenced(storage, &abstract_now, &text)? {
                return Ok(Refreshed::Conflict);
            }
            written.push(abstract_now.path.clone());
            abstract_changed = true;
        }
    }
    let text = okf::render(&shown, REFRESH_SIDECARS, false, &summary.overview);
    if overview_now.text.as_deref().map(okf::body) != Some(okf::body(&text)) {
        if !write_fenced(storage, &overview_now, &text)? {
            return Ok(Refreshed::Conflict);
        }
        written.push(overview_now.path.clone());
    }
    marks::clear(storage, dir, &listed)?;
    Ok(Refreshed::Written {
        written,
        abstract_changed,
    })
}

/// Write `text` only if the sidecar is still as read; false when another writer won.
fn write_fenced(storage: &dyn Storage, now: &Current, text: &str) -> StorageResult<bool> {
    match storage.write_if(&now.path, text.as_bytes(), now.version.as_ref()) {
        Ok(_) => Ok(true),
        Err(StorageError::Conflict(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The URI of a full storage path (`acme/resources/docs` → `viking://resources/docs`).
pub fn uri_of(dir: &StorePath) -> Option<VikingUri> {
    let mut segs = dir.segments();
    let mut uri = VikingUri::root(segs.next()?).ok()?;
    for seg in segs {
        uri = uri.child(seg).ok()?;
    }
    Some(uri)
}

/// The extractive L0/L1 of `dir` from a bounded read of its children.
fn extractive(
    storage: &dyn Storage,
    dir: &StorePath,
    name: &str,
    entries: Vec<crate::storage::DirEntry>,
) -> StorageResult<DirSummary> {
    let mut entries: Vec<_> = entries
        .into_iter()
        .filter(|e| !e.name.starts_with('.') && !is_internal_name(&e.name))
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let dir_sidecars: Vec<StorePath> = entries
        .iter()
        .filter(|e| e.meta.is_dir())
        .take(MAX_DIRS_READ)
        .filter_map(|e| dir.join(&e.name).and_then(|d| d.join(ABSTRACT_FILE)).ok())
        .collect();
    let mut dir_abstracts: HashMap<StorePath, String> = HashMap::new();
    for (path, read) in dir_sidecars
        .iter()
        .zip(storage.read_many(&dir_sidecars, &|| true))
    {
        if let Ok(bytes) = read {
            let body = okf::body(&String::from_utf8_lossy(&bytes)).to_string();
            dir_abstracts.insert(path.clone(), body);
        }
    }
    let mut children = Vec::with_capacity(entries.len());
    let mut docs: Vec<(String, String)> = Vec::new();
    let mut files_read = 0;
    for e in entries {
        let abstract_text = if e.meta.is_dir() {
            dir.join(&e.name)
                .and_then(|d| d.join(ABSTRACT_FILE))
                .ok()
                .and_then(|p| dir_abstracts.remove(&p))
                .unwrap_or_default()
        } else if files_read < MAX_FILES_READ {
            files_read += 1;
            let head = match storage.read_range(&dir.join(&e.name)?, 0, HEAD_BYTES) {
                Ok(bytes) => summary::text_head(&bytes),
                // Removed or replaced by a directory meanwhile: the next refresh sees it.
                Err(StorageError::NotFound(_)) | Err(StorageError::IsADirectory(_)) => continue,
                Err(err) => return Err(err),
            };
            let (abs, is_doc) = summary::child_abstract(&e.name, head.as_deref(), e.meta.size);
            if let (Some(text), true) = (head, is_doc) {
                docs.push((e.name.clone(), text));
            }
            abs
        } else {
            String::new()
        };
        children.push(ChildInfo {
            name: e.name,
            is_dir: e.meta.is_dir(),
            abstract_text,
        });
    }
    let main = summary::main_document(name, &docs);
    Ok(summary::extractive(
        name,
        main.map(|(_, t)| t.as_str()),
        &children,
    ))
}

/// The model's L0/L1 of `uri` (one completion; its material is bounded by `refine::gather`).
fn model_summary(
    storage: &dyn Storage,
    chat: &ChatClient,
    uri: &VikingUri,
) -> Result<DirSummary, String> {
    let session = chat.session()?;
    let material = refine::gather(storage, uri, &HashMap::new());
    let (abstract_text, overview) = refine::summarize_dir(&session, uri, &material)?;
    Ok(DirSummary {
        abstract_text,
        overview,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    fn write(storage: &LocalStorage, path: &str, text: &str) {
        storage
            .write(&StorePath::parse(path).unwrap(), text.as_bytes())
            .unwrap();
    }

    fn body(storage: &LocalStorage, path: &str) -> String {
        let bytes = storage.read(&StorePath::parse(path).unwrap()).unwrap();
        okf::body(&String::from_utf8_lossy(&bytes)).to_string()
    }

    #[test]
    fn refresh_summarises_children_and_clears_only_its_marks() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(tmp.path()).unwrap();
        let dir = StorePath::parse("acme/resources/notes").unwrap();
        let mkdir_text = okf::render("viking://resources/notes", okf::MKDIR, true, "# notes");
        write(&storage, "acme/resources/notes/.abstract.md", &mkdir_text);
        write(
            &storage,
            "acme/resources/notes/alpha.md",
            "# Alpha\n\nAlpha explains the nightingale protocol.\n",
        );
        write(
            &storage,
            "acme/resources/notes/beta.md",
            "# Beta\n\nBeta text.\n",
        );
        assert_eq!(
            refresh(&storage, &dir, None).unwrap(),
            Refreshed::NothingPending
        );
        marks::put(&storage, &dir).unwrap();
        let out = refresh(&storage, &dir, None).unwrap();
        assert!(
            matches!(&out, Refreshed::Written { written, abstract_changed: true } if written.len() == 2),
            "{out:?}"
        );
        let overview = body(&storage, "acme/resources/notes/.overview.md");
        assert!(
            overview.contains("alpha.md: Alpha: Alpha explains the nightingale protocol."),
            "{overview}"
        );
        assert!(overview.contains("beta.md"), "{overview}");
        assert!(marks::list(&storage, &dir).unwrap().is_empty());
        // Nothing new: a second mark rewrites nothing.
        marks::put(&storage, &dir).unwrap();
        assert!(matches!(
            refresh(&storage, &dir, None).unwrap(),
            Refreshed::Written { written, .. } if written.is_empty()
        ));
    }

    #[test]
    fn presets_and_descriptions_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(tmp.path()).unwrap();
        let preset = StorePath::parse("acme/user/bob/memories").unwrap();
        let text = okf::render(
            "viking://user/bob/memories",
            okf::CONTEXT_WRITE,
            false,
            "Memories.",
        );
        write(&storage, "acme/user/bob/memories/.abstract.md", &text);
        write(&storage, "acme/user/bob/memories/m.md", "a memory");
        marks::put(&storage, &preset).unwrap();
        assert_eq!(refresh(&storage, &preset, None).unwrap(), Refreshed::Preset);
        assert_eq!(
            body(&storage, "acme/user/bob/memories/.abstract.md"),
            "Memories."
        );

        let described = StorePath::parse("acme/resources/p").unwrap();
        let text = okf::render("viking://resources/p", okf::MKDIR, true, "Project papers.");
        write(&storage, "acme/resources/p/.abstract.md", &text);
        write(&storage, "acme/resources/p/a.md", "# A\n\nSome paper.\n");
        marks::put(&storage, &described).unwrap();
        refresh(&storage, &described, None).unwrap();
        assert_eq!(
            body(&storage, "acme/resources/p/.abstract.md"),
            "Project papers."
        );
        assert!(body(&storage, "acme/resources/p/.overview.md").contains("a.md"));
    }

    #[test]
    fn a_sidecar_replaced_meanwhile_wins_and_the_marks_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(tmp.path()).unwrap();
        let dir = StorePath::parse("acme/resources/d").unwrap();
        write(&storage, "acme/resources/d/a.md", "# A\n\nText.\n");
        marks::put(&storage, &dir).unwrap();
        let stale = current(&storage, &dir, OVERVIEW_FILE).unwrap();
        write(&storage, "acme/resources/d/.overview.md", "newer");
        assert!(!write_fenced(&storage, &stale, "older").unwrap());
        assert_eq!(body(&storage, "acme/resources/d/.overview.md"), "newer");
        assert_eq!(marks::list(&storage, &dir).unwrap().len(), 1);
    }
}
