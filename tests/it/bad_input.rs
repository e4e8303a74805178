//! Hardening sweep: every route registered in `src/http` gets bad input (malformed JSON, wrong
//! types, unknown keys where forbidden, oversized and lying bodies, bad query values, hostile
//! path segments, bad headers). Every answer must be a 4xx error envelope with a request id,
//! the server must stay healthy, and the stored data must not change by a single byte.
//!
//! Requests go over a raw TCP socket so the test controls every byte (invalid UTF-8, lying
//! `Content-Length`, chunked bodies, non-ASCII header values) and sees a dropped connection as
//! the failure it is.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{json, Value};

use crate::harness::wire::{exchange, request, Raw};
use crate::harness::{Opts, Server, Storage, ROOT_KEY};

/// Spec §1.2 codes (the error codes a client may see).
const SPEC_CODES: &[&str] = &[
    "INVALID_ARGUMENT",
    "INVALID_URI",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "CONFLICT",
    "ABORTED",
    "FAILED_PRECONDITION",
    "SESSION_EXPIRED",
    "RESOURCE_EXHAUSTED",
    "DEADLINE_EXCEEDED",
    "UNAVAILABLE",
    "UNIMPLEMENTED",
    "INTERNAL",
];

const MAX_BODY: usize = 65536;

/// gzip of `{"pad": "aaaa…"}` with 10 MB of `a`, built once.
static GZIP_BOMB: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    // Compressed with the `gzip` CLI: no deflate encoder is among the dev-dependencies.
    let mut json = br#"{"pad": ""#.to_vec();
    json.extend(std::iter::repeat_n(b'a', 10_000_000));
    json.extend_from_slice(br#""}"#);
    let mut child = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the gzip CLI");
    let mut stdin = child.stdin.take().expect("gzip stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&json));
    let out = child.wait_with_output().expect("gzip output");
    writer.join().expect("gzip writer").expect("write to gzip");
    assert!(
        out.status.success() && out.stdout.len() < 100_000,
        "gzip failed"
    );
    out.stdout
});

/// What a rejected request must look like.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Any 4xx error envelope.
    Any4xx,
    /// This exact status.
    Status(u16),
    /// 400 `INVALID_ARGUMENT` with `details.validation_errors`.
    Validation,
    /// 400 validation error of this `type` (e.g. `extra_forbidden`).
    ValidationType(&'static str),
    /// This status, or the connection closed without an answer: a transfer-encoding error is
    /// detected by actix's HTTP/1 dispatcher, which may abort the connection before the
    /// handler's 400 is flushed (protocol level, like the parser's own bare rejections).
    StatusOrClosed(u16),
}

struct Case {
    name: String,
    bytes: Vec<u8>,
    expect: Expect,
    half_close: bool,
}

impl Case {
    fn new(name: impl Into<String>, bytes: Vec<u8>, expect: Expect) -> Self {
        Case {
            name: name.into(),
            bytes,
            expect,
            half_close: false,
        }
    }
}

/// Assert that `r` is a well-formed 4xx error envelope as `expect` says.
fn check(case: &str, r: &Raw, expect: Expect) {
    let body = r.json();
    let shown = String::from_utf8_lossy(&r.body[..r.body.len().min(600)]).to_string();
    assert!(
        (400..500).contains(&r.status),
        "{case}: status {} is not 4xx; body {shown}",
        r.status
    );
    assert_eq!(
        body["status"], "error",
        "{case}: not an error envelope: {shown}"
    );
    let code = body["error"]["code"].as_str().unwrap_or("");
    assert!(
        SPEC_CODES.contains(&code),
        "{case}: error.code {code:?} is not a spec code: {shown}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{case}: error.message missing: {shown}"
    );
    assert!(body["time"].is_number(), "{case}: `time` missing: {shown}");
    assert!(
        r.header("x-request-id").is_some_and(|v| !v.is_empty()),
        "{case}: no X-Request-ID header: {:?}",
        r.headers
    );
    let validation = |kind: Option<&str>| {
        assert_eq!(
            r.status, 400,
            "{case}: validation failure must be 400: {shown}"
        );
        assert_eq!(code, "INVALID_ARGUMENT", "{case}: {shown}");
        let errors = body["error"]["details"]["validation_errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{case}: no details.validation_errors: {shown}"));
        assert!(!errors.is_empty(), "{case}: empty validation_errors");
        for e in errors {
            assert!(
                e["loc"].as_array().is_some_and(|l| !l.is_empty())
                    && e["message"].is_string()
                    && e["type"].is_string(),
                "{case}: validation error not {{loc, message, type}}: {e}"
            );
        }
        if let Some(kind) = kind {
            assert!(
                errors.iter().any(|e| e["type"] == kind),
                "{case}: expected a validation error of type {kind}: {shown}"
            );
        }
    };
    match expect {
        Expect::Any4xx => {}
        Expect::Status(s) | Expect::StatusOrClosed(s) => assert_eq!(r.status, s, "{case}: {shown}"),
        Expect::Validation => validation(None),
        Expect::ValidationType(kind) => validation(Some(kind)),
    }
}

/// Run a case and check it.
fn run_case(port: u16, case: &Case) {
    let r = match (exchange(port, &case.bytes, case.half_close), case.expect) {
        (Ok(r), _) => r,
        (Err(_), Expect::StatusOrClosed(_)) => return,
        (Err(e), _) => panic!("{}: no response: {e}", case.name),
    };
    check(&case.name, &r, case.expect);
}

fn assert_healthy(s: &Server, after: &str) {
    let r = exchange(s.port, &request("GET", "/health", None, &[], None), false)
        .unwrap_or_else(|e| panic!("server unhealthy after {after}: {e}"));
    assert_eq!(
        r.status,
        200,
        "server unhealthy after {after}: {:?}",
        r.json()
    );
    let log = s.log_text();
    assert!(
        !log.contains("panicked"),
        "a panic was logged after {after}:\n{}",
        &log[log.find("panicked").unwrap_or(0)..]
            .chars()
            .take(2000)
            .collect::<String>()
    );
}

fn assert_unchanged(before: &BTreeMap<String, String>, st: &Storage, after: &str) {
    let now = st.stored_digest("");
    let changed: Vec<String> = before
        .iter()
        .filter(|(k, v)| now.get(*k) != Some(v))
        .map(|(k, _)| format!("changed/removed {k}"))
        .chain(
            now.keys()
                .filter(|k| !before.contains_key(*k))
                .map(|k| format!("added {k}")),
        )
        .collect();
    assert!(
        changed.is_empty(),
        "stored data changed after {after}: {changed:#?}"
    );
}

/// Keys and fixtures of the sweep.
struct World {
    admin: String,
    user: String,
}

