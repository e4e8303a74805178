//! The observer components the `ov status` command reads (docs/API.md, System):
//! `queue`, `vikingdb`, `models`, `lock`, `retrieval`, `filesystem`, each mapped to what
//! Longship has, in upstream's shapes (its `tabulate` "pretty" tables for `format=table`, its
//! JSON objects for `format=json`), so the CLI shows real states instead of "unknown":
//! pools → queue, search index → vikingdb and retrieval, embedding model → models, named
//! locks → lock, storage → filesystem.
//! Pure formatting over snapshots the handler already holds; no I/O.

use serde_json::{json, Value};

use crate::actors::pool::PoolSnapshot;

use super::health::StorageHealth;

/// One component: name, health, and its status in both formats.
pub struct Component {
    pub name: &'static str,
    pub healthy: bool,
    pub json: Value,
    pub table: String,
}

/// A table in tabulate's "pretty" format (the one upstream's observers print).
pub fn pretty_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain(std::iter::once(h.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let rule = format!(
        "+{}+",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+")
    );
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| {
                let pad = w - c.chars().count();
                format!(" {}{c}{} ", " ".repeat(pad / 2), " ".repeat(pad - pad / 2))
            })
            .collect();
        format!("|{}|", padded.join("|"))
    };
    let mut out = vec![rule.clone(), line(headers.to_vec()), rule.clone()];
    for row in rows {
        out.push(line(row.iter().map(String::as_str).collect()));
    }
    out.push(rule);
    out.join("\n")
}

/// The memory-extraction backlog (shared storage, every instance's commits) beside the pools.
#[derive(Clone, Copy, Debug, Default)]
pub struct Backlog {
    pub waiting: u64,
    /// Runs put back because the model was unavailable (this instance, since start).
    pub deferred: u64,
}

/// `queue`: the storage and commit pools are Longship's work queues, and the backlog of
/// memory extractions waiting for one.
fn queue(pools: &[PoolSnapshot], backlog: Backlog) -> Component {
    let row = |name: &str, pending: usize, running: usize, done: u64, errors: u64| {
        vec![
            name.to_string(),
            pending.to_string(),
            running.to_string(),
            done.to_string(),
            "0".to_string(),
            errors.to_string(),
            (pending as u64 + running as u64 + done).to_string(),
        ]
    };
    let mut rows = Vec::new();
    let mut queues = Vec::new();
    let (mut pending, mut running, mut done, mut errors) = (0, 0, 0, 0);
    for p in pools {
        rows.push(row(p.name, p.queued, p.running, p.completed, p.panicked));
        queues.push(json!({
            "queue": p.name, "pending": p.queued, "in_progress": p.running,
            "processed": p.completed, "requeued": 0, "errors": p.panicked,
            "total": p.queued as u64 + p.running as u64 + p.completed,
            "capacity": p.capacity, "rejected": p.rejected,
        }));
        pending += p.queued;
        running += p.running;
        done += p.completed;
        errors += p.panicked;
    }
    rows.push(vec![
        "memory_backlog".to_string(),
        backlog.waiting.to_string(),
        "0".to_string(),
        "0".to_string(),
        backlog.deferred.to_string(),
        "0".to_string(),
        backlog.waiting.to_string(),
    ]);
    queues.push(json!({
        "queue": "memory_backlog", "pending": backlog.waiting, "in_progress": 0,
        "processed": 0, "requeued": backlog.deferred, "errors": 0, "total": backlog.waiting,
    }));
    rows.push(row("TOTAL", pending, running, done, errors));
    // A pool whose queue is full sheds new work with 503: that is the unhealthy state.
    let healthy = pools.iter().all(|p| p.queued + p.running < p.capacity);
    Component {
        name: "queue",
        healthy,
        json: json!({
            "queues": queues,
            "summary": {"pending": pending, "in_progress": running, "processed": done,
                        "requeued": 0, "errors": errors,
                        "total": pending as u64 + running as u64 + done},
        }),
        table: pretty_table(
            &[
                "Queue",
                "Pending",
                "In Progress",
                "Processed",
                "Requeued",
                "Errors",
                "Total",
            ],
            &rows,
        ),
    }
}

