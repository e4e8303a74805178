//! One ingestion, end to end on the blocking side: bring the source to local scratch space,
//! parse it in the child process, write the tree with its summaries under a staging prefix of
//! the account (`_system/ingest/<task>/tree`), then make it visible under its final URI with
//! one rename. On local disk that rename is atomic; on S3 a directory move is object by
//! object behind a publishing flag, so the tree appears whole at once there too (see
//! `storage::backend::s3::moves`). A failure anywhere removes the staging tree, so nothing
//! but the failed task is left behind.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::archive::ArchiveLimits;
use super::local::{self, LocalSource};
use super::parse::{ParseOptions, ParseReport};
use super::sandbox::{self, ChildLimits};
use super::scratch::Scratch;
use super::summary::{self, DirSummary};
use super::{fetch, uploads};
use crate::config::{QuotaSettings, ResourceSettings};
use crate::error::{ErrorCode, ServiceError, ServiceResult};
use crate::storage::fs::entry::{ABSTRACT_FILE, OVERVIEW_FILE};
use crate::storage::okf::{self, GeneratedBy};
use crate::storage::uri::VikingUri;
use crate::storage::{Storage, StorageError, StorageResult, StorePath};

/// Who wrote an ingested tree's sidecars.
pub const INGEST_SIDECARS: GeneratedBy = GeneratedBy {
    component: "SemanticProcessor",
    trigger: "resource_ingest",
};

/// Where the content comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A temp upload of the caller.
    Upload { id: String },
    /// An http(s) URL the server fetches.
    Url(String),
    /// An http(s) URL already fetched (by a watch, conditionally) into a local file.
    Fetched {
        url: String,
        file: PathBuf,
        name: String,
    },
    /// A server-local file or directory, as the client named it; resolved against
    /// `resources.local_path_allowlist` on the blocking side.
    LocalPath(PathBuf),
}

/// Where the tree goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// Exactly this URI (`to`); an existing one is a conflict.
    Exact(VikingUri),
    /// Under this directory with the source's name, renamed `name_1`, … on collision.
    Under { parent: VikingUri, create: bool },
    /// Exactly this URI, replacing what is there (a watch's refresh): the old tree is moved
    /// aside and the new one renamed into its place, so readers see the old tree or the new
    /// one whole, never a mix.
    Replace(VikingUri),
}

/// One ingestion as the job sees it.
#[derive(Debug, Clone)]
pub struct IngestRequest {
    pub account: String,
    pub user: String,
    pub task_id: String,
    pub source: Source,
    pub target: Target,
    pub source_name: Option<String>,
    pub strict: bool,
    pub ignore_dirs: Option<String>,
    pub include: Option<String>,
    pub exclude: Option<String>,
    /// 0.5.2's `preserve_structure` (default true): false lays a directory out flat.
    pub preserve_structure: bool,
}

/// A tree made visible.
#[derive(Debug, Clone)]
pub struct Published {
    pub root_uri: VikingUri,
    pub source_path: String,
    pub source_format: String,
    pub warnings: Vec<String>,
    pub files: usize,
    pub bytes: u64,
    /// Every directory of the tree, deepest first, with its relative path.
    pub dirs: Vec<(String, VikingUri)>,
    /// For a URL source: the validators it was served with and the SHA-256 of its bytes (what
    /// a watch compares the next fetch with).
    pub source_version: Option<(fetch::Validators, String)>,
}

/// `<account>/_system/ingest/<task_id>`: staging and crash bookkeeping of one ingestion.
pub fn staging_dir(account: &str, task_id: &str) -> Result<StorePath, StorageError> {
    StorePath::root()
        .join(account)?
        .join("_system")?
        .join("ingest")?
        .join(task_id)
}

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::invalid_argument(message)
}

/// Refuse early when `to` exists, before any parsing.
pub fn check_target(storage: &dyn Storage, target: &Target) -> ServiceResult<()> {
    match target {
        Target::Exact(uri) => {
            if storage.stat(uri.store_path())?.is_some() {
                return Err(conflict(uri));
            }
        }
        Target::Replace(_) => {}
        Target::Under { parent, create } => match storage.stat(parent.store_path())? {
            Some(m) if m.is_dir() => {}
            Some(_) => return Err(invalid(format!("Parent URI is not a directory: {parent}"))),
            None if *create => {}
            None => {
                return Err(ServiceError::not_found(
                    "directory",
                    &parent.uri(),
                    format!(
                        "Parent URI does not exist: {parent}. Set create_parent=true to create it."
                    ),
                ))
            }
        },
    }
    Ok(())
}

