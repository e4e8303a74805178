//! Blocking storage backends behind one trait, and the domain logic that runs on them.
//!
//! Everything here is synchronous and may block: it is only ever called from jobs
//! (`crate::jobs`) running on the storage and commit pools, never from an HTTP worker or the
//! AuthActor. Nothing here knows about actors or HTTP.
//!
//! Paths are [`StorePath`]s: `/`-separated, relative to the virtual mount `/local` of spec §4.1
//! (so `_system/accounts.json`, `acme/user/bob/memories/x.md`). Nothing above the trait may
//! assume a local directory; the local backend maps `/local` to `<data_dir>/viking`.

pub mod account_config;
pub mod acl;
pub mod audit;
pub mod backend;
pub mod fs;
pub mod keys;
pub mod lock_counts;
pub mod okf;
mod path;
pub mod quota;
pub mod registry;
pub mod replace;
pub mod scaffold;
pub mod seglog;
pub mod sessions;
pub mod tags;
pub mod tasks;
pub mod uri;
pub mod user_config;
pub mod watches;
pub mod webdav;

pub use path::{is_internal_name, StorePath, INTERNAL_PREFIX};

use std::time::{Duration, SystemTime};

/// Failures of a storage backend.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("not a directory: {0}")]
    NotADirectory(String),
    #[error("is a directory: {0}")]
    IsADirectory(String),
    #[error("directory not empty: {0}")]
    NotEmpty(String),
    /// A compare-and-swap write lost: the object changed since it was read.
    #[error("changed concurrently: {0}")]
    Conflict(String),
    /// A named lock could not be taken within its deadline.
    #[error("busy: {0}")]
    Busy(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage is read-only: {0}")]
    ReadOnly(String),
    /// The operation would make an object larger than this backend allows for it (appends
    /// on S3 rewrite the whole object, so files grown by appending are capped there).
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("invalid storage path: {0}")]
    InvalidPath(String),
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
}

pub type StorageResult<T> = Result<T, StorageError>;

/// An opaque token naming one stored version of an object (an ETag on S3; inode, mtime and
/// length on local disk). Compare-and-swap writes succeed only if the version is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
}

/// What `stat` and `list` report about one object.
#[derive(Debug, Clone)]
pub struct Meta {
    pub kind: EntryKind,
    /// Bytes for files; the backend's own value for directories (4096 on most local disks).
    pub size: u64,
    pub modified: SystemTime,
    /// The version of a file; `None` for directories.
    pub version: Option<Version>,
}

impl Meta {
    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Dir
    }
}

/// One child of a listed directory.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: String,
    pub meta: Meta,
}

/// Held while a named cross-instance lock is taken; dropping it releases the lock.
pub trait LockGuard: Send {
    /// Whether the lock is still certainly ours. A lease-based lock (S3) can be lost by a
    /// holder that stalled for a whole lease lifetime; writes made under a lock are fenced by
    /// the store anyway (conditional on versions read under it), and this lets a holder stop
    /// before even trying. `flock` on local disk is held until dropped.
    fn held(&self) -> bool {
        true
    }
}

