//! The shard stage: turns every verified, not yet sharded video of a dataset into a
//! sample of a recipe, in append-only, immutable shards recorded in the catalog.
//!
//! [`run`] plans the work from the catalog ([`super::work`]), decodes with the engine
//! ([`super::pipeline`]) and writes samples in a stable order into one open shard per
//! split. A shard is written under a hidden temporary name, fsynced, renamed to
//! `<split>-<seq>.tar` and its directory fsynced; only then are its row, its samples'
//! member offsets, the probes of its videos and their `sharded` state committed in one
//! transaction. A killed run therefore leaves at most a temporary file or an unrecorded
//! shard, which the next run removes before it starts. A video that does not decode, or
//! that the media layer refuses before decoding (forged tables, over 8K), goes to
//! quarantine ([`super::quarantine`]) and never reaches a shard. [`rebuild_shard`]
//! writes a damaged shard again from its videos under a new name. After every shard it
//! records, and at the end of every run and rebuild, the split's `index.json` and
//! `classes.txt` are written again from the catalog ([`super::index`]). This module
//! never rewrites a recorded shard and never deletes a video.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::Serialize;

use super::index::{self, IndexError, IndexTarget};
use super::pipeline::{self, Decoded, EngineOptions, Stop};
use super::quarantine::{QuarantineError, Quarantined, quarantine};
use super::work::{self, Work};
use crate::manifest::Split;
use crate::media::{DecodeStats, MediaError, Probe};
use pmv_catalog::{
    Catalog, CatalogError, FrameRecipeRow, NewSample, NewShard, ProbeRecord, ShardRow,
};
use pmv_core::frame_recipe::{Codec, FrameParams, FrameRecipe, FrameRecipeError};
use pmv_core::report::{Reporter, Unit};
use pmv_core::root::DataRoot;
use pmv_core::util::{now_unix, sha256_file, sync_dir};
use pmv_shard::format::{
    FrameData, SampleIndex, SampleInput, SampleMeta, ShardError, ShardWriter, sample_key,
};

