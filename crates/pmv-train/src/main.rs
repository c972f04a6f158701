//! `pmv-data-train`: the half of pmv-data that links libtorch.
//!
//! `pmv-data` itself never loads libtorch, so fetching, sharding and status start fast
//! and small; the commands that need libtorch run here (`pmv-data train` and `eval` run
//! this binary with the same arguments). A GPU machine that has libtorch but no FFmpeg
//! builds only this crate (`cargo build --release -p pmv-train`). Exit codes: 0
//! ok, 1 error, 2 usage, 3 some samples could not be read (counted, reported, left out),
//! 75 the run is in use by another process.

use std::process::ExitCode;

use clap::Parser;

use pmv_term::exit::Exit;
use pmv_term::output::{self, errln, outln};
use pmv_term::progress;
use pmv_train as train;
use pmv_train_cli::app::{Cli, Command};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    train::device::flush_denormals();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let json = output::json_requested(&args);
    let named = || output::named_command(&<Cli as clap::CommandFactory>::command(), &args);
    let argv =
        match pmv_train_cli::recipe_file::expand(args.clone(), &["train", "pretrain", "eval"]) {
            Ok(a) => a,
            Err(e) => {
                errln!("error: {e}");
                if json {
                    output::error_json(named().as_deref(), &e.to_string(), Exit::Usage.code());
                }
                return Exit::Usage.into();
            }
        };
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            if !e.use_stderr() {
                return Exit::Ok.into();
            }
            if json {
                output::error_json(
                    named().as_deref(),
                    &output::usage_error_line(&e),
                    Exit::Usage.code(),
                );
            }
            return Exit::Usage.into();
        }
    };
    // This binary's levels stop at debug (-vv), as its --help says.
    pmv_term::logging::init(cli.verbose.min(2), cli.quiet);
    let json = cli.json;
    let command = cli.command.name();
    let dist = match &cli.command {
        Command::Train(a) => Some(&a.run.dist),
        Command::Pretrain(a) => Some(&a.run.dist),
        Command::Eval(a) => Some(&a.dist),
        _ => None,
    };
    if let Some(d) = dist {
        // --nproc N: this process only starts N ranks of itself and waits for them.
        let launched = train::spawn::should_launch(d.nproc, |k| {
            std::env::var_os(k).map(|v| v.to_string_lossy().into_owned())
        })
        .and_then(|go| {
            go.then(|| train::spawn::run_local(d.nproc, d.dist_timeout, &args))
                .transpose()
        });
        match launched {
            Ok(None) => {}
            Ok(Some(code)) => return ExitCode::from(code),
            Err(e) => {
                errln!("error: {e}");
                if json {
                    output::error_json(Some(command), &e.to_string(), e.exit().code());
                }
                return e.exit().into();
            }
        }
    }
    let exit = match run(cli) {
        Ok(exit) => exit,
        Err(err) => {
            errln!("error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                if !err.to_string().contains(&cause.to_string()) {
                    errln!("  caused by: {cause}");
                }
                source = cause.source();
            }
            let exit = err.exit();
            if json {
                output::error_json(Some(command), &err.to_string(), exit.code());
            }
            exit
        }
    };
    output::flush_stdout();
    if let Some(e) = output::stdout_error() {
        errln!("error: cannot write to stdout: {e}");
        if exit == Exit::Ok {
            return Exit::Error.into();
        }
    }
    exit.into()
}

/// Prints a command's result; ranks other than 0 of a data-parallel group print none
/// (rank 0 speaks for them).
fn print(json: bool, value: &serde_json::Value, text: impl FnOnce() -> String) {
    if !train::dist::speaks() {
        return;
    }
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        );
    } else {
        outln!("{}", text());
    }
}

fn pct(v: &serde_json::Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |x| format!("{:.1}%", 100.0 * x))
}

