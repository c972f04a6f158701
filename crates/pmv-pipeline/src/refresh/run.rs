//! Running a refresh: the stages in order, within the budgets, and the report.
//!
//! The time budget bounds every stage, work in flight included: the re-hash and the
//! shard check read no further file after the deadline, fetch stops its downloads in
//! flight at the deadline (their partial files are resumed by the next run), and the
//! shard stage starts no further video, finishes the ones it is decoding and closes its
//! open shards. So a run ends within its budget plus [`fetch::GRACE`] and the time
//! the videos in flight take to decode (see README, refresh).
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;

use super::config::{DatasetPlan, RecipeChoice, RefreshPlan};
use crate::fetch::{self, FetchOptions, FetchReport, RehashOptions, RehashReport, RehashSelect};
use crate::ingest::{self, DEFAULT_MEMORY_BUDGET, IngestOptions};
use crate::sharding::{ShardOptions, rebuild_shard, stored_recipe};
use pmv_catalog::{Catalog, CatalogError};
use pmv_core::frame_recipe::FrameRecipe;
use pmv_core::report::Reporter;
use pmv_core::root::DataRoot;
use pmv_core::util::{now_unix, rfc3339, sha256_file};

/// What one refresh does; built from the configuration and the command line.
#[derive(Debug, Clone)]
pub struct RefreshOptions {
    pub plan: RefreshPlan,
    /// Re-hash every stored file and shard, not a rotating slice.
    pub verify_all: bool,
    pub fetch: FetchOptions,
    /// Videos decoded at once by the shard stage [default: the number of cores].
    pub jobs: Option<usize>,
    /// Set (by a signal handler) to stop cleanly.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Which turn of the verification rotation this run takes (the number of earlier
    /// refreshes); [`turn`] reads it from the catalog.
    pub turn: u64,
}

/// A failure that stops the refresh (per-file and per-dataset problems are recorded in
/// the report instead).
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("fetch: {0}")]
    Fetch(#[from] fetch::FetchError),
    #[error("{0}")]
    Invalid(String),
}

/// What happened to one dataset.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DatasetOutcome {
    pub name: String,
    /// `unchanged` (no manifest was read), `ingested`, or `failed`.
    pub ingest: String,
    pub items_new: u64,
    pub items_updated: u64,
    pub items_restored: u64,
    pub items_removed: u64,
    pub rows_rejected: u64,
    pub active_items: u64,
    /// Why the dataset's ingest failed (its other stages still ran on what it had).
    pub error: Option<String>,
    pub shard: Vec<RecipeOutcome>,
}

/// The shard stage's work for one recipe of a dataset.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecipeOutcome {
    pub recipe: String,
    pub recipe_id: String,
    pub videos_sharded: u64,
    pub samples: u64,
    pub shards_written: u64,
    #[serde(rename = "written_bytes")]
    pub bytes_written: u64,
    pub corrupt: u64,
    pub failed: u64,
    pub not_started: u64,
    pub error: Option<String>,
}

/// The shard check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShardCheck {
    pub checked: u64,
    #[serde(rename = "checked_bytes")]
    pub bytes: u64,
    /// Shards whose bytes no longer match their recorded SHA-256 (or that are gone).
    pub damaged: u64,
    /// Damaged shards written again from their videos.
    pub rebuilt: u64,
    /// `shard <id> <path>: what happened`, for each damaged shard.
    pub details: Vec<String>,
    /// Shards selected but not read because the time budget ended first.
    pub not_checked: u64,
}

/// Seconds spent in each stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageTime {
    pub stage: &'static str,
    #[serde(rename = "duration_s")]
    pub seconds: f64,
}

/// What a refresh did; `runs/<run-id>.json` holds it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RefreshReport {
    pub started_at: String,
    #[serde(rename = "duration_s")]
    pub seconds: f64,
    /// `time budget` or `cancelled` when the run stopped early.
    pub stopped: Option<String>,
    /// Stages not run because the run stopped early.
    pub skipped: Vec<&'static str>,
    pub datasets: Vec<DatasetOutcome>,
    pub items_new: u64,
    pub items_updated: u64,
    pub items_removed: u64,
    /// The fetch report of each dataset (as `[{"dataset", ...report}]`).
    #[serde(serialize_with = "pmv_core::report::keyed_list")]
    pub fetch: BTreeMap<String, FetchReport>,
    pub files_verified: u64,
    pub files_failed: u64,
    #[serde(rename = "fetched_bytes")]
    pub bytes_fetched: u64,
    pub failures: BTreeMap<String, u64>,
    pub rehash: Option<RehashReport>,
    pub shard_check: ShardCheck,
    pub shards_written: u64,
    pub samples_written: u64,
    pub stages: Vec<StageTime>,
    /// Failures counted against the thresholds: files that failed in this run, videos
    /// that did not decode, datasets whose ingest failed, shards that could not be
    /// rebuilt.
    pub failure_count: u64,
    /// Files attempted in this run (verified + failed).
    pub attempted: u64,
    /// True when `failure_count` passed `max_failures` or `max_failure_rate`.
    pub failed_threshold: bool,
}

