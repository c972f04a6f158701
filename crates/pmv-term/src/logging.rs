//! Log set-up for both binaries: `tracing` to stderr through [`crate::output::Stderr`].
//!
//! Owns the one mapping from `-v`/`-q` to a log level and the subscriber's format. It
//! never decides which commands run quietly; the binary works that out and passes `quiet`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::output;

/// Logs go to stderr: warnings by default, `-v` info, `-vv` debug, `-vvv` trace, `-q`
/// errors only. `RUST_LOG` overrides all of it. Call once, at the start of `main`.
pub fn init(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| output::Stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
