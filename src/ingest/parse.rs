//! Turning one source (a document or a ZIP archive) into a document tree on local disk:
//! `<work>/out/<root>/…`. This is what the parser child process runs (see [`super::sandbox`]),
//! so a hostile PDF, HTML page or archive can only hurt that process.
//!
//! Layout (after OpenViking 0.5.2): a single document `guide.md` becomes `guide/guide.md`, or
//! `guide/<sections…>` when it is larger than the split budget; HTML and PDF are converted to
//! Markdown first; a code or unsupported file keeps its name (`main.rs/main.rs` would read
//! oddly, so the directory is the stem: `main/main.rs`). An archive (or an uploaded
//! directory) becomes `<name>/` with its tree, each file laid out as 0.5.2's directory import
//! does: a file 0.5.2 has a document parser for ([`parsed_in_directory`]: Markdown, `.txt`,
//! HTML, PDF) becomes a directory named after the document holding it as Markdown (or its
//! sections), exactly like a single file (`docs/a.md` → `docs/a/a.md`); every other file (code,
//! configuration, other text, unsupported formats) is stored unchanged under its own name.
//! A document directory meeting a folder of the same name merges into it; a file meeting one
//! already written is replaced by the later one (sorted order), with a warning. With
//! `preserve_structure: false` every document directory and file lands directly under the
//! root.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::archive::{self, ArchiveLimits};
use super::convert::{self, Kind};
use super::names::{deduplicate, doc_name, entry_name, stem};
use super::split::{self, Limits};

/// Directory names never imported (0.5.2's `IGNORE_DIRS`).
pub const IGNORE_DIRS: &[&str] = &[
    ".git",
    ".svn",
    ".hg",
    ".idea",
    ".vscode",
    "__pycache__",
    "node_modules",
    "venv",
    ".venv",
    "env",
    ".env",
    "dist",
    "build",
    "target",
    "bin",
    "obj",
    ".DS_Store",
];

/// What the caller asked for, passed to the child as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParseOptions {
    /// The original file name (decides the format and the root name).
    pub source_name: String,
    pub strict: bool,
    pub ignore_dirs: Option<String>,
    pub include: Option<String>,
    pub exclude: Option<String>,
    pub max_tokens: usize,
    pub archive: ArchiveLimits,
    /// Most files + directories the tree may have after splitting (`ingest_max_nodes`).
    pub max_nodes: usize,
    /// Most bytes the tree may hold after splitting (`ingest_max_bytes`).
    pub max_bytes: u64,
    /// Directories and archives keep their folders (0.5.2's default); false puts every
    /// document and file directly under the root.
    #[serde(default = "keep_structure")]
    pub preserve_structure: bool,
    /// A file package (a skill's ZIP): unpacked as is, see [`super::package`].
    #[serde(default)]
    pub package: bool,
}

fn keep_structure() -> bool {
    true
}

/// What the child reports on success.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ParseReport {
    /// Name of the single entry under `<work>/out` (always a directory).
    pub root: String,
    /// `markdown`, `text`, `code`, `html`, `pdf`, `directory`, `file`.
    pub source_format: String,
    pub files: usize,
    /// Directories of the tree below its root.
    #[serde(default)]
    pub dirs: usize,
    pub bytes: u64,
    pub warnings: Vec<String>,
    /// A file package: the directories holding a `SKILL.md` (see [`super::package`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
}

