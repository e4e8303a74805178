//! The S3-compatible backend: `/local` lives under `s3://<bucket>/<prefix>/`.
//!
//! - Files are objects; a file's [`Version`] is its ETag, and [`Storage::write_if`] is a
//!   conditional PUT (`If-None-Match: *` to create, `If-Match: <etag>` to replace), so
//!   compare-and-swap is decided by the store itself, across every instance and host.
//! - Directories are key prefixes plus a marker object (see [`keys`]), created for every
//!   missing ancestor when a file or directory is made, so empty directories persist and
//!   removing a directory's last file leaves the directory, exactly as on local disk.
//! - `append` is a read + conditional-write loop; `lock` is a lease object ([`lease`]) whose
//!   expiry is judged on the contender's monotonic clock, never by comparing wall clocks.
//! - Tree moves are copy-then-delete behind a publishing flag ([`moves`]): the tree appears at
//!   its destination all at once, when the flag is deleted after the last copy.
//!
//! The trait is blocking and called from SyncArbiter threads; the backend owns a small tokio
//! runtime and `block_on`s object_store's async calls from the calling thread.

mod deadline;
mod error;
pub(crate) mod keys;
mod lease;
mod moves;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig, UpdateVersion,
};

use self::keys::{Keys, DIR_MARKER};
use crate::config::S3Settings;
use crate::storage::{
    DirEntry, EntryKind, LockGuard, Meta, Storage, StorageError, StorageResult, StorePath, Version,
};

/// Requests in flight at once for per-object work (marker checks, tree copies).
const FAN_OUT: usize = 16;
/// Largest file `append` grows on S3: each append rewrites the whole object (no append in
/// S3), so its cost is bounded by this; larger data belongs in separate files.
pub const APPEND_MAX_BYTES: u64 = 32 << 20;
/// How long `append` keeps retrying against concurrent writers before reporting `Busy`.
const APPEND_DEADLINE: Duration = Duration::from_secs(30);

pub struct S3Storage {
    inner: Arc<Inner>,
    handle: tokio::runtime::Handle,
    /// The per-operation deadline and load shedding of every call (see [`deadline`]).
    deadline: deadline::Deadline,
    /// Owned only to shut it down on drop (see `Drop`); work goes through `handle`.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for S3Storage {
    /// The last reference may go away on an async thread (an actix worker at shutdown), where
    /// dropping a runtime normally would panic; `shutdown_background` is allowed anywhere.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What async work needs; shared with lease-renewal tasks.
struct Inner {
    store: AmazonS3,
    /// The same store without retries and with short timeouts, so `/ready` answers quickly
    /// and truthfully during an outage.
    probe_store: AmazonS3,
    keys: Keys,
    endpoint: String,
    location: String,
    lease: Duration,
    /// Contended leases and since when they looked unchanged (see [`lease`]).
    sightings: lease::Sightings,
    /// Requests in flight at once for one `read_many`.
    parallel: usize,
}

impl S3Storage {
    /// Configure the client. Makes no request: an unreachable store at startup is reported by
    /// `/ready` and recovers without a restart.
    pub fn open(settings: &S3Settings) -> StorageResult<Self> {
        // reqwest is built without a bundled TLS provider: the shared set-up installs ring.
        crate::net::client::install_tls();
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: settings.max_retries,
            retry_timeout: Duration::from_millis(settings.retry_timeout_ms),
        };
        let store = build(
            settings,
            retry,
            Duration::from_millis(settings.request_timeout_ms),
        )?;
        let no_retry = RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        };
        let probe_timeout = Duration::from_millis(settings.request_timeout_ms.min(3_000));
        let probe_store = build(settings, no_retry, probe_timeout)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("longship-s3")
            .enable_all()
            .build()?;
        let endpoint = settings
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("AWS S3 ({})", settings.region));
        let prefix = settings.prefix.trim_matches('/');
        let location = if prefix.is_empty() {
            format!("s3://{} at {endpoint}", settings.bucket)
        } else {
            format!("s3://{}/{prefix} at {endpoint}", settings.bucket)
        };
        Ok(S3Storage {
            inner: Arc::new(Inner {
                store,
                probe_store,
                keys: Keys::new(prefix)?,
                endpoint,
                location,
                lease: Duration::from_millis(settings.lock_lease_ms),
                sightings: lease::Sightings::default(),
                parallel: settings.parallel_requests.max(1),
            }),
            handle: runtime.handle().clone(),
            deadline: deadline::Deadline::new(Duration::from_millis(settings.operation_timeout_ms)),
            runtime: Some(runtime),
        })
    }

    /// Run `fut` to completion on the backend's runtime from a blocking thread, within the
    /// per-operation deadline.
    fn block_on<T>(&self, fut: impl Future<Output = StorageResult<T>>) -> StorageResult<T> {
        self.block_on_within(self.deadline.per_operation(), false, fut)
    }

    /// [`Self::block_on`] with an explicit limit; `probe` calls are never shed.
    fn block_on_within<T>(
        &self,
        limit: Duration,
        probe: bool,
        fut: impl Future<Output = StorageResult<T>>,
    ) -> StorageResult<T> {
        if tokio::runtime::Handle::try_current().is_ok() {
            // Blocking a runtime thread would panic (and stall its other tasks).
            return Err(StorageError::Unavailable(
                "the S3 backend was called from an async context; storage calls belong on the \
                 storage pool threads"
                    .into(),
            ));
        }
        self.deadline.run(&self.handle, limit, probe, fut)
    }
}

