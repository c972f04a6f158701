//! The `pmv-data` binary: parse the command line, run one command, print the error
//! chain once and exit with a documented status (README: exit codes).

// The doc comments of `cli` and the commands are the command-line help, written for a
// terminal (`<label>/<id>` is text there, not HTML).
#![allow(rustdoc::invalid_html_tags)]

mod cli;
mod commands;
mod trainer;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use pmv_term::exit::Exit;
use pmv_term::output::{self, errln};

// mimalloc rather than glibc's allocator: ingest allocates millions of small records and
// frees many on another thread, where glibc's arenas spent a quarter of the time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            if !e.use_stderr() {
                // --help, --version: what was asked for.
                return Exit::Ok.into();
            }
            if output::json_requested(&args) {
                let named = output::named_command(&<Cli as clap::CommandFactory>::command(), &args);
                output::error_json(
                    named.as_deref(),
                    &output::usage_error_line(&e),
                    Exit::Usage.code(),
                );
            }
            return Exit::Usage.into();
        }
    };
    // SIGPIPE stays ignored (Rust's default): a closed pipe must not kill a command
    // halfway through changing the root. Output goes through `output`, which takes
    // EPIPE to mean that nobody reads any more, so `pmv-data status | head` still ends
    // quietly, as other Unix tools do.

    // Under cron a refresh prints its summary line and nothing else unless asked (-v);
    // errors still reach stderr.
    let quiet = cli.global.quiet
        || (matches!(cli.command, cli::Command::Refresh(_))
            && cli.global.verbose == 0
            && !std::io::stderr().is_terminal());
    pmv_term::logging::init(cli.global.verbose, quiet);
    let json = cli.global.json;
    let command = cli.command.name();
    let exit = match commands::run(cli) {
        Ok(exit) => exit,
        Err(err) => {
            let exit = Exit::of_error(&err);
            errln!("error: {err}");
            for cause in err.chain().skip(1) {
                // thiserror's `transparent` repeats the message; print each text once.
                if !err.to_string().contains(&cause.to_string()) {
                    errln!("  caused by: {cause}");
                }
            }
            if json {
                output::error_json(Some(command), &format!("{err:#}"), exit.code());
            }
            exit
        }
    };
    output::flush_stdout();
    if let Some(e) = output::stdout_error() {
        // Nobody got the command's output, whatever the command did.
        errln!("error: cannot write to stdout: {e}");
        if exit == Exit::Ok {
            return Exit::Error.into();
        }
    }
    exit.into()
}
