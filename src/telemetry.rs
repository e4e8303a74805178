//! Logging setup.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingSettings};

/// Install the global tracing subscriber (text or JSON lines on stderr).
pub fn init(settings: &LoggingSettings) {
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // tantivy logs every commit and merge at info; only its warnings matter to operators.
    if std::env::var_os("RUST_LOG").is_none() && !settings.level.contains("tantivy") {
        if let Ok(d) = "tantivy=warn".parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_thread_names(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match settings.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
