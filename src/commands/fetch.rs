//! `pmv-data fetch`: lock the root, download what is due, record the run, report;
//! with `--dry-run`, only list what it would fetch (no lock, no network, no write).
//!
//! Ctrl-C (or SIGTERM) stops the run cleanly: downloads in flight end at their next
//! chunk and keep their partial files, what was verified is recorded, and the exit
//! status is 130. A second Ctrl-C exits at once (a killed run also loses nothing).

use std::time::Instant;

use anyhow::Result;
use pmv_catalog::{Catalog, RunStatus};
use pmv_core::redact::redact_url;
use pmv_core::report::new_run_id;
use pmv_core::size::parse_size;
use pmv_core::util::group_digits;
use pmv_pipeline::fetch::{self, FetchOptions, FetchReport, FetchSettings};

use super::App;
use crate::cli::FetchArgs;
use pmv_term::exit::{Exit, UsageError};
use pmv_term::output::outln;
use pmv_term::progress;

pub fn run(app: &App, args: FetchArgs) -> Result<Exit> {
    if args.dry_run {
        return dry_run(app, &args);
    }
    let mut opts = options(app, &args)?;
    opts.cancel = Some(super::stop_on_signals()?);

    app.root.ensure()?;
    let _lock = app.root.lock("fetch")?;
    let mut catalog = Catalog::open(&app.root.catalog_path())?;
    catalog.close_abandoned_runs()?;
    if args.dataset.is_none() && catalog.datasets()?.is_empty() {
        anyhow::bail!(
            "no datasets in {}: ingest a manifest first (`pmv-data ingest`)",
            app.root.path().display()
        );
    }
    let run_id = new_run_id("fetch");
    let run_args = serde_json::json!({
        "dataset": args.dataset,
        "split": args.split,
        "limit": args.limit,
        "concurrency": opts.settings.concurrency,
        "per_host": opts.settings.per_host,
        "rate": opts.settings.rate,
        "timeout_s": opts.settings.timeout.as_secs_f64(),
        "max_size": opts.settings.max_size,
        "retry_failed": args.retry_failed,
        "include_permanent": args.include_permanent,
        "import_dirs": args.import_dir,
        "max_duration": args.max_duration.map(|d| d.to_string()),
        "max_bytes": opts.max_bytes,
        "min_speed_bytes_per_s": opts.settings.min_speed,
        "min_speed_time_s": opts.settings.min_speed_time.as_secs_f64(),
        "min_free_bytes": opts.settings.min_free,
        "allow_private_hosts": opts.settings.allow_private_hosts,
    });
    catalog.start_run(&run_id, "fetch", &run_args)?;

    let reporter = progress::for_stderr(app.quiet || app.json);
    let result = fetch::run(&app.root, &mut catalog, &opts, reporter.as_ref());
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            app.fail_run(&catalog, (&run_id, "fetch"), &run_args, &e)?;
            return Err(e.into());
        }
    };
    let interrupted = report.stopped.as_deref() == Some("cancelled");
    let status = if interrupted {
        RunStatus::Interrupted
    } else if report.failed() > 0 {
        RunStatus::Partial
    } else {
        RunStatus::Ok
    };
    let mut summary = serde_json::to_value(&report)?;
    // Where the datasets stand now: files per state.
    summary["datasets"] = catalog
        .status(args.dataset.as_deref())?
        .datasets
        .into_iter()
        .map(|d| serde_json::json!({ "name": d.name, "states": d.states }))
        .collect();
    let report_path = app.finish_run(&catalog, (&run_id, "fetch"), &run_args, status, &summary)?;

    if app.json {
        app.print_run_json((&run_id, "fetch"), &report_path, summary)?;
    } else {
        print_human(&report);
        for d in summary["datasets"].as_array().into_iter().flatten() {
            let parts: Vec<String> = d["states"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                .map(|(state, n)| {
                    format!(
                        "{} {state}",
                        n.as_u64().map(group_digits).unwrap_or_default()
                    )
                })
                .collect();
            outln!(
                "{}: {}",
                d["name"].as_str().unwrap_or("?"),
                parts.join(", ")
            );
        }
        outln!("run {run_id}: {}", report_path.display());
    }
    Ok(if interrupted {
        Exit::Interrupted
    } else if report.failed() > 0 {
        Exit::Rejected
    } else {
        Exit::Ok
    })
}

