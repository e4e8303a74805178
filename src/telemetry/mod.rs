//! Logging setup: every line (the access log included) is formatted on the thread that logs it
//! and queued for one writer thread (`logging.buffer_lines` lines at most). When the queue is
//! full (stderr is slow, or nobody reads it) lines are dropped and counted instead of blocking
//! the caller; the count is `longship_log_lines_dropped_total` in /metrics.
//!
//! The writer is not woken per line: it drains the queue every [`FLUSH_INTERVAL`], or as soon
//! as the queue is half full. A wake-up per line (what a blocking channel receiver costs) is a
//! futex call and a context switch per request, which on two cores cost more than the rest of
//! a `/health` request together.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingSettings};

pub mod access;
pub mod audit_note;
pub mod request;
pub mod usage;

/// How long a queued line may wait before the writer drains the queue.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Keeps the log writer alive: dropping it writes out the queued lines and stops the writer
/// thread, so hold it until the process exits.
pub struct Telemetry {
    _writer: Option<WriterGuard>,
    pub drops: LogDrops,
}

/// How many log lines were dropped because the writer's queue was full.
#[derive(Clone)]
pub struct LogDrops(Option<Arc<AtomicU64>>);

impl LogDrops {
    /// A counter that stays at zero (tests, or a process without the writer installed).
    pub fn none() -> LogDrops {
        LogDrops(None)
    }

