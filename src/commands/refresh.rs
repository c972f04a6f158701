//! `pmv-data refresh`: what cron runs every night. Takes the root lock (a second
//! refresh exits 75 naming the holder), brings every configured dataset up to date,
//! records the run, prints one summary line and exits with a documented status.

#[cfg(not(feature = "media"))]
pub fn run(
    _app: &super::App,
    _args: crate::cli::RefreshArgs,
) -> anyhow::Result<pmv_term::exit::Exit> {
    anyhow::bail!(
        "this pmv-data was built without the `media` feature (FFmpeg), which refresh needs"
    )
}

#[cfg(feature = "media")]
pub use with_media::run;

#[cfg(feature = "media")]
mod with_media {
    use std::sync::Arc;

    use anyhow::Result;
    use pmv_catalog::{Catalog, RunStatus};
    use pmv_core::report::new_run_id;
    use pmv_core::size::parse_size;
    use pmv_pipeline::fetch::{FetchOptions, FetchSettings};
    use pmv_pipeline::refresh::{self, RefreshOptions};

    use crate::cli::RefreshArgs;
    use crate::commands::App;
    use pmv_term::exit::{Exit, UsageError};
    use pmv_term::output::outln;
    use pmv_term::progress;

    pub fn run(app: &App, args: RefreshArgs) -> Result<Exit> {
        let usage = |m: String| anyhow::Error::new(UsageError(m));
        let Some(mut plan) = app.config.plan.clone() else {
            return Err(usage(
                "refresh needs a configuration file (--config FILE or PMV_DATA_CONFIG) that \
                 declares the [[datasets]] to keep up to date; manifests/pmv.example.toml is \
                 a commented example"
                    .into(),
            ));
        };
        if plan.datasets.is_empty() {
            return Err(usage(
                "the configuration declares no [[datasets]]: nothing to refresh".into(),
            ));
        }
        // A dataset without its own split ratios takes the file's [ingest] ones.
        for d in &mut plan.datasets {
            if d.split_ratios.is_none() {
                d.split_ratios = app.config.split_ratios();
            }
        }
        if let Some(d) = args.max_duration {
            plan.max_duration = Some(*d);
        }
        if let Some(n) = args.max_items {
            plan.max_items = Some(n);
        }
        if let Some(b) = &args.max_bytes {
            plan.max_bytes = Some(parse_size(b).map_err(|e| usage(format!("--max-bytes: {e}")))?);
        }
        if let Some(f) = args.verify_fraction {
            if !(0.0..=1.0).contains(&f) {
                return Err(usage(format!(
                    "--verify-fraction {f}: must be between 0 and 1"
                )));
            }
            plan.verify_fraction = f;
        }
        let sources = crate::commands::source_settings(app, &args.douyin)?;
        let mut settings = FetchSettings::from_config(&app.config.fetch);
        settings.allow_private_hosts |= args.allow_private_hosts;
        let cancel = crate::commands::stop_on_signals()?;

        app.root.ensure()?;
        let _lock = app.root.lock("refresh")?;
        let mut catalog = Catalog::open(&app.root.catalog_path())?;
        catalog.close_abandoned_runs()?;
        let run_id = new_run_id("refresh");
        let run_args = serde_json::json!({
            "datasets": plan.datasets.iter().map(|d| &d.name).collect::<Vec<_>>(),
            "max_duration": plan.max_duration.map(|d| humantime::format_duration(d).to_string()),
            "max_items": plan.max_items,
            "max_bytes": plan.max_bytes,
            "verify_fraction": plan.verify_fraction,
            "verify_all": args.verify_all,
            "allow_private_hosts": settings.allow_private_hosts,
        });
        let opts = RefreshOptions {
            turn: refresh::turn(&catalog)?,
            plan,
            verify_all: args.verify_all,
            fetch: FetchOptions {
                settings,
                sources,
                local_roots: app.config.local_roots.clone(),
                ..FetchOptions::default()
            },
            jobs: args.jobs.map(|j| j as usize),
            cancel: Some(Arc::clone(&cancel)),
        };
        catalog.start_run(&run_id, "refresh", &run_args)?;
        let reporter = progress::for_stderr(app.quiet || app.json);
        let report = match refresh::run(&app.root, &mut catalog, &opts, reporter.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                app.fail_run(&catalog, (&run_id, "refresh"), &run_args, &e)?;
                return Err(e.into());
            }
        };
        let interrupted = report.stopped.as_deref() == Some("cancelled");
        let status = if interrupted {
            RunStatus::Interrupted
        } else if report.failure_count > 0 {
            RunStatus::Partial
        } else {
            RunStatus::Ok
        };
        let mut summary = serde_json::to_value(&report)?;
        // Where each dataset stands now: files per state.
        let states: std::collections::BTreeMap<String, _> = catalog
            .status(None)?
            .datasets
            .into_iter()
            .map(|d| (d.name, d.states))
            .collect();
        for d in summary["datasets"].as_array_mut().into_iter().flatten() {
            let name = d["name"].as_str().unwrap_or_default().to_owned();
            d["states"] = serde_json::json!(states.get(&name));
        }
        let report_path =
            app.finish_run(&catalog, (&run_id, "refresh"), &run_args, status, &summary)?;
        if app.json {
            app.print_run_json((&run_id, "refresh"), &report_path, summary)?;
        } else {
            outln!("{} (report {})", report.summary(), report_path.display());
        }
        Ok(if interrupted {
            Exit::Interrupted
        } else if report.failed_threshold {
            Exit::TooManyFailures(opts.plan.failure_exit_code)
        } else {
            Exit::Ok
        })
    }
}