fn build(settings: &S3Settings, retry: RetryConfig, timeout: Duration) -> StorageResult<AmazonS3> {
    let client = ClientOptions::new()
        .with_allow_http(settings.allow_http)
        .with_timeout(timeout)
        .with_connect_timeout(Duration::from_millis(settings.connect_timeout_ms));
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&settings.bucket)
        .with_region(&settings.region)
        .with_virtual_hosted_style_request(!settings.path_style)
        .with_allow_http(settings.allow_http)
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        .with_retry(retry)
        .with_client_options(client);
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (id, secret) = match (&settings.access_key_id, &settings.secret_access_key) {
        (Some(id), Some(secret)) => (Some(id.clone()), Some(secret.clone())),
        _ => (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")),
    };
    if let (Some(id), Some(secret)) = (id, secret) {
        builder = builder
            .with_access_key_id(id)
            .with_secret_access_key(secret);
        if let Some(token) = env("AWS_SESSION_TOKEN") {
            builder = builder.with_token(token);
        }
    }
    builder
        .build()
        .map_err(|e| StorageError::Unavailable(format!("invalid S3 settings: {e}")))
}

impl Inner {
    fn err(&self, e: object_store::Error, what: &StorePath) -> StorageError {
        error::map(e, &what.to_string(), &self.endpoint)
    }

    fn internal_err(&self, e: object_store::Error, what: &str) -> StorageError {
        error::map(e, what, &self.endpoint)
    }