fn setup(s: &Server) -> World {
    let r = s.post(
        "/api/v1/admin/accounts",
        Some(ROOT_KEY),
        json!({"account_id": "acme", "admin_user_id": "alice"}),
    );
    assert_eq!(r.status, 200, "create account: {:?}", r.body);
    let admin = r.result()["user_key"].as_str().unwrap().to_string();
    let r = s.post(
        "/api/v1/admin/accounts/acme/users",
        Some(ROOT_KEY),
        json!({"user_id": "bob", "role": "user"}),
    );
    assert_eq!(r.status, 200, "register bob: {:?}", r.body);
    let user = r.result()["user_key"].as_str().unwrap().to_string();
    let ok = |what: &str, r: crate::harness::Resp| {
        assert_eq!(r.status, 200, "setup {what}: {:?}", r.body);
    };
    ok(
        "write",
        s.post(
            "/api/v1/content/write",
            Some(&user),
            json!({"uri": "viking://resources/docs/a.md", "content": "hello\nworld\n"}),
        ),
    );
    // A real file whose name is U+FFFD: a lossily decoded `%FF` must not reach it.
    ok(
        "write U+FFFD",
        s.post(
            "/api/v1/content/write",
            Some(&user),
            json!({"uri": "viking://resources/docs/\u{FFFD}.md", "content": "keep me"}),
        ),
    );
    ok(
        "session",
        s.post("/api/v1/sessions", Some(&user), json!({"session_id": "s1"})),
    );
    ok(
        "message",
        s.post(
            "/api/v1/sessions/s1/messages",
            Some(&user),
            json!({"role": "user", "content": "hi"}),
        ),
    );
    World { admin, user }
}

/// Unknown top-level keys are ignored where the spec does not forbid them (spec §1.3). Runs
/// before the snapshot: these requests succeed and may write.
fn unknown_keys_are_accepted(s: &Server, w: &World) {
    let u = Some(w.user.as_str());
    let cases: Vec<(&str, crate::harness::Resp)> = vec![
        (
            "grep",
            s.post(
                "/api/v1/search/grep",
                u,
                json!({"uri": "viking://resources", "pattern": "x", "zzz": 1}),
            ),
        ),
        (
            "glob",
            s.post("/api/v1/search/glob", u, json!({"pattern": "*", "zzz": 1})),
        ),
        (
            "mkdir",
            s.post(
                "/api/v1/fs/mkdir",
                u,
                json!({"uri": "viking://resources/unk", "zzz": {"a": 1}}),
            ),
        ),
        (
            "session create",
            s.post(
                "/api/v1/sessions",
                u,
                json!({"session_id": "unk", "zzz": [1]}),
            ),
        ),
        (
            "commit",
            s.post("/api/v1/sessions/unk/commit", u, json!({"zzz": true})),
        ),
        (
            "message",
            s.post(
                "/api/v1/sessions/unk/messages",
                u,
                json!({"role": "user", "content": "x", "zzz": 1}),
            ),
        ),
        (
            "register user",
            s.post(
                "/api/v1/admin/accounts/acme/users",
                Some(ROOT_KEY),
                json!({"user_id": "carol", "zzz": 1}),
            ),
        ),
    ];
    for (name, r) in cases {
        assert_eq!(r.status, 200, "unknown key refused by {name}: {:?}", r.body);
    }
}

/// The body-taking routes: (name, method, path, key, a valid body, optional-body route).
fn body_routes(
    w: &World,
) -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    String,
    Value,
    bool,
)> {
    let root = ROOT_KEY.to_string();
    let u = w.user.clone();
    vec![
        (
            "A1 create account",
            "POST",
            "/api/v1/admin/accounts",
            root.clone(),
            json!({"account_id": "newacct", "admin_user_id": "u1"}),
            false,
        ),
        (
            "A4 register user",
            "POST",
            "/api/v1/admin/accounts/acme/users",
            w.admin.clone(),
            json!({"user_id": "newuser", "role": "user"}),
            false,
        ),
        (
            "A7 set role",
            "PUT",
            "/api/v1/admin/accounts/acme/users/bob/role",
            root.clone(),
            json!({"role": "admin"}),
            false,
        ),
        (
            "A8 regenerate key",
            "POST",
            "/api/v1/admin/accounts/acme/users/bob/key",
            root,
            json!({"seed": "s"}),
            true,
        ),
        (
            "F4 mkdir",
            "POST",
            "/api/v1/fs/mkdir",
            u.clone(),
            json!({"uri": "viking://resources/newdir"}),
            false,
        ),
        (
            "F6 mv",
            "POST",
            "/api/v1/fs/mv",
            u.clone(),
            json!({"from_uri": "viking://resources/docs/a.md", "to_uri": "viking://resources/docs/b.md"}),
            false,
        ),
        (
            "C5 write",
            "POST",
            "/api/v1/content/write",
            u.clone(),
            json!({"uri": "viking://resources/docs/a.md", "content": "changed"}),
            false,
        ),
        (
            "S1 grep",
            "POST",
            "/api/v1/search/grep",
            u.clone(),
            json!({"uri": "viking://resources", "pattern": "x"}),
            false,
        ),
        (
            "S2 glob",
            "POST",
            "/api/v1/search/glob",
            u.clone(),
            json!({"pattern": "*"}),
            false,
        ),
        (
            "SE1 create session",
            "POST",
            "/api/v1/sessions",
            u.clone(),
            json!({"session_id": "newsess"}),
            true,
        ),
        (
            "SE5 add message",
            "POST",
            "/api/v1/sessions/s1/messages",
            u.clone(),
            json!({"role": "user", "content": "hi"}),
            false,
        ),
        (
            "SE6 batch",
            "POST",
            "/api/v1/sessions/s1/messages/batch",
            u.clone(),
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            false,
        ),
        (
            "SE7 commit",
            "POST",
            "/api/v1/sessions/s1/commit",
            u,
            json!({"keep_recent_count": 0}),
            true,
        ),
    ]
}

