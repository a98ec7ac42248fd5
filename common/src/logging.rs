//! Log set-up shared by the binaries: to stderr, `RUST_LOG` honoured, colours only on a
//! terminal, chatty dependencies at warn by default.

/// Install the global subscriber. `default_filter` applies when RUST_LOG is unset.
pub fn init(default_filter: &str) {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
