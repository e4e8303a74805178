//! The local-directory backend: `/local` is `<data_dir>/viking`, laid out as spec §4.1.
//!
//! Crash safety: a write goes to a temporary file in the target's directory, is fsynced, renamed
//! over the target and the directory is fsynced, so a reader sees the old or the new file and a
//! crash never leaves a torn one. Cross-process safety: every mutation of a file holds an
//! advisory `flock` on one of [`WRITE_STRIPES`] lock files under `<data_dir>/.longship/locks`,
//! which makes compare-and-swap and append atomic between instances sharing the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::storage::{
    DirEntry, EntryKind, LockGuard, Meta, Storage, StorageError, StorageResult, StorePath, Version,
};

/// Prefix of temporary files; never listed, so a crash mid-write leaves nothing visible.
const TEMP_PREFIX: &str = ".longship-tmp-";
/// Number of lock files that file mutations are striped over.
const WRITE_STRIPES: u64 = 1024;

pub struct LocalStorage {
    root: PathBuf,
    locks: PathBuf,
}

struct FileLock {
    _file: File,
}

impl LockGuard for FileLock {}

impl LocalStorage {
    /// A named lock: `flock` on a file named by the name's digest, polled until `timeout`.
    fn flock_named(&self, name: &str, timeout: Duration) -> StorageResult<Box<dyn LockGuard>> {
        let digest = hex::encode(&Sha256::digest(name.as_bytes())[..16]);
        let file = self.lock_file(&format!("n-{digest}.lock"))?;
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Box::new(FileLock { _file: file })),
                Err(fs::TryLockError::WouldBlock) => {
                    if Instant::now() >= deadline {
                        return Err(StorageError::Busy(name.to_string()));
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(25));
                }
                Err(fs::TryLockError::Error(e)) => return Err(e.into()),
            }
        }
    }

    /// Open (creating if needed) the storage under `data_dir`.
    pub fn open(data_dir: &Path) -> StorageResult<Self> {
        let root = data_dir.join("viking");
        let locks = data_dir.join(".longship").join("locks");
        fs::create_dir_all(&root)?;
        fs::create_dir_all(&locks)?;
        Ok(LocalStorage { root, locks })
    }

    fn full(&self, path: &StorePath) -> PathBuf {
        let mut p = self.root.clone();
        for seg in path.segments() {
            p.push(seg);
        }
        p
    }

    fn lock_file(&self, name: &str) -> io::Result<File> {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.locks.join(name))
    }

    /// Exclusive lock on the stripe that guards `path`; held for one mutation only.
    fn stripe_lock(&self, path: &StorePath) -> StorageResult<File> {
        let digest = Sha256::digest(path.as_str().as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        let stripe = u64::from_le_bytes(first) % WRITE_STRIPES;
        let file = self.lock_file(&format!("w-{stripe:04}.lock"))?;
        file.lock()?;
        Ok(file)
    }

    /// Create `dir` and missing parents, fsyncing each parent that gained an entry.
    fn create_dirs(&self, dir: &Path) -> StorageResult<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            if parent != self.root && parent.starts_with(&self.root) {
                self.create_dirs(parent)?;
            }
        }
        match fs::create_dir(dir) {
            Ok(()) => {
                if let Some(parent) = dir.parent() {
                    sync_dir(parent)?;
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if dir.is_dir() {
                    Ok(())
                } else {
                    Err(StorageError::NotADirectory(dir.display().to_string()))
                }
            }
            Err(e) => Err(map_io(e, dir)),
        }
    }

    /// temp file → fsync → rename → fsync directory.
    fn replace_file(&self, target: &Path, data: &[u8]) -> StorageResult<Version> {
        let dir = target
            .parent()
            .ok_or_else(|| StorageError::InvalidPath("cannot write the root".into()))?;
        self.create_dirs(dir)?;
        if target.is_dir() {
            return Err(StorageError::IsADirectory(target.display().to_string()));
        }
        let tmp = dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let result = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            let meta = f.metadata()?;
            fs::rename(&tmp, target)?;
            sync_dir(dir)?;
            Ok::<_, io::Error>(version_of(&meta))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|e| map_io(e, target))
    }

    fn current_version(target: &Path) -> StorageResult<Option<Version>> {
        match fs::symlink_metadata(target) {
            Ok(m) if m.is_dir() => Err(StorageError::IsADirectory(target.display().to_string())),
            Ok(m) => Ok(Some(version_of(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(map_io(e, target)),
        }
    }
}

impl Storage for LocalStorage {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn read_versioned(&self, path: &StorePath) -> StorageResult<(Vec<u8>, Version)> {
        let full = self.full(path);
        let mut f = File::open(&full).map_err(|e| map_io(e, &full))?;
        // The version comes from the open descriptor, so it names exactly the bytes read.
        let meta = f.metadata().map_err(|e| map_io(e, &full))?;
        if meta.is_dir() {
            return Err(StorageError::IsADirectory(path.to_string()));
        }
        let mut data = Vec::with_capacity(meta.len() as usize);
        f.read_to_end(&mut data).map_err(|e| map_io(e, &full))?;
        Ok((data, version_of(&meta)))
    }

    fn read_range(&self, path: &StorePath, offset: u64, len: u64) -> StorageResult<Vec<u8>> {
        let full = self.full(path);
        let mut f = File::open(&full).map_err(|e| map_io(e, &full))?;
        let meta = f.metadata().map_err(|e| map_io(e, &full))?;
        if meta.is_dir() {
            return Err(StorageError::IsADirectory(path.to_string()));
        }
        let want = len.min(meta.len().saturating_sub(offset));
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| map_io(e, &full))?;
        let mut data = Vec::with_capacity(want as usize);
        f.take(want)
            .read_to_end(&mut data)
            .map_err(|e| map_io(e, &full))?;
        Ok(data)
    }

    fn write_staged(&self, path: &StorePath, data: &[u8]) -> StorageResult<()> {
        if path.is_root() {
            return Err(StorageError::InvalidPath("cannot write the root".into()));
        }
        let full = self.full(path);
        if let Some(dir) = full.parent() {
            fs::create_dir_all(dir).map_err(|e| map_io(e, dir))?;
        }
        fs::write(&full, data).map_err(|e| map_io(e, &full))
    }

    /// One `syncfs` of the data directory's filesystem instead of an fsync per staged file.
    fn sync_staged(&self) -> StorageResult<()> {
        let dir = File::open(&self.root).map_err(|e| map_io(e, &self.root))?;
        // SAFETY: a valid open descriptor for the duration of the call.
        let rc = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
        if rc != 0 {
            return Err(map_io(io::Error::last_os_error(), &self.root));
        }
        Ok(())
    }

    fn write(&self, path: &StorePath, data: &[u8]) -> StorageResult<Version> {
        if path.is_root() {
            return Err(StorageError::InvalidPath("cannot write the root".into()));
        }
        let _lock = self.stripe_lock(path)?;
        self.replace_file(&self.full(path), data)
    }

    fn write_if(
        &self,
        path: &StorePath,
        data: &[u8],
        expected: Option<&Version>,
    ) -> StorageResult<Version> {
        if path.is_root() {
            return Err(StorageError::InvalidPath("cannot write the root".into()));
        }
        let _lock = self.stripe_lock(path)?;
        let full = self.full(path);
        let current = Self::current_version(&full)?;
        if current.as_ref() != expected {
            return Err(StorageError::Conflict(path.to_string()));
        }
        self.replace_file(&full, data)
    }

    fn append(&self, path: &StorePath, data: &[u8]) -> StorageResult<Version> {
        if path.is_root() {
            return Err(StorageError::InvalidPath("cannot write the root".into()));
        }
        let _lock = self.stripe_lock(path)?;
        let full = self.full(path);
        if let Some(dir) = full.parent() {
            self.create_dirs(dir)?;
        }
        let existed = full.exists();
        let result = (|| {
            let mut f = OpenOptions::new().append(true).create(true).open(&full)?;
            f.write_all(data)?;
            f.sync_data()?;
            if !existed {
                if let Some(dir) = full.parent() {
                    sync_dir(dir)?;
                }
            }
            Ok::<_, io::Error>(version_of(&f.metadata()?))
        })();
        result.map_err(|e| map_io(e, &full))
    }

    fn stat(&self, path: &StorePath) -> StorageResult<Option<Meta>> {
        let full = self.full(path);
        match fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => Ok(None),
            Ok(m) => Ok(Some(meta_of(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
            Err(e) => Err(map_io(e, &full)),
        }
    }

    fn list(&self, dir: &StorePath) -> StorageResult<Vec<DirEntry>> {
        let full = self.full(dir);
        let reader = fs::read_dir(&full).map_err(|e| map_io(e, &full))?;
        let mut out = Vec::new();
        for entry in reader {
            let entry = entry.map_err(|e| map_io(e, &full))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // names that are not UTF-8 cannot be addressed by a URI
            };
            // Temp files and every other reserved name are the server's, never a listing's.
            if crate::storage::is_internal_name(&name) {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Removed between readdir and stat: simply not there any more.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(map_io(e, &full)),
            };
            if meta.file_type().is_symlink() {
                continue; // never follow links out of the storage root
            }
            out.push(DirEntry {
                name,
                meta: meta_of(&meta),
            });
        }
        Ok(out)
    }

    fn mkdir(&self, path: &StorePath) -> StorageResult<()> {
        let full = self.full(path);
        if full.exists() && !full.is_dir() {
            return Err(StorageError::NotADirectory(path.to_string()));
        }
        self.create_dirs(&full)
    }

    fn remove(&self, path: &StorePath, recursive: bool) -> StorageResult<()> {
        if path.is_root() {
            return Err(StorageError::InvalidPath("cannot remove the root".into()));
        }
        let full = self.full(path);
        let meta = fs::symlink_metadata(&full).map_err(|e| map_io(e, &full))?;
        let result = if meta.is_dir() {
            if recursive {
                fs::remove_dir_all(&full)
            } else {
                fs::remove_dir(&full)
            }
        } else {
            let _lock = self.stripe_lock(path)?;
            fs::remove_file(&full)
        };
        result.map_err(|e| map_io(e, &full))?;
        if let Some(parent) = full.parent() {
            sync_dir(parent).map_err(|e| map_io(e, parent))?;
        }
        Ok(())
    }

    /// Like `remove` per file, but each parent directory is synced once per batch, not once
    /// per file (a sweep removes thousands of files from a few hundred directories).
    fn remove_files(&self, paths: &[StorePath]) -> StorageResult<()> {
        let mut parents = std::collections::BTreeSet::new();
        for path in paths {
            if path.is_root() {
                return Err(StorageError::InvalidPath("cannot remove the root".into()));
            }
            let full = self.full(path);
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.is_dir() => match self.remove(path, false) {
                    Ok(()) | Err(StorageError::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                },
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(map_io(e, &full)),
            }
            let _lock = self.stripe_lock(path)?;
            match fs::remove_file(&full) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(map_io(e, &full)),
            }
            if let Some(parent) = full.parent() {
                parents.insert(parent.to_path_buf());
            }
        }
        for parent in parents {
            sync_dir(&parent).map_err(|e| map_io(e, &parent))?;
        }
        Ok(())
    }

    fn rename(&self, from: &StorePath, to: &StorePath) -> StorageResult<()> {
        if from.is_root() || to.is_root() {
            return Err(StorageError::InvalidPath("cannot move the root".into()));
        }
        let (src, dst) = (self.full(from), self.full(to));
        if fs::symlink_metadata(&src).is_err() {
            return Err(StorageError::NotFound(from.to_string()));
        }
        let dst_dir = dst
            .parent()
            .ok_or_else(|| StorageError::InvalidPath("cannot move onto the root".into()))?;
        self.create_dirs(dst_dir)?;
        rename_noreplace(&src, &dst).map_err(|e| match e.raw_os_error() {
            Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => {
                StorageError::AlreadyExists(to.to_string())
            }
            _ => map_io(e, &dst),
        })?;
        sync_dir(dst_dir).map_err(|e| map_io(e, dst_dir))?;
        if let Some(src_dir) = src.parent() {
            if src_dir != dst_dir {
                sync_dir(src_dir).map_err(|e| map_io(e, src_dir))?;
            }
        }
        Ok(())
    }

    fn lock(&self, name: &str, timeout: Duration) -> StorageResult<Box<dyn LockGuard>> {
        crate::storage::lock_counts::counted(name, || self.flock_named(name, timeout))
    }

    fn exchange(&self, a: &StorePath, b: &StorePath) -> StorageResult<bool> {
        if a.is_root() || b.is_root() {
            return Err(StorageError::InvalidPath("cannot exchange the root".into()));
        }
        let (pa, pb) = (self.full(a), self.full(b));
        match rename_exchange(&pa, &pb) {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => return Err(map_io(e, &pb)),
        }
        for dir in [pa.parent(), pb.parent()].into_iter().flatten() {
            sync_dir(dir).map_err(|e| map_io(e, dir))?;
        }
        Ok(true)
    }

    fn sweep_temp_files(&self, older_than: Duration) -> StorageResult<usize> {
        let now = std::time::SystemTime::now();
        let mut removed = 0;
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                // Removed meanwhile by another request or instance.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(map_io(e, &dir)),
            };
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    stack.push(entry.path());
                    continue;
                }
                if !kind.is_file()
                    || !entry
                        .file_name()
                        .as_bytes()
                        .starts_with(TEMP_PREFIX.as_bytes())
                {
                    continue;
                }
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age >= older_than);
                if !stale {
                    continue;
                }
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(path = %entry.path().display(), error = %e,
                            "cannot remove a stale temporary file")
                    }
                }
            }
        }
        Ok(removed)
    }

    fn probe(&self) -> StorageResult<()> {
        if !self.root.is_dir() {
            tracing::error!(root = %self.root.display(), "storage root is missing");
            return Err(StorageError::Unavailable(
                "local storage root is missing".into(),
            ));
        }
        let probe = self.root.join(format!(
            "{TEMP_PREFIX}probe-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)?;
            f.write_all(b"probe")?;
            f.sync_all()?;
            fs::remove_file(&probe)
        })();
        result.map_err(|e| map_io(e, &self.root))
    }
}

