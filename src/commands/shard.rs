//! `pmv-data shard`: resolve the recipe, lock the root, shard a dataset (or rebuild one
//! shard), record the run and report it.
//!
//! Ctrl-C (or SIGTERM) stops the run cleanly: the videos being decoded are finished and
//! written, the open shard is closed and recorded, the rest waits for the next run, and
//! the exit status is 130. A second Ctrl-C exits at once (the shard being written is
//! then left as a temporary file that the next run removes).

#[cfg(not(feature = "media"))]
pub fn run(
    _app: &super::App,
    _args: crate::cli::ShardArgs,
) -> anyhow::Result<pmv_term::exit::Exit> {
    anyhow::bail!("this pmv-data was built without the `media` feature (FFmpeg), which shard needs")
}

#[cfg(feature = "media")]
pub use with_media::run;

#[cfg(feature = "media")]
mod with_media {
    use std::time::Instant;

    use anyhow::Result;
    use pmv_catalog::{Catalog, RunStatus};
    use pmv_core::frame_recipe::{self, Overrides};
    use pmv_core::report::new_run_id;
    use pmv_core::util::{group_digits, human_bytes};
    use pmv_pipeline::sharding::{ShardOptions, ShardReport, Stop, rebuild_shard};

    use crate::cli::ShardArgs;
    use crate::commands::App;
    use pmv_term::exit::{Exit, UsageError};
    use pmv_term::output::{errln, outln};
    use pmv_term::progress;