/// Shards hold about this many bytes unless `samples_per_shard` says otherwise.
pub const DEFAULT_SHARD_BYTES: u64 = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ShardRunError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Format(#[from] ShardError),
    #[error(transparent)]
    FrameRecipe(#[from] FrameRecipeError),
    #[error(transparent)]
    Quarantine(#[from] QuarantineError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no dataset named '{0}' in the catalog")]
    NoDataset(String),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot rebuild shard {id} ({path}): {message}")]
    Rebuild {
        id: i64,
        path: String,
        message: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ShardRunError + '_ {
    move |source| ShardRunError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What to shard and how.
#[derive(Debug, Clone)]
pub struct ShardOptions {
    pub dataset: String,
    /// Only these splits (all when empty).
    pub splits: Vec<String>,
    pub recipe: FrameRecipe,
    /// Samples per shard [default: as many as fit in [`DEFAULT_SHARD_BYTES`]].
    pub samples_per_shard: Option<usize>,
    /// Videos decoded at once [default: the number of cores].
    pub jobs: Option<usize>,
    /// At most this many videos in this run (in write order).
    pub limit: Option<usize>,
    /// Stop starting videos at this time; shards open then are closed (short).
    pub deadline: Option<Instant>,
    /// Set to stop starting videos (e.g. on SIGINT); shards open then are closed.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// One shard written by a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShardRecord {
    pub id: i64,
    pub split: String,
    pub seq: i64,
    /// Relative to the data root.
    pub path: String,
    pub samples: usize,
    #[serde(rename = "size_bytes")]
    pub bytes: u64,
    pub sha256: String,
}

/// A video that did not become a sample.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Failure {
    pub item: String,
    pub file: String,
    pub reason: String,
    /// Where the file went (corrupt videos), relative to the data root.
    pub quarantined: Option<String>,
}

/// What a run did; serialised into `runs/<run-id>.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ShardReport {
    pub dataset: String,
    pub recipe: FrameRecipe,
    pub recipe_id: String,
    /// Where this recipe's shards live, relative to the data root.
    pub directory: String,
    pub samples_per_shard: usize,
    /// Videos that needed a sample when the run started (after `limit`).
    pub videos_pending: usize,
    /// Videos decoded into samples.
    pub videos_sharded: usize,
    /// Samples written (a video in two splits gives two).
    pub samples: usize,
    pub shards: Vec<ShardRecord>,
    pub corrupt: Vec<Failure>,
    pub failed: Vec<Failure>,
    /// Covers that could not be read (the sample was written without one).
    pub cover_problems: Vec<Failure>,
    /// Videos not started because the run stopped early.
    pub not_started: usize,
    pub stopped: Option<Stop>,
    /// Files of killed runs removed before starting (temporary or unrecorded shards).
    pub removed_leftovers: Vec<String>,
    /// The shard index of every split with live shards of the recipe
    /// (`<split>/index.json`, beside `<split>/classes.txt`), relative to the data root,
    /// as written at the end of the run.
    pub indexes: Vec<String>,
    pub decode: DecodeStats,
    /// Frames decoded per frame kept.
    pub decode_ratio: f64,
    #[serde(rename = "written_bytes")]
    pub bytes_written: u64,
    pub jobs: usize,
    pub threads_per_video: usize,
    #[serde(rename = "duration_s")]
    pub seconds: f64,
    #[serde(rename = "videos_per_s")]
    pub videos_per_second: f64,
}

/// Records the recipe (the first name given to an id stays its name) and returns it as
/// stored.
pub fn register_recipe(
    catalog: &Catalog,
    recipe: &FrameRecipe,
) -> Result<FrameRecipe, ShardRunError> {
    recipe.params.validate()?;
    Ok(catalog.register_recipe(recipe)?)
}

/// The recipe stored under `id`.
pub fn stored_recipe(catalog: &Catalog, id: &str) -> Result<Option<FrameRecipe>, ShardRunError> {
    let Some(FrameRecipeRow { name, params, .. }) = catalog.recipe(id)? else {
        return Ok(None);
    };
    let params: FrameParams = serde_json::from_str(&params)
        .map_err(|e| ShardRunError::Invalid(format!("recipe {id}: stored parameters: {e}")))?;
    let recipe = FrameRecipe { name, params };
    if recipe.id() != id {
        return Err(ShardRunError::Invalid(format!(
            "recipe {id}: stored parameters hash to {}",
            recipe.id()
        )));
    }
    Ok(Some(recipe))
}

/// `shards/<dataset>/<recipe-name>-<recipe-id>`.
fn recipe_dir(dataset: &str, recipe: &FrameRecipe) -> String {
    format!("shards/{dataset}/{}", recipe.dir_name())
}

fn shard_rel(dir: &str, split: &str, seq: i64) -> String {
    format!("{dir}/{split}/{split}-{seq:06}.tar")
}

/// Removes what killed runs left in a recipe's directory: temporary files, and shards
/// under their final name that the catalog does not record (renamed, then killed before
/// the commit). Their videos have no samples recorded, so this run writes them again.
fn remove_leftovers(
    root: &DataRoot,
    catalog: &Catalog,
    dir_rel: &str,
) -> Result<Vec<String>, ShardRunError> {
    let dir = root.path().join(dir_rel);
    if !dir.is_dir() {
        return Ok(vec![]);
    }
    let known: HashSet<String> = catalog.shard_paths_under(dir_rel)?;
    let mut removed = vec![];
    for split in fs_err::read_dir(&dir).map_err(io_err(&dir))? {
        let split = split.map_err(io_err(&dir))?;
        if !split.path().is_dir() {
            continue;
        }
        let split_name = split.file_name().to_string_lossy().into_owned();
        let split_path = split.path();
        for entry in fs_err::read_dir(&split_path).map_err(io_err(&split_path))? {
            let entry = entry.map_err(io_err(&split_path))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = format!("{dir_rel}/{split_name}/{name}");
            let leftover = (name.starts_with('.') && name.contains(".tmp"))
                || (name.ends_with(".tar") && !known.contains(&rel));
            if leftover {
                tracing::warn!(file = %rel, "removing what an interrupted run left");
                fs_err::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
                removed.push(rel);
            }
        }
    }
    Ok(removed)
}

/// A shard being written.
struct OpenShard {
    split: String,
    seq: i64,
    rel: String,
    tmp: PathBuf,
    path: PathBuf,
    writer: Option<ShardWriter<BufWriter<fs_err::File>>>,
    samples: Vec<(i64, Option<u32>, SampleIndex)>,
    probes: Vec<(i64, String, Probe)>,
}

impl OpenShard {
    fn create(
        root: &DataRoot,
        dir_rel: &str,
        split: &str,
        seq: i64,
    ) -> Result<OpenShard, ShardRunError> {
        let rel = shard_rel(dir_rel, split, seq);
        let path = root.path().join(&rel);
        let dir = path
            .parent()
            .expect("a shard path has a directory")
            .to_owned();
        fs_err::create_dir_all(&dir).map_err(io_err(&dir))?;
        if path.exists() {
            return Err(ShardRunError::Invalid(format!(
                "{} exists although the catalog does not record it",
                path.display()
            )));
        }
        let tmp = dir.join(format!(".{split}-{seq:06}.tar.tmp-{}", std::process::id()));
        let file = fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        let writer = ShardWriter::new(BufWriter::with_capacity(1 << 20, file)).with_path(&path);
        Ok(OpenShard {
            split: split.to_owned(),
            seq,
            rel,
            tmp,
            path,
            writer: Some(writer),
            samples: vec![],
            probes: vec![],
        })
    }

    fn len(&self) -> usize {
        self.samples.len()
    }

    /// Finishes the file: end of archive, fsync, rename into place, fsync the directory.
    fn seal(&mut self) -> Result<(u64, String), ShardRunError> {
        let writer = self.writer.take().expect("sealed once");
        let (buffered, summary) = writer.finish()?;
        let file = buffered.into_inner().map_err(|e| ShardRunError::Io {
            path: self.tmp.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err(&self.tmp))?;
        drop(file);
        fs_err::rename(&self.tmp, &self.path).map_err(io_err(&self.tmp))?;
        let dir = self.path.parent().expect("has a directory");
        sync_dir(dir).map_err(io_err(dir))?;
        Ok((summary.bytes, summary.sha256))
    }

    /// Removes the temporary file of a shard that will not be finished.
    fn abandon(&mut self) {
        if self.writer.take().is_some() {
            let _ = fs_err::remove_file(&self.tmp);
        }
    }
}

impl Drop for OpenShard {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// Records a sealed shard: its row, its samples, its videos' probes and `sharded`
/// state, in one transaction. `replaces` marks an older shard `replaced` in the same
/// transaction.
#[allow(clippy::too_many_arguments)]
fn commit_shard(
    catalog: &mut Catalog,
    dataset_id: i64,
    recipe_id: &str,
    shard: &OpenShard,
    bytes: u64,
    sha256: &str,
    replaces: Option<i64>,
) -> Result<i64, CatalogError> {
    let now = now_unix();
    let commit = catalog.begin_shard_commit()?;
    let id = commit.insert_shard(
        &NewShard {
            dataset_id,
            recipe_id,
            split: &shard.split,
            seq: shard.seq,
            path: &shard.rel,
            sha256,
            bytes,
            samples: shard.len(),
        },
        now,
    )?;
    let samples: Vec<NewSample<'_, SampleIndex>> = shard
        .samples
        .iter()
        .map(|(item, label, index)| NewSample {
            item_id: *item,
            label: *label,
            frames_offset: index.frames.offset,
            frames_bytes: index.frames.size,
            members: index,
        })
        .collect();
    commit.insert_samples(id, &samples)?;
    {
        for (item, sha, p) in &shard.probes {
            commit.record_probe(
                *item,
                sha,
                &ProbeRecord {
                    container: &p.container,
                    codec: &p.codec,
                    width: p.width,
                    height: p.height,
                    rotation: p.rotation,
                    sar: &p.sar,
                    avg_fps: p.avg_fps,
                    real_fps: p.real_fps,
                    duration_s: p.duration_s,
                    frames: p.frames,
                    vfr: p.vfr,
                },
                now,
            )?;
            commit.mark_sharded(*item, now)?;
        }
    }
    if let Some(old) = replaces {
        commit.mark_replaced(old)?;
    }
    commit.commit()?;
    Ok(id)
}

/// The `<key>.json` of a sample.
fn sample_meta(dataset: &str, recipe_id: &str, split: &str, w: &Work, d: &Decoded) -> SampleMeta {
    let p = &d.probe;
    let mut extra = serde_json::Map::new();
    extra.insert("codec".into(), p.codec.clone().into());
    extra.insert("rotation".into(), p.rotation.into());
    extra.insert("source_frames".into(), p.frames.into());
    extra.insert("vfr".into(), p.vfr.into());
    SampleMeta {
        id: w.key.clone(),
        dataset: dataset.to_owned(),
        labels: w.labels.clone(),
        split: split.to_owned(),
        recipe: recipe_id.to_owned(),
        source: w.source.clone(),
        sha256: w.sha256.clone(),
        size: w.size,
        duration_s: Some(p.duration_s),
        fps: p
            .avg_fps
            .or((p.duration_s > 0.0).then(|| p.frames as f64 / p.duration_s)),
        width: p.display_width,
        height: p.display_height,
        frame_indices: d.indices.clone(),
        extra,
    }
}

fn append(
    shard: &mut OpenShard,
    dataset: &str,
    recipe: &FrameRecipe,
    recipe_id: &str,
    w: &Work,
    d: &Decoded,
) -> Result<(), ShardRunError> {
    let meta = sample_meta(dataset, recipe_id, &shard.split, w, d);
    let key = sample_key(&w.key);
    let label = w.labels.first().copied();
    let index = shard.writer.as_mut().expect("open").append(&SampleInput {
        key: &key,
        shape: recipe.params.shape(),
        frames: match recipe.params.codec {
            Codec::Raw => FrameData::Raw(&d.frames),
            Codec::Jpeg { quality } => FrameData::Jpeg {
                quality,
                frames: &d.jpegs,
            },
        },
        label,
        meta: &meta,
        jpg: d.cover.as_deref(),
        txt: w.text.as_deref(),
    })?;
    shard.samples.push((w.item_id, label, index));
    shard
        .probes
        .push((w.item_id, w.sha256.clone(), d.probe.clone()));
    Ok(())
}

/// What a JPEG sample is expected to take, as a fraction of its decoded bytes
/// (1 / this): q90 frames of video content measure 1/8 to 1/20, so shards of a JPEG
/// recipe come out at most [`DEFAULT_SHARD_BYTES`] and usually well under.
const JPEG_RATIO_ESTIMATE: u64 = 8;

/// Samples per shard: as given, else what fits in [`DEFAULT_SHARD_BYTES`] (for a JPEG
/// recipe, by a conservative estimate of its compressed size).
pub fn samples_per_shard(given: Option<usize>, params: &FrameParams) -> usize {
    let bytes = match params.codec {
        Codec::Raw => params.sample_bytes(),
        Codec::Jpeg { .. } => params.sample_bytes() / JPEG_RATIO_ESTIMATE,
    };
    given
        .unwrap_or_else(|| (DEFAULT_SHARD_BYTES / bytes.max(1)) as usize)
        .max(1)
}

/// Marks a verified video that is gone (or changed) from the root so that fetch gets
/// it again.
fn mark_missing(catalog: &Catalog, item_id: i64, reason: &str) -> Result<(), CatalogError> {
    catalog.mark_missing(item_id, reason)
}

/// Shards every verified video of `opts.dataset` that lacks a sample of `opts.recipe`.
pub fn run(
    root: &DataRoot,
    catalog: &mut Catalog,
    opts: &ShardOptions,
    reporter: &dyn Reporter,
) -> Result<ShardReport, ShardRunError> {
    let started = Instant::now();
    let dataset = catalog
        .dataset(&opts.dataset)?
        .ok_or_else(|| ShardRunError::NoDataset(opts.dataset.clone()))?;
    for s in &opts.splits {
        Split::parse(s).map_err(|e| ShardRunError::Invalid(format!("split {s:?}: {e}")))?;
    }
    let recipe = register_recipe(catalog, &opts.recipe)?;
    let recipe_id = recipe.id();
    let dir_rel = recipe_dir(&dataset.name, &recipe);
    let removed_leftovers = remove_leftovers(root, catalog, &dir_rel)?;
    let mut work = work::pending(catalog, dataset.id, &recipe_id, &opts.splits)?;
    if let Some(limit) = opts.limit {
        work.truncate(limit);
    }
    let per_shard = samples_per_shard(opts.samples_per_shard, &recipe.params);
    let mut report = ShardReport {
        dataset: dataset.name.clone(),
        recipe: recipe.clone(),
        recipe_id: recipe_id.clone(),
        directory: dir_rel.clone(),
        samples_per_shard: per_shard,
        videos_pending: work.len(),
        videos_sharded: 0,
        samples: 0,
        shards: vec![],
        corrupt: vec![],
        failed: vec![],
        cover_problems: vec![],
        not_started: 0,
        stopped: None,
        removed_leftovers,
        indexes: vec![],
        decode: DecodeStats::default(),
        decode_ratio: 0.0,
        bytes_written: 0,
        jobs: 0,
        threads_per_video: 0,
        seconds: 0.0,
        videos_per_second: 0.0,
    };
    reporter.begin(
        &format!("shard {} ({})", dataset.name, recipe.name),
        Some(work.len() as u64),
        Unit::Items,
    );
    let target = IndexTarget {
        dataset_id: dataset.id,
        dataset: &dataset.name,
        multi_label: dataset.multi_label,
        recipe: &recipe,
    };
    let mut open: BTreeMap<String, OpenShard> = BTreeMap::new();
    let mut seqs: HashMap<String, i64> = HashMap::new();
    let engine = EngineOptions {
        jobs: opts.jobs.unwrap_or_else(pipeline::cores),
        deadline: opts.deadline,
        cancel: opts.cancel.as_deref(),
    };
    let result = pipeline::run(root.path(), &work, &recipe.params, &engine, |i, result| {
        let w = &work[i];
        reporter.advance(1);
        let d = match result {
            Ok(d) => d,
            Err(e) => {
                let failure = Failure {
                    item: w.key.clone(),
                    file: w.video.clone(),
                    reason: e.reason(),
                    quarantined: None,
                };
                match &e {
                    e if e.is_corrupt() => {
                        let to = quarantine(
                            root,
                            catalog,
                            &Quarantined {
                                dataset: &dataset.name,
                                item_id: w.item_id,
                                item_key: &w.key,
                                path: &w.video,
                                sha256: &w.sha256,
                                reason: &e.reason(),
                            },
                        )?;
                        report.corrupt.push(Failure {
                            quarantined: Some(to),
                            ..failure
                        });
                    }
                    MediaError::Io { source, .. }
                        if source.kind() == std::io::ErrorKind::NotFound
                            || source.kind() == std::io::ErrorKind::Other =>
                    {
                        tracing::warn!(item = %w.key, file = %w.video, "{e}");
                        mark_missing(catalog, w.item_id, &e.reason())?;
                        report.failed.push(failure);
                    }
                    _ => {
                        tracing::warn!(item = %w.key, "{e}");
                        report.failed.push(failure);
                    }
                }
                return Ok(None);
            }
        };
        if let Some(problem) = &d.cover_error {
            report.cover_problems.push(Failure {
                item: w.key.clone(),
                file: w.cover.clone().unwrap_or_default(),
                reason: problem.clone(),
                quarantined: None,
            });
        }
        for split in &w.splits {
            if !open.contains_key(split) {
                let seq = match seqs.get(split) {
                    Some(&s) => s,
                    None => catalog.next_shard_seq(dataset.id, &recipe_id, split)?,
                };
                seqs.insert(split.clone(), seq + 1);
                open.insert(
                    split.clone(),
                    OpenShard::create(root, &dir_rel, split, seq)?,
                );
            }
            let shard = open.get_mut(split).expect("opened above");
            append(shard, &dataset.name, &recipe, &recipe_id, w, &d)?;
            report.samples += 1;
            if shard.len() >= per_shard {
                let mut shard = open.remove(split).expect("present");
                close(root, catalog, &target, &mut shard, &mut report)?;
            }
        }
        report.videos_sharded += 1;
        report.decode += d.stats;
        Ok::<_, ShardRunError>(Some(d.frames))
    });
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            // Open shards are abandoned (their temporary files removed on drop).
            reporter.end();
            return Err(e);
        }
    };
    // Close what is open, short or not.
    for (_, mut shard) in std::mem::take(&mut open) {
        if shard.len() > 0 {
            close(root, catalog, &target, &mut shard, &mut report)?;
        }
    }
    reporter.end();
    // Also when nothing was written: shards of older runs get their index.
    report.indexes = index::write(root, catalog, &target)?;
    report.not_started = work.len() - summary.started;
    report.stopped = summary.stopped;
    report.jobs = summary.jobs;
    report.threads_per_video = summary.threads_per_video;
    report.seconds = started.elapsed().as_secs_f64();
    report.videos_per_second = report.videos_sharded as f64 / report.seconds.max(1e-9);
    report.decode_ratio = if report.decode.frames_kept > 0 {
        report.decode.frames_decoded as f64 / report.decode.frames_kept as f64
    } else {
        0.0
    };
    Ok(report)
}

/// Seals, records and reports a shard, then writes its split's index again.
fn close(
    root: &DataRoot,
    catalog: &mut Catalog,
    target: &IndexTarget<'_>,
    shard: &mut OpenShard,
    report: &mut ShardReport,
) -> Result<(), ShardRunError> {
    let (bytes, sha256) = shard.seal()?;
    let recipe_id = target.recipe.id();
    let id = match commit_shard(
        catalog,
        target.dataset_id,
        &recipe_id,
        shard,
        bytes,
        &sha256,
        None,
    ) {
        Ok(id) => id,
        Err(e) => {
            // Not recorded: the file must not stay under its final name.
            let _ = fs_err::remove_file(&shard.path);
            return Err(e.into());
        }
    };
    tracing::info!(shard = %shard.rel, samples = shard.len(), bytes, "shard written");
    report.bytes_written += bytes;
    report.shards.push(ShardRecord {
        id,
        split: shard.split.clone(),
        seq: shard.seq,
        path: shard.rel.clone(),
        samples: shard.len(),
        bytes,
        sha256,
    });
    index::write(root, catalog, target)?;
    Ok(())
}

/// What a rebuild did.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildReport {
    pub old: ShardRecord,
    pub new: ShardRecord,
    /// The rebuilt bytes hash to what the catalog recorded for the old shard (same
    /// videos, same FFmpeg): the repair restored the original exactly.
    pub identical: bool,
    /// The shard index of every split of the shard's dataset and recipe, written again
    /// (the old shard no longer listed, the new one in its place), relative to the data
    /// root.
    pub indexes: Vec<String>,
    pub decode: DecodeStats,
    #[serde(rename = "duration_s")]
    pub seconds: f64,
}

/// Writes shard `shard_id` again from its videos, under a new name (the next sequence
/// number of its split), then in one transaction records the new shard and its samples
/// (same order) and marks the old one `replaced`. Every video is re-hashed first: a
/// video that no longer matches its recorded SHA-256 cannot give the same samples.
pub fn rebuild_shard(
    root: &DataRoot,
    catalog: &mut Catalog,
    shard_id: i64,
    jobs: Option<usize>,
    reporter: &dyn Reporter,
) -> Result<RebuildReport, ShardRunError> {
    let started = Instant::now();
    let old: ShardRow = catalog.shard(shard_id)?.ok_or_else(|| {
        ShardRunError::Invalid(format!("no shard with id {shard_id} in the catalog"))
    })?;
    let fail = |message: String| ShardRunError::Rebuild {
        id: old.id,
        path: old.path.clone(),
        message,
    };
    if old.state != "live" {
        return Err(fail(format!("it is {}, not live", old.state)));
    }
    let recipe = stored_recipe(catalog, &old.recipe_id)?.ok_or_else(|| {
        fail(format!(
            "its recipe {} is not in the catalog",
            old.recipe_id
        ))
    })?;
    recipe.params.validate()?;
    let (items, unavailable) = work::shard_items(catalog, &old)?;
    if !unavailable.is_empty() {
        return Err(fail(format!(
            "videos no longer available: {}",
            unavailable.join(", ")
        )));
    }
    if items.len() as i64 != old.samples {
        return Err(fail(format!(
            "the catalog lists {} samples for it but {} items",
            old.samples,
            items.len()
        )));
    }
    reporter.begin(
        &format!("verify videos of {}", old.path),
        Some(items.len() as u64),
        Unit::Items,
    );
    for w in &items {
        let path = root.path().join(&w.video);
        let (sha, _) = sha256_file(&path).map_err(io_err(&path))?;
        if sha != w.sha256 {
            reporter.end();
            return Err(fail(format!(
                "video {} of item {} has SHA-256 {sha}, the catalog verified {}",
                w.video, w.key, w.sha256
            )));
        }
        reporter.advance(1);
    }
    reporter.end();

    let dir_rel = recipe_dir(&old.dataset, &recipe);
    let seq = catalog.next_shard_seq(old.dataset_id, &old.recipe_id, &old.split)?;
    let mut shard = OpenShard::create(root, &dir_rel, &old.split, seq)?;
    reporter.begin(
        &format!("rebuild {}", old.path),
        Some(items.len() as u64),
        Unit::Items,
    );
    let mut decode = DecodeStats::default();
    let engine = EngineOptions {
        jobs: jobs.unwrap_or_else(pipeline::cores),
        deadline: None,
        cancel: None,
    };
    let result = pipeline::run(root.path(), &items, &recipe.params, &engine, |i, result| {
        reporter.advance(1);
        let w = &items[i];
        let d = result.map_err(|e| fail(format!("item {}: {e}", w.key)))?;
        append(&mut shard, &old.dataset, &recipe, &old.recipe_id, w, &d)?;
        decode += d.stats;
        Ok::<_, ShardRunError>(Some(d.frames))
    });
    reporter.end();
    result?;
    let (bytes, sha256) = shard.seal()?;
    let id = match commit_shard(
        catalog,
        old.dataset_id,
        &old.recipe_id,
        &shard,
        bytes,
        &sha256,
        Some(old.id),
    ) {
        Ok(id) => id,
        Err(e) => {
            let _ = fs_err::remove_file(&shard.path);
            return Err(e.into());
        }
    };
    tracing::info!(old = %old.path, new = %shard.rel, "shard rebuilt");
    let dataset = catalog
        .dataset(&old.dataset)?
        .ok_or_else(|| ShardRunError::NoDataset(old.dataset.clone()))?;
    let indexes = index::write(
        root,
        catalog,
        &IndexTarget {
            dataset_id: old.dataset_id,
            dataset: &old.dataset,
            multi_label: dataset.multi_label,
            recipe: &recipe,
        },
    )?;
    Ok(RebuildReport {
        identical: sha256 == old.sha256,
        indexes,
        old: ShardRecord {
            id: old.id,
            split: old.split.clone(),
            seq: old.seq,
            path: old.path.clone(),
            samples: old.samples as usize,
            bytes: old.bytes as u64,
            sha256: old.sha256.clone(),
        },
        new: ShardRecord {
            id,
            split: old.split.clone(),
            seq,
            path: shard.rel.clone(),
            samples: shard.len(),
            bytes,
            sha256,
        },
        decode,
        seconds: started.elapsed().as_secs_f64(),
    })
}
