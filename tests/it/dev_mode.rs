//! Dev mode keeps the set-up the contract promises (issue #19 item 6): the `default` account
//! and user exist from startup (API.md §4.4), created idempotently by any number of instances
//! sharing the storage; and ROOT names users explicitly (§5.3 binds USER and ADMIN only).

use serde_json::json;

use crate::harness::api::{ok, q};
use crate::harness::{Opts, Server, Storage};

/// A request with no identity headers: dev mode's `default`/`default`, as ROOT.
fn bare(s: &Server, path: &str) -> crate::harness::Resp {
    s.get(path, None)
}

fn names(v: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["name"].as_str().unwrap_or_default().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn fresh_dev_server_has_the_default_scaffold() {
    let st = Storage::new();
    // Two instances start at once over one fresh storage: neither fails, nothing is doubled.
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| Server::start(&st, Opts::dev()));
        let b = scope.spawn(|| Server::start(&st, Opts::dev()));
        (a.join().expect("a"), b.join().expect("b"))
    });
    for s in [&a, &b] {
        let r = bare(s, &format!("/api/v1/fs/ls?uri={}", q("viking://resources")));
        assert_eq!(ok(&r), &json!([]), "{:?}", r.body);
        let r = bare(
            s,
            &format!("/api/v1/fs/ls?uri={}&output=original", q("viking://agent")),
        );
        assert_eq!(
            names(ok(&r)),
            ["endpoints", "payments", "skills", "tools"],
            "{:?}",
            r.body
        );
        let r = bare(
            s,
            &format!("/api/v1/fs/ls?uri={}&output=original", q("viking://")),
        );
        assert_eq!(names(ok(&r)), ["agent", "resources", "user"]);
        let r = bare(
            s,
            &format!(
                "/api/v1/fs/ls?uri={}&output=original",
                q("viking://user/default")
            ),
        );
        assert_eq!(
            names(ok(&r)),
            [
                "memories",
                "peers",
                "privacy",
                "resources",
                "sessions",
                "skills"
            ]
        );
        let r = bare(
            s,
            &format!(
                "/api/v1/content/abstract?uri={}",
                q("viking://agent/skills")
            ),
        );
        assert!(
            ok(&r).as_str().is_some_and(|t| !t.is_empty()),
            "{:?}",
            r.body
        );
        assert!(
            !s.log_text()
                .contains("could not create the default account"),
            "{}",
            s.log_text()
        );
    }
    // Each sidecar is written once (create-only) whichever instance won.
    let sidecar = st.read_string("default/resources/.abstract.md");
    assert!(
        sidecar.starts_with("---\ndirectory: viking://resources/\n"),
        "{sidecar}"
    );
    assert_eq!(sidecar.matches("directory:").count(), 1);
}

#[test]
fn root_names_users_explicitly() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    // `peers` is a user id here (an external memory plugin's path), not the uid-less spelling.
    let uri = "viking://user/peers/memories/events/note.md";
    let r = s.post(
        "/api/v1/content/write",
        None,
        json!({"uri": uri, "content": "remembered"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = bare(&s, &format!("/api/v1/content/read?uri={}", q(uri)));
    assert_eq!(ok(&r), "remembered");
    assert!(st.exists("default/user/peers/memories/events/note.md"));
    // The home alias still means the request's own user.
    let r = bare(
        &s,
        &format!("/api/v1/fs/stat?uri={}", q("viking://~/peers")),
    );
    assert_eq!(ok(&r)["uri"], "viking://user/default/peers");
}
