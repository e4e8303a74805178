//! Installed skills in storage (0.5.2's layout): a package directory
//! `<skills root>/<name>/` holding the normalised `SKILL.md`, its auxiliary files (scripts,
//! resources), `.source.json` (where it came from), and sidecars — `.abstract.md` a YAML block
//! of the header fields, `.overview.md` the instructions; directories inside the package get
//! extractive summaries like ingested resources. Roots: the caller's
//! `viking://user/{uid}/skills` (default) and the account's `viking://agent/skills`.
//!
//! A package is written under the ingestion staging prefix and swapped in with renames (the
//! previous version moved aside first and restored if the swap fails), under a per-skill lock,
//! so readers see the old or the new package, never a mix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::format::{self, SkillDef, MAX_DEFINITION_BYTES};
use crate::config::{QuotaSettings, ResourceSettings};
use crate::error::{ErrorCode, ServiceError, ServiceResult};
use crate::identity::Identity;
use crate::ingest::archive::ArchiveLimits;
use crate::ingest::git::{self, GitSource};
use crate::ingest::package::DEFINITION_FILE;
use crate::ingest::parse::ParseOptions;
use crate::ingest::pipeline::{self, INGEST_SIDECARS};
use crate::ingest::sandbox::{self, ChildLimits};
use crate::ingest::scratch::Scratch;
use crate::ingest::{active, local, summary, uploads};
use crate::storage::fs::entry::{sidecar_text, ABSTRACT_FILE, OVERVIEW_FILE};
use crate::storage::okf::{self, GeneratedBy};
use crate::storage::uri::{self, Access, VikingUri};
use crate::storage::{Storage, StorageError, StorePath};

/// Who wrote a skill's own sidecars (0.5.2's component and trigger).
pub const SKILL_SIDECARS: GeneratedBy = okf::SKILL_INGEST;

/// Where a package's source is recorded (0.5.2's name).
pub const SOURCE_FILE: &str = ".source.json";

/// Most entries `GET /skills/{name}` lists (0.5.2's integrity bound, also used without it).
const MANIFEST_MAX_ENTRIES: usize = 512;
/// Integrity manifests read at most this much per file and in total (0.5.2).
const INTEGRITY_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
const INTEGRITY_MAX_TOTAL_BYTES: u64 = 64 * 1024 * 1024;
/// How long an install waits for another install of the same skill.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// What a skill is made from.
#[derive(Debug, Clone)]
pub enum SkillData {
    /// `SKILL.md` text.
    Text(String),
    /// A JSON object with the header fields and `content`.
    Structured(Map<String, Value>),
    /// A temp upload of the caller: a `SKILL.md` file or a ZIP of a package.
    Upload { id: String },
    /// A Git repository (http(s)), cloned under the URL-fetch rules.
    Git(GitSource),
    /// PUT `from_source`: the Git source recorded in the installed package.
    FromSource,
}

/// One install (add, or the replacement of PUT).
#[derive(Debug, Clone)]
pub struct InstallRequest {
    pub account: String,
    pub user: String,
    pub task_id: String,
    /// `viking://user/{uid}/skills` or `viking://agent/skills`.
    pub root: VikingUri,
    pub data: SkillData,
    /// PUT: the name in the path, which the definition must carry.
    pub expected_name: Option<String>,
    /// `source_metadata` of the request, or what the server derives.
    pub source: Map<String, Value>,
    /// `skills`: which packages of a directory source to install (none or `*`: all).
    pub names: Vec<String>,
}

/// An installed package.
#[derive(Debug, Clone)]
pub struct Installed {
    pub name: String,
    pub uri: VikingUri,
    pub auxiliary_files: usize,
    pub warnings: Vec<String>,
}

impl Installed {
    /// 0.5.2's add result (without `task_id`).
    pub fn to_json(&self) -> Value {
        let uri = self.uri.uri();
        let mut v = json!({"status": "success", "root_uri": uri, "uri": uri,
                           "name": self.name, "auxiliary_files": self.auxiliary_files});
        if !self.warnings.is_empty() {
            v["warnings"] = json!(self.warnings);
        }
        v
    }
}

/// The two skill roots of `who`: their own, then the account's.
pub fn roots(who: &Identity) -> ServiceResult<[VikingUri; 2]> {
    Ok([
        uri::parse(&format!("viking://user/{}/skills", who.user), who)?,
        uri::parse("viking://agent/skills", who)?,
    ])
}

