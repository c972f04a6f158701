//! Where the trainer binary (`pmv-data-train`, which links libtorch) is found, and how
//! `pmv-data` hands a command to it.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::commands::App;
use pmv_term::exit::Exit;

/// `pmv-data-train` beside this executable, else on `PATH`; `PMV_DATA_TRAIN`
/// overrides both.
pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os("PMV_DATA_TRAIN") {
        return PathBuf::from(p);
    }
    let name = "pmv-data-train";
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name(name))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Replaces this process with `pmv-data-train <sub> [--json] [--quiet] [-v...] --root
/// <root> <args...>` (same stdin, stdout, stderr and environment); returns only when
/// the trainer cannot be started.
pub fn run(app: &App, sub: &str, args: &[OsString]) -> Result<Exit> {
    let exe = path();
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg(sub);
    if app.json {
        cmd.arg("--json");
    }
    if app.quiet {
        cmd.arg("--quiet");
    }
    for _ in 0..app.verbose {
        cmd.arg("-v");
    }
    let names_root = args
        .iter()
        .any(|a| a == "--root" || a.to_string_lossy().starts_with("--root="));
    if !names_root {
        cmd.arg("--root").arg(app.root.path());
    }
    cmd.args(args);
    // The trainer takes this process's place: its exit status is the command's, and
    // SIGINT or SIGTERM reach it alone, so it writes its checkpoint and exits 130 with no
    // waiting parent to die first (or to pass a signal on a second time, which would end
    // the trainer before its checkpoint).
    let err = std::os::unix::process::CommandExt::exec(&mut cmd);
    Err(err).with_context(|| {
        format!(
            "cannot run the trainer {}: build it with `cargo build --release --features train` \
             (it lies beside pmv-data) or set PMV_DATA_TRAIN",
            exe.display()
        )
    })
}
