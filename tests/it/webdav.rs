//! WebDAV (`/webdav/resources`, issue #24) through a plain HTTP client against the real
//! binary: every method, the three ways to present a key, hostile input, tenant isolation and
//! a WebDAV write found by `find` on another instance. Runs on both storage backends.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::find::eventually;
use crate::harness::api::{create_account, register};
use crate::harness::{Opts, Resp, Server, Storage, ROOT_KEY};

const DAV: &str = "/webdav/resources";
/// Generous bound on cross-instance freshness (the setting below is 1000 ms).
const BOUND: Duration = Duration::from_secs(15);

fn dav(
    s: &Server,
    method: &str,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut all: Vec<(&str, &str)> = vec![("X-API-Key", key)];
    all.extend_from_slice(headers);
    s.raw(method, &format!("{DAV}{path}"), &all, body)
}

fn basic(key: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("anyone:{key}"))
    )
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.raw).into_owned()
}

fn propfind(s: &Server, path: &str, key: &str, depth: &str) -> String {
    let r = dav(s, "PROPFIND", path, key, &[("Depth", depth)], b"");
    assert_eq!(r.status, 207, "{}", text(&r));
    assert!(r.header("content-type").unwrap().contains("xml"));
    text(&r)
}

#[test]
fn every_method_through_a_plain_http_client() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let key = create_account(&s, "acme", "alice");

    // OPTIONS needs no key and names the methods and the class.
    let r = s.raw("OPTIONS", DAV, &[], b"");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("dav"), Some("1, 2"));
    for m in [
        "PROPFIND",
        "PUT",
        "MKCOL",
        "MOVE",
        "DELETE",
        "LOCK",
        "UNLOCK",
        "PROPPATCH",
    ] {
        assert!(r.header("allow").unwrap().contains(m), "{:?}", r.headers);
    }
    // No key: 401 with the Basic challenge; a wrong one too; the root key is not a tenant.
    let r = s.raw("PROPFIND", DAV, &[("Depth", "0")], b"");
    assert_eq!(r.status, 401, "{}", text(&r));
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    let r = s.raw("PROPFIND", DAV, &[("Authorization", &basic("wrong"))], b"");
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    assert_eq!(dav(&s, "PROPFIND", "", ROOT_KEY, &[], b"").status, 403);
    // Basic is WebDAV's only: the JSON API still refuses it.
    let r = s.raw(
        "GET",
        "/api/v1/fs/ls?uri=viking://resources",
        &[("Authorization", &basic(&key))],
        b"",
    );
    assert_eq!(r.status, 401);

    // MKCOL: created, exists (405), no parent (409), a body (415).
    assert_eq!(dav(&s, "MKCOL", "/docs", &key, &[], b"").status, 201);
    assert_eq!(dav(&s, "MKCOL", "/docs", &key, &[], b"").status, 405);
    assert_eq!(dav(&s, "MKCOL", "/none/sub", &key, &[], b"").status, 409);
    let r = dav(
        &s,
        "MKCOL",
        "/other",
        &key,
        &[("Content-Type", "text/xml")],
        b"<x/>",
    );
    assert_eq!(r.status, 415, "{}", text(&r));

    // PUT any bytes (Basic, key as password), byte-exact back; replace is 204.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let auth = basic(&key);
    let put = |path: &str, body: &[u8]| {
        s.raw(
            "PUT",
            &format!("{DAV}{path}"),
            &[("Authorization", &auth)],
            body,
        )
    };
    let r = put("/docs/photo.bin", &bytes);
    assert_eq!(r.status, 201, "{}", text(&r));
    let r = dav(&s, "GET", "/docs/photo.bin", &key, &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.raw == bytes, "GET returns the PUT bytes exactly");
    assert!(r.header("etag").is_some() && r.header("last-modified").is_some());
    let r = s.raw(
        "HEAD",
        &format!("{DAV}/docs/photo.bin"),
        &[("Authorization", &format!("Bearer {key}"))],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("70000"));
    assert_eq!(put("/docs/photo.bin", &bytes[..10]).status, 204);
    assert_eq!(
        dav(&s, "GET", "/docs/photo.bin", &key, &[], b"").raw,
        &bytes[..10]
    );
    assert_eq!(put("/nowhere/x.bin", b"x").status, 409);
    assert_eq!(put("", b"x").status, 405);
    assert_eq!(put("/docs", b"x").status, 405);
    assert_eq!(
        put("/docs/koala%20notes.md", b"koalas eat leaves").status,
        201
    );
    // It is the same file the JSON API reads.
    let r = s.get(
        "/api/v1/content/read?uri=viking://resources/docs/koala%20notes.md",
        Some(&key),
    );
    assert_eq!(
        r.result().as_str(),
        Some("koalas eat leaves"),
        "{:?}",
        r.body
    );

    // PROPFIND: depth 1 lists children (hidden sidecars never), 0 the node, infinity as 1.
    let xml = propfind(&s, "/docs/", &key, "1");
    assert!(
        xml.contains("<D:href>/webdav/resources/docs/</D:href>"),
        "{xml}"
    );
    assert!(
        xml.contains("/webdav/resources/docs/photo.bin</D:href>"),
        "{xml}"
    );
    assert!(
        xml.contains("/webdav/resources/docs/koala%20notes.md</D:href>"),
        "{xml}"
    );
    assert!(
        xml.contains("<D:getcontentlength>10</D:getcontentlength>"),
        "{xml}"
    );
    assert!(
        !xml.contains(".abstract.md") && !xml.contains(".overview.md"),
        "{xml}"
    );
    assert_eq!(xml.matches("<D:response>").count(), 3, "{xml}");
    assert_eq!(
        propfind(&s, "/docs", &key, "0")
            .matches("<D:response>")
            .count(),
        1
    );
    assert_eq!(propfind(&s, "/docs", &key, "infinity"), xml);
    assert!(propfind(&s, "", &key, "1").contains("<D:href>/webdav/resources/docs/</D:href>"));
    assert_eq!(dav(&s, "PROPFIND", "/none", &key, &[], b"").status, 404);
    // Hidden names are not addressable at all.
    assert_eq!(
        dav(&s, "GET", "/docs/.abstract.md", &key, &[], b"").status,
        404
    );
    assert_eq!(
        dav(&s, "PROPFIND", "/docs/.overview.md", &key, &[], b"").status,
        404
    );
    assert_eq!(put("/docs/.abstract.md", b"x").status, 404);
    // A property request is parsed: malformed is 400, a megabyte body 413 at once.
    let r = dav(
        &s,
        "PROPFIND",
        "/docs",
        &key,
        &[],
        b"<D:propfind xmlns:D=\"DAV:\"><D:prop>",
    );
    assert_eq!(r.status, 400, "{}", text(&r));
    let allprop = br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"#;
    assert_eq!(dav(&s, "PROPFIND", "/docs", &key, &[], allprop).status, 207);
    let t = Instant::now();
    let big = vec![b' '; 4 * 1024 * 1024];
    let r = dav(&s, "PROPFIND", "/docs", &key, &[], &big);
    assert_eq!(r.status, 413, "{}", text(&r));
    assert!(t.elapsed() < Duration::from_secs(30));

    // MOVE: new target 201; Overwrite F onto an existing one 412 (nothing changes); T 204.
    let host = format!("127.0.0.1:{}", s.port);
    let dest = |p: &str| format!("http://{host}{DAV}{p}");
    let mv = |from: &str, to: &str, overwrite: Option<&str>| {
        let d = dest(to);
        let mut h = vec![("Destination", d.as_str())];
        if let Some(o) = overwrite {
            h.push(("Overwrite", o));
        }
        dav(&s, "MOVE", from, &key, &h, b"")
    };
    assert_eq!(mv("/docs/koala%20notes.md", "/docs/k.md", None).status, 201);
    let r = mv("/docs/photo.bin", "/docs/k.md", Some("F"));
    assert_eq!(r.status, 412, "{}", text(&r));
    assert_eq!(
        dav(&s, "GET", "/docs/k.md", &key, &[], b"").raw,
        b"koalas eat leaves"
    );
    assert_eq!(mv("/docs/photo.bin", "/docs/k.md", Some("T")).status, 204);
    assert_eq!(
        dav(&s, "GET", "/docs/k.md", &key, &[], b"").raw,
        &bytes[..10]
    );
    assert_eq!(
        dav(&s, "GET", "/docs/photo.bin", &key, &[], b"").status,
        404
    );
    assert_eq!(dav(&s, "MKCOL", "/docs/sub", &key, &[], b"").status, 201);
    assert_eq!(mv("/docs/sub", "/moved", None).status, 201);
    assert_eq!(mv("/moved", "/moved/inner", None).status, 403);
    assert_eq!(mv("/docs/k.md", "/none/k.md", None).status, 409);

    // COPY: a whole collection (Depth infinity), Overwrite F onto it 412, Depth 0 shallow.
    let cp = |from: &str, to: &str, extra: &[(&str, &str)]| {
        let d = dest(to);
        let mut h = vec![("Destination", d.as_str())];
        h.extend_from_slice(extra);
        dav(&s, "COPY", from, &key, &h, b"")
    };
    assert_eq!(cp("/docs", "/copy", &[]).status, 201);
    assert_eq!(
        dav(&s, "GET", "/copy/k.md", &key, &[], b"").raw,
        &bytes[..10]
    );
    assert_eq!(cp("/docs", "/copy", &[("Overwrite", "F")]).status, 412);
    assert_eq!(cp("/docs", "/copy", &[("Depth", "0")]).status, 204);
    assert_eq!(dav(&s, "GET", "/copy/k.md", &key, &[], b"").status, 404);
    assert_eq!(
        dav(&s, "GET", "/docs/k.md", &key, &[], b"").raw,
        &bytes[..10]
    );
    assert_eq!(cp("/docs", "/docs/inner", &[]).status, 403);

    // Hostile Destinations: another host, climbing out, traversal, missing; nothing changes.
    let before = propfind(&s, "/docs", &key, "1");
    for (d, status) in [
        (format!("http://evil.example{DAV}/docs/x.md"), 403),
        (format!("http://{host}{DAV}/../../api/v1/x"), 403),
        (format!("{DAV}/../../webdav/other/x"), 403),
        (format!("{DAV}/docs/a%2Fb.md"), 400),
        (format!("{DAV}/docs/..%5C..%5Cx.md"), 400),
        (format!("{DAV}/docs/.overview.md"), 404),
        (format!("ftp://{host}{DAV}/docs/x.md"), 403),
        ("not a url".to_string(), 400),
    ] {
        let r = dav(&s, "MOVE", "/docs/k.md", &key, &[("Destination", &d)], b"");
        assert_eq!(r.status, status, "{d}: {}", text(&r));
    }
    assert_eq!(dav(&s, "MOVE", "/docs/k.md", &key, &[], b"").status, 400);
    assert_eq!(propfind(&s, "/docs", &key, "1"), before);

    // Traversal in the request path itself.
    assert_eq!(
        dav(&s, "GET", "/docs/..%5C..%5Cx", &key, &[], b"").status,
        400
    );

    // DELETE: file 204, again 404, the root 405, a whole collection 204.
    assert_eq!(dav(&s, "DELETE", "/docs/k.md", &key, &[], b"").status, 204);
    assert_eq!(dav(&s, "DELETE", "/docs/k.md", &key, &[], b"").status, 404);
    assert_eq!(dav(&s, "DELETE", "", &key, &[], b"").status, 405);
    assert_eq!(dav(&s, "DELETE", "/docs", &key, &[], b"").status, 204);
    assert_eq!(dav(&s, "PROPFIND", "/docs", &key, &[], b"").status, 404);
    // A collection is not a file.
    assert_eq!(dav(&s, "GET", "/moved", &key, &[], b"").status, 405);
}

