//! Server-local sources (`resources.local_path_allowlist`): a file is read as it is; a
//! directory is packed into a ZIP in scratch space — the same form the SDK uploads for a
//! directory — so the sandboxed parser unpacks it under the archive rules (`include`,
//! `exclude`, `ignore_dirs`, entry and size limits) like any other archive.
//!
//! Resolution canonicalises the path first, so `..` and symlinks in the request cannot leave
//! an allowed directory; inside a packed directory symlinks are skipped, never followed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::archive::ArchiveLimits;

/// What an allowed local path is.
#[derive(Debug, PartialEq, Eq)]
pub enum LocalSource {
    File(PathBuf),
    Dir(PathBuf),
}

/// The canonical file or directory `path` names, if it lies inside one of `allowlist`.
/// `None` for anything else (missing, outside, special files): callers answer all of these
/// the same way, so a refusal says nothing about what exists on the server.
pub fn resolve(path: &Path, allowlist: &[PathBuf]) -> Option<LocalSource> {
    let canonical = fs::canonicalize(path).ok()?;
    let permitted = allowlist.iter().any(|dir| {
        fs::canonicalize(dir)
            .map(|d| canonical.starts_with(d))
            .unwrap_or(false)
    });
    if !permitted {
        return None;
    }
    let meta = fs::metadata(&canonical).ok()?;
    if meta.is_file() {
        Some(LocalSource::File(canonical))
    } else if meta.is_dir() {
        Some(LocalSource::Dir(canonical))
    } else {
        None
    }
}

/// Pack `dir` into the ZIP `out` with every entry under `<root_name>/`. Symlinks and special
/// files are skipped (counted in a warning); more than `limits.max_entries` files, more than
/// `limits.max_total_bytes` or deeper than `limits.max_depth` is an error, checked before the
/// bytes are copied.
pub fn pack_dir(
    dir: &Path,
    root_name: &str,
    out: &Path,
    limits: ArchiveLimits,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let files = list_files(dir, limits, warnings)?;
    let file = fs::File::create(out).map_err(|e| format!("scratch space: {e}"))?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    for (rel, path) in files {
        zip.start_file(format!("{root_name}/{rel}"), options)
            .map_err(|e| format!("packing the directory: {e}"))?;
        let mut src = fs::File::open(&path).map_err(|e| format!("cannot read {rel}: {e}"))?;
        std::io::copy(&mut src, &mut zip).map_err(|e| format!("cannot read {rel}: {e}"))?;
    }
    let mut inner = zip
        .finish()
        .map_err(|e| format!("packing the directory: {e}"))?;
    inner
        .flush()
        .map_err(|e| format!("packing the directory: {e}"))
}

/// Every regular file under `dir` as (relative `/`-separated name, path), within `limits`.
fn list_files(
    dir: &Path,
    limits: ArchiveLimits,
    warnings: &mut Vec<String>,
) -> Result<Vec<(String, PathBuf)>, String> {
    let mut files = Vec::new();
    let mut total = 0u64;
    let mut skipped = 0usize;
    let mut stack = vec![(dir.to_path_buf(), String::new(), 0usize)];
    while let Some((path, rel, depth)) = stack.pop() {
        if depth > limits.max_depth {
            return Err(format!(
                "the directory is nested deeper than {} levels",
                limits.max_depth
            ));
        }
        let entries = fs::read_dir(&path).map_err(|e| format!("cannot list {rel:?}: {e}"))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot list {rel:?}: {e}"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            // file_type() does not follow symlinks.
            let kind = entry
                .file_type()
                .map_err(|e| format!("cannot list {child_rel:?}: {e}"))?;
            if kind.is_dir() {
                stack.push((entry.path(), child_rel, depth + 1));
            } else if kind.is_file() {
                total += entry.metadata().map(|m| m.len()).unwrap_or(0);
                files.push((child_rel, entry.path()));
                if files.len() > limits.max_entries {
                    return Err(format!(
                        "the directory has more than {} files",
                        limits.max_entries
                    ));
                }
                if total > limits.max_total_bytes {
                    return Err(format!(
                        "the directory holds more than {} bytes",
                        limits.max_total_bytes
                    ));
                }
            } else {
                skipped += 1;
            }
        }
    }
    if skipped > 0 {
        warnings.push(format!(
            "skipped {skipped} symbolic link(s) or special file(s) in the directory"
        ));
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ArchiveLimits {
        ArchiveLimits {
            max_entries: 100,
            max_total_bytes: 1 << 20,
            max_ratio: 200,
            max_depth: 8,
        }
    }

    #[test]
    fn resolve_stays_inside_the_allowlist() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("allowed");
        let outside = root.path().join("outside");
        fs::create_dir_all(allowed.join("docs")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(allowed.join("a.md"), "a").unwrap();
        fs::write(outside.join("secret.md"), "s").unwrap();
        std::os::unix::fs::symlink(&outside, allowed.join("escape")).unwrap();
        let list = vec![allowed.clone()];
        let canon = fs::canonicalize(&allowed).unwrap();
        assert_eq!(
            resolve(&allowed.join("a.md"), &list),
            Some(LocalSource::File(canon.join("a.md")))
        );
        assert_eq!(
            resolve(&allowed.join("docs"), &list),
            Some(LocalSource::Dir(canon.join("docs")))
        );
        assert_eq!(resolve(&allowed.join("../outside/secret.md"), &list), None);
        assert_eq!(resolve(&allowed.join("escape/secret.md"), &list), None);
        assert_eq!(resolve(&allowed.join("missing.md"), &list), None);
        assert_eq!(resolve(&allowed, &[]), None);
    }

    #[test]
    fn pack_skips_links_and_enforces_limits() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("proj");
        fs::create_dir_all(dir.join("src/deep")).unwrap();
        fs::write(dir.join("README.md"), "# proj").unwrap();
        fs::write(dir.join("src/deep/lib.rs"), "fn main() {}").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
        let out = root.path().join("proj.zip");
        let mut warnings = Vec::new();
        pack_dir(&dir, "proj", &out, limits(), &mut warnings).unwrap();
        let zip = zip::ZipArchive::new(fs::File::open(&out).unwrap()).unwrap();
        let mut names: Vec<String> = zip.file_names().map(|n| n.unwrap().into_owned()).collect();
        names.sort();
        assert_eq!(names, vec!["proj/README.md", "proj/src/deep/lib.rs"]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");

        let tight = ArchiveLimits {
            max_entries: 1,
            ..limits()
        };
        let err = pack_dir(&dir, "proj", &out, tight, &mut Vec::new()).unwrap_err();
        assert!(err.contains("more than 1 files"), "{err}");
        let shallow = ArchiveLimits {
            max_depth: 1,
            ..limits()
        };
        let err = pack_dir(&dir, "proj", &out, shallow, &mut Vec::new()).unwrap_err();
        assert!(err.contains("deeper than 1"), "{err}");
        let small = ArchiveLimits {
            max_total_bytes: 8,
            ..limits()
        };
        let err = pack_dir(&dir, "proj", &out, small, &mut Vec::new()).unwrap_err();
        assert!(err.contains("more than 8 bytes"), "{err}");
    }
}