/// The skills root a `target_uri` selects (0.5.2: the agent root or anything under it, the
/// caller's user root or anything under it; the caller must be allowed to `access` it).
pub fn root_for_target(
    who: &Identity,
    target: Option<&str>,
    access: Access,
) -> ServiceResult<VikingUri> {
    let [user_root, agent_root] = roots(who)?;
    let Some(raw) = target.map(str::trim).filter(|t| !t.is_empty()) else {
        uri::authorize(&user_root, who, access)?;
        return Ok(user_root);
    };
    let target = uri::parse(raw, who)?;
    let root = if target.starts_with(&agent_root) {
        agent_root
    } else if target.starts_with(&user_root) {
        user_root
    } else {
        return Err(
            ServiceError::invalid_argument(format!("Unsupported skill target URI: {raw}"))
                .with_details(json!({"field": "target_uri",
                             "allowed": [user_root.uri(), agent_root.uri()]})),
        );
    };
    uri::authorize(&root, who, access)?;
    Ok(root)
}

/// A local package ready to stage: its definition and, for an archive, its directory.
struct Prepared {
    def: SkillDef,
    dir: Option<PathBuf>,
    /// Where it came from, when the package has its own record (a Git subdirectory).
    source: Option<Map<String, Value>>,
    /// Files besides `SKILL.md`.
    auxiliary: usize,
    bytes: u64,
}

/// What a source holds: one or more packages, and what unpacking it warned about.
struct Sources {
    packages: Vec<Prepared>,
    /// False for inline text or a single uploaded file (no directory to list or select in).
    from_directory: bool,
    warnings: Vec<String>,
}

/// Read the definition (and unpack an archive, in the sandboxed child) into `scratch`.
fn prepare(
    storage: &dyn Storage,
    req: &InstallRequest,
    settings: &ResourceSettings,
    scratch: &Scratch,
    heartbeat: &mut dyn FnMut(),
) -> ServiceResult<Sources> {
    let single = |def: SkillDef| Sources {
        packages: vec![Prepared {
            def,
            dir: None,
            source: None,
            auxiliary: 0,
            bytes: 0,
        }],
        from_directory: false,
        warnings: Vec::new(),
    };
    let sources = match &req.data {
        SkillData::Text(text) => single(format::parse_definition(text)?),
        SkillData::Structured(map) => single(format::from_structured(map)?),
        SkillData::Upload { id } => {
            let meta = uploads::open(storage, &req.account, &req.user, id)?;
            let input = scratch.path().join("input");
            uploads::copy_to_local(storage, &req.account, id, &meta, &input)?;
            if is_zip(&input, &meta.original_filename) {
                unpack_packages(
                    &input,
                    scratch.path(),
                    &meta.original_filename,
                    settings,
                    heartbeat,
                )?
            } else {
                if meta.size > MAX_DEFINITION_BYTES as u64 {
                    return Err(format::too_large(meta.size as usize));
                }
                single(format::parse_definition(&read_definition(&input)?)?)
            }
        }
        SkillData::Git(src) => from_git(src, scratch.path(), settings, heartbeat)?,
        SkillData::FromSource => {
            return Err(ServiceError::internal(
                "from_source was not resolved to its Git source",
            ))
        }
    };
    if !req.names.is_empty() && !sources.from_directory {
        return Err(ServiceError::invalid_argument(
            "Skill selection requires a directory or Git source",
        ));
    }
    let mut sources = select(sources, &req.names)?;
    if let Some(expected) = &req.expected_name {
        if sources.packages.len() > 1 {
            sources
                .packages
                .retain(|p| p.dir.as_ref().is_some_and(|d| d.ends_with(expected)));
        }
        let [only] = sources.packages.as_slice() else {
            return Err(ServiceError::invalid_argument(
                "Update source must identify exactly one skill",
            ));
        };
        if &only.def.name != expected {
            return Err(ServiceError::invalid_argument(format!(
                "Skill name mismatch: path name is '{expected}', content name is '{}'",
                only.def.name
            ))
            .with_details(json!({"expected": expected, "actual": only.def.name})));
        }
    }
    Ok(sources)
}

