//! Safe ZIP unpacking into a scratch directory. Entries with `..`, absolute or otherwise
//! unsafe paths and symbolic links are skipped with a warning; names are made safe and
//! collisions after normalisation renamed; limits on entry count, total size, compression
//! ratio and nesting depth stop an archive bomb before it fills the disk.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use super::names::{deduplicate, entry_name};

/// Limits applied while unpacking.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct ArchiveLimits {
    pub max_entries: usize,
    pub max_total_bytes: u64,
    pub max_ratio: u64,
    pub max_depth: usize,
}

/// Entries above this size must respect `max_ratio` (smaller ones cannot hold much, but a
/// thousand of them can: the whole archive is checked too).
pub(crate) const ENTRY_RATIO_FLOOR: u64 = 64 * 1024;
/// Once the archive unpacked more than this, its unpacked total must respect `max_ratio`
/// against the archive's own size.
pub(crate) const ARCHIVE_RATIO_FLOOR: u64 = 1024 * 1024;

/// Unpack `zip_path` into `dest` (an existing, empty directory). Returns the number of files
/// written. Warnings name what was skipped or renamed.
pub fn unpack(
    zip_path: &Path,
    dest: &Path,
    limits: ArchiveLimits,
    warnings: &mut Vec<String>,
) -> Result<usize, String> {
    let file = fs::File::open(zip_path).map_err(|e| format!("cannot open archive: {e}"))?;
    let archive_size = file
        .metadata()
        .map_err(|e| format!("cannot open archive: {e}"))?
        .len()
        .max(1);
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| format!("not a readable ZIP archive: {e}"))?;
    if archive.len() > limits.max_entries {
        return Err(format!(
            "archive has {} entries; at most {} are accepted",
            archive.len(),
            limits.max_entries
        ));
    }
    if archive.has_duplicate_names() {
        // The ZIP reader keeps the last entry of each name; say so rather than drop silently.
        warnings.push(
            "the archive lists some names more than once; only the last entry of each name \
             was unpacked"
                .into(),
        );
    }
    // Sanitised relative path (as components) → is_dir, and raw path → stored path.
    let mut taken: HashMap<PathBuf, bool> = HashMap::new();
    let mut mapped: HashMap<PathBuf, PathBuf> = HashMap::new();
    let mut total: u64 = 0;
    let mut files = 0usize;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| format!("corrupt archive entry {i}: {e}"))?;
        let raw_name = match entry.name() {
            Ok(n) => n.into_owned(),
            Err(_) => {
                warnings.push(format!(
                    "skipped archive entry {i}: its name is not readable"
                ));
                continue;
            }
        };
        if entry.is_symlink() {
            warnings.push(format!("skipped symbolic link in archive: {raw_name}"));
            continue;
        }
        let Some(safe) = entry.enclosed_name() else {
            warnings.push(format!(
                "skipped archive entry with an unsafe path: {raw_name}"
            ));
            continue;
        };
        if raw_name.starts_with('/') || raw_name.starts_with('\\') || raw_name.contains('\0') {
            warnings.push(format!(
                "skipped archive entry with an unsafe path: {raw_name}"
            ));
            continue;
        }
        let parts: Vec<String> = safe
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        if parts.is_empty() {
            continue;
        }
        if parts.len() > limits.max_depth {
            return Err(format!(
                "archive nests deeper than {} levels ({raw_name:.120})",
                limits.max_depth
            ));
        }
        // Map every component through the same sanitisation, renaming collisions once and
        // remembering the choice so later entries of the same directory follow it.
        let mut stored = PathBuf::new();
        let mut raw_prefix = PathBuf::new();
        let is_dir = entry.is_dir();
        let mut skip = false;
        for (depth, part) in parts.iter().enumerate() {
            raw_prefix.push(part);
            let last = depth + 1 == parts.len();
            let want_dir = !last || is_dir;
            if let Some(existing) = mapped.get(&raw_prefix) {
                if taken.get(existing) == Some(&want_dir) && want_dir {
                    stored = existing.clone();
                    continue;
                }
            }
            let Some(clean) = entry_name(part) else {
                skip = true;
                break;
            };
            let candidate = deduplicate(&clean, !want_dir, |n| taken.contains_key(&stored.join(n)));
            if candidate != clean || clean != *part {
                warnings.push(format!(
                    "renamed archive entry {raw_name:.200}: {part} -> {candidate}"
                ));
            }
            stored.push(&candidate);
            taken.insert(stored.clone(), want_dir);
            mapped.insert(raw_prefix.clone(), stored.clone());
        }
        if skip {
            warnings.push(format!(
                "skipped archive entry with an unusable name: {raw_name}"
            ));
            continue;
        }
        if stored.as_os_str().len() > MAX_STORED_PATH_BYTES {
            warnings.push(format!(
                "skipped archive entry with a path longer than {MAX_STORED_PATH_BYTES} bytes: \
                 {raw_name:.200}…"
            ));
            continue;
        }
        let target = dest.join(&stored);
        let made = if is_dir {
            fs::create_dir_all(&target)
        } else {
            target.parent().map_or(Ok(()), fs::create_dir_all)
        };
        match made {
            Err(e) if name_too_long(&e) => {
                warnings.push(format!(
                    "skipped archive entry whose path is too long for the file system: \
                     {raw_name:.200}…"
                ));
                continue;
            }
            Err(e) => return Err(format!("cannot unpack: {e}")),
            Ok(()) if is_dir => continue,
            Ok(()) => {}
        }
        let compressed = entry.compressed_size().max(1);
        let remaining = limits.max_total_bytes.saturating_sub(total);
        let mut out = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
        {
            Ok(out) => out,
            Err(e) if name_too_long(&e) => {
                warnings.push(format!(
                    "skipped archive entry whose path is too long for the file system: \
                     {raw_name:.200}…"
                ));
                continue;
            }
            Err(e) => return Err(format!("cannot unpack {raw_name:.200}: {e}")),
        };
        let written = copy_limited(&mut entry, &mut out, remaining, |n| {
            if n > ENTRY_RATIO_FLOOR && n / compressed > limits.max_ratio {
                return Some("ratio");
            }
            let so_far = total + n;
            (so_far > ARCHIVE_RATIO_FLOOR && so_far / archive_size > limits.max_ratio)
                .then_some("archive ratio")
        })
        .map_err(|e| match e.kind() {
            io::ErrorKind::FileTooLarge => format!(
                "archive unpacks to more than {} bytes (limit)",
                limits.max_total_bytes
            ),
            io::ErrorKind::InvalidData if e.to_string() == "ratio" => format!(
                "archive entry {raw_name:.200} expands more than {}x (a likely zip bomb)",
                limits.max_ratio
            ),
            io::ErrorKind::InvalidData if e.to_string() == "archive ratio" => format!(
                "archive expands more than {}x its size (a likely zip bomb)",
                limits.max_ratio
            ),
            _ => format!("cannot unpack {raw_name:.200}: {e}"),
        })?;
        total += written;
        files += 1;
    }
    Ok(files)
}