/// Parse `input` into `<work>/out/<root>/`.
pub fn parse_source(input: &Path, work: &Path, opts: &ParseOptions) -> Result<ParseReport, String> {
    if opts.package {
        let u = super::package::unpack(input, work, opts.archive, opts.max_nodes, opts.max_bytes)?;
        return Ok(ParseReport {
            root: super::package::ROOT.into(),
            source_format: "directory".into(),
            files: u.files,
            dirs: u.dirs,
            bytes: u.bytes,
            warnings: u.warnings,
            packages: u.packages,
        });
    }
    let out = work.join("out");
    fs::create_dir_all(&out).map_err(|e| format!("scratch directory: {e}"))?;
    let mut head = [0u8; 8];
    let n = {
        use std::io::Read;
        let mut f = fs::File::open(input).map_err(|e| format!("cannot read the source: {e}"))?;
        f.read(&mut head)
            .map_err(|e| format!("cannot read the source: {e}"))?
    };
    let kind = convert::kind_of(&opts.source_name, &head[..n]);
    let mut report = ParseReport::default();
    let limits = Limits::new(opts.max_tokens);
    if kind == Kind::Zip {
        let unpacked = work.join("unpacked");
        fs::create_dir_all(&unpacked).map_err(|e| format!("scratch directory: {e}"))?;
        archive::unpack(input, &unpacked, opts.archive, &mut report.warnings)?;
        let (src_root, name) = archive_root(&unpacked, &opts.source_name)?;
        let root = entry_name(&name).unwrap_or_else(|| "archive".into());
        let filters = Filters::new(opts)?;
        let tree_root = out.join(&root);
        let mut walk = Walk {
            opts,
            root: &tree_root,
            limits,
            filters,
            report: &mut report,
            unsupported: Vec::new(),
        };
        walk.dir(&src_root, &tree_root, "")?;
        let unsupported = std::mem::take(&mut walk.unsupported);
        if !unsupported.is_empty() {
            report.warnings.push(format!(
                "stored {} file(s) of unsupported formats unchanged: {}{}",
                unsupported.len(),
                unsupported
                    .iter()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                if unsupported.len() > 10 { ", …" } else { "" }
            ));
        }
        if report.files == 0 {
            return Err(
                "the archive has no importable files (all were empty, hidden, \
                        filtered out or skipped)"
                    .into(),
            );
        }
        report.root = root;
        report.source_format = "directory".into();
        return Ok(report);
    }
    let bytes = fs::read(input).map_err(|e| format!("cannot read the source: {e}"))?;
    if bytes.is_empty() {
        return Err("the source is empty".into());
    }
    let name = doc_name(stem(&opts.source_name), 50);
    let dir = out.join(&name);
    fs::create_dir_all(&dir).map_err(|e| format!("scratch directory: {e}"))?;
    report.root = name.clone();
    report.source_format = format_name(kind).into();
    match document_text(kind, &bytes) {
        Some(Ok(text)) => {
            for piece in split::layout(&text, &name, limits) {
                write(
                    &dir.join(&piece.path),
                    piece.text.as_bytes(),
                    &mut report,
                    opts,
                )?;
            }
        }
        Some(Err(e)) => return Err(e),
        None => {
            if opts.strict {
                return Err(format!(
                    "unsupported format: {} (strict mode refuses files it cannot parse)",
                    opts.source_name
                ));
            }
            if kind != Kind::Code {
                report.warnings.push(format!(
                    "{} is not a supported document format; stored unchanged",
                    opts.source_name
                ));
                report.source_format = "file".into();
            }
            let file = entry_name(&opts.source_name).unwrap_or_else(|| "file".into());
            write(&dir.join(file), &bytes, &mut report, opts)?;
        }
    }
    Ok(report)
}

fn format_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Markdown => "markdown",
        Kind::Text => "text",
        Kind::Code => "code",
        Kind::Html => "html",
        Kind::Pdf => "pdf",
        Kind::Zip => "directory",
        Kind::Other => "file",
    }
}

/// The Markdown text of a document (`None`: store the bytes unchanged).
fn document_text(kind: Kind, bytes: &[u8]) -> Option<Result<String, String>> {
    match kind {
        Kind::Markdown | Kind::Text => Some(convert::decode_text(bytes).ok_or_else(|| {
            "the document is neither UTF-8 nor UTF-16 text; convert it to UTF-8".to_string()
        })),
        Kind::Html => Some(
            convert::decode_text(bytes)
                .ok_or_else(|| "the HTML page is neither UTF-8 nor UTF-16".to_string())
                .and_then(|h| convert::html_to_markdown(&h)),
        ),
        Kind::Pdf => Some(convert::pdf_to_text(bytes)),
        Kind::Code | Kind::Zip | Kind::Other => None,
    }
}

/// The directory an archive's tree starts at and the resource name, after 0.5.2: one
/// top-level directory named like the archive (or no source name) is the root itself;
/// otherwise the archive's own name (without `.zip`) holds everything.
fn archive_root(unpacked: &Path, source_name: &str) -> Result<(PathBuf, String), String> {
    let entries: Vec<_> = fs::read_dir(unpacked)
        .map_err(|e| format!("scratch directory: {e}"))?
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    let leaf = source_name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(source_name);
    let name = leaf
        .strip_suffix(".zip")
        .or_else(|| leaf.strip_suffix(".ZIP"))
        .unwrap_or(leaf);
    if let [only] = entries.as_slice() {
        let only_name = only.file_name().to_string_lossy().into_owned();
        if only.path().is_dir() && (name.is_empty() || name == only_name || stem(name) == only_name)
        {
            return Ok((only.path(), only_name));
        }
    }
    let name = if name.is_empty() { "archive" } else { name };
    Ok((unpacked.to_path_buf(), name.to_string()))
}