fn conflict(uri: &VikingUri) -> ServiceError {
    let shown = uri.uri();
    ServiceError::conflict(format!("Resource already exists: {shown}"))
        .with_details(json!({"resource": shown, "uri": shown, "conflict_type": "already_exists"}))
}

/// Parse, stage and publish one source.
pub fn ingest(
    storage: &dyn Storage,
    req: &IngestRequest,
    settings: &ResourceSettings,
    quota: &QuotaSettings,
    heartbeat: &mut dyn FnMut(),
) -> ServiceResult<Published> {
    check_target(storage, &req.target)?;
    let staging = staging_dir(&req.account, &req.task_id)?;
    let outcome = ingest_staged(storage, req, settings, quota, &staging, heartbeat);
    let _ = storage.remove(&staging, true);
    outcome
}

fn ingest_staged(
    storage: &dyn Storage,
    req: &IngestRequest,
    settings: &ResourceSettings,
    quota: &QuotaSettings,
    staging: &StorePath,
    heartbeat: &mut dyn FnMut(),
) -> ServiceResult<Published> {
    let scratch = Scratch::create(settings, &req.task_id).map_err(|e| {
        tracing::error!(error = %e, "cannot create the ingestion scratch directory");
        ServiceError::unavailable("ingest", "no local scratch space for parsing")
    })?;
    let input = scratch.path().join("input");
    let archive = ArchiveLimits {
        max_entries: settings.archive_max_entries,
        max_total_bytes: settings.archive_max_total_bytes,
        max_ratio: settings.archive_max_ratio,
        max_depth: settings.archive_max_depth,
    };
    let mut pack_warnings = Vec::new();
    let mut validators = None;
    let (mut source_path, default_name) = materialize(
        storage,
        req,
        settings,
        archive,
        &input,
        &mut pack_warnings,
        &mut validators,
    )?;
    let source_version = match validators {
        Some(v) => Some((
            v,
            fetch::file_sha256(&input).map_err(ServiceError::internal)?,
        )),
        None => None,
    };
    if let (Source::Upload { .. }, Some(name)) = (&req.source, &req.source_name) {
        // Clients upload under temporary names and say the real one in source_name.
        source_path = name.clone();
    }
    let source_name = req.source_name.clone().unwrap_or(default_name);
    let opts = ParseOptions {
        source_name,
        strict: req.strict,
        ignore_dirs: req.ignore_dirs.clone(),
        include: req.include.clone(),
        exclude: req.exclude.clone(),
        max_tokens: settings.split_max_tokens,
        archive,
        max_nodes: settings.ingest_max_nodes,
        max_bytes: settings.ingest_max_bytes,
        preserve_structure: req.preserve_structure,
        package: false,
    };
    let limits = ChildLimits {
        memory_bytes: settings.parser_memory_mb * 1024 * 1024,
        cpu_secs: settings.parser_cpu_secs,
        timeout: Duration::from_secs(settings.parser_timeout_secs),
    };
    let t_parse = std::time::Instant::now();
    let mut report: ParseReport =
        sandbox::run_child(&input, scratch.path(), &opts, limits, heartbeat)
            .map_err(|m| invalid(format!("Cannot import {source_path}: {m}")))?;
    report.warnings.splice(0..0, pack_warnings);
    let local_root = scratch.path().join("out").join(&report.root);
    if !local_root.is_dir() {
        return Err(ServiceError::internal(
            "the parser produced no document tree",
        ));
    }
    let parse_ms = t_parse.elapsed().as_millis() as u64;
    let t_sum = std::time::Instant::now();
    let summaries = summary::summarize_tree(&local_root, &report.root);
    let summarize_ms = t_sum.elapsed().as_millis() as u64;
    // The tree's files plus two sidecars per directory (the root's included) must fit the
    // account's quota before anything is staged.
    let (added_bytes, added_files) = (report.bytes, (report.files + 2 * (report.dirs + 1)) as u64);
    crate::storage::quota::admit(storage, &req.account, added_bytes, added_files, quota)?;
    let t_pub = std::time::Instant::now();
    let tree = staging.join("tree")?;
    let (final_uri, rel_dirs) = stage(
        storage,
        req,
        &report,
        &local_root,
        &tree,
        &summaries,
        heartbeat,
    )?;
    let root_uri = publish(
        storage,
        req,
        &report.root,
        &tree,
        final_uri,
        &summaries,
        Duration::from_secs(settings.stale_after_secs),
    )?;
    crate::storage::quota::charge(
        storage,
        &req.account,
        added_bytes as i64,
        added_files as i64,
        quota,
    );
    let dirs = published_dirs(&root_uri, rel_dirs)?;
    tracing::info!(
        root = %root_uri,
        files = report.files,
        bytes = report.bytes,
        parse_ms,
        summarize_ms,
        stage_and_publish_ms = t_pub.elapsed().as_millis() as u64,
        "resource published"
    );
    Ok(Published {
        root_uri,
        source_path,
        source_format: report.source_format,
        warnings: report.warnings,
        files: report.files,
        bytes: report.bytes,
        dirs,
        source_version,
    })
}

