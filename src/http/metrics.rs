//! Prometheus metrics at `GET /metrics` (text format). Request series are labelled with the
//! matched route pattern (`/api/v1/tasks/{task_id}`), never the raw path, so cardinality stays
//! bounded. Pool and auth figures are read at scrape time; scraping touches no storage. Running
//! totals (`_total`) are counters, levels are gauges.

use std::sync::Mutex;

use actix_web::{web, HttpResponse};
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use super::routes::{at, Routes};
use super::AppState;

/// Every series this server exports.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    pool_threads: IntGaugeVec,
    pool_capacity: IntGaugeVec,
    pool_running: IntGaugeVec,
    pool_queued: IntGaugeVec,
    pool_completed: IntCounterVec,
    pool_rejected: IntCounterVec,
    pool_panicked: IntCounterVec,
    /// AuthActor state (generation, accounts, users, loaded, …).
    auth: GaugeVec,
    search: GaugeVec,
    /// AuthActor running totals, one series per event (cache hits, freshness checks, …).
    auth_events: IntCounterVec,
    storage_up: Gauge,
    ingest: IntGaugeVec,
    /// Scrapes copy running totals into counters; one at a time, so none is added twice.
    scrape: Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
#[error("metrics registry: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new_custom(Some("longship".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by method, route and status",
            ),
            &["method", "route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ],
            ),
            &["method", "route"],
        )?;
        let pool_gauge =
            |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["pool"]);
        let pool_threads = pool_gauge("pool_threads", "SyncArbiter threads per pool")?;
        let pool_capacity =
            pool_gauge("pool_capacity", "Queued plus running jobs allowed per pool")?;
        let pool_running = pool_gauge("pool_running", "Jobs running per pool")?;
        let pool_queued = pool_gauge("pool_queued", "Jobs waiting for a thread per pool")?;
        let pool_counter =
            |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["pool"]);
        let pool_completed = pool_counter("pool_completed_total", "Jobs finished per pool")?;
        let pool_rejected = pool_counter(
            "pool_rejected_total",
            "Jobs refused with 503 because the pool was full",
        )?;
        let pool_panicked =
            pool_counter("pool_panicked_total", "Jobs that panicked (answered 500)")?;
        let auth = GaugeVec::new(
            Opts::new(
                "auth",
                "AuthActor state (generation, accounts, users, loaded, check in flight)",
            ),
            &["name"],
        )?;
        let search = GaugeVec::new(
            Opts::new("search", "Search index state: docs, index_lag (changes seen but not applied), building, reconciling, commits, errors, embedding backlog and adaptive pace (batch_size, in_flight_limit, timeouts, throttled), stored vectors deleted and vector GC runs"),
            &["name"],
        )?;
        let auth_events = IntCounterVec::new(
            Opts::new(
                "auth_events_total",
                "AuthActor events (resolves, cache hits/misses, freshness checks, reloads, …)",
            ),
            &["event"],
        )?;
        let storage_up = Gauge::new("storage_up", "1 if the last storage probe succeeded")?;
        let ingest = IntGaugeVec::new(
            Opts::new(
                "ingest",
                "Resource ingestion on this instance: in_flight (accepted, not finished), \
                 uploads_in_flight (temp uploads being streamed)",
            ),
            &["name"],
        )?;
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(pool_threads.clone()),
            Box::new(pool_capacity.clone()),
            Box::new(pool_running.clone()),
            Box::new(pool_queued.clone()),
            Box::new(pool_completed.clone()),
            Box::new(pool_rejected.clone()),
            Box::new(pool_panicked.clone()),
            Box::new(auth.clone()),
            Box::new(search.clone()),
            Box::new(auth_events.clone()),
            Box::new(storage_up.clone()),
            Box::new(ingest.clone()),
        ] {
            registry.register(c)?;
        }
        Ok(Metrics {
            registry,
            requests,
            latency,
            pool_threads,
            pool_capacity,
            pool_running,
            pool_queued,
            pool_completed,
            pool_rejected,
            pool_panicked,
            auth,
            search,
            auth_events,
            storage_up,
            ingest,
            scrape: Mutex::new(()),
        })
    }

    /// Count one finished request.
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        self.requests
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        self.latency
            .with_label_values(&[method, route])
            .observe(seconds);
    }

    fn encode(&self) -> Result<String, MetricsError> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

pub fn configure(routes: &mut Routes) {
    routes.add(at("/metrics").get(metrics));
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let m = &state.metrics;
    let auth_status = state.auth_status().await.ok();
    let text = {
        let _one_scrape = m.scrape.lock().unwrap_or_else(|p| p.into_inner());
        for pool in state.pools.all() {
            let s = pool.snapshot();
            let l = [s.name];
            m.pool_threads.with_label_values(&l).set(s.threads as i64);
            m.pool_capacity.with_label_values(&l).set(s.capacity as i64);
            m.pool_running.with_label_values(&l).set(s.running as i64);
            m.pool_queued.with_label_values(&l).set(s.queued as i64);
            catch_up(&m.pool_completed.with_label_values(&l), s.completed);
            catch_up(&m.pool_rejected.with_label_values(&l), s.rejected);
            catch_up(&m.pool_panicked.with_label_values(&l), s.panicked);
        }
        for (name, gauge) in [
            ("in_flight", &state.ingest.in_flight),
            ("uploads_in_flight", &state.ingest.uploads_in_flight),
        ] {
            m.ingest
                .with_label_values(&[name])
                .set(gauge.load(std::sync::atomic::Ordering::Relaxed) as i64);
        }
        m.storage_up
            .set(if state.health.snapshot().ok { 1.0 } else { 0.0 });
        if let Some(mut status) = auth_status {
            if let Some(serde_json::Value::Object(events)) =
                status.as_object_mut().and_then(|o| o.remove("counters"))
            {
                for (event, n) in events {
                    if let Some(n) = n.as_u64() {
                        catch_up(&m.auth_events.with_label_values(&[event.as_str()]), n);
                    }
                }
            }
            export_numbers(&m.auth, "", &status);
        }
        export_numbers(&m.search, "", &state.search.status());
        m.encode()
    };
    match text {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text),
        Err(e) => {
            use actix_web::ResponseError;
            crate::error::ServiceError::internal(e).error_response()
        }
    }
}

/// Bring `counter` up to `total`, a running total kept elsewhere (counters only go up).
fn catch_up(counter: &IntCounter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

/// Every number (and boolean) of the AuthActor's state becomes `longship_auth{name="…"}`.
fn export_numbers(gauge: &GaugeVec, prefix: &str, value: &serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}_{k}")
                };
                export_numbers(gauge, &name, v);
            }
        }
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                gauge.with_label_values(&[prefix]).set(f);
            }
        }
        serde_json::Value::Bool(b) => gauge
            .with_label_values(&[prefix])
            .set(f64::from(u8::from(*b))),
        _ => {}
    }
}
