//! Several instances over one storage behave as one server (context/000, issue 4).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::api::{auth_status, create_account, register, whoami, ACCOUNTS};
use crate::harness::{Opts, Server, Storage, ROOT_KEY};

fn strict() -> Opts {
    Opts::default().env("LONGSHIP_AUTH__REFRESH_INTERVAL_MS", "0")
}

/// Poll `key` on `s` until it is rejected; returns when (after `since`) the first request
/// that got the 401 was sent. (A miss may wait for a shared check before its 401 is written,
/// so the send time, not the answer time, is when the revocation was in force.)
fn until_rejected(s: &Server, key: &str, since: Instant, within: Duration) -> Duration {
    loop {
        let sent = since.elapsed();
        if whoami(s, key).is_none() {
            return sent;
        }
        assert!(
            since.elapsed() < within,
            "key still accepted after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn counter(status: &Value, name: &str) -> u64 {
    status["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}: {status}"))
}

/// A request that reports transport failures (a killed instance) instead of panicking.
fn try_call(
    port: u16,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let req = ureq::request(method, &url)
        .timeout(Duration::from_secs(60))
        .set("X-API-Key", key);
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let r = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(_) => return None,
    };
    let status = r.status();
    Some((status, r.into_json().unwrap_or(Value::Null)))
}