impl RefreshReport {
    /// One line for people who were asleep.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "refresh: {} datasets; items +{} new, {} updated, -{} removed; fetched {} files ({})",
            self.datasets.len(),
            self.items_new,
            self.items_updated,
            self.items_removed,
            self.files_verified,
            pmv_core::util::human_bytes(self.bytes_fetched),
        );
        if self.files_failed > 0 {
            let top: Vec<String> = self
                .failures
                .iter()
                .map(|(class, n)| format!("{n} {class}"))
                .collect();
            s.push_str(&format!(
                ", {} failed ({})",
                self.files_failed,
                top.join(", ")
            ));
        }
        s.push_str(&format!(
            "; {} shards written ({} samples)",
            self.shards_written, self.samples_written
        ));
        let videos = self.rehash.as_ref().map_or(0, |r| r.checked);
        let changed = self.rehash.as_ref().map_or(0, |r| r.changed + r.missing);
        s.push_str(&format!(
            "; verified {videos} files ({changed} changed) and {} shards ({} damaged, {} rebuilt)",
            self.shard_check.checked, self.shard_check.damaged, self.shard_check.rebuilt
        ));
        if let Some(why) = &self.stopped {
            s.push_str(&format!("; stopped early: {why}"));
        }
        s.push_str(&format!("; {:.1} s", self.seconds));
        s
    }
}

/// The number of refreshes recorded before this one: the turn of the verification
/// rotation.
pub fn turn(catalog: &Catalog) -> Result<u64, CatalogError> {
    catalog.finished_refreshes()
}

/// Why the run should not start more work, if it should not.
fn stop_reason(opts: &RefreshOptions, deadline: Option<Instant>) -> Option<&'static str> {
    if opts
        .cancel
        .as_ref()
        .is_some_and(|c| c.load(Ordering::SeqCst))
    {
        Some("cancelled")
    } else if deadline.is_some_and(|d| Instant::now() >= d) {
        Some("time budget")
    } else {
        None
    }
}

/// The recipe a configuration entry means: given in full, or a name the catalog stores
/// (by id or by name, from an earlier `pmv-data shard`).
pub fn find_recipe(catalog: &Catalog, choice: &RecipeChoice) -> Result<FrameRecipe, RefreshError> {
    let name = match choice {
        RecipeChoice::Given(r) => return Ok(r.clone()),
        RecipeChoice::Named(n) => n,
    };
    let by_name = catalog.recipe_id_named(name)?;
    let id = by_name.unwrap_or_else(|| name.to_owned());
    match stored_recipe(catalog, &id) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(RefreshError::Invalid(format!(
            "recipe {name:?} is neither built in (`pmv-data shard --list-recipes`) nor \
             in the catalog; give it inline as {{ frames = .., stride = .., size = \"HxW\" }}"
        ))),
        Err(e) => Err(RefreshError::Invalid(e.to_string())),
    }
}