    async fn head(&self, key: &Path, what: &StorePath) -> StorageResult<Option<ObjectMeta>> {
        match self.store.head(key).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(e, what)),
        }
    }

    async fn put(
        &self,
        key: &Path,
        data: Bytes,
        mode: PutMode,
        what: &StorePath,
    ) -> StorageResult<Version> {
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        let done = self
            .store
            .put_opts(key, PutPayload::from_bytes(data), opts)
            .await
            .map_err(|e| match e {
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. } => {
                    StorageError::Conflict(what.to_string())
                }
                other => self.err(other, what),
            })?;
        done.e_tag.map(Version).ok_or_else(|| {
            StorageError::Unavailable(format!(
                "object store {} returned no ETag for {what}",
                self.endpoint
            ))
        })
    }

    /// True if any object lies under `dir` (an implicit directory counts).
    async fn any_under(&self, dir: &StorePath) -> StorageResult<bool> {
        let prefix = self.keys.of(dir)?.map(|k| format!("{}/", k.as_ref()));
        let opts = PaginatedListOptions {
            max_keys: Some(1),
            ..PaginatedListOptions::default()
        };
        let page = self
            .store
            .list_paginated(prefix.as_deref(), opts)
            .await
            .map_err(|e| self.err(e, dir))?;
        // Objects only: without a delimiter there are no common prefixes to count, and an
        // empty folder some stores keep around is not a directory here.
        Ok(!page.result.objects.is_empty())
    }

    async fn stat(&self, path: &StorePath) -> StorageResult<Option<Meta>> {
        if path.is_root() {
            return Ok(Some(dir_meta(SystemTime::now())));
        }
        let (file, marker) = (self.keys.file(path)?, self.keys.marker(path)?);
        let (file, marker) = futures_util::join!(self.head(&file, path), self.head(&marker, path));
        if let Some(meta) = file? {
            return Ok(Some(file_meta(&meta)));
        }
        let modified = match marker? {
            Some(marker) => marker.last_modified.into(),
            None if self.any_under(path).await? => SystemTime::now(),
            None => return Ok(None),
        };
        if self.publishing(path).await? {
            return Ok(None);
        }
        Ok(Some(dir_meta(modified)))
    }

    /// True while a move fills the directory `dir` (its publishing flag exists): it does not
    /// exist yet for readers.
    async fn publishing(&self, dir: &StorePath) -> StorageResult<bool> {
        match self.keys.flag(dir)? {
            Some(flag) => Ok(self.head(&flag, dir).await?.is_some()),
            None => Ok(false),
        }
    }

    /// Make sure every ancestor of `path` is a directory with a marker. The common case (the
    /// parent's marker exists, so its ancestors were checked when it was made) costs one HEAD.
    async fn ensure_parents(&self, path: &StorePath) -> StorageResult<()> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        if parent.is_root() {
            return Ok(());
        }
        if self
            .head(&self.keys.marker(&parent)?, &parent)
            .await?
            .is_some()
        {
            return Ok(());
        }
        self.make_dirs(&ancestors(&parent)).await
    }

    /// Create markers for each of `dirs` (top-down chain) that lacks one, refusing if any of
    /// them is a file.
    async fn make_dirs(&self, dirs: &[StorePath]) -> StorageResult<()> {
        let checks = stream::iter(dirs.iter().map(|dir| async move {
            let (file, marker) = (self.keys.file(dir)?, self.keys.marker(dir)?);
            let (file, marker) =
                futures_util::join!(self.head(&file, dir), self.head(&marker, dir));
            if file?.is_some() {
                return Err(StorageError::NotADirectory(dir.to_string()));
            }
            Ok((dir, marker?.is_some()))
        }))
        .buffered(FAN_OUT)
        .try_collect::<Vec<_>>()
        .await?;
        let missing = checks
            .into_iter()
            .filter(|(_, has_marker)| !has_marker)
            .map(|(dir, _)| dir);
        stream::iter(missing.map(|dir| async move {
            let key = self.keys.marker(dir)?;
            self.put(&key, Bytes::new(), PutMode::Overwrite, dir)
                .await
                .map(drop)
        }))
        .buffer_unordered(FAN_OUT)
        .try_collect::<()>()
        .await
    }

    /// Checks shared by every file write: the target is not a directory and its parents are.
    async fn prepare_write(&self, path: &StorePath) -> StorageResult<Path> {
        if path.is_root() {
            return Err(StorageError::InvalidPath("cannot write the root".into()));
        }
        let key = self.keys.file(path)?;
        let marker = self.keys.marker(path)?;
        let (parents, own_marker) =
            futures_util::join!(self.ensure_parents(path), self.head(&marker, path));
        parents?;
        if own_marker?.is_some() {
            return Err(StorageError::IsADirectory(path.to_string()));
        }
        Ok(key)
    }

    /// Explain a missing object: a directory of that name is `IsADirectory` (as local disk).
    async fn missing_file(&self, path: &StorePath) -> StorageError {
        match self.stat(path).await {
            Ok(Some(meta)) if meta.is_dir() => StorageError::IsADirectory(path.to_string()),
            Err(e) => e,
            _ => StorageError::NotFound(path.to_string()),
        }
    }

    async fn read_versioned(&self, path: &StorePath) -> StorageResult<(Vec<u8>, Version)> {
        let key = self.keys.file(path)?;
        let got = match self.store.get(&key).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Err(self.missing_file(path).await),
            Err(e) => return Err(self.err(e, path)),
        };
        let version = got.meta.e_tag.clone().map(Version);
        let data = got.bytes().await.map_err(|e| self.err(e, path))?;
        let version = version.ok_or_else(|| {
            StorageError::Unavailable(format!(
                "object store {} returned no ETag for {path}",
                self.endpoint
            ))
        })?;
        Ok((data.to_vec(), version))
    }

    async fn read_range(&self, path: &StorePath, offset: u64, len: u64) -> StorageResult<Vec<u8>> {
        let key = self.keys.file(path)?;
        // A ranged GET past the end is an error on S3 but a short read on local disk, so the
        // range is clamped to the size first.
        let Some(meta) = self.head(&key, path).await? else {
            return Err(self.missing_file(path).await);
        };
        let end = offset.saturating_add(len).min(meta.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let data = self
            .store
            .get_range(&key, offset..end)
            .await
            .map_err(|e| self.err(e, path))?;
        Ok(data.to_vec())
    }

    async fn append(&self, path: &StorePath, data: &[u8]) -> StorageResult<Version> {
        let key = self.prepare_write(path).await?;
        let deadline = Instant::now() + APPEND_DEADLINE;
        let mut pause = Duration::from_millis(2);
        loop {
            let (mode, mut joined) = match self.store.get(&key).await {
                Ok(got) => {
                    if got.meta.size + data.len() as u64 > APPEND_MAX_BYTES {
                        return Err(StorageError::TooLarge(format!(
                            "appending would make the file larger than {} MiB, the most an \
                             append may grow a file on the S3 backend; write it whole instead",
                            APPEND_MAX_BYTES >> 20
                        )));
                    }
                    let version = UpdateVersion {
                        e_tag: got.meta.e_tag.clone(),
                        version: None,
                    };
                    let old = got.bytes().await.map_err(|e| self.err(e, path))?;
                    (PutMode::Update(version), old.to_vec())
                }
                Err(object_store::Error::NotFound { .. }) => (PutMode::Create, Vec::new()),
                Err(e) => return Err(self.err(e, path)),
            };
            joined.extend_from_slice(data);
            match self.put(&key, joined.into(), mode, path).await {
                Err(StorageError::Conflict(_)) if Instant::now() < deadline => {
                    // Another writer got in between: re-read and try again.
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(StorageError::Conflict(_)) => {
                    return Err(StorageError::Busy(format!("append to {path}")))
                }
                other => return other,
            }
        }
    }

    async fn list(&self, dir: &StorePath) -> StorageResult<Vec<DirEntry>> {
        let prefix = self.keys.of(dir)?;
        let (listing, publishing) = futures_util::join!(
            self.store.list_with_delimiter(prefix.as_ref()),
            self.publishing(dir)
        );
        if publishing? {
            return Err(StorageError::NotFound(dir.to_string()));
        }
        let listing = listing.map_err(|e| self.err(e, dir))?;
        let has_marker = listing
            .objects
            .iter()
            .any(|o| Keys::name(&o.location) == DIR_MARKER);
        let mut out: Vec<DirEntry> = listing
            .objects
            .iter()
            .filter(|o| !Keys::is_internal(Keys::name(&o.location)))
            .map(|o| DirEntry {
                name: Keys::name(&o.location).to_string(),
                meta: file_meta(o),
            })
            .collect();
        let objects = listing.objects.iter().map(|o| &o.location);
        let subdirs = shown_subdirs(objects, &listing.common_prefixes)
            .into_iter()
            .filter_map(|p| self.keys.rel(p));
        // A sub-directory's time is its marker's. One without a marker is implicit (objects
        // written by another tool) or a ghost: SeaweedFS keeps listing a folder whose objects
        // were all deleted, so it counts only if something is still under it.
        let dirs = stream::iter(subdirs.map(|sub| async move {
            let marker = self.keys.marker(&sub)?;
            let modified = match self.head(&marker, &sub).await? {
                Some(m) => m.last_modified.into(),
                None if self.any_under(&sub).await? => SystemTime::now(),
                None => return Ok(None),
            };
            Ok::<_, StorageError>(Some(DirEntry {
                name: sub.name().to_string(),
                meta: dir_meta(modified),
            }))
        }))
        .buffered(FAN_OUT)
        .try_collect::<Vec<_>>()
        .await?;
        out.extend(dirs.into_iter().flatten());
        if out.is_empty() && !has_marker && !dir.is_root() {
            // Nothing makes this a directory: say what it is instead.
            let file = self.keys.file(dir)?;
            return Err(match self.head(&file, dir).await? {
                Some(_) => StorageError::NotADirectory(dir.to_string()),
                None => StorageError::NotFound(dir.to_string()),
            });
        }
        Ok(out)
    }

    async fn mkdir(&self, path: &StorePath) -> StorageResult<()> {
        if path.is_root() {
            return Ok(());
        }
        let (file, marker) = (self.keys.file(path)?, self.keys.marker(path)?);
        let (file, marker) = futures_util::join!(self.head(&file, path), self.head(&marker, path));
        if file?.is_some() {
            return Err(StorageError::NotADirectory(path.to_string()));
        }
        if marker?.is_some() {
            return Ok(());
        }
        self.ensure_parents(path).await?;
        self.put(
            &self.keys.marker(path)?,
            Bytes::new(),
            PutMode::Overwrite,
            path,
        )
        .await
        .map(drop)
    }

    /// Every object under `dir` (recursively), markers included.
    async fn objects_under(&self, dir: &StorePath) -> StorageResult<Vec<ObjectMeta>> {
        let prefix = self.keys.of(dir)?;
        self.store
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.err(e, dir))
    }

    async fn delete_all(&self, keys: Vec<Path>, what: &StorePath) -> StorageResult<()> {
        let locations = stream::iter(keys.into_iter().map(Ok)).boxed();
        self.store
            .delete_stream(locations)
            .try_collect::<Vec<_>>()
            .await
            .map(drop)
            .or_else(|e| match e {
                // Someone else removed it first: the outcome we wanted.
                object_store::Error::NotFound { .. } => Ok(()),
                other => Err(self.err(other, what)),
            })
    }

    async fn remove(&self, path: &StorePath, recursive: bool) -> StorageResult<()> {
        if path.is_root() {
            return Err(StorageError::InvalidPath("cannot remove the root".into()));
        }
        let file = self.keys.file(path)?;
        if self.head(&file, path).await?.is_some() {
            return match self.store.delete(&file).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.err(e, path)),
            };
        }
        let own_marker = self.keys.marker(path)?;
        let (objects, publishing) =
            futures_util::join!(self.objects_under(path), self.publishing(path));
        let objects = objects?;
        if objects.is_empty() || publishing? {
            return Err(StorageError::NotFound(path.to_string()));
        }
        let (markers, files): (Vec<Path>, Vec<Path>) = objects
            .into_iter()
            .map(|o| o.location)
            .partition(|k| Keys::name(k) == DIR_MARKER);
        if !recursive && (!files.is_empty() || markers.iter().any(|m| *m != own_marker)) {
            return Err(StorageError::NotEmpty(path.to_string()));
        }
        // Files first, the directory's own marker last: an interrupted removal leaves a
        // directory that is still there and can be removed again.
        self.delete_all(files, path).await?;
        let (own, subs): (Vec<Path>, Vec<Path>) =
            markers.into_iter().partition(|m| *m == own_marker);
        self.delete_all(subs, path).await?;
        self.delete_all(own, path).await
    }

    /// The checks of a rename, and `to`'s parents made; returns the source's metadata.
    async fn prepare_rename(&self, from: &StorePath, to: &StorePath) -> StorageResult<Meta> {
        if from.is_root() || to.is_root() {
            return Err(StorageError::InvalidPath("cannot move the root".into()));
        }
        if to.starts_with(from) {
            return Err(StorageError::InvalidPath(format!(
                "cannot move {from} into itself ({to})"
            )));
        }
        let (src, dst) = futures_util::join!(self.stat(from), self.stat(to));
        let Some(src) = src? else {
            return Err(StorageError::NotFound(from.to_string()));
        };
        if dst?.is_some() {
            return Err(StorageError::AlreadyExists(to.to_string()));
        }
        self.ensure_parents(to).await?;
        Ok(src)
    }

    /// Copy with create-if-absent (so a concurrent creator of `to` wins cleanly), then delete
    /// the source only if it is still the version that was copied: a write that lands on
    /// `from` meanwhile is kept, as if it had come after the move.
    async fn move_file(&self, from: &StorePath, to: &StorePath) -> StorageResult<()> {
        let (src, dst) = (self.keys.file(from)?, self.keys.file(to)?);
        let got = self.store.get(&src).await.map_err(|e| self.err(e, from))?;
        let copied = got.meta.e_tag.clone();
        let data = got.bytes().await.map_err(|e| self.err(e, from))?;
        self.put(&dst, data, PutMode::Create, to)
            .await
            .map_err(|e| match e {
                StorageError::Conflict(_) => StorageError::AlreadyExists(to.to_string()),
                other => other,
            })?;
        match self.head(&src, from).await? {
            Some(now) if now.e_tag == copied => self.delete_all(vec![src], from).await,
            _ => Ok(()),
        }
    }

    async fn probe(&self) -> StorageResult<()> {
        let key = self.keys.internal(&format!(
            ".longship-probe-{}",
            uuid::Uuid::new_v4().simple()
        ))?;
        let what = "the readiness probe object";
        let body = Bytes::from_static(b"probe");
        self.probe_store
            .put(&key, PutPayload::from_bytes(body.clone()))
            .await
            .map_err(|e| self.internal_err(e, what))?;
        let read = async {
            let got = self.probe_store.get(&key).await?;
            got.bytes().await
        }
        .await;
        let deleted = self.probe_store.delete(&key).await;
        let read = read.map_err(|e| self.internal_err(e, what))?;
        deleted.map_err(|e| self.internal_err(e, what))?;
        if read != body {
            return Err(StorageError::Unavailable(format!(
                "object store {} returned different bytes than were written",
                self.endpoint
            )));
        }
        Ok(())
    }
}

