//! The observer components the `ov status` command reads (docs/API.md, System):
//! `queue`, `vikingdb`, `models`, `lock`, `retrieval`, `filesystem`, each mapped to what
//! Longship has, in upstream's shapes (its `tabulate` "pretty" tables for `format=table`, its
//! JSON objects for `format=json`), so the CLI shows real states instead of "unknown":
//! pools → queue, search index → vikingdb and retrieval, embedding model → models, named
//! locks → lock, storage → filesystem.
//! Pure formatting over snapshots the handler already holds; no I/O.

use serde_json::{json, Value};

use crate::actors::pool::PoolSnapshot;
use crate::storage::lock_counts::HeldLock;

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

/// Work waiting outside the pools: ingestions, extractions and embeddings.
#[derive(Clone, Copy, Debug, Default)]
pub struct Backlogs {
    /// Memory extractions waiting (shared storage, every instance's commits).
    pub extraction: Backlog,
    /// Ingestions accepted and not finished on this instance, and uploads being streamed.
    pub ingestion_in_flight: u64,
    pub uploads_in_flight: u64,
    /// Texts waiting for the embedding model on this instance (0 without one).
    pub embedding: u64,
    /// Watches due and not yet started here, and watch runs in flight here.
    pub watches_due: u64,
    pub watches_running: u64,
}

