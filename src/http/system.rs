//! System endpoints (spec §11, §13.1, §13.15).

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::IntoParams;

use crate::error::ServiceError;

use super::auth::{presented_key, AnyRole, Caller};
use super::envelope::{ApiOk, ApiResult};
use super::extract::ApiQuery;
use super::routes::{at, Routes};
use super::AppState;

/// `/health` waits at most this long for the AuthActor before leaving identity out.
const HEALTH_AUTH_DEADLINE: Duration = Duration::from_millis(200);
/// `/ready` waits at most this long for the storage probe.
const READY_PROBE_DEADLINE: Duration = Duration::from_secs(3);

pub fn configure(routes: &mut Routes) {
    routes
        .add(at("/health").get(health))
        .add(at("/ready").get(ready))
        .add(at("/api/v1/system/status").get(status))
        .add(at("/api/v1/observer/system").get(observer));
    for name in super::observer_cli::NAMES {
        routes.add(at(format!("/api/v1/observer/{name}")).get(observer_component));
    }
}

/// The `/health` answer (typed: built for every liveness probe, so no JSON tree).
#[derive(Serialize)]
struct Health {
    status: &'static str,
    healthy: bool,
    version: &'static str,
    auth_mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
}

/// Liveness: never touches storage; touches the AuthActor only when a key is presented, and
/// then under a short deadline (spec §13.15).
async fn health(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let mut body = Health {
        status: "ok",
        healthy: true,
        version: env!("CARGO_PKG_VERSION"),
        auth_mode: state.mode.as_str(),
        account_id: None,
        user_id: None,
        role: None,
    };
    if let Some(key) = presented_key(&req) {
        if state.mode == crate::identity::AuthMode::ApiKey {
            if let Ok(id) = state.resolve_key(key, HEALTH_AUTH_DEADLINE).await {
                body.account_id = Some(id.account);
                body.user_id = Some(id.user);
                body.role = Some(id.role.as_str());
            }
        }
    }
    HttpResponse::Ok().json(body)
}

/// Readiness: a fresh storage probe through the pool, bounded by a deadline.
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let initialized = state.is_initialized();
    let probe = state.health.probe(&state.pools, READY_PROBE_DEADLINE).await;
    let filesystem = match &probe {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("error: {e}"),
    };
    let key_manager = match state.mode {
        crate::identity::AuthMode::Dev => "not_configured",
        crate::identity::AuthMode::ApiKey => "ok",
    };
    let ok = probe.is_ok() && initialized;
    // The index never fails readiness: while it is (re)built, find answers from what is
    // indexed and says so, so a rebuild never takes every instance out of a load balancer.
    let search = state.search.status();
    let mut body = json!({
        "status": if ok { "ready" } else { "not_ready" },
        "checks": {
            "agfs": {"status": if probe.is_ok() { "ok" } else { "error" }, "checks": {"filesystem": filesystem}},
            "vectordb": "not_configured",
            "api_key_manager": key_manager,
            "embedding": if state.search.embedder.is_some() { "ok" } else { "not_configured" },
            "ollama": "not_configured",
            "search_index": {"status": "ok", "state": search["state"], "docs": search["docs"], "index_lag": search["index_lag"]},
        }
    });
    if !initialized {
        // The registry (or the dev-mode scaffold) is not in place yet; the checks still say
        // why, e.g. a store that does not answer.
        body["reason"] = "initializing".into();
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status).json(body)
}

