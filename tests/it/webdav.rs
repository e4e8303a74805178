//! WebDAV (`/webdav/resources`, issue #24) through a plain HTTP client against the real
//! binary: every method, the three ways to present a key, hostile input, tenant isolation and
//! a WebDAV write found by `find` on another instance. Runs on both storage backends.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::find::eventually;
use crate::harness::api::create_account;
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
    assert_eq!(r.header("dav"), Some("1"));
    for m in ["PROPFIND", "PUT", "MKCOL", "MOVE", "DELETE"] {
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
