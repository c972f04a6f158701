//! Exit statuses: the documented contract with scripts and cron (README: exit codes).

use std::process::ExitCode;

use pmv_core::root::RootError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for was done.
    Ok,
    /// A fatal error: nothing, or only a consistent part, was done (see the message).
    Error,
    /// The command line was wrong.
    Usage,
    /// Some input was rejected: reported as `file:line: reason`; the rest was done
    /// (with `--strict`, nothing was written).
    Rejected,
    /// Another pmv-data process holds the data root (EX_TEMPFAIL): try again later.
    Locked,
    /// Stopped by Ctrl-C or SIGTERM; what was done is recorded (128 + SIGINT).
    Interrupted,
    /// A refresh whose failures passed the configured threshold (its configured code).
    TooManyFailures(u8),
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Error => 1,
            Exit::Usage => 2,
            Exit::Rejected => 3,
            Exit::Locked => 75,
            Exit::Interrupted => 130,
            Exit::TooManyFailures(code) => code,
        }
    }

    /// The status for an error, from the first typed cause that decides it.
    pub fn of_error(err: &anyhow::Error) -> Exit {
        for cause in err.chain() {
            if let Some(RootError::Locked { .. }) = cause.downcast_ref::<RootError>() {
                return Exit::Locked;
            }
            if cause.downcast_ref::<UsageError>().is_some() {
                return Exit::Usage;
            }
        }
        Exit::Error
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// A command line that parsed but does not make sense (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
