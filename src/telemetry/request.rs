//! What the server knows about the request being served, in one task-local set by the request
//! middleware: its id, when it started (the envelope's `time`), the account it works for (the
//! pools' fair-share lane) and the audit note.
//!
//! One scope instead of a `tracing` span and three task-locals: a span per request cost more
//! CPU than actix-web's own request handling (a registry slot, its fields formatted at
//! creation, an enter and exit per poll), and each task-local is another swap per poll. Log
//! lines written while a request is served still carry its id: [`WithRequestId`] adds it to
//! every event, on the request's task and, via [`JobScope`], on the pool thread running a job
//! the request submitted.
//!
//! Everything here is a no-op outside a request (background tasks, sweeps).

use std::cell::{RefCell, RefMut};
use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// What the audit log needs to know about the request (filled by `audit_note`).
#[derive(Debug, Default, Clone)]
pub struct Note {
    /// Whether this request is audited (a mutation): targets are noted only then.
    pub wanted: bool,
    /// (role, account, user) of the authenticated caller.
    pub caller: Option<(&'static str, String, String)>,
    pub targets: Vec<String>,
    /// Targets beyond `audit_note::MAX_TARGETS`, counted.
    pub more_targets: usize,
}

/// A request id: the client's well-formed `X-Request-ID` or a minted UUID. Cheap to clone
/// (shared bytes), sendable to the pool thread that runs the request's jobs.
pub type RequestId = Arc<str>;

/// The current request's facts.
pub struct RequestScope {
    pub id: RequestId,
    pub start: Instant,
    /// The account the request works for, set once its caller is authenticated.
    account: OnceLock<Arc<str>>,
    /// What the audit log needs (see `audit_note`).
    note: RefCell<Note>,
}

impl RequestScope {
    pub fn new(id: RequestId, start: Instant, audited: bool) -> Self {
        RequestScope {
            id,
            start,
            account: OnceLock::new(),
            note: RefCell::new(Note {
                wanted: audited,
                ..Note::default()
            }),
        }
    }

    /// The audit note gathered while the request was served.
    pub fn into_note(self) -> Note {
        self.note.into_inner()
    }
}

tokio::task_local! {
    static REQUEST: RequestScope;
}

thread_local! {
    /// The id of the request whose job this (pool) thread is running.
    static JOB_REQUEST: RefCell<Option<RequestId>> = const { RefCell::new(None) };
}

/// Serve `fut` inside `scope`; returns its output and the scope (with the audit note).
pub async fn run<F: Future>(scope: RequestScope, fut: F) -> (F::Output, Option<RequestScope>) {
    let mut scoped = pin!(REQUEST.scope(scope, fut));
    let out = scoped.as_mut().await;
    (out, scoped.take_value())
}

/// Seconds since the current request started (0 outside a request).
pub fn elapsed_secs() -> f64 {
    REQUEST
        .try_with(|r| r.start.elapsed().as_secs_f64())
        .unwrap_or(0.0)
}

/// The id of the request being served: on its task, or on a pool thread running its job.
pub fn current_id() -> Option<RequestId> {
    REQUEST
        .try_with(|r| r.id.clone())
        .ok()
        .or_else(|| JOB_REQUEST.with(|j| j.borrow().clone()))
}

/// Name the account the current request works for (first call wins).
pub fn attribute_account(account: &str) {
    let _ = REQUEST.try_with(|r| r.account.set(Arc::from(account)));
}

/// The account the current request works for, once known.
pub fn account() -> Option<Arc<str>> {
    REQUEST
        .try_with(|r| r.account.get().cloned())
        .ok()
        .flatten()
}

/// Change the current request's audit note (no-op outside a request).
pub(super) fn with_note(f: impl FnOnce(RefMut<'_, Note>)) {
    let _ = REQUEST.try_with(|r| {
        if let Ok(note) = r.note.try_borrow_mut() {
            f(note);
        }
    });
}

/// Marks the calling thread as working for a request while it lives (a pool thread running
/// one of the request's jobs), so the job's log lines carry the request's id.
pub struct JobScope {
    previous: Option<RequestId>,
}

impl JobScope {
    pub fn enter(id: Option<RequestId>) -> JobScope {
        let previous = JOB_REQUEST.with(|j| j.replace(id));
        JobScope { previous }
    }
}

impl Drop for JobScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        JOB_REQUEST.with(|j| *j.borrow_mut() = previous);
    }
}

