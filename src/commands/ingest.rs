//! `pmv-data ingest`: lock the root, merge manifests, report.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use pmv_catalog::{Catalog, RunStatus};
use pmv_core::report::new_run_id;
use pmv_core::util::{group_digits, human_bytes};
use pmv_pipeline::ingest::{IngestOptions, IngestReport, ingest};
use pmv_pipeline::manifest::{Rejection, Split, SplitRatios, UrlTemplate};

use super::App;
use crate::cli::IngestArgs;
use pmv_term::exit::{Exit, UsageError};
use pmv_term::output::{errln, outln};
use pmv_term::progress;

/// Rejections printed on stderr; all of them go to `reports/<run-id>-rejected.txt`.
const PRINTED_REJECTIONS: u64 = 100;

pub fn run(app: &App, args: IngestArgs) -> Result<Exit> {
    let mut opts = options(app, &args)?;
    // A mistyped name is reported before anything is created.
    pmv_pipeline::ingest::check_inputs(&opts)?;
    if let Some(list) = pmv_pipeline::ingest::take_class_name_list(&mut opts)?
        && !app.quiet
        && !app.json
    {
        errln!(
            "ingest: {} is a class-name list: read as the class file (--classes)",
            list.display()
        );
    }
    app.root.ensure()?;
    let _lock = app.root.lock("ingest")?;
    let mut catalog = Catalog::open(&app.root.catalog_path())?;
    catalog.close_abandoned_runs()?;
    let run_id = new_run_id("ingest");
    let run_args = serde_json::json!({
        "dataset": opts.dataset,
        "format": opts.format,
        "files": opts.inputs,
        "split": opts.split.as_ref().map(|s| s.to_string()),
        "classes": opts.classes_file,
        "links": opts.links_file,
        "url_template": opts
            .url_template
            .as_ref()
            .map(|t| pmv_core::redact::redact_url(t.as_str())),
        "split_ratios": opts.ratios.describe(),
        "strict": opts.strict,
        "force": opts.force,
    });
    catalog.start_run(&run_id, "ingest", &run_args)?;

    let mut sink = RejectSink::new(
        app.root
            .reports_dir()
            .join(format!("{run_id}-rejected.txt")),
    );
    let reporter = progress::for_stderr(app.quiet || app.json);
    let result = ingest(&mut catalog, &opts, reporter.as_ref(), &mut |r| {
        sink.push(r)
    });
    let rejected_file = sink.finish()?;

    let report = match result {
        Ok(report) => report,
        Err(e) => {
            app.fail_run(&catalog, (&run_id, "ingest"), &run_args, &e)?;
            return Err(e.into());
        }
    };
    let status = if report.rejected > 0 {
        RunStatus::Partial
    } else {
        RunStatus::Ok
    };
    let mut summary = serde_json::to_value(&report)?;
    summary["rejected_file"] = rejected_file
        .as_ref()
        .map(|f| f.display().to_string())
        .into();
    let report_path = app.finish_run(&catalog, (&run_id, "ingest"), &run_args, status, &summary)?;

    if app.json {
        app.print_run_json((&run_id, "ingest"), &report_path, summary)?;
    } else {
        print_human(&report, &report_path, rejected_file.as_deref(), sink.total);
    }
    Ok(if report.rejected > 0 {
        Exit::Rejected
    } else {
        Exit::Ok
    })
}

fn options(app: &App, args: &IngestArgs) -> Result<IngestOptions> {
    let usage = |m: String| anyhow::Error::new(UsageError(m));
    let split = args
        .split
        .as_deref()
        .map(Split::parse)
        .transpose()
        .map_err(|e| usage(format!("--split: {e}")))?;
    let ratios = match &args.split_ratios {
        Some(r) => SplitRatios::parse(r).map_err(|e| usage(format!("--split-ratios: {e}")))?,
        None => app.config.split_ratios().unwrap_or_default(),
    };
    let url_template = args
        .url_template
        .as_deref()
        .map(UrlTemplate::parse)
        .transpose()
        .map_err(|e| usage(format!("--url-template: {e}")))?;
    let multi_label = match (args.multi_label, args.single_label) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    Ok(IngestOptions {
        dataset: args.dataset.clone(),
        format: args.format,
        inputs: args.files.clone(),
        split,
        classes_file: args.classes.clone(),
        links_file: args.links.clone(),
        url_template,
        ratios,
        multi_label,
        base_dir: args.base_dir.clone(),
        local_roots: app.config.local_roots.clone(),
        strict: args.strict,
        force: args.force,
        tmp_dir: app.root.tmp_dir().join("ingest"),
        memory_budget: pmv_pipeline::ingest::DEFAULT_MEMORY_BUDGET,
    })
}