/// A blocking storage backend (spec §4): a file-system view of local disk or an object store.
///
/// Every write is atomic: readers see the old or the new content, never a torn file, and a
/// write that returned `Ok` survives a crash of the process.
pub trait Storage: Send + Sync + 'static {
    /// A short name for logs and `/ready` (`local`, `s3`).
    fn kind(&self) -> &'static str;

    /// A human-readable location (directory or bucket/prefix) for startup logs.
    fn describe(&self) -> String;

    /// The whole content of a file.
    fn read(&self, path: &StorePath) -> StorageResult<Vec<u8>> {
        self.read_versioned(path).map(|(data, _)| data)
    }

    /// The content of a file with the version it had, for a later [`Storage::write_if`].
    fn read_versioned(&self, path: &StorePath) -> StorageResult<(Vec<u8>, Version)>;

    /// Up to `len` bytes starting at `offset` (fewer at the end of the file).
    fn read_range(&self, path: &StorePath, offset: u64, len: u64) -> StorageResult<Vec<u8>>;

    /// Atomically create or replace a file, creating missing parent directories.
    fn write(&self, path: &StorePath, data: &[u8]) -> StorageResult<Version>;

    /// Compare-and-swap: write only if the file is still at `expected` (`None`: only if it does
    /// not exist). Loses with [`StorageError::Conflict`] otherwise.
    fn write_if(
        &self,
        path: &StorePath,
        data: &[u8],
        expected: Option<&Version>,
    ) -> StorageResult<Version>;

    /// Atomically create or replace a file whose content arrives in pieces (a large upload
    /// staged elsewhere), holding one piece at a time: readers see the old content or the
    /// whole new one. `next_piece` gives `None` after the last piece; pieces but the last are
    /// at least 5 MiB (S3's smallest multipart part). The default concatenates the pieces in
    /// memory; the backends stream them (local: a temporary file renamed into place; S3: a
    /// multipart upload, completed only after the last piece).
    fn write_pieces(
        &self,
        path: &StorePath,
        next_piece: &mut dyn FnMut() -> StorageResult<Option<Vec<u8>>>,
    ) -> StorageResult<Version> {
        let mut all = Vec::new();
        while let Some(piece) = next_piece()? {
            all.extend_from_slice(&piece);
        }
        self.write(path, &all)
    }

    /// Append to a file (creating it), atomically with respect to every other write of it.
    fn append(&self, path: &StorePath, data: &[u8]) -> StorageResult<Version>;

    /// Metadata of a file or directory; `Ok(None)` if nothing is there.
    fn stat(&self, path: &StorePath) -> StorageResult<Option<Meta>>;

    /// Direct children of a directory, in no particular order. Internal temporary names are
    /// never returned. Errors with `NotFound` / `NotADirectory`.
    fn list(&self, dir: &StorePath) -> StorageResult<Vec<DirEntry>>;

    /// Create a directory and its missing parents; Ok if it already exists.
    fn mkdir(&self, path: &StorePath) -> StorageResult<()>;

    /// Remove a file, or a directory (only if empty unless `recursive`). Missing → `NotFound`.
    fn remove(&self, path: &StorePath, recursive: bool) -> StorageResult<()>;

    /// Move a file or directory tree; fails with `AlreadyExists` if `to` exists.
    fn rename(&self, from: &StorePath, to: &StorePath) -> StorageResult<()>;

    /// [`Storage::rename`] cut into bounded steps with `between_steps` called between them
    /// (where no lock of the caller's is held: a pool lets other accounts' waiting jobs run
    /// there), for a user's move of a tree. Same outcome and atomicity as `rename`. Backends
    /// whose renames are one step keep this default.
    fn rename_in_steps(
        &self,
        from: &StorePath,
        to: &StorePath,
        _between_steps: &dyn Fn(),
    ) -> StorageResult<()> {
        self.rename(from, to)
    }

    /// Take a named cross-instance lock, waiting at most `timeout` (then `Busy`).
    fn lock(&self, name: &str, timeout: Duration) -> StorageResult<Box<dyn LockGuard>>;

    /// A cheap end-to-end check that the store answers and accepts writes (for `/ready`).
    fn probe(&self) -> StorageResult<()>;

    /// Remove temporary files a killed writer left behind, if older than `older_than` (so no
    /// live writer, on any instance sharing the store, can still own them). Returns how many
    /// were removed. Backends without temporary files have nothing to do.
    fn sweep_temp_files(&self, _older_than: Duration) -> StorageResult<usize> {
        Ok(0)
    }

    /// Settle directory moves whose mover died mid-way (on S3 a tree moves object by object
    /// behind a publishing flag: see `backend::s3::moves`), on any instance sharing the store.
    /// Returns how many were settled. Backends whose renames are atomic have nothing to do.
    fn recover_moves(&self) -> StorageResult<usize> {
        Ok(0)
    }

    /// Write a file nothing reads yet (a staged tree that is published later by one rename):
    /// no per-file durability or locking. [`Storage::sync_staged`] makes all such writes
    /// durable before the tree is published. Backends whose writes are durable anyway keep
    /// this default.
    fn write_staged(&self, path: &StorePath, data: &[u8]) -> StorageResult<()> {
        self.write(path, data).map(|_| ())
    }

    /// Swap two existing directories in one atomic step (each name then holds the other's
    /// tree). `Ok(false)`: this backend cannot (S3; a local file system without
    /// `RENAME_EXCHANGE`) and nothing changed — `storage::replace` then publishes through a
    /// journal and two moves instead.
    fn exchange(&self, _a: &StorePath, _b: &StorePath) -> StorageResult<bool> {
        Ok(false)
    }

    /// Make every [`Storage::write_staged`] made so far durable.
    fn sync_staged(&self) -> StorageResult<()> {
        Ok(())
    }

    /// Whether [`Storage::append`] costs the same at any file size (a true append). When it
    /// does not (S3 rewrites the whole object), growing logs use [`seglog`] instead.
    fn appends_in_place(&self) -> bool {
        true
    }

    /// Remove many files (missing ones are fine). An object store sends them as batched
    /// deletes; local disk removes them in turn.
    fn remove_files(&self, paths: &[StorePath]) -> StorageResult<()> {
        for path in paths {
            match self.remove(path, false) {
                Ok(()) | Err(StorageError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Read many files, results in the order of `paths`. An object store overrides this to
    /// keep a bounded number of requests in flight from the one calling thread; local disk
    /// reads them one after another. `keep_going` is asked between files (or batches): once it
    /// says no, the remaining results are `Unavailable` and the read stops early.
    fn read_many(
        &self,
        paths: &[StorePath],
        keep_going: &dyn Fn() -> bool,
    ) -> Vec<StorageResult<Vec<u8>>> {
        paths
            .iter()
            .map(|p| {
                if keep_going() {
                    self.read(p)
                } else {
                    Err(StorageError::Unavailable("read abandoned".into()))
                }
            })
            .collect()
    }

    /// How many directory listings a walk should hand to one [`Storage::list_many`]: 1 where
    /// listing in turn is as fast as it gets (local disk), more where each listing is a round
    /// trip (an object store), so a walk lists the next directories while it works on these.
    fn listing_fan_out(&self) -> usize {
        1
    }

    /// List many directories, results in the order of `dirs` (as [`Storage::list`] each).
    /// An object store keeps a bounded number of listings in flight from the calling thread;
    /// local disk lists them in turn. `keep_going` as for [`Storage::read_many`].
    fn list_many(
        &self,
        dirs: &[StorePath],
        keep_going: &dyn Fn() -> bool,
    ) -> Vec<StorageResult<Vec<DirEntry>>> {
        dirs.iter()
            .map(|d| {
                if keep_going() {
                    self.list(d)
                } else {
                    Err(StorageError::Unavailable("listing abandoned".into()))
                }
            })
            .collect()
    }
}

/// The names of the directories directly under `dir`; none when `dir` is missing or a file.
pub fn subdir_names(storage: &dyn Storage, dir: &StorePath) -> StorageResult<Vec<String>> {
    match storage.list(dir) {
        Ok(entries) => Ok(entries
            .into_iter()
            .filter(|e| e.meta.is_dir())
            .map(|e| e.name)
            .collect()),
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The names of the account directories at the storage root (storage-internal `_…` entries
/// excluded); an empty store has none.
pub fn account_names(storage: &dyn Storage) -> StorageResult<Vec<String>> {
    let mut names = subdir_names(storage, &StorePath::root())?;
    names.retain(|n| !n.starts_with('_'));
    Ok(names)
}

/// Remove `path` (a whole tree if `recursive`); already missing is success.
pub fn remove_if_exists(
    storage: &dyn Storage,
    path: &StorePath,
    recursive: bool,
) -> StorageResult<()> {
    match storage.remove(path, recursive) {
        Ok(()) | Err(StorageError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