    pub fn dropped(&self) -> u64 {
        self.0.as_ref().map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// The logging threads' side of the queue: one formatted line per `write`.
#[derive(Clone)]
pub struct LineQueue {
    lines: Sender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
    writer: Thread,
    wake_at: usize,
}

impl LineQueue {
    fn push(&self, line: &[u8]) {
        match self.lines.try_send(line.to_vec()) {
            Ok(()) => {
                if self.lines.len() >= self.wake_at {
                    self.writer.unpark();
                }
            }
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                self.writer.unpark();
            }
            Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Write for LineQueue {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LineQueue {
    type Writer = LineQueue;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Stops the writer thread after it has written what is queued.
pub struct WriterGuard {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Start the writer thread over `out`; `capacity` lines may wait in the queue.
pub fn spawn_writer<W: Write + Send + 'static>(
    capacity: usize,
    out: W,
) -> std::io::Result<(LineQueue, WriterGuard, LogDrops)> {
    let capacity = capacity.max(1);
    let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(capacity);
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_lines(rx, out, &stop))?
    };
    let dropped = Arc::new(AtomicU64::new(0));
    let queue = LineQueue {
        lines: tx,
        dropped: dropped.clone(),
        writer: thread.thread().clone(),
        wake_at: (capacity / 2).max(1),
    };
    let guard = WriterGuard {
        stop,
        thread: Some(thread),
    };
    Ok((queue, guard, LogDrops(Some(dropped))))
}

/// The writer loop: sleep until the interval passes or a producer wakes it, then write out
/// everything queued with one flush per batch.
fn write_lines<W: Write>(rx: Receiver<Vec<u8>>, out: W, stop: &AtomicBool) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let mut wrote = false;
        for line in rx.try_iter() {
            // A failing stderr cannot be reported anywhere better; the line is lost.
            let _ = out.write_all(&line);
            wrote = true;
        }
        if wrote {
            let _ = out.flush();
        }
        if stopping {
            return;
        }
        std::thread::park_timeout(FLUSH_INTERVAL);
    }
}

/// The log filter: `RUST_LOG` when set, else `logging.level`. Plain `target=level` lists (the
/// usual case) become a [`Targets`] filter, which decides per callsite once; only directives
/// that need span or field matching pay for [`EnvFilter`], which tracks every span.
enum LogFilter {
    Targets(Box<Targets>),
    Env(Box<EnvFilter>),
}

fn log_filter(settings: &LoggingSettings, rust_log: Option<String>) -> LogFilter {
    let from_env = rust_log.filter(|s| !s.trim().is_empty());
    let directives = from_env.clone().unwrap_or_else(|| settings.level.clone());
    // tantivy logs every commit and merge at info; only its warnings matter to operators.
    let quiet_tantivy = from_env.is_none() && !directives.contains("tantivy");
    match directives.parse::<Targets>() {
        Ok(targets) if quiet_tantivy => LogFilter::Targets(Box::new(
            targets.with_target("tantivy", tracing::Level::WARN),
        )),
        Ok(targets) => LogFilter::Targets(Box::new(targets)),
        Err(_) => {
            let mut filter =
                EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
            if quiet_tantivy {
                if let Ok(d) = "tantivy=warn".parse() {
                    filter = filter.add_directive(d);
                }
            }
            LogFilter::Env(Box::new(filter))
        }
    }
}

/// Install the global tracing subscriber (text or JSON lines on stderr, non-blocking).
pub fn init(settings: &LoggingSettings) -> Telemetry {
    let (targets, env) = match log_filter(settings, std::env::var("RUST_LOG").ok()) {
        LogFilter::Targets(t) => (Some(*t), None),
        LogFilter::Env(e) => (None, Some(*e)),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let registry = tracing_subscriber::registry().with(targets).with(env);
    let (queue, guard, drops) = match spawn_writer(settings.buffer_lines, std::io::stderr()) {
        Ok(parts) => parts,
        Err(e) => {
            // No thread for the writer: log synchronously rather than not at all.
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi);
            let _ = registry.with(layer).try_init();
            tracing::warn!(error = %e, "log writer thread could not start; logging synchronously");
            return Telemetry {
                _writer: None,
                drops: LogDrops::none(),
            };
        }
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(queue.clone())
        .with_ansi(ansi);
    // Lines logged while a request is served carry its id (see `request::WithRequestId`).
    let format = tracing_subscriber::fmt::format()
        .with_thread_names(true)
        .with_ansi(ansi);
    let installed = match settings.format {
        LogFormat::Json => registry
            .with(layer.json().event_format(request::WithRequestId::new(
                format.json().flatten_event(true),
                true,
            )))
            .try_init(),
        LogFormat::Text => registry
            .with(layer.event_format(request::WithRequestId::new(format, false)))
            .try_init(),
    };
    // The access log bypasses the formatter but not the filter: it is on when the filter lets
    // `longship::access` through at info.
    if installed.is_ok() && tracing::enabled!(target: "longship::access", tracing::Level::INFO) {
        access::install(queue, settings.format);
    }
    Telemetry {
        _writer: Some(guard),
        drops,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A sink the test can read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_directives_use_the_cheap_filter_and_span_directives_the_full_one() {
        let settings = LoggingSettings::default();
        let LogFilter::Targets(t) = log_filter(&settings, None) else {
            panic!("plain level should be a Targets filter");
        };
        assert!(t.would_enable("longship::access", &tracing::Level::INFO));
        assert!(!t.would_enable("tantivy::indexer", &tracing::Level::INFO));
        let from_env = Some("warn,longship=debug".to_string());
        let LogFilter::Targets(t) = log_filter(&settings, from_env) else {
            panic!("target list should be a Targets filter");
        };
        assert!(t.would_enable("longship::x", &tracing::Level::DEBUG));
        assert!(!t.would_enable("actix_server", &tracing::Level::INFO));
        let spans = Some("[request{request_id=abc}]=debug".to_string());
        assert!(matches!(log_filter(&settings, spans), LogFilter::Env(_)));
    }

    #[test]
    fn queued_lines_are_written_by_shutdown_in_order() {
        let sink = Sink::default();
        let (mut q, guard, drops) = spawn_writer(1000, sink.clone()).unwrap();
        for i in 0..100 {
            writeln!(q, "line {i}").unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
        assert_eq!(drops.dropped(), 0);
    }

    /// A writer that blocks until released, as an unread stderr pipe does.
    struct Stuck(Arc<(Mutex<bool>, std::sync::Condvar)>);

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cv) = &*self.0;
            let mut released = lock.lock().unwrap();
            while !*released {
                released = cv.wait(released).unwrap();
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_output_drops_and_counts_instead_of_blocking() {
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let (mut q, guard, drops) = spawn_writer(8, Stuck(gate.clone())).unwrap();
        // Well past what the queue and the writer's buffer hold; none of these may block.
        for i in 0..100_000 {
            writeln!(q, "line {i} {}", "x".repeat(100)).unwrap();
        }
        assert!(drops.dropped() > 0);
        let (lock, cv) = &*gate;
        *lock.lock().unwrap() = true;
        cv.notify_all();
        drop(guard);
    }
}