/// Prints the first rejections on stderr and keeps all of them in a file.
struct RejectSink {
    path: PathBuf,
    file: Option<std::io::BufWriter<fs_err::File>>,
    error: Option<std::io::Error>,
    total: u64,
}

impl RejectSink {
    fn new(path: PathBuf) -> RejectSink {
        RejectSink {
            path,
            file: None,
            error: None,
            total: 0,
        }
    }

    fn push(&mut self, r: &Rejection) {
        self.total += 1;
        if self.total <= PRINTED_REJECTIONS {
            errln!("{r}");
        }
        if self.error.is_some() {
            return;
        }
        if self.file.is_none() {
            match fs_err::File::create(&self.path) {
                Ok(f) => self.file = Some(std::io::BufWriter::new(f)),
                Err(e) => {
                    self.error = Some(e);
                    return;
                }
            }
        }
        if let Some(f) = self.file.as_mut()
            && let Err(e) = writeln!(f, "{r}")
        {
            self.error = Some(e);
        }
    }

    /// The file holding every rejection, if there were any.
    fn finish(&mut self) -> Result<Option<PathBuf>> {
        if let Some(e) = self.error.take() {
            return Err(e).context("cannot write the list of rejected rows");
        }
        match self.file.take() {
            Some(mut f) => {
                f.flush()
                    .context("cannot write the list of rejected rows")?;
                if self.total > PRINTED_REJECTIONS {
                    errln!(
                        "... and {} more rejected rows (all in {})",
                        group_digits(self.total - PRINTED_REJECTIONS),
                        self.path.display()
                    );
                }
                Ok(Some(self.path.clone()))
            }
            None => Ok(None),
        }
    }
}

fn print_human(
    r: &IngestReport,
    report_path: &std::path::Path,
    rejected: Option<&std::path::Path>,
    total_rejected: u64,
) {
    let kind = if r.multi_label {
        "multi-label"
    } else {
        "single-label"
    };
    let what = if r.created_dataset { ", created" } else { "" };
    outln!("dataset {} ({}, {kind}{what})", r.dataset, r.format);
    for m in &r.manifests {
        let split = m.split.as_deref().unwrap_or("-");
        if let Some(reason) = &m.reason {
            outln!("  {split:<6} {}  rejected: {reason}", m.path);
        } else if m.status == "unchanged" {
            outln!(
                "  {split:<6} {}  unchanged since its last ingest ({} rows)",
                m.path,
                group_digits(m.rows)
            );
        } else {
            outln!(
                "  {split:<6} {}  {} rows, {} accepted, {} rejected ({})",
                m.path,
                group_digits(m.rows),
                group_digits(m.accepted),
                group_digits(m.rejected),
                human_bytes(m.bytes)
            );
        }
    }
    if r.unchanged {
        outln!("unchanged: every manifest is as at its last ingest; nothing was written");
    } else if !r.written && r.manifests.iter().all(|m| m.status != "read") {
        outln!("no manifest could be used; nothing was written");
    } else if !r.written {
        outln!(
            "--strict: {} rows rejected, nothing was written",
            group_digits(total_rejected)
        );
    } else {
        let i = &r.items;
        outln!(
            "items: {} new, {} updated, {} restored, {} removed, {} unchanged",
            group_digits(i.new),
            group_digits(i.updated),
            group_digits(i.restored),
            group_digits(i.removed),
            group_digits(i.unchanged)
        );
        if r.repeated_rows > 0 {
            outln!(
                "{} rows list an item already listed by the same manifest (merged)",
                group_digits(r.repeated_rows)
            );
        }
        if !r.classes_added.is_empty() || !r.classes_renamed.is_empty() {
            outln!(
                "classes: {} added, {} renamed",
                r.classes_added.len(),
                r.classes_renamed.len()
            );
        }
    }
    if let Some(l) = &r.links {
        outln!(
            "links {}: {} rows, {} ids, {} rejected",
            l.path,
            group_digits(l.rows),
            group_digits(l.ids),
            group_digits(l.rejected)
        );
    }
    outln!(
        "{}: {} active items, {} classes",
        r.dataset,
        group_digits(r.active_items),
        group_digits(r.classes)
    );
    if r.no_source > 0 {
        outln!(
            "{} items have no video source yet: give --links FILE or --url-template URL",
            group_digits(r.no_source)
        );
    }
    if let Some(f) = rejected {
        outln!(
            "{} rejected rows, listed in {}",
            group_digits(total_rejected),
            f.display()
        );
    }
    outln!("report {} ({:.2} s)", report_path.display(), r.seconds);
}