/// Field substitutions that must each give a 400 (route name, field, bad value, expectation).
/// Each is applied to the route's valid body.
fn field_cases() -> Vec<(&'static str, &'static str, Value, Expect)> {
    let v = Expect::Validation;
    let any400 = Expect::Status(400);
    let xf = Expect::ValidationType("extra_forbidden");
    let mut out = Vec::new();
    let wrong_string = [json!(1), json!(true), json!([]), json!({}), json!(1.5)];
    let strings: &[(&str, &str)] = &[
        ("A1 create account", "account_id"),
        ("A1 create account", "admin_user_id"),
        ("A1 create account", "seed"),
        ("A4 register user", "user_id"),
        ("A4 register user", "role"),
        ("A4 register user", "seed"),
        ("A7 set role", "role"),
        ("A8 regenerate key", "seed"),
        ("F4 mkdir", "uri"),
        ("F4 mkdir", "description"),
        ("F6 mv", "from_uri"),
        ("F6 mv", "to_uri"),
        ("C5 write", "uri"),
        ("C5 write", "content"),
        ("C5 write", "mode"),
        ("C5 write", "processing_mode"),
        ("C5 write", "tag_mode"),
        ("C5 write", "edit_source"),
        ("S1 grep", "uri"),
        ("S1 grep", "pattern"),
        ("S1 grep", "exclude_uri"),
        ("S2 glob", "pattern"),
        ("S2 glob", "uri"),
        ("SE1 create session", "session_id"),
        ("SE5 add message", "role"),
        ("SE5 add message", "content"),
        ("SE5 add message", "created_at"),
        ("SE5 add message", "peer_id"),
        ("SE5 add message", "message_kind"),
        ("SE5 add message", "turn_id"),
    ];
    for (route, field) in strings {
        for bad in &wrong_string {
            out.push((*route, *field, bad.clone(), v));
        }
    }
    let wrong_int = [json!("x"), json!(1.5), json!(true), json!([1]), json!({})];
    let ints: &[(&str, &str)] = &[
        ("S1 grep", "node_limit"),
        ("S1 grep", "level_limit"),
        ("S1 grep", "before_context"),
        ("S1 grep", "after_context"),
        ("S2 glob", "node_limit"),
        ("SE7 commit", "keep_recent_count"),
    ];
    for (route, field) in ints {
        for bad in &wrong_int {
            out.push((*route, *field, bad.clone(), v));
        }
    }
    let wrong_bool = [json!("maybe"), json!(2), json!([]), json!({})];
    for (route, field) in [
        ("C5 write", "wait"),
        ("S1 grep", "case_insensitive"),
        ("SE7 commit", "enable_working_memory"),
        ("SE7 commit", "reset_context"),
    ] {
        for bad in &wrong_bool {
            out.push((route, field, bad.clone(), v));
        }
    }
    // Objects and lists.
    for (route, field, bad) in [
        ("A1 create account", "user_config", json!("str")),
        ("A1 create account", "user_config", json!([1])),
        ("A4 register user", "user_config", json!(5)),
        ("C5 write", "tags", json!("x")),
        ("C5 write", "telemetry", json!("x")),
        ("S2 glob", "extra_fields", json!("x")),
        ("SE1 create session", "auto_commit_policy", json!("x")),
        ("SE1 create session", "memory_policy", json!([1])),
        ("SE5 add message", "parts", json!("x")),
        ("SE5 add message", "parts", json!([1])),
        ("SE5 add message", "source_message_ids", json!("x")),
        ("SE6 batch", "messages", json!("x")),
        ("SE6 batch", "messages", json!([1])),
        ("SE6 batch", "messages", json!({})),
        ("SE7 commit", "extraction_metadata", json!("x")),
    ] {
        out.push((route, field, bad, v));
    }
    // Values of the right type that are out of range or not allowed.
    for (route, field, bad, e) in [
        ("A1 create account", "account_id", json!("../x"), any400),
        ("A1 create account", "account_id", json!("a\u{0}b"), any400),
        ("A1 create account", "account_id", json!("_system"), any400),
        (
            "A1 create account",
            "account_id",
            json!("x".repeat(300)),
            any400,
        ),
        ("A1 create account", "admin_user_id", json!("é"), any400),
        ("A1 create account", "seed", json!(""), any400),
        ("A4 register user", "role", json!("Admin"), any400),
        (
            "A4 register user",
            "role",
            json!("root"),
            Expect::Status(403),
        ),
        ("A4 register user", "user_id", json!(".."), any400),
        ("A7 set role", "role", json!("user"), any400),
        ("A8 regenerate key", "seed", json!(""), any400),
        (
            "F4 mkdir",
            "uri",
            json!("viking://resources/../user"),
            Expect::Any4xx,
        ),
        (
            "F4 mkdir",
            "uri",
            json!("viking://resources/a\u{0}b"),
            any400,
        ),
        ("F4 mkdir", "uri", json!("/etc/passwd"), Expect::Any4xx),
        ("F4 mkdir", "uri", json!("viking://temp/x"), any400),
        (
            "F6 mv",
            "to_uri",
            json!("viking://resources/docs/a.md/x"),
            Expect::Any4xx,
        ),
        (
            "F6 mv",
            "to_uri",
            json!("viking://resources/docs/a.md"),
            any400,
        ),
        (
            "F6 mv",
            "to_uri",
            json!("viking://user/alice/x.md"),
            Expect::Any4xx,
        ),
        ("C5 write", "mode", json!("bogus"), any400),
        ("C5 write", "processing_mode", json!("bogus"), v),
        (
            "C5 write",
            "uri",
            json!("viking://resources/docs/x.bin"),
            any400,
        ),
        (
            "C5 write",
            "uri",
            json!("viking://resources/docs/.relations.json"),
            any400,
        ),
        ("C5 write", "uri", json!("viking://resources/docs"), any400),
        (
            "C5 write",
            "uri",
            json!("viking://resources/%2e%2e/x.md"),
            any400,
        ),
        (
            "C5 write",
            "uri",
            json!("viking://user/alice/memories/x.md"),
            Expect::Any4xx,
        ),
        ("S1 grep", "pattern", json!("(unclosed"), any400),
        ("S1 grep", "pattern", json!("(a{1000}){1000}"), any400),
        ("S1 grep", "before_context", json!(-1), v),
        ("S1 grep", "level_limit", json!(0), v),
        (
            "S1 grep",
            "uri",
            json!("viking://resources/nope"),
            Expect::Status(404),
        ),
        ("S2 glob", "pattern", json!(""), any400),
        ("S2 glob", "pattern", json!("[z-a"), any400),
        ("SE1 create session", "session_id", json!("a/b"), any400),
        ("SE1 create session", "session_id", json!(".."), any400),
        (
            "SE1 create session",
            "session_id",
            json!("x".repeat(256)),
            any400,
        ),
        (
            "SE1 create session",
            "session_id",
            json!("s1"),
            Expect::Status(409),
        ),
        (
            "SE1 create session",
            "auto_commit_policy",
            json!({"zzz": 1}),
            xf,
        ),
        (
            "SE1 create session",
            "auto_commit_policy",
            json!({"keep_recent_count": null}),
            any400,
        ),
        (
            "SE1 create session",
            "memory_policy",
            json!({"zzz": 1}),
            any400,
        ),
        (
            "SE1 create session",
            "memory_extraction_config",
            json!({"zzz": 1}),
            xf,
        ),
        (
            "SE1 create session",
            "memory_extraction_config",
            json!({"events": {"zzz": 1}}),
            xf,
        ),
        ("SE5 add message", "message_kind", json!("bogus"), any400),
        ("SE5 add message", "peer_id", json!("bad/peer"), any400),
        ("SE7 commit", "keep_recent_count", json!(-1), v),
        ("SE7 commit", "keep_recent_count", json!(10001), v),
        ("SE7 commit", "retention_mode", json!("bogus"), any400),
        ("SE7 commit", "keep_recent_turn_count", json!(2), any400),
        (
            "SE7 commit",
            "retained_message_token_budget",
            json!(0),
            any400,
        ),
        ("SE7 commit", "extraction_metadata", json!({"zzz": 1}), xf),
        (
            "SE7 commit",
            "extraction_metadata",
            json!({"event": {"zzz": 1}}),
            xf,
        ),
    ] {
        out.push((route, field, bad, e));
    }
    // Deeper than the filesystem allows (ENAMETOOLONG on the local backend).
    let deep = format!("viking://resources/{}", "a/".repeat(3000));
    for (route, field) in [
        ("F4 mkdir", "uri"),
        ("F6 mv", "to_uri"),
        ("C5 write", "uri"),
        ("S1 grep", "uri"),
        ("S2 glob", "uri"),
    ] {
        let uri = if route == "C5 write" {
            format!("{deep}x.md")
        } else {
            deep.clone()
        };
        out.push((route, field, json!(uri), Expect::Any4xx));
    }
    let too_many: Vec<Value> = (0..101)
        .map(|_| json!({"role": "user", "content": "x"}))
        .collect();
    out.push(("SE6 batch", "messages", Value::Array(too_many), any400));
    // The content/write body forbids unknown keys.
    out.push(("C5 write", "zzz", json!(1), xf));
    out
}