/// The source in a local file (a local directory packed as a ZIP, `warnings` say what was
/// skipped); returns (source_path as reported, default source name).
fn materialize(
    storage: &dyn Storage,
    req: &IngestRequest,
    settings: &ResourceSettings,
    archive: ArchiveLimits,
    input: &Path,
    warnings: &mut Vec<String>,
    validators: &mut Option<fetch::Validators>,
) -> ServiceResult<(String, String)> {
    match &req.source {
        Source::Upload { id } => {
            let meta = uploads::open(storage, &req.account, &req.user, id)?;
            uploads::copy_to_local(storage, &req.account, id, &meta, input)?;
            let name = if meta.original_filename.is_empty() {
                id.clone()
            } else {
                meta.original_filename.clone()
            };
            Ok((name.clone(), name))
        }
        Source::Url(url) => {
            let known = fetch::Validators::default();
            match fetch::fetch_if_changed(url, input, settings, &known)? {
                fetch::Fetched::Body {
                    name,
                    validators: v,
                } => {
                    *validators = Some(v);
                    Ok((url.clone(), name))
                }
                fetch::Fetched::NotModified => Err(invalid(format!(
                    "Fetching {url:.200} failed: HTTP 304 to an unconditional request"
                ))),
            }
        }
        Source::Fetched { url, file, name } => {
            fs::copy(file, input).map_err(ServiceError::internal)?;
            Ok((url.clone(), name.clone()))
        }
        Source::LocalPath(path) => {
            let refused = || refuse_local(path);
            match local::resolve(path, &settings.local_path_allowlist).ok_or_else(refused)? {
                LocalSource::File(file) => {
                    let size = fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                    if size > settings.upload_max_bytes {
                        return Err(ServiceError::new(
                            ErrorCode::PayloadTooLarge,
                            "the local file is larger than resources.upload_max_bytes",
                        ));
                    }
                    fs::copy(&file, input)
                        .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
                    let name = file
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "file".into());
                    Ok((path.display().to_string(), name))
                }
                LocalSource::Dir(dir) => {
                    let name = dir
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "directory".into());
                    local::pack_dir(&dir, &name, input, archive, warnings)
                        .map_err(|m| invalid(format!("Cannot import {}: {m}", path.display())))?;
                    Ok((path.display().to_string(), format!("{name}.zip")))
                }
            }
        }
    }
}

/// One answer for every local path that is not allowed (missing, outside the allow-list,
/// a special file), so the refusal reveals nothing about the server's file system.
pub fn refuse_local(path: &Path) -> ServiceError {
    invalid(format!(
        "Local paths are not read by this server: {:.200}. Upload the file with \
         /api/v1/resources/temp_upload (the SDK and `ov add-resource` do this for you).",
        path.display().to_string()
    ))
}