/// Runs one refresh. The caller holds the root lock and records the run.
pub fn run(
    root: &DataRoot,
    catalog: &mut Catalog,
    opts: &RefreshOptions,
    reporter: &dyn Reporter,
) -> Result<RefreshReport, RefreshError> {
    let started = Instant::now();
    let deadline = opts.plan.max_duration.map(|d| started + d);
    let mut report = RefreshReport {
        started_at: rfc3339(now_unix()),
        ..Default::default()
    };
    let recipes = find_recipes(catalog, opts)?;
    let stages = Stages {
        root,
        opts,
        deadline,
        reporter,
    };

    // 1. Ingest.
    stages.ingest(catalog, &mut report)?;
    let present: Vec<bool> = opts
        .plan
        .datasets
        .iter()
        .map(|d| catalog.dataset(&d.name).map(|x| x.is_some()))
        .collect::<Result<_, _>>()?;

    // 2. Re-hash stored files.
    let select = if opts.verify_all {
        RehashSelect::All
    } else {
        RehashSelect::fraction(opts.plan.verify_fraction, opts.turn)
    };
    let verify_files = opts.verify_all || opts.plan.verify_fraction > 0.0;
    if let Some(why) = stop_reason(opts, deadline) {
        report.stopped = Some(why.into());
    } else if verify_files {
        stages.verify_files(catalog, &present, select, &mut report)?;
    }

    // 3. Fetch, within the budgets shared by every dataset.
    stages.fetch(catalog, &present, &mut report)?;

    // 4. Check shards.
    if report.stopped.is_none() && verify_files {
        if let Some(why) = stop_reason(opts, deadline) {
            report.stopped = Some(why.into());
        } else {
            let t = Instant::now();
            let names: Vec<&str> = opts.plan.datasets.iter().map(|d| d.name.as_str()).collect();
            report.shard_check =
                check_shards(root, catalog, &names, select, deadline, opts, reporter)?;
            if report.shard_check.not_checked > 0 {
                report.stopped = Some("time budget".into());
            }
            report.failure_count += report.shard_check.damaged - report.shard_check.rebuilt;
            report.stages.push(stage_time("verify shards", t));
        }
    }

    // 5. Shard.
    if report.stopped.is_none() {
        stages.shard(catalog, &present, &recipes, &mut report);
    }
    for stage in ["verify files", "fetch", "verify shards", "shard"] {
        let planned = match stage {
            "verify files" | "verify shards" => verify_files,
            _ => true,
        };
        if planned && !report.stages.iter().any(|s| s.stage == stage) {
            report.skipped.push(stage);
        }
    }

    let plan = &opts.plan;
    report.failed_threshold = plan.max_failures.is_some_and(|m| report.failure_count > m)
        || plan.max_failure_rate.is_some_and(|rate| {
            report.attempted > 0 && report.files_failed as f64 / report.attempted as f64 > rate
        });
    report.seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    Ok(report)
}

/// Every dataset's recipes. Every recipe must exist before anything is done: a typo
/// stops the run at once.
fn find_recipes(
    catalog: &Catalog,
    opts: &RefreshOptions,
) -> Result<Vec<Vec<FrameRecipe>>, RefreshError> {
    let mut recipes: Vec<Vec<FrameRecipe>> = Vec::with_capacity(opts.plan.datasets.len());
    for d in &opts.plan.datasets {
        let mut list = vec![];
        for name in &d.recipes {
            list.push(
                find_recipe(catalog, name)
                    .map_err(|e| RefreshError::Invalid(format!("dataset {}: {e}", d.name)))?,
            );
        }
        recipes.push(list);
    }
    Ok(recipes)
}

/// What every stage of one refresh shares.
struct Stages<'a> {
    root: &'a DataRoot,
    opts: &'a RefreshOptions,
    deadline: Option<Instant>,
    reporter: &'a dyn Reporter,
}