/// The packages `names` picks by directory name (each exactly once); all for none or `*`.
fn select(mut sources: Sources, names: &[String]) -> ServiceResult<Sources> {
    let mut wanted: Vec<String> = Vec::new();
    for n in names {
        let n = n.trim().to_string();
        if !wanted.contains(&n) {
            wanted.push(n);
        }
    }
    if wanted.is_empty() || wanted == ["*"] {
        return Ok(sources);
    }
    let mut all: Vec<Option<Prepared>> = sources.packages.drain(..).map(Some).collect();
    let dir_name = |p: &Prepared| {
        p.dir
            .as_ref()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    for name in wanted {
        format::check_path_name(&name)?;
        let matches: Vec<usize> = all
            .iter()
            .enumerate()
            .filter(|(_, p)| p.as_ref().is_some_and(|p| dir_name(p) == name))
            .map(|(i, _)| i)
            .collect();
        let [i] = matches.as_slice() else {
            return Err(ServiceError::invalid_argument(format!(
                "Skill '{name}' must identify exactly one source directory"
            )));
        };
        if let Some(p) = all[*i].take() {
            sources.packages.push(p);
        }
    }
    Ok(sources)
}

/// `list_only`: the skills a source holds, nothing stored (0.5.2's `describe`).
pub fn describe(
    storage: &dyn Storage,
    req: &InstallRequest,
    settings: &ResourceSettings,
) -> ServiceResult<Value> {
    let scratch = scratch_for(settings, &req.task_id)?;
    let sources = prepare(storage, req, settings, &scratch, &mut || {})?;
    if !sources.from_directory {
        return Err(ServiceError::invalid_argument(
            "Listing skills requires a directory or Git source",
        ));
    }
    let skills: Vec<Value> = sources
        .packages
        .iter()
        .map(|p| {
            let path = p
                .dir
                .as_ref()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            json!({"name": p.def.name, "description": p.def.description, "path": path})
        })
        .collect();
    Ok(json!({"total": skills.len(), "skills": skills}))
}

fn scratch_for(settings: &ResourceSettings, task_id: &str) -> ServiceResult<Scratch> {
    Scratch::create(settings, task_id).map_err(|e| {
        tracing::error!(error = %e, "cannot create the skill scratch directory");
        ServiceError::unavailable("ingest", "no local scratch space for the skill package")
    })
}

fn is_zip(path: &Path, name: &str) -> bool {
    let mut head = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    (n == 4 && head == *b"PK\x03\x04") || name.to_ascii_lowercase().ends_with(".zip")
}

fn read_definition(path: &Path) -> ServiceResult<String> {
    let bytes = std::fs::read(path).map_err(ServiceError::internal)?;
    if bytes.len() > MAX_DEFINITION_BYTES {
        return Err(format::too_large(bytes.len()));
    }
    String::from_utf8(bytes).map_err(|_| {
        ServiceError::invalid_argument("SKILL.md must be UTF-8 text")
            .with_details(json!({"field": "data"}))
    })
}

/// Unpack an uploaded archive in the parser child (the resources' archive rules and limits)
/// and read each package's definition.
fn unpack_packages(
    input: &Path,
    work: &Path,
    name: &str,
    settings: &ResourceSettings,
    heartbeat: &mut dyn FnMut(),
) -> ServiceResult<Sources> {
    let opts = ParseOptions {
        source_name: if name.is_empty() {
            "skill.zip".into()
        } else {
            name.to_string()
        },
        strict: false,
        ignore_dirs: None,
        include: None,
        exclude: None,
        max_tokens: settings.split_max_tokens,
        archive: ArchiveLimits {
            max_entries: settings.archive_max_entries,
            max_total_bytes: settings.archive_max_total_bytes,
            max_ratio: settings.archive_max_ratio,
            max_depth: settings.archive_max_depth,
        },
        max_nodes: settings.ingest_max_nodes,
        max_bytes: settings.ingest_max_bytes,
        preserve_structure: true,
        package: true,
    };
    let limits = ChildLimits {
        memory_bytes: settings.parser_memory_mb * 1024 * 1024,
        cpu_secs: settings.parser_cpu_secs,
        timeout: Duration::from_secs(settings.parser_timeout_secs),
    };
    let report = sandbox::run_child(input, work, &opts, limits, heartbeat).map_err(|m| {
        ServiceError::invalid_argument(format!("Invalid skill package: {m}"))
            .with_details(json!({"field": "temp_file_id"}))
    })?;
    let mut packages = Vec::new();
    for rel in &report.packages {
        if rel.split('/').any(|s| s == ".." || s.is_empty()) {
            return Err(ServiceError::internal(
                "the parser reported an unsafe package path",
            ));
        }
        let dir = work.join("out").join(rel);
        let def = format::parse_definition(&read_definition(&dir.join(DEFINITION_FILE))?)?;
        let (files, bytes) = local_size(&dir);
        packages.push(Prepared {
            def,
            dir: Some(dir),
            source: None,
            auxiliary: files.saturating_sub(1),
            bytes,
        });
    }
    Ok(Sources {
        packages,
        from_directory: true,
        warnings: report.warnings,
    })
}

/// Clone a repository (SSRF rules, limits), pack it like a server-local directory and unpack
/// it in the parser child like an upload; each package records its Git source.
fn from_git(
    src: &GitSource,
    work: &Path,
    settings: &ResourceSettings,
    heartbeat: &mut dyn FnMut(),
) -> ServiceResult<Sources> {
    let dir = git::clone(src, work, settings, heartbeat)?;
    let zip = work.join("repo.zip");
    let limits = ArchiveLimits {
        max_entries: settings.archive_max_entries,
        max_total_bytes: settings.archive_max_total_bytes,
        max_ratio: settings.archive_max_ratio,
        max_depth: settings.archive_max_depth,
    };
    let mut warnings = Vec::new();
    local::pack_dir(&dir, "repo", &zip, limits, &mut warnings).map_err(|m| {
        ServiceError::invalid_argument(format!("Cannot import {:.200}: {m}", src.source))
    })?;
    let _ = std::fs::remove_dir_all(work.join("repo"));
    let mut sources = unpack_packages(&zip, work, "repo.zip", settings, heartbeat)?;
    sources.warnings.splice(0..0, warnings);
    let top = work.join("out").join("package").join("repo");
    for p in &mut sources.packages {
        let inner = p
            .dir
            .as_ref()
            .and_then(|d| d.strip_prefix(&top).ok())
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_default();
        let subdir = match (
            src.subdir.as_deref().filter(|s| !s.is_empty()),
            inner.is_empty(),
        ) {
            (Some(base), true) => base.to_string(),
            (Some(base), false) => format!("{}/{inner}", base.trim_end_matches('/')),
            (None, _) => inner,
        };
        let record = json!({"type": "git", "source": src.source, "clone_url": src.clone_url,
                            "ref_name": src.ref_name, "subdir": subdir});
        p.source = record.as_object().cloned();
    }
    Ok(sources)
}

/// The Git source recorded in an installed package (for PUT `from_source`).
pub fn recorded_git_source(storage: &dyn Storage, skill: &VikingUri) -> ServiceResult<GitSource> {
    let none = || {
        ServiceError::invalid_argument(
            "Skill has no recorded Git source; supply content or an upload",
        )
    };
    let bytes = match storage.read(&skill.store_path().join(SOURCE_FILE)?) {
        Ok(b) => b,
        Err(StorageError::NotFound(_)) => return Err(none()),
        Err(e) => return Err(e.into()),
    };
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| none())?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    if text("type").as_deref() != Some("git") {
        return Err(none());
    }
    let clone_url = text("clone_url").ok_or_else(none)?;
    Ok(GitSource {
        source: text("source").unwrap_or_else(|| clone_url.clone()),
        clone_url,
        ref_name: text("ref_name"),
        subdir: text("subdir"),
    })
}