/// The sub-directories of a delimiter listing (`objects` and `prefixes` of one level) that
/// are shown: not the backend's own folders, and not a directory a move is still filling,
/// whose publishing flag arrives among the same level's objects (no extra request).
fn shown_subdirs<'a>(
    objects: impl Iterator<Item = &'a Path>,
    prefixes: &'a [Path],
) -> Vec<&'a Path> {
    let flagged: HashSet<&str> = objects
        .filter_map(|key| Keys::flagged(Keys::name(key)))
        .collect();
    prefixes
        .iter()
        .filter(|p| !Keys::is_internal(Keys::name(p)) && !flagged.contains(Keys::name(p)))
        .collect()
}

/// The chain of directories from the top down to `dir` (the root excluded).
fn ancestors(dir: &StorePath) -> Vec<StorePath> {
    let mut chain: Vec<StorePath> = std::iter::successors(Some(dir.clone()), |p| p.parent())
        .filter(|p| !p.is_root())
        .collect();
    chain.reverse();
    chain
}

fn file_meta(o: &ObjectMeta) -> Meta {
    Meta {
        kind: EntryKind::File,
        size: o.size,
        modified: o.last_modified.into(),
        version: o.e_tag.clone().map(Version),
    }
}

fn dir_meta(modified: SystemTime) -> Meta {
    Meta {
        kind: EntryKind::Dir,
        size: 0,
        modified,
        version: None,
    }
}

