//! Pack export/import/backup/restore (issue #22) through the real binary, on either backend:
//! round trip byte-identical (files, sidecars, tags), conflict policies, backup → wipe →
//! restore, hostile packs refused with nothing written, kill -9 during an import.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::api::{create_account, ok, q};
use crate::harness::{Opts, Resp, Server, Storage};
use crate::resources::upload_id;

const EXPORT: &str = "/api/v1/pack/export";
const IMPORT: &str = "/api/v1/pack/import";
const BACKUP: &str = "/api/v1/pack/backup";
const RESTORE: &str = "/api/v1/pack/restore";

fn write(s: &Server, key: &str, uri: &str, content: &str) {
    let r = s.post(
        "/api/v1/content/write",
        Some(key),
        json!({"uri": uri, "content": content, "mode": "create", "wait": true}),
    );
    assert_eq!(r.status, 200, "write {uri}: {:?}", r.body);
}

fn tags_of(s: &Server, key: &str, uri: &str) -> Value {
    let r = s.get(&format!("/api/v1/fs/attrs?uri={}", q(uri)), Some(key));
    ok(&r)["attrs"]["tags"].clone()
}

/// A tree with nested files, a described directory (sidecars) and tags.
fn seed(s: &Server, key: &str) {
    let r = s.post(
        "/api/v1/fs/mkdir",
        Some(key),
        json!({"uri": "viking://resources/proj/docs", "description": "Project docs"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    write(
        s,
        key,
        "viking://resources/proj/readme.md",
        "# Proj\n\nhello pack\n",
    );
    write(
        s,
        key,
        "viking://resources/proj/docs/guide.md",
        "guide ünïcode ✓\n",
    );
    write(s, key, "viking://resources/proj/docs/deep/x.txt", "deep\n");
    for (uri, tag) in [
        ("viking://resources/proj/readme.md", "team=core"),
        ("viking://resources/proj/docs", "kind=docs"),
    ] {
        let r = s.post(
            "/api/v1/content/set_tags",
            Some(key),
            json!({"uri": uri, "tags": [tag]}),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
}

fn export(s: &Server, key: &str, uri: &str) -> Vec<u8> {
    let r = s.post(EXPORT, Some(key), json!({"uri": uri}));
    assert_eq!(r.status, 200, "export {uri}: {:?}", r.body);
    assert_eq!(r.header("content-type"), Some("application/zip"));
    r.raw
}

fn import(s: &Server, key: &str, pack: &[u8], body: Value) -> Resp {
    let id = upload_id(s, key, "p.ovpack", pack);
    let mut body = body;
    body["temp_file_id"] = json!(id);
    s.post(IMPORT, Some(key), body)
}

/// Content of every file under `rel` (relative path → bytes), sidecars included.
fn files(st: &Storage, rel: &str) -> std::collections::BTreeMap<String, String> {
    st.at(rel)
        .digest()
        .into_iter()
        .filter(|(k, _)| !k.ends_with('/'))
        .collect()
}

fn names(pack: &[u8]) -> Vec<String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(pack.to_vec())).unwrap();
    (0..zip.len())
        .map(|i| zip.by_index_raw(i).unwrap().name().unwrap().into_owned())
        .collect()
}

fn manifest(pack: &[u8]) -> Value {
    let name = names(pack)
        .into_iter()
        .find(|n| n.ends_with("/_ovpack/manifest.json"))
        .unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(pack.to_vec())).unwrap();
    let mut s = String::new();
    zip.by_name(&name).unwrap().read_to_string(&mut s).unwrap();
    serde_json::from_str(&s).unwrap()
}

#[test]
fn export_import_round_trip_is_byte_identical_with_tags() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let key = create_account(&s, "acme", "ann");
    seed(&s, &key);
    let pack = export(&s, &key, "viking://resources/proj");
    let listed = names(&pack);
    assert_eq!(listed.first().map(String::as_str), Some("proj/"));
    assert_eq!(
        listed.last().map(String::as_str),
        Some("proj/_ovpack/manifest.json"),
        "manifest last: {listed:?}"
    );
    assert!(
        listed.contains(&"proj/files/docs/.abstract.md".to_string()),
        "{listed:?}"
    );
    let m = manifest(&pack);
    assert_eq!(m["format_version"], 3);
    assert_eq!(m["kind"], "openviking.ovpack");
    assert_eq!(m["root"]["uri"], "viking://resources/proj");

    let r = import(
        &s,
        &key,
        &pack,
        json!({"parent": "viking://resources/copy"}),
    );
    assert_eq!(ok(&r)["uri"], "viking://resources/copy/proj");
    let original = files(&st, "acme/resources/proj");
    assert!(original.len() >= 4, "{original:?}");
    assert_eq!(files(&st, "acme/resources/copy/proj"), original);
    assert_eq!(
        tags_of(&s, &key, "viking://resources/copy/proj/readme.md"),
        json!(["team=core"])
    );
    assert_eq!(
        tags_of(&s, &key, "viking://resources/copy/proj/docs"),
        json!(["kind=docs"])
    );
    // Findable after the import (indexing follows the publish).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s.post(
            "/api/v1/search/find",
            Some(&key),
            json!({"query": "hello pack", "target_uri": "viking://resources/copy"}),
        );
        let hits = ok(&r)["resources"].as_array().cloned().unwrap_or_default();
        if hits
            .iter()
            .any(|h| h["uri"] == "viking://resources/copy/proj/readme.md")
        {
            break;
        }
        assert!(Instant::now() < deadline, "never findable: {:?}", r.body);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The index records of a pack, one JSON object a line.
fn records(pack: &[u8]) -> Vec<Value> {
    let name = names(pack)
        .into_iter()
        .find(|n| n.ends_with("/_ovpack/index_records.jsonl"))
        .unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(pack.to_vec())).unwrap();
    let mut s = String::new();
    zip.by_name(&name).unwrap().read_to_string(&mut s).unwrap();
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every file gets a level-2 record carrying the abstract Longship's index holds for it, as
/// 0.5.2 writes one per indexed file (0.5.2 importing a pack shows a file's abstract only
/// from its record: without one its hits had none); a directory's record carries its
/// summary's body as `abstract` (no front matter) and the whole sidecar as `text`.
#[test]
fn records_carry_the_abstracts_the_index_holds() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let key = create_account(&s, "acme", "ann");
    seed(&s, &key);
    let recs = records(&export(&s, &key, "viking://resources/proj"));
    let record = |path: &str, level: i64| {
        recs.iter()
            .find(|r| r["path"] == path && r["level"] == level)
            .cloned()
            .unwrap_or_else(|| panic!("no level-{level} record of {path:?}: {recs:?}"))
    };
    let readme = record("readme.md", 2);
    assert_eq!(readme["kind"], "file");
    assert_eq!(readme["scalars"]["context_type"], "resource");
    assert_eq!(readme["scalars"]["level"], 2);
    assert_eq!(readme["scalars"]["search_tags"], json!(["team=core"]));
    // Untagged files, without vectors, have records too.
    assert_eq!(record("docs/deep/x.txt", 2)["scalars"]["abstract"], "deep");
    assert_eq!(
        record("docs/guide.md", 2)["scalars"]["abstract"],
        "guide ünïcode ✓"
    );
    // The abstract is the one Longship's own find shows for the file.
    let deadline = Instant::now() + Duration::from_secs(30);
    let shown = loop {
        let r = s.post(
            "/api/v1/search/find",
            Some(&key),
            json!({"query": "hello pack", "target_uri": "viking://resources/proj"}),
        );
        let hits = ok(&r)["resources"].as_array().cloned().unwrap_or_default();
        if let Some(h) = hits
            .iter()
            .find(|h| h["uri"] == "viking://resources/proj/readme.md")
        {
            break h["abstract"].clone();
        }
        assert!(Instant::now() < deadline, "never findable: {:?}", r.body);
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(readme["scalars"]["abstract"], shown);
    assert_eq!(shown, "# Proj hello pack");
    let docs = record("docs", 0);
    let text = docs["text"].as_str().unwrap();
    let summary = docs["scalars"]["abstract"].as_str().unwrap();
    assert!(text.starts_with("---\n"), "{text:?}");
    assert!(
        !summary.is_empty() && !summary.starts_with("---"),
        "{summary:?}"
    );
    assert!(
        text.trim_end().ends_with(summary.trim_end()),
        "{text:?} / {summary:?}"
    );
}

#[test]
fn conflict_policies_apply_to_the_whole_root() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let key = create_account(&s, "acme", "ann");
    seed(&s, &key);
    let pack = export(&s, &key, "viking://resources/proj");
    let r = import(&s, &key, &pack, json!({"parent": "viking://resources/c"}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    write(
        &s,
        &key,
        "viking://resources/c/proj/extra.md",
        "added later\n",
    );
    let before = files(&st, "acme/resources/c/proj");
    // fail (default): 409, nothing changes.
    let r = import(&s, &key, &pack, json!({"parent": "viking://resources/c"}));
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(files(&st, "acme/resources/c/proj"), before);
    // skip: the existing root's uri, nothing changes.
    let r = import(
        &s,
        &key,
        &pack,
        json!({"parent": "viking://resources/c", "on_conflict": "skip"}),
    );
    assert_eq!(ok(&r)["uri"], "viking://resources/c/proj");
    assert_eq!(files(&st, "acme/resources/c/proj"), before);
    // overwrite: replaced whole (the later file is gone).
    let r = import(
        &s,
        &key,
        &pack,
        json!({"parent": "viking://resources/c", "on_conflict": "overwrite"}),
    );
    assert_eq!(ok(&r)["uri"], "viking://resources/c/proj");
    assert_eq!(
        files(&st, "acme/resources/c/proj"),
        files(&st, "acme/resources/proj")
    );
    // A bad policy is a 400.
    let r = import(
        &s,
        &key,
        &pack,
        json!({"parent": "viking://resources/c", "on_conflict": "merge"}),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    // vector_mode=require: this pack carries no vectors.
    let r = import(
        &s,
        &key,
        &pack,
        json!({"parent": "viking://resources/d", "vector_mode": "require"}),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(!st.exists("acme/resources/d/proj"));
}

#[test]
fn backup_wipe_restore() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let key = create_account(&s, "acme", "ann");
    seed(&s, &key);
    write(
        &s,
        &key,
        "viking://user/ann/resources/notes/n.md",
        "my note\n",
    );
    let r = s.post(BACKUP, Some(&key), json!({}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let pack = r.raw;
    let m = manifest(&pack);
    assert_eq!(m["root"]["package_type"], "backup");
    assert_eq!(m["scopes"], json!(["resources", "user"]));
    let res_before = files(&st, "acme/resources");
    let user_before = files(&st, "acme/user/ann/resources/notes");
    // Wipe.
    let r = s.delete(
        &format!(
            "/api/v1/fs?uri={}&recursive=true",
            q("viking://resources/proj")
        ),
        Some(&key),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = s.delete(
        &format!(
            "/api/v1/fs?uri={}&recursive=true",
            q("viking://user/ann/resources/notes")
        ),
        Some(&key),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    // A backup is not an import, and the default policy refuses existing scopes.
    let r = import(&s, &key, &pack, json!({"parent": "viking://resources"}));
    assert_eq!(r.status, 400, "{:?}", r.body);
    let id = upload_id(&s, &key, "b.ovpack", &pack);
    let r = s.post(RESTORE, Some(&key), json!({"temp_file_id": id}));
    assert_eq!(r.status, 409, "{:?}", r.body);
    let id = upload_id(&s, &key, "b.ovpack", &pack);
    let r = s.post(
        RESTORE,
        Some(&key),
        json!({"temp_file_id": id, "on_conflict": "overwrite"}),
    );
    assert_eq!(ok(&r)["uri"], "viking://");
    assert_eq!(files(&st, "acme/resources"), res_before);
    assert_eq!(files(&st, "acme/user/ann/resources/notes"), user_before);
    assert_eq!(
        tags_of(&s, &key, "viking://resources/proj/readme.md"),
        json!(["team=core"])
    );
}

/// Changes one member's bytes (by name); `None` drops it.
type Edit<'a> = dyn Fn(&str, Vec<u8>) -> Option<Vec<u8>> + 'a;

/// Rebuild a pack: `edit` may change any member's bytes (by name) and the manifest.
fn rebuild(pack: &[u8], edit: &Edit, extra: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut src = zip::ZipArchive::new(std::io::Cursor::new(pack.to_vec())).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for i in 0..src.len() {
        let mut f = src.by_index(i).unwrap();
        let name = f.name().unwrap().into_owned();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        drop(f);
        if name.ends_with('/') {
            out.add_directory(name.trim_end_matches('/'), opts).unwrap();
            continue;
        }
        if let Some(data) = edit(&name, data) {
            out.start_file(name, opts).unwrap();
            out.write_all(&data).unwrap();
        }
    }
    for (name, data) in extra {
        out.start_file(*name, opts).unwrap();
        out.write_all(data).unwrap();
    }
    out.finish().unwrap().into_inner()
}

#[test]
fn hostile_packs_are_refused_with_nothing_written() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let key = create_account(&s, "acme", "ann");
    seed(&s, &key);
    let pack = export(&s, &key, "viking://resources/proj");
    let readme = "proj/files/readme.md";
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", pack[..pack.len() / 2].to_vec()),
        ("not a zip", b"hello".to_vec()),
        (
            "content changed",
            rebuild(
                &pack,
                &|n, d| Some(if n == readme { b"evil".to_vec() } else { d }),
                &[],
            ),
        ),
        (
            "member outside files",
            rebuild(&pack, &|_, d| Some(d), &[("proj/other.md", b"x".to_vec())]),
        ),
        (
            "escaping path",
            rebuild(
                &pack,
                &|_, d| Some(d),
                &[("proj/files/../../escape.md", b"x".to_vec())],
            ),
        ),
        (
            "second root",
            rebuild(
                &pack,
                &|_, d| Some(d),
                &[("other/files/a.md", b"x".to_vec())],
            ),
        ),
        (
            "missing file",
            rebuild(&pack, &|n, d| (n != readme).then_some(d), &[]),
        ),
    ];
    // A manifest that lies about a size (digest recomputed so only the size lies).
    let lying = rebuild(
        &pack,
        &|n, d| {
            if !n.ends_with("manifest.json") {
                return Some(d);
            }
            let mut m: Value = serde_json::from_slice(&d).unwrap();
            for e in m["entries"].as_array_mut().unwrap() {
                if e["path"] == "readme.md" {
                    e["size"] = json!(3);
                }
            }
            Some(serde_json::to_vec(&m).unwrap())
        },
        &[],
    );
    cases.push(("lying size", lying));
    // A bomb: 20 MiB of zeros declared honestly in the manifest.
    let zeros = vec![0u8; 20 << 20];
    let bomb = rebuild(
        &pack,
        &|n, d| {
            if n == readme {
                return Some(vec![0u8; 20 << 20]);
            }
            if !n.ends_with("manifest.json") {
                return Some(d);
            }
            let mut m: Value = serde_json::from_slice(&d).unwrap();
            let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(vec![0u8; 20 << 20]));
            let mut items = Vec::new();
            for e in m["entries"].as_array_mut().unwrap() {
                if e["path"] == "readme.md" {
                    e["size"] = json!(20 << 20);
                    e["sha256"] = json!(sha);
                }
                if e["kind"] == "file" {
                    items
                        .push(json!({"path": e["path"], "sha256": e["sha256"], "size": e["size"]}));
                }
            }
            items.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
            m["content_sha256"] = json!(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                serde_json::to_vec(&items).unwrap()
            )));
            Some(serde_json::to_vec(&m).unwrap())
        },
        &[],
    );
    drop(zeros);
    cases.push(("bomb", bomb));
    let before = st.stored_digest("acme/resources");
    for (what, bad) in cases {
        let r = import(&s, &key, &bad, json!({"parent": "viking://resources/h"}));
        assert_eq!(r.status, 400, "{what}: {:?}", r.body);
        assert_eq!(r.code(), "INVALID_ARGUMENT", "{what}: {:?}", r.body);
    }
    assert!(!st.exists("acme/resources/h/proj"));
    assert_eq!(
        st.stored_digest("acme/resources"),
        before,
        "nothing written"
    );
    assert!(!st.exists("escape.md") && !st.exists("acme/escape.md"));
}

#[test]
fn roles_and_modes_follow_upstream() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let admin = create_account(&s, "acme", "ann");
    let user = crate::harness::api::register(&s, &admin, "acme", "bob", "user");
    seed(&s, &admin);
    // A user may export and import, not back up or restore.
    let r = s.post(
        EXPORT,
        Some(&user),
        json!({"uri": "viking://resources/proj"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = s.post(BACKUP, Some(&user), json!({}));
    assert_eq!(r.status, 403, "{:?}", r.body);
    // Export of a missing tree, or of a scope 0.5.2 does not pack: 4xx before any byte.
    let r = s.post(
        EXPORT,
        Some(&admin),
        json!({"uri": "viking://resources/nope"}),
    );
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = s.post(
        EXPORT,
        Some(&admin),
        json!({"uri": "viking://agent/skills"}),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = s.post(
        EXPORT,
        Some(&admin),
        json!({"uri": "viking://resources/proj", "extra": 1}),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    // Another user's space is not the caller's to import into.
    let pack = export(&s, &admin, "viking://resources/proj");
    let r = import(&s, &user, &pack, json!({"parent": "viking://user/ann/x"}));
    assert!(r.status == 400 || r.status == 403, "{:?}", r.body);
    // Dev mode refuses the pack routes as 0.5.2 does.
    let st2 = Storage::new();
    let dev = Server::start(&st2, Opts::dev());
    let r = dev.post(EXPORT, None, json!({"uri": "viking://resources"}));
    assert_eq!(r.status, 403, "{:?}", r.body);
}

#[test]
fn kill9_during_import_leaves_nothing_partial() {
    let st = Storage::new();
    let mut s = Server::start(&st, Opts::default());
    let key = create_account(&s, "acme", "ann");
    // Many files, so the import stages for a while.
    let r = s.post(
        "/api/v1/fs/mkdir",
        Some(&key),
        json!({"uri": "viking://resources/big"}),
    );
    assert_eq!(r.status, 200);
    let batch: Vec<Value> = (0..400)
        .map(|i| json!({"path": format!("f{i:04}.md"), "content": format!("file {i}\n").repeat(200)}))
        .collect();
    let r = s.post(
        "/api/v1/content/batch-write",
        Some(&key),
        json!({"uri": "viking://resources/big", "operations": batch}),
    );
    if r.status != 200 {
        for i in 0..400 {
            write(
                &s,
                &key,
                &format!("viking://resources/big/f{i:04}.md"),
                &format!("file {i}\n").repeat(200),
            );
        }
    }
    let pack = export(&s, &key, "viking://resources/big");
    let id = upload_id(&s, &key, "big.ovpack", &pack);
    let url = s.url(IMPORT);
    let k = key.clone();
    let client = std::thread::spawn(move || {
        let _ = ureq::post(&url)
            .set("X-API-Key", &k)
            .timeout(Duration::from_secs(60))
            .send_json(json!({"temp_file_id": id, "parent": "viking://resources/dst"}));
    });
    // Kill as soon as the staging tree appears (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(30);
    let staged = loop {
        let found = st
            .list("acme/_system/ingest")
            .into_iter()
            .any(|n| n.starts_with("pack_"));
        if found || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    s.kill9();
    let _ = client.join();
    assert!(staged, "the import never started staging within the bound");
    s.restart();
    let full = files(&st, "acme/resources/big");
    let got = files(&st, "acme/resources/dst/big");
    assert!(
        got.is_empty() || got == full,
        "partial import visible: {} of {} files",
        got.len(),
        full.len()
    );
    // The staging tree goes with the startup sweep.
    let deadline = Instant::now() + Duration::from_secs(30);
    while st
        .list("acme/_system/ingest")
        .iter()
        .any(|n| n.starts_with("pack_"))
    {
        assert!(
            Instant::now() < deadline,
            "staging left behind (staged={staged})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 0.5.2 backs up and restores with account-wide authority: an ADMIN's backup carries every
/// user's space and its restore writes them back; an ADMIN's export keeps the caller's view
/// (its own user space only), and a USER's export leaves out what its ACLs deny.
#[test]
fn admin_backup_covers_every_user_and_export_keeps_the_callers_view() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let admin = create_account(&s, "acme", "ann");
    let bob = crate::harness::api::register(&s, &admin, "acme", "bob", "user");
    write(
        &s,
        &admin,
        "viking://user/ann/resources/a.md",
        "ann's note\n",
    );
    write(&s, &bob, "viking://user/bob/resources/b.md", "bob's note\n");
    let paths = |pack: &[u8]| -> Vec<String> {
        manifest(pack)["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap().to_string())
            .collect()
    };
    let r = s.post(BACKUP, Some(&admin), json!({}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let backup = r.raw;
    let got = paths(&backup);
    for p in ["user/ann/resources/a.md", "user/bob/resources/b.md"] {
        assert!(got.iter().any(|g| g == p), "backup lacks {p}: {got:?}");
    }
    // Export of viking://user by the ADMIN: its own space only (0.5.2's namespace rule).
    let r = s.post(EXPORT, Some(&admin), json!({"uri": "viking://user"}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let got = paths(&r.raw);
    assert!(got.iter().any(|g| g == "ann/resources/a.md"), "{got:?}");
    assert!(!got.iter().any(|g| g.starts_with("bob")), "{got:?}");
    // Bob loses his note; the ADMIN's restore brings it back.
    let r = s.delete(
        &format!("/api/v1/fs?uri={}", q("viking://user/bob/resources/b.md")),
        Some(&bob),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let id = upload_id(&s, &admin, "b.ovpack", &backup);
    let r = s.post(
        RESTORE,
        Some(&admin),
        json!({"temp_file_id": id, "on_conflict": "overwrite"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        st.read_string("acme/user/bob/resources/b.md"),
        "bob's note\n"
    );

    // ACLs: a USER's export leaves out a subtree restricted to others.
    let r = s.call(
        "PATCH",
        "/api/v1/admin/accounts/acme/configuration",
        Some(&admin),
        Some(json!({"settings": {"acl": {"enabled": true}}})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    write(&s, &admin, "viking://resources/team/open.md", "open\n");
    write(
        &s,
        &admin,
        "viking://resources/team/secret/plan.md",
        "secret\n",
    );
    let r = s.put(
        "/api/v1/acl",
        Some(&admin),
        json!({"uri": "viking://resources/team/secret", "acl_mode": "restricted",
               "entries": [{"principal": "user:ann", "level": "manage"}]}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let denied = s.get(
        &format!(
            "/api/v1/content/read?uri={}",
            q("viking://resources/team/secret/plan.md")
        ),
        Some(&bob),
    );
    assert_eq!(
        denied.status, 403,
        "the ACL is not in force: {:?}",
        denied.body
    );
    let r = s.post(
        EXPORT,
        Some(&bob),
        json!({"uri": "viking://resources/team"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let got = paths(&r.raw);
    assert!(got.iter().any(|g| g == "open.md"), "{got:?}");
    assert!(!got.iter().any(|g| g.starts_with("secret")), "{got:?}");
    // The ADMIN (implicit manage) still exports it whole.
    let got = paths(&export(&s, &admin, "viking://resources/team"));
    assert!(got.iter().any(|g| g == "secret/plan.md"), "{got:?}");
}

const VEC_MODEL: &str = "harness-hash-64";

fn embedder_opts(api_base: &str, model: &str, dim: usize) -> Opts {
    Opts::default()
        .env("LONGSHIP_EMBEDDING__DENSE__PROVIDER", "openai")
        .env("LONGSHIP_EMBEDDING__DENSE__API_BASE", api_base)
        .env("LONGSHIP_EMBEDDING__DENSE__MODEL", model)
        .env("LONGSHIP_EMBEDDING__DENSE__DIMENSION", &dim.to_string())
}

/// The documented layout of a stored vector: `<account>/_system/vectors/<model_key>/…`.
fn stored_vector(account: &str, model: &str, dim: usize, content: &str) -> String {
    use sha2::{Digest, Sha256};
    let key = hex::encode(&Sha256::digest(format!("{model}|{dim}"))[..8]);
    let hash = hex::encode(Sha256::digest(content));
    format!("{account}/_system/vectors/{key}/{}/{hash}.f32", &hash[..2])
}

fn embedding_status(s: &Server) -> Value {
    let r = s.get(
        "/api/v1/observer/system?format=json",
        Some(crate::harness::ROOT_KEY),
    );
    r.result()["components"]["retrieval"]["status"]["embedding"].clone()
}

/// A loopback address where nothing answers (a provider that is down).
fn dead_api_base() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/v1")
}

/// `include_vectors` carries the stored vectors as 0.5.2's dense snapshot; an import reuses
/// them only when the configured model (name and dimension) is the pack's — proved by a
/// server whose provider is down ending up with the vectors — `require` fails otherwise with
/// nothing written, and `auto` recomputes them in the background.
#[test]
fn vectors_travel_and_are_reused_only_for_the_same_model() {
    use crate::embed_server::{EmbedServer, DIM};
    let provider = EmbedServer::start();
    let st = Storage::new();
    let a = Server::start(&st, embedder_opts(&provider.api_base(), VEC_MODEL, DIM));
    let key = create_account(&a, "acme", "ann");
    let docs = [
        ("vec/tidal.md", "A note about tidal energy and coastlines\n"),
        ("vec/glacier.md", "Glaciers retreat in warm summers\n"),
        ("vec/deep/coral.md", "Coral reefs bleach in hot water\n"),
    ];
    for (p, c) in docs {
        write(&a, &key, &format!("viking://resources/{p}"), c);
    }
    let in_a = |c: &str| st.at(&stored_vector("acme", VEC_MODEL, DIM, c));
    let stored = crate::find::eventually(Duration::from_secs(60), || {
        docs.iter().all(|(_, c)| in_a(c).is_file())
    });
    assert!(stored.is_some(), "{}", embedding_status(&a));

    let plain = export(&a, &key, "viking://resources/vec");
    assert!(manifest(&plain)["index"].get("dense").is_none());
    let r = a.post(
        EXPORT,
        Some(&key),
        json!({"uri": "viking://resources/vec", "include_vectors": true}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let pack = r.raw;
    let m = manifest(&pack);
    let dense = &m["index"]["dense"];
    assert_eq!(dense["path"], "_ovpack/dense.f32", "{m}");
    assert_eq!(dense["dtype"], "float32");
    assert_eq!(dense["dimensions"], DIM);
    assert_eq!(dense["embedding"]["model"], VEC_MODEL);
    // 0.5.2 compares provider, model, input and dimensions (it refused a snapshot without
    // `input`: "embedding input mismatch").
    assert_eq!(dense["embedding"]["provider"], "openai");
    assert_eq!(dense["embedding"]["input"], "multimodal");
    assert_eq!(dense["embedding"]["dimensions"], DIM);
    assert!(
        dense["count"].as_u64().unwrap() >= docs.len() as u64,
        "{dense}"
    );
    // Each file's record points at exactly its stored vector.
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(pack.clone())).unwrap();
    let mut data = Vec::new();
    zip.by_name("vec/_ovpack/dense.f32")
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    let mut records = String::new();
    zip.by_name("vec/_ovpack/index_records.jsonl")
        .unwrap()
        .read_to_string(&mut records)
        .unwrap();
    for (p, c) in docs {
        let rel = p.strip_prefix("vec/").unwrap();
        let rec: Value = records
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|r| r["path"] == rel && r["vector"].is_object())
            .unwrap_or_else(|| panic!("no vector record for {rel}: {records}"));
        let off = rec["vector"]["dense"]["offset"].as_u64().unwrap() as usize * 4;
        assert_eq!(
            &data[off..off + DIM * 4],
            &in_a(c).read().unwrap()[..],
            "{rel}"
        );
    }

    // B: same model, provider down. Only the pack can give it these vectors.
    let st_b = Storage::new();
    let b = Server::start(&st_b, embedder_opts(&dead_api_base(), VEC_MODEL, DIM));
    let key_b = create_account(&b, "acme", "ann");
    let r = import(
        &b,
        &key_b,
        &pack,
        json!({"parent": "viking://resources", "vector_mode": "require"}),
    );
    assert_eq!(ok(&r)["uri"], "viking://resources/vec");
    for (_, c) in docs {
        let got = st_b.at(&stored_vector("acme", VEC_MODEL, DIM, c)).read();
        assert_eq!(got.ok(), in_a(c).read().ok(), "vector of {c:?} not reused");
    }
    let loaded = crate::find::eventually(Duration::from_secs(60), || {
        embedding_status(&b)["loaded_from_storage"]
            .as_u64()
            .unwrap_or(0)
            >= docs.len() as u64
    });
    assert!(loaded.is_some(), "{}", embedding_status(&b));

    // C: another model. `require` fails with nothing written; `auto` recomputes.
    let other = "harness-hash-64-other";
    let st_c = Storage::new();
    let c = Server::start(&st_c, embedder_opts(&provider.api_base(), other, DIM));
    let key_c = create_account(&c, "acme", "ann");
    let r = import(
        &c,
        &key_c,
        &pack,
        json!({"parent": "viking://resources", "vector_mode": "require"}),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body.to_string().contains("incompatible"), "{:?}", r.body);
    assert!(!st_c.exists("acme/resources/vec"));
    let r = import(&c, &key_c, &pack, json!({"parent": "viking://resources"}));
    assert_eq!(ok(&r)["uri"], "viking://resources/vec");
    let recomputed = crate::find::eventually(Duration::from_secs(60), || {
        docs.iter()
            .all(|(_, t)| st_c.at(&stored_vector("acme", other, DIM, t)).is_file())
    });
    assert!(recomputed.is_some(), "{}", embedding_status(&c));
    assert!(!st_c.exists(&stored_vector("acme", VEC_MODEL, DIM, docs[0].1)));

    // D: the same model declared with another input mode (0.5.2's `embedding.dense.input`):
    // 0.5.2's rule refuses the vectors as incompatible, naming the field.
    let st_d = Storage::new();
    let d = Server::start(
        &st_d,
        embedder_opts(&dead_api_base(), VEC_MODEL, DIM)
            .env("LONGSHIP_EMBEDDING__DENSE__INPUT", "text"),
    );
    let key_d = create_account(&d, "acme", "ann");
    let r = import(
        &d,
        &key_d,
        &pack,
        json!({"parent": "viking://resources", "vector_mode": "require"}),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(
        r.body["error"]["details"]["reason"], "embedding input mismatch",
        "{:?}",
        r.body
    );
    assert!(!st_d.exists("acme/resources/vec"));
}

/// A pack exported by a real OpenViking 0.5.2 with vectors (tests/fixtures/ov052-vectors.ovpack,
/// written by `tests/compat/pack_0_5_2.py --fixture`: one tagged file under two directories
/// with 0.5.2's L0/L1, `embedding` {provider openai, model standin-embed, input multimodal,
/// 64 dimensions}) imports byte-identical, and with that model configured (its provider down:
/// only the pack can supply vectors) `require` stores the pack's vectors under the files'
/// content hashes — a directory's L0/L1 under its sidecars'.
#[test]
fn a_pack_exported_by_openviking_0_5_2_imports_with_its_vectors() {
    let pack = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ov052-vectors.ovpack"
    ))
    .unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(pack.clone())).unwrap();
    let mut member = |name: &str| {
        let mut data = Vec::new();
        zip.by_name(name).unwrap().read_to_end(&mut data).unwrap();
        data
    };
    let dense = member("ov052/_ovpack/dense.f32");
    let records = String::from_utf8(member("ov052/_ovpack/index_records.jsonl")).unwrap();
    let packed_files: Vec<(String, Vec<u8>)> = names(&pack)
        .into_iter()
        .filter_map(|n| {
            let rel = n.strip_prefix("ov052/files/")?.to_string();
            (!rel.is_empty() && !rel.ends_with('/')).then(|| (rel, member(&n)))
        })
        .collect();
    assert_eq!(packed_files.len(), 7, "{packed_files:?}");

    let st = Storage::new();
    let s = Server::start(&st, embedder_opts(&dead_api_base(), "standin-embed", 64));
    let key = create_account(&s, "acme", "ann");
    let r = import(
        &s,
        &key,
        &pack,
        json!({"parent": "viking://resources", "vector_mode": "require"}),
    );
    assert_eq!(ok(&r)["uri"], "viking://resources/ov052");
    for (rel, data) in &packed_files {
        let got = st.at(&format!("acme/resources/ov052/{rel}")).read().ok();
        assert_eq!(got.as_deref(), Some(&data[..]), "{rel}");
    }
    let content = |rel: &str| {
        let (_, d) = packed_files.iter().find(|(r, _)| r == rel).unwrap();
        String::from_utf8(d.clone()).unwrap()
    };
    for (path, level, file) in [
        ("guide/intro/intro.md", 2, "guide/intro/intro.md"),
        ("guide", 0, "guide/.abstract.md"),
        ("guide", 1, "guide/.overview.md"),
    ] {
        let rec: Value = records
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|r| r["path"] == path && r["level"] == level)
            .unwrap_or_else(|| panic!("no record {path} {level}: {records}"));
        let off = rec["vector"]["dense"]["offset"].as_u64().unwrap() as usize * 4;
        let stored = st
            .at(&stored_vector("acme", "standin-embed", 64, &content(file)))
            .read()
            .ok();
        assert_eq!(
            stored.as_deref(),
            Some(&dense[off..off + 64 * 4]),
            "vector of {file} not reused"
        );
    }
}

/// Fill `dir` (created) with `n` files named `<prefix>NNNN.md` holding `body` + index.
fn fill(s: &Server, key: &str, dir: &str, prefix: &str, body: &str, n: usize) {
    let r = s.post("/api/v1/fs/mkdir", Some(key), json!({"uri": dir}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let batch: Vec<Value> = (0..n)
        .map(|i| json!({"uri": format!("{dir}/{prefix}{i:04}.md"), "content": format!("{body} {i}\n").repeat(100), "mode": "create"}))
        .collect();
    let r = s.post(
        "/api/v1/content/batch-write",
        Some(key),
        json!({"root_uri": dir, "operations": batch}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
}

/// kill -9 while an overwrite import stages or publishes (observed through the staging
/// directory: killed once its journal appears or most files are staged): after the restart
/// the target holds the old tree or the new one, whole — never a mix, never nothing.
#[test]
fn kill9_during_overwrite_import_leaves_old_or_new_whole() {
    let st = Storage::new();
    let mut s = Server::start(&st, Opts::default());
    let key = create_account(&s, "acme", "ann");
    let n = 300;
    // Same names with other content, plus names only the old tree has.
    fill(&s, &key, "viking://resources/src/big", "f", "new", n);
    fill(&s, &key, "viking://resources/dst/big", "f", "old", n);
    write(
        &s,
        &key,
        "viking://resources/dst/big/only-old.md",
        "old only\n",
    );
    let new_tree = files(&st, "acme/resources/src/big");
    let old_tree = files(&st, "acme/resources/dst/big");
    let pack = export(&s, &key, "viking://resources/src/big");
    let id = upload_id(&s, &key, "big.ovpack", &pack);
    let url = s.url(IMPORT);
    let k = key.clone();
    let client = std::thread::spawn(move || {
        let _ = ureq::post(&url)
            .set("X-API-Key", &k)
            .timeout(Duration::from_secs(120))
            .send_json(
                json!({"temp_file_id": id, "parent": "viking://resources/dst",
                              "on_conflict": "overwrite"}),
            );
    });
    let works = |st: &Storage| -> Vec<String> {
        st.list("acme/_system/ingest")
            .into_iter()
            .filter(|n| n.starts_with("pack_"))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = false;
    loop {
        let ready = works(&st).iter().any(|w| {
            seen = true;
            st.exists(&format!("acme/_system/ingest/{w}/replace.json"))
                || st.list(&format!("acme/_system/ingest/{w}/tree/0")).len() >= n * 3 / 4
        });
        if ready || Instant::now() > deadline || (seen && works(&st).is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    s.kill9();
    let _ = client.join();
    assert!(seen, "the import never started staging within the bound");
    s.restart();
    let whole = |got: &std::collections::BTreeMap<String, String>| {
        let rel = |m: &std::collections::BTreeMap<String, String>| -> Vec<(String, String)> {
            m.iter()
                .filter(|(k, _)| !k.contains("/.") && !k.starts_with('.'))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        rel(got) == rel(&old_tree) || rel(got) == rel(&new_tree)
    };
    let got = files(&st, "acme/resources/dst/big");
    assert!(
        got.is_empty() || whole(&got),
        "a mix is visible after restart: {} files",
        got.len()
    );
    // Once the sweep settled the dead import, the target holds one of the trees whole.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !works(&st).is_empty() {
        assert!(Instant::now() < deadline, "staging left behind");
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = files(&st, "acme/resources/dst/big");
    assert!(
        whole(&got),
        "target not whole after the sweep: {} files",
        got.len()
    );
}