#[test]
fn tenants_see_only_their_own_resources() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let acme = create_account(&s, "acme", "alice");
    let rival = create_account(&s, "rival", "eve");
    assert_eq!(dav(&s, "MKCOL", "/plans", &acme, &[], b"").status, 201);
    let r = dav(&s, "PUT", "/plans/secret.md", &acme, &[], b"wombat plan");
    assert_eq!(r.status, 201);

    // The other account's view: neither listed nor readable, writable or movable.
    let xml = propfind(&s, "", &rival, "1");
    assert!(!xml.contains("plans"), "{xml}");
    for (m, path) in [
        ("GET", "/plans/secret.md"),
        ("PROPFIND", "/plans"),
        ("DELETE", "/plans/secret.md"),
    ] {
        assert_eq!(dav(&s, m, path, &rival, &[], b"").status, 404, "{m} {path}");
    }
    assert_eq!(
        dav(&s, "PUT", "/plans/secret.md", &rival, &[], b"x").status,
        409
    );
    let d = format!("http://127.0.0.1:{}{DAV}/plans/stolen.md", s.port);
    let r = dav(
        &s,
        "MOVE",
        "/plans/secret.md",
        &rival,
        &[("Destination", &d)],
        b"",
    );
    assert_eq!(r.status, 404);
    // And acme's file is untouched.
    assert_eq!(
        dav(&s, "GET", "/plans/secret.md", &acme, &[], b"").raw,
        b"wombat plan"
    );
    assert!(st.read("rival/resources/plans/secret.md").is_none());
}