/// Files and bytes under a local directory.
fn local_size(dir: &Path) -> (usize, u64) {
    let mut files = 0;
    let mut bytes = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => {
                    let (f, b) = local_size(&e.path());
                    files += f;
                    bytes += b;
                }
                Ok(m) => {
                    files += 1;
                    bytes += m.len();
                }
                Err(_) => {}
            }
        }
    }
    (files, bytes)
}

/// The lock that serialises installs and removals of one skill.
fn skill_lock(
    storage: &dyn Storage,
    skill: &VikingUri,
) -> ServiceResult<Box<dyn crate::storage::LockGuard>> {
    let digest = hex::encode(Sha256::digest(skill.store_path().to_string().as_bytes()));
    storage
        .lock(&format!("skill:{}", &digest[..32]), LOCK_WAIT)
        .map_err(|e| match e {
            StorageError::Busy(_) => ServiceError::conflict(format!(
                "Skill {} is being changed by another request; retry shortly",
                skill.uri()
            )),
            other => other.into(),
        })
}

/// Install every package of a source (selected by `names`): prepare, stage, swap in, one
/// after the other. `replace_only` (PUT) requires an installed package of that name.
pub fn install(
    storage: &dyn Storage,
    req: &InstallRequest,
    settings: &ResourceSettings,
    quota: &QuotaSettings,
    replace_only: bool,
    heartbeat: &mut dyn FnMut(),
) -> ServiceResult<Vec<Installed>> {
    let scratch = scratch_for(settings, &req.task_id)?;
    let sources = prepare(storage, req, settings, &scratch, heartbeat)?;
    let staging = pipeline::staging_dir(&req.account, &req.task_id)?;
    let mut installed = Vec::new();
    for (i, prepared) in sources.packages.iter().enumerate() {
        let skill_uri = req.root.child(&prepared.def.name)?;
        let files = prepared.auxiliary as u64 + 4;
        let bytes = prepared.bytes + 64 * 1024;
        crate::storage::quota::admit(storage, &req.account, bytes, files, quota)?;
        let slot = staging.join(&i.to_string())?;
        let outcome = stage_and_swap(
            storage,
            req,
            prepared,
            &skill_uri,
            &slot,
            replace_only,
            heartbeat,
            settings,
        );
        let _ = storage.remove(&slot, true);
        outcome?;
        crate::storage::quota::charge(storage, &req.account, bytes as i64, files as i64, quota);
        installed.push(Installed {
            name: prepared.def.name.clone(),
            uri: skill_uri,
            auxiliary_files: prepared.auxiliary,
            warnings: sources.warnings.clone(),
        });
    }
    let _ = storage.remove(&staging, true);
    Ok(installed)
}

