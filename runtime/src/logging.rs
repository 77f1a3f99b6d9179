//! tracing set-up shared by the `tandem` and `tandem-cloud` binaries.

use tracing_subscriber::EnvFilter;

/// Logs to stderr. `RUST_LOG` wins when set; otherwise `verbosity` (the count of `-v`)
/// picks the level of tandem's own crates: 0 warn, 1 info, 2 debug, 3+ trace. Other
/// crates (quinn, rustls) stay at warn unless `RUST_LOG` says otherwise.
pub fn init(verbosity: u8) {
    let level = match verbosity {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let default = format!("warn,tandem={level},tandem_runtime={level},tandem_cloud={level}");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A second init (e.g. in tests) is harmless; ignore it.
    // Colours only on a terminal: logs captured to files stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_ansi(ansi)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
