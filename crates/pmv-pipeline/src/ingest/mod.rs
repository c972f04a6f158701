//! Ingest: merge manifests into the catalog, doing only the work that changed.
//!
//! Owns how rows become items: one item per (dataset, id); labels and splits are the
//! union over the manifests that list the item; other fields (text, sources, expected
//! hash) come from the latest rows. It detects conflicts (one id with two labels in a
//! single-label set, an id in train and in an evaluation split), skips manifests whose
//! content and options are unchanged, and marks items that vanished from every manifest
//! `removed`. It never deletes an item, a file or a stored byte.
//!
//! Rows go through an external sort by id (`sort.rs`) together with markers for what
//! the catalog already holds, and are merged in one sorted pass: memory stays flat
//! however long the manifest. All writes happen in one transaction after reading, so
//! an interrupted ingest leaves the catalog as it was.

mod merge;
mod sort;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::manifest::classes::{self, ClassFileError};
use crate::manifest::{
    self, ClassTable, Format, ItemContent, Links, ReadError, ReadOptions, Rejection, Row, Split,
    SplitRatios, SplitRule, UrlTemplate,
};
use crate::source::local::LocalRoots;
use merge::{Merger, encode_row};
use pmv_catalog::{Catalog, CatalogError, Dataset, IngestTx, ManifestTotals};
use pmv_core::report::{Reporter, Unit};
use pmv_core::util::{now_unix, sha256_file};
use sort::{Kind, Sorted, Sorter};

/// Rejections kept in the report (all are passed to the caller's callback).
pub const MAX_REPORTED_REJECTIONS: usize = 1000;

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub dataset: String,
    pub format: Format,
    pub inputs: Vec<PathBuf>,
    /// `--split`: the split of rows that do not name one.
    pub split: Option<Split>,
    pub classes_file: Option<PathBuf>,
    pub links_file: Option<PathBuf>,
    pub url_template: Option<UrlTemplate>,
    pub ratios: SplitRatios,
    /// `Some` to set (new dataset) or check (existing dataset) multi-labelness.
    pub multi_label: Option<bool>,
    /// Relative local paths in manifests are taken from here (default: each
    /// manifest's own directory). Local files may lie inside it.
    pub base_dir: Option<PathBuf>,
    /// Further folders local files may lie in (the configuration's `local_roots`),
    /// besides each manifest's own folder tree and `base_dir`.
    pub local_roots: Vec<PathBuf>,
    /// Any rejected row rejects the whole ingest, which then writes nothing.
    pub strict: bool,
    /// Read manifests even when their content and options are unchanged.
    pub force: bool,
    /// Where the sort may spill (inside the data root).
    pub tmp_dir: PathBuf,
    /// Bytes of rows held in memory before the sort spills to `tmp_dir`.
    pub memory_budget: usize,
}

/// Default for [`IngestOptions::memory_budget`].
pub const DEFAULT_MEMORY_BUDGET: usize = 48 << 20;