#[allow(clippy::too_many_arguments)]
fn stage_and_swap(
    storage: &dyn Storage,
    req: &InstallRequest,
    prepared: &Prepared,
    skill_uri: &VikingUri,
    staging: &StorePath,
    replace_only: bool,
    heartbeat: &mut dyn FnMut(),
    settings: &ResourceSettings,
) -> ServiceResult<()> {
    let tree = staging.join("tree")?;
    let def = &prepared.def;
    if let Some(dir) = &prepared.dir {
        let mut rel_dirs = Vec::new();
        pipeline::upload_tree(storage, dir, &tree, "", &mut rel_dirs, heartbeat)?;
        // Directories inside the package get extractive summaries, as ingested trees do.
        for (rel, s) in summary::summarize_tree(dir, &def.name) {
            if rel.is_empty() {
                continue;
            }
            let (mut path, mut uri) = (tree.clone(), skill_uri.clone());
            for seg in rel.split('/').filter(|s| !s.is_empty()) {
                path = path.join(seg)?;
                uri = uri.child(seg)?;
            }
            for (file, body) in [
                (ABSTRACT_FILE, &s.abstract_text),
                (OVERVIEW_FILE, &s.overview),
            ] {
                let text = okf::render(&uri.uri(), INGEST_SIDECARS, false, body);
                storage.write_staged(&path.join(file)?, text.as_bytes())?;
            }
        }
    }
    let shown = skill_uri.uri();
    let overview = if def.body.trim().is_empty() {
        def.description.as_str()
    } else {
        def.body.as_str()
    };
    let mut source = prepared
        .source
        .clone()
        .unwrap_or_else(|| req.source.clone());
    source.insert("skill_name".into(), def.name.clone().into());
    let source_text = serde_json::to_string_pretty(&Value::Object(sorted(source)))
        .map_err(ServiceError::internal)?;
    for (file, text) in [
        (DEFINITION_FILE, format::to_skill_md(def)),
        (
            ABSTRACT_FILE,
            okf::render(&shown, SKILL_SIDECARS, false, &format::abstract_yaml(def)),
        ),
        (
            OVERVIEW_FILE,
            okf::render(&shown, SKILL_SIDECARS, false, overview),
        ),
        (SOURCE_FILE, source_text),
    ] {
        storage.write_staged(&tree.join(file)?, text.as_bytes())?;
    }
    storage.sync_staged()?;
    let _lock = skill_lock(storage, skill_uri)?;
    let exists = storage
        .stat(skill_uri.store_path())?
        .is_some_and(|m| m.is_dir());
    if replace_only && !exists {
        return Err(not_found(skill_uri));
    }
    let stale_after = Duration::from_secs(settings.stale_after_secs);
    let keep = |work: &dyn Fn() -> Result<(), StorageError>| {
        active::keep_alive(
            storage,
            &req.account,
            &req.user,
            &req.task_id,
            stale_after,
            work,
        )
    };
    let old = staging.join("previous")?;
    if exists {
        keep(&|| storage.rename(skill_uri.store_path(), &old))?;
    }
    if let Err(e) = keep(&|| storage.rename(&tree, skill_uri.store_path())) {
        if exists {
            if let Err(back) = keep(&|| storage.rename(&old, skill_uri.store_path())) {
                tracing::error!(skill = %skill_uri, error = %back, "could not restore the previous skill package");
            }
        }
        return Err(e.into());
    }
    Ok(())
}