/// include / exclude / ignore_dirs as 0.5.2 reads them: comma-separated; include and
/// exclude globs match the file name; an exclude ending in `/` is a path prefix; an ignore_dirs
/// entry without `/` matches a directory name anywhere, with `/` a path from the root.
struct Filters {
    include: Option<globset::GlobSet>,
    exclude: Option<globset::GlobSet>,
    exclude_prefixes: Vec<String>,
    ignore_names: Vec<String>,
    ignore_paths: Vec<String>,
}

fn patterns(v: &Option<String>) -> Vec<String> {
    v.as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn glob_set(pats: &[String], field: &str) -> Result<Option<globset::GlobSet>, String> {
    if pats.is_empty() {
        return Ok(None);
    }
    let mut b = globset::GlobSetBuilder::new();
    for p in pats {
        b.add(
            globset::GlobBuilder::new(p)
                .literal_separator(false)
                .build()
                .map_err(|e| format!("invalid {field} pattern {p:?}: {e}"))?,
        );
    }
    b.build()
        .map(Some)
        .map_err(|e| format!("invalid {field} patterns: {e}"))
}

impl Filters {
    fn new(opts: &ParseOptions) -> Result<Filters, String> {
        let excl = patterns(&opts.exclude);
        let (prefixes, globs): (Vec<String>, Vec<String>) =
            excl.into_iter().partition(|p| p.ends_with('/'));
        let ignore = patterns(&opts.ignore_dirs);
        let (paths, names): (Vec<String>, Vec<String>) =
            ignore.into_iter().partition(|p| p.contains('/'));
        Ok(Filters {
            include: glob_set(&patterns(&opts.include), "include")?,
            exclude: glob_set(&globs, "exclude")?,
            exclude_prefixes: prefixes
                .iter()
                .map(|p| p.trim_end_matches('/').replace('\\', "/"))
                .collect(),
            ignore_names: names,
            ignore_paths: paths
                .iter()
                .map(|p| p.trim_end_matches('/').trim_start_matches("./").to_string())
                .filter(|p| !p.is_empty())
                .collect(),
        })
    }

    fn skip_dir(&self, name: &str, rel: &str) -> bool {
        IGNORE_DIRS.contains(&name)
            || self.ignore_names.iter().any(|n| n == name)
            || self
                .ignore_paths
                .iter()
                .any(|p| rel == p || rel.starts_with(&format!("{p}/")))
    }

    fn skip_file(&self, name: &str, rel: &str) -> bool {
        if let Some(inc) = &self.include {
            if !inc.is_match(name) {
                return true;
            }
        }
        if self.exclude.as_ref().is_some_and(|x| x.is_match(name)) {
            return true;
        }
        self.exclude_prefixes
            .iter()
            .any(|p| rel == p || rel.starts_with(&format!("{p}/")))
    }
}

struct Walk<'a> {
    opts: &'a ParseOptions,
    /// The tree's root on disk (warnings name paths below it).
    root: &'a Path,
    limits: Limits,
    filters: Filters,
    report: &'a mut ParseReport,
    unsupported: Vec<String>,
}