#[test]
fn a_webdav_write_is_found_on_another_instance() {
    let st = Storage::new();
    let opts = Opts::default().env("LONGSHIP_SEARCH__REFRESH_INTERVAL_MS", "1000");
    let a = Server::start(&st, opts.clone());
    let b = Server::start(&st, opts);
    let key = create_account(&a, "acme", "alice");
    assert_eq!(dav(&a, "MKCOL", "/notes", &key, &[], b"").status, 201);
    let r = dav(
        &a,
        "PUT",
        "/notes/quokka.md",
        &key,
        &[],
        b"the quokka smiles at dawn",
    );
    assert_eq!(r.status, 201);
    // A binary file is stored but not indexed.
    let r = dav(
        &a,
        "PUT",
        "/notes/blob.bin",
        &key,
        &[],
        b"quokka\x00\x01\x02",
    );
    assert_eq!(r.status, 201);
    let hits = |s: &Server| -> Vec<String> {
        let r = s.post(
            "/api/v1/search/find",
            Some(&key),
            json!({"query": "quokka"}),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.result()["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["uri"].as_str().unwrap().to_string())
            .collect()
    };
    let found = eventually(BOUND, || {
        hits(&b).contains(&"viking://resources/notes/quokka.md".to_string())
    });
    assert!(
        found.is_some(),
        "the WebDAV write reaches find on B: {:?}",
        hits(&b)
    );
    assert!(!hits(&b).iter().any(|u| u.ends_with("blob.bin")));
    // B serves the same bytes over WebDAV.
    assert_eq!(
        dav(&b, "GET", "/notes/blob.bin", &key, &[], b"").raw,
        b"quokka\x00\x01\x02"
    );
}

const LOCKINFO: &[u8] = br#"<?xml version="1.0" encoding="utf-8"?>
<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner><D:href>it-test</D:href></D:owner></D:lockinfo>"#;

/// LOCK `path` exclusively; returns the token (from `Lock-Token`, also in the body).
fn take_lock(s: &Server, path: &str, key: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let r = dav(s, "LOCK", path, key, headers, LOCKINFO);
    assert!(
        r.status == 200 || r.status == 201,
        "LOCK {path}: {}",
        text(&r)
    );
    let header = r
        .header("lock-token")
        .expect("Lock-Token header")
        .to_string();
    let token = header.trim_matches(['<', '>']).to_string();
    assert!(token.starts_with("opaquelocktoken:"), "{header}");
    assert!(text(&r).contains(&token), "{}", text(&r));
    (r.status, token)
}

/// The key works on `s` (another instance learns a new key within its refresh interval).
fn known_on(s: &Server, key: &str) {
    let ok = eventually(BOUND, || {
        dav(s, "PROPFIND", "", key, &[("Depth", "0")], b"").status == 207
    });
    assert!(ok.is_some(), "the key reaches the other instance");
}

#[test]
fn locks_guard_writes_on_every_instance() {
    let st = Storage::new();
    let opts = Opts::default().env("LONGSHIP_AUTH__REFRESH_INTERVAL_MS", "500");
    let a = Server::start(&st, opts.clone());
    let b = Server::start(&st, opts);
    let key = create_account(&a, "acme", "alice");
    let bob = register(&a, &key, "acme", "bob", "user");
    known_on(&b, &key);
    known_on(&b, &bob);
    assert_eq!(dav(&a, "MKCOL", "/docs", &key, &[], b"").status, 201);
    assert_eq!(dav(&a, "PUT", "/docs/a.md", &key, &[], b"one").status, 201);

    // Lock on A; the lock is visible in PROPFIND (with supportedlock) on B.
    let (status, token) = take_lock(&a, "/docs/a.md", &key, &[("Timeout", "Second-600")]);
    assert_eq!(status, 200);
    let xml = propfind(&b, "/docs/a.md", &key, "0");
    assert!(
        xml.contains(&token) && xml.contains("<D:exclusive/>"),
        "{xml}"
    );
    assert!(xml.contains("<D:supportedlock><D:lockentry>"), "{xml}");
    // A second exclusive lock conflicts, on either instance.
    assert_eq!(
        dav(&b, "LOCK", "/docs/a.md", &key, &[], LOCKINFO).status,
        423
    );

    // Writes without the token: 423 on both instances, nothing changed.
    let if_token = format!("(<{token}>)");
    let dest = format!("{DAV}/docs/b.md");
    for s in [&a, &b] {
        assert_eq!(dav(s, "PUT", "/docs/a.md", &key, &[], b"two").status, 423);
        assert_eq!(dav(s, "DELETE", "/docs/a.md", &key, &[], b"").status, 423);
        let r = dav(
            s,
            "MOVE",
            "/docs/a.md",
            &key,
            &[("Destination", &dest)],
            b"",
        );
        assert_eq!(r.status, 423, "{}", text(&r));
        let patch = br#"<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><x xmlns="urn:t">1</x></D:prop></D:set></D:propertyupdate>"#;
        assert_eq!(
            dav(s, "PROPPATCH", "/docs/a.md", &key, &[], patch).status,
            423
        );
        // Deleting the collection would remove the locked member: 423 too.
        assert_eq!(dav(s, "DELETE", "/docs", &key, &[], b"").status, 423);
        // Another user of the account presenting alice's token: still locked.
        let r = dav(s, "PUT", "/docs/a.md", &bob, &[("If", &if_token)], b"bob");
        assert_eq!(r.status, 423, "{}", text(&r));
    }
    assert_eq!(dav(&a, "GET", "/docs/a.md", &key, &[], b"").raw, b"one");

    // With the token (on B, where the lock was not taken): written.
    let r = dav(&b, "PUT", "/docs/a.md", &key, &[("If", &if_token)], b"two");
    assert_eq!(r.status, 204, "{}", text(&r));
    // A false If (an unknown token): 412; a malformed one: 400 at once; nothing changed.
    let r = dav(
        &a,
        "PUT",
        "/docs/a.md",
        &key,
        &[("If", "(<opaquelocktoken:x>)")],
        b"3",
    );
    assert_eq!(r.status, 412, "{}", text(&r));
    for bad in ["(", "<x>", "(<a> junk)", "([unquoted])", "()"] {
        let t = Instant::now();
        let r = dav(&a, "PUT", "/docs/a.md", &key, &[("If", bad)], b"3");
        assert_eq!(r.status, 400, "{bad}: {}", text(&r));
        assert!(t.elapsed() < Duration::from_secs(30));
    }
    assert_eq!(dav(&b, "GET", "/docs/a.md", &key, &[], b"").raw, b"two");

    // A hostile LOCK body of megabytes: 413 at once, no lock taken.
    let t = Instant::now();
    let big = vec![b'<'; 4 * 1024 * 1024];
    let r = dav(&a, "LOCK", "/docs/other.md", &key, &[], &big);
    assert_eq!(r.status, 413, "{}", text(&r));
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(
        dav(&a, "LOCK", "/docs/x.md", &key, &[], b"<junk").status,
        400
    );
    assert_eq!(dav(&a, "GET", "/docs/other.md", &key, &[], b"").status, 404);

    // Refresh (no body, token in If) through B; UNLOCK by bob is refused, by alice on B works.
    let r = dav(
        &b,
        "LOCK",
        "/docs/a.md",
        &key,
        &[("If", &if_token), ("Timeout", "Second-300")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(
        text(&r).contains("Second-300") || text(&r).contains("Second-299"),
        "{}",
        text(&r)
    );
    let lock_token = format!("<{token}>");
    assert_eq!(
        dav(
            &b,
            "UNLOCK",
            "/docs/a.md",
            &bob,
            &[("Lock-Token", &lock_token)],
            b""
        )
        .status,
        403
    );
    assert_eq!(
        dav(
            &b,
            "UNLOCK",
            "/docs/a.md",
            &key,
            &[("Lock-Token", &lock_token)],
            b""
        )
        .status,
        204
    );
    assert_eq!(
        dav(
            &b,
            "UNLOCK",
            "/docs/a.md",
            &key,
            &[("Lock-Token", &lock_token)],
            b""
        )
        .status,
        409
    );
    assert_eq!(dav(&a, "PUT", "/docs/a.md", &key, &[], b"free").status, 204);

    // A depth-infinity lock on the collection guards new members too; the token admits them.
    let (_, coll) = take_lock(&a, "/docs", &key, &[("Depth", "infinity")]);
    assert_eq!(dav(&b, "PUT", "/docs/new.md", &key, &[], b"n").status, 423);
    assert_eq!(dav(&b, "MKCOL", "/docs/sub", &key, &[], b"").status, 423);
    let if_coll = format!("(<{coll}>)");
    assert_eq!(
        dav(&b, "PUT", "/docs/new.md", &key, &[("If", &if_coll)], b"n").status,
        201
    );
    let r = dav(
        &a,
        "UNLOCK",
        "/docs",
        &key,
        &[("Lock-Token", &format!("<{coll}>"))],
        b"",
    );
    assert_eq!(r.status, 204);

    // LOCK of an unmapped URL creates an empty resource (201).
    let (status, fresh) = take_lock(&a, "/docs/fresh.md", &key, &[]);
    assert_eq!(status, 201);
    let r = dav(&b, "GET", "/docs/fresh.md", &key, &[], b"");
    assert_eq!((r.status, r.raw.len()), (200, 0));
    assert_eq!(
        dav(&b, "PUT", "/docs/fresh.md", &key, &[], b"x").status,
        423
    );
    // Deleting it drops its lock: the path is free afterwards.
    let if_fresh = format!("(<{fresh}>)");
    assert_eq!(
        dav(
            &a,
            "DELETE",
            "/docs/fresh.md",
            &key,
            &[("If", &if_fresh)],
            b""
        )
        .status,
        204
    );
    assert_eq!(
        dav(&b, "PUT", "/docs/fresh.md", &key, &[], b"y").status,
        201
    );
}

#[test]
fn a_lock_expires_after_its_capped_timeout() {
    let st = Storage::new();
    let s = Server::start(
        &st,
        Opts::default().env("LONGSHIP_WEBDAV__MAX_LOCK_TIMEOUT_SECS", "4"),
    );
    let key = create_account(&s, "acme", "alice");
    assert_eq!(dav(&s, "PUT", "/t.md", &key, &[], b"t").status, 201);
    let sent = Instant::now();
    let r = dav(
        &s,
        "LOCK",
        "/t.md",
        &key,
        &[("Timeout", "Infinite, Second-99999")],
        LOCKINFO,
    );
    assert_eq!(r.status, 200, "{}", text(&r));
    // Infinite is capped by the configured maximum.
    assert!(
        text(&r).contains("<D:timeout>Second-4</D:timeout>") || text(&r).contains("Second-3<"),
        "{}",
        text(&r)
    );
    let r = dav(&s, "PUT", "/t.md", &key, &[], b"early");
    if sent.elapsed() < Duration::from_secs(3) {
        // Answered well inside the lock's lifetime: refused.
        assert_eq!(r.status, 423, "{}", text(&r));
    }
    // After the timeout the lock is gone: the write goes through, never before it was due.
    let freed = eventually(Duration::from_secs(60), || {
        dav(&s, "PUT", "/t.md", &key, &[], b"late").status == 204
    });
    assert!(freed.is_some(), "the lock expires");
    assert!(
        sent.elapsed() >= Duration::from_millis(3500),
        "{:?}",
        sent.elapsed()
    );
    let xml = propfind(&s, "/t.md", &key, "0");
    assert!(!xml.contains("opaquelocktoken"), "{xml}");
}

#[test]
fn dead_properties_round_trip_and_follow_moves() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let key = create_account(&s, "acme", "alice");
    assert_eq!(dav(&s, "MKCOL", "/p", &key, &[], b"").status, 201);
    assert_eq!(dav(&s, "PUT", "/p/a.md", &key, &[], b"a").status, 201);
    let set = br#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:zoo"><D:set><D:prop><Z:animal>koala &amp; <Z:b>joey</Z:b></Z:animal><Z:colour>grey</Z:colour></D:prop></D:set></D:propertyupdate>"#;
    let r = dav(&s, "PROPPATCH", "/p/a.md", &key, &[], set);
    assert_eq!(r.status, 207, "{}", text(&r));
    assert_eq!(
        text(&r).matches("HTTP/1.1 200 OK").count(),
        1,
        "{}",
        text(&r)
    );
    let named = br#"<D:propfind xmlns:D="DAV:"><D:prop><Z:animal xmlns:Z="urn:zoo"/><Z:size xmlns:Z="urn:zoo"/><D:getcontentlength/></D:prop></D:propfind>"#;
    let by_name = |path: &str| {
        let r = dav(&s, "PROPFIND", path, &key, &[("Depth", "0")], named);
        assert_eq!(r.status, 207, "{}", text(&r));
        text(&r)
    };
    let xml = by_name("/p/a.md");
    assert!(
        xml.contains(
            r#"<X:animal xmlns:X="urn:zoo">koala &amp; <b xmlns="urn:zoo">joey</b></X:animal>"#
        ),
        "{xml}"
    );
    assert!(
        xml.contains("<D:getcontentlength>1</D:getcontentlength>"),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<X:size xmlns:X="urn:zoo"/></D:prop><D:status>HTTP/1.1 404 Not Found"#),
        "{xml}"
    );
    assert!(!xml.contains("grey"), "only the named ones: {xml}");
    assert!(
        propfind(&s, "/p/", &key, "1").contains("grey"),
        "allprop lists dead ones"
    );

    // A live property is protected: 403 for it, 424 for the rest, nothing changed.
    let live = br#"<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><D:getetag>x</D:getetag><y xmlns="urn:zoo">1</y></D:prop></D:set></D:propertyupdate>"#;
    let r = dav(&s, "PROPPATCH", "/p/a.md", &key, &[], live);
    assert_eq!(r.status, 207);
    assert!(
        text(&r).contains("403 Forbidden") && text(&r).contains("424 Failed Dependency"),
        "{}",
        text(&r)
    );
    assert!(!propfind(&s, "/p/a.md", &key, "0").contains("urn:zoo\">1<"));
    // Malformed and missing: 400, 404.
    assert_eq!(
        dav(&s, "PROPPATCH", "/p/a.md", &key, &[], b"<x").status,
        400
    );
    assert_eq!(
        dav(&s, "PROPPATCH", "/p/none.md", &key, &[], set).status,
        404
    );

    // MOVE carries them; the old name has none; COPY duplicates; DELETE drops them.
    let dest = |p: &str| format!("http://127.0.0.1:{}{DAV}{p}", s.port);
    let r = dav(
        &s,
        "MOVE",
        "/p/a.md",
        &key,
        &[("Destination", &dest("/p/b.md"))],
        b"",
    );
    assert_eq!(r.status, 201);
    assert!(by_name("/p/b.md").contains("koala"));
    assert_eq!(dav(&s, "PUT", "/p/a.md", &key, &[], b"again").status, 201);
    assert!(!by_name("/p/a.md").contains("koala"));
    // A moved collection carries its members' properties.
    assert_eq!(
        dav(&s, "MOVE", "/p", &key, &[("Destination", &dest("/q"))], b"").status,
        201
    );
    assert!(by_name("/q/b.md").contains("koala"));
    assert_eq!(
        dav(
            &s,
            "COPY",
            "/q/b.md",
            &key,
            &[("Destination", &dest("/q/c.md"))],
            b""
        )
        .status,
        201
    );
    assert!(by_name("/q/c.md").contains("koala"));
    assert_eq!(dav(&s, "DELETE", "/q/b.md", &key, &[], b"").status, 204);
    assert_eq!(dav(&s, "PUT", "/q/b.md", &key, &[], b"new").status, 201);
    assert!(!by_name("/q/b.md").contains("koala"));

    // Bounded: more than 64 properties on one resource is 507 and changes nothing.
    let mut many = String::from(r#"<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>"#);
    for i in 0..70 {
        many.push_str(&format!(r#"<n{i} xmlns="urn:many">v</n{i}>"#));
    }
    many.push_str("</D:prop></D:set></D:propertyupdate>");
    let r = dav(&s, "PROPPATCH", "/q/c.md", &key, &[], many.as_bytes());
    assert_eq!(r.status, 507, "{}", text(&r));
    assert!(!propfind(&s, "/q/c.md", &key, "0").contains("urn:many"));
    // The map itself is never addressable.
    assert_eq!(
        dav(&s, "GET", "/q/.longship-props", &key, &[], b"").status,
        404
    );
}

#[test]
fn a_put_larger_than_the_body_limit_streams_and_round_trips() {
    let st = Storage::new();
    let s = Server::start(
        &st,
        Opts::default()
            .env("LONGSHIP_SERVER__MAX_BODY_BYTES", "1048576")
            .env("LONGSHIP_WEBDAV__MAX_PUT_BYTES", "31457280"),
    );
    let key = create_account(&s, "acme", "alice");
    assert_eq!(dav(&s, "MKCOL", "/big", &key, &[], b"").status, 201);
    // 20 MiB + a little: 20x the body limit, three staging pieces of 8 MiB.
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let bytes: Vec<u8> = (0..20 * 1024 * 1024 + 12_345)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as u8
        })
        .collect();
    let r = dav(&s, "PUT", "/big/blob.bin", &key, &[], &bytes);
    assert_eq!(r.status, 201, "{}", text(&r));
    let r = dav(&s, "GET", "/big/blob.bin", &key, &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.raw.len(), bytes.len());
    assert!(r.raw == bytes, "the streamed PUT is stored byte-exact");
    // Replacing it the same way is 204; a small body still takes the one-write path.
    let r = dav(
        &s,
        "PUT",
        "/big/blob.bin",
        &key,
        &[],
        &bytes[..9 * 1024 * 1024],
    );
    assert_eq!(r.status, 204, "{}", text(&r));
    assert!(dav(&s, "GET", "/big/blob.bin", &key, &[], b"").raw == bytes[..9 * 1024 * 1024]);
    assert_eq!(
        dav(&s, "PUT", "/big/small.md", &key, &[], b"small").status,
        201
    );
    // The staging pieces are gone once the PUT answered.
    let staged = st.list("acme/_system/uploads");
    assert!(staged.is_empty(), "{staged:?}");
    // Over webdav.max_put_bytes (announced): 413 from the headers, nothing stored.
    let big = vec![b'x'; 31 * 1024 * 1024];
    let t = Instant::now();
    let r = dav(&s, "PUT", "/big/huge.bin", &key, &[], &big);
    assert_eq!(r.status, 413, "{}", text(&r));
    assert!(t.elapsed() < Duration::from_secs(60));
    assert_eq!(dav(&s, "GET", "/big/huge.bin", &key, &[], b"").status, 404);
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = seed;
    (0..len)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as u8
        })
        .collect()
}

/// A GET of a file larger than the server's GET piece (4 MiB) is streamed piece by piece:
/// the bytes arrive identical at every size around the piece boundaries, with the announced
/// length, and a file replaced while a GET is under way is never spliced: the client gets
/// the whole old file or a body cut short of its Content-Length, whose bytes are the old
/// file's. (Peak RSS of a 200 MB GET is measured in bench/webdav_scale.sh, not asserted.)
#[test]
fn a_large_get_streams_the_file_byte_identical() {
    use std::io::{Read, Write};
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let key = create_account(&s, "acme", "alice");
    assert_eq!(dav(&s, "MKCOL", "/big", &key, &[], b"").status, 201);
    const MIB: usize = 1024 * 1024;
    for (i, len) in [4 * MIB + 1, 8 * MIB, 13 * MIB + 777]
        .into_iter()
        .enumerate()
    {
        let bytes = noise(len, 0x9e37_79b9_7f4a_7c15 + i as u64);
        let path = format!("/big/f{i}.bin");
        let r = dav(&s, "PUT", &path, &key, &[], &bytes);
        assert_eq!(r.status, 201, "{}", text(&r));
        let r = dav(&s, "GET", &path, &key, &[], b"");
        assert_eq!(r.status, 200, "{}", text(&r));
        assert_eq!(
            r.header("content-length").map(|v| v.to_string()),
            Some(len.to_string())
        );
        assert_eq!(r.raw.len(), len);
        assert!(r.raw == bytes, "GET of {len} bytes is byte-identical");
        let r = dav(&s, "HEAD", &path, &key, &[], b"");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-length").map(|v| v.to_string()),
            Some(len.to_string())
        );
    }

    // Replaced during a GET read slowly on a raw connection.
    let old = noise(24 * MIB + 5, 7);
    let new = noise(24 * MIB + 5, 8);
    assert_eq!(
        dav(&s, "PUT", "/big/moving.bin", &key, &[], &old).status,
        201
    );
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    write!(
        conn,
        "GET {DAV}/big/moving.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < 2 * MIB {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "the GET ended before 2 MiB");
        got.extend_from_slice(&buf[..n]);
    }
    let r = dav(&s, "PUT", "/big/moving.bin", &key, &[], &new);
    assert_eq!(r.status, 204, "{}", text(&r));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A reset when the server drops the connection mid-body ends it too.
            Err(_) => break,
        }
        assert!(Instant::now() < deadline, "the GET did not end");
    }
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response headers")
        + 4;
    let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", old.len())),
        "{head}"
    );
    let body = &got[head_end..];
    assert!(body.len() <= old.len());
    assert!(
        body == &old[..body.len()],
        "the body is a prefix of the old file ({} of {} bytes), never spliced with the new one",
        body.len(),
        old.len()
    );
    // After the replacement, a new GET sends the new file whole.
    let r = dav(&s, "GET", "/big/moving.bin", &key, &[], b"");
    assert!(r.raw == new);
}