fn options(app: &App, args: &FetchArgs) -> Result<FetchOptions> {
    let usage = |m: String| anyhow::Error::new(UsageError(m));
    let mut settings = FetchSettings::from_config(&app.config.fetch);
    if let Some(n) = args.concurrency {
        settings.concurrency = n as usize;
    }
    if let Some(n) = args.per_host {
        settings.per_host = n as usize;
    }
    if let Some(r) = args.rate {
        if !r.is_finite() || r < 0.0 {
            return Err(usage(format!("--rate {r}: must be 0 (no limit) or more")));
        }
        settings.rate = (r > 0.0).then_some(r);
    }
    if let Some(t) = args.timeout {
        if !t.is_finite() || t <= 0.0 {
            return Err(usage(format!("--timeout {t}: must be more than 0 seconds")));
        }
        settings.timeout = std::time::Duration::from_secs_f64(t);
    }
    if let Some(s) = &args.max_size {
        settings.max_size = parse_size(s).map_err(|e| usage(format!("--max-size: {e}")))?;
    }
    if let Some(s) = &args.min_speed {
        settings.min_speed = parse_size(s).map_err(|e| usage(format!("--min-speed: {e}")))?;
    }
    if let Some(t) = args.min_speed_time {
        if !t.is_finite() || t <= 0.0 {
            return Err(usage(format!(
                "--min-speed-time {t}: must be more than 0 seconds"
            )));
        }
        settings.min_speed_time = std::time::Duration::from_secs_f64(t);
    }
    if let Some(s) = &args.min_free {
        settings.min_free = Some(parse_size(s).map_err(|e| usage(format!("--min-free: {e}")))?);
    }
    settings.allow_private_hosts |= args.allow_private_hosts;
    let sources = crate::commands::source_settings(app, &args.douyin)?;
    for d in &args.import_dir {
        if !d.is_dir() {
            return Err(usage(format!(
                "--import-dir {}: not a directory",
                d.display()
            )));
        }
    }
    Ok(FetchOptions {
        dataset: args.dataset.clone(),
        split: args.split.clone(),
        limit: args.limit,
        retry_failed: args.retry_failed,
        include_permanent: args.include_permanent,
        import_dirs: args.import_dir.clone(),
        local_roots: app.config.local_roots.clone(),
        settings,
        sources,
        deadline: args.max_duration.map(|d| Instant::now() + *d),
        max_bytes: args
            .max_bytes
            .as_deref()
            .map(parse_size)
            .transpose()
            .map_err(|e| usage(format!("--max-bytes: {e}")))?,
        cancel: None,
    })
}

/// `fetch --dry-run`: what a fetch with these options would start, in its order.
/// Every URL shown has its secrets redacted.
fn dry_run(app: &App, args: &FetchArgs) -> Result<Exit> {
    let opts = options(app, args)?;
    let Some(catalog) = Catalog::open_existing_readonly(&app.root.catalog_path())? else {
        anyhow::bail!(
            "no catalog in {}: ingest a manifest first (`pmv-data ingest`)",
            app.root.path().display()
        );
    };
    if args.dataset.is_none() && catalog.datasets()?.is_empty() {
        anyhow::bail!(
            "no datasets in {}: ingest a manifest first (`pmv-data ingest`)",
            app.root.path().display()
        );
    }
    let mut plan = fetch::dry_run(&app.root, &catalog, &opts)?;
    for f in &mut plan.files {
        f.location = redacted(&f.location);
        f.download_url = f.download_url.as_deref().map(redacted);
        f.lookup_url = f.lookup_url.as_deref().map(redacted);
    }
    if app.json {
        app.print_json(&serde_json::json!({
            "command": "fetch",
            "dry_run": true,
            "planned": plan.files.len(),
            "resume_bytes": plan.files.iter().map(|f| f.resume_bytes).sum::<u64>(),
            "no_source": plan.no_source,
            "files": plan.files,
        }))?;
        return Ok(Exit::Ok);
    }
    for f in &plan.files {
        let mut line = format!(
            "{}/{} {} {}",
            f.dataset,
            f.item,
            f.role.as_str(),
            f.kind.as_str()
        );
        if let Some(r) = f.rank {
            line.push_str(&format!(" #{r}"));
        }
        line.push(' ');
        line.push_str(f.download_url.as_deref().unwrap_or(&f.location));
        if let Some(l) = &f.lookup_url {
            line.push_str(&format!(" (via {l})"));
        }
        if f.resume_bytes > 0 {
            line.push_str(&format!(" resume {} B", group_digits(f.resume_bytes)));
        } else if let Some(n) = f.partial_bytes {
            line.push_str(&format!(" restart ({} B partial)", group_digits(n)));
        }
        if f.adopt_check {
            line.push_str(" [final name checked first]");
        }
        if let Some(e) = &f.error {
            line.push_str(&format!(" [{e}]"));
        }
        outln!("{line}");
    }
    outln!(
        "dry run: {} file(s) would be fetched, {} B resumed; nothing was requested or written",
        group_digits(plan.files.len() as u64),
        group_digits(plan.files.iter().map(|f| f.resume_bytes).sum())
    );
    if plan.no_source > 0 {
        outln!(
            "{} item(s) have no source yet (see `ingest --links/--url-template`)",
            plan.no_source
        );
    }
    Ok(Exit::Ok)
}

/// `url` with its secrets redacted (see [`redact_url`]).
fn redacted(url: &str) -> String {
    redact_url(url).into_owned()
}

fn print_human(r: &FetchReport) {
    outln!("{}", r.summary());
    if r.no_source > 0 {
        outln!(
            "{} item(s) have no source yet (see `ingest --links/--url-template`)",
            r.no_source
        );
    }
    for e in r.examples.iter().take(5) {
        outln!(
            "  {}/{} {}: {} {}",
            e.dataset,
            e.item,
            e.role,
            e.class,
            e.message
        );
    }
    if r.examples.len() > 5 {
        outln!("  ... every failure is in the catalog (`pmv-data status`) and the run report");
    }
}
