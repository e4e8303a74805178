//! The layering rules of docs/ARCHITECTURE.md, checked on every `cargo test`: each module's
//! `crate::`/`super::`/`self::` paths (outside comments and its test module) are resolved to the
//! file they name; an import into a higher layer, or a cycle between files or between
//! top-level areas, fails the test with the offending file and path.

// A test binary: a source file it cannot read is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level areas by layer, lowest first. A module may import its own layer or lower ones;
/// within a layer the areas must not import each other in a cycle.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "leaves",
        &[
            "error",
            "decode",
            "time",
            "identity",
            "config",
            "telemetry",
            "reserved",
            "text",
            "net",
            "slots",
        ],
    ),
    ("storage", &["storage"]),
    (
        "domain",
        &["search", "ingest", "memory", "skills", "snapshot"],
    ),
    ("jobs", &["jobs"]),
    ("actors", &["actors"]),
    ("http", &["http"]),
    ("wiring", &["startup", "cli", "lib", "main"]),
];

/// Allowed exceptions (importing area, imported module): `ServiceError` converts from the
/// storage error type declared at the root of `storage` (nothing else of storage).
const EXCEPTIONS: &[(&str, &str)] = &[("error", "storage")];

fn layer_of(area: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, areas)| areas.contains(&area))
}

fn area_of(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// Code without comments, string contents and `#[cfg(test)]` modules (tests may import
/// anything; doc comments naming a path are not imports).
fn strip(text: &str) -> String {
    without_test_modules(&without_comments(text))
}

/// Drop every `#[cfg(test)] mod name { … }` block (braces matched; strings are already gone).
fn without_test_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        if !trimmed.starts_with("mod ") {
            rest = after;
            continue;
        }
        let body = &after[after.len() - trimmed.len()..];
        let Some(open) = body.find(['{', ';']) else {
            return out;
        };
        if body.as_bytes()[open] == b';' {
            rest = &body[open + 1..];
            continue;
        }
        let mut depth = 0usize;
        let mut end = body.len();
        for (i, b) in body.bytes().enumerate().skip(open) {
            match b {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &body[end..];
    }
    out.push_str(rest);
    out
}

/// Code with comments removed and string literals emptied.
fn without_comments(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if code[i..].starts_with("//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if code[i..].starts_with("/*") {
            match code[i + 2..].find("*/") {
                Some(end) => i += end + 4,
                None => break,
            }
        } else if let Some(len) = char_literal(&code[i..]) {
            // `'"'` and `'{'` are neither strings nor braces.
            i += len;
            out.push_str("' '");
        } else if code[i..].starts_with("r#\"") {
            match code[i + 3..].find("\"#") {
                Some(end) => i += end + 5,
                None => break,
            }
            out.push_str("\"\"");
        } else if bytes[i] == b'"' {
            // String literals may contain `crate::` text; skip them (escapes included).
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(bytes.len());
            out.push_str("\"\"");
        } else {
            let ch = code[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// The length of the character literal `s` starts with (`'x'`, `'\\n'`, `'\\u{..}'`), if
/// it starts with one rather than a lifetime.
fn char_literal(s: &str) -> Option<usize> {
    let rest = s.strip_prefix('\'')?;
    if let Some(escaped) = rest.strip_prefix('\\') {
        let close = escaped.get(1..)?.find('\'')?;
        return Some(close + 4);
    }
    let c = rest.chars().next()?;
    rest[c.len_utf8()..]
        .starts_with('\'')
        .then_some(c.len_utf8() + 2)
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Parse a path tree starting at `s` (after `head::`): `a::b`, `a::{b, c::{d}}`, `a::*`.
/// Returns the leaf paths (segments joined by `::`) and how many bytes were read.
fn path_tree(s: &str) -> (Vec<String>, usize) {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut prefix: Vec<&str> = Vec::new();
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'{' {
            i += 1;
            let mut leaves = Vec::new();
            loop {
                let (sub, used) = path_tree(&s[i..]);
                i += used;
                for leaf in sub {
                    let mut full = prefix.join("::");
                    if !leaf.is_empty() && leaf != "self" {
                        if !full.is_empty() {
                            full.push_str("::");
                        }
                        full.push_str(&leaf);
                    }
                    leaves.push(full);
                }
                while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                match bytes.get(i) {
                    Some(b',') => i += 1,
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => break,
                }
            }
            return (leaves, i);
        }
        let start = i;
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        if i == start {
            return (vec![prefix.join("::")], i);
        }
        prefix.push(&s[start..i]);
        if s[i..].starts_with("::") {
            i += 2;
        } else {
            return (vec![prefix.join("::")], i);
        }
    }
}

/// Every `crate::`, `super::` and `self::` path in `code`, as (head, rest).
fn paths(code: &str) -> Vec<(String, String)> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    for head in ["crate", "super", "self"] {
        let needle = format!("{head}::");
        let mut from = 0;
        while let Some(pos) = code[from..].find(&needle) {
            let at = from + pos;
            from = at + needle.len();
            if at > 0 && is_ident(bytes[at - 1]) {
                continue;
            }
            // `super::super::x`: keep the whole chain in `rest`.
            let (leaves, _) = path_tree(&code[from..]);
            for leaf in leaves {
                out.push((head.to_string(), leaf));
            }
        }
    }
    out
}

struct Graph {
    /// module path -> modules it imports (resolved to files).
    edges: BTreeMap<String, BTreeSet<String>>,
    /// module path -> imported path as written, per resolved target (for messages).
    via: BTreeMap<(String, String), String>,
}

/// `sources`: module path (`http::search`, `lib`) -> file text.
fn graph(sources: &BTreeMap<String, String>) -> Graph {
    let resolve = |target: &str| -> Option<String> {
        let mut parts: Vec<&str> = target.split("::").filter(|s| !s.is_empty()).collect();
        while !parts.is_empty() {
            let m = parts.join("::");
            if sources.contains_key(&m) {
                return Some(m);
            }
            parts.pop();
        }
        None
    };
    let mut edges = BTreeMap::new();
    let mut via = BTreeMap::new();
    for (module, text) in sources {
        let here: Vec<&str> = if module == "lib" || module == "main" {
            Vec::new()
        } else {
            module.split("::").collect()
        };
        let mut deps = BTreeSet::new();
        for (head, rest) in paths(&strip(text)) {
            let target = match head.as_str() {
                "crate" => rest.clone(),
                "self" => {
                    let mut t = here.join("::");
                    if !t.is_empty() {
                        t.push_str("::");
                    }
                    t + &rest
                }
                _ => {
                    let mut up: Vec<&str> = here[..here.len().saturating_sub(1)].to_vec();
                    let mut segs: Vec<&str> = rest.split("::").collect();
                    while segs.first() == Some(&"super") {
                        up.pop();
                        segs.remove(0);
                    }
                    up.extend(segs);
                    up.join("::")
                }
            };
            let Some(r) = resolve(&target) else { continue };
            if &r == module || module.starts_with(&format!("{r}::")) || r == "lib" || r == "main" {
                continue;
            }
            via.entry((module.clone(), r.clone()))
                .or_insert(format!("{head}::{rest}"));
            deps.insert(r);
        }
        edges.insert(module.clone(), deps);
    }
    Graph { edges, via }
}

/// Strongly connected components with more than one member (Tarjan, iterative enough for
/// a crate's module count).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn strong<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on.insert(v);
        if let Some(ws) = s.edges.get(v) {
            for w in ws {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    strong(s, w);
                    let lw = s.low[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(lw));
                } else if s.on.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(iw));
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            strong(&mut s, v.as_str());
        }
    }
    s.out
}