fn run(cli: Cli) -> Result<Exit, train::error::TrainError> {
    let reporter = progress::for_stderr(cli.quiet);
    match cli.command {
        Command::Info => {
            let info = train::info();
            let v = serde_json::to_value(&info).unwrap_or_default();
            print(cli.json, &v, || {
                format!(
                    "libtorch {} from {}; CUDA {} ({} devices), cuDNN {}, NCCL {}, {} CPU threads",
                    info.libtorch,
                    info.lib_dir,
                    if info.cuda_available { "yes" } else { "no" },
                    info.cuda_devices,
                    if info.cudnn { "yes" } else { "no" },
                    if info.nccl { "yes" } else { "no" },
                    info.cpu_threads
                )
            });
            Ok(if info.tensor_ok {
                Exit::Ok
            } else {
                Exit::Error
            })
        }
        Command::Train(args) => {
            let (summary, bad) = train::fit::train(&args, reporter.as_ref(), cli.quiet)?;
            print(cli.json, &summary, || {
                format!(
                    "trained {} for {} steps: final loss {:.4}, val top-1 {}, top-5 {}{}\nrun: {}",
                    summary["model"].as_str().unwrap_or("?"),
                    summary["steps"],
                    summary["final_loss"].as_f64().unwrap_or(f64::NAN),
                    pct(&summary["top1"]),
                    pct(&summary["top5"]),
                    if bad > 0 {
                        format!("; {bad} samples could not be read (errors.jsonl)")
                    } else {
                        String::new()
                    },
                    summary["run_dir"].as_str().unwrap_or("?")
                )
            });
            Ok(if bad > 0 { Exit::Rejected } else { Exit::Ok })
        }
        Command::Pretrain(args) => {
            let (summary, bad) =
                train::fit::train(&args.to_train_args(), reporter.as_ref(), cli.quiet)?;
            print(cli.json, &summary, || {
                format!(
                    "pre-trained {} for {} steps: final loss {:.4}, val reconstruction loss {}{}\nrun: {}\nfine-tune: train --init {}",
                    summary["model"].as_str().unwrap_or("?"),
                    summary["steps"],
                    summary["final_loss"].as_f64().unwrap_or(f64::NAN),
                    summary["val_loss"]
                        .as_f64()
                        .map_or_else(|| "-".to_owned(), |l| format!("{l:.4}")),
                    if bad > 0 {
                        format!("; {bad} samples could not be read (errors.jsonl)")
                    } else {
                        String::new()
                    },
                    summary["run_dir"].as_str().unwrap_or("?"),
                    summary["files"]["model"][0].as_str().unwrap_or("?")
                )
            });
            Ok(if bad > 0 { Exit::Rejected } else { Exit::Ok })
        }
        Command::Eval(args) => {
            let (summary, bad) = train::eval::run(&args, reporter.as_ref())?;
            print(cli.json, &summary, || {
                format!(
                    "{} {} ({} views): top-1 {}, top-5 {}, mean class accuracy {} on {} videos{}\nreport: {}",
                    summary["run_dir"].as_str().unwrap_or("?"),
                    summary["split"].as_str().unwrap_or("?"),
                    summary["views"].as_str().unwrap_or("?"),
                    pct(&summary["top1"]),
                    pct(&summary["top5"]),
                    pct(&summary["mean_class_accuracy"]),
                    summary["samples"],
                    if bad > 0 {
                        format!("; {bad} samples could not be read")
                    } else {
                        String::new()
                    },
                    summary["eval_json"].as_str().unwrap_or("?")
                )
            });
            Ok(if bad > 0 { Exit::Rejected } else { Exit::Ok })
        }
        Command::Bench(args) => {
            let v = train::bench::model_bench(&args)?;
            print(cli.json, &v, || {
                format!(
                    "{} batch {} x {}x{}x{} on {} ({}): {:.2} ms/step, {:.1} clips/s",
                    v["model"].as_str().unwrap_or("?"),
                    v["batch"],
                    v["frames"],
                    v["size"][0],
                    v["size"][1],
                    v["device"].as_str().unwrap_or("?"),
                    v["precision"].as_str().unwrap_or("?"),
                    v["step_ms"].as_f64().unwrap_or(0.0),
                    v["clips_per_s"].as_f64().unwrap_or(0.0)
                )
            });
            Ok(Exit::Ok)
        }
        Command::BenchLoader(args) => {
            let v = train::bench::loader_bench(&args)?;
            print(cli.json, &v, || {
                format!(
                    "loader: {} clips in {:.2} s = {:.1} clips/s ({} threads, {:.0} MB/s of shards)",
                    v["clips"],
                    v["seconds"].as_f64().unwrap_or(0.0),
                    v["clips_per_s"].as_f64().unwrap_or(0.0),
                    v["workers"],
                    v["shard_mb_per_s"].as_f64().unwrap_or(0.0)
                )
            });
            Ok(Exit::Ok)
        }
        Command::Synth(args) => {
            let v = train::synth_cmd(&args)?;
            print(cli.json, &v, || {
                format!(
                    "wrote {} synthetic samples under {}",
                    v["samples"],
                    args.out.display()
                )
            });
            Ok(Exit::Ok)
        }
    }
}
