//! `pmv-data-train`: the half of pmv-data that links libtorch.
//!
//! `pmv-data` itself never loads libtorch, so fetching, sharding and status start fast
//! and small; the commands that need libtorch run here. A GPU machine that has
//! libtorch but no FFmpeg builds only this binary (`--no-default-features --features
//! train`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[path = "../train/mod.rs"]
mod train;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "pmv-data-train", version, about = "pmv-data's libtorch half")]
struct Cli {
    /// Machine-readable JSON on stdout
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Which libtorch this binary runs on and what it reaches (CUDA, cuDNN, threads)
    Info,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match cli.command {
        Command::Info => {
            let info = train::info();
            if cli.json {
                match serde_json::to_string_pretty(&info) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                println!(
                    "libtorch {} from {}; CUDA {} ({} devices), cuDNN {}, {} CPU threads",
                    info.libtorch,
                    info.lib_dir,
                    if info.cuda_available { "yes" } else { "no" },
                    info.cuda_devices,
                    if info.cudnn { "yes" } else { "no" },
                    info.cpu_threads
                );
            }
            ExitCode::from(if info.tensor_ok { 0 } else { 1 })
        }
    }
}