impl Walk<'_> {
    /// Directories are created when a file lands in them, so filtered-out trees leave no
    /// empty directories behind.
    fn dir(&mut self, src: &Path, dest: &Path, rel: &str) -> Result<(), String> {
        let mut entries: Vec<_> = fs::read_dir(src)
            .map_err(|e| format!("scratch directory: {e}"))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_symlink() {
                continue;
            }
            if ft.is_dir() {
                if self.filters.skip_dir(&name, &child_rel) {
                    continue;
                }
                // Flat: the folder's files land in `dest` itself.
                let sub = if self.opts.preserve_structure {
                    self.subdir(dest, &name)
                } else {
                    dest.to_path_buf()
                };
                self.dir(&entry.path(), &sub, &child_rel)?;
                continue;
            }
            if self.filters.skip_file(&name, &child_rel) {
                continue;
            }
            self.file(&entry.path(), dest, &name, &child_rel)?;
        }
        Ok(())
    }

    /// Where a folder (or a document's directory) named `name` goes under `dest`: merged
    /// into a directory of that name, renamed (`name_1`) only when a file holds the name.
    fn subdir(&mut self, dest: &Path, name: &str) -> PathBuf {
        let stored = deduplicate(name, false, |n| dest.join(n).is_file());
        dest.join(stored)
    }

    fn file(&mut self, path: &Path, dest: &Path, name: &str, rel: &str) -> Result<(), String> {
        let bytes = fs::read(path).map_err(|e| format!("scratch directory: {e}"))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let kind = convert::kind_of(name, &bytes[..bytes.len().min(8)]);
        if kind == Kind::Zip {
            self.report.warnings.push(format!(
                "skipped nested archive {rel} (archives are unpacked one level)"
            ));
            return Ok(());
        }
        if !parsed_in_directory(name) {
            if kind == Kind::Other {
                if self.opts.strict {
                    return Err(format!(
                        "unsupported file {rel} (strict mode refuses files it cannot parse)"
                    ));
                }
                self.unsupported.push(rel.to_string());
            }
            let stored = deduplicate(name, true, |n| dest.join(n).is_dir());
            return self.put(&dest.join(stored), &bytes, rel);
        }
        let text = match document_text(kind, &bytes) {
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                if self.opts.strict {
                    return Err(format!("cannot parse {rel}: {e}"));
                }
                self.report
                    .warnings
                    .push(format!("Failed to parse {rel}: {e}"));
                return Ok(());
            }
            // A `.pdf` that is not a PDF: stored as it came, like an unsupported file.
            None => return self.put(&dest.join(name), &bytes, rel),
        };
        let doc = doc_name(stem(name), 50);
        let home = self.subdir(dest, &doc);
        for piece in split::layout(&text, &doc, self.limits) {
            self.put(&home.join(&piece.path), piece.text.as_bytes(), rel)?;
        }
        Ok(())
    }

    /// Write one file of the tree; a file already there (two sources meeting at one name) is
    /// replaced, as 0.5.2's merge does, and named in a warning.
    fn put(&mut self, path: &Path, data: &[u8], rel: &str) -> Result<(), String> {
        if path.is_file() {
            let shown = path
                .strip_prefix(self.root)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| rel.to_string());
            self.report.warnings.push(format!(
                "{rel} replaced {shown}, written before it under the same name"
            ));
            self.report.files = self.report.files.saturating_sub(1);
        }
        write(path, data, self.report, self.opts)
    }
}

/// Whether 0.5.2 runs a document parser on this file inside a directory or archive (by
/// extension, as its parser registry does: Markdown, `.txt`/`.text`, HTML, PDF); such a file
/// becomes a directory named after the document. Everything else is stored as it is.
pub fn parsed_in_directory(name: &str) -> bool {
    matches!(
        super::names::extension(name).as_str(),
        "md" | "markdown" | "mdown" | "mkd" | "txt" | "text" | "html" | "htm" | "pdf"
    )
}