/// Bodies that are not a JSON object at all, or not JSON.
fn malformed_bodies() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("`{`", b"{".to_vec()),
        ("`[1,2`", b"[1,2".to_vec()),
        ("string", br#""str""#.to_vec()),
        ("null", b"null".to_vec()),
        ("array", br#"["newacct", "u1"]"#.to_vec()),
        ("empty array", b"[]".to_vec()),
        ("number", b"42".to_vec()),
        ("trailing garbage", br#"{"a": 1} x"#.to_vec()),
        (
            "invalid UTF-8",
            b"{\"uri\": \"\xff\xfe\", \"x\": \"\xc3\"}".to_vec(),
        ),
        ("bare invalid UTF-8", b"\xff\xff\xff".to_vec()),
        ("unterminated string", br#"{"uri": "abc"#.to_vec()),
        ("deep nesting", {
            let mut b = Vec::new();
            for _ in 0..1000 {
                b.extend_from_slice(br#"{"a":"#);
            }
            b
        }),
    ]
}

/// Path segments that name nothing valid (percent-encoded on the wire).
fn bad_segments() -> Vec<(&'static str, String)> {
    vec![
        ("%00", "a%00b".into()),
        ("%2F", "a%2Fb".into()),
        ("%2F..%2F", "..%2F..%2F_system".into()),
        ("..", "..".into()),
        ("%2E%2E", "%2E%2E".into()),
        ("10 KB", "a".repeat(10 * 1024)),
        ("unicode", "%E2%98%83%C3%A9".into()),
        ("invalid UTF-8", "%FF%FE".into()),
        ("space", "a%20b".into()),
        ("backslash", "a%5Cb".into()),
        // Well-formed ids that name nothing.
        ("unknown id", "ghost".into()),
    ]
}

/// One server holding the sweep's fixtures (an account with an admin and a user, a file, a
/// session with a message) and a digest of everything stored before any bad request.
struct Sweep {
    st: Storage,
    s: Server,
    w: World,
    before: BTreeMap<String, String>,
}

impl Sweep {
    fn start() -> Sweep {
        let st = Storage::new();
        let s = Server::start(
            &st,
            crate::layout::with_summaries(Opts::default())
                .env("LONGSHIP_SERVER__MAX_BODY_BYTES", &MAX_BODY.to_string()),
        );
        let w = setup(&s);
        // The fixtures' directory summaries are refreshed in the background: snapshot after.
        crate::layout::wait_summaries_settled(&st, "acme");
        let before = st.stored_digest("");
        // Keys are relative to the data dir on local disk, to the prefix on S3.
        let root = if st.is_s3() { "" } else { "viking/" };
        for must in [
            "_system/accounts.json",
            "acme/_system/users.json",
            "acme/resources/docs/a.md",
            "acme/user/bob/sessions/s1/messages.jsonl",
        ] {
            assert!(
                before.contains_key(&format!("{root}{must}")),
                "snapshot misses {must}: {:?}",
                before.keys().collect::<Vec<_>>()
            );
        }
        Sweep { st, s, w, before }
    }

    /// After `what` (`checked` rejected requests, at least `at_least`): nothing stored changed
    /// by a byte and the fixtures still read back through the API.
    fn finish(self, what: &str, checked: usize, at_least: usize) {
        let Sweep { st, s, w, before } = self;
        let u = w.user.as_str();
        // Nothing rejected above changed a byte of stored data.
        assert_unchanged(&before, &st, what);
        // The fixtures still read back through the API.
        let r = s.get(
            "/api/v1/content/read?uri=viking://resources/docs/a.md",
            Some(u),
        );
        assert_eq!(r.status, 200, "fixture file after the sweep: {:?}", r.body);
        assert_eq!(r.result(), "hello\nworld\n", "fixture file content changed");
        let r = s.get("/api/v1/sessions/s1", Some(u));
        assert_eq!(
            r.status, 200,
            "fixture session after the sweep: {:?}",
            r.body
        );
        assert_eq!(r.result()["message_count"], 1, "session messages changed");
        let r = s.get("/api/v1/admin/accounts/acme/users/bob", Some(ROOT_KEY));
        assert_eq!(
            r.result()["role"],
            "user",
            "bob's role changed: {:?}",
            r.body
        );
        let r = s.get("/api/v1/system/status", Some(&w.admin));
        assert_eq!(r.status, 200, "admin key no longer valid: {:?}", r.body);
        eprintln!("{what}: {checked} rejected requests checked");
        assert!(
            checked >= at_least,
            "{what} shrank to {checked} cases (was {at_least})"
        );
    }
}

/// Bodies on every body-taking route: malformed, wrong field types, forbidden unknown keys,
/// oversized (also chunked and gzip-bombed), lying `Content-Length`s, broken chunking.
#[test]
fn bad_bodies_on_every_body_route() {
    let sweep = Sweep::start();
    let (s, w) = (&sweep.s, &sweep.w);
    let port = s.port;
    let mut total = 0usize;
    let routes = body_routes(w);
    for (name, method, path, key, valid, optional) in &routes {
        let mut cases = Vec::new();
        for (what, body) in malformed_bodies() {
            // `null` is the empty body of an optional-body route (spec §1.3): accepted.
            if *optional && what == "null" {
                continue;
            }
            cases.push(Case::new(
                format!("{name}: malformed body {what}"),
                request(method, path, Some(key), &[], Some(&body)),
                Expect::Validation,
            ));
        }
        if !optional {
            cases.push(Case::new(
                format!("{name}: empty body"),
                request(method, path, Some(key), &[], Some(b"")),
                Expect::Validation,
            ));
        }
        for (route, field, bad, expect) in field_cases() {
            if route != *name {
                continue;
            }
            let mut body = valid.clone();
            body[field] = bad.clone();
            let bytes = serde_json::to_vec(&body).unwrap();
            cases.push(Case::new(
                format!("{name}: {field}={bad}"),
                request(method, path, Some(key), &[], Some(&bytes)),
                expect,
            ));
        }
        // Over server.max_body_bytes: a valid JSON object padded past the limit.
        let mut big = valid.clone();
        big["pad"] = json!("p".repeat(70 * 1024));
        let big = serde_json::to_vec(&big).unwrap();
        assert!(big.len() > MAX_BODY);
        cases.push(Case::new(
            format!("{name}: 70 KB body"),
            request(method, path, Some(key), &[], Some(&big)),
            Expect::Status(413),
        ));
        // The same body, chunked (no Content-Length).
        let mut chunked = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-API-Key: {key}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        for part in big.chunks(8192) {
            chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            chunked.extend_from_slice(part);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        cases.push(Case::new(
            format!("{name}: 70 KB chunked body"),
            chunked,
            Expect::Status(413),
        ));
        // A Content-Length far above the limit with a tiny body.
        let mut lying = request(method, path, Some(key), &[], None);
        lying.truncate(lying.len() - 2);
        lying.extend_from_slice(
            b"Content-Type: application/json\r\nContent-Length: 999999999\r\n\r\n{}",
        );
        cases.push(Case::new(
            format!("{name}: Content-Length 999999999, 2 bytes sent"),
            lying,
            Expect::Status(413),
        ));
        // A Content-Length above the bytes sent, then the client stops sending.
        let valid_bytes = serde_json::to_vec(valid).unwrap();
        let mut short = request(method, path, Some(key), &[], None);
        short.truncate(short.len() - 2);
        short.extend_from_slice(
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                valid_bytes.len() + 100
            )
            .as_bytes(),
        );
        short.extend_from_slice(&valid_bytes);
        let mut c = Case::new(
            format!("{name}: Content-Length 100 bytes above the body, then EOF"),
            short,
            Expect::Status(400),
        );
        c.half_close = true;
        cases.push(c);
        // A Content-Length below the bytes sent: the server reads a truncated document.
        let mut long = request(method, path, Some(key), &[], None);
        long.truncate(long.len() - 2);
        long.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: 3\r\n\r\n");
        long.extend_from_slice(&valid_bytes);
        cases.push(Case::new(
            format!("{name}: Content-Length 3, whole body sent"),
            long,
            Expect::Validation,
        ));
        // Content-Encoding: gzip that is not gzip, and a gzip bomb (10 MB of JSON in ~10 KB):
        // the limit applies to the decoded body.
        let mut not_gzip = request(
            method,
            path,
            Some(key),
            &[("Content-Encoding", b"gzip")],
            None,
        );
        not_gzip.truncate(not_gzip.len() - 2);
        not_gzip.extend_from_slice(b"Content-Length: 7\r\n\r\nnotgzip");
        cases.push(Case::new(
            format!("{name}: Content-Encoding gzip, body not gzip"),
            not_gzip,
            Expect::Status(400),
        ));
        let mut bomb = request(
            method,
            path,
            Some(key),
            &[("Content-Encoding", b"gzip")],
            None,
        );
        bomb.truncate(bomb.len() - 2);
        bomb.extend_from_slice(format!("Content-Length: {}\r\n\r\n", GZIP_BOMB.len()).as_bytes());
        bomb.extend_from_slice(&GZIP_BOMB);
        cases.push(Case::new(
            format!("{name}: gzip bomb"),
            bomb,
            Expect::Status(413),
        ));
        // A malformed chunked encoding.
        let bad_chunks = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-API-Key: {key}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n{{}}\r\n0\r\n\r\n"
        )
        .into_bytes();
        cases.push(Case::new(
            format!("{name}: malformed chunk size"),
            bad_chunks,
            Expect::StatusOrClosed(400),
        ));
        for c in &cases {
            run_case(port, c);
        }
        total += cases.len();
        assert_healthy(s, name);
    }
    sweep.finish("the body sweep", total, 535);
}

/// Query strings: bad values, types and encodings of every route's parameters.
#[test]
fn bad_query_strings_on_every_route() {
    let sweep = Sweep::start();
    let (s, w) = (&sweep.s, &sweep.w);
    let (port, u) = (s.port, w.user.as_str());
    let mut total = 0usize;
    let q = |name: &str, path: &str, key: &str, expect: Expect| {
        Case::new(
            format!("{name}: GET {}", &path[..path.len().min(120)]),
            request("GET", path, Some(key), &[], None),
            expect,
        )
    };
    let v = Expect::Validation;
    let mut cases = Vec::new();
    for (route, base) in [
        ("F1 ls", "/api/v1/fs/ls?uri=viking://resources"),
        ("F2 tree", "/api/v1/fs/tree?uri=viking://resources"),
    ] {
        for bad in [
            "limit=abc",
            "limit=-1",
            "limit=0",
            "limit=1.5",
            "limit=%FF",
            "limit=99999999999999999999999",
            "node_limit=-5",
            "offset=-1",
            "offset=x",
            "abs_limit=-1",
            "overview_limit=0",
            "recursive=maybe",
            "simple=maybe",
            "show_all_hidden=maybe",
            "include_abstract=maybe",
            "include_overview=2",
            "level_limit=0",
            "directories_only=maybe",
        ] {
            if route == "F1 ls"
                && (bad.starts_with("level_limit") || bad.starts_with("directories"))
            {
                continue;
            }
            cases.push(q(route, &format!("{base}&{bad}"), u, v));
        }
        for bad in ["output=bogus", "sort_by=bogus", "sort_order=up"] {
            if route == "F2 tree" && bad.starts_with("sort") {
                continue;
            }
            cases.push(q(route, &format!("{base}&{bad}"), u, v));
        }
    }
    let uri_routes = [
        ("F1 ls", "/api/v1/fs/ls"),
        ("F2 tree", "/api/v1/fs/tree"),
        ("F3 stat", "/api/v1/fs/stat"),
        ("C1 read", "/api/v1/content/read"),
        ("C2 abstract", "/api/v1/content/abstract"),
        ("C3 overview", "/api/v1/content/overview"),
        ("C4 download", "/api/v1/content/download"),
    ];
    for (route, path) in uri_routes {
        cases.push(q(route, path, u, Expect::Status(400)));
        for bad in [
            "uri=",
            "uri=%00",
            "uri=viking://resources/a%00b",
            "uri=viking://resources/..%2F..%2F_system",
            "uri=viking://resources/../../_system/users.json",
            "uri=viking://_system/accounts.json",
            "uri=viking://temp/x",
            "uri=/etc/passwd",
            "uri=%FF%FE",
            "uri=viking://resources/docs/%FF.md",
            "uri=viking://resources/a%5Cb",
            "uri=viking://user/alice/x",
            "uri=viking://resources/C:",
        ] {
            cases.push(q(route, &format!("{path}?{bad}"), u, Expect::Any4xx));
        }
        cases.push(q(
            route,
            &format!("{path}?uri=viking://resources/{}", "a/".repeat(3000)),
            u,
            Expect::Any4xx,
        ));
        let long = "a".repeat(10 * 1024);
        cases.push(q(
            route,
            &format!("{path}?uri=viking://resources/{long}"),
            u,
            Expect::Any4xx,
        ));
    }
    for (route, path) in [
        (
            "F1 ls duplicate uri",
            "/api/v1/fs/ls?uri=viking://resources&uri=viking://user",
        ),
        ("T2 duplicate limit", "/api/v1/tasks?limit=1&limit=2"),
    ] {
        cases.push(q(route, path, u, v));
    }
    for bad in ["offset=-1", "offset=x", "limit=x", "limit=1.5", "raw=maybe"] {
        cases.push(q(
            "C1 read",
            &format!("/api/v1/content/read?uri=viking://resources/docs/a.md&{bad}"),
            u,
            v,
        ));
    }
    for bad in ["limit=abc", "limit=0", "limit=-1", "limit=201", "limit=%FF"] {
        cases.push(q("T2 list tasks", &format!("/api/v1/tasks?{bad}"), u, v));
    }
    for bad in ["format=bogus", "format=%FF"] {
        cases.push(q(
            "observer",
            &format!("/api/v1/observer/system?{bad}"),
            ROOT_KEY,
            v,
        ));
    }
    for bad in [
        "limit=0",
        "limit=-1",
        "limit=x",
        "page=0",
        "page=x",
        "limit=2&page=-1",
    ] {
        cases.push(q(
            "A2 list accounts",
            &format!("/api/v1/admin/accounts?{bad}"),
            ROOT_KEY,
            v,
        ));
        cases.push(q(
            "A5 list users",
            &format!("/api/v1/admin/accounts/acme/users?{bad}"),
            &w.admin,
            v,
        ));
    }
    for bad in ["include_credentials=maybe", "include_summary=2"] {
        cases.push(q(
            "A5 list users",
            &format!("/api/v1/admin/accounts/acme/users?{bad}"),
            &w.admin,
            v,
        ));
    }
    cases.push(q(
        "SE3 get session",
        "/api/v1/sessions/s1?auto_create=maybe",
        u,
        v,
    ));
    cases.push(q(
        "SE3 get session",
        "/api/v1/sessions/nope?auto_create=maybe",
        u,
        v,
    ));
    cases.push(q(
        "SE9 context",
        "/api/v1/sessions/s1/context?token_budget=x",
        u,
        v,
    ));
    cases.push(q(
        "SE9 context",
        "/api/v1/sessions/s1/context?token_budget=-1",
        u,
        Expect::Status(400),
    ));
    // F5 rm: a query route that deletes.
    for bad in [
        "",
        "?uri=viking://resources/docs&recursive=maybe",
        "?uri=viking://resources/docs&wait=maybe",
        "?uri=viking://resources/docs",
        "?uri=viking://",
        "?uri=viking://resources",
        "?uri=viking://agent",
        "?uri=viking://resources/docs/..%2F..",
        "?uri=viking://resources/docs/%00",
        "?uri=viking://user/alice&recursive=true",
        "?uri=viking://resources/docs/a.md/..&recursive=true",
        "?uri=viking://resources/docs/%FF.md",
        "?uri=viking://resources/docs/%EF%BF.md",
        &format!(
            "?uri=viking://resources/{}&recursive=true",
            "a/".repeat(3000)
        ),
    ] {
        cases.push(Case::new(
            format!("F5 rm: DELETE /api/v1/fs{bad}"),
            request("DELETE", &format!("/api/v1/fs{bad}"), Some(u), &[], None),
            Expect::Any4xx,
        ));
    }
    for c in &cases {
        run_case(port, c);
    }
    total += cases.len();
    assert_healthy(s, "query sweep");
    sweep.finish("the query sweep", total, 196);
}

/// Path segments that name nothing valid, on every route with path parameters.
#[test]
fn bad_path_parameters_on_every_route() {
    let sweep = Sweep::start();
    let (s, w) = (&sweep.s, &sweep.w);
    let (port, u) = (s.port, w.user.as_str());
    let mut total = 0usize;
    let mut cases = Vec::new();
    for (what, seg) in bad_segments() {
        let adm = w.admin.as_str();
        let routes: Vec<(&str, String, &str, Option<&[u8]>)> = vec![
            ("GET", format!("/api/v1/tasks/{seg}"), ROOT_KEY, None),
            ("POST", format!("/api/v1/tasks/{seg}/cancel"), u, None),
            (
                "GET",
                format!("/api/v1/admin/accounts/{seg}"),
                ROOT_KEY,
                None,
            ),
            (
                "DELETE",
                format!("/api/v1/admin/accounts/{seg}"),
                ROOT_KEY,
                None,
            ),
            (
                "POST",
                format!("/api/v1/admin/accounts/{seg}/users"),
                ROOT_KEY,
                Some(br#"{"user_id":"zed"}"#),
            ),
            (
                "GET",
                format!("/api/v1/admin/accounts/{seg}/users"),
                ROOT_KEY,
                None,
            ),
            (
                "GET",
                format!("/api/v1/admin/accounts/acme/users/{seg}"),
                adm,
                None,
            ),
            (
                "DELETE",
                format!("/api/v1/admin/accounts/acme/users/{seg}"),
                adm,
                None,
            ),
            (
                "DELETE",
                format!("/api/v1/admin/accounts/{seg}/users/bob"),
                ROOT_KEY,
                None,
            ),
            (
                "PUT",
                format!("/api/v1/admin/accounts/acme/users/{seg}/role"),
                adm,
                Some(br#"{"role":"admin"}"#),
            ),
            (
                "POST",
                format!("/api/v1/admin/accounts/acme/users/{seg}/key"),
                adm,
                Some(b"{}"),
            ),
            ("GET", format!("/api/v1/sessions/{seg}"), u, None),
            (
                "GET",
                format!("/api/v1/sessions/{seg}?auto_create=true"),
                u,
                None,
            ),
            ("DELETE", format!("/api/v1/sessions/{seg}"), u, None),
            (
                "POST",
                format!("/api/v1/sessions/{seg}/messages"),
                u,
                Some(br#"{"role":"user","content":"x"}"#),
            ),
            (
                "POST",
                format!("/api/v1/sessions/{seg}/messages/batch"),
                u,
                Some(br#"{"messages":[{"role":"user","content":"x"}]}"#),
            ),
            (
                "POST",
                format!("/api/v1/sessions/{seg}/commit"),
                u,
                Some(b"{}"),
            ),
            ("GET", format!("/api/v1/sessions/{seg}/context"), u, None),
            (
                "GET",
                format!("/api/v1/sessions/{seg}/archives/archive_001"),
                u,
                None,
            ),
            (
                "GET",
                format!("/api/v1/sessions/s1/archives/{seg}"),
                u,
                None,
            ),
        ];
        for (method, path, key, body) in routes {
            // A well-formed unknown session id is created by these routes (spec SE3, SE5).
            if what == "unknown id" && (path.contains("auto_create") || path.contains("/messages"))
            {
                continue;
            }
            cases.push(Case::new(
                format!("{method} {} ({what})", &path[..path.len().min(100)]),
                request(method, &path, Some(key), &[], body),
                Expect::Any4xx,
            ));
        }
    }
    for c in &cases {
        run_case(port, c);
    }
    total += cases.len();
    assert_healthy(s, "path parameter sweep");
    sweep.finish("the path parameter sweep", total, 217);
}

/// Missing, unknown, malformed and conflicting credentials and headers.
#[test]
fn bad_headers_and_credentials() {
    let sweep = Sweep::start();
    let (s, w) = (&sweep.s, &sweep.w);
    let (port, u) = (s.port, w.user.as_str());
    let mut total = 0usize;
    let ls = "/api/v1/fs/ls?uri=viking://resources";
    let cases = vec![
        Case::new(
            "no key",
            request("GET", ls, None, &[], None),
            Expect::Status(401),
        ),
        Case::new(
            "unknown key",
            request("GET", ls, Some("nope"), &[], None),
            Expect::Status(401),
        ),
        Case::new(
            "forged 3-segment key",
            request("GET", ls, Some("YWNtZQ.Ym9i.!!!"), &[], None),
            Expect::Status(401),
        ),
        Case::new(
            "bad X-API-Key with a valid Bearer (X-API-Key wins)",
            request(
                "GET",
                ls,
                Some("nope"),
                &[("Authorization", format!("Bearer {u}").as_bytes())],
                None,
            ),
            Expect::Status(401),
        ),
        Case::new(
            "non-ASCII X-API-Key",
            request("GET", ls, None, &[("X-API-Key", b"r\xc3\xa9k\xff")], None),
            Expect::Status(401),
        ),
        Case::new(
            "non-ASCII Authorization",
            request(
                "GET",
                ls,
                None,
                &[("Authorization", b"Bearer \xff\xfe")],
                None,
            ),
            Expect::Status(401),
        ),
        Case::new(
            "Authorization not Bearer",
            request(
                "GET",
                ls,
                None,
                &[("Authorization", b"Basic Zm9vOmJhcg==")],
                None,
            ),
            Expect::Status(401),
        ),
        Case::new(
            "ROOT on a data route",
            request("GET", ls, Some(ROOT_KEY), &[], None),
            Expect::Status(403),
        ),
        Case::new(
            "USER on an admin route",
            request("GET", "/api/v1/admin/accounts", Some(u), &[], None),
            Expect::Status(403),
        ),
        Case::new(
            "non-ASCII X-OpenViking-Actor-Peer",
            request(
                "GET",
                ls,
                Some(u),
                &[("X-OpenViking-Actor-Peer", b"p\xc3\xa9\xff")],
                None,
            ),
            Expect::Status(400),
        ),
        Case::new(
            "X-OpenViking-Actor-Peer with a path separator",
            request(
                "GET",
                ls,
                Some(u),
                &[("X-OpenViking-Actor-Peer", b"a/b")],
                None,
            ),
            Expect::Status(400),
        ),
        Case::new(
            "non-ASCII X-Request-ID on a rejected write",
            request(
                "POST",
                "/api/v1/fs/mkdir",
                Some(u),
                &[("X-Request-ID", b"\xff\xfe")],
                Some(b"{"),
            ),
            Expect::Validation,
        ),
    ];
    for c in &cases {
        run_case(port, c);
    }
    total += cases.len();
    // Accepted: a valid X-API-Key wins over a bad Authorization; a non-ASCII request id is
    // replaced by a fresh one.
    let r = exchange(
        port,
        &request(
            "GET",
            ls,
            Some(u),
            &[
                ("Authorization", b"Bearer garbage"),
                ("X-Request-ID", b"r\xc3\xa9q"),
            ],
            None,
        ),
        false,
    )
    .expect("valid key with a bad Authorization");
    assert_eq!(
        r.status,
        200,
        "valid X-API-Key + bad Authorization: {:?}",
        r.json()
    );
    let rid = r.header("x-request-id").unwrap_or("");
    assert!(
        rid.len() == 36 && rid.is_ascii(),
        "non-ASCII X-Request-ID must be replaced by a UUID, got {rid:?}"
    );
    assert_healthy(s, "header sweep");
    sweep.finish("the header sweep", total, 12);
}

/// Methods not allowed on known paths (405 in the envelope), and unknown paths.
#[test]
fn wrong_methods_and_unknown_routes() {
    let sweep = Sweep::start();
    let (s, w) = (&sweep.s, &sweep.w);
    let (port, u) = (s.port, w.user.as_str());
    let mut total = 0usize;
    let known: &[(&str, &[&str], &str)] = &[
        ("/health", &["GET"], ""),
        ("/ready", &["GET"], ""),
        ("/metrics", &["GET"], ""),
        ("/api/v1/system/status", &["GET"], ""),
        ("/api/v1/observer/system", &["GET"], ""),
        ("/api/v1/tasks", &["GET"], ""),
        ("/api/v1/tasks/t1", &["GET"], ""),
        ("/api/v1/tasks/t1/cancel", &["POST"], ""),
        ("/api/v1/admin/accounts", &["GET", "POST"], ""),
        ("/api/v1/admin/accounts/acme", &["GET", "DELETE"], ""),
        ("/api/v1/admin/accounts/acme/users", &["GET", "POST"], ""),
        (
            "/api/v1/admin/accounts/acme/users/bob",
            &["GET", "DELETE"],
            "",
        ),
        ("/api/v1/admin/accounts/acme/users/bob/role", &["PUT"], ""),
        ("/api/v1/admin/accounts/acme/users/bob/key", &["POST"], ""),
        ("/api/v1/fs/ls", &["GET"], ""),
        ("/api/v1/fs/tree", &["GET"], ""),
        ("/api/v1/fs/stat", &["GET"], ""),
        ("/api/v1/fs/mkdir", &["POST"], ""),
        ("/api/v1/fs/mv", &["POST"], ""),
        (
            "/api/v1/fs",
            &["DELETE"],
            "?uri=viking://resources/docs&recursive=true",
        ),
        ("/api/v1/content/read", &["GET"], ""),
        ("/api/v1/content/abstract", &["GET"], ""),
        ("/api/v1/content/overview", &["GET"], ""),
        ("/api/v1/content/download", &["GET"], ""),
        ("/api/v1/content/write", &["POST"], ""),
        ("/api/v1/search/grep", &["POST"], ""),
        ("/api/v1/search/glob", &["POST"], ""),
        ("/api/v1/search/find", &["POST"], ""),
        ("/api/v1/search/search", &["POST"], ""),
        ("/api/v1/search/recall", &["POST"], ""),
        ("/api/v1/sessions", &["GET", "POST"], ""),
        ("/api/v1/sessions/s1", &["GET", "DELETE"], ""),
        ("/api/v1/sessions/s1/messages", &["POST"], ""),
        ("/api/v1/sessions/s1/messages/batch", &["POST"], ""),
        ("/api/v1/sessions/s1/commit", &["POST"], ""),
        ("/api/v1/sessions/s1/archives/archive_001", &["GET"], ""),
        ("/api/v1/sessions/s1/context", &["GET"], ""),
        ("/api/v1/sessions/s1/config", &["PATCH"], ""),
        ("/api/v1/stats/memories", &["GET"], ""),
    ];
    let mut cases = Vec::new();
    for (path, allowed, query) in known {
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "FOO"] {
            if allowed.contains(&method) {
                continue;
            }
            let body: Option<&[u8]> = (method != "GET").then_some(b"{}");
            cases.push(Case::new(
                format!("{method} {path} (not allowed)"),
                request(method, &format!("{path}{query}"), Some(u), &[], body),
                Expect::Status(405),
            ));
        }
    }
    for path in [
        "/",
        "/api",
        "/api/v1",
        "/api/v1/nope",
        "/api/v2/fs/ls",
        "/api/v1/fs/ls/extra",
        "/api/v1/fs/",
        "/api/v1/sessions/s1/unknown",
        "/api/v1/admin/accounts/acme/users/bob/unknown",
        "/api/v1/admin/accounts/acme/nothing-here",
        "/api/v1/tasks/t1/cancel/x",
        "/%00",
        "/api/v1/%2E%2E/admin/accounts",
    ] {
        for method in ["GET", "POST"] {
            let body: Option<&[u8]> = (method == "POST").then_some(b"{}");
            cases.push(Case::new(
                format!("{method} {path} (unknown)"),
                request(method, path, Some(u), &[], body),
                Expect::Status(404),
            ));
        }
    }
    for c in &cases {
        run_case(port, c);
    }
    total += cases.len();
    assert_healthy(s, "method/route sweep");
    sweep.finish("the method/route sweep", total, 254);
}

/// 200 concurrent bad requests (8 threads × 25), mixed from the cases of the other sweeps.
#[test]
fn concurrent_bad_requests() {
    let sweep = Sweep::start();
    let (s, w) = (&sweep.s, &sweep.w);
    let (port, u) = (s.port, w.user.as_str());
    let mut total = 0usize;
    let mixed: Vec<Vec<u8>> = vec![
        request(
            "POST",
            "/api/v1/admin/accounts",
            Some(ROOT_KEY),
            &[],
            Some(b"[\"x\",\"y\"]"),
        ),
        request(
            "POST",
            "/api/v1/content/write",
            Some(u),
            &[],
            Some(b"{\"uri\":1}"),
        ),
        request(
            "POST",
            "/api/v1/sessions/s1/messages",
            Some(u),
            &[],
            Some(b"{"),
        ),
        request(
            "POST",
            "/api/v1/sessions/s1/commit",
            Some(u),
            &[],
            Some(b"{\"keep_recent_count\":-1}"),
        ),
        request("DELETE", "/api/v1/sessions/..", Some(u), &[], None),
        request(
            "DELETE",
            "/api/v1/fs?uri=viking://resources/docs",
            Some(u),
            &[],
            None,
        ),
        request(
            "DELETE",
            "/api/v1/admin/accounts/a%2Fb",
            Some(ROOT_KEY),
            &[],
            None,
        ),
        request(
            "GET",
            "/api/v1/fs/ls?uri=viking://resources&limit=-1",
            Some(u),
            &[],
            None,
        ),
        request("PATCH", "/api/v1/sessions/s1", Some(u), &[], Some(b"{}")),
        request("GET", "/api/v1/nope", Some(u), &[], None),
    ];
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let mixed = mixed.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let req = &mixed[(t * 25 + i) % mixed.len()];
                    let r = exchange(port, req, false)
                        .unwrap_or_else(|e| panic!("concurrent request {t}/{i}: {e}"));
                    check(&format!("concurrent request {t}/{i}"), &r, Expect::Any4xx);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a concurrent bad-request thread failed");
    }
    total += 200;
    assert_healthy(s, "200 concurrent bad requests");
    sweep.finish("200 concurrent bad requests", total, 200);
}

/// Unknown top-level keys are ignored where the spec does not forbid them (spec §1.3).
#[test]
fn unknown_top_level_keys_are_accepted() {
    let st = Storage::new();
    let s = Server::start(
        &st,
        Opts::default().env("LONGSHIP_SERVER__MAX_BODY_BYTES", &MAX_BODY.to_string()),
    );
    let w = setup(&s);
    unknown_keys_are_accepted(&s, &w);
}

#[test]
fn bad_input_dev_mode_identity_headers() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let ls = "/api/v1/fs/ls?uri=viking://resources";
    for (name, header, value) in [
        (
            "non-ASCII account",
            "X-OpenViking-Account",
            &b"acm\xc3\xa9"[..],
        ),
        ("invalid-UTF-8 account", "X-OpenViking-Account", b"\xff\xfe"),
        ("non-ASCII user", "X-OpenViking-User", b"b\xc3\xb6b"),
        ("account with a slash", "X-OpenViking-Account", b"a/b"),
        ("account `..`", "X-OpenViking-Account", b".."),
        (
            "reserved `_system` account",
            "X-OpenViking-Account",
            b"_system",
        ),
    ] {
        let r = exchange(
            s.port,
            &request("GET", ls, None, &[(header, value)], None),
            false,
        )
        .unwrap_or_else(|e| panic!("dev {name}: {e}"));
        check(&format!("dev mode {name}"), &r, Expect::Status(400));
    }
    assert_healthy(&s, "dev-mode identity headers");
}

/// Requests the HTTP/1 parser itself refuses never reach the application, so they cannot carry
/// the envelope; they must still get a 4xx answer (not a hang or a reset) and change nothing.
#[test]
fn bad_input_protocol_level_rejections() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let before = st.stored_digest("");
    let base = "X-API-Key: it-root-key\r\nConnection: close\r\n";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "negative Content-Length",
            format!("POST /api/v1/admin/accounts HTTP/1.1\r\nHost: x\r\n{base}Content-Length: -5\r\n\r\n{{}}")
                .into_bytes(),
        ),
        (
            "two different Content-Lengths",
            format!("POST /api/v1/admin/accounts HTTP/1.1\r\nHost: x\r\n{base}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}")
                .into_bytes(),
        ),
        (
            "raw NUL in the request target",
            format!("GET /api/v1/tasks/a\0b HTTP/1.1\r\nHost: x\r\n{base}\r\n").into_bytes(),
        ),
        (
            "raw non-ASCII in the request target",
            [
                &b"GET /api/v1/tasks/\xc3\xa9\xff HTTP/1.1\r\nHost: x\r\n"[..],
                base.as_bytes(),
                b"\r\n",
            ]
            .concat(),
        ),
        (
            "100 KB request target",
            format!(
                "GET /api/v1/tasks/{} HTTP/1.1\r\nHost: x\r\n{base}\r\n",
                "a".repeat(100 * 1024)
            )
            .into_bytes(),
        ),
        (
            "200 headers",
            format!(
                "GET /api/v1/system/status HTTP/1.1\r\nHost: x\r\n{base}{}\r\n",
                (0..200).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()
            )
            .into_bytes(),
        ),
        ("not HTTP at all", b"\x16\x03\x01\x00\xa5garbage\r\n\r\n".to_vec()),
    ];
    for (name, bytes) in &cases {
        let r = exchange(s.port, bytes, false)
            .unwrap_or_else(|e| panic!("{name}: no HTTP answer: {e}"));
        assert!(
            (400..500).contains(&r.status),
            "{name}: status {} is not 4xx",
            r.status
        );
    }
    assert_healthy(&s, "protocol-level rejections");
    if !st.is_s3() {
        assert_unchanged(&before, &st, "protocol-level rejections");
    }
}
