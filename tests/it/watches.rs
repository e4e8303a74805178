//! Watches (docs/API.md, Watches): add_resource with watch_interval, the eight watch routes, the
//! scheduler re-fetching a loopback site whose content changes, two instances sharing watches
//! (one runner per period, takeover after kill -9), restarts and removal with the resource.
//! The floor is lowered by configuration (`watch.min_interval_minutes = 0.02`, 1.2 s) so runs
//! come every second or two; every wait is for an observable condition under a deadline.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::api::{create_account, q};
use crate::harness::{Opts, Resp, Server, Storage};

const RESOURCES: &str = "/api/v1/resources";
const WATCHES: &str = "/api/v1/watches";

/// What the loopback site serves and what it saw.
#[derive(Default)]
struct SiteState {
    /// Served at `/doc.md` (with an ETag) and `/plain.md` (no validators).
    version: u64,
    /// Requests seen per path: (arrival, answered 304).
    seen: Vec<(String, Instant, bool)>,
    /// Requests being answered right now, and the most at once.
    in_flight: usize,
    max_in_flight: usize,
    /// Hold each answer this long.
    delay: Duration,
    /// Hold answers until cleared (bounded).
    hold: bool,
}

struct Site {
    port: u16,
    state: Arc<Mutex<SiteState>>,
    stop: Arc<AtomicBool>,
}

impl Site {
    fn start() -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(SiteState {
            version: 1,
            ..SiteState::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, flag) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let st = st.clone();
                std::thread::spawn(move || serve(stream, &st));
            }
        });
        Site { port, state, stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn set_version(&self, v: u64) {
        self.state.lock().unwrap().version = v;
    }

    /// Requests for `path` so far: (total, answered 304).
    fn count(&self, path: &str) -> (usize, usize) {
        let s = self.state.lock().unwrap();
        let all: Vec<_> = s.seen.iter().filter(|(p, _, _)| p == path).collect();
        (all.len(), all.iter().filter(|(_, _, nm)| *nm).count())
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Poisoned when an assertion failed while holding it: nothing to release then.
        if let Ok(mut s) = self.state.lock() {
            s.hold = false;
        }
    }
}

fn serve(stream: std::net::TcpStream, state: &Mutex<SiteState>) {
    stream.set_nonblocking(false).ok();
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut if_none_match = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("if-none-match:") {
            if_none_match = Some(v.trim().to_string());
        }
    }
    let (version, delay) = {
        let mut s = state.lock().unwrap();
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        (s.version, s.delay)
    };
    std::thread::sleep(delay);
    let until = Instant::now() + Duration::from_secs(40);
    while state.lock().unwrap().hold && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let etag = format!("\"v{version}\"");
    let not_modified = path == "/doc.md" && if_none_match.as_deref() == Some(etag.as_str());
    let body = format!("# Watched {path}\n\nThis is version {version} of the page.\n");
    let head = if not_modified {
        format!("HTTP/1.1 304 Not Modified\r\nConnection: close\r\nETag: {etag}\r\n\r\n")
    } else if path == "/doc.md" || path == "/plain.md" {
        let validators = if path == "/doc.md" {
            format!("ETag: {etag}\r\n")
        } else {
            String::new()
        };
        format!(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/markdown\r\n{validators}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".to_string()
    };
    {
        let mut s = state.lock().unwrap();
        s.in_flight -= 1;
        s.seen.push((path, Instant::now(), not_modified));
    }
    let mut w = stream;
    let _ = w.write_all(head.as_bytes());
}

/// Loopback allowed (as the URL ingestion tests do), the floor at 1.2 s, scans every second.
fn opts() -> Opts {
    Opts::default()
        .env("LONGSHIP_RESOURCES__ALLOW_PRIVATE_URLS", "true")
        .env("LONGSHIP_RESOURCES__FETCH_TIMEOUT_SECS", "60")
        .env("LONGSHIP_WATCH__MIN_INTERVAL_MINUTES", "0.02")
        .env("LONGSHIP_WATCH__SCAN_INTERVAL_SECS", "1")
}

