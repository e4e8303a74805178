//! Writing a pack while reading the tree: entries go to the ZIP as they are read (file
//! contents in bounded pieces, never whole when large), so the writer — a bounded channel to
//! the HTTP response — sees bytes as soon as the first file is read. What accumulates is the
//! manifest's per-entry records (path, size, sha256); index records are spooled to a local
//! temporary file and copied in at the end; the manifest is written last, as 0.5.2 does.

use std::io::{Read, Seek, SeekFrom, Write};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::ZipWriter;

use super::dense::{DenseSpool, DocHasher};
use super::format::{self, BACKUP_NAME, EXCLUDED_NAMES, FILES_DIR, FORMAT_VERSION, KIND};
use crate::error::{ServiceError, ServiceResult};
use crate::identity::Identity;
use crate::search::docs;
use crate::search::embed::Embedder;
use crate::storage::acl::{AclView, Level};
use crate::storage::fs::entry::{ABSTRACT_FILE, OVERVIEW_FILE};
use crate::storage::uri::{self, VikingUri};
use crate::storage::{is_internal_name, okf, tags, EntryKind, Storage, StorageError, StorePath};

/// Files up to this size are read in one call; larger ones in pieces of this size.
const PIECE_BYTES: u64 = 4 * 1024 * 1024;
/// Sidecar texts up to this size are also carried as index record text (0.5.2 does).
const MAX_RECORD_TEXT: u64 = 256 * 1024;

/// What to pack.
pub enum PackSource {
    /// One subtree (`export`): the root of the pack is this URI.
    Tree(VikingUri),
    /// The account's public scopes (`backup`); `agent/skills` rides along as an extension.
    Backup { account_root: VikingUri },
}

impl PackSource {
    /// The pack's base directory name and file name.
    pub fn base_name(&self) -> String {
        match self {
            PackSource::Tree(uri) if !uri.name().is_empty() => uri.name().to_string(),
            PackSource::Tree(_) => "export".into(),
            PackSource::Backup { .. } => BACKUP_NAME.into(),
        }
    }
}

/// What an export wrote.
#[derive(Debug, Default, Clone)]
pub struct PackStats {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

/// 0.5.2's checks before an export: a public scope (never `viking://` itself, `agent`,
/// or an excluded name), and the tree must exist.
pub fn check_export_source(storage: &dyn Storage, uri: &VikingUri) -> ServiceResult<()> {
    let scope = uri.segments().first().map(String::as_str).unwrap_or("");
    if uri.is_root() {
        return Err(ServiceError::invalid_argument(
            "ovpack export is not supported for root URI",
        ));
    }
    if !format::PUBLIC_SCOPES.contains(&scope) {
        return Err(ServiceError::invalid_argument(format!(
            "ovpack export is not supported for scope: {scope}"
        )));
    }
    if EXCLUDED_NAMES.contains(&uri.name()) {
        return Err(ServiceError::invalid_argument(format!(
            "cannot export internal ovpack file: {uri}"
        )));
    }
    match storage.stat(uri.store_path())? {
        Some(m) if m.is_dir() => Ok(()),
        Some(_) => Err(ServiceError::invalid_argument(format!(
            "ovpack export needs a directory: {uri}"
        ))),
        None => Err(crate::storage::fs::dir_not_found(uri)),
    }
}

struct Walk<'a, W: Write + Send> {
    storage: &'a dyn Storage,
    who: &'a Identity,
    zip: ZipWriter<zip::write::StreamWriter<W>>,
    base: String,
    /// Segments of the pack root's URI (`[]` for a backup).
    root_segs: Vec<String>,
    entries: Vec<Value>,
    /// (path, size, sha256) of every file, for the content digest.
    digests: Vec<(String, u64, String)>,
    records: std::fs::File,
    record_count: u64,
    records_hasher: Sha256,
    stats: PackStats,
    keep_going: &'a dyn Fn() -> bool,
    /// The caller's resource ACLs (`None`: nothing restricts this caller, e.g. a backup).
    acl: Option<AclView>,
    /// Dense vectors to carry (`include_vectors` with an embedder configured).
    vectors: Option<DenseSpool<'a>>,
}

