//! The `pmv-data` binary: parse the command line, run one command, print the error
//! chain once and exit with a documented status (README: exit codes).

mod cli;
mod commands;
mod exit;
mod progress;
mod trainer;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::exit::Exit;

// mimalloc rather than glibc's allocator: ingest allocates millions of small records and
// frees many on another thread, where glibc's arenas spent a quarter of the time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Ok.into()
            };
        }
    };
    if cli.command.only_reports() {
        // `pmv-data status | head` should end quietly when `head` has read enough, as
        // other Unix tools do. Commands that change the root keep ignoring SIGPIPE: a
        // closed pipe must not kill one halfway through its work.
        // SAFETY: called before any other thread exists; SIG_DFL is always valid.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // Under cron a refresh prints its summary line and nothing else unless asked (-v);
    // errors still reach stderr.
    let quiet = cli.global.quiet
        || (matches!(cli.command, cli::Command::Refresh(_))
            && cli.global.verbose == 0
            && !std::io::stderr().is_terminal());
    init_logging(cli.global.verbose, quiet);
    let json = cli.global.json;
    match commands::run(cli) {
        Ok(exit) => exit.into(),
        Err(err) => {
            let exit = Exit::of_error(&err);
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                // thiserror's `transparent` repeats the message; print each text once.
                if !err.to_string().contains(&cause.to_string()) {
                    eprintln!("  caused by: {cause}");
                }
            }
            if json {
                let doc = serde_json::json!({
                    "error": format!("{err:#}"),
                    "exit_code": exit.code(),
                });
                println!("{doc}");
            }
            exit.into()
        }
    }
}

/// Logs go to stderr: warnings by default, `-v` info, `-vv` debug, `-vvv` trace, `-q`
/// errors only. `RUST_LOG` overrides all of it.
fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
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
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