fn sorted(map: Map<String, Value>) -> Map<String, Value> {
    let mut items: Vec<_> = map.into_iter().collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    items.into_iter().collect()
}

fn not_found(skill: &VikingUri) -> ServiceError {
    let shown = skill.uri();
    ServiceError::not_found("skill", &shown, format!("Skill not found: {shown}"))
}

/// The installed package `name`: under `target`'s root when given, else the caller's own,
/// then the account's (0.5.2's order).
pub fn locate(
    storage: &dyn Storage,
    who: &Identity,
    name: &str,
    target: Option<&str>,
) -> ServiceResult<VikingUri> {
    let name = format::check_path_name(name)?;
    let mut candidates = Vec::new();
    if target.is_some_and(|t| !t.trim().is_empty()) {
        candidates.push(root_for_target(who, target, Access::Read)?.child(&name)?);
    }
    for root in roots(who)? {
        candidates.push(root.child(&name)?);
    }
    for skill in &candidates {
        if uri::authorize(skill, who, Access::Read).is_ok()
            && storage
                .stat(skill.store_path())?
                .is_some_and(|m| m.is_dir())
        {
            return Ok(skill.clone());
        }
    }
    Err(not_found(&candidates[candidates.len() - 2]))
}

/// 0.5.2's summary of one skill from its abstract's header fields.
pub fn summary_of(name: &str, skill: &VikingUri, meta: &Map<String, Value>) -> Value {
    let shown = skill.uri();
    let list = |v: Option<&Value>| match v {
        Some(Value::Array(a)) if !a.is_empty() => Value::Array(a.clone()),
        Some(v) if !v.is_null() && !v.is_array() => v.clone(),
        _ => json!([]),
    };
    json!({
        "type": "skill",
        "name": name,
        "uri": shown,
        "root_uri": shown,
        "skill_md_uri": format!("{shown}/{DEFINITION_FILE}"),
        "description": meta.get("description").cloned().unwrap_or_else(|| "".into()),
        "tags": list(meta.get("tags")),
        "allowed_tools": list(meta.get("allowed_tools").or_else(|| meta.get("allowed-tools"))),
    })
}

/// The skills directly under `root` (at most `limit` directories looked at): a directory is
/// a skill when its abstract names a valid skill, or, without a readable one, when it holds
/// `SKILL.md`.
pub fn list_root(
    storage: &dyn Storage,
    root: &VikingUri,
    limit: usize,
) -> ServiceResult<Vec<Value>> {
    let mut entries = match storage.list(root.store_path()) {
        Ok(e) => e,
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e.into()),
    };
    entries.retain(|e| {
        e.meta.is_dir()
            && !uri::is_hidden_name(&e.name)
            && !crate::storage::is_internal_name(&e.name)
    });
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries.truncate(limit);
    let mut out = Vec::new();
    for e in entries {
        let Ok(skill) = root.child(&e.name) else {
            continue;
        };
        let abstract_text = sidecar_text(storage, &skill, ABSTRACT_FILE);
        let meta = format::abstract_meta(&abstract_text);
        let listed = if !meta.is_empty() {
            format::meta_is_skill(&meta)
        } else {
            storage
                .stat(&skill.store_path().join(DEFINITION_FILE)?)?
                .is_some_and(|m| !m.is_dir())
        };
        if listed {
            out.push(summary_of(&e.name, &skill, &meta));
        }
    }
    Ok(out)
}