/// `queue`: the pools are Longship's work queues; beside them the ingestion, extraction and
/// embedding backlogs.
fn queue(pools: &[PoolSnapshot], backlogs: Backlogs) -> Component {
    let row = |name: &str, pending: u64, running: u64, done: u64, requeued: u64, errors: u64| {
        vec![
            name.to_string(),
            pending.to_string(),
            running.to_string(),
            done.to_string(),
            requeued.to_string(),
            errors.to_string(),
            (pending + running + done).to_string(),
        ]
    };
    let mut rows = Vec::new();
    let mut queues = Vec::new();
    let (mut pending, mut running, mut done, mut errors) = (0u64, 0u64, 0u64, 0u64);
    for p in pools {
        let (q, r) = (p.queued as u64, p.running as u64);
        rows.push(row(p.name, q, r, p.completed, 0, p.panicked));
        queues.push(json!({
            "queue": p.name, "pending": q, "in_progress": r,
            "processed": p.completed, "requeued": 0, "errors": p.panicked,
            "total": q + r + p.completed,
            "capacity": p.capacity, "rejected": p.rejected,
        }));
        pending += q;
        running += r;
        done += p.completed;
        errors += p.panicked;
    }
    let b = backlogs;
    let extra = [
        // name, pending, in progress, requeued
        (
            "ingestion",
            0,
            b.ingestion_in_flight + b.uploads_in_flight,
            0,
        ),
        (
            "memory_backlog",
            b.extraction.waiting,
            0,
            b.extraction.deferred,
        ),
        ("embedding", b.embedding, 0, 0),
        ("watches", b.watches_due, b.watches_running, 0),
    ];
    for (name, p, r, requeued) in extra {
        rows.push(row(name, p, r, 0, requeued, 0));
        queues.push(json!({
            "queue": name, "pending": p, "in_progress": r, "processed": 0,
            "requeued": requeued, "errors": 0, "total": p + r,
        }));
    }
    rows.push(row("TOTAL", pending, running, done, 0, errors));
    // A pool whose queue is full sheds new work with 503: that is the unhealthy state.
    let healthy = pools.iter().all(|p| p.queued + p.running < p.capacity);
    Component {
        name: "queue",
        healthy,
        json: json!({
            "queues": queues,
            "summary": {"pending": pending, "in_progress": running, "processed": done,
                        "requeued": 0, "errors": errors,
                        "total": pending + running + done},
            "backlogs": {"ingestion_in_flight": b.ingestion_in_flight,
                         "uploads_in_flight": b.uploads_in_flight,
                         "extraction_waiting": b.extraction.waiting,
                         "extraction_deferred": b.extraction.deferred,
                         "embedding": b.embedding},
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

/// `filesystem`: the storage backend behind the `/local` mount: reachable or not, and the
/// storage work done (jobs per pool). Never its location (endpoint, bucket or directory).
fn filesystem(storage: &StorageHealth, pools: &[PoolSnapshot]) -> Component {
    let state = if storage.ok { "ok" } else { "error" };
    let mut table = format!(
        "Mount: /local (plugin: {})\n{}\n",
        storage.backend,
        "=".repeat(60)
    );
    let rows: Vec<Vec<String>> = pools
        .iter()
        .map(|p| {
            vec![
                format!("{} jobs", p.name),
                p.completed.to_string(),
                p.panicked.to_string(),
                p.rejected.to_string(),
            ]
        })
        .collect();
    let total: u64 = pools.iter().map(|p| p.completed).sum();
    let failed: u64 = pools.iter().map(|p| p.panicked).sum();
    table.push_str(&pretty_table(
        &["Operation", "Count", "Errors", "Rejected"],
        &rows,
    ));
    table.push_str("\n\n");
    table.push_str(&pretty_table(
        &["Metric", "Value"],
        &[
            vec!["Total Operations".to_string(), total.to_string()],
            vec!["Backend".to_string(), storage.backend.to_string()],
            vec!["Status".to_string(), state.to_string()],
            vec![
                "Last Probe (unix s)".to_string(),
                format!("{:.0}", storage.checked_at),
            ],
        ],
    ));
    if storage.error.is_some() {
        // The probe's own message may name the store's location: say only that it failed.
        table.push_str("\nError: the storage backend did not answer the last probe");
    }
    let operations: serde_json::Map<String, Value> = pools
        .iter()
        .map(|p| {
            (
                format!("{}_jobs", p.name),
                json!({"count": p.completed, "errors": p.panicked, "rejected": p.rejected}),
            )
        })
        .collect();
    Component {
        name: "filesystem",
        healthy: storage.ok,
        json: json!({"mounts": [{
            "path": "/local", "plugin": storage.backend, "reachable": storage.ok,
            "checked_at": storage.checked_at,
            "stats": {"operations": operations, "total_operations": total, "errors": failed},
        }]}),
        table,
    }
}

/// `vikingdb`: Longship's index — the full-text index (documents, segments, lag behind the
/// shared change log) and, with a dense model, the stored vectors.
fn vikingdb(search: &Value) -> Component {
    let n = |k: &str| search[k].as_u64().unwrap_or(0);
    let docs = n("docs");
    let state = search["state"].as_str().unwrap_or("unknown");
    let errors = n("errors");
    let status = if errors > 0 { "ERROR" } else { "OK" };
    let vectors = search["embedding"]["vectors"].as_u64();
    let mut rows = vec![vec![
        "context".to_string(),
        "1".to_string(),
        vectors.unwrap_or(docs).to_string(),
        status.to_string(),
    ]];
    rows.push(vec![
        "TOTAL".to_string(),
        "1".to_string(),
        vectors.unwrap_or(docs).to_string(),
        String::new(),
    ]);
    let mut table = pretty_table(
        &["Collection", "Index Count", "Vector Count", "Status"],
        &rows,
    );
    table.push_str("\n\n");
    table.push_str(&pretty_table(
        &["Metric", "Value"],
        &[
            vec!["Index State".into(), state.to_string()],
            vec!["Documents".into(), docs.to_string()],
            vec!["Segments".into(), n("segments").to_string()],
            vec!["Index Lag".into(), n("index_lag").to_string()],
            vec!["Commits".into(), n("commits").to_string()],
            vec!["Errors".into(), errors.to_string()],
            vec![
                "Stored Vectors".into(),
                vectors.map_or("not configured".into(), |v| v.to_string()),
            ],
        ],
    ));
    Component {
        name: "vikingdb",
        // A building or lagging index still answers (from what it holds); errors do not heal.
        healthy: errors == 0,
        json: json!({
            "collections": [{"collection": "context", "index_count": 1,
                             "vector_count": vectors.unwrap_or(docs),
                             "ok": status == "OK", "state": state}],
            "summary": {"index_count": 1, "vector_count": vectors.unwrap_or(docs),
                        "collection_count": 1},
            "index": {"state": state, "documents": docs, "segments": n("segments"),
                      "index_lag": n("index_lag"), "commits": n("commits"), "errors": errors,
                      "stored_vectors": vectors},
        }),
        table,
    }
}

/// A configured model, as the observer shows it.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub model: String,
    pub provider: String,
    /// The key masked: its last 4 characters only when it is long enough to keep 12 hidden.
    pub key: String,
    pub state: String,
    pub healthy: bool,
}

/// A key as observers may show it.
pub fn mask_key(key: Option<&str>) -> String {
    match key {
        None | Some("") => "(none)".into(),
        Some(k) if k.chars().count() >= 16 => {
            let tail: String = k
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("****{tail}")
        }
        Some(_) => "****".into(),
    }
}

/// `models`: the configured providers — the chat model (`vlm`: summaries, memory extraction)
/// and the embedding model; no reranker in Longship. Keys masked, endpoints never shown.
fn models(chat: Option<&ModelInfo>, embedding: Option<&ModelInfo>) -> Component {
    if chat.is_none() && embedding.is_none() {
        return Component {
            name: "models",
            healthy: true,
            json: json!({"vlm": [], "embedding": [], "rerank": []}),
            table: "No model usage data available.".into(),
        };
    }
    let entry = |m: &ModelInfo| {
        json!({"model": m.model, "provider": m.provider, "api_key": m.key,
               "status": m.state, "healthy": m.healthy})
    };
    let mut table = String::new();
    for (title, m) in [("VLM", chat), ("Embedding", embedding)] {
        if let Some(m) = m {
            table.push_str(&format!(
                "\n{title} Models:\n{}\n",
                pretty_table(
                    &["Model", "Provider", "API Key", "Status"],
                    &[vec![
                        m.model.clone(),
                        m.provider.clone(),
                        m.key.clone(),
                        m.state.clone()
                    ]],
                )
            ));
        }
    }
    Component {
        name: "models",
        healthy: chat.is_none_or(|m| m.healthy) && embedding.is_none_or(|m| m.healthy),
        json: json!({"vlm": chat.map(entry).into_iter().collect::<Vec<_>>(),
                     "embedding": embedding.map(entry).into_iter().collect::<Vec<_>>(),
                     "rerank": []}),
        table,
    }
}

/// Latency of one retrieval route on this instance (from the `/metrics` histogram).
#[derive(Clone, Debug)]
pub struct RouteLatency {
    pub name: &'static str,
    pub count: u64,
    pub sum_seconds: f64,
    /// The upper bound of the histogram bucket holding the 95th percentile.
    pub p95_ms: Option<f64>,
}

impl RouteLatency {
    fn avg_ms(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_seconds * 1000.0 / self.count as f64
        }
    }
}

/// `retrieval`: this process's query counts in upstream's rows, then the state of the index;
/// `format=json` carries Longship's whole search status.
fn retrieval(search: &Value, latency: &[RouteLatency]) -> Component {
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
    ];
    for l in latency {
        rows.push(row(&format!("{} Requests", l.name), l.count.to_string()));
        rows.push(row(
            &format!("{} Avg Latency (ms)", l.name),
            format!("{:.1}", l.avg_ms()),
        ));
        rows.push(row(
            &format!("{} P95 Latency (ms, at most)", l.name),
            l.p95_ms.map_or("-".into(), |v| format!("{v:.1}")),
        ));
    }
    rows.extend([
        row(
            "Index State",
            search["state"].as_str().unwrap_or("unknown").to_string(),
        ),
        row("Indexed Documents", num("docs")),
        row("Index Lag", num("index_lag")),
        row("Index Errors", num("errors")),
    ]);
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
    let mut json = search.clone();
    json["latency"] = latency
        .iter()
        .map(|l| {
            json!({"route": l.name, "requests": l.count, "avg_latency_ms": l.avg_ms(),
                   "p95_latency_ms_at_most": l.p95_ms})
        })
        .collect();
    Component {
        name: "retrieval",
        healthy: true,
        json,
        table: pretty_table(&["Metric", "Value"], &rows),
    }
}

/// `lock`: this process's named cross-instance locks (lock files, S3 leases): held ones by
/// kind and age, waiting and timed-out counts; usable exactly when storage is.
fn lock(storage: &StorageHealth, locks: &LockSnapshot) -> Component {
    let availability = if storage.ok {
        "available"
    } else {
        "unavailable"
    };
    let held: Vec<Value> = locks
        .held_locks
        .iter()
        .map(|h| json!({"kind": h.kind, "held_seconds": h.held_for.as_secs_f64()}))
        .collect();
    Component {
        name: "lock",
        healthy: storage.ok,
        json: json!({"active_locks": locks.held, "waiting_locks": locks.waiting,
                     "timed_out_waits": locks.timed_out, "backend": storage.backend,
                     "available": storage.ok, "held": held}),
        table: format!(
            "{}\nActive locks: {}\nWaiting locks: {}\nTimed-out waits: {}\nBackend: {} ({availability})",
            held_table(&locks.held_locks),
            locks.held,
            locks.waiting,
            locks.timed_out,
            storage.backend
        ),
    }
}

/// Upstream's lock view: "No active locks." or a row per held lock (kind and age only: the
/// rest of a lock name carries tenant ids; at most 100 rows).
fn held_table(held: &[HeldLock]) -> String {
    if held.is_empty() {
        return "No active locks.".into();
    }
    let rows: Vec<Vec<String>> = held
        .iter()
        .take(100)
        .enumerate()
        .map(|(i, h)| {
            vec![
                (i + 1).to_string(),
                h.kind.clone(),
                "held".to_string(),
                format!("{:.1}", h.held_for.as_secs_f64()),
            ]
        })
        .collect();
    pretty_table(&["Lock", "Kind", "State", "Held (s)"], &rows)
}

/// Named locks of this process.
#[derive(Clone, Debug, Default)]
pub struct LockSnapshot {
    pub held: u64,
    pub waiting: u64,
    pub timed_out: u64,
    /// The held ones (at most 100), oldest first.
    pub held_locks: Vec<HeldLock>,
}

/// What the components are made of (snapshots the handler already holds).
pub struct Inputs<'a> {
    pub storage: &'a StorageHealth,
    pub pools: &'a [PoolSnapshot],
    pub backlogs: Backlogs,
    /// The search index's status (`SearchHandle::status`).
    pub search: &'a Value,
    pub locks: LockSnapshot,
    pub chat: Option<ModelInfo>,
    pub embedding: Option<ModelInfo>,
    pub latency: Vec<RouteLatency>,
}

