//! Prometheus metrics at `GET /metrics` (text format). Request series are labelled with the
//! matched route pattern (`/api/v1/tasks/{task_id}`), never the raw path, so cardinality stays
//! bounded. Pool and auth figures are read at scrape time; scraping touches no storage. Running
//! totals (`_total`) are counters, levels are gauges.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;

use actix_web::{web, HttpResponse};
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use thread_local::ThreadLocal;

use super::route_label::{RouteLabel, RouteSeries};
use super::routes::{at, Routes};
use super::AppState;
use crate::telemetry::LogDrops;

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
    /// Memory extraction: backlog, running, and running totals.
    memory: IntGaugeVec,
    memory_calls: IntCounterVec,
    memory_tokens: IntCounterVec,
    /// Audit log entries by outcome (written, dropped, usage_dropped, flush_failures).
    audit: IntCounterVec,
    audit_queued: IntGauge,
    log_dropped: IntCounter,
    log_drops: LogDrops,
    /// Per worker thread: route → its resolved series.
    handles: ThreadLocal<RefCell<HashMap<String, RouteSeries>>>,
    /// Scrapes copy running totals into counters; one at a time, so none is added twice.
    scrape: Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
#[error("metrics registry: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    pub fn new(log_drops: LogDrops) -> Result<Self, MetricsError> {
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
        let memory = IntGaugeVec::new(
            Opts::new(
                "memory",
                "Memory extraction: backlog (waiting extractions of every instance, at the last \
                 scan), backlog_due (of which due now), running (on this instance), completed, \
                 deferred (model unavailable, retried later) and written (memory files) since start",
            ),
            &["name"],
        )?;
        let memory_calls = IntCounterVec::new(
            Opts::new(
                "memory_extraction_calls_total",
                "Chat-model calls of memory extraction by outcome: ok, empty, parse_error, \
                 schema_error, provider_error, timeout",
            ),
            &["kind"],
        )?;
        let memory_tokens = IntCounterVec::new(
            Opts::new(
                "memory_extraction_tokens_total",
                "Chat-model tokens spent on memory extraction, per account",
            ),
            &["account"],
        )?;
        let audit = IntCounterVec::new(
            Opts::new(
                "audit_entries_total",
                "Audit log entries by outcome: written (durable), dropped (queue full: never \
                 written), usage_dropped (token records dropped), flush_failures (batches retried)",
            ),
            &["outcome"],
        )?;
        let audit_queued = IntGauge::new(
            "audit_entries_queued",
            "Audit entries waiting for their batch (lost if the process is killed now)",
        )?;
        let log_dropped = IntCounter::new(
            "log_lines_dropped_total",
            "Log lines dropped because the log writer's queue (logging.buffer_lines) was full",
        )?;
        for c in [
            Box::new(log_dropped.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(requests.clone()),
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
            Box::new(memory.clone()),
            Box::new(memory_calls.clone()),
            Box::new(memory_tokens.clone()),
            Box::new(audit.clone()),
            Box::new(audit_queued.clone()),
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
            memory,
            memory_calls,
            memory_tokens,
            audit,
            audit_queued,
            log_dropped,
            log_drops,
            handles: ThreadLocal::new(),
            scrape: Mutex::new(()),
        })
    }

    /// Count one finished request of a route registered with a [`RouteLabel`]: its series
    /// are the label's own (per worker thread), so nothing is looked up by name.
    pub fn observe_route(&self, label: &RouteLabel, method: &str, status: u16, seconds: f64) {
        if let Ok(mut series) = label.series().try_borrow_mut() {
            self.observe_series(&mut series, method, label.pattern(), status, seconds);
        }
    }

    /// Count one finished request of a route known by its pattern only (unmatched paths,
    /// resources registered outside the route table).
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut routes = self.handles.get_or_default().borrow_mut();
        if !routes.contains_key(route) {
            routes.insert(route.to_string(), RouteSeries::default());
        }
        if let Some(series) = routes.get_mut(route) {
            self.observe_series(series, method, route, status, seconds);
        }
    }

    fn observe_series(
        &self,
        series: &mut RouteSeries,
        method: &str,
        route: &str,
        status: u16,
        seconds: f64,
    ) {
        match series.latency.iter().find(|(m, _)| m == method) {
            Some((_, h)) => h.observe(seconds),
            None => {
                let h = self.latency.with_label_values(&[method, route]);
                h.observe(seconds);
                series.latency.push((method.to_string(), h));
            }
        }
        let count = series
            .counts
            .iter()
            .find(|(m, s, _)| *s == status && m == method);
        match count {
            Some((_, _, c)) => c.inc(),
            None => {
                let c = self
                    .requests
                    .with_label_values(&[method, route, &status.to_string()]);
                c.inc();
                series.counts.push((method.to_string(), status, c));
            }
        }
    }

    /// One route's latency on this instance: requests, total seconds, and the upper bound of
    /// the bucket holding the 95th percentile (None before any request).
    pub fn route_latency(&self, method: &str, route: &str) -> (u64, f64, Option<f64>) {
        use prometheus::core::Metric;
        let h = self.latency.with_label_values(&[method, route]);
        let m = h.metric();
        let hist = m.get_histogram();
        let count = hist.get_sample_count();
        let target = (count as f64 * 0.95).ceil() as u64;
        let p95 = (count > 0)
            .then(|| {
                hist.get_bucket()
                    .iter()
                    .find(|b| b.cumulative_count() >= target)
                    .map(|b| b.upper_bound())
            })
            .flatten();
        (count, hist.get_sample_sum(), p95)
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
        let ms = &state.memory.stats;
        for (name, v) in [
            ("backlog", &ms.backlog),
            ("backlog_due", &ms.backlog_due),
            ("running", &ms.running),
            ("completed", &ms.completed),
            ("deferred", &ms.deferred),
            ("budget_deferred", &ms.budget_deferred),
            ("written", &ms.written),
        ] {
            m.memory
                .with_label_values(&[name])
                .set(v.load(std::sync::atomic::Ordering::Relaxed) as i64);
        }
        for (kind, n) in ms.outcomes() {
            catch_up(&m.memory_calls.with_label_values(&[kind]), n);
        }
        for (account, n) in ms.tokens() {
            catch_up(&m.memory_tokens.with_label_values(&[account.as_str()]), n);
        }
        catch_up(&m.log_dropped, m.log_drops.dropped());
        {
            use std::sync::atomic::Ordering::Relaxed;
            let a = &state.audit.stats;
            for (outcome, n) in [
                ("written", a.written.load(Relaxed)),
                ("dropped", a.dropped.load(Relaxed)),
                ("usage_dropped", crate::telemetry::usage::dropped()),
                ("flush_failures", a.flush_failures.load(Relaxed)),
            ] {
                catch_up(&m.audit.with_label_values(&[outcome]), n);
            }
            m.audit_queued.set(a.queued.load(Relaxed) as i64);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn series(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn cached_handles_keep_every_label_set_apart() {
        let m = Metrics::new(LogDrops::none()).unwrap();
        for _ in 0..3 {
            m.observe("GET", "/health", 200, 0.001);
        }
        m.observe("GET", "/health", 503, 0.001);
        m.observe("POST", "/health", 405, 0.001);
        m.observe("GET", "/api/v1/fs/ls", 200, 0.001);
        // Another thread has its own cache over the same series.
        std::thread::scope(|s| {
            s.spawn(|| m.observe("GET", "/health", 200, 0.001));
        });
        let text = m.encode().unwrap();
        let count =
            |labels: &str| series(&text, &format!("longship_http_requests_total{{{labels}}}"));
        assert_eq!(
            count(r#"method="GET",route="/health",status="200""#),
            Some(4.0)
        );
        assert_eq!(
            count(r#"method="GET",route="/health",status="503""#),
            Some(1.0)
        );
        assert_eq!(
            count(r#"method="POST",route="/health",status="405""#),
            Some(1.0)
        );
        assert_eq!(
            count(r#"method="GET",route="/api/v1/fs/ls",status="200""#),
            Some(1.0)
        );
        let latency = |labels: &str| {
            series(
                &text,
                &format!("longship_http_request_duration_seconds_count{{{labels}}}"),
            )
        };
        assert_eq!(latency(r#"method="GET",route="/health""#), Some(5.0));
        assert_eq!(latency(r#"method="POST",route="/health""#), Some(1.0));
        assert_eq!(series(&text, "longship_log_lines_dropped_total"), Some(0.0));
    }
}