#[test]
fn three_failure_modes_fixed_across_two_instances() {
    let st = Storage::new();
    let a = Server::start(&st, Opts::default());
    let b = Server::start(&st, Opts::default());
    // Warm B's map so that what follows is a change, not a first load.
    assert_eq!(whoami(&b, ROOT_KEY).as_deref(), Some("default"));

    // 1. Created on A: accepted by B on the first request.
    let alice = create_account(&a, "acme", "alice");
    assert_eq!(whoami(&b, &alice).as_deref(), Some("alice"));
    let bob = register(&a, &alice, "acme", "bob", "user");
    assert_eq!(whoami(&b, &bob).as_deref(), Some("bob"));
    // Registering into an account created on the other instance works (no stale 404).
    let carl = register(&b, &alice, "acme", "carl", "user");
    assert_eq!(whoami(&a, &carl).as_deref(), Some("carl"));

    // 2. Regenerated on A: old key rejected by B within the refresh interval, new key at once.
    let r = a.post(
        &format!("{ACCOUNTS}/acme/users/bob/key"),
        Some(&alice),
        json!({}),
    );
    let since = Instant::now();
    let bob2 = r.result()["user_key"].as_str().unwrap().to_string();
    assert_eq!(whoami(&b, &bob2).as_deref(), Some("bob"));
    let took = until_rejected(&b, &bob, since, Duration::from_secs(3));
    assert!(
        took <= Duration::from_millis(1500),
        "old key accepted for {took:?}"
    );

    // 3. Removed on A: B rejects within the interval.
    assert_eq!(
        a.delete(&format!("{ACCOUNTS}/acme/users/carl"), Some(&alice))
            .status,
        202
    );
    let took = until_rejected(&b, &carl, Instant::now(), Duration::from_secs(3));
    assert!(
        took <= Duration::from_millis(1500),
        "removed key accepted for {took:?}"
    );

    // Role changes propagate within the same bound.
    assert_eq!(
        b.get(&format!("{ACCOUNTS}/acme/users"), Some(&bob2)).status,
        403
    );
    let r = a.put(
        &format!("{ACCOUNTS}/acme/users/bob/role"),
        Some(&alice),
        json!({"role": "admin"}),
    );
    assert_eq!(r.status, 200);
    let since = Instant::now();
    while b.get(&format!("{ACCOUNTS}/acme/users"), Some(&bob2)).status != 200 {
        assert!(
            since.elapsed() < Duration::from_secs(3),
            "role change not seen by B"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(since.elapsed() <= Duration::from_millis(1500));

    // Account deleted on A: every key of it dies on B within the interval.
    assert_eq!(
        a.delete(&format!("{ACCOUNTS}/acme"), Some(ROOT_KEY)).status,
        202
    );
    let took = until_rejected(&b, &alice, Instant::now(), Duration::from_secs(3));
    assert!(
        took <= Duration::from_millis(1500),
        "deleted account accepted for {took:?}"
    );
    assert_eq!(whoami(&b, &bob2), None);
}

#[test]
fn strict_mode_converges_on_the_next_request() {
    let st = Storage::new();
    let a = Server::start(&st, strict());
    let b = Server::start(&st, strict());
    let alice = create_account(&a, "acme", "alice");
    let mut bob = register(&a, &alice, "acme", "bob", "user");
    let carl = register(&a, &alice, "acme", "carl", "user");
    assert_eq!(whoami(&b, &bob).as_deref(), Some("bob"));
    assert_eq!(whoami(&b, &carl).as_deref(), Some("carl"));
    for _ in 0..5 {
        // Regenerate on A, then the very next request on B: no window at all.
        let r = a.post(
            &format!("{ACCOUNTS}/acme/users/bob/key"),
            Some(&alice),
            json!({}),
        );
        let fresh = r.result()["user_key"].as_str().unwrap().to_string();
        assert_eq!(whoami(&b, &bob), None);
        assert_eq!(whoami(&a, &bob), None);
        assert_eq!(whoami(&b, &fresh).as_deref(), Some("bob"));
        // And the other direction.
        let r = b.post(
            &format!("{ACCOUNTS}/acme/users/bob/key"),
            Some(&alice),
            json!({}),
        );
        let next = r.result()["user_key"].as_str().unwrap().to_string();
        assert_eq!(whoami(&a, &fresh), None);
        assert_eq!(whoami(&a, &next).as_deref(), Some("bob"));
        assert_eq!(whoami(&b, &next).as_deref(), Some("bob"));
        assert_eq!(whoami(&b, &fresh), None);
        bob = next;
    }
    assert_eq!(whoami(&a, &bob).as_deref(), Some("bob"));
    assert_eq!(
        a.delete(&format!("{ACCOUNTS}/acme/users/carl"), Some(&alice))
            .status,
        202
    );
    assert_eq!(whoami(&b, &carl), None);
    assert_eq!(
        b.get(&format!("{ACCOUNTS}/acme/users"), Some(&carl)).status,
        401
    );
    let r = a.put(
        &format!("{ACCOUNTS}/acme/users/bob/role"),
        Some(&alice),
        json!({"role": "admin"}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        a.delete(&format!("{ACCOUNTS}/acme"), Some(ROOT_KEY)).status,
        202
    );
    assert_eq!(whoami(&b, &alice), None);
}

/// 3 instances × concurrent clients: 300 users into one account and 100 accounts, with one
/// instance SIGKILLed and restarted in the middle. Every acknowledged write must survive.
#[test]
fn lost_update_storm_with_a_sigkill() {
    let st = Storage::new();
    let mut servers = vec![
        Server::start(&st, Opts::default()),
        Server::start(&st, Opts::default()),
        Server::start(&st, Opts::default()),
    ];
    let admin = create_account(&servers[0], "storm", "boss");
    let ports: Arc<Mutex<Vec<u16>>> =
        Arc::new(Mutex::new(servers.iter().map(|s| s.port).collect()));
    let users_ok: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let accounts_ok: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let killed = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut threads = Vec::new();
    // 6 client threads; each owns a slice of the ids and targets an instance round-robin,
    // retrying a write whose answer it never got (the instance was killed) on the next one.
    for t in 0..6usize {
        let (ports, users_ok, accounts_ok, admin) = (
            ports.clone(),
            users_ok.clone(),
            accounts_ok.clone(),
            admin.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut jobs: Vec<(bool, usize)> =
                (0..300).filter(|i| i % 6 == t).map(|i| (true, i)).collect();
            jobs.extend((0..100).filter(|i| i % 6 == t).map(|i| (false, i)));
            for (n, (is_user, i)) in jobs.into_iter().enumerate() {
                let mut attempt = n + t;
                loop {
                    assert!(Instant::now() < deadline, "storm did not finish in time");
                    let port = {
                        let p = ports.lock().unwrap();
                        p[attempt % p.len()]
                    };
                    attempt += 1;
                    let reply = if is_user {
                        try_call(
                            port,
                            "POST",
                            &format!("{ACCOUNTS}/storm/users"),
                            &admin,
                            Some(json!({"user_id": format!("u{i}")})),
                        )
                    } else {
                        try_call(
                            port,
                            "POST",
                            ACCOUNTS,
                            ROOT_KEY,
                            Some(json!({"account_id": format!("acct{i}"), "admin_user_id": "a"})),
                        )
                    };
                    match reply {
                        Some((200, body)) => {
                            let key = body["result"]["user_key"].as_str().unwrap().to_string();
                            let id = if is_user {
                                format!("u{i}")
                            } else {
                                format!("acct{i}")
                            };
                            if is_user {
                                users_ok.lock().unwrap().push((id, key))
                            } else {
                                accounts_ok.lock().unwrap().push((id, key))
                            }
                            break;
                        }
                        // A retry after a lost answer may find its own earlier write.
                        Some((409, body)) if body["error"]["code"] == "ALREADY_EXISTS" => break,
                        Some((status, body)) if status >= 500 || status == 409 => {
                            let _ = body;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Some((status, body)) => panic!("unexpected {status}: {body}"),
                        None => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            }
        }));
    }
    // Kill the third instance once a good part of the storm is acknowledged, then restart it.
    while users_ok.lock().unwrap().len() + accounts_ok.lock().unwrap().len() < 120 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    servers[2].kill9();
    killed.store(true, Ordering::SeqCst);
    servers[2].restart();
    ports.lock().unwrap()[2] = servers[2].port;
    for t in threads {
        t.join().expect("client thread");
    }
    let users = users_ok.lock().unwrap().clone();
    let accounts = accounts_ok.lock().unwrap().clone();
    // Writes whose 200 was lost and whose retry got 409 are not in these lists, but exist.
    let check = |servers: &[Server]| {
        for s in servers {
            let r = s.get(&format!("{ACCOUNTS}/storm/users"), Some(ROOT_KEY));
            let ids: std::collections::HashSet<String> = r
                .result()
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["user_id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(ids.len(), 301, "users on port {}", s.port);
            for i in 0..300 {
                assert!(ids.contains(&format!("u{i}")), "u{i} missing");
            }
            let r = s.get(ACCOUNTS, Some(ROOT_KEY));
            let ids: std::collections::HashSet<String> = r
                .result()
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["account_id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(ids.len(), 102, "accounts on port {}", s.port);
            for (i, (id, key)) in users.iter().enumerate() {
                // Every acknowledged key works on every instance (a sample per instance keeps
                // the request count bounded).
                if i % 3 == s.port as usize % 3 || i < 10 {
                    assert_eq!(
                        whoami(s, key).as_deref(),
                        Some(id.as_str()),
                        "{id} on {}",
                        s.port
                    );
                }
            }
            for (_, key) in &accounts {
                assert_eq!(whoami(s, key).as_deref(), Some("a"));
            }
        }
    };
    assert!(killed.load(Ordering::SeqCst));
    assert!(
        users.len() + accounts.len() >= 390,
        "too many lost answers: {}",
        users.len() + accounts.len()
    );
    check(&servers);
    for s in servers.iter_mut() {
        s.restart();
    }
    check(&servers);
}

#[test]
fn random_key_flood_costs_bounded_registry_reads() {
    let st = Storage::new();
    // A short interval keeps the test quick: a key naming an unknown account waits for a
    // shared check that starts after it arrived (misses start at most one per 100 ms).
    let interval_ms = 250u64;
    let s = Server::start(
        &st,
        Opts::default().env(
            "LONGSHIP_AUTH__REFRESH_INTERVAL_MS",
            &interval_ms.to_string(),
        ),
    );
    let alice = create_account(&s, "acme", "alice");
    for i in 0..20 {
        create_account(&s, &format!("filler{i}"), "x");
    }
    assert_eq!(whoami(&s, &alice).as_deref(), Some("alice"));
    let before = auth_status(&s);
    let started = Instant::now();
    let threads: Vec<_> = (0..10)
        .map(|t| {
            let port = s.port;
            std::thread::spawn(move || {
                for i in 0..100 {
                    let r: [u8; 32] = rand::random();
                    let key = match i % 4 {
                        0 => hex::encode(r),
                        // New-format keys naming accounts that do not exist.
                        1 => longship::storage::keys::new_key(&format!("ghost{t}x{i}"), "u", None),
                        2 => format!("junk-{}", hex::encode(&r[..8])),
                        _ => format!("{}.{}.x", hex::encode(&r[..4]), "@@"),
                    };
                    let (status, _) =
                        try_call(port, "GET", "/api/v1/system/status", &key, None).unwrap();
                    assert_eq!(status, 401, "{key}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed();
    let after = auth_status(&s);
    let d = |k: &str| counter(&after, k) - counter(&before, k);
    let allowed = (elapsed.as_millis() as u64).div_ceil(interval_ms.min(100)) + 2;
    assert!(
        d("freshness_checks") <= allowed,
        "{} checks in {elapsed:?}: {after}",
        d("freshness_checks")
    );
    // The flood itself rereads nothing. The periodic sweep for unannounced changes (every
    // 30 s) rereads files by design, and on a slower store (S3) one can land in the window.
    if d("sweeps") == 0 {
        assert_eq!(d("files_reread"), 0, "{after}");
    }
    assert_eq!(d("reloads"), 0, "{after}");
    assert_eq!(d("probes"), 0, "{after}");
    assert_eq!(
        counter(&after, "resolves") - counter(&before, "resolves"),
        1000 + 1
    );
    assert_eq!(whoami(&s, &alice).as_deref(), Some("alice"));
}

#[test]
fn concurrent_misses_share_one_reload_of_only_the_changed_account() {
    let st = Storage::new();
    let a = Server::start(&st, Opts::default());
    let b = Server::start(&st, Opts::default());
    let alice = create_account(&a, "acme", "alice");
    for i in 0..10 {
        create_account(&a, &format!("filler{i}"), "x");
    }
    // Let B catch up with everything announced so far (requests drive its checks).
    let marker = st.at("_system/registry_generation.json");
    let settle = Instant::now() + Duration::from_secs(10);
    loop {
        assert_eq!(whoami(&b, &alice).as_deref(), Some("alice"));
        let m: Value = serde_json::from_slice(&marker.read().unwrap()).unwrap();
        if auth_status(&b)["generation"] == m["generation"] {
            break;
        }
        assert!(Instant::now() < settle, "B never caught up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = auth_status(&b);
    let fresh = create_account(&a, "newco", "nina");
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (port, key) = (b.port, fresh.clone());
            std::thread::spawn(move || {
                try_call(port, "GET", "/api/v1/system/status", &key, None)
                    .unwrap()
                    .0
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    let after = auth_status(&b);
    let d = |k: &str| counter(&after, k) - counter(&before, k);
    assert!(d("reloads") <= 1, "{after}");
    assert!(d("full_reloads") == 0, "{after}");
    // accounts.json + newco's users.json, not the 12 accounts.
    assert!(d("files_reread") <= 2, "{after}");
    assert!(d("freshness_checks") <= 2, "{after}");
}

#[test]
fn storage_outage_keeps_known_keys_and_answers_503_for_unknown() {
    let st = Storage::private();
    let s = Server::start(
        &st,
        Opts::default().env("LONGSHIP_AUTH__REFRESH_INTERVAL_MS", "100"),
    );
    let alice = create_account(&s, "acme", "alice");
    assert_eq!(whoami(&s, &alice).as_deref(), Some("alice"));
    st.take_down();
    std::thread::sleep(Duration::from_millis(150));
    // Known key: still served (README: the outage choice). Unknown key: 503, not 401.
    assert_eq!(whoami(&s, &alice).as_deref(), Some("alice"));
    let unknown = longship::storage::keys::new_key("acme", "ghost", None);
    let r = s.get("/api/v1/system/status", Some(&unknown));
    assert_eq!((r.status, r.code()), (503, "UNAVAILABLE"), "{:?}", r.body);
    let r = s.get("/api/v1/system/status", Some(&"ab".repeat(32)));
    assert_eq!(r.status, 503);
    assert_eq!(s.get("/ready", None).status, 503);
    assert_eq!(auth_status(&s)["storage_ok"], false);
    st.bring_back();
    // Recovery is noticed by the next check; on S3 new work is shed until a trial call (one a
    // second) or the /ready probe gets through, so allow a few seconds.
    let back = Instant::now();
    while s.get("/api/v1/system/status", Some(&unknown)).status != 401 {
        assert!(back.elapsed() < Duration::from_secs(10), "never recovered");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.get("/ready", None).status, 200);
    assert_eq!(whoami(&s, &alice).as_deref(), Some("alice"));
}

/// Replace `account`'s users.json the way a writer does (an atomic whole-file replace),
/// without announcing it.
fn edit_users_unannounced(st: &Storage, account: &str, edit: impl FnOnce(&mut Value)) {
    let path = st.at(&format!("{account}/_system/users.json"));
    let mut doc: Value = serde_json::from_slice(&path.read().unwrap()).unwrap();
    edit(&mut doc);
    path.write(serde_json::to_vec_pretty(&doc).unwrap());
}

/// A writer killed between its registry write and its marker bump: a new user is still found
/// on its first request (account probe), and a restart of any instance announces a full
/// resync that makes every instance converge on the unannounced revocation.
#[test]
fn unannounced_changes_are_found_by_probes_and_restart_resync() {
    let st = Storage::new();
    let opts = Opts::default().env("LONGSHIP_AUTH__REFRESH_INTERVAL_MS", "200");
    let mut a = Server::start(&st, opts.clone());
    let b = Server::start(&st, opts);
    let alice = create_account(&a, "acme", "alice");
    let bob = register(&a, &alice, "acme", "bob", "user");
    assert_eq!(whoami(&b, &bob).as_deref(), Some("bob"));

    let eve = longship::storage::keys::new_key("acme", "eve", Some("e"));
    edit_users_unannounced(&st, "acme", |d| {
        d["users"]["eve"] = json!({"role": "user", "key": eve});
    });
    assert_eq!(whoami(&b, &eve).as_deref(), Some("eve"));

    let bob2 = longship::storage::keys::new_key("acme", "bob", Some("b2"));
    edit_users_unannounced(&st, "acme", |d| {
        d["users"]["bob"]["key"] = json!(bob2);
    });
    // Unannounced: the marker did not move, so B keeps its view (the documented gap)...
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_millis(400) {
        assert_eq!(whoami(&b, &bob).as_deref(), Some("bob"));
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...until an instance restarts (startup announces a full resync).
    a.restart();
    let took = until_rejected(&b, &bob, Instant::now(), Duration::from_secs(3));
    assert!(took <= Duration::from_millis(700), "{took:?}");
    assert_eq!(whoami(&b, &bob2).as_deref(), Some("bob"));
    assert_eq!(whoami(&a, &bob2).as_deref(), Some("bob"));
    assert_eq!(whoami(&a, &bob), None);
}

/// Warm `s`'s HTTP workers with `keys` until some requests are answered by their caches
/// (requests that arrive after the last freshness check lapsed still go to the actor).
fn warm_worker_caches(s: &Server, keys: &[(&str, &str)]) {
    let hits = || counter(&auth_status(s), "worker_cache_hits");
    let before = hits();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for _ in 0..20 {
            for (key, user) in keys {
                assert_eq!(whoami(s, key).as_deref(), Some(*user));
            }
        }
        // More than the status request's own (ROOT key) hit.
        if hits() > before + 1 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no request was answered by a worker cache"
        );
    }
}

#[test]
fn keys_cached_on_http_workers_die_within_the_refresh_bound() {
    let st = Storage::new();
    let a = Server::start(&st, Opts::default());
    let b = Server::start(&st, Opts::default());
    let alice = create_account(&a, "acme", "alice");
    let bob = register(&a, &alice, "acme", "bob", "user");
    let carl = register(&a, &alice, "acme", "carl", "user");
    warm_worker_caches(&a, &[(&bob, "bob"), (&carl, "carl")]);
    warm_worker_caches(&b, &[(&bob, "bob"), (&carl, "carl")]);

    // Regenerated on A while B's workers hold the old key and keep being asked for it (every
    // 5 ms): B refuses it within the refresh interval, and takes the new one at once.
    let r = a.post(
        &format!("{ACCOUNTS}/acme/users/bob/key"),
        Some(&alice),
        json!({}),
    );
    let since = Instant::now();
    let bob2 = r.result()["user_key"].as_str().unwrap().to_string();
    assert_eq!(
        whoami(&a, &bob),
        None,
        "the writing instance refuses at once"
    );
    assert_eq!(whoami(&b, &bob2).as_deref(), Some("bob"));
    let took = until_rejected(&b, &bob, since, Duration::from_secs(3));
    assert!(
        took <= Duration::from_millis(1500),
        "old key accepted for {took:?}"
    );

    // Removed on A: refused on A by the very next request, on B within the interval.
    assert_eq!(
        a.delete(&format!("{ACCOUNTS}/acme/users/carl"), Some(&alice))
            .status,
        202
    );
    let since = Instant::now();
    assert_eq!(whoami(&a, &carl), None);
    let took = until_rejected(&b, &carl, since, Duration::from_secs(3));
    assert!(
        took <= Duration::from_millis(1500),
        "removed key accepted for {took:?}"
    );
    assert_eq!(whoami(&b, &bob2).as_deref(), Some("bob"));
}

#[test]
fn strict_mode_never_answers_from_worker_caches() {
    let st = Storage::new();
    let a = Server::start(&st, strict());
    let b = Server::start(&st, strict());
    let alice = create_account(&a, "acme", "alice");
    let bob = register(&a, &alice, "acme", "bob", "user");
    for _ in 0..20 {
        assert_eq!(whoami(&b, &bob).as_deref(), Some("bob"));
    }
    assert_eq!(counter(&auth_status(&b), "worker_cache_hits"), 0);
    let r = a.post(
        &format!("{ACCOUNTS}/acme/users/bob/key"),
        Some(&alice),
        json!({}),
    );
    let bob2 = r.result()["user_key"].as_str().unwrap().to_string();
    assert_eq!(whoami(&b, &bob), None);
    assert_eq!(whoami(&b, &bob2).as_deref(), Some("bob"));
}