/// Longest relative path an entry may be stored under: its URI (`viking://resources/<root>/…`
/// plus section names) must stay within the API's 4096 bytes.
const MAX_STORED_PATH_BYTES: usize = 3072;

fn name_too_long(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENAMETOOLONG)
}

/// Copy at most `limit` bytes; more → `FileTooLarge`; `bad_ratio(bytes_so_far)` naming a
/// broken rule → `InvalidData` with that name.
pub(crate) fn copy_limited(
    from: &mut impl Read,
    to: &mut impl Write,
    limit: u64,
    bad_ratio: impl Fn(u64) -> Option<&'static str>,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut n: u64 = 0;
    loop {
        let got = from.read(&mut buf)?;
        if got == 0 {
            return Ok(n);
        }
        n += got as u64;
        if n > limit {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "limit"));
        }
        if let Some(rule) = bad_ratio(n) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, rule));
        }
        to.write_all(&buf[..got])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    fn limits() -> ArchiveLimits {
        ArchiveLimits {
            max_entries: 100,
            max_total_bytes: 50 * 1024 * 1024,
            max_ratio: 100,
            max_depth: 10,
        }
    }

    fn make(entries: &[(&str, &[u8])]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zip");
        let mut w = zip::ZipWriter::new(fs::File::create(&path).unwrap());
        for (name, data) in entries {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
        (dir, path)
    }

    #[test]
    fn hostile_entries_are_skipped_or_renamed() {
        let (dir, path) = make(&[
            ("ok/a.md", b"# a"),
            ("../evil.md", b"x"),
            ("/abs.md", b"x"),
            ("ok/b c.md", b"b"),
            ("ok/b_c.md", b"b2"),
        ]);
        let dest = dir.path().join("out");
        fs::create_dir(&dest).unwrap();
        let mut w = Vec::new();
        let n = unpack(&path, &dest, limits(), &mut w).unwrap();
        assert_eq!(n, 3, "{w:?}");
        assert!(dest.join("ok/a.md").is_file());
        assert!(dest.join("ok/b_c.md").is_file());
        assert!(dest.join("ok/b_c_1.md").is_file());
        assert!(!dir.path().join("evil.md").exists());
        assert!(w.iter().any(|m| m.contains("../evil.md")), "{w:?}");
    }

    #[test]
    fn bombs_and_depth_fail() {
        let zeros = vec![0u8; 5 * 1024 * 1024];
        let (dir, path) = make(&[("z.txt", &zeros)]);
        let dest = dir.path().join("out");
        fs::create_dir(&dest).unwrap();
        let err = unpack(&path, &dest, limits(), &mut Vec::new()).unwrap_err();
        assert!(err.contains("zip bomb"), "{err}");

        let deep = (0..20)
            .map(|i| format!("d{i}"))
            .collect::<Vec<_>>()
            .join("/")
            + "/f.md";
        let (dir, path) = make(&[(deep.as_str(), b"x")]);
        let dest = dir.path().join("out");
        fs::create_dir(&dest).unwrap();
        let err = unpack(&path, &dest, limits(), &mut Vec::new()).unwrap_err();
        assert!(err.contains("deeper"), "{err}");
    }

    #[test]
    fn many_small_repetitive_entries_fail_the_ratio() {
        // Each entry stays below the per-entry floor; the entry rule alone misses them.
        let small = vec![b'a'; 60 * 1024];
        let names: Vec<String> = (0..60).map(|i| format!("f{i}.md")).collect();
        let entries: Vec<(&str, &[u8])> = names
            .iter()
            .map(|n| (n.as_str(), small.as_slice()))
            .collect();
        let (dir, path) = make(&entries);
        let dest = dir.path().join("out");
        fs::create_dir(&dest).unwrap();
        let err = unpack(&path, &dest, limits(), &mut Vec::new()).unwrap_err();
        assert!(err.contains("its size"), "{err}");
        // An entry of 100 KiB (once exempt below 1 MiB) is held to the ratio itself.
        let (dir, path) = make(&[("z.md", &vec![b'z'; 100 * 1024])]);
        let dest = dir.path().join("out");
        fs::create_dir(&dest).unwrap();
        let err = unpack(&path, &dest, limits(), &mut Vec::new()).unwrap_err();
        assert!(err.contains("z.md") && err.contains("zip bomb"), "{err}");
    }

    #[test]
    fn long_paths_are_skipped_and_duplicates_warned() {
        let long = vec!["x".repeat(250); 14].join("/") + "/deep.md";
        let (dir, path) = make(&[(long.as_str(), b"deep"), ("a.md", b"one"), ("b.md", b"two")]);
        // Rename b.md to a.md in place: two entries with one name.
        let mut bytes = fs::read(&path).unwrap();
        for i in 0..bytes.len() - 4 {
            if &bytes[i..i + 4] == b"b.md" {
                bytes[i] = b'a';
            }
        }
        fs::write(&path, bytes).unwrap();
        let dest = dir.path().join("out");
        fs::create_dir(&dest).unwrap();
        let mut w = Vec::new();
        let l = ArchiveLimits {
            max_depth: 48,
            ..limits()
        };
        assert_eq!(unpack(&path, &dest, l, &mut w).unwrap(), 1, "{w:?}");
        assert_eq!(fs::read(dest.join("a.md")).unwrap(), b"two");
        assert!(w.iter().any(|m| m.contains("longer than")), "{w:?}");
        assert!(w.iter().any(|m| m.contains("more than once")), "{w:?}");
    }

    #[test]
    fn names_the_api_refuses_are_skipped() {
        let (dir, path) = make(&[("%2e%2e/enc.md", b"x"), ("ok.md", b"y")]);
        let dest = dir.path().join("out");
        fs::create_dir(&dest).unwrap();
        let mut w = Vec::new();
        assert_eq!(unpack(&path, &dest, limits(), &mut w).unwrap(), 1, "{w:?}");
        assert!(w.iter().any(|m| m.contains("%2e%2e")), "{w:?}");
        assert_eq!(fs::read_dir(&dest).unwrap().count(), 1);
    }
}