/// What `GET /skills/{name}` returns.
#[derive(Debug, Clone, Copy)]
pub struct DetailOpts {
    pub include_content: Option<bool>,
    pub include_files: bool,
    pub include_integrity: bool,
    pub include_source: bool,
    pub level: Option<u8>,
}

/// One skill's detail (0.5.2's fields for the options given).
pub fn detail(storage: &dyn Storage, skill: &VikingUri, opts: DetailOpts) -> ServiceResult<Value> {
    let abstract_text = sidecar_text(storage, skill, ABSTRACT_FILE);
    let meta = format::abstract_meta(&abstract_text);
    let mut out = summary_of(skill.name(), skill, &meta);
    let level = opts.level;
    if level.is_none() || level == Some(0) {
        out["abstract"] = abstract_text.into();
    }
    if level.is_none() || level == Some(1) {
        out["overview"] = sidecar_text(storage, skill, OVERVIEW_FILE).into();
    }
    if level == Some(2)
        || opts.include_content == Some(true)
        || (level.is_none() && opts.include_content != Some(false))
    {
        let bytes = match storage.read(&skill.store_path().join(DEFINITION_FILE)?) {
            Ok(b) => b,
            Err(StorageError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        out["content_sha256"] = hex::encode(Sha256::digest(&bytes)).into();
        out["content"] = String::from_utf8_lossy(&bytes).into_owned().into();
    }
    if opts.include_files {
        let (files, revision) = manifest(storage, skill, opts.include_integrity)?;
        out["files"] = Value::Array(files);
        if let Some(r) = revision {
            out["revision"] = r.into();
        }
    }
    if opts.include_source {
        out["source"] = source_record(storage, skill);
    }
    Ok(out)
}

fn source_record(storage: &dyn Storage, skill: &VikingUri) -> Value {
    let untracked = |m: &str| json!({"tracked": false, "message": m});
    let Ok(path) = skill.store_path().join(SOURCE_FILE) else {
        return untracked("Skill source metadata is not tracked yet.");
    };
    match storage.read(&path) {
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(mut m)) => {
                m.insert("tracked".into(), true.into());
                m.insert(
                    "metadata_uri".into(),
                    format!("{}/{SOURCE_FILE}", skill.uri()).into(),
                );
                Value::Object(m)
            }
            _ => untracked("Skill source metadata is invalid."),
        },
        Err(_) => untracked("Skill source metadata is not tracked yet."),
    }
}

fn file_kind(path: &str, is_dir: bool) -> &'static str {
    if is_dir {
        "directory"
    } else if path == DEFINITION_FILE {
        "definition"
    } else if path == ABSTRACT_FILE || path == OVERVIEW_FILE {
        "summary"
    } else {
        "auxiliary"
    }
}

fn exhausted(message: String) -> ServiceError {
    ServiceError::new(ErrorCode::ResourceExhausted, message)
}