fn wait_for<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn watch_of(s: &Server, key: &str, to: &str) -> Resp {
    s.get(&format!("{WATCHES}?to_uri={}", q(to)), Some(key))
}

fn read(s: &Server, key: &str, uri: &str) -> String {
    let r = s.get(&format!("/api/v1/content/read?uri={}", q(uri)), Some(key));
    r.body["result"].as_str().unwrap_or("").to_string()
}

fn add_watched(s: &Server, key: &str, url: &str, to: &str, minutes: f64) -> Value {
    let r = s.post(
        RESOURCES,
        Some(key),
        json!({"path": url, "to": to, "wait": true, "watch_interval": minutes}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.result().clone()
}

/// Ingestion tasks of the caller (initial add and every re-ingestion).
fn ingestions(s: &Server, key: &str) -> usize {
    let r = s.get("/api/v1/tasks?task_type=add_resource&limit=200", Some(key));
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.result().as_array().unwrap().len()
}

#[test]
fn changed_content_is_reingested_once_per_change_and_unchanged_is_not() {
    let site = Site::start();
    let st = Storage::new();
    let s = Server::start(&st, opts());
    let key = create_account(&s, "acme", "alice");
    // Below the floor: accepted, raised, and the answer says so.
    let etagged = add_watched(
        &s,
        &key,
        &site.url("/doc.md"),
        "viking://resources/doc",
        0.01,
    );
    assert!(etagged["watch_id"].is_string(), "{etagged:?}");
    assert!(
        etagged["warnings"].to_string().contains("minimum"),
        "{etagged:?}"
    );
    let plain = add_watched(
        &s,
        &key,
        &site.url("/plain.md"),
        "viking://resources/plain",
        0.02,
    );
    let w = watch_of(&s, &key, "viking://resources/doc");
    assert_eq!(w.status, 200, "{:?}", w.body);
    assert_eq!(w.result()["task_id"], etagged["watch_id"]);
    assert_eq!(w.result()["watch_interval"], 0.01);
    assert_eq!(w.result()["effective_watch_interval"], 0.02);
    assert_eq!(w.result()["interval_raised"], true);
    assert_eq!(w.result()["path"], site.url("/doc.md"));
    assert!(read(&s, &key, "viking://resources/doc/doc.md").contains("version 1"));

    // Unchanged content: runs happen (a 304 for the ETag site, the same hash for the other),
    // nothing is ingested again.
    let long = Duration::from_secs(60);
    wait_for("two 304 answers", long, || {
        (site.count("/doc.md").1 >= 2).then_some(())
    });
    wait_for("three fetches without validators", long, || {
        (site.count("/plain.md").0 >= 4).then_some(())
    });
    for to in ["viking://resources/doc", "viking://resources/plain"] {
        let w = watch_of(&s, &key, to);
        assert_eq!(w.result()["last_status"], "unchanged", "{:?}", w.body);
        assert!(w.result()["last_task_id"].is_null(), "{:?}", w.body);
    }
    assert_eq!(ingestions(&s, &key), 2);

    // A change: each watch re-ingests it once (the new text is there, the old gone), then
    // finds it unchanged again.
    site.set_version(2);
    for (to, file) in [
        ("viking://resources/doc", "viking://resources/doc/doc.md"),
        (
            "viking://resources/plain",
            "viking://resources/plain/plain.md",
        ),
    ] {
        wait_for("the new version", long, || {
            read(&s, &key, file).contains("version 2").then_some(())
        });
        // The run records its outcome after the ingestion ends (summaries included), which
        // follows the tree becoming visible.
        wait_for("the run's record", long, || {
            let w = watch_of(&s, &key, to);
            w.result()["last_task_id"].is_string().then_some(())
        });
    }
    let (doc_seen, plain_seen) = (site.count("/doc.md").0, site.count("/plain.md").0);
    wait_for("more runs after the change", long, || {
        (site.count("/doc.md").0 >= doc_seen + 2 && site.count("/plain.md").0 >= plain_seen + 2)
            .then_some(())
    });
    assert_eq!(
        ingestions(&s, &key),
        4,
        "one re-ingestion per watch and change"
    );
    let w = watch_of(&s, &key, "viking://resources/plain");
    assert_eq!(w.result()["last_status"], "unchanged", "{:?}", w.body);
    let _ = plain;
    // Found by search like any ingestion.
    let r = s.post(
        "/api/v1/search/find",
        Some(&key),
        json!({"query": "version", "target_uri": "viking://resources/doc"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(
        r.body.to_string().contains("viking://resources/doc/doc.md"),
        "{:?}",
        r.body
    );
}

#[test]
fn trigger_update_delete_by_id_and_uri_and_bad_input() {
    let site = Site::start();
    let st = Storage::new();
    let s = Server::start(&st, opts());
    let key = create_account(&s, "acme", "alice");
    let added = add_watched(
        &s,
        &key,
        &site.url("/doc.md"),
        "viking://resources/doc",
        60.0,
    );
    let id = added["watch_id"].as_str().unwrap().to_string();
    let to = "viking://resources/doc";

    // Trigger answers at once; the run follows.
    let r = s.post(&format!("{WATCHES}/{id}/trigger"), Some(&key), json!({}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.result(),
        &json!({"task_id": id, "to_uri": to, "scheduled": true})
    );
    let long = Duration::from_secs(60);
    wait_for("the triggered run", long, || {
        let w = s.get(&format!("{WATCHES}/{id}"), Some(&key));
        (w.result()["last_status"] == "unchanged").then_some(())
    });
    let before = site.count("/doc.md").0;
    let r = s.post(
        &format!("{WATCHES}/trigger?to_uri={}", q(to)),
        Some(&key),
        json!({}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.result()["scheduled"], true);
    wait_for("the run triggered by to_uri", long, || {
        (site.count("/doc.md").0 > before).then_some(())
    });

    // PATCH by id and by to_uri; both keys must agree.
    let r = s.call(
        "PATCH",
        &format!("{WATCHES}/{id}"),
        Some(&key),
        Some(json!({"watch_interval": 30})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.result()["watch_interval"], 30.0);
    assert_eq!(r.result()["interval_raised"], false);
    let r = s.call(
        "PATCH",
        &format!("{WATCHES}?to_uri={}", q(to)),
        Some(&key),
        Some(json!({"is_active": false, "reason": "paused"})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.result()["is_active"], false);
    assert!(r.result()["next_execution_time"].is_null());
    assert_eq!(r.result()["reason"], "paused");
    let other = q("viking://resources/other");
    for (method, path) in [
        ("GET", format!("{WATCHES}/{id}?to_uri={other}")),
        ("PATCH", format!("{WATCHES}/{id}?to_uri={other}")),
        ("DELETE", format!("{WATCHES}/{id}?to_uri={other}")),
        ("POST", format!("{WATCHES}/{id}/trigger?to_uri={other}")),
    ] {
        let r = s.call(method, &path, Some(&key), Some(json!({"is_active": true})));
        assert_eq!(r.status, 400, "{method} {path}: {:?}", r.body);
    }
    // The agreeing pair is fine.
    let r = s.get(&format!("{WATCHES}/{id}?to_uri={}", q(to)), Some(&key));
    assert_eq!(r.status, 200, "{:?}", r.body);

    // Bad input: clear 4xx, nothing changed.
    for body in [
        json!({"watch_interval": -1}),
        json!({"watch_interval": 0}),
        json!({"watch_interval": 600000}),
        json!({"watch_interval": "NaN"}),
        json!({"unknown": 1}),
    ] {
        let r = s.call(
            "PATCH",
            &format!("{WATCHES}/{id}"),
            Some(&key),
            Some(body.clone()),
        );
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
    }
    assert_eq!(
        s.get(&format!("{WATCHES}/{id}"), Some(&key)).result()["watch_interval"],
        30.0
    );
    for path in [
        format!("{WATCHES}/no-such-id"),
        format!("{WATCHES}?to_uri={other}"),
    ] {
        assert_eq!(s.get(&path, Some(&key)).status, 404, "{path}");
    }
    assert_eq!(
        s.delete(&format!("{WATCHES}/no-such-id"), Some(&key))
            .status,
        404
    );
    let r = s.post(
        &format!("{WATCHES}/no-such-id/trigger"),
        Some(&key),
        json!({}),
    );
    assert_eq!(r.status, 404);
    // Another user of the account sees nothing of it.
    let bob = crate::harness::api::register(&s, &key, "acme", "bob", "user");
    assert_eq!(s.get(&format!("{WATCHES}/{id}"), Some(&bob)).status, 404);
    assert_eq!(s.get(WATCHES, Some(&bob)).result()["total"], 0);
    for body in [
        json!({"path": site.url("/plain.md"), "to": "viking://resources/p", "watch_interval": 600000}),
        json!({"path": site.url("/plain.md"), "to": "viking://resources/p", "watch_interval": "NaN"}),
        json!({"path": "/etc/hosts", "to": "viking://resources/p", "watch_interval": 5}),
        // The target is watched already: 409 before anything is fetched.
        json!({"path": site.url("/plain.md"), "to": to, "watch_interval": 5}),
    ] {
        let r = s.post(RESOURCES, Some(&key), body.clone());
        assert!((400..500).contains(&r.status), "{body}: {:?}", r.body);
    }
    assert_eq!(s.get(WATCHES, Some(&key)).result()["total"], 1);
    assert!(!st.exists("acme/resources/p"));
    // Private addresses are refused by the SSRF rules of a server that does not allow them:
    // nothing is stored.
    let strict = Server::start(
        &st,
        Opts::default().env("LONGSHIP_WATCH__MIN_INTERVAL_MINUTES", "0.02"),
    );
    let r = strict.post(
        RESOURCES,
        Some(&key),
        json!({"path": site.url("/plain.md"), "to": "viking://resources/p", "watch_interval": 5, "wait": true}),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body.to_string().contains("Refusing"), "{:?}", r.body);
    assert_eq!(strict.get(WATCHES, Some(&key)).result()["total"], 1);
    drop(strict);

    // DELETE by to_uri, then by id.
    let r = s.delete(&format!("{WATCHES}?to_uri={}", q(to)), Some(&key));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.result(),
        &json!({"task_id": id, "to_uri": to, "deleted": true})
    );
    assert_eq!(watch_of(&s, &key, to).status, 404);
    let again = add_watched(
        &s,
        &key,
        &site.url("/plain.md"),
        "viking://resources/plain",
        60.0,
    );
    let id2 = again["watch_id"].as_str().unwrap();
    let r = s.delete(&format!("{WATCHES}/{id2}"), Some(&key));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(s.get(WATCHES, Some(&key)).result()["total"], 0);
}

/// How many runs a server's log shows (each logged as the lease holder starts fetching).
fn runs_logged(s: &Server) -> usize {
    s.log_text().matches("watch run: fetching").count()
}

#[test]
fn two_instances_run_each_period_once_and_take_over_after_kill9() {
    let site = Site::start();
    site.state.lock().unwrap().delay = Duration::from_millis(400);
    let st = Storage::new();
    let a = Server::start(&st, opts());
    let b = Server::start(&st, opts());
    let key = create_account(&a, "acme", "alice");
    add_watched(
        &a,
        &key,
        &site.url("/plain.md"),
        "viking://resources/plain",
        0.03,
    );
    // Both instances know the watch and wake when it is due (scans every second); the lease
    // lets one of them run it per period.
    let start = site.count("/plain.md").0;
    wait_for("six periods", Duration::from_secs(90), || {
        (site.count("/plain.md").0 >= start + 6).then_some(())
    });
    {
        let s = site.state.lock().unwrap();
        assert_eq!(s.max_in_flight, 1, "two instances fetched at once");
        let times: Vec<Instant> = s
            .seen
            .iter()
            .filter(|(p, _, _)| p == "/plain.md")
            .skip(start)
            .map(|(_, t, _)| *t)
            .collect();
        for pair in times.windows(2) {
            // Runs of one watch are an interval (1.8 s) apart; two instances running the same
            // period would be a few milliseconds apart.
            assert!(
                pair[1] - pair[0] >= Duration::from_millis(1000),
                "two runs in one period: {:?}",
                pair[1] - pair[0]
            );
        }
    }
    assert!(runs_logged(&a) + runs_logged(&b) >= 6);

    // Hold the next fetch: the instance that took the lease is stuck in it. Kill it.
    let (ran_a, ran_b) = (runs_logged(&a), runs_logged(&b));
    site.state.lock().unwrap().hold = true;
    let runner = wait_for(
        "a run that holds the lease",
        Duration::from_secs(60),
        || {
            let (na, nb) = (runs_logged(&a), runs_logged(&b));
            if na > ran_a {
                Some('a')
            } else if nb > ran_b {
                Some('b')
            } else {
                None
            }
        },
    );
    let (mut dead, survivor) = if runner == 'a' { (a, b) } else { (b, a) };
    // The observer's queue component of the runner counts it.
    let r = dead.get("/api/v1/observer/queue?format=json", Some(&key));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let row = r.result()["status"]["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "watches")
        .cloned()
        .unwrap();
    assert_eq!(row["in_progress"], 1, "{row}");
    let survivor_runs = runs_logged(&survivor);
    let done_before = site.count("/plain.md").0;
    dead.kill9();
    site.state.lock().unwrap().hold = false;
    // The survivor takes the lease over (its holder is dead) and runs the watch.
    let killed_at = Instant::now();
    wait_for("the survivor's run", Duration::from_secs(60), || {
        (runs_logged(&survivor) > survivor_runs).then_some(())
    });
    wait_for("its fetch answered", Duration::from_secs(60), || {
        (site.count("/plain.md").0 > done_before).then_some(())
    });
    eprintln!("takeover after {:?}", killed_at.elapsed());
    let w = watch_of(&survivor, &key, "viking://resources/plain");
    assert_eq!(w.status, 200, "{:?}", w.body);
    drop(dead);
}

#[test]
fn restarts_keep_watches_and_removing_the_resource_removes_its_watch() {
    let site = Site::start();
    let st = Storage::new();
    let mut s = Server::start(&st, opts());
    let key = create_account(&s, "acme", "alice");
    add_watched(
        &s,
        &key,
        &site.url("/doc.md"),
        "viking://resources/doc",
        60.0,
    );
    add_watched(
        &s,
        &key,
        &site.url("/plain.md"),
        "viking://resources/dir/plain",
        60.0,
    );
    let before = watch_of(&s, &key, "viking://resources/doc")
        .result()
        .clone();
    s.restart();
    let after = watch_of(&s, &key, "viking://resources/doc");
    assert_eq!(after.status, 200, "{:?}", after.body);
    assert_eq!(after.result(), &before);
    // A move takes the watch along; removing the resource (or its parent) removes it.
    let r = s.post(
        "/api/v1/fs/mv",
        Some(&key),
        json!({"from_uri": "viking://resources/doc", "to_uri": "viking://resources/doc2"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(watch_of(&s, &key, "viking://resources/doc2").status, 200);
    for uri in ["viking://resources/doc2", "viking://resources/dir"] {
        let r = s.delete(
            &format!("/api/v1/fs?uri={}&recursive=true", q(uri)),
            Some(&key),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    assert_eq!(s.get(WATCHES, Some(&key)).result()["total"], 0);
    // A removed user's watches go with the user.
    let bob = crate::harness::api::register(&s, &key, "acme", "bob", "user");
    add_watched(
        &s,
        &bob,
        &site.url("/doc.md"),
        "viking://resources/bobdoc",
        60.0,
    );
    assert!(st
        .read_string("acme/_system/watches.json")
        .contains("bobdoc"));
    let r = s.delete("/api/v1/admin/accounts/acme/users/bob", Some(&key));
    assert!(r.status == 200 || r.status == 202, "{:?}", r.body);
    wait_for("the user's watch removed", Duration::from_secs(60), || {
        (!st.read_string("acme/_system/watches.json")
            .contains("bobdoc"))
        .then_some(())
    });
}