impl Storage for S3Storage {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn describe(&self) -> String {
        self.inner.location.clone()
    }

    fn read_versioned(&self, path: &StorePath) -> StorageResult<(Vec<u8>, Version)> {
        self.block_on(self.inner.read_versioned(path))
    }

    fn read_range(&self, path: &StorePath, offset: u64, len: u64) -> StorageResult<Vec<u8>> {
        self.block_on(self.inner.read_range(path, offset, len))
    }

    fn write(&self, path: &StorePath, data: &[u8]) -> StorageResult<Version> {
        let inner = &self.inner;
        self.block_on(async {
            let key = inner.prepare_write(path).await?;
            let data = Bytes::copy_from_slice(data);
            inner.put(&key, data, PutMode::Overwrite, path).await
        })
    }

    /// A multipart upload: each piece is one part (its own storage call, within the
    /// per-operation deadline); the object appears whole when the upload completes, and an
    /// upload that fails part-way is aborted (the store drops its parts).
    fn write_pieces(
        &self,
        path: &StorePath,
        next_piece: &mut dyn FnMut() -> StorageResult<Option<Vec<u8>>>,
    ) -> StorageResult<Version> {
        let inner = &self.inner;
        let key = self.block_on(inner.prepare_write(path))?;
        let mut upload = self.block_on(async {
            inner
                .store
                .put_multipart(&key)
                .await
                .map_err(|e| inner.err(e, path))
        })?;
        let sent = (|| {
            while let Some(piece) = next_piece()? {
                let part = upload.put_part(PutPayload::from(piece));
                self.block_on(async { part.await.map_err(|e| inner.err(e, path)) })?;
            }
            let done =
                self.block_on(async { upload.complete().await.map_err(|e| inner.err(e, path)) })?;
            done.e_tag.map(Version).ok_or_else(|| {
                StorageError::Unavailable(format!(
                    "object store {} returned no ETag for {path}",
                    inner.endpoint
                ))
            })
        })();
        if sent.is_err() {
            if let Err(e) =
                self.block_on(async { upload.abort().await.map_err(|e| inner.err(e, path)) })
            {
                tracing::warn!(path = %path, error = %e, "multipart upload not aborted (the store expires it)");
            }
        }
        sent
    }