/// Every problem found, one line each.
fn check(sources: &BTreeMap<String, String>) -> Vec<String> {
    let g = graph(sources);
    let mut problems = Vec::new();
    let mut areas: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, deps) in &g.edges {
        let from = area_of(module);
        let Some(from_layer) = layer_of(from) else {
            problems.push(format!(
                "layer: top-level module `{from}` is in no layer of tests/layering.rs LAYERS"
            ));
            continue;
        };
        for dep in deps {
            let to = area_of(dep);
            if to == from {
                continue;
            }
            if EXCEPTIONS.contains(&(from, dep.as_str())) {
                continue;
            }
            areas
                .entry(from.to_string())
                .or_default()
                .insert(to.to_string());
            if layer_of(to).is_some_and(|to_layer| to_layer > from_layer) {
                problems.push(format!(
                    "layer: {module} imports {} (`{to}` is above `{from}`)",
                    g.via[&(module.clone(), dep.clone())]
                ));
            }
        }
    }
    // A parent module re-exporting its children is not a cycle.
    for comp in cycles(&g.edges) {
        let nested = comp.iter().all(|x| {
            comp.iter().any(|o| {
                o != x && (o.starts_with(&format!("{x}::")) || x.starts_with(&format!("{o}::")))
            })
        });
        if !nested {
            problems.push(format!("cycle: {}", comp.join(" <-> ")));
        }
    }
    for comp in cycles(&areas) {
        problems.push(format!("cycle between areas: {}", comp.join(" <-> ")));
    }
    problems
}

fn load(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            load(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).expect("under src");
            let mut module = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("::");
            if let Some(parent) = module.strip_suffix("::mod") {
                module = parent.to_string();
            }
            let text = std::fs::read_to_string(&path).expect("readable source");
            out.insert(module, text);
        }
    }
}

#[test]
fn imports_point_down_and_close_no_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = BTreeMap::new();
    load(&root, &root, &mut sources);
    assert!(sources.len() > 50, "found {} modules", sources.len());
    let problems = check(&sources);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn crate_of(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(m, t)| (m.to_string(), t.to_string()))
        .collect()
}

#[test]
fn an_upward_import_is_reported() {
    let sources = crate_of(&[
        ("lib", "pub mod http; pub mod storage;"),
        ("http", "use crate::storage::Store;"),
        ("storage", "use crate::{error::E, http::{self, AppState}};"),
        ("error", ""),
    ]);
    let problems = check(&sources);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("layer: storage imports crate::http")),
        "{problems:?}"
    );
}

#[test]
fn a_cycle_between_areas_is_reported() {
    let sources = crate_of(&[
        ("search", "use crate::ingest::split::Piece;"),
        ("ingest", ""),
        ("ingest::split", "use super::super::search::Hit;"),
    ]);
    let problems = check(&sources);
    assert!(
        problems.iter().any(|p| p.contains("cycle between areas")),
        "{problems:?}"
    );
}

#[test]
fn comments_strings_and_tests_are_not_imports() {
    let sources = crate_of(&[
        (
            "storage",
            "//! see crate::http::x\nconst S: &str = \"crate::http\";\n\
             #[cfg(test)]\nmod tests { use crate::http::y; fn f() { let _ = '{'; } }\n\
             pub use crate::error::E;",
        ),
        ("http", "use crate::storage::S;"),
        ("error", ""),
    ]);
    assert!(check(&sources).is_empty());
    // Code after a test module is still checked.
    let sources = crate_of(&[
        (
            "storage",
            "#[cfg(test)]\nmod tests { }\npub use crate::actors::Pools;",
        ),
        ("actors", ""),
    ]);
    assert!(!check(&sources).is_empty());
}
