//! `pmv-data status`: read-only summary of the catalog. Takes no lock and creates
//! nothing, so it is safe while another command runs.

use anyhow::Result;
use pmv_catalog::{Catalog, Status};
use pmv_core::util::{group_digits, human_bytes};

use super::App;
use crate::cli::StatusArgs;
use pmv_term::exit::Exit;
use pmv_term::output::outln;

pub fn run(app: &App, args: StatusArgs) -> Result<Exit> {
    let catalog = Catalog::open_existing_readonly(&app.root.catalog_path())?;
    let status = match &catalog {
        Some(c) => Some(c.status(args.dataset.as_deref())?),
        None => None,
    };
    if let (None, Some(name)) = (&status, &args.dataset) {
        anyhow::bail!(
            "no dataset named '{name}': the root {} has no catalog yet",
            app.root.path().display()
        );
    }
    if app.json {
        let doc = serde_json::json!({
            "command": "status",
            "root": app.root.path(),
            "catalog": status.is_some().then(|| app.root.catalog_path()),
            "schema_version": status.as_ref().map(|s| s.schema_version),
            "datasets": status.as_ref().map(|s| &s.datasets).cloned().unwrap_or_default(),
            "runs": status.as_ref().map(|s| &s.runs).cloned().unwrap_or_default(),
        });
        app.print_json(&doc)?;
        return Ok(Exit::Ok);
    }
    match status {
        None => {
            outln!(
                "{}: no catalog yet (run `pmv-data ingest` to create one)",
                app.root.path().display()
            );
        }
        Some(s) => print_human(app, &s),
    }
    Ok(Exit::Ok)
}

fn print_human(app: &App, s: &Status) {
    outln!(
        "root {} (catalog schema v{}, {} journal)",
        app.root.path().display(),
        s.schema_version,
        s.journal_mode
    );
    if s.datasets.is_empty() {
        outln!("no datasets");
    }
    for d in &s.datasets {
        let kind = if d.multi_label {
            "multi-label"
        } else {
            "single-label"
        };
        outln!();
        outln!("{} ({}, {kind})", d.name, d.format);
        outln!(
            "  items      {} active, {} removed; {} classes",
            group_digits(d.items),
            group_digits(d.removed),
            group_digits(d.classes)
        );
        let splits: Vec<String> = d
            .splits
            .iter()
            .map(|(k, v)| format!("{k} {}", group_digits(*v)))
            .collect();
        outln!(
            "  splits     {}",
            if splits.is_empty() {
                "-".into()
            } else {
                splits.join(", ")
            }
        );
        for (role, states) in &d.roles {
            let parts: Vec<String> = states
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, v)| format!("{k} {}", group_digits(*v)))
                .collect();
            outln!("  {role:<10} {}", parts.join(", "));
        }
        outln!("  stored     {}", human_bytes(d.bytes));
        let sources: Vec<String> = d
            .sources
            .iter()
            .map(|(k, v)| format!("{k} {}", group_digits(*v)))
            .collect();
        let mut line = if sources.is_empty() {
            "-".to_string()
        } else {
            sources.join(", ")
        };
        if d.no_source > 0 {
            line.push_str(&format!(
                "; {} items have no source yet",
                group_digits(d.no_source)
            ));
        }
        outln!("  sources    {line}");
        if !d.failures.is_empty() {
            let f: Vec<String> = d
                .failures
                .iter()
                .map(|(k, v)| format!("{k} {}", group_digits(*v)))
                .collect();
            outln!("  failures   {}", f.join(", "));
        }
        let mut backlog = format!("{} files due for fetch", group_digits(d.due));
        if d.waiting > 0 {
            backlog.push_str(&format!(
                ", {} waiting to be retried",
                group_digits(d.waiting)
            ));
        }
        outln!("  backlog    {backlog}");
        for r in &d.shards {
            outln!(
                "  shards     {} ({}): {} shards, {} samples, {}; {} videos to shard",
                r.name,
                r.recipe_id,
                group_digits(r.shards),
                group_digits(r.samples),
                human_bytes(r.bytes),
                group_digits(r.backlog)
            );
        }
        for m in &d.manifests {
            outln!(
                "  manifest   {} ({} rows, {} rejected, {})",
                m.path,
                group_digits(m.rows),
                group_digits(m.rejected),
                m.ingested_at
            );
        }
    }
    if !s.runs.is_empty() {
        outln!();
        outln!("recent runs");
        for r in &s.runs {
            outln!(
                "  {}  {:<11} {}",
                r.id,
                r.status,
                r.finished_at.as_deref().unwrap_or("(running)")
            );
        }
    }
}