    fn write_if(
        &self,
        path: &StorePath,
        data: &[u8],
        expected: Option<&Version>,
    ) -> StorageResult<Version> {
        let inner = &self.inner;
        let mode = match expected {
            None => PutMode::Create,
            Some(v) => PutMode::Update(UpdateVersion {
                e_tag: Some(v.0.clone()),
                version: None,
            }),
        };
        self.block_on(async {
            let key = inner.prepare_write(path).await?;
            let data = Bytes::copy_from_slice(data);
            inner.put(&key, data, mode, path).await
        })
    }

    fn append(&self, path: &StorePath, data: &[u8]) -> StorageResult<Version> {
        self.block_on(self.inner.append(path, data))
    }

    fn stat(&self, path: &StorePath) -> StorageResult<Option<Meta>> {
        self.block_on(self.inner.stat(path))
    }

    fn list(&self, dir: &StorePath) -> StorageResult<Vec<DirEntry>> {
        self.block_on(self.inner.list(dir))
    }

    fn mkdir(&self, path: &StorePath) -> StorageResult<()> {
        self.block_on(self.inner.mkdir(path))
    }

    fn remove(&self, path: &StorePath, recursive: bool) -> StorageResult<()> {
        self.block_on(self.inner.remove(path, recursive))
    }