/// Write the tree and its sidecars under `tree`; returns the URI it is meant for and the
/// relative path of every directory.
fn stage(
    storage: &dyn Storage,
    req: &IngestRequest,
    report: &ParseReport,
    local_root: &Path,
    tree: &StorePath,
    summaries: &BTreeMap<String, DirSummary>,
    heartbeat: &mut dyn FnMut(),
) -> ServiceResult<(VikingUri, Vec<String>)> {
    let final_uri = match &req.target {
        Target::Exact(uri) | Target::Replace(uri) => uri.clone(),
        Target::Under { parent, .. } => free_child(storage, parent, &report.root, 0)?,
    };
    let mut rel_dirs = Vec::new();
    let t = std::time::Instant::now();
    upload_tree(storage, local_root, tree, "", &mut rel_dirs, heartbeat)?;
    write_sidecars(storage, tree, &final_uri, summaries, true)?;
    let staged_ms = t.elapsed().as_millis() as u64;
    storage.sync_staged()?;
    tracing::debug!(
        staged_ms,
        synced_ms = t.elapsed().as_millis() as u64 - staged_ms,
        "staged"
    );
    Ok((final_uri, rel_dirs))
}

/// Move the staged `tree` to `final_uri` (or, under a parent, the next free name); returns
/// where it landed.
fn publish(
    storage: &dyn Storage,
    req: &IngestRequest,
    root_name: &str,
    tree: &StorePath,
    mut final_uri: VikingUri,
    summaries: &BTreeMap<String, DirSummary>,
    stale_after: Duration,
) -> ServiceResult<VikingUri> {
    if let Target::Replace(uri) = &req.target {
        super::active::keep_alive(
            storage,
            &req.account,
            &req.user,
            &req.task_id,
            stale_after,
            || replace(storage, req, tree, uri),
        )?;
        return Ok(final_uri);
    }
    let mut attempt = 0;
    loop {
        // A tree move on S3 is one call of many requests: keep the task's marker fresh
        // meanwhile, so no sweep takes the ingestion for dead and removes its staging tree.
        let moved = super::active::keep_alive(
            storage,
            &req.account,
            &req.user,
            &req.task_id,
            stale_after,
            || storage.rename(tree, final_uri.store_path()),
        );
        match moved {
            Ok(()) => return Ok(final_uri),
            Err(StorageError::AlreadyExists(_)) => match &req.target {
                Target::Exact(uri) | Target::Replace(uri) => return Err(conflict(uri)),
                Target::Under { parent, .. } if attempt < 50 => {
                    attempt += 1;
                    final_uri = free_child(storage, parent, root_name, attempt)?;
                    write_sidecars(storage, tree, &final_uri, summaries, false)?;
                }
                Target::Under { .. } => {
                    return Err(ServiceError::conflict(
                        "could not find a free name for the resource",
                    ))
                }
            },
            Err(e) => return Err(e.into()),
        }
    }
}

/// Swap the staged `tree` into `target` through `storage::replace` (one atomic exchange on
/// local disk; on S3 a journaled pair of moves the staging sweep settles after a crash), so
/// readers see the old tree or the new one whole.
fn replace(
    storage: &dyn Storage,
    req: &IngestRequest,
    tree: &StorePath,
    target: &VikingUri,
) -> StorageResult<()> {
    let staging = staging_dir(&req.account, &req.task_id)?;
    crate::storage::replace::publish(
        storage,
        &staging,
        &[(tree.clone(), target.store_path().clone())],
    )
}

/// The URI of every directory of the published tree, deepest first (so summaries can be
/// rebuilt bottom-up), with its relative path.
fn published_dirs(
    root: &VikingUri,
    rel_dirs: Vec<String>,
) -> ServiceResult<Vec<(String, VikingUri)>> {
    let mut dirs = Vec::with_capacity(rel_dirs.len());
    for rel in rel_dirs {
        let mut uri = root.clone();
        for seg in rel.split('/').filter(|s| !s.is_empty()) {
            uri = uri.child(seg)?;
        }
        dirs.push((rel, uri));
    }
    dirs.sort_by_key(|(rel, _)| {
        std::cmp::Reverse(rel.split('/').filter(|s| !s.is_empty()).count())
    });
    Ok(dirs)
}

/// `parent/name`, or the first of `name_1`, `name_2`, … that is free, starting at `from`.
fn free_child(
    storage: &dyn Storage,
    parent: &VikingUri,
    name: &str,
    from: usize,
) -> ServiceResult<VikingUri> {
    for n in from..from + 1000 {
        let candidate = if n == 0 {
            name.to_string()
        } else {
            format!("{name}_{n}")
        };
        let uri = parent.child(&candidate)?;
        if storage.stat(uri.store_path())?.is_none() {
            return Ok(uri);
        }
    }
    Err(ServiceError::conflict(
        "could not find a free name for the resource",
    ))
}

