//! Logging setup: every line (the access log included) is formatted on the thread that logs it
//! and handed to one writer thread through a bounded queue (`logging.buffer_lines`). When the
//! queue is full (stderr is slow, or nobody reads it) lines are dropped and counted instead of
//! blocking the caller; the count is `longship_log_lines_dropped_total` in /metrics.

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingSettings};

/// Keeps the log writer alive: dropping it flushes the queued lines and stops the writer
/// thread, so hold it until the process exits.
pub struct Telemetry {
    _writer: WorkerGuard,
    pub drops: LogDrops,
}

/// How many log lines were dropped because the writer's queue was full.
#[derive(Clone)]
pub struct LogDrops(Option<ErrorCounter>);

impl LogDrops {
    /// A counter that stays at zero (tests, or a process without the writer installed).
    pub fn none() -> LogDrops {
        LogDrops(None)
    }

    pub fn dropped(&self) -> u64 {
        self.0.as_ref().map_or(0, |c| c.dropped_lines() as u64)
    }
}

/// Install the global tracing subscriber (text or JSON lines on stderr, non-blocking).
pub fn init(settings: &LoggingSettings) -> Telemetry {
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // tantivy logs every commit and merge at info; only its warnings matter to operators.
    if std::env::var_os("RUST_LOG").is_none() && !settings.level.contains("tantivy") {
        if let Ok(d) = "tantivy=warn".parse() {
            filter = filter.add_directive(d);
        }
    }
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(settings.buffer_lines.max(1))
        .thread_name("log-writer")
        // The writer drains what is queued, then flushes: one write(2) per batch, not per line.
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let drops = LogDrops(Some(writer.error_counter()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_thread_names(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match settings.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    Telemetry {
        _writer: guard,
        drops,
    }
}