/// The component names, in `ov status` order.
pub const NAMES: [&str; 6] = [
    "queue",
    "vikingdb",
    "models",
    "lock",
    "retrieval",
    "filesystem",
];

/// The six components `ov status` reads.
pub fn cli_components(i: &Inputs<'_>) -> Vec<Component> {
    vec![
        queue(i.pools, i.backlogs),
        vikingdb(i.search),
        models(i.chat.as_ref(), i.embedding.as_ref()),
        lock(i.storage, &i.locks),
        retrieval(i.search, &i.latency),
        filesystem(i.storage, i.pools),
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
        let none = lock(&up, &LockSnapshot::default());
        assert!(none.table.starts_with("No active locks."), "{}", none.table);
        assert_eq!(none.json["active_locks"], 0);
        let held = |kind: &str| HeldLock {
            kind: kind.into(),
            held_for: std::time::Duration::from_secs(2),
        };
        let two = lock(
            &up,
            &LockSnapshot {
                held: 2,
                waiting: 1,
                timed_out: 3,
                held_locks: vec![held("session"), held("move")],
            },
        );
        assert_eq!(two.table.matches("held").count(), 2, "{}", two.table);
        assert!(two.table.contains("Waiting locks: 1") && two.table.contains("Timed-out waits: 3"));
        assert_eq!(two.json["waiting_locks"], 1);
        assert!(two.table.contains("session") && two.table.contains("move"));
        assert_eq!(two.json["held"][0]["kind"], "session");
    }

    #[test]
    fn keys_are_masked() {
        assert_eq!(mask_key(None), "(none)");
        assert_eq!(mask_key(Some("short-secret")), "****");
        assert_eq!(mask_key(Some("sk-0123456789abcdefWXYZ")), "****WXYZ");
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