async fn status(caller: Caller<AnyRole>) -> ApiResult {
    Ok(ApiOk::new(
        json!({"initialized": true, "user": caller.user()}),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ObserverQuery {
    format: Option<String>,
}

/// `format`: table (default) or json.
fn wants_table(format: Option<&str>) -> Result<bool, ServiceError> {
    match format {
        None | Some("table") => Ok(true),
        Some("json") => Ok(false),
        Some(other) => Err(ServiceError::validation(
            &["query", "format"],
            &format!("Input should be 'table' or 'json', got {other:?}"),
            "literal_error",
        )),
    }
}

/// The six components `ov status` reads, from this instance's snapshots (no storage I/O).
fn cli_components(state: &AppState) -> Vec<super::observer_cli::Component> {
    use super::observer_cli::RouteLatency;
    use super::observer_cli::{mask_key, Backlog, Backlogs, Inputs, LockSnapshot, ModelInfo};
    use std::sync::atomic::Ordering::Relaxed;
    let storage = state.health.snapshot();
    let pools: Vec<_> = state.pools.all().iter().map(|p| p.snapshot()).collect();
    let ms = &state.memory.stats;
    let search = state.search.status();
    let (held, waiting, timed_out) = crate::storage::lock_counts::snapshot();
    let vlm = &state.settings.vlm;
    // The chat model's health: its last memory-extraction calls (provider errors, timeouts).
    let chat = state.ingest.chat.as_ref().map(|c| {
        let failing = ms.consecutive_model_failures() > 0;
        ModelInfo {
            model: c.model().to_string(),
            provider: vlm.provider.clone().unwrap_or_else(|| "openai".into()),
            key: mask_key(vlm.api_key.as_deref()),
            state: if failing { "failing" } else { "ok" }.into(),
            healthy: !failing,
        }
    });
    let e = &search["embedding"];
    let embedding = e["model"].as_str().map(|model| ModelInfo {
        model: model.to_string(),
        provider: e["provider"].as_str().unwrap_or("openai").to_string(),
        key: mask_key(state.settings.embedding.dense.api_key.as_deref()),
        state: e["state"].as_str().unwrap_or("unknown").to_string(),
        healthy: e["healthy"].as_bool().unwrap_or(true),
    });
    let latency = [
        ("find", "/api/v1/search/find"),
        ("search", "/api/v1/search/search"),
    ]
    .into_iter()
    .map(|(name, route)| {
        let (count, sum_seconds, p95) = state.metrics.route_latency("POST", route);
        RouteLatency {
            name,
            count,
            sum_seconds,
            p95_ms: p95.map(|s| s * 1000.0),
        }
    })
    .collect();
    super::observer_cli::cli_components(&Inputs {
        storage: &storage,
        pools: &pools,
        backlogs: Backlogs {
            extraction: Backlog {
                waiting: ms.backlog.load(Relaxed),
                deferred: ms.deferred.load(Relaxed),
            },
            ingestion_in_flight: state.ingest.in_flight.load(Relaxed) as u64,
            uploads_in_flight: state.ingest.uploads_in_flight.load(Relaxed) as u64,
            watches_due: state.watches.stats.due.load(Relaxed) as u64,
            watches_running: state.watches.stats.running.load(Relaxed) as u64,
            embedding: e["backlog"].as_u64().unwrap_or(0),
        },
        search: &search,
        locks: LockSnapshot {
            held,
            waiting,
            timed_out,
            held_locks: crate::storage::lock_counts::held_locks(100),
        },
        chat,
        embedding,
        latency,
    })
}

/// True when every observer component is healthy (`debug/health`).
pub(super) fn observers_healthy(state: &AppState) -> bool {
    cli_components(state).iter().all(|c| c.healthy)
}

/// One component (`/api/v1/observer/{queue,vikingdb,models,lock,retrieval,filesystem}`) in
/// upstream's `{name, is_healthy, has_errors, status}`; no storage I/O.
async fn observer_component(
    state: web::Data<AppState>,
    _caller: Caller<AnyRole>,
    ApiQuery(q): ApiQuery<ObserverQuery>,
    req: HttpRequest,
) -> ApiResult {
    let as_table = wants_table(q.format.as_deref())?;
    let name = req.path().rsplit('/').next().unwrap_or_default();
    let Some(c) = cli_components(&state).into_iter().find(|c| c.name == name) else {
        return Err(ServiceError::new(
            crate::error::ErrorCode::NotFound,
            "Not Found",
        ));
    };
    Ok(ApiOk::new(json!({
        "name": c.name,
        "is_healthy": c.healthy,
        "has_errors": !c.healthy,
        "status": if as_table { Value::String(c.table) } else { c.json },
    })))
}

/// Component health in the upstream observer shape; no storage I/O (reads the last probe).
async fn observer(
    state: web::Data<AppState>,
    _caller: Caller<AnyRole>,
    ApiQuery(q): ApiQuery<ObserverQuery>,
) -> ApiResult {
    let as_table = wants_table(q.format.as_deref())?;
    let storage = state.health.snapshot();
    let storage_pool = state.pools.storage().snapshot();
    let commit_pool = state.pools.commit().snapshot();
    let ingest_pool = state.pools.ingest().snapshot();
    let memory_pool = state.pools.memory().snapshot();
    let memory = memory_status(&state.memory.stats);
    let cli = cli_components(&state);
    let auth = state.auth_status().await;
    let components = [
        (
            "storage",
            storage.ok,
            json!({
                "backend": storage.backend,
                "reachable": storage.ok,
                "error": storage.error,
                "checked_at": storage.checked_at,
            }),
        ),
        (
            "pools",
            true,
            json!({
                "http_workers": state.workers,
                "storage": storage_pool,
                "commit": commit_pool,
                "ingest": ingest_pool,
                "memory": memory_pool,
            }),
        ),
        ("memory", true, memory),
        (
            "auth",
            auth.is_ok(),
            auth.unwrap_or_else(|e| json!({"error": e})),
        ),
        ("admission", true, state.body_budget.status()),
    ];
    let mut map = serde_json::Map::new();
    let mut errors = Vec::new();
    let mut add = |name: &str, healthy: bool, status: Value| {
        if !healthy {
            errors.push(format!("{name} has errors"));
        }
        map.insert(
            name.to_string(),
            json!({"name": name, "is_healthy": healthy, "has_errors": !healthy, "status": status}),
        );
    };
    // What `ov status` reads, in upstream's shapes (§11.4), then Longship's own detail.
    for c in cli {
        add(
            c.name,
            c.healthy,
            if as_table {
                Value::String(c.table)
            } else {
                c.json
            },
        );
    }
    for (name, healthy, status) in components {
        let status = if as_table {
            render_table(&status)
        } else {
            status
        };
        add(name, healthy, status);
    }
    Ok(ApiOk::new(json!({
        "is_healthy": errors.is_empty(),
        "errors": errors,
        "components": map,
    })))
}

/// A two-column text table of a flattened JSON object.
fn render_table(value: &Value) -> Value {
    fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            Value::String(s) => out.push((prefix.to_string(), s.clone())),
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let mut rows = Vec::new();
    flatten("", value, &mut rows);
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let text = rows
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}"))
        .collect::<Vec<_>>()
        .join("\n");
    Value::String(text)
}

/// Memory extraction figures for the observer (the same as `/metrics`).
fn memory_status(stats: &crate::memory::stats::MemoryStats) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let calls: serde_json::Map<String, Value> = stats
        .outcomes()
        .into_iter()
        .map(|(k, n)| (k.to_string(), json!(n)))
        .collect();
    json!({
        "backlog": stats.backlog.load(Relaxed),
        "backlog_due": stats.backlog_due.load(Relaxed),
        "running": stats.running.load(Relaxed),
        "completed": stats.completed.load(Relaxed),
        "deferred": stats.deferred.load(Relaxed),
        "written": stats.written.load(Relaxed),
        "calls": calls,
    })
}