/// Writing the sort's run files failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write temporary sort data under {dir}: {source}")]
pub struct SpillError {
    pub dir: PathBuf,
    #[source]
    pub source: std::io::Error,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Classes(#[from] ClassFileError),
    #[error(transparent)]
    Read(#[from] ReadError<SpillError>),
    #[error(transparent)]
    Spill(#[from] SpillError),
    #[error("{0}")]
    Invalid(String),
}

impl From<ReadError<std::convert::Infallible>> for IngestError {
    fn from(e: ReadError<std::convert::Infallible>) -> Self {
        IngestError::Read(e.widen())
    }
}

/// What happened to one manifest input.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestReport {
    pub path: String,
    /// `read`, or `unchanged` (same content and options as its last ingest).
    pub status: &'static str,
    pub split: Option<String>,
    pub sha256: String,
    #[serde(rename = "size_bytes")]
    pub bytes: u64,
    pub rows: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Why the whole manifest was rejected (status `rejected`).
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ItemCounts {
    /// Items seen for the first time.
    pub new: u64,
    /// Items whose labels, text, sources or expected hash changed.
    pub updated: u64,
    /// Items listed again after being removed.
    pub restored: u64,
    /// Items no manifest lists any more (their files are kept).
    pub removed: u64,
    /// Items listed again without any change.
    pub unchanged: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    pub dataset: String,
    pub format: Format,
    pub multi_label: bool,
    pub created_dataset: bool,
    /// True when every manifest was unchanged: nothing was read or written.
    pub unchanged: bool,
    /// False when nothing was stored (unchanged, or `--strict` with rejections).
    pub written: bool,
    pub manifests: Vec<ManifestReport>,
    pub rows: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Rows naming an item already listed by the same manifest (merged into it).
    pub repeated_rows: u64,
    pub items: ItemCounts,
    /// Active items in the dataset after the ingest.
    pub active_items: u64,
    /// Active items without any video source after the ingest.
    pub no_source: u64,
    pub classes: u64,
    #[serde(serialize_with = "class_list")]
    pub classes_added: Vec<(u32, String)>,
    /// `(id, old name, new name)`.
    #[serde(serialize_with = "renamed_class_list")]
    pub classes_renamed: Vec<(u32, String, String)>,
    pub links: Option<LinksReport>,
    pub rejections: Vec<Rejection>,
    #[serde(rename = "duration_s")]
    pub seconds: f64,
}

/// Classes as `[{"id", "name"}]`.
fn class_list<S: serde::Serializer>(v: &[(u32, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        v.iter()
            .map(|(id, name)| serde_json::json!({ "id": id, "name": name })),
    )
}

/// Renamed classes as `[{"id", "old_name", "name"}]`.
fn renamed_class_list<S: serde::Serializer>(
    v: &[(u32, String, String)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        v.iter()
            .map(|(id, old, name)| serde_json::json!({ "id": id, "old_name": old, "name": name })),
    )
}

#[derive(Debug, Clone, Serialize)]
pub struct LinksReport {
    pub path: String,
    pub rows: u64,
    pub ids: u64,
    pub rejected: u64,
}

/// Checks that every file and folder the options name is there: the manifests, the
/// class and links files, the base directory. The command calls it before it creates
/// a data root, so a mistyped name leaves nothing behind.
pub fn check_inputs(opts: &IngestOptions) -> Result<(), IngestError> {
    if opts.inputs.is_empty() {
        return Err(IngestError::Invalid("no manifest given".into()));
    }
    let named = opts
        .inputs
        .iter()
        .chain(&opts.classes_file)
        .chain(&opts.links_file);
    for path in named {
        fs_err::metadata(path).map_err(|source| ReadError::<SpillError>::Io {
            path: path.clone(),
            source,
        })?;
    }
    if let Some(b) = &opts.base_dir
        && !b.is_dir()
    {
        return Err(IngestError::Invalid(format!(
            "base directory {} is not a directory",
            b.display()
        )));
    }
    Ok(())
}

/// Bytes of a file read to tell a class-name list from a split list: the upstream
/// `class_name_mapping.csv` has 13 KB, a split list gives itself away at its first row.
const CLASS_LIST_PEEK: u64 = 1 << 20;

/// PMV-400's class-name list given among the manifests (`manifests/pmv400/*.csv` names
/// it beside the split lists) is the dataset's class file, as if given with
/// `--classes`, not a manifest whose every row would be rejected. Returns the file
/// taken, if any. Two class files (two such lists, or one and `--classes`) are an
/// error naming both.
pub fn take_class_name_list(opts: &mut IngestOptions) -> Result<Option<PathBuf>, IngestError> {
    use std::io::Read;
    if opts.format != Format::Pmv400 {
        return Ok(None);
    }
    let mut taken = None;
    let mut kept = Vec::with_capacity(opts.inputs.len());
    for path in std::mem::take(&mut opts.inputs) {
        let mut text = String::new();
        let read = fs_err::File::open(&path)
            .and_then(|f| f.take(CLASS_LIST_PEEK + 1).read_to_string(&mut text));
        // Anything unreadable or too long is left to the manifest reader to report.
        let is_list = read.is_ok()
            && (text.len() as u64) <= CLASS_LIST_PEEK
            && crate::manifest::is_class_name_list(&text);
        if !is_list {
            kept.push(path);
            continue;
        }
        if let Some(other) = taken.as_ref().or(opts.classes_file.as_ref()) {
            return Err(IngestError::Invalid(format!(
                "{} is a class-name list and so is {}: give one",
                path.display(),
                Path::new(other).display()
            )));
        }
        taken = Some(path);
    }
    opts.inputs = kept;
    if let Some(t) = &taken {
        opts.classes_file = Some(t.clone());
    }
    Ok(taken)
}

/// Runs one ingest. `on_reject` sees every rejected row as it is found (the report
/// keeps the first [`MAX_REPORTED_REJECTIONS`]).
pub fn ingest(
    catalog: &mut Catalog,
    opts: &IngestOptions,
    reporter: &dyn Reporter,
    on_reject: &mut dyn FnMut(&Rejection),
) -> Result<IngestReport, IngestError> {
    let started = Instant::now();
    if opts.inputs.is_empty() {
        return Err(IngestError::Invalid("no manifest given".into()));
    }
    let existing = catalog.dataset(&opts.dataset)?;
    check_dataset(existing.as_ref(), opts)?;
    let multi_label = existing
        .as_ref()
        .map(|d| d.multi_label)
        .or(opts.multi_label)
        .unwrap_or_else(|| opts.format.multi_label_default());
    let (stored_classes, plan, mut table) = taxonomy(catalog, existing.as_ref(), opts)?;

    let links = opts
        .links_file
        .as_deref()
        .map(manifest::read_links_file)
        .transpose()?;
    let mut run = Run {
        opts,
        started,
        multi_label,
        links: links.as_ref(),
        inputs: Vec::with_capacity(opts.inputs.len()),
        reports: vec![],
        rejections: Rejections::new(on_reject),
        totals: (0, 0, 0),
    };
    if let Some(l) = &links {
        for r in &l.rejected {
            run.rejections.push(r.clone());
        }
    }

    let base_dir = real_base_dir(opts)?;
    let shared = Shared {
        base_dir: base_dir.as_deref(),
        config_roots: LocalRoots::new(&opts.local_roots),
        multi_label,
        table: &table,
        links: links.as_ref(),
    };

    // Which manifests changed? A manifest is unchanged when its bytes and every option
    // that shapes its items are as at its last ingest.
    let dataset_id = existing.as_ref().map(|d| d.id);
    for input in &opts.inputs {
        run.inputs
            .push(prepare_input(catalog, dataset_id, input, opts, &shared)?);
    }
    run.reports = run.inputs.iter().map(Input::report).collect();

    // What the catalog holds for the manifests about to be read: each member becomes a
    // marker in the sort, so an item that vanished from its manifest shows up in the
    // same sorted pass as the rows.
    let mut sorter = Sorter::new(&opts.tmp_dir, opts.memory_budget);
    if let Some(id) = dataset_id {
        for (idx, input) in run.inputs.iter().enumerate() {
            if !input.unchanged {
                merge::push_members(
                    catalog,
                    id,
                    &input.key,
                    idx as u32,
                    &mut sorter,
                    &opts.tmp_dir,
                )?;
            }
        }
    }

    run.read_all(base_dir.as_deref(), &mut sorter, &mut table, reporter)?;
    tracing::debug!(elapsed = ?started.elapsed(), records = sorter.len(), spills = sorter.spills(), "manifests read");

    // Nothing to write: every manifest is unchanged (then nothing was even read; a class
    // file that changes the taxonomy changes every manifest's signature) or was rejected
    // as a whole.
    if run
        .inputs
        .iter()
        .all(|i| i.unchanged || i.unusable.is_some())
    {
        let active = active_items(catalog, dataset_id)?;
        return Ok(run.unwritten_report(active, stored_classes.len() as u64));
    }

    let sorted = sorter.finish().map_err(|source| run.spill(source))?;
    // New classes (open tables grow while reading) and corrected names.
    let added: Vec<(u32, String)> = plan
        .added
        .iter()
        .cloned()
        .chain(
            table
                .added()
                .iter()
                .map(|&id| (id, table.name(id).unwrap_or_default().to_owned())),
        )
        .collect();
    let w = run.write(catalog, dataset_id, sorted, &added, &plan.renamed)?;
    let after = active_items(
        catalog,
        Some(w.dataset_id).filter(|_| w.written || !w.created_dataset),
    )?;
    let classes_total = if w.written {
        catalog.classes(w.dataset_id)?.len() as u64
    } else {
        stored_classes.len() as u64
    };
    Ok(run.report(w, after, classes_total, added, plan.renamed))
}

/// Classes as the catalog keeps them: `(id, name)`.
type Classes = Vec<(u32, String)>;

/// The taxonomy: a class file, else the format's built-in one, else what the dataset
/// has (growing as labels appear, for formats without a fixed taxonomy). Returns the
/// stored classes, how the given ones combine with them and the table to read with.
fn taxonomy(
    catalog: &Catalog,
    existing: Option<&Dataset>,
    opts: &IngestOptions,
) -> Result<(Classes, ClassPlan, ClassTable), IngestError> {
    let stored_classes = match existing {
        Some(d) => catalog.classes(d.id)?,
        None => vec![],
    };
    let given = match &opts.classes_file {
        Some(p) => Some(classes::read_classes_file(p)?),
        None if stored_classes.is_empty() => classes::builtin(opts.format),
        None => None,
    };
    let plan = plan_classes(&stored_classes, given.as_deref())?;
    let table = match given {
        Some(_) => ClassTable::fixed(plan.table.clone()),
        None if opts.format == Format::Pmv400 || opts.format == Format::Xinpianchang => {
            ClassTable::fixed(plan.table.clone())
        }
        None => ClassTable::open(plan.table.clone()),
    };
    Ok((stored_classes, plan, table))
}

/// `--base-dir` as a real path. Local files may be read from each manifest's own
/// folder tree, the base directory and the configured folders, all as real paths.
fn real_base_dir(opts: &IngestOptions) -> Result<Option<PathBuf>, IngestError> {
    opts.base_dir
        .as_deref()
        .map(|b| match fs_err::canonicalize(b) {
            Ok(real) if real.is_dir() => Ok(real),
            Ok(_) => Err(IngestError::Invalid(format!(
                "base directory {} is not a directory",
                b.display()
            ))),
            Err(e) => Err(IngestError::Invalid(format!("base directory: {e}"))),
        })
        .transpose()
}

/// One ingest under way: its options and what it has found so far.
struct Run<'a, 'r> {
    opts: &'a IngestOptions,
    started: Instant,
    multi_label: bool,
    links: Option<&'a Links>,
    inputs: Vec<Input>,
    /// One per input, in the same order.
    reports: Vec<ManifestReport>,
    rejections: Rejections<'r>,
    /// (rows, accepted, rejected) of the manifests read.
    totals: (u64, u64, u64),
}

/// What the write transaction did.
struct Written {
    dataset_id: i64,
    created_dataset: bool,
    /// False when the transaction was rolled back (`--strict` with rejections).
    written: bool,
    outcome: merge::Outcome,
}

impl Run<'_, '_> {
    fn spill(&self, source: std::io::Error) -> SpillError {
        SpillError {
            dir: self.opts.tmp_dir.clone(),
            source,
        }
    }

    /// Reads every changed manifest into the sort.
    fn read_all(
        &mut self,
        base_dir: Option<&Path>,
        sorter: &mut Sorter,
        table: &mut ClassTable,
        reporter: &dyn Reporter,
    ) -> Result<(), IngestError> {
        let opts = self.opts;
        let spill = |source| SpillError {
            dir: opts.tmp_dir.clone(),
            source,
        };
        for (idx, input) in self.inputs.iter_mut().enumerate() {
            if input.unchanged {
                continue;
            }
            let read_opts = ReadOptions {
                format: opts.format,
                split: SplitRule {
                    fixed: input.split.clone(),
                    ratios: opts.ratios.clone(),
                },
                multi_label: self.multi_label,
                base_dir: base_dir
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| input.tree.clone()),
                roots: input.roots.clone(),
            };
            reporter.begin(&input.path.display().to_string(), input.size, Unit::Bytes);
            let rejections = &mut self.rejections;
            let mut sink = |row: Result<Row, Rejection>| -> Result<(), SpillError> {
                match row {
                    Ok(row) => sorter
                        .push(row.id.as_str(), idx as u32, Kind::Row, encode_row(&row))
                        .map_err(spill)?,
                    Err(rej) => {
                        if let Some(id) = &rej.id {
                            sorter
                                .push(id, idx as u32, Kind::Rejected, vec![])
                                .map_err(spill)?;
                        }
                        rejections.push(rej);
                    }
                }
                Ok(())
            };
            // The real path: relative paths and symlinks resolved, so that the folders of
            // the files beside a tree and every stored path are absolute.
            let read = manifest::read(&input.real, &read_opts, table, &mut sink, &|n| {
                reporter.advance(n)
            });
            reporter.end();
            let summary = match read {
                Ok(s) => s,
                // An unusable manifest (empty, changed while read) is rejected as a whole:
                // nothing it says is stored, and none of its items is taken for removed.
                Err(ReadError::Unusable { path, reason }) => {
                    self.rejections.push(Rejection {
                        file: path,
                        line: 0,
                        id: None,
                        reason: reason.clone(),
                    });
                    input.unusable = Some(reason);
                    self.reports[idx] = input.report();
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            // A directory's hash (or a new manifest's) is known only now.
            if input.signature.is_none() {
                let sig = signature_of(&summary.sha256, &input.options_sig);
                if !opts.force && input.stored_signature.as_deref() == Some(sig.as_str()) {
                    // Unchanged after all: the merge skips this input's records.
                    input.unchanged = true;
                    self.reports[idx] = input.report();
                    continue;
                }
                input.signature = Some(sig);
            }
            self.totals.0 += summary.rows;
            self.totals.1 += summary.accepted;
            self.totals.2 += summary.rejected;
            input.summary = Some(summary);
        }
        Ok(())
    }

    /// The one write transaction: the dataset, the manifests read, the classes, the
    /// merge of the sorted records, the manifests' totals; committed unless `--strict`
    /// meets a rejection.
    fn write(
        &mut self,
        catalog: &mut Catalog,
        dataset_id: Option<i64>,
        sorted: Sorted,
        added: &[(u32, String)],
        renamed: &[(u32, String, String)],
    ) -> Result<Written, IngestError> {
        let opts = self.opts;
        let now = now_unix();
        let catalog_path = catalog.path().to_owned();
        let journal = catalog.journal_mode();
        let tx = catalog.begin_ingest()?;
        let created_dataset = dataset_id.is_none();
        let dataset_id = match dataset_id {
            Some(id) => {
                tx.touch_dataset(id, now)?;
                id
            }
            None => tx.create_dataset(&opts.dataset, opts.format, self.multi_label, now)?,
        };
        let mut manifest_ids: HashMap<u32, i64> = HashMap::new();
        for (idx, input) in self.inputs.iter().enumerate() {
            if !input.unchanged && input.unusable.is_none() {
                let id = tx.upsert_manifest(dataset_id, &input.key, now)?;
                tx.set_manifest_roots(id, input.own_roots.dirs())?;
                manifest_ids.insert(idx as u32, id);
            }
        }
        tx.write_classes(dataset_id, added, renamed)?;

        let paths: HashMap<u32, String> = self
            .inputs
            .iter()
            .enumerate()
            .map(|(i, input)| (i as u32, input.real.display().to_string()))
            .collect();
        let fresh = tx.dataset_is_empty(dataset_id)?;
        let unread_manifests = tx.manifest_count(dataset_id)? as i64 - manifest_ids.len() as i64;
        let merger = Merger {
            dataset_id,
            multi_label: self.multi_label,
            manifest_ids: &manifest_ids,
            paths: &paths,
            links: self.links,
            template: opts.url_template.as_ref(),
            now,
            fresh,
            has_unread_manifests: unread_manifests > 0,
        };
        // With WAL, a second connection reads the catalog as it was while this one writes,
        // so the merge plans items on one core and writes them on the other.
        let reader = (journal == "wal").then_some(catalog_path.as_path());
        let rejections = &mut self.rejections;
        let outcome = merger
            .run(&tx, reader, sorted, &mut |r| rejections.push(r))
            .map_err(|e| match e {
                merge::MergeError::Catalog(e) => IngestError::Catalog(e),
                merge::MergeError::Io(e) => IngestError::Spill(self.spill(e)),
                merge::MergeError::Stopped => IngestError::Invalid("the merge stopped".into()),
            })?;
        tracing::debug!(elapsed = ?self.started.elapsed(), "items merged");
        self.count_merge_rejections(&outcome);
        self.finish_manifests(&tx, &manifest_ids, now)?;

        let strict_fail = opts.strict && self.rejections.total > 0;
        let written = !strict_fail;
        if written {
            tx.commit()?;
        } else {
            tx.rollback()?;
        }
        tracing::debug!(elapsed = ?self.started.elapsed(), written, "transaction ended");
        Ok(Written {
            dataset_id,
            created_dataset,
            written,
            outcome,
        })
    }

    /// Rows the merge rejected (conflicts) move from accepted to rejected.
    fn count_merge_rejections(&mut self, outcome: &merge::Outcome) {
        for (idx, n) in &outcome.rejected_per_manifest {
            if let Some(s) = self.inputs[*idx as usize].summary.as_mut() {
                s.accepted -= n;
                s.rejected += n;
            }
            self.totals.1 -= n;
            self.totals.2 += n;
        }
    }

    /// Records each manifest read with its totals.
    fn finish_manifests(
        &mut self,
        tx: &IngestTx<'_>,
        manifest_ids: &HashMap<u32, i64>,
        now: i64,
    ) -> Result<(), IngestError> {
        for (idx, input) in self.inputs.iter().enumerate() {
            let Some(manifest_id) = manifest_ids.get(&(idx as u32)) else {
                continue;
            };
            let s = input
                .summary
                .as_ref()
                .expect("read manifests have a summary");
            let recorded = ManifestTotals {
                sha256: &s.sha256,
                signature: input.signature.as_deref().unwrap_or(""),
                bytes: s.bytes,
                rows: s.rows,
                accepted: s.accepted,
                rejected: s.rejected,
            };
            tx.finish_manifest(*manifest_id, &recorded, now)?;
            self.reports[idx] = input.report();
        }
        Ok(())
    }

    /// The report of an ingest that wrote nothing because no manifest needed it.
    fn unwritten_report(self, active: (u64, u64), classes: u64) -> IngestReport {
        let opts = self.opts;
        IngestReport {
            dataset: opts.dataset.clone(),
            format: opts.format,
            multi_label: self.multi_label,
            created_dataset: false,
            unchanged: self.inputs.iter().all(|i| i.unchanged) && self.rejections.total == 0,
            written: false,
            manifests: self.reports,
            rows: 0,
            accepted: 0,
            rejected: self.rejections.total,
            repeated_rows: 0,
            items: ItemCounts::default(),
            active_items: active.0,
            no_source: active.1,
            classes,
            classes_added: vec![],
            classes_renamed: vec![],
            links: self.links.map(|l| links_report(opts, l)),
            rejections: self.rejections.kept,
            seconds: self.started.elapsed().as_secs_f64(),
        }
    }

    /// The report of an ingest that ran its write transaction.
    fn report(
        self,
        w: Written,
        after: (u64, u64),
        classes: u64,
        added: Vec<(u32, String)>,
        renamed: Vec<(u32, String, String)>,
    ) -> IngestReport {
        let opts = self.opts;
        let written = w.written;
        IngestReport {
            dataset: opts.dataset.clone(),
            format: opts.format,
            multi_label: self.multi_label,
            created_dataset: w.created_dataset && written,
            unchanged: false,
            written,
            manifests: self.reports,
            rows: self.totals.0,
            accepted: self.totals.1,
            rejected: self.rejections.total,
            repeated_rows: w.outcome.repeated_rows,
            items: if written {
                w.outcome.counts
            } else {
                ItemCounts::default()
            },
            active_items: after.0,
            no_source: after.1,
            classes,
            classes_added: if written { added } else { vec![] },
            classes_renamed: if written { renamed } else { vec![] },
            links: self.links.map(|l| links_report(opts, l)),
            rejections: self.rejections.kept,
            seconds: self.started.elapsed().as_secs_f64(),
        }
    }
}

fn check_dataset(existing: Option<&Dataset>, opts: &IngestOptions) -> Result<(), IngestError> {
    if opts.dataset.is_empty()
        || opts.dataset.len() > 64
        || !opts
            .dataset
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        || opts.dataset.starts_with('.')
    {
        return Err(IngestError::Invalid(format!(
            "dataset name '{}' must be 1-64 characters of [A-Za-z0-9_.-], not starting with '.'",
            opts.dataset.escape_debug()
        )));
    }
    if let Some(d) = existing {
        if d.format != opts.format {
            return Err(IngestError::Invalid(format!(
                "dataset '{}' holds {} manifests; it cannot take {} rows (use another --dataset)",
                d.name, d.format, opts.format
            )));
        }
        if let Some(m) = opts.multi_label
            && m != d.multi_label
        {
            return Err(IngestError::Invalid(format!(
                "dataset '{}' is {}; --multi-label cannot change that",
                d.name,
                if d.multi_label {
                    "multi-label"
                } else {
                    "single-label"
                }
            )));
        }
    }
    Ok(())
}

/// How a given class list combines with the stored one.
struct ClassPlan {
    /// The taxonomy to read with: stored classes updated by the given list.
    table: Vec<(u32, String)>,
    added: Vec<(u32, String)>,
    renamed: Vec<(u32, String, String)>,
}

/// Ids keep their meaning: a given list may add ids and correct names, but a name may
/// not move to another id that stays in use.
fn plan_classes(
    stored: &[(u32, String)],
    given: Option<&[(u32, String)]>,
) -> Result<ClassPlan, IngestError> {
    let Some(given) = given else {
        return Ok(ClassPlan {
            table: stored.to_vec(),
            added: vec![],
            renamed: vec![],
        });
    };
    let stored_map: HashMap<u32, &str> = stored.iter().map(|(i, n)| (*i, n.as_str())).collect();
    let given_ids: HashMap<u32, &str> = given.iter().map(|(i, n)| (*i, n.as_str())).collect();
    let mut table: std::collections::BTreeMap<u32, String> =
        stored.iter().map(|(i, n)| (*i, n.clone())).collect();
    let (mut added, mut renamed) = (vec![], vec![]);
    for (id, name) in given {
        match stored_map.get(id) {
            Some(old) if *old == name => {}
            Some(old) => renamed.push((*id, (*old).to_owned(), name.clone())),
            None => added.push((*id, name.clone())),
        }
        table.insert(*id, name.clone());
    }
    // A stored class the list leaves out keeps its name; it must not clash.
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for (id, name) in &table {
        if let Some(other) = seen.insert(name.as_str(), *id) {
            let kept = if given_ids.contains_key(id) {
                other
            } else {
                *id
            };
            return Err(IngestError::Invalid(format!(
                "class name '{name}' would belong to ids {other} and {id}: class {kept} is \
                 stored under that name and missing from the class file"
            )));
        }
    }
    Ok(ClassPlan {
        table: table.into_iter().collect(),
        added,
        renamed,
    })
}

/// What every input of one ingest shares.
struct Shared<'a> {
    /// `--base-dir`, as a real path.
    base_dir: Option<&'a Path>,
    /// The configured folders local files may lie in.
    config_roots: LocalRoots,
    multi_label: bool,
    table: &'a ClassTable,
    links: Option<&'a Links>,
}

/// One manifest input, before and after reading.
struct Input {
    path: PathBuf,
    /// The real path (relative paths and symlinks resolved): what is read.
    real: PathBuf,
    /// Canonical path, as stored in `manifests.path`.
    key: String,
    /// The manifest's own folder tree: the directory itself for a directory input,
    /// else the folder that holds the real file.
    tree: PathBuf,
    /// The folders this manifest's local files may lie in, recorded for the fetch
    /// stage: `tree` and `--base-dir`.
    own_roots: LocalRoots,
    /// `own_roots` and the configured folders: what rows are checked against.
    roots: LocalRoots,
    size: Option<u64>,
    split: Option<Split>,
    options_sig: String,
    /// Known before reading for files; for directories only after.
    signature: Option<String>,
    stored_signature: Option<String>,
    stored: Option<ManifestReport>,
    unchanged: bool,
    /// Why the manifest as a whole could not be used.
    unusable: Option<String>,
    summary: Option<manifest::ReadSummary>,
}

impl Input {
    fn report(&self) -> ManifestReport {
        if let (true, Some(stored)) = (self.unchanged, &self.stored) {
            return stored.clone();
        }
        let mut r = ManifestReport {
            path: self.key.clone(),
            status: "pending",
            split: self.split.as_ref().map(|s| s.to_string()),
            sha256: String::new(),
            bytes: self.size.unwrap_or(0),
            rows: 0,
            accepted: 0,
            rejected: 0,
            reason: None,
        };
        if let Some(reason) = &self.unusable {
            r.status = "rejected";
            r.reason = Some(reason.clone());
        } else if let Some(s) = &self.summary {
            r.status = "read";
            r.sha256 = s.sha256.clone();
            (r.bytes, r.rows, r.accepted, r.rejected) = (s.bytes, s.rows, s.accepted, s.rejected);
        }
        r
    }
}

fn prepare_input(
    catalog: &Catalog,
    dataset_id: Option<i64>,
    path: &Path,
    opts: &IngestOptions,
    shared: &Shared<'_>,
) -> Result<Input, IngestError> {
    let Shared {
        multi_label,
        table,
        links,
        ..
    } = *shared;
    let meta = fs_err::metadata(path).map_err(|source| ReadError::<SpillError>::Io {
        path: path.to_owned(),
        source,
    })?;
    let canonical = fs_err::canonicalize(path).map_err(|source| ReadError::<SpillError>::Io {
        path: path.to_owned(),
        source,
    })?;
    let key = canonical
        .to_str()
        .ok_or_else(|| {
            IngestError::Invalid(format!("manifest path {} is not UTF-8", path.display()))
        })?
        .to_owned();
    let tree = if meta.is_dir() {
        canonical.clone()
    } else {
        canonical
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| canonical.clone())
    };
    let own_roots = LocalRoots::new(std::iter::once(tree.as_path()).chain(shared.base_dir));
    let roots = own_roots.union(&shared.config_roots);
    let split = match (&opts.split, opts.format.needs_file_split()) {
        (Some(s), _) => Some(s.clone()),
        (None, true) => Some(Split::from_file_name(path).ok_or_else(|| {
            IngestError::Invalid(format!(
                "cannot tell the split of {} from its file name (train, val or test); pass --split",
                path.display()
            ))
        })?),
        (None, false) => None,
    };
    // Everything besides the bytes that decides what rows become.
    // v2: local paths are checked against the allowed folders and stored as real
    // paths, URLs with credentials are refused; a manifest read under the old rules is
    // read again.
    let allowed = roots
        .dirs()
        .iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    let mut h = Sha256::new();
    for part in [
        "pmv-data/ingest/v2",
        opts.format.as_str(),
        split.as_ref().map_or("", Split::as_str),
        &opts.ratios.describe(),
        if multi_label { "multi" } else { "single" },
        links.map_or("", |l| l.sha256.as_str()),
        opts.url_template.as_ref().map_or("", UrlTemplate::as_str),
        &shared
            .base_dir
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        &allowed,
    ] {
        h.update(part.as_bytes());
        h.update(b"\0");
    }
    for (id, name) in table.entries() {
        h.update(id.to_le_bytes());
        h.update(name.as_bytes());
        h.update(b"\0");
    }
    let options_sig = hex::encode(h.finalize());

    let stored = match dataset_id {
        Some(id) => catalog.stored_manifest(id, &key)?.map(|m| {
            (
                m.signature,
                ManifestReport {
                    path: key.clone(),
                    status: "unchanged",
                    split: split.as_ref().map(|s| s.to_string()),
                    sha256: m.sha256,
                    bytes: m.bytes,
                    rows: m.rows,
                    accepted: m.accepted,
                    rejected: m.rejected,
                    reason: None,
                },
            )
        }),
        None => None,
    };
    let (signature, unchanged) = if meta.is_dir() || stored.is_none() {
        // Known after reading (a directory's hash, or a manifest never seen before,
        // which cannot be unchanged): no separate hashing pass.
        (None, false)
    } else {
        let (sha, _) = sha256_file(path).map_err(|source| ReadError::<SpillError>::Io {
            path: path.to_owned(),
            source,
        })?;
        let sig = signature_of(&sha, &options_sig);
        let same = !opts.force && stored.as_ref().is_some_and(|(s, _)| *s == sig);
        (Some(sig), same)
    };
    let (stored_signature, stored) = match stored {
        Some((s, r)) => (Some(s), Some(r)),
        None => (None, None),
    };
    Ok(Input {
        path: path.to_owned(),
        real: canonical,
        key,
        tree,
        own_roots,
        roots,
        size: meta.is_file().then_some(meta.len()),
        split,
        options_sig,
        signature,
        stored_signature,
        stored,
        unchanged,
        unusable: None,
        summary: None,
    })
}

fn signature_of(content_sha: &str, options_sig: &str) -> String {
    let mut h = Sha256::new();
    h.update(content_sha.as_bytes());
    h.update(b"\0");
    h.update(options_sig.as_bytes());
    hex::encode(h.finalize())
}

/// (active items, active items without a video source) of a dataset.
fn active_items(catalog: &Catalog, dataset_id: Option<i64>) -> Result<(u64, u64), CatalogError> {
    match dataset_id {
        Some(id) => catalog
            .item_counts(id)
            .map(|(active, _, no_source)| (active, no_source)),
        None => Ok((0, 0)),
    }
}

fn links_report(opts: &IngestOptions, l: &Links) -> LinksReport {
    LinksReport {
        path: opts
            .links_file
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        rows: l.rows,
        ids: l.by_id.len() as u64,
        rejected: l.rejected.len() as u64,
    }
}

/// Collects rejections: all go to the callback, the first ones into the report.
struct Rejections<'a> {
    callback: &'a mut dyn FnMut(&Rejection),
    kept: Vec<Rejection>,
    total: u64,
}

impl<'a> Rejections<'a> {
    fn new(callback: &'a mut dyn FnMut(&Rejection)) -> Self {
        Rejections {
            callback,
            kept: vec![],
            total: 0,
        }
    }

    fn push(&mut self, r: Rejection) {
        (self.callback)(&r);
        self.total += 1;
        if self.kept.len() < MAX_REPORTED_REJECTIONS {
            self.kept.push(r);
        }
    }
}

/// `items.fingerprint`: a 128-bit XXH3 over every field of the item's content and the
/// origin of each video source, each length-prefixed so that no two contents collide
/// by concatenation. It detects change, it is not a security boundary (a manifest's
/// author can change an item anyway), and it costs a fraction of SHA-256 here.
pub(crate) fn fingerprint(content: &ItemContent, video_origins: &[&'static str]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut field = |tag: u8, bytes: &[u8]| {
        h.update(&[tag]);
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    // An absent field gets its own tag, so that it differs from every present value.
    match &content.text {
        Some(t) => field(1, t.as_bytes()),
        None => field(0x81, b""),
    }
    match content.duration_s {
        Some(d) => field(2, &d.to_le_bytes()),
        None => field(0x82, b""),
    }
    for (i, l) in content.video.iter().enumerate() {
        field(3, l.kind.as_str().as_bytes());
        field(4, l.location.as_bytes());
        field(
            5,
            video_origins
                .get(i)
                .copied()
                .unwrap_or("manifest")
                .as_bytes(),
        );
    }
    for l in &content.cover {
        field(6, l.kind.as_str().as_bytes());
        field(7, l.location.as_bytes());
    }
    match &content.sha256 {
        Some(d) => field(8, d.as_bytes()),
        None => field(0x88, b""),
    }
    match content.size {
        Some(n) => field(9, &n.to_le_bytes()),
        None => field(0x89, b""),
    }
    format!("{:032x}", h.digest128())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_see_every_field() {
        use crate::manifest::Locator;
        use crate::source::SourceKind;
        let base = ItemContent {
            text: Some("a".into()),
            video: vec![Locator {
                kind: SourceKind::Direct,
                location: "https://h.example/a.mp4".into(),
            }],
            ..ItemContent::default()
        };
        let fp = fingerprint(&base, &["manifest"]);
        assert_eq!(fp.len(), 32);
        assert_eq!(fp, fingerprint(&base.clone(), &["manifest"]));
        let mut variants = vec![];
        let mut c = base.clone();
        c.text = Some("b".into());
        variants.push((c, "manifest"));
        let mut c = base.clone();
        c.text = None;
        variants.push((c, "manifest"));
        let mut c = base.clone();
        c.duration_s = Some(1.0);
        variants.push((c, "manifest"));
        let mut c = base.clone();
        c.size = Some(0);
        variants.push((c, "manifest"));
        let mut c = base.clone();
        c.sha256 = Some("00".repeat(32));
        variants.push((c, "manifest"));
        let mut c = base.clone();
        c.cover = c.video.clone();
        variants.push((c, "manifest"));
        variants.push((base.clone(), "links"));
        for (c, origin) in variants {
            assert_ne!(fingerprint(&c, &[origin]), fp);
        }
    }

    #[test]
    fn class_plans_add_and_rename_but_never_move_names() {
        let stored = vec![(0, "a".to_string()), (1, "b".to_string())];
        let p = plan_classes(
            &stored,
            Some(&[(0, "a".into()), (1, "bee".into()), (2, "c".into())]),
        )
        .unwrap();
        assert_eq!(p.added, vec![(2, "c".to_string())]);
        assert_eq!(p.renamed, vec![(1, "b".to_string(), "bee".to_string())]);
        let same = plan_classes(&stored, Some(&[(0, "a".into()), (1, "b".into())])).unwrap();
        assert!(same.added.is_empty() && same.renamed.is_empty());
        let e = plan_classes(&stored, Some(&[(0, "b".into())]))
            .err()
            .unwrap();
        assert!(e.to_string().contains("class name 'b'"), "{e}");
    }
}