/// Write one file of the tree, counting it (and the directories it creates) against the
/// caps of one ingestion: splitting can multiply a small source into many sections, so the
/// caps apply to what is produced, not to what came in.
fn write(
    path: &Path,
    data: &[u8],
    report: &mut ParseReport,
    opts: &ParseOptions,
) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        report.dirs += parent.ancestors().take_while(|a| !a.exists()).count();
        fs::create_dir_all(parent).map_err(|e| format!("scratch directory: {e}"))?;
    }
    report.files += 1;
    report.bytes += data.len() as u64;
    if report.files + report.dirs > opts.max_nodes {
        return Err(format!(
            "the document tree would have more than {} files and directories \
             (resources.ingest_max_nodes)",
            opts.max_nodes
        ));
    }
    if report.bytes > opts.max_bytes {
        return Err(format!(
            "the document tree would hold more than {} bytes (resources.ingest_max_bytes)",
            opts.max_bytes
        ));
    }
    fs::write(path, data).map_err(|e| format!("scratch directory: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn opts(name: &str) -> ParseOptions {
        ParseOptions {
            source_name: name.into(),
            strict: false,
            ignore_dirs: None,
            include: None,
            exclude: None,
            max_tokens: 1024,
            archive: ArchiveLimits {
                max_entries: 1000,
                max_total_bytes: 1 << 30,
                max_ratio: 200,
                max_depth: 32,
            },
            max_nodes: 10_000,
            max_bytes: 1 << 30,
            preserve_structure: true,
            package: false,
        }
    }

    #[test]
    fn single_markdown_lands_in_a_directory_of_its_name() {
        let work = tempfile::tempdir().unwrap();
        let input = work.path().join("in");
        fs::write(&input, "# Guide\n\nHello.").unwrap();
        let r = parse_source(&input, work.path(), &opts("User Guide.md")).unwrap();
        assert_eq!(r.root, "User_Guide");
        assert!(work.path().join("out/User_Guide/User_Guide.md").is_file());
    }

    #[test]
    fn archives_honour_filters() {
        let work = tempfile::tempdir().unwrap();
        let input = work.path().join("in");
        let mut w = zip::ZipWriter::new(fs::File::create(&input).unwrap());
        for (name, data) in [
            ("a.md", "# A"),
            ("src/main.rs", "fn main() {}"),
            ("node_modules/x.js", "x"),
            ("drafts/d.md", "d"),
            ("notes.tmp", "t"),
            (".hidden", "h"),
        ] {
            w.start_file(name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(data.as_bytes()).unwrap();
        }
        w.finish().unwrap();
        let mut o = opts("proj");
        o.exclude = Some("*.tmp,drafts/".into());
        let r = parse_source(&input, work.path(), &o).unwrap();
        assert_eq!(r.root, "proj");
        assert_eq!(r.files, 2, "{r:?}");
        let root = work.path().join("out/proj");
        assert!(root.join("a/a.md").is_file() && root.join("src/main.rs").is_file());
        assert!(!root.join("node_modules").exists() && !root.join("drafts").exists());
    }

    fn zip_of(path: &Path, entries: &[(&str, &str)]) {
        let mut w = zip::ZipWriter::new(fs::File::create(path).unwrap());
        for (name, data) in entries {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(data.as_bytes()).unwrap();
        }
        w.finish().unwrap();
    }

    /// Every file under `root`, relative, sorted.
    fn files_under(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    let rel = e.path().strip_prefix(root).unwrap().to_owned();
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn directories_lay_documents_out_as_0_5_2() {
        let entries = [
            ("docs/Getting Started.md", "# Start\n\nHello."),
            ("docs/notes.txt", "plain notes"),
            ("docs/page.html", "<h1>Page</h1><p>Body text.</p>"),
            ("docs/api.md", "# API\n\nThe API."),
            ("docs/api/auth.md", "# Auth\n\nKeys."),
            ("src/main.rs", "fn main() {}"),
            ("data.csv", "a,b\n1,2"),
            ("same.md", "# First"),
            ("same.txt", "second"),
        ];
        let work = tempfile::tempdir().unwrap();
        let input = work.path().join("in");
        zip_of(&input, &entries);
        let r = parse_source(&input, work.path(), &opts("proj.zip")).unwrap();
        assert_eq!(r.root, "proj");
        assert_eq!(
            files_under(&work.path().join("out/proj")),
            [
                "data.csv",
                "docs/Getting_Started/Getting_Started.md",
                "docs/api/api.md",
                "docs/api/auth/auth.md",
                "docs/notes/notes.md",
                "docs/page/page.md",
                "same/same.md",
                "src/main.rs",
            ]
        );
        // Two documents meeting at one name: the later one replaces the earlier, named.
        let same = fs::read_to_string(work.path().join("out/proj/same/same.md")).unwrap();
        assert_eq!(same.trim(), "second");
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("same.txt replaced same/same.md")),
            "{:?}",
            r.warnings
        );
        assert_eq!(r.files, 8, "{r:?}");

        // Flat: every document directory and file directly under the root.
        let work = tempfile::tempdir().unwrap();
        let input = work.path().join("in");
        zip_of(&input, &entries);
        let mut o = opts("proj.zip");
        o.preserve_structure = false;
        parse_source(&input, work.path(), &o).unwrap();
        assert_eq!(
            files_under(&work.path().join("out/proj")),
            [
                "Getting_Started/Getting_Started.md",
                "api/api.md",
                "auth/auth.md",
                "data.csv",
                "main.rs",
                "notes/notes.md",
                "page/page.md",
                "same/same.md",
            ]
        );
    }

    #[test]
    fn splitting_is_capped_in_nodes_and_bytes() {
        let work = tempfile::tempdir().unwrap();
        let input = work.path().join("in");
        let doc: String = (0..400)
            .map(|i| format!("# Part {i}\n\n{}\n\n", "word ".repeat(900)))
            .collect();
        fs::write(&input, &doc).unwrap();
        let mut o = opts("big.md");
        o.max_nodes = 100;
        let err = parse_source(&input, work.path(), &o).unwrap_err();
        assert!(err.contains("ingest_max_nodes"), "{err}");
        let work = tempfile::tempdir().unwrap();
        let input = work.path().join("in");
        fs::write(&input, &doc).unwrap();
        let mut o = opts("big.md");
        o.max_bytes = 100_000;
        let err = parse_source(&input, work.path(), &o).unwrap_err();
        assert!(err.contains("ingest_max_bytes"), "{err}");
    }
}
