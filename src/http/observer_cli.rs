//! The observer components the `ov status` command reads (API.md §11.4, amended 2026-11-29):
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

/// `queue`: the storage and commit pools are Longship's work queues.
fn queue(pools: &[PoolSnapshot]) -> Component {
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

/// `retrieval`: the state of search (Longship keeps no per-query statistics); `format=json`
/// carries Longship's whole search status.
fn retrieval(search: &Value) -> Component {
    let row = |k: &str, v: String| vec![k.to_string(), v];
    let num = |k: &str| search[k].as_u64().unwrap_or(0).to_string();
    let mut rows = vec![
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

/// The six components `ov status` reads. `search` is the search index's status.
pub fn cli_components(
    storage: &StorageHealth,
    pools: &[PoolSnapshot],
    search: &Value,
) -> Vec<Component> {
    let jobs_done = pools.iter().map(|p| p.completed).sum();
    vec![
        queue(pools),
        vikingdb(search),
        models(search),
        // Named locks live in the storage backend (lock files, S3 leases): usable exactly when
        // storage is.
        Component {
            name: "lock",
            healthy: storage.ok,
            json: json!({"backend": storage.backend, "available": storage.ok}),
            table: format!(
                "Named locks: {} backend, {}",
                storage.backend,
                if storage.ok {
                    "available"
                } else {
                    "unavailable"
                }
            ),
        },
        retrieval(search),
        filesystem(storage, jobs_done),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

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