    fn rename(&self, from: &StorePath, to: &StorePath) -> StorageResult<()> {
        self.rename_in_steps(from, to, &|| {})
    }

    /// A directory moves object by object, so its copies and deletions are cut into batches
    /// with `between_steps` after each (the move's lease renews on the runtime meanwhile).
    fn rename_in_steps(
        &self,
        from: &StorePath,
        to: &StorePath,
        between_steps: &dyn Fn(),
    ) -> StorageResult<()> {
        let src = self.block_on(self.inner.prepare_rename(from, to))?;
        if src.is_dir() {
            // Many calls, each within the per-operation deadline: a large tree takes as long
            // as it takes, a hung store still fails the move within one deadline.
            moves::move_tree(self, from, to, between_steps)
        } else {
            self.block_on(self.inner.move_file(from, to))
        }
    }

    fn lock(&self, name: &str, timeout: Duration) -> StorageResult<Box<dyn LockGuard>> {
        // Waiting for the lock is not the store hanging: the deadline starts after the wait.
        let limit = timeout + self.deadline.per_operation();
        crate::storage::lock_counts::counted(name, || {
            let guard = self.block_on_within(
                limit,
                false,
                lease::acquire(self.inner.clone(), self.handle.clone(), name, timeout),
            )?;
            Ok(Box::new(guard))
        })
    }

    fn probe(&self) -> StorageResult<()> {
        self.block_on_within(self.deadline.per_operation(), true, self.inner.probe())
    }

    /// One batched delete request per thousand keys, no HEAD first.
    fn remove_files(&self, paths: &[StorePath]) -> StorageResult<()> {
        let inner = &self.inner;
        let keys = paths
            .iter()
            .map(|p| inner.keys.file(p))
            .collect::<StorageResult<Vec<_>>>()?;
        self.block_on(inner.delete_all(keys, &StorePath::root()))
    }