/// `filesystem`: the storage backend behind the `/local` mount.
fn filesystem(storage: &StorageHealth, jobs_done: u64) -> Component {
    let state = if storage.ok { "ok" } else { "error" };
    let mut table = format!(
        "Mount: /local (plugin: {})\n{}\n",
        storage.backend,
        "=".repeat(60)
    );
    table.push_str(&pretty_table(
        &["Operation", "Count", "Status"],
        &[vec![
            "storage jobs".to_string(),
            jobs_done.to_string(),
            state.to_string(),
        ]],
    ));
    table.push_str("\n\n");
    table.push_str(&pretty_table(
        &["Metric", "Value"],
        &[vec!["Total Operations".to_string(), jobs_done.to_string()]],
    ));
    if let Some(e) = &storage.error {
        table.push_str(&format!("\nError: {e}"));
    }
    Component {
        name: "filesystem",
        healthy: storage.ok,
        json: json!({"mounts": [{
            "path": "/local", "plugin": storage.backend, "reachable": storage.ok,
            "error": storage.error, "checked_at": storage.checked_at,
            "stats": {"operations": {"storage_jobs": {"count": jobs_done}}},
        }]}),
        table,
    }
}

/// `vikingdb`: the full-text search index (and stored vectors, with a dense model).
fn vikingdb(search: &Value) -> Component {
    let docs = search["docs"].as_u64().unwrap_or(0);
    let state = search["state"].as_str().unwrap_or("unknown");
    let status = if search["errors"].as_u64().unwrap_or(0) > 0 {
        "ERROR"
    } else {
        "OK"
    };
    let rows = [
        vec![
            "context".to_string(),
            "1".to_string(),
            docs.to_string(),
            status.to_string(),
        ],
        vec![
            "TOTAL".to_string(),
            "1".to_string(),
            docs.to_string(),
            String::new(),
        ],
    ];
    Component {
        name: "vikingdb",
        healthy: true,
        json: json!({
            "collections": [{"collection": "context", "index_count": 1, "vector_count": docs,
                             "ok": status == "OK", "state": state}],
            "summary": {"index_count": 1, "vector_count": docs, "collection_count": 1},
        }),
        table: pretty_table(
            &["Collection", "Index Count", "Vector Count", "Status"],
            &rows,
        ),
    }
}

/// `models`: the optional embedding model (no VLM or reranker in Longship).
fn models(search: &Value) -> Component {
    let e = &search["embedding"];
    let model = e["model"].as_str();
    let Some(model) = model else {
        return Component {
            name: "models",
            healthy: true,
            json: json!({"vlm": [], "embedding": [], "rerank": []}),
            table: "No model usage data available.".into(),
        };
    };
    let provider = e["provider"].as_str().unwrap_or("openai");
    let state = e["state"].as_str().unwrap_or("unknown");
    let healthy = e["healthy"].as_bool().unwrap_or(true);
    Component {
        name: "models",
        healthy,
        json: json!({"vlm": [], "embedding": [{"model": model, "provider": provider,
                                               "status": state}], "rerank": []}),
        table: format!(
            "\nEmbedding Models:\n{}\n",
            pretty_table(
                &["Model", "Provider", "Status"],
                &[vec![
                    model.to_string(),
                    provider.to_string(),
                    state.to_string()
                ]],
            )
        ),
    }
}