impl Stages<'_> {
    /// Ingests every dataset's manifests.
    fn ingest(
        &self,
        catalog: &mut Catalog,
        report: &mut RefreshReport,
    ) -> Result<(), RefreshError> {
        let t = Instant::now();
        for d in &self.opts.plan.datasets {
            report.datasets.push(ingest_dataset(
                self.root,
                catalog,
                d,
                &self.opts.fetch.local_roots,
                self.reporter,
            )?);
        }
        for d in &report.datasets {
            report.items_new += d.items_new + d.items_restored;
            report.items_updated += d.items_updated;
            report.items_removed += d.items_removed;
            if d.error.is_some() {
                report.failure_count += 1;
            }
        }
        report.stages.push(stage_time("ingest", t));
        Ok(())
    }

    /// Re-hashes the selected stored files of the datasets `present`.
    fn verify_files(
        &self,
        catalog: &mut Catalog,
        present: &[bool],
        select: RehashSelect,
        report: &mut RefreshReport,
    ) -> Result<(), RefreshError> {
        let t = Instant::now();
        let mut total = RehashReport::default();
        for (d, _) in self
            .opts
            .plan
            .datasets
            .iter()
            .zip(present)
            .filter(|(_, p)| **p)
        {
            let r = fetch::rehash(
                self.root,
                catalog,
                &RehashOptions {
                    dataset: Some(d.name.clone()),
                    select,
                    deadline: self.deadline,
                },
                self.reporter,
            )?;
            total.checked += r.checked;
            total.bytes += r.bytes;
            total.changed += r.changed;
            total.missing += r.missing;
            total.not_checked += r.not_checked;
            total.details.extend(r.details);
        }
        if total.not_checked > 0 {
            report.stopped = Some("time budget".into());
        }
        total.duration_s = t.elapsed().as_secs_f64();
        report.rehash = Some(total);
        report.stages.push(stage_time("verify files", t));
        Ok(())
    }

    /// Fetches for the datasets `present`, within the budgets shared by every dataset.
    fn fetch(
        &self,
        catalog: &mut Catalog,
        present: &[bool],
        report: &mut RefreshReport,
    ) -> Result<(), RefreshError> {
        let opts = self.opts;
        let mut items_left = opts.plan.max_items;
        let mut bytes_left = opts.plan.max_bytes;
        let t = Instant::now();
        for (d, _) in opts.plan.datasets.iter().zip(present).filter(|(_, p)| **p) {
            if let Some(why) = stop_reason(opts, self.deadline) {
                report.stopped = Some(why.into());
                break;
            }
            if items_left == Some(0) || bytes_left == Some(0) {
                break;
            }
            let mut fo = opts.fetch.clone();
            fo.dataset = Some(d.name.clone());
            fo.limit = items_left;
            fo.max_bytes = bytes_left;
            fo.deadline = self.deadline;
            fo.cancel = opts.cancel.clone();
            let r = fetch::run(self.root, catalog, &fo, self.reporter)?;
            report.files_verified += r.verified;
            report.files_failed += r.failed();
            report.bytes_fetched += r.bytes;
            for (class, n) in &r.failures {
                *report.failures.entry(class.clone()).or_default() += n;
            }
            items_left = items_left.map(|n| n.saturating_sub(r.verified + r.failed()));
            bytes_left = bytes_left.map(|n| n.saturating_sub(r.bytes));
            if let Some(why) = &r.stopped
                && why != "byte budget"
            {
                report.stopped = Some(if why == "cancelled" {
                    "cancelled".into()
                } else {
                    "time budget".into()
                });
            }
            report.fetch.insert(d.name.clone(), r);
        }
        report.attempted = report.files_verified + report.files_failed;
        report.failure_count += report.files_failed;
        report.stages.push(stage_time("fetch", t));
        Ok(())
    }

    /// Shards the datasets `present` with each of their recipes.
    fn shard(
        &self,
        catalog: &mut Catalog,
        present: &[bool],
        recipes: &[Vec<FrameRecipe>],
        report: &mut RefreshReport,
    ) {
        let (opts, deadline) = (self.opts, self.deadline);
        let t = Instant::now();
        'datasets: for (i, d) in opts.plan.datasets.iter().enumerate() {
            if !present[i] {
                continue;
            }
            for r in &recipes[i] {
                if let Some(why) = stop_reason(opts, deadline) {
                    report.stopped = Some(why.into());
                    break 'datasets;
                }
                let outcome = shard_dataset(
                    self.root,
                    catalog,
                    &d.name,
                    r,
                    deadline,
                    opts,
                    self.reporter,
                );
                report.shards_written += outcome.shards_written;
                report.samples_written += outcome.samples;
                report.failure_count += outcome.corrupt + outcome.failed;
                if outcome.error.is_some() {
                    report.failure_count += 1;
                }
                if outcome.not_started > 0 && report.stopped.is_none() {
                    report.stopped = Some(match stop_reason(opts, deadline) {
                        Some(why) => why.into(),
                        None => "time budget".into(),
                    });
                }
                report.datasets[i].shard.push(outcome);
            }
        }
        report.stages.push(stage_time("shard", t));
    }
}