    /// Each intent is settled in a call of its own (its own deadline); one that fails is
    /// logged and tried again at the next sweep.
    fn recover_moves(&self) -> StorageResult<usize> {
        let inner = &self.inner;
        let mut settled = 0;
        for key in self.block_on(moves::intents(inner))? {
            match moves::recover(self, &key) {
                Ok(true) => settled += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(intent = %key, error = %e, "could not settle a directory move")
                }
            }
        }
        Ok(settled)
    }

    /// S3 rewrites the whole object to append (see `Inner::append`).
    fn appends_in_place(&self) -> bool {
        false
    }

    /// Walks list `parallel_requests` directories at a time (each a round trip or more).
    fn listing_fan_out(&self) -> usize {
        self.inner.parallel
    }

    /// Up to `parallel_requests` listings in flight, driven from this thread, as
    /// [`Self::read_many`] does for reads.
    fn list_many(
        &self,
        dirs: &[StorePath],
        keep_going: &dyn Fn() -> bool,
    ) -> Vec<StorageResult<Vec<DirEntry>>> {
        let inner = &self.inner;
        let stopped = std::sync::atomic::AtomicBool::new(false);
        let stopped = &stopped;
        let listings = stream::iter(dirs.iter().map(|dir| async move {
            if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(StorageError::Unavailable("listing abandoned".into()));
            }
            inner.list(dir).await
        }))
        .buffered(inner.parallel)
        .map(|got| {
            if !keep_going() {
                stopped.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            got
        })
        .collect::<Vec<_>>();
        // One listing may take a whole per-operation deadline (a directory of many
        // sub-directories is a HEAD each): allow that per round of the batch, so fanning out
        // never fails a walk that listing in turn would have finished.
        let rounds = dirs.len().div_ceil(inner.parallel).clamp(1, 64) as u32;
        let limit = self.deadline.per_operation() * rounds;
        match self.block_on_within(limit, false, async { Ok(listings.await) }) {
            Ok(out) => out,
            Err(e) => {
                let msg = e.to_string();
                dirs.iter()
                    .map(|_| Err(StorageError::Unavailable(msg.clone())))
                    .collect()
            }
        }
    }

    /// Up to `parallel_requests` GETs in flight, driven from this thread; `keep_going` is
    /// asked as each read finishes, and once it says no nothing new is started.
    fn read_many(
        &self,
        paths: &[StorePath],
        keep_going: &dyn Fn() -> bool,
    ) -> Vec<StorageResult<Vec<u8>>> {
        let inner = &self.inner;
        let stopped = std::sync::atomic::AtomicBool::new(false);
        let stopped = &stopped;
        let reads = stream::iter(paths.iter().map(|path| async move {
            if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(StorageError::Unavailable("read abandoned".into()));
            }
            inner.read_versioned(path).await.map(|(data, _)| data)
        }))
        .buffered(inner.parallel)
        .map(|got| {
            if !keep_going() {
                stopped.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            got
        })
        .collect::<Vec<_>>();
        match self.block_on(async { Ok(reads.await) }) {
            Ok(out) => out,
            Err(e) => {
                let msg = e.to_string();
                paths
                    .iter()
                    .map(|_| Err(StorageError::Unavailable(msg.clone())))
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(raw: &[&str]) -> Vec<Path> {
        raw.iter().map(|k| Path::parse(*k).unwrap()).collect()
    }

    #[test]
    fn a_flag_in_the_same_listing_hides_its_directory_and_itself() {
        let objects = keys(&[
            "pre/res/.longship-dir",
            "pre/res/.longship-pub-doc",
            "pre/res/.longship-pub-gone",
            "pre/res/notes.md",
        ]);
        let prefixes = keys(&[
            "pre/res/doc",
            "pre/res/docs",
            "pre/res/other",
            "pre/res/.longship-locks",
        ]);
        let shown: Vec<&str> = shown_subdirs(objects.iter(), &prefixes)
            .into_iter()
            .map(|p| p.as_ref())
            .collect();
        assert_eq!(shown, ["pre/res/docs", "pre/res/other"]);
        // The flag itself is an internal name: never listed as a file.
        assert!(objects
            .iter()
            .filter(|k| !Keys::is_internal(Keys::name(k)))
            .all(|k| k.as_ref() == "pre/res/notes.md"));
    }
}