/// `retrieval`: this process's query counts in upstream's rows, then the state of the index;
/// `format=json` carries Longship's whole search status.
fn retrieval(search: &Value) -> Component {
    let row = |k: &str, v: String| vec![k.to_string(), v];
    let num = |k: &str| search[k].as_u64().unwrap_or(0).to_string();
    let queries = search["queries"].as_u64().unwrap_or(0);
    let results = search["results"].as_u64().unwrap_or(0);
    let zero = search["zero_result_queries"].as_u64().unwrap_or(0);
    let ratio = |n: u64| {
        if queries == 0 {
            0.0
        } else {
            n as f64 / queries as f64
        }
    };
    let mut rows = vec![
        row("Total Queries", queries.to_string()),
        row("Total Results", results.to_string()),
        row("Avg Results/Query", format!("{:.1}", ratio(results))),
        row("Zero-Result Queries", zero.to_string()),
        row("Zero-Result Rate", format!("{:.1}%", ratio(zero) * 100.0)),
        row(
            "Index State",
            search["state"].as_str().unwrap_or("unknown").to_string(),
        ),
        row("Indexed Documents", num("docs")),
        row("Index Lag", num("index_lag")),
        row("Index Errors", num("errors")),
    ];
    let e = &search["embedding"];
    if e["model"].is_string() {
        let n = |k: &str| e[k].as_u64().unwrap_or(0).to_string();
        rows.push(row("Embedding Backlog", n("backlog")));
        rows.push(row(
            "Embedding Batch Size",
            format!("{} of {}", n("batch_size"), n("batch_size_max")),
        ));
        rows.push(row(
            "Embedding Requests In Flight",
            format!(
                "{} (limit {} of {})",
                n("requests_in_flight"),
                n("in_flight_limit"),
                n("in_flight_limit_max")
            ),
        ));
        rows.push(row("Embedding Timeouts", n("timeouts")));
        rows.push(row("Embedding Throttled", n("throttled")));
        rows.push(row("Stored Vectors Deleted", n("stored_vectors_deleted")));
        rows.push(row("Vector GC Runs", n("vector_gc_runs")));
    }
    Component {
        name: "retrieval",
        healthy: true,
        json: search.clone(),
        table: pretty_table(&["Metric", "Value"], &rows),
    }
}

/// `lock`: this process's named cross-instance locks (lock files, S3 leases), in upstream's
/// first lines; usable exactly when storage is.
fn lock(storage: &StorageHealth, locks: LockSnapshot) -> Component {
    let availability = if storage.ok {
        "available"
    } else {
        "unavailable"
    };
    Component {
        name: "lock",
        healthy: storage.ok,
        json: json!({"active_locks": locks.held, "waiting_locks": locks.waiting,
                     "timed_out_waits": locks.timed_out, "backend": storage.backend,
                     "available": storage.ok}),
        table: format!(
            "{}\nActive locks: {}\nWaiting locks: {}\nTimed-out waits: {}\nBackend: {} ({availability})",
            held_table(locks.held),
            locks.held,
            locks.waiting,
            locks.timed_out,
            storage.backend
        ),
    }
}

/// Upstream's lock view: "No active locks." or a table with a row per held lock (anonymous:
/// lock names carry tenant ids; at most 100 rows).
fn held_table(held: u64) -> String {
    if held == 0 {
        return "No active locks.".into();
    }
    let rows: Vec<Vec<String>> = (1..=held.min(100))
        .map(|i| vec![i.to_string(), "held".to_string()])
        .collect();
    pretty_table(&["Lock", "State"], &rows)
}

/// Named-lock counts of this process.
#[derive(Clone, Copy, Debug, Default)]
pub struct LockSnapshot {
    pub held: u64,
    pub waiting: u64,
    pub timed_out: u64,
}

/// The six components `ov status` reads. `search` is the search index's status.
pub fn cli_components(
    storage: &StorageHealth,
    pools: &[PoolSnapshot],
    backlog: Backlog,
    search: &Value,
    locks: LockSnapshot,
) -> Vec<Component> {
    let jobs_done = pools.iter().map(|p| p.completed).sum();
    vec![
        queue(pools, backlog),
        vikingdb(search),
        models(search),
        lock(storage, locks),
        retrieval(search),
        filesystem(storage, jobs_done),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_view_counts_held_locks() {
        let up = StorageHealth {
            backend: "local",
            location: String::new(),
            ok: true,
            error: None,
            checked_at: 0.0,
        };
        let none = lock(&up, LockSnapshot::default());
        assert!(none.table.starts_with("No active locks."), "{}", none.table);
        assert_eq!(none.json["active_locks"], 0);
        let two = lock(
            &up,
            LockSnapshot {
                held: 2,
                waiting: 1,
                timed_out: 3,
            },
        );
        assert_eq!(two.table.matches("held").count(), 2, "{}", two.table);
        assert!(two.table.contains("Waiting locks: 1") && two.table.contains("Timed-out waits: 3"));
        assert_eq!(two.json["waiting_locks"], 1);
    }

    #[test]
    fn pretty_tables_look_like_tabulate() {
        let t = pretty_table(&["Queue", "Pending"], &[vec!["TOTAL".into(), "12".into()]]);
        assert_eq!(
            t,
            "+-------+---------+\n| Queue | Pending |\n+-------+---------+\n\
             | TOTAL |   12    |\n+-------+---------+"
        );
    }
}
