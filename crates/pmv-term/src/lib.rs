//! pmv-term: what the two binaries show a person or a cron log.
//!
//! Owns the line output that survives a closed pipe ([`output`]), progress bars and
//! the periodic log lines that stand in for them off a terminal ([`progress`]), the
//! log set-up ([`logging`]) and the table of exit codes ([`exit`]). The libraries never
//! print; only the binaries call in here.

pub mod exit;
pub mod logging;
pub mod output;
pub mod progress;