fn stage_time(stage: &'static str, since: Instant) -> StageTime {
    StageTime {
        stage,
        seconds: (since.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
    }
}

fn ingest_dataset(
    root: &DataRoot,
    catalog: &mut Catalog,
    d: &DatasetPlan,
    local_roots: &[std::path::PathBuf],
    reporter: &dyn Reporter,
) -> Result<DatasetOutcome, RefreshError> {
    let mut out = DatasetOutcome {
        name: d.name.clone(),
        ..Default::default()
    };
    let opts = IngestOptions {
        dataset: d.name.clone(),
        format: d.format,
        inputs: d.manifests.clone(),
        split: d.split.clone(),
        classes_file: d.classes.clone(),
        links_file: d.links.clone(),
        url_template: d.url_template.clone(),
        ratios: d.split_ratios.clone().unwrap_or_default(),
        multi_label: d.multi_label,
        base_dir: d.base_dir.clone(),
        local_roots: local_roots.to_vec(),
        strict: false,
        force: false,
        tmp_dir: root.tmp_dir(),
        memory_budget: DEFAULT_MEMORY_BUDGET,
    };
    match ingest::ingest(catalog, &opts, reporter, &mut |_| {}) {
        Ok(r) => {
            out.ingest = if r.unchanged { "unchanged" } else { "ingested" }.into();
            out.items_new = r.items.new;
            out.items_updated = r.items.updated;
            out.items_restored = r.items.restored;
            out.items_removed = r.items.removed;
            out.rows_rejected = r.rejected;
            out.active_items = r.active_items;
        }
        // A catalog failure stops everything; a dataset whose manifests cannot be read
        // is reported and the others go on.
        Err(ingest::IngestError::Catalog(e)) => return Err(e.into()),
        Err(e) => {
            tracing::error!(dataset = %d.name, "ingest failed: {e}");
            out.ingest = "failed".into();
            out.error = Some(e.to_string());
            if let Some(ds) = catalog.dataset(&d.name)? {
                out.active_items = catalog.item_counts(ds.id)?.0;
            }
        }
    }
    Ok(out)
}

fn shard_dataset(
    root: &DataRoot,
    catalog: &mut Catalog,
    dataset: &str,
    recipe: &FrameRecipe,
    deadline: Option<Instant>,
    opts: &RefreshOptions,
    reporter: &dyn Reporter,
) -> RecipeOutcome {
    let mut out = RecipeOutcome {
        recipe: recipe.name.clone(),
        recipe_id: recipe.id(),
        ..Default::default()
    };
    let so = ShardOptions {
        dataset: dataset.to_owned(),
        splits: vec![],
        recipe: recipe.clone(),
        samples_per_shard: None,
        jobs: opts.jobs,
        limit: None,
        deadline,
        cancel: opts.cancel.clone(),
    };
    match crate::sharding::run(root, catalog, &so, reporter) {
        Ok(r) => {
            out.videos_sharded = r.videos_sharded as u64;
            out.samples = r.samples as u64;
            out.shards_written = r.shards.len() as u64;
            out.bytes_written = r.bytes_written;
            out.corrupt = r.corrupt.len() as u64;
            out.failed = r.failed.len() as u64;
            out.not_started = r.not_started as u64;
        }
        Err(e) => {
            tracing::error!(dataset, recipe = %recipe.name, "shard failed: {e}");
            out.error = Some(e.to_string());
        }
    }
    out
}

/// Re-hashes the selected live shards of `datasets`; writes damaged ones again.
fn check_shards(
    root: &DataRoot,
    catalog: &mut Catalog,
    datasets: &[&str],
    select: RehashSelect,
    deadline: Option<Instant>,
    opts: &RefreshOptions,
    reporter: &dyn Reporter,
) -> Result<ShardCheck, RefreshError> {
    let (parts, index) = match select {
        RehashSelect::All => (1i64, 0i64),
        RehashSelect::Slice { parts, index } => (parts.max(1) as i64, index as i64),
    };
    let mut rows: Vec<(i64, String, String)> = vec![];
    for name in datasets {
        let Some(ds) = catalog.dataset(name)? else {
            continue;
        };
        let found = catalog.live_shards_slice(ds.id, parts, index)?;
        rows.extend(found.into_iter().map(|s| (s.id, s.path, s.sha256)));
    }
    let mut out = ShardCheck::default();
    let selected = rows.len() as u64;
    for (id, rel, sha) in rows {
        if let Some(why) = stop_reason(opts, deadline) {
            if why == "time budget" {
                out.not_checked = selected - out.checked;
            }
            break;
        }
        let path = root.path().join(&rel);
        let problem = match sha256_file(&path) {
            Ok((actual, len)) => {
                out.bytes += len;
                (actual != sha).then(|| format!("SHA-256 is {actual}, recorded {sha}"))
            }
            Err(e) => Some(format!("cannot read it: {e}")),
        };
        out.checked += 1;
        let Some(problem) = problem else { continue };
        out.damaged += 1;
        tracing::warn!(shard = id, path = %rel, "damaged shard: {problem}");
        match rebuild_shard(root, catalog, id, opts.jobs, reporter) {
            Ok(r) => {
                out.rebuilt += 1;
                out.details.push(format!(
                    "shard {id} {rel}: {problem}; rebuilt as {} (shard {})",
                    r.new.path, r.new.id
                ));
            }
            Err(e) => out
                .details
                .push(format!("shard {id} {rel}: {problem}; not rebuilt: {e}")),
        }
    }
    Ok(out)
}