    pub fn run(app: &App, args: ShardArgs) -> Result<Exit> {
        if args.list_recipes {
            return list_recipes(app);
        }
        let usage = |m: String| anyhow::Error::new(UsageError(m));
        let recipe = match args.rebuild {
            Some(_) => None,
            None => {
                let size = args
                    .size
                    .as_deref()
                    .map(frame_recipe::parse_size)
                    .transpose()
                    .map_err(|e| usage(e.to_string()))?;
                let o = Overrides {
                    frames: args.frames,
                    stride: args.stride,
                    segments: args.segments,
                    clips: args.clips,
                    fps: args.fps,
                    size,
                    fit: args.fit,
                    short_side: args.short_side,
                    filter: args.filter,
                    codec: args.codec,
                    jpeg_quality: args.jpeg_quality,
                };
                Some(
                    frame_recipe::resolve(args.recipe.as_deref(), &o)
                        .map_err(|e| usage(e.to_string()))?,
                )
            }
        };
        let catalog_path = app.root.catalog_path();
        if !catalog_path.exists() {
            anyhow::bail!(
                "the data root {} has no catalog yet: ingest a manifest first",
                app.root.path().display()
            );
        }
        app.root.ensure()?;
        let _lock = app.root.lock("shard")?;
        let mut catalog = Catalog::open(&catalog_path)?;
        catalog.close_abandoned_runs()?;
        let reporter = progress::for_stderr(app.quiet || app.json);

        if let Some(id) = args.rebuild {
            let run_id = new_run_id("shard");
            let run_args = serde_json::json!({ "rebuild": id, "jobs": args.jobs });
            catalog.start_run(&run_id, "shard", &run_args)?;
            let result = rebuild_shard(
                &app.root,
                &mut catalog,
                id,
                args.jobs.map(|j| j as usize),
                reporter.as_ref(),
            );
            let (status, summary) = match &result {
                Ok(r) => (RunStatus::Ok, serde_json::to_value(r)?),
                Err(e) => (
                    RunStatus::Failed,
                    serde_json::json!({ "error": e.to_string() }),
                ),
            };
            let report_path =
                app.finish_run(&catalog, (&run_id, "shard"), &run_args, status, &summary)?;
            let r = result?;
            if app.json {
                app.print_run_json((&run_id, "shard"), &report_path, summary)?;
            } else {
                outln!(
                    "rebuilt shard {} ({}) as {} ({} samples, {}){}",
                    r.old.id,
                    r.old.path,
                    r.new.path,
                    r.new.samples,
                    human_bytes(r.new.bytes),
                    if r.identical {
                        ": identical to the original"
                    } else {
                        ": differs from the recorded original"
                    }
                );
                outln!("report: {}", report_path.display());
            }
            return Ok(Exit::Ok);
        }

        let recipe = recipe.expect("resolved above");
        let dataset = args.dataset.clone().expect("clap requires --dataset");
        let opts = ShardOptions {
            dataset,
            splits: args.split.clone(),
            recipe,
            samples_per_shard: args.samples_per_shard.map(|n| n as usize),
            jobs: args.jobs.map(|j| j as usize),
            limit: args.limit,
            deadline: args.max_time.map(|d| Instant::now() + d),
            cancel: Some(crate::commands::stop_on_signals()?),
        };
        let run_id = new_run_id("shard");
        let run_args = serde_json::json!({
            "dataset": opts.dataset,
            "splits": opts.splits,
            "recipe": opts.recipe,
            "recipe_id": opts.recipe.id(),
            "samples_per_shard": opts.samples_per_shard,
            "jobs": opts.jobs,
            "limit": opts.limit,
            "max_time_s": args.max_time.map(|d| d.as_secs_f64()),
        });
        catalog.start_run(&run_id, "shard", &run_args)?;
        let result = pmv_pipeline::sharding::run(&app.root, &mut catalog, &opts, reporter.as_ref());
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                app.fail_run(&catalog, (&run_id, "shard"), &run_args, &e)?;
                return Err(e.into());
            }
        };
        let rejected = !report.corrupt.is_empty() || !report.failed.is_empty();
        let interrupted = report.stopped == Some(Stop::Cancelled);
        let status = if interrupted {
            RunStatus::Interrupted
        } else if rejected || report.stopped.is_some() {
            RunStatus::Partial
        } else {
            RunStatus::Ok
        };
        let summary = serde_json::to_value(&report)?;
        let report_path =
            app.finish_run(&catalog, (&run_id, "shard"), &run_args, status, &summary)?;
        if app.json {
            app.print_run_json((&run_id, "shard"), &report_path, summary)?;
        } else {
            print_human(&report, &report_path);
        }
        Ok(if interrupted {
            Exit::Interrupted
        } else if rejected {
            Exit::Rejected
        } else {
            Exit::Ok
        })
    }

    fn list_recipes(app: &App) -> Result<Exit> {
        let all = frame_recipe::builtins();
        if app.json {
            let recipes: Vec<_> = all
                .iter()
                .map(|r| {
                    serde_json::json!({ "name": r.name, "recipe_id": r.id(), "params": r.params })
                })
                .collect();
            app.print_json(&serde_json::json!({ "command": "shard", "recipes": recipes }))?;
        } else {
            for r in &all {
                outln!("{r}");
            }
        }
        Ok(Exit::Ok)
    }

    fn print_human(r: &ShardReport, report_path: &std::path::Path) {
        for f in &r.corrupt {
            errln!(
                "{}: not a decodable video: {} (moved to {})",
                f.item,
                f.reason,
                f.quarantined.as_deref().unwrap_or("?")
            );
        }
        for f in &r.failed {
            errln!("{}: {}: {}", f.item, f.file, f.reason);
        }
        for f in &r.cover_problems {
            errln!("{}: cover left out: {}", f.item, f.reason);
        }
        outln!(
            "shard {} with {} ({}): {} of {} videos → {} samples in {} shards ({}), {} corrupt, {} failed",
            r.dataset,
            r.recipe.name,
            r.recipe_id,
            group_digits(r.videos_sharded as u64),
            group_digits(r.videos_pending as u64),
            group_digits(r.samples as u64),
            r.shards.len(),
            human_bytes(r.bytes_written),
            r.corrupt.len(),
            r.failed.len()
        );
        for s in &r.shards {
            outln!(
                "  {}  {} samples  {}",
                s.path,
                s.samples,
                human_bytes(s.bytes)
            );
        }
        if r.videos_sharded > 0 {
            outln!(
                "  decoded {} frames for {} kept ({:.2} per frame kept), {:.2} videos/s with {} jobs × {} threads",
                group_digits(r.decode.frames_decoded),
                group_digits(r.decode.frames_kept),
                r.decode_ratio,
                r.videos_per_second,
                r.jobs,
                r.threads_per_video
            );
        }
        if let Some(stop) = r.stopped {
            outln!(
                "  stopped early ({}): {} videos left for the next run",
                serde_json::to_value(stop)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                group_digits(r.not_started as u64)
            );
        }
        if r.videos_pending == 0 {
            outln!("  nothing new to shard");
        }
        outln!("report: {}", report_path.display());
    }
}