/// The package's files, breadth first (hidden ones included, `.source.json` left out); with
/// integrity each file's size and SHA-256 and a revision hash over them all.
fn manifest(
    storage: &dyn Storage,
    skill: &VikingUri,
    integrity: bool,
) -> ServiceResult<(Vec<Value>, Option<String>)> {
    let mut items: Vec<(String, Value)> = Vec::new();
    let mut queue = std::collections::VecDeque::from([(skill.clone(), String::new(), 0usize)]);
    let mut total: u64 = 0;
    while let Some((dir, rel, depth)) = queue.pop_front() {
        let mut entries = match storage.list(dir.store_path()) {
            Ok(e) => e,
            Err(StorageError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for e in entries {
            if crate::storage::is_internal_name(&e.name) {
                continue;
            }
            let path = if rel.is_empty() {
                e.name.clone()
            } else {
                format!("{rel}/{}", e.name)
            };
            if path == SOURCE_FILE {
                continue;
            }
            if items.len() >= MANIFEST_MAX_ENTRIES {
                if integrity {
                    return Err(exhausted(format!(
                        "Skill integrity manifest exceeds {MANIFEST_MAX_ENTRIES} entries"
                    )));
                }
                return Ok((items.into_iter().map(|(_, v)| v).collect(), None));
            }
            let uri = dir.child(&e.name)?;
            let is_dir = e.meta.is_dir();
            let mut item = json!({"name": e.name, "uri": uri.uri(), "path": path,
                                  "is_dir": is_dir, "kind": file_kind(&path, is_dir)});
            if is_dir {
                if depth + 1 < 10 {
                    queue.push_back((uri.clone(), path.clone(), depth + 1));
                }
            } else if integrity {
                if e.meta.size > INTEGRITY_MAX_FILE_BYTES {
                    return Err(exhausted(format!(
                        "Skill file exceeds integrity size limit: {path}"
                    )));
                }
                total += e.meta.size;
                if total > INTEGRITY_MAX_TOTAL_BYTES {
                    return Err(exhausted(format!(
                        "Skill integrity manifest exceeds {INTEGRITY_MAX_TOTAL_BYTES} total bytes"
                    )));
                }
                let data = storage.read(uri.store_path())?;
                item["size"] = data.len().into();
                item["sha256"] = hex::encode(Sha256::digest(&data)).into();
            }
            items.push((path, item));
        }
    }
    let files: Vec<Value> = items.iter().map(|(_, v)| v.clone()).collect();
    if !integrity {
        return Ok((files, None));
    }
    let mut by_path = items;
    by_path.sort_by(|a, b| a.0.cmp(&b.0));
    let payload: Vec<Value> = by_path
        .iter()
        .map(|(p, v)| {
            let mut m = Map::new();
            m.insert("is_dir".into(), v["is_dir"].clone());
            m.insert("path".into(), p.clone().into());
            m.insert(
                "sha256".into(),
                v.get("sha256").cloned().unwrap_or(Value::Null),
            );
            m.insert("size".into(), v.get("size").cloned().unwrap_or(Value::Null));
            Value::Object(m)
        })
        .collect();
    let encoded = serde_json::to_vec(&payload).map_err(ServiceError::internal)?;
    Ok((files, Some(hex::encode(Sha256::digest(&encoded)))))
}

/// Remove an installed package (under its lock).
pub fn remove(storage: &dyn Storage, skill: &VikingUri) -> ServiceResult<()> {
    let _lock = skill_lock(storage, skill)?;
    match storage.remove(skill.store_path(), true) {
        Ok(()) => {}
        Err(StorageError::NotFound(_)) => return Err(not_found(skill)),
        Err(e) => return Err(e.into()),
    }
    // Its own tags go too (kept in the skills root's map; its subtree's went with it).
    crate::storage::tags::forget_node(storage, skill.store_path())?;
    Ok(())
}

const OVERVIEW_SYSTEM: &str = "You write the overview of an agent skill for a retrieval \
system: what it does, when to use it, and how it works. Be factual and concise; use only the \
material given.";

/// With a chat model: rewrite the package's L1 overview from its definition (the L0 stays the
/// header fields that listings read). A model failure leaves the instructions as overview and
/// returns the reason.
pub fn refine_overview(
    storage: &dyn Storage,
    chat: &crate::ingest::chat::ChatClient,
    skill: &VikingUri,
) -> Result<(), String> {
    let text = storage
        .read(
            &skill
                .store_path()
                .join(DEFINITION_FILE)
                .map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&text);
    let material = summary::truncate(&text, 16_000);
    let prompt = format!(
        "Skill package: {}\n\nSKILL.md:\n{material}\n\nReply with a Markdown overview of the \
         skill, at most 3000 characters, and nothing else.",
        skill.name()
    );
    let reply = chat.session()?.complete(OVERVIEW_SYSTEM, &prompt)?;
    let overview = summary::truncate(reply.trim(), summary::OVERVIEW_MAX);
    if overview.is_empty() {
        return Err("the model returned an empty overview".into());
    }
    let body = okf::render(&skill.uri(), SKILL_SIDECARS, false, &overview);
    storage
        .write(
            &skill
                .store_path()
                .join(OVERVIEW_FILE)
                .map_err(|e| e.to_string())?,
            body.as_bytes(),
        )
        .map_err(|e| e.to_string())?;
    Ok(())
}