fn version_of(meta: &fs::Metadata) -> Version {
    Version(format!(
        "{:x}-{:x}.{:x}-{:x}",
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.len()
    ))
}

fn meta_of(meta: &fs::Metadata) -> Meta {
    let is_dir = meta.is_dir();
    Meta {
        kind: if is_dir {
            EntryKind::Dir
        } else {
            EntryKind::File
        },
        size: meta.len(),
        modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
        version: if is_dir { None } else { Some(version_of(meta)) },
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `rename(2)` that refuses to replace an existing target (Linux `renameat2`), falling back to
/// check-then-rename on file systems without `RENAME_NOREPLACE`.
fn rename_noreplace(src: &Path, dst: &Path) -> io::Result<()> {
    let c_src = std::ffi::CString::new(src.as_os_str().as_bytes())?;
    let c_dst = std::ffi::CString::new(dst.as_os_str().as_bytes())?;
    // SAFETY: both pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_src.as_ptr(),
            libc::AT_FDCWD,
            c_dst.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EINVAL) || err.raw_os_error() == Some(libc::ENOSYS) {
        if dst.exists() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        return fs::rename(src, dst);
    }
    Err(err)
}

/// Swap `a` and `b` atomically (`renameat2(RENAME_EXCHANGE)`); `Ok(false)` where the file
/// system does not support it.
fn rename_exchange(a: &Path, b: &Path) -> io::Result<bool> {
    let c_a = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let c_b = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_a.as_ptr(),
            libc::AT_FDCWD,
            c_b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => Ok(false),
        _ => Err(err),
    }
}

