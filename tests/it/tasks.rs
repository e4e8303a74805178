//! Tasks API rows that need no producer (producers test their own tasks end to end).

use crate::harness::{Opts, Server, Storage, ROOT_KEY};

#[test]
fn unknown_tasks_and_limits() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let r = s.get(
        "/api/v1/tasks/00000000-0000-4000-8000-000000000000",
        Some(ROOT_KEY),
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["message"], "Task not found or expired");
    assert_eq!(r.body["error"]["details"]["type"], "task");
    let r = s.get("/api/v1/tasks/..%2F..%2Fetc", Some(ROOT_KEY));
    assert_eq!(r.status, 404);
    let r = s.get("/api/v1/tasks?limit=0", Some(ROOT_KEY));
    assert_eq!(r.status, 400);
    let r = s.get("/api/v1/tasks?limit=201", Some(ROOT_KEY));
    assert_eq!(r.status, 400);
    let r = s.get("/api/v1/tasks", Some(ROOT_KEY));
    assert_eq!(r.status, 200);
    assert!(r.result().is_array());
    let r = s.post(
        "/api/v1/tasks/00000000-0000-4000-8000-000000000000/cancel",
        Some(ROOT_KEY),
        serde_json::json!({}),
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.body["error"]["message"], "ROOT may not cancel tasks");
    assert_eq!(s.get("/api/v1/tasks", None).status, 401);
}
