//! Logs to stderr through `tracing`.

/// Logs to stderr, as text or JSON lines; `RUST_LOG` overrides `default_level` (`info` for the
/// coordinator and workers, `error` for interactive commands that show progress instead).
/// Calling it again (a test, a second command in one process) leaves the first setup in place.
pub fn init_logging(json: bool, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