/// Copy the local tree into storage; records every directory's relative path.
pub fn upload_tree(
    storage: &dyn Storage,
    local: &Path,
    dest: &StorePath,
    rel: &str,
    dirs: &mut Vec<String>,
    heartbeat: &mut dyn FnMut(),
) -> ServiceResult<()> {
    dirs.push(rel.to_string());
    let entries = fs::read_dir(local).map_err(ServiceError::internal)?;
    for entry in entries {
        let entry = entry.map_err(ServiceError::internal)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Whatever produced the tree (archive, directory, parser), a reserved name must not
        // reach storage: on S3 it would be taken for a marker or a publishing flag.
        if crate::storage::is_internal_name(&name) {
            return Err(crate::storage::uri::reserved_name(
                &format!("{rel}/{name}"),
                &name,
            ));
        }
        let target = dest.join(&name)?;
        let ft = entry.file_type().map_err(ServiceError::internal)?;
        if ft.is_dir() {
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            upload_tree(storage, &entry.path(), &target, &child_rel, dirs, heartbeat)?;
        } else if ft.is_file() {
            heartbeat();
            let data = fs::read(entry.path()).map_err(ServiceError::internal)?;
            storage.write_staged(&target, &data)?;
        }
    }
    Ok(())
}

/// Write every directory's `.abstract.md` / `.overview.md` into the staged tree, naming the
/// directory by its final URI.
fn write_sidecars(
    storage: &dyn Storage,
    tree: &StorePath,
    final_uri: &VikingUri,
    summaries: &BTreeMap<String, DirSummary>,
    staged: bool,
) -> ServiceResult<()> {
    for (rel, s) in summaries {
        let mut dir = tree.clone();
        let mut uri = final_uri.clone();
        for seg in rel.split('/').filter(|s| !s.is_empty()) {
            dir = dir.join(seg)?;
            uri = uri.child(seg)?;
        }
        if staged {
            for (name, body) in [
                (ABSTRACT_FILE, &s.abstract_text),
                (OVERVIEW_FILE, &s.overview),
            ] {
                let text = okf::render(&uri.uri(), INGEST_SIDECARS, false, body);
                storage.write_staged(&dir.join(name)?, text.as_bytes())?;
            }
        } else {
            write_sidecar_pair(storage, &dir, &uri, &s.abstract_text, &s.overview)?;
        }
    }
    Ok(())
}

/// Write both sidecars of one directory.
pub fn write_sidecar_pair(
    storage: &dyn Storage,
    dir: &StorePath,
    uri: &VikingUri,
    abstract_text: &str,
    overview: &str,
) -> ServiceResult<()> {
    let shown = uri.uri();
    storage.write(
        &dir.join(ABSTRACT_FILE)?,
        okf::render(&shown, INGEST_SIDECARS, false, abstract_text).as_bytes(),
    )?;
    storage.write(
        &dir.join(OVERVIEW_FILE)?,
        okf::render(&shown, INGEST_SIDECARS, false, overview).as_bytes(),
    )?;
    Ok(())
}

/// Remove staging trees whose ingestion is no longer alive (no fresh marker): a crash
/// mid-ingestion left them. Returns how many were removed.
pub fn sweep_staging(storage: &dyn Storage, stale_after: Duration) -> ServiceResult<usize> {
    let mut removed = 0;
    for account in crate::storage::account_names(storage)? {
        let dir = StorePath::root()
            .join(&account)?
            .join("_system")?
            .join("ingest")?;
        let Ok(names) = crate::storage::subdir_names(storage, &dir) else {
            continue;
        };
        for name in names {
            if name == "active" {
                continue;
            }
            if !super::active::is_live(storage, &account, &name, stale_after)? {
                let work = dir.join(&name)?;
                // A replacement a crash interrupted is finished first (its trees live here).
                if let Err(e) = crate::storage::replace::settle(storage, &work) {
                    tracing::warn!(error = %e, work = %name, "interrupted replacement not settled yet; retried by the next sweep");
                    continue;
                }
                let _ = storage.remove(&work, true);
                removed += 1;
            }
        }
    }
    Ok(removed)
}