fn map_io(err: io::Error, path: &Path) -> StorageError {
    let shown = path.display().to_string();
    match err.raw_os_error() {
        Some(libc::ENOENT) => StorageError::NotFound(shown),
        Some(libc::ENOTDIR) => StorageError::NotADirectory(shown),
        Some(libc::EISDIR) => StorageError::IsADirectory(shown),
        Some(libc::ENOTEMPTY) => StorageError::NotEmpty(shown),
        Some(libc::EEXIST) => StorageError::AlreadyExists(shown),
        // These reasons reach clients (503) and /ready: they name the failure, never the disk
        // location, which goes to the log instead.
        Some(libc::EROFS) => {
            tracing::error!(path = %shown, "storage is read-only");
            StorageError::ReadOnly("local storage is mounted read-only".into())
        }
        // A full disk is not "down": reads and removals that free space keep working.
        Some(libc::ENOSPC) => {
            tracing::error!(path = %shown, "no space left on device");
            StorageError::ReadOnly("local storage: no space left on device".into())
        }
        Some(libc::EIO) => {
            tracing::error!(path = %shown, "I/O error");
            StorageError::Unavailable("local storage: I/O error".into())
        }
        // A request path deeper than the filesystem allows is bad input (400), not a server
        // failure; the reason leaves the on-disk location out because it reaches the client.
        Some(libc::ENAMETOOLONG) => {
            StorageError::InvalidPath("path too long for the local filesystem".into())
        }
        _ => StorageError::Io(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LocalStorage) {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        (dir, s)
    }

    // The behaviour every backend shares is checked by the conformance suite
    // (tests/it/storage_backends.rs); only what is particular to local disk is here.

    #[test]
    fn remove_files_skips_missing_ones_and_removes_empty_dirs() {
        let (_d, s) = store();
        let p = |x: &str| StorePath::parse(x).unwrap();
        s.write(&p("a/x/1.f32"), b"1").unwrap();
        s.write(&p("a/x/2.f32"), b"2").unwrap();
        s.write(&p("a/y/3.f32"), b"3").unwrap();
        s.mkdir(&p("a/empty")).unwrap();
        s.remove_files(&[
            p("a/x/1.f32"),
            p("a/x/missing"),
            p("a/y/3.f32"),
            p("a/empty"),
        ])
        .unwrap();
        assert!(s.stat(&p("a/x/1.f32")).unwrap().is_none());
        assert!(s.stat(&p("a/y/3.f32")).unwrap().is_none());
        assert!(s.stat(&p("a/empty")).unwrap().is_none());
        assert!(s.stat(&p("a/x/2.f32")).unwrap().is_some());
        assert!(s.remove_files(&[StorePath::root()]).is_err());
    }
    #[test]
    fn temp_files_are_invisible_and_probe_works() {
        let (d, s) = store();
        fs::write(d.path().join("viking").join(".longship-tmp-crash"), b"torn").unwrap();
        assert!(s.list(&StorePath::root()).unwrap().is_empty());
        // Temp names are reserved names: no client path can name one (issue #26).
        assert!(crate::storage::is_internal_name(&format!("{TEMP_PREFIX}x")));
        s.probe().unwrap();
    }
}