fn io_err(e: impl std::fmt::Display) -> ServiceError {
    // The client went away or the channel closed: the export stops.
    ServiceError::unavailable("export", format!("export stopped: {e}"))
}

fn file_options(size: u64) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .large_file(size >= u32::MAX as u64 / 2)
}

fn join_rel(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

/// The 0.5.2 context type of a path (for directory records' scalars).
fn context_type(segs: &[String], rel: &str) -> &'static str {
    let all: Vec<&str> = segs
        .iter()
        .map(String::as_str)
        .chain(rel.split('/').filter(|s| !s.is_empty()))
        .collect();
    if all.first() == Some(&"user") && all.contains(&"memories") {
        "memory"
    } else if all.contains(&"skills") {
        "skill"
    } else {
        "resource"
    }
}

fn is_session_path(segs: &[String], rel: &str) -> bool {
    let mut all = segs
        .iter()
        .map(String::as_str)
        .chain(rel.split('/').filter(|s| !s.is_empty()));
    matches!(
        (all.next(), all.next(), all.next()),
        (Some("user"), Some(_), Some("sessions"))
    )
}

impl<W: Write + Send> Walk<'_, W> {
    /// Whether child `name` of `dir` belongs in the pack for this caller: 0.5.2's namespace
    /// visibility, then (USER callers with ACLs on) read permission — a denied directory is
    /// left out whole, as 0.5.2's tree leaves out everything below it.
    fn packs(&self, dir: &VikingUri, name: &str) -> ServiceResult<Option<VikingUri>> {
        if is_internal_name(name) || !uri::child_visible(dir, name, self.who) {
            return Ok(None);
        }
        let child = dir.child(name)?;
        if let Some(view) = &self.acl {
            if !view.allows(&child, Level::Read) {
                return Ok(None);
            }
        }
        Ok(Some(child))
    }

    fn user_of(&self, rel: &str) -> Option<String> {
        format::owner_user(&self.root_segs, rel).map(str::to_string)
    }

    fn zip_path(&self, rel: &str) -> String {
        format!("{}/{FILES_DIR}/{rel}", self.base)
    }

    fn push_entry(&mut self, rel: &str, dir: bool, size: u64, sha: Option<&str>) {
        let mut e = json!({"path": rel, "kind": if dir { "directory" } else { "file" }});
        if !rel.is_empty() {
            e["size"] = json!(if dir { 0 } else { size });
        }
        if let Some(sha) = sha {
            e["sha256"] = json!(sha);
        }
        if let Some(uid) = self.user_of(rel) {
            e["user_id"] = json!(uid);
        }
        self.entries.push(e);
    }

    fn push_record(
        &mut self,
        rel: &str,
        dir: bool,
        level: i64,
        text: Option<&str>,
        scalars: Map<String, Value>,
        vector: Option<&[f32]>,
    ) -> ServiceResult<()> {
        let mut r = Map::new();
        r.insert(
            "record_id".into(),
            json!(format!("r{:06}", self.record_count + 1)),
        );
        r.insert("path".into(), json!(rel));
        r.insert("kind".into(), json!(if dir { "directory" } else { "file" }));
        r.insert("level".into(), json!(level));
        if let Some(uid) = self.user_of(rel) {
            r.insert("user_id".into(), json!(uid));
        }
        if let Some(t) = text.filter(|t| !t.is_empty()) {
            r.insert("text".into(), json!(t));
        }
        if !scalars.is_empty() {
            r.insert("scalars".into(), Value::Object(scalars));
        }
        if let (Some(v), Some(spool)) = (vector, self.vectors.as_mut()) {
            r.insert("vector".into(), spool.push(v)?);
        }
        let line = format::record_line(&r);
        self.records_hasher.update(&line);
        self.records
            .write_all(&line)
            .map_err(ServiceError::internal)?;
        self.record_count += 1;
        Ok(())
    }

    /// Records of directory `rel`: its abstract (level 0, with its tags) and overview (1).
    fn dir_records(
        &mut self,
        rel: &str,
        texts: [Option<String>; 2],
        vectors: [Option<Vec<f32>>; 2],
        dir_tags: &[String],
    ) -> ServiceResult<()> {
        if is_session_path(&self.root_segs, rel) {
            return Ok(());
        }
        let ctx = context_type(&self.root_segs, rel);
        let abstract_text = texts[0].clone().unwrap_or_default();
        for (level, text) in texts.iter().enumerate() {
            let has_tags = level == 0 && !dir_tags.is_empty();
            if text.is_none() && !has_tags && vectors[level].is_none() {
                continue;
            }
            let mut scalars = Map::new();
            scalars.insert("context_type".into(), json!(ctx));
            scalars.insert("level".into(), json!(level));
            // What an index record holds (0.5.2's and Longship's): the summary's body, not
            // its front matter; `text` keeps the whole file.
            scalars.insert("abstract".into(), json!(okf::body(&abstract_text)));
            if has_tags {
                scalars.insert("search_tags".into(), json!(dir_tags));
            }
            self.push_record(
                rel,
                true,
                level as i64,
                text.as_deref(),
                scalars,
                vectors[level].as_deref(),
            )?;
        }
        Ok(())
    }

    fn add_dir(&mut self, rel: &str) -> ServiceResult<()> {
        let path = format!("{}/", self.zip_path(rel));
        self.zip
            .add_directory(path, SimpleFileOptions::default())
            .map_err(io_err)?;
        self.push_entry(rel, true, 0, None);
        self.stats.dirs += 1;
        Ok(())
    }

    /// Copy one file into the ZIP; returns its sidecar text when small enough to carry (a
    /// sidecar), else its abstract as the search index writes it (from the first piece),
    /// and its stored vector when vectors are carried and it has one.
    fn add_file(
        &mut self,
        rel: &str,
        path: &StorePath,
        size: u64,
        keep_text: bool,
    ) -> ServiceResult<(Option<String>, Option<Vec<f32>>)> {
        let abstract_of = |data: &[u8]| {
            let name = rel.rsplit('/').next().unwrap_or(rel);
            Some(docs::abstract_of(&docs::document_text(name, data))).filter(|a| !a.is_empty())
        };
        self.zip
            .start_file(self.zip_path(rel), file_options(size))
            .map_err(io_err)?;
        let mut doc_hash: Option<DocHasher> = self.vectors.as_ref().map(|v| v.doc_hasher());
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        let mut text = None;
        if size <= PIECE_BYTES {
            let data = read_or_gone(self.storage, path)?;
            hasher.update(&data);
            if let Some(h) = doc_hash.as_mut() {
                h.update(&data);
            }
            self.zip.write_all(&data).map_err(io_err)?;
            written = data.len() as u64;
            if keep_text && written <= MAX_RECORD_TEXT {
                text = Some(String::from_utf8_lossy(&data).into_owned());
            } else if !keep_text {
                text = abstract_of(&data);
            }
        } else {
            loop {
                let piece = self.storage.read_range(path, written, PIECE_BYTES)?;
                if piece.is_empty() {
                    break;
                }
                hasher.update(&piece);
                if let Some(h) = doc_hash.as_mut() {
                    h.update(&piece);
                }
                if written == 0 && !keep_text {
                    text = abstract_of(&piece);
                }
                self.zip.write_all(&piece).map_err(io_err)?;
                written += piece.len() as u64;
                if !(self.keep_going)() {
                    return Err(io_err("the client went away"));
                }
            }
        }
        let sha = hex::encode(hasher.finalize());
        self.push_entry(rel, false, written, Some(&sha));
        self.digests.push((rel.to_string(), written, sha));
        self.stats.files += 1;
        self.stats.bytes += written;
        let vector = match (doc_hash, self.vectors.as_ref()) {
            (Some(h), Some(spool)) if written > 0 => spool.lookup(self.storage, &h.finish()),
            _ => None,
        };
        Ok((text, vector))
    }

    /// Pack directory `dir` (at `rel` in the pack) and everything below it, depth first.
    fn walk(&mut self, dir: &VikingUri, rel: &str, own_tags: &[String]) -> ServiceResult<()> {
        if !(self.keep_going)() {
            return Err(io_err("the client went away"));
        }
        let mut children = match self.storage.list(dir.store_path()) {
            Ok(c) => c,
            Err(StorageError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        children.sort_by(|a, b| a.name.cmp(&b.name));
        let child_tags = tags::read_children(self.storage, dir.store_path())?;
        let mut texts: [Option<String>; 2] = [None, None];
        let mut sidecar_vectors: [Option<Vec<f32>>; 2] = [None, None];
        // Files first (sidecars give the directory's records), then subdirectories.
        for child in children.iter().filter(|c| c.meta.kind == EntryKind::File) {
            if EXCLUDED_NAMES.contains(&child.name.as_str()) {
                continue;
            }
            let Some(child_uri) = self.packs(dir, &child.name)? else {
                continue;
            };
            let child_rel = join_rel(rel, &child.name);
            let sidecar = match child.name.as_str() {
                ABSTRACT_FILE => Some(0),
                OVERVIEW_FILE => Some(1),
                _ => None,
            };
            let (text, vector) = self.add_file(
                &child_rel,
                child_uri.store_path(),
                child.meta.size,
                sidecar.is_some(),
            )?;
            // A sidecar's text and vector ride on its directory's records.
            let (file_abstract, vector) = match sidecar {
                Some(level) => {
                    texts[level] = text;
                    sidecar_vectors[level] = vector;
                    (None, None)
                }
                None => (text, vector),
            };
            if is_session_path(&self.root_segs, &child_rel) {
                continue;
            }
            // A file's record (as 0.5.2 writes one for every indexed file): its abstract,
            // which an importer shows for it (0.5.2 shows no other), tags and vector.
            let tags = child_tags.get(&child.name).filter(|t| !t.is_empty());
            if file_abstract.is_some() || tags.is_some() || vector.is_some() {
                let mut scalars = Map::new();
                scalars.insert(
                    "context_type".into(),
                    json!(context_type(&self.root_segs, &child_rel)),
                );
                scalars.insert("level".into(), json!(2));
                if let Some(a) = file_abstract {
                    scalars.insert("abstract".into(), json!(a));
                }
                if let Some(t) = tags {
                    scalars.insert("search_tags".into(), json!(t));
                }
                self.push_record(&child_rel, false, 2, None, scalars, vector.as_deref())?;
            }
        }
        // The backup root has no records of its own (0.5.2).
        if !(self.root_segs.is_empty() && rel.is_empty()) {
            self.dir_records(rel, texts, sidecar_vectors, own_tags)?;
        }
        for child in children.iter().filter(|c| c.meta.kind == EntryKind::Dir) {
            let Some(child_uri) = self.packs(dir, &child.name)? else {
                continue;
            };
            let child_rel = join_rel(rel, &child.name);
            // A backup carries only the public scopes under its root.
            if self.root_segs.is_empty()
                && rel.is_empty()
                && !format::PUBLIC_SCOPES.contains(&child.name.as_str())
            {
                continue;
            }
            self.add_dir(&child_rel)?;
            let tags = child_tags.get(&child.name).cloned().unwrap_or_default();
            self.walk(&child_uri, &child_rel, &tags)?;
        }
        Ok(())
    }
}

/// An anonymous local file for the index records (created, opened, unlinked at once, so
/// nothing is left behind however the export ends).
fn spool_file() -> std::io::Result<std::fs::File> {
    let mut id = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut id);
    let path = std::env::temp_dir().join(format!("longship-pack-{}", hex::encode(id)));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

fn read_or_gone(storage: &dyn Storage, path: &StorePath) -> ServiceResult<Vec<u8>> {
    match storage.read(path) {
        Ok(d) => Ok(d),
        // Removed while we walked: exported empty would lie; say what happened.
        Err(StorageError::NotFound(_)) => Err(ServiceError::conflict(
            "a file changed while it was being exported; retry the export",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Write the pack of `source` to `out`. Errors after the first byte can only end the stream.
/// With `vectors` (`include_vectors` and a configured embedder) the stored vectors of the
/// packed files travel as 0.5.2's dense snapshot.
pub fn write_pack<W: Write + Send>(
    storage: &dyn Storage,
    who: &Identity,
    source: &PackSource,
    out: W,
    vectors: Option<&Embedder>,
    keep_going: &dyn Fn() -> bool,
) -> ServiceResult<PackStats> {
    let base = source.base_name();
    let (root, root_segs, backup) = match source {
        PackSource::Tree(uri) => (uri.clone(), uri.segments().to_vec(), false),
        PackSource::Backup { account_root } => (account_root.clone(), Vec::new(), true),
    };
    let records = spool_file().map_err(ServiceError::internal)?;
    let vectors = match vectors {
        Some(e) => Some(DenseSpool::new(
            e,
            &who.account,
            spool_file().map_err(ServiceError::internal)?,
        )),
        None => None,
    };
    let mut walk = Walk {
        storage,
        who,
        zip: ZipWriter::new_stream(out),
        base: base.clone(),
        root_segs,
        entries: Vec::new(),
        digests: Vec::new(),
        records,
        record_count: 0,
        records_hasher: Sha256::new(),
        stats: PackStats::default(),
        keep_going,
        acl: AclView::for_caller(who),
        vectors,
    };
    walk.zip
        .add_directory(format!("{base}/"), SimpleFileOptions::default())
        .map_err(io_err)?;
    walk.zip
        .add_directory(format!("{base}/{FILES_DIR}/"), SimpleFileOptions::default())
        .map_err(io_err)?;
    walk.push_entry("", true, 0, None);
    let root_tags = if root.is_root() {
        Vec::new()
    } else {
        tags::read_tags(storage, root.store_path())?
    };
    if backup {
        // 0.5.2 lists both scope directories even when one is missing.
        for scope in format::PUBLIC_SCOPES {
            walk.add_dir(scope)?;
            let scope_uri = root.child(scope)?;
            let tags = tags::read_tags(storage, scope_uri.store_path())?;
            walk.walk(&scope_uri, scope, &tags)?;
        }
    } else {
        walk.walk(&root, "", &root_tags)?;
    }
    let Walk {
        mut zip,
        entries,
        digests,
        mut records,
        record_count,
        records_hasher,
        stats,
        vectors,
        ..
    } = walk;
    let content_sha =
        format::content_sha256(digests.iter().map(|(p, s, h)| (p.as_str(), *s, h.as_str())));
    zip.add_directory(
        format!("{base}/{}/", format::INTERNAL_DIR),
        SimpleFileOptions::default(),
    )
    .map_err(io_err)?;
    zip.start_file(format!("{base}/{}", format::RECORDS_PATH), file_options(0))
        .map_err(io_err)?;
    records
        .seek(SeekFrom::Start(0))
        .map_err(ServiceError::internal)?;
    std::io::copy(&mut (&mut records).take(u64::MAX), &mut zip).map_err(io_err)?;
    let dense = match vectors {
        Some(spool) => spool.finish()?,
        None => None,
    };
    let dense_info = match dense {
        Some((info, mut file)) => {
            zip.start_file(format!("{base}/{}", format::DENSE_PATH), file_options(0))
                .map_err(io_err)?;
            std::io::copy(&mut file, &mut zip).map_err(io_err)?;
            Some(info)
        }
        None => None,
    };
    let scope = match source {
        PackSource::Tree(uri) => uri.segments()[0].clone(),
        PackSource::Backup { .. } => "root".into(),
    };
    let root_uri = if backup {
        "viking://".to_string()
    } else {
        root.uri()
    };
    let root_user = format::owner_user(root.segments(), "").map(str::to_string);
    let mut manifest = json!({
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "root": format::root_object(&base, &root_uri, &scope, root_user.as_deref(), backup),
        "entries": entries,
        "content_sha256": content_sha,
        "index": {"records": {
            "path": format::RECORDS_PATH,
            "count": record_count,
            "sha256": hex::encode(records_hasher.finalize()),
        }},
    });
    if let Some(info) = dense_info {
        manifest["index"]["dense"] = info;
    }
    if backup {
        manifest["scopes"] = json!(format::PUBLIC_SCOPES);
        let skills = super::skills_ext::collect(storage, &root)?;
        if !skills.is_empty() {
            manifest[format::SKILLS_EXTENSION] = Value::Array(skills);
        }
    }
    zip.start_file(format!("{base}/{}", format::MANIFEST_LEAF), file_options(0))
        .map_err(io_err)?;
    let body = serde_json::to_vec_pretty(&manifest).map_err(ServiceError::internal)?;
    zip.write_all(&body).map_err(io_err)?;
    let mut inner = zip.finish().map_err(io_err)?;
    inner.flush().map_err(io_err)?;
    Ok(stats)
}
