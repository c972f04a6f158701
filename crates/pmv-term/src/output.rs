//! Where the binaries' text goes: stdout and stderr, through writers that take a closed
//! pipe to mean "nobody reads any more".
//!
//! `pmv-data status | head -1` must end quietly, and a command that changes the root
//! must finish its work and record it even when whoever read its output went away. So
//! SIGPIPE stays ignored (Rust's default) and every line the binaries print goes through
//! [`outln!`] and [`errln!`] (logs through [`Stderr`]): the first EPIPE on a stream marks
//! it closed, later writes to it are dropped, and the work goes on. Any other failure to
//! write stdout (a full disk behind `>`) is kept and becomes the command's error at the
//! end ([`stdout_error`]). The document `--json` asks for when a command fails is
//! written here too ([`error_json`]), in one shape for both binaries and for errors met
//! before the command line is understood. This module never writes anywhere else and
//! never panics.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);
/// The first stdout failure other than a closed pipe.
static STDOUT_ERROR: Mutex<Option<io::Error>> = Mutex::new(None);

/// Prints a line on stdout (see the module documentation).
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::line_out(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line_out(format_args!($($arg)*))
    };
}

/// Prints a line on stderr (see the module documentation).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::line_err(format_args!($($arg)*))
    };
}

pub use crate::{errln, outln};

/// `outln!`'s writer: one line on stdout.
pub fn line_out(args: fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let result = {
        let mut out = io::stdout().lock();
        out.write_fmt(args).and_then(|()| out.write_all(b"\n"))
    };
    if let Err(e) = result {
        stdout_failed(e);
    }
}

/// `errln!`'s writer: one line on stderr.
pub fn line_err(args: fmt::Arguments<'_>) {
    // One write per line, so that lines of several threads do not mix. Stderr swallows
    // a closed pipe itself; any other failure has nowhere to go.
    let line = format!("{args}\n");
    let _ = Stderr.write_all(line.as_bytes());
}

/// Sends what is still buffered for stdout; a failure counts like a failed line.
pub fn flush_stdout() {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = io::stdout().lock().flush() {
        stdout_failed(e);
    }
}

/// Prints the document `--json` asks for when a command fails: the command (null when
/// the command line names none), the error on one line, and the exit status.
pub fn error_json(command: Option<&str>, error: &str, exit_code: u8) {
    let doc = serde_json::json!({
        "command": command,
        "error": error,
        "exit_code": exit_code,
    });
    line_out(format_args!("{doc}"));
}

/// Whether a command line (`args[0]` the program) asks for JSON: `--json` before any
/// `--`. For errors met before the command line is parsed.
pub fn json_requested(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

/// The first argument that names one of `cli`'s subcommands: the command, as far as
/// a command line that does not parse can tell.
pub fn named_command(cli: &clap::Command, args: &[OsString]) -> Option<String> {
    args.iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .find(|a| cli.find_subcommand(a).is_some())
        .map(str::to_owned)
}

/// A clap error as one line: what is wrong, without the usage and the hint.
pub fn usage_error_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let what = text.split("\n\nUsage:").next().unwrap_or(&text);
    let what = what.trim().strip_prefix("error: ").unwrap_or(what.trim());
    what.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The first failure to write stdout other than a closed pipe, if there was one.
pub fn stdout_error() -> Option<io::Error> {
    STDOUT_ERROR
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
}

fn stdout_failed(e: io::Error) {
    // Nothing more is written either way: a stream that failed once would only fail
    // again, or print the rest of a document without its beginning.
    STDOUT_CLOSED.store(true, Ordering::Relaxed);
    if e.kind() != io::ErrorKind::BrokenPipe {
        let mut first = STDOUT_ERROR.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(e);
    }
}

/// stderr for log lines (`tracing`) and [`errln!`]: once the reader has gone, writes
/// succeed without going anywhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if STDERR_CLOSED.load(Ordering::Relaxed) {
            return Ok(buf.len());
        }
        match io::stderr().write(buf) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                STDERR_CLOSED.store(true, Ordering::Relaxed);
                Ok(buf.len())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match io::stderr().flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                STDERR_CLOSED.store(true, Ordering::Relaxed);
                Ok(())
            }
            other => other,
        }
    }
}
