//! `pmv-data demo`: the whole pipeline on a built-in synthetic dataset. Renders and
//! encodes the videos, serves them over HTTP from inside this process, ingests, fetches
//! and shards them (library calls), then trains `tiny3d` and evaluates it on the
//! held-out videos with the trainer binary, and prints top-1 and where the report is.

#[cfg(not(feature = "media"))]
pub fn run(_app: &super::App, _args: crate::cli::DemoArgs) -> anyhow::Result<pmv_term::exit::Exit> {
    anyhow::bail!("this pmv-data was built without the `media` feature (FFmpeg), which demo needs")
}

#[cfg(feature = "media")]
pub use with_media::run;

#[cfg(feature = "media")]
mod with_media {
    use std::process::{Command, Stdio};
    use std::time::Instant;

    use anyhow::{Context as _, Result, bail};
    use pmv_catalog::{Catalog, RunStatus};
    use pmv_core::report::new_run_id;
    use pmv_pipeline::demo::{self, DemoOptions};

    use crate::cli::DemoArgs;
    use crate::commands::App;
    use pmv_term::exit::Exit;
    use pmv_term::output::outln;
    use pmv_term::progress;

    pub fn run(app: &App, args: DemoArgs) -> Result<Exit> {
        let started = Instant::now();
        let opts = DemoOptions {
            classes: args.classes as usize,
            videos_per_class: args.videos_per_class as usize,
            seed: args.seed,
            jobs: args
                .jobs
                .map(|j| j as usize)
                .unwrap_or_else(|| DemoOptions::default().jobs),
            ..DemoOptions::default()
        };
        app.root.ensure()?;
        let lock = app.root.lock("demo")?;
        let mut catalog = Catalog::open(&app.root.catalog_path())?;
        catalog.close_abandoned_runs()?;
        let run_id = new_run_id("demo");
        let run_args = serde_json::json!({
            "classes": opts.classes,
            "videos_per_class": opts.videos_per_class,
            "epochs": args.epochs,
            "seed": opts.seed,
        });
        catalog.start_run(&run_id, "demo", &run_args)?;
        let say = |line: String| {
            if !app.quiet && !app.json {
                outln!("{line}");
            }
        };
        say(format!(
            "demo: {} classes x {} videos ({}x{} portrait H.264, {} s each), served on 127.0.0.1",
            opts.classes, opts.videos_per_class, opts.width, opts.height, opts.seconds
        ));
        let reporter = progress::for_stderr(app.quiet || app.json);
        let prepared = match demo::prepare(&app.root, &mut catalog, &opts, reporter.as_ref()) {
            Ok(p) => p,
            Err(e) => {
                app.fail_run(&catalog, (&run_id, "demo"), &run_args, &e)?;
                return Err(e.into());
            }
        };
        for (step, secs) in &prepared.seconds {
            let what = match *step {
                "render" => format!("{} videos rendered and encoded", prepared.rendered),
                "ingest" => format!("{} items ingested", prepared.ingest.active_items),
                "fetch" => format!(
                    "{} files downloaded and verified over HTTP",
                    prepared.fetch.verified
                ),
                _ => format!(
                    "{} samples in {} shards ({})",
                    prepared.shard.samples,
                    prepared.shard.shards.len(),
                    prepared.recipe.name
                ),
            };
            say(format!("  {step:<7} {what} in {secs:.1} s"));
        }
        // Training reads the catalog and shards only; nothing else may change them
        // meanwhile, so the root stays locked.
        let out_dir = format!("runs/{run_id}-tiny3d");
        let trainer = crate::trainer::path();
        say(format!(
            "  train   tiny3d on {} videos for {} epochs (CPU unless a GPU is found) ...",
            prepared.train_videos, args.epochs
        ));
        let t = Instant::now();
        let train = trainer_json(
            Command::new(&trainer)
                .arg("train")
                .arg("--root")
                .arg(app.root.path())
                .args(["--dataset", demo::DATASET, "--recipe", &prepared.recipe_id])
                .args(["--model", "tiny3d", "--epochs", &args.epochs.to_string()])
                // Flipping would swap left and right, clockwise and anticlockwise:
                // classes of their own here.
                .args([
                    "--flip",
                    "0",
                    "--crop-scale",
                    "0.8,1",
                    "--crop-ratio",
                    "0.9,1.1",
                ])
                .args(["--lr", "3e-3", "--seed", &args.seed.to_string()])
                .args(["--out", &out_dir, "--quiet"]),
            app,
        )
        .context("training the demo model")?;
        let train_secs = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let eval = trainer_json(
            Command::new(&trainer)
                .arg("eval")
                .arg("--root")
                .arg(app.root.path())
                .args(["--run", &out_dir, "--split", "val", "--quiet"]),
            app,
        )
        .context("evaluating the demo model")?;
        let eval_secs = t.elapsed().as_secs_f64();
        drop(lock);

        let top1 = eval["top1"].as_f64().unwrap_or(0.0);
        let chance = 1.0 / opts.classes as f64;
        let summary = serde_json::json!({
            "dataset": demo::DATASET,
            "classes": prepared.classes,
            "train_videos": prepared.train_videos,
            "val_videos": prepared.val_videos,
            "recipe": prepared.recipe.name,
            "recipe_id": prepared.recipe_id,
            "top1": top1,
            "top5": eval["top5"],
            "chance": chance,
            "run_dir": app.root.path().join(&out_dir),
            "eval_json": eval["eval_json"],
            "plots": eval["plots"],
            "train": train,
            "fetch": prepared.fetch,
            "shard_samples": prepared.shard.samples,
            "stages": prepared
                .seconds
                .iter()
                .copied()
                .chain([("train", train_secs), ("eval", eval_secs)])
                .map(|(stage, s)| serde_json::json!({ "stage": stage, "duration_s": s }))
                .collect::<Vec<_>>(),
            "duration_s": started.elapsed().as_secs_f64(),
        });
        let report = app.finish_run(
            &catalog,
            (&run_id, "demo"),
            &run_args,
            RunStatus::Ok,
            &summary,
        )?;
        if app.json {
            app.print_run_json((&run_id, "demo"), &report, summary)?;
        } else {
            say(format!(
                "  train   final loss {:.3} in {train_secs:.0} s; eval on {} held-out videos in {eval_secs:.0} s",
                train["final_loss"].as_f64().unwrap_or(f64::NAN),
                prepared.val_videos
            ));
            say(format!(
                "demo: top-1 {:.1}% on {} held-out videos ({} classes, chance {:.1}%), in {:.0} s",
                100.0 * top1,
                prepared.val_videos,
                opts.classes,
                100.0 * chance,
                started.elapsed().as_secs_f64()
            ));
            say(format!(
                "report: {}",
                eval["eval_json"].as_str().unwrap_or("(none)")
            ));
            for p in eval["plots"].as_array().into_iter().flatten() {
                say(format!("plot:   {}", p.as_str().unwrap_or_default()));
            }
            say(format!("run:    {}", report.display()));
        }
        Ok(Exit::Ok)
    }

    /// Runs a trainer command with `--json`, its stderr passed through, and returns
    /// what it printed.
    fn trainer_json(cmd: &mut Command, app: &App) -> Result<serde_json::Value> {
        cmd.arg("--json").stdout(Stdio::piped());
        if app.quiet || app.json {
            cmd.stderr(Stdio::piped());
        }
        let out = cmd.output().with_context(|| {
            format!(
                "cannot run the trainer {}: build it with `cargo build --release` (it lies \
                 beside pmv-data) or set PMV_DATA_TRAIN",
                crate::trainer::path().display()
            )
        })?;
        if !out.status.success() {
            bail!(
                "the trainer failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).context("the trainer printed no JSON")
    }
}