/// An event format that adds `request_id` to every line logged while a request is served:
/// ` request_id=…` at the end of a text line, a `"request_id"` member of a JSON line.
pub struct WithRequestId<F> {
    inner: F,
    json: bool,
}

impl<F> WithRequestId<F> {
    pub fn new(inner: F, json: bool) -> Self {
        WithRequestId { inner, json }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithRequestId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some(id) = current_id() else {
            return self.inner.format_event(ctx, writer, event);
        };
        // Rare (lines logged inside requests): format, then add the id before the line's end.
        // ANSI colours come from the inner format's own setting (see `telemetry::init`).
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.strip_suffix('\n').unwrap_or(&line);
        if self.json {
            match body.strip_suffix('}') {
                Some(open) => {
                    writer.write_str(open)?;
                    writer.write_str(",\"request_id\":")?;
                    // Ids are limited to `[A-Za-z0-9._:/-]` (or a UUID): no escaping needed.
                    write!(writer, "\"{id}\"}}")?;
                }
                None => writer.write_str(body)?,
            }
        } else {
            write!(writer, "{body} request_id={id}")?;
        }
        writer.write_char('\n')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_scope_is_seen_inside_and_returned_after() {
        assert!(current_id().is_none());
        let scope = RequestScope::new(Arc::from("req-1"), Instant::now(), true);
        let (seen, back) = run(scope, async {
            attribute_account("acme");
            with_note(|mut n| n.targets.push("viking://resources/a".into()));
            (current_id(), account())
        })
        .await;
        assert_eq!(seen.0.as_deref(), Some("req-1"));
        assert_eq!(seen.1.as_deref(), Some("acme"));
        let note = back.map(RequestScope::into_note).unwrap_or_default();
        assert_eq!(note.targets, vec!["viking://resources/a".to_string()]);
        assert!(current_id().is_none());
    }

    /// A sink the test reads back.
    #[derive(Clone, Default)]
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines_logged(json: bool, log: impl FnOnce()) -> String {
        use tracing_subscriber::layer::SubscriberExt;
        let sink = Sink::default();
        let writer = {
            let sink = sink.clone();
            move || sink.clone()
        };
        let format = tracing_subscriber::fmt::format().with_ansi(false);
        let layer = tracing_subscriber::fmt::layer().with_writer(writer);
        let subscriber = tracing_subscriber::registry();
        if json {
            let layer = layer
                .json()
                .event_format(WithRequestId::new(format.json().flatten_event(true), true));
            tracing::subscriber::with_default(subscriber.with(layer), log);
        } else {
            let layer = layer.event_format(WithRequestId::new(format, false));
            tracing::subscriber::with_default(subscriber.with(layer), log);
        }
        let bytes = sink.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn lines_logged_for_a_request_carry_its_id_and_others_do_not() {
        let text = lines_logged(false, || {
            tracing::warn!(n = 1, "outside");
            let _job = JobScope::enter(Some(Arc::from("req-9")));
            tracing::warn!(n = 2, "inside");
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(!lines[0].contains("request_id"), "{text}");
        assert!(lines[1].ends_with("inside n=2 request_id=req-9"), "{text}");

        let json = lines_logged(true, || {
            let _job = JobScope::enter(Some(Arc::from("req-9")));
            tracing::warn!(n = 2, "inside");
        });
        let v: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap();
        assert_eq!(v["request_id"], "req-9");
        assert_eq!(v["message"], "inside");
        assert_eq!(v["n"], 2);
    }

    #[test]
    fn a_job_scope_marks_the_thread_and_restores_it() {
        {
            let _job = JobScope::enter(Some(Arc::from("req-2")));
            assert_eq!(current_id().as_deref(), Some("req-2"));
        }
        assert!(current_id().is_none());
    }
}
