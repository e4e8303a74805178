//! Unpacking a file package (a skill's ZIP: `SKILL.md` with scripts and resources) in the parser
//! child: the archive rules of [`super::archive`] (unsafe paths, links, bombs, depth), no
//! conversion or splitting — every file is kept byte for byte — then the package's caps in
//! files and bytes. Runs only inside the sandboxed child (`parse::ParseOptions::package`).

use std::fs;
use std::path::Path;

use super::archive::{self, ArchiveLimits};

/// The file a package root must hold.
pub const DEFINITION_FILE: &str = "SKILL.md";

/// What unpacking found.
#[derive(Debug, Default)]
pub struct Unpacked {
    pub files: usize,
    pub dirs: usize,
    pub bytes: u64,
    pub warnings: Vec<String>,
    /// Directories holding a `SKILL.md`, relative to `<work>/out`.
    pub packages: Vec<String>,
}

/// Where [`unpack`] puts the archive, under `<work>/out`.
pub const ROOT: &str = "package";

/// Unpack `input` under `<work>/out/package` and list in `packages` every directory holding a
/// `SKILL.md` (a directory that holds one is not searched further, `.git` never), as 0.5.2
/// finds the skills of a source. At most `max_nodes` files and directories and `max_bytes`.
pub fn unpack(
    input: &Path,
    work: &Path,
    limits: ArchiveLimits,
    max_nodes: usize,
    max_bytes: u64,
) -> Result<Unpacked, String> {
    let out = work.join("out");
    let top = out.join(ROOT);
    fs::create_dir_all(&top).map_err(|e| format!("scratch directory: {e}"))?;
    let mut report = Unpacked::default();
    archive::unpack(input, &top, limits, &mut report.warnings)?;
    count(&top, &mut report, max_nodes, max_bytes)?;
    let mut packages = Vec::new();
    find_packages(&top, ROOT, &mut packages)?;
    if packages.is_empty() {
        return Err(format!("the archive holds no {DEFINITION_FILE}"));
    }
    report.packages = packages;
    Ok(report)
}

fn find_packages(dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), String> {
    if dir.join(DEFINITION_FILE).is_file() {
        out.push(rel.to_string());
        return Ok(());
    }
    let mut subdirs: Vec<String> = fs::read_dir(dir)
        .map_err(|e| format!("scratch directory: {e}"))?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".git")
        .collect();
    subdirs.sort();
    for name in subdirs {
        find_packages(&dir.join(&name), &format!("{rel}/{name}"), out)?;
    }
    Ok(())
}

/// Count files, directories and bytes, refusing a package over the ingestion caps.
fn count(
    dir: &Path,
    report: &mut Unpacked,
    max_nodes: usize,
    max_bytes: u64,
) -> Result<(), String> {
    for entry in fs::read_dir(dir).map_err(|e| format!("scratch directory: {e}"))? {
        let entry = entry.map_err(|e| format!("scratch directory: {e}"))?;
        let meta = entry
            .metadata()
            .map_err(|e| format!("scratch directory: {e}"))?;
        if meta.is_dir() {
            report.dirs += 1;
            count(&entry.path(), report, max_nodes, max_bytes)?;
        } else {
            report.files += 1;
            report.bytes += meta.len();
        }
        if report.files + report.dirs > max_nodes {
            return Err(format!(
                "the package has more than {} files and directories",
                max_nodes
            ));
        }
        if report.bytes > max_bytes {
            return Err(format!("the package holds more than {} bytes", max_bytes));
        }
    }
    Ok(())
}
