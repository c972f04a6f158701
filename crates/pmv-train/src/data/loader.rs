//! The shard loader: worker threads turn shard samples into uint8 batches, in an order
//! fixed by the seed, behind a bounded prefetch queue.
//!
//! An epoch reads whole shards in a shuffled order, sequentially within each, through a
//! shuffle buffer that mixes samples across shards. For training each sample gives one
//! random clip of the K stored, one random resized crop and maybe a flip; for
//! evaluation it gives every view (clips × crops along the long side). With repeated
//! augmentation a training sample gives several views, each with its own draws. The
//! order and every random choice derive from (seed, epoch, position, view), so the
//! batches are the same whatever the number of threads, and a resumed run can start
//! mid-epoch. Workers fill the batch tensor in place (pinned for CUDA); normalisation,
//! and the random erasing that follows it, happen on the device.
//! A sample that cannot be used is left out of its batch and reported as an error; it
//! is never replaced by another sample.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use pmv_shard::ShardReader;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::augment::{self, Crop, Resampler, Scratch};
use super::randaug::{self, RandAugment};
use super::text;
pub use crate::cli::EraseMode;
use crate::device::to_device_async;
use crate::models::multimodal::Extra;
use crate::models::{MEAN, STD};
use crate::rng::{Purpose, Rng};

/// A sample that could not be used.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SampleError {
    pub shard: PathBuf,
    pub key: String,
    pub error: String,
}

impl SampleError {
    /// Sample `key` of `reader`'s shard could not be used, for `error`.
    fn of(reader: &ShardReader, key: &str, error: String) -> SampleError {
        SampleError {
            shard: reader.path().to_owned(),
            key: key.to_owned(),
            error,
        }
    }
}

impl std::fmt::Display for SampleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "shard {}: sample {}: {}",
            self.shard.display(),
            self.key,
            self.error
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("a loader thread stopped unexpectedly: {0}")]
    Worker(String),
}

/// How samples become views.
#[derive(Debug, Clone, Serialize)]
pub enum Views {
    /// `repeats` views per sample, each drawing on its own: one random clip of the K
    /// stored, a random resized crop (or, with `jitter`, short-side scale jitter to
    /// that range and a random crop), flip with probability `flip`, RandAugment
    /// (`auto_augment`), and the rectangles of random erasing (`erase`).
    Train {
        scale: (f64, f64),
        ratio: (f64, f64),
        flip: f64,
        jitter: Option<(usize, usize)>,
        repeats: usize,
        erase: Option<RandomErase>,
        auto_augment: Option<AutoAugment>,
    },
    /// `clips` evenly spread stored clips × `crops` spatial crops, in that order; the
    /// crops are the largest windows of the output's aspect, or, with `short_side`,
    /// windows of the frame scaled to that short side.
    Eval {
        clips: usize,
        crops: usize,
        short_side: Option<usize>,
    },
}

/// Random erasing of training views, as a run records it: probability, fill and most
/// rectangles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct RandomErase {
    pub probability: f64,
    pub mode: EraseMode,
    pub max_count: usize,
}

/// A RandAugment policy and the text it was read from (what run records show).
#[derive(Debug, Clone, PartialEq)]
pub struct AutoAugment {
    pub spec: String,
    pub policy: RandAugment,
}

impl AutoAugment {
    /// Parses timm's policy grammar (`rand-m7-n4-mstd0.5-inc1`); the error says what is
    /// wrong with it.
    pub fn parse(spec: &str) -> Result<AutoAugment, String> {
        Ok(AutoAugment {
            spec: spec.to_owned(),
            policy: RandAugment::parse(spec)?,
        })
    }
}

impl Serialize for AutoAugment {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.spec)
    }
}

/// What a loader thread keeps between samples: the resampler's rows, RandAugment's
/// buffers, and one decoded clip (JPEG samples decode into it; raw ones are read in
/// place).
#[derive(Default)]
pub struct WorkerScratch {
    resample: Scratch,
    randaug: randaug::Scratch,
    clip: Vec<u8>,
}

/// How labels are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Labels {
    /// One class per sample (`.cls`, else the first label of `.json`).
    Single(usize),
    /// Any number of classes per sample (`labels` of `.json`), as multi-hot targets.
    Multi(usize),
    /// No labels are read (pre-training): samples without any are fine.
    None,
}

impl Labels {
    pub fn classes(self) -> usize {
        match self {
            Labels::Single(n) | Labels::Multi(n) => n,
            Labels::None => 0,
        }
    }
}

/// Which part of each epoch this process reads: rank `rank` of `world` data-parallel
/// ranks (rank 0 of 1 reads everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub rank: usize,
    pub world: usize,
}

impl Default for Share {
    fn default() -> Share {
        Share { rank: 0, world: 1 }
    }
}

/// Everything workers need, shared.
pub struct LoaderSpec {
    pub shards: Vec<Arc<ShardReader>>,
    /// `(clips, T, H, W, 3)` every sample must have.
    pub shape: [usize; 5],
    /// Output frame size (H, W).
    pub out: (usize, usize),
    pub views: Views,
    pub labels: Labels,
    pub batch: usize,
    pub workers: usize,
    /// Batches ready or in the making ahead of the consumer.
    pub prefetch: usize,
    pub shuffle: bool,
    pub shuffle_buffer: usize,
    pub drop_last: bool,
    pub seed: u64,
    /// Pin batches for fast copies to this CUDA device.
    pub pin: Option<Device>,
    /// Parse each sample's metadata for its item id (evaluation reports it).
    pub ids: bool,
    /// Covers and texts for multimodal models.
    pub extras: Option<Arc<Extras>>,
    /// This rank's part of each epoch.
    pub share: Share,
}

/// What multimodal batches carry besides frames.
pub struct Extras {
    /// Covers are decoded (JPEG) and resized to (H, W): the largest centred window of
    /// that aspect.
    pub cover: Option<(usize, usize)>,
    pub tokenizer: Option<Arc<text::Tokenizer>>,
}

impl LoaderSpec {
    /// Views per sample.
    pub fn views_per_sample(&self) -> usize {
        match self.views {
            Views::Train { repeats, .. } => repeats.max(1),
            Views::Eval { clips, crops, .. } => {
                augment::eval_clips(self.shape[0], clips).len() * crops.max(1)
            }
        }
    }

    pub fn samples(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    /// The samples of an epoch in reading order, as (shard, sample) pairs.
    pub fn order(&self, epoch: u64) -> Vec<(u32, u32)> {
        let sizes: Vec<usize> = self.shards.iter().map(|s| s.len()).collect();
        if self.shuffle {
            epoch_order(&sizes, self.seed, epoch, self.shuffle_buffer)
        } else {
            sizes
                .iter()
                .enumerate()
                .flat_map(|(s, &n)| (0..n).map(move |i| (s as u32, i as u32)))
                .collect()
        }
    }

    /// This rank's batches in an epoch.
    pub fn batches(&self) -> usize {
        let n = self.samples();
        let Share { rank, world } = self.share;
        let world = world.max(1);
        if self.drop_last {
            n / (self.batch.max(1) * world)
        } else {
            let all = n.div_ceil(self.batch.max(1));
            all / world + usize::from(rank < all % world)
        }
    }

    /// This rank's batches of an epoch, each as the position (in the epoch's order) of
    /// its first sample and its samples.
    ///
    /// Training (`drop_last`) cuts the order into global batches of `batch × world`
    /// samples, whole ones only, and gives rank r the r-th `batch` of each: one step of
    /// `world` ranks sees the samples one rank with `batch × world` would, and every
    /// sample of the epoch's whole batches is read once, by one rank. Evaluation cuts
    /// it into batches of `batch` and deals them out in turn (rank r: batches r, r +
    /// world, ...), so every sample is read once and the ranks' shares differ by at most
    /// one batch. Positions key the random draws, so a sample gets the same views
    /// whichever rank reads it.
    pub fn plan(&self, epoch: u64) -> Vec<(usize, Vec<(u32, u32)>)> {
        let order = self.order(epoch);
        let b = self.batch.max(1);
        let Share { rank, world } = self.share;
        let world = world.max(1);
        if self.drop_last {
            order
                .chunks_exact(b * world)
                .enumerate()
                .map(|(i, g)| {
                    (
                        i * b * world + rank * b,
                        g[rank * b..(rank + 1) * b].to_vec(),
                    )
                })
                .collect()
        } else {
            order
                .chunks(b)
                .enumerate()
                .filter(|(i, _)| i % world == rank)
                .map(|(i, c)| (i * b, c.to_vec()))
                .collect()
        }
    }
}

/// Shards in a shuffled order, each read front to back, through a shuffle buffer of
/// `buffer` samples (0: no mixing across shards).
pub fn epoch_order(sizes: &[usize], seed: u64, epoch: u64, buffer: usize) -> Vec<(u32, u32)> {
    let mut shards: Vec<usize> = (0..sizes.len()).collect();
    Rng::stream(seed, Purpose::ShardOrder, epoch, 0).shuffle(&mut shards);
    let mut rng = Rng::stream(seed, Purpose::ShuffleBuffer, epoch, 0);
    let total: usize = sizes.iter().sum();
    let mut out = Vec::with_capacity(total);
    let mut held: Vec<(u32, u32)> = Vec::with_capacity(buffer.min(total));
    for s in shards {
        for i in 0..sizes[s] {
            let item = (s as u32, i as u32);
            if held.len() < buffer {
                held.push(item);
            } else if buffer == 0 {
                out.push(item);
            } else {
                let j = rng.below(held.len());
                out.push(std::mem::replace(&mut held[j], item));
            }
        }
    }
    rng.shuffle(&mut held);
    out.extend(held);
    out
}

/// A rectangle of one view to erase, through every frame of its clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EraseRect {
    /// The view's row in the batch (`sample * views + view`).
    pub row: usize,
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// The random erasing of a batch: its rectangles, the fill, and the seed of the fill's
/// values (keyed by the batch's place in the run, so a resumed run fills the same).
#[derive(Debug, Clone)]
pub struct Erasing {
    pub mode: EraseMode,
    pub rects: Vec<EraseRect>,
    pub seed: u64,
}

impl Erasing {
    /// Fills the rectangles of normalised `x` (`[rows, 3, T, H, W]`, any strides) in
    /// place: zeros (const), a standard-normal value per channel and frame (rand), or
    /// per value (pixel), drawn on `x`'s device from libtorch's generator seeded with
    /// the batch's seed.
    pub fn apply(&self, x: &Tensor) {
        if self.rects.is_empty() {
            return;
        }
        if self.mode != EraseMode::Const {
            tch::manual_seed(self.seed as i64);
        }
        let size = x.size();
        let (c, t) = (size[1], size[2]);
        let opts = (x.kind(), x.device());
        for r in &self.rects {
            let mut region = x
                .select(0, r.row as i64)
                .narrow(2, r.top as i64, r.height as i64)
                .narrow(3, r.left as i64, r.width as i64);
            match self.mode {
                EraseMode::Const => {
                    let _ = region.fill_(0.0);
                }
                EraseMode::Rand => {
                    let fill = Tensor::randn([c, t, 1, 1], opts);
                    region.copy_(&fill.expand_as(&region));
                }
                EraseMode::Pixel => {
                    let fill = Tensor::randn([c, t, r.height as i64, r.width as i64], opts);
                    region.copy_(&fill);
                }
            }
        }
    }
}

/// One batch, ready to go to the device.
pub struct Batch {
    /// uint8 `[N * views, T, H, W, 3]` (pinned when the spec asks).
    pub frames: Tensor,
    /// Views per sample: the evaluation views, or the training views of repeated
    /// augmentation (each sample's views are consecutive rows).
    pub views: usize,
    /// Per sample: the class (single-label) or the first label (multi-label).
    pub labels: Vec<i64>,
    /// Multi-label: `[N * classes]` multi-hot targets.
    pub targets: Option<Vec<f32>>,
    /// Per sample: shard key and item id (when asked for, else empty).
    pub keys: Vec<String>,
    pub ids: Vec<String>,
    /// Per sample: every label.
    pub all_labels: Vec<Vec<u32>>,
    /// Samples of this batch that could not be used.
    pub errors: Vec<SampleError>,
    /// Per sample: its position in the epoch's order (every rank's samples counted).
    pub positions: Vec<u64>,
    /// uint8 `[N, H, W, 3]` covers (zeros where absent) and which samples have one.
    pub covers: Option<(Tensor, Vec<bool>)>,
    /// `[N × max_len]` token ids (0-padded) and which samples have text.
    pub tokens: Option<(Vec<i64>, usize, Vec<bool>)>,
    /// Training views to erase after normalisation.
    pub erase: Option<Erasing>,
}

impl Batch {
    /// Samples in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Rows of the model input: samples × views.
    pub fn rows(&self) -> usize {
        self.labels.len() * self.views
    }

    /// The model input on `device`: float `[N * views, 3, T, H, W]`, normalised with the
    /// ImageNet mean and std, then randomly erased where the batch says. The copy from
    /// pinned memory does not block the host.
    pub fn input(&self, device: Device, norm: &Normalizer) -> Tensor {
        let x = norm.apply(&self.frames.to_device_(device, Kind::Uint8, true, false));
        if let Some(e) = &self.erase {
            e.apply(&x);
        }
        x
    }

    /// The cover and text inputs on `device`, repeated for each of the sample's views.
    pub fn extra(&self, device: Device, norm: &Normalizer) -> Option<Extra> {
        if self.covers.is_none() && self.tokens.is_none() {
            return None;
        }
        let v = self.views as i64;
        let rep = |t: Tensor| {
            if v > 1 {
                t.repeat_interleave_self_int(v, 0, None)
            } else {
                t
            }
        };
        let flags = |f: &[bool]| rep(to_device_async(Tensor::from_slice(f), device));
        let (cover, cover_present) = match &self.covers {
            Some((c, present)) => {
                let c = to_device_async(c.shallow_clone(), device).unsqueeze(1);
                // [N, 1, H, W, 3] through the video normaliser → [N, 3, 1, H, W].
                let x = norm.apply(&c).squeeze_dim(2);
                (Some(rep(x)), Some(flags(present)))
            }
            None => (None, None),
        };
        let (tokens, text_present) = match &self.tokens {
            Some((ids, len, present)) => {
                let t = to_device_async(
                    Tensor::from_slice(ids).view([present.len() as i64, *len as i64]),
                    device,
                );
                (Some(rep(t)), Some(flags(present)))
            }
            None => (None, None),
        };
        Some(Extra {
            cover,
            cover_present,
            tokens,
            text_present,
        })
    }

    /// Labels as an int64 tensor on `device`, one per row (each sample's repeated for
    /// its views).
    pub fn label_tensor(&self, device: Device) -> Tensor {
        self.per_row(to_device_async(Tensor::from_slice(&self.labels), device))
    }

    /// Multi-hot targets `[N * views, classes]` on `device` (multi-label batches), each
    /// sample's repeated for its views.
    pub fn target_tensor(&self, device: Device, classes: usize) -> Option<Tensor> {
        self.targets.as_ref().map(|t| {
            self.per_row(to_device_async(
                Tensor::from_slice(t).view([self.len() as i64, classes as i64]),
                device,
            ))
        })
    }

    /// A per-sample tensor repeated for each of the sample's views.
    fn per_row(&self, t: Tensor) -> Tensor {
        if self.views > 1 {
            t.repeat_interleave_self_int(self.views as i64, 0, None)
        } else {
            t
        }
    }
}

/// The per-channel affine map from bytes to normalised values, kept on the device.
pub struct Normalizer {
    scale: Tensor,
    shift: Tensor,
}

impl Normalizer {
    /// uint8 `[N, T, H, W, 3]` on the device → normalised float `[N, 3, T, H, W]` (a
    /// permuted view; models make it contiguous as they need).
    pub fn apply(&self, frames: &Tensor) -> Tensor {
        let x = frames.to_kind(Kind::Float) * &self.scale - &self.shift;
        x.permute([0, 4, 1, 2, 3])
    }

    pub fn new(device: Device) -> Normalizer {
        let scale: Vec<f32> = STD.iter().map(|s| (1.0 / (255.0 * s)) as f32).collect();
        let shift: Vec<f32> = MEAN.iter().zip(STD).map(|(m, s)| (m / s) as f32).collect();
        Normalizer {
            scale: Tensor::from_slice(&scale).to_device(device),
            shift: Tensor::from_slice(&shift).to_device(device),
        }
    }
}

/// The bytes of a contiguous uint8 CPU tensor.
fn tensor_bytes_mut(t: &mut Tensor) -> &mut [u8] {
    assert!(
        t.kind() == Kind::Uint8 && t.device() == Device::Cpu && t.is_contiguous(),
        "a contiguous uint8 CPU tensor"
    );
    let len = t.numel();
    if len == 0 {
        return &mut [];
    }
    // SAFETY: the tensor is contiguous, uint8, on the CPU and initialised (callers create
    // it with `zeros`), so its data is `len` valid bytes; `t` is borrowed mutably for the
    // lifetime of the slice, and the tensor was created by the caller, so no other handle
    // to its storage exists while the slice lives.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut u8, len) }
}

struct Job {
    index: usize,
    /// Position in the epoch of the first sample (keys the augmentation draws).
    first: usize,
    items: Vec<(u32, u32)>,
}

type Done = (usize, Result<Batch, String>);

/// Batches of one epoch, in order.
pub struct Loader {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    pending: BTreeMap<usize, Batch>,
    /// Each batch's first position and samples (taken when it is sent).
    plan: Vec<(usize, Vec<(u32, u32)>)>,
    next_yield: usize,
    next_send: usize,
    depth: usize,
}

impl Loader {
    /// Starts the workers on `epoch`, beginning at batch `start` (a resumed run skips the
    /// batches it has done without reading them).
    pub fn start(spec: Arc<LoaderSpec>, epoch: u64, start: usize) -> Loader {
        let plan = spec.plan(epoch);
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers = (0..spec.workers.max(1))
            .map(|w| {
                let spec = Arc::clone(&spec);
                let jobs = Arc::clone(&job_rx);
                let done = done_tx.clone();
                std::thread::Builder::new()
                    .name(format!("loader-{w}"))
                    .spawn(move || worker(&spec, epoch, &jobs, &done))
                    .expect("spawn a loader thread")
            })
            .collect();
        let depth = spec.prefetch.max(1) + spec.workers.max(1);
        let mut loader = Loader {
            jobs: Some(job_tx),
            done: done_rx,
            workers,
            pending: BTreeMap::new(),
            next_yield: start.min(plan.len()),
            next_send: start.min(plan.len()),
            plan,
            depth,
        };
        loader.refill();
        loader
    }

    /// Batches in this epoch (including skipped ones).
    pub fn batches(&self) -> usize {
        self.plan.len()
    }

    fn refill(&mut self) {
        while self.next_send < self.plan.len() && self.next_send < self.next_yield + self.depth {
            let i = self.next_send;
            let (first, items) = &mut self.plan[i];
            let job = Job {
                index: i,
                first: *first,
                items: std::mem::take(items),
            };
            if let Some(tx) = &self.jobs {
                // A send fails only when every worker has stopped; `next` reports it.
                let _ = tx.send(job);
            }
            self.next_send += 1;
        }
    }
}

impl Iterator for Loader {
    type Item = Result<Batch, LoaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next_yield >= self.plan.len() {
            return None;
        }
        loop {
            if let Some(b) = self.pending.remove(&self.next_yield) {
                self.next_yield += 1;
                self.refill();
                return Some(Ok(b));
            }
            match self.done.recv() {
                Ok((i, Ok(b))) => {
                    self.pending.insert(i, b);
                }
                Ok((_, Err(e))) => return Some(Err(LoaderError::Worker(e))),
                Err(_) => {
                    return Some(Err(LoaderError::Worker(
                        "every loader thread has stopped".into(),
                    )));
                }
            }
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.jobs = None;
        // Drain so that no worker blocks; they exit when the job channel closes.
        while self.done.try_recv().is_ok() {}
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(spec: &LoaderSpec, epoch: u64, jobs: &Mutex<Receiver<Job>>, done: &Sender<Done>) {
    let mut tmp = WorkerScratch::default();
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        let index = job.index;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            build(spec, epoch, job, &mut tmp)
        }))
        .map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".into())
        });
        if done.send((index, result)).is_err() {
            return;
        }
    }
}

/// One sample's label(s), or why it has none usable.
fn read_labels(
    spec: &LoaderSpec,
    label: Option<u32>,
    meta: Option<&pmv_shard::SampleMeta>,
) -> Result<Vec<u32>, String> {
    let classes = spec.labels.classes();
    if spec.labels == Labels::None {
        return Ok(vec![]);
    }
    let labels = match (spec.labels, label, meta) {
        (Labels::Single(_), Some(l), _) => vec![l],
        (_, _, Some(m)) if !m.labels.is_empty() => {
            if matches!(spec.labels, Labels::Single(_)) {
                vec![m.labels[0]]
            } else {
                m.labels.clone()
            }
        }
        (Labels::Multi(_), Some(l), _) => vec![l],
        _ => return Err("has no label (.cls or labels in .json)".into()),
    };
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= classes) {
        return Err(format!(
            "label {bad} is outside the {classes} classes of this run"
        ));
    }
    Ok(labels)
}

/// What a batch accumulates, sample by sample.
struct Parts {
    labels: Vec<i64>,
    targets: Option<Vec<f32>>,
    keys: Vec<String>,
    ids: Vec<String>,
    all_labels: Vec<Vec<u32>>,
    errors: Vec<SampleError>,
    positions: Vec<u64>,
    cover_present: Vec<bool>,
    tokens: Option<(Vec<i64>, usize, Vec<bool>)>,
    rects: Vec<EraseRect>,
    /// Samples written so far.
    filled: usize,
}

/// One sample read and checked: its frames, labels, metadata, cover and text.
struct Read<'a> {
    sample: pmv_shard::Sample<'a>,
    labels: Vec<u32>,
    meta: Option<pmv_shard::SampleMeta>,
    cover: Option<Vec<u8>>,
}

fn build(spec: &LoaderSpec, epoch: u64, job: Job, tmp: &mut WorkerScratch) -> Batch {
    let views = spec.views_per_sample();
    let [_, t, _, _, _] = spec.shape;
    let (oh, ow) = spec.out;
    let view_len = t * oh * ow * 3;
    let n = job.items.len();
    let mut frames = Tensor::zeros(
        [(n * views) as i64, t as i64, oh as i64, ow as i64, 3],
        (Kind::Uint8, Device::Cpu),
    );
    let tokenizer = spec.extras.as_ref().and_then(|e| e.tokenizer.clone());
    let mut cover_t = spec.extras.as_ref().and_then(|e| e.cover).map(|(ch, cw)| {
        Tensor::zeros(
            [n as i64, ch as i64, cw as i64, 3],
            (Kind::Uint8, Device::Cpu),
        )
    });
    let mut parts = Parts::new(spec, n, tokenizer.as_deref());
    {
        let bytes = tensor_bytes_mut(&mut frames);
        let mut cover_bytes = cover_t.as_mut().map(tensor_bytes_mut);
        for (pos, &(s, i)) in job.items.iter().enumerate() {
            let read = match read_sample(spec, s, i, &mut tmp.resample) {
                Ok(r) => r,
                Err(e) => {
                    parts.errors.push(e);
                    continue;
                }
            };
            let at = parts.filled;
            let out = &mut bytes[at * views * view_len..(at + 1) * views * view_len];
            // The views first: a sample whose frames do not decode is left out whole,
            // before anything of it reaches the batch.
            let mut rects = vec![];
            let written = match &spec.views {
                Views::Train { .. } => {
                    let key = ViewKey {
                        seed: spec.seed,
                        epoch,
                        position: (job.first + pos) as u64,
                    };
                    out.chunks_exact_mut(view_len)
                        .enumerate()
                        .try_for_each(|(v, dst)| {
                            let row = at * views + v;
                            let r = train_view(spec, &read.sample, key, v, dst, tmp)?;
                            rects.extend(r.into_iter().map(|r| EraseRect { row, ..r }));
                            Ok(())
                        })
                }
                Views::Eval { .. } => eval_views(spec, &read.sample, out, tmp),
            };
            if let Err(e) = written {
                let reader = &spec.shards[s as usize];
                parts
                    .errors
                    .push(SampleError::of(reader, read.sample.key, e.to_string()));
                continue;
            }
            parts.rects.extend(rects);
            parts.extras(&read, cover_bytes.as_deref_mut(), n, tokenizer.as_deref());
            parts.positions.push((job.first + pos) as u64);
            parts.push(spec, read);
        }
    }
    let filled = parts.filled;
    if filled < n {
        frames = frames.narrow(0, 0, (filled * views) as i64);
        if let Some(c) = cover_t.as_mut() {
            *c = c.narrow(0, 0, filled as i64);
        }
    }
    if let Some(device) = spec.pin
        && filled > 0
    {
        // `_pin_memory` directly: `pin_memory(device)` warns that the argument is
        // deprecated on every call.
        frames = frames.internal_pin_memory(device);
    }
    let erase = match &spec.views {
        Views::Train { erase: Some(e), .. } if !parts.rects.is_empty() => Some(Erasing {
            mode: e.mode,
            rects: std::mem::take(&mut parts.rects),
            seed: Rng::stream(
                spec.seed,
                Purpose::Augment,
                epoch | ERASE_FILL,
                // The batch's index in the whole epoch (every rank's batches counted).
                (job.first / spec.batch.max(1)) as u64,
            )
            .next_u64(),
        }),
        _ => None,
    };
    Batch {
        covers: cover_t.map(|t| (t, parts.cover_present)),
        tokens: parts.tokens,
        frames,
        views,
        labels: parts.labels,
        targets: parts.targets,
        keys: parts.keys,
        ids: parts.ids,
        all_labels: parts.all_labels,
        errors: parts.errors,
        positions: parts.positions,
        erase,
    }
}

impl Parts {
    fn new(spec: &LoaderSpec, n: usize, tokenizer: Option<&text::Tokenizer>) -> Parts {
        let classes = spec.labels.classes();
        Parts {
            labels: Vec::with_capacity(n),
            targets: matches!(spec.labels, Labels::Multi(_))
                .then(|| Vec::with_capacity(n * classes)),
            keys: Vec::with_capacity(n),
            ids: vec![],
            all_labels: Vec::with_capacity(n),
            errors: vec![],
            positions: Vec::with_capacity(n),
            cover_present: Vec::with_capacity(n),
            tokens: tokenizer.map(|t| {
                (
                    Vec::with_capacity(n * t.max_len),
                    t.max_len,
                    Vec::with_capacity(n),
                )
            }),
            rects: vec![],
            filled: 0,
        }
    }

    /// Writes the next sample's cover into `cover_bytes` (the batch's `n` covers) and
    /// its tokens, when the batch carries them.
    fn extras(
        &mut self,
        read: &Read<'_>,
        cover_bytes: Option<&mut [u8]>,
        n: usize,
        tokenizer: Option<&text::Tokenizer>,
    ) {
        let at = self.filled;
        if let Some(buf) = cover_bytes {
            let len = buf.len() / n;
            if let Some(px) = &read.cover {
                buf[at * len..(at + 1) * len].copy_from_slice(px);
            }
            self.cover_present.push(read.cover.is_some());
        }
        if let (Some((ids, len, present)), Some(tok)) = (self.tokens.as_mut(), tokenizer) {
            let txt = read.sample.txt;
            let mut row = txt.map(|t| tok.encode(t)).unwrap_or_default();
            present.push(txt.is_some_and(|t| !t.trim().is_empty()));
            row.resize(*len, text::PAD);
            ids.extend(row);
        }
    }

    /// Records a sample whose views are written.
    fn push(&mut self, spec: &LoaderSpec, read: Read<'_>) {
        let classes = spec.labels.classes();
        self.labels
            .push(read.labels.first().map_or(-1, |&l| l as i64));
        if let Some(tg) = self.targets.as_mut() {
            let at = tg.len();
            tg.resize(at + classes, 0.0);
            for &l in &read.labels {
                tg[at + l as usize] = 1.0;
            }
        }
        self.keys.push(read.sample.key.to_owned());
        if spec.ids {
            self.ids
                .push(read.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default());
        }
        self.all_labels.push(read.labels);
        self.filled += 1;
    }
}

/// Reads sample `i` of shard `s` and checks what the run needs of it: its shape, its
/// labels, its metadata and its cover. A sample that fails any check is an error
/// naming it.
fn read_sample<'a>(
    spec: &'a LoaderSpec,
    s: u32,
    i: u32,
    tmp: &mut Scratch,
) -> Result<Read<'a>, SampleError> {
    let reader = &spec.shards[s as usize];
    let fail = |key: &str, error: String| SampleError::of(reader, key, error);
    let sample = reader.sample(i as usize).map_err(|e| {
        let key = reader
            .index()
            .get(i as usize)
            .map_or_else(|| format!("#{i}"), |x| x.key.clone());
        fail(&key, e.to_string())
    })?;
    if sample.shape != spec.shape {
        return Err(fail(
            sample.key,
            format!(
                "frames of shape {:?}, but this run's samples are {:?}",
                sample.shape, spec.shape
            ),
        ));
    }
    let multi = matches!(spec.labels, Labels::Multi(_));
    let need_meta = multi || spec.ids || (sample.label.is_none() && spec.labels != Labels::None);
    let meta = if need_meta {
        Some(sample.meta().map_err(|e| fail(sample.key, e.to_string()))?)
    } else {
        None
    };
    let labels = read_labels(spec, sample.label, meta.as_ref()).map_err(|e| fail(sample.key, e))?;
    // The cover first: a sample whose cover cannot be decoded is left out whole.
    let cover_size = spec.extras.as_ref().and_then(|e| e.cover);
    let cover = match (cover_size, sample.jpg) {
        (Some((ch, cw)), Some(jpg)) => Some(
            decode_cover(jpg, cw, ch, tmp)
                .map_err(|e| fail(sample.key, format!("cover (.jpg): {e}")))?,
        ),
        _ => None,
    };
    Ok(Read {
        sample,
        labels,
        meta,
        cover,
    })
}

/// Where a training sample's draws are keyed: the run's seed, the epoch and the
/// sample's position in it.
#[derive(Debug, Clone, Copy)]
struct ViewKey {
    seed: u64,
    epoch: u64,
    position: u64,
}

/// Marks the epoch coordinate of the erasing streams (views keep theirs below bit 40).
const ERASE_LANE: u64 = 1 << 63;
/// Marks the epoch coordinate of a batch's erasing fill seed.
const ERASE_FILL: u64 = 1 << 62;

impl ViewKey {
    /// The stream of view `v`'s clip, crop and flip. View 0 has the stream a sample
    /// had before repeated augmentation, so runs with one view draw what they drew.
    fn view(self, v: usize) -> Rng {
        Rng::stream(
            self.seed,
            Purpose::Augment,
            self.epoch | ((v as u64) << 40),
            self.position,
        )
    }

    /// The stream of view `v`'s erasing rectangles, apart from its crop's, so turning
    /// other augmentations on or off does not move them.
    fn erase(self, v: usize) -> Rng {
        Rng::stream(
            self.seed,
            Purpose::Augment,
            self.epoch | ((v as u64) << 40) | ERASE_LANE,
            self.position,
        )
    }
}

/// Writes training view `v` of a sample into `dst`: a random one of the K stored clips
/// (temporal jitter: each view and epoch draws its own), a random resized crop or a
/// scale-jitter crop and maybe a flip, then [`augment_view`]. Returns the view's erasing
/// rectangles (row 0; the caller sets the row).
fn train_view(
    spec: &LoaderSpec,
    sample: &pmv_shard::Sample<'_>,
    key: ViewKey,
    v: usize,
    dst: &mut [u8],
    tmp: &mut WorkerScratch,
) -> Result<Vec<EraseRect>, pmv_shard::ShardError> {
    let Views::Train {
        scale,
        ratio,
        flip,
        jitter,
        ..
    } = &spec.views
    else {
        return Ok(vec![]);
    };
    let [clips, t, h, w, _] = spec.shape;
    let (oh, ow) = spec.out;
    let mut rng = key.view(v);
    let k = rng.below(clips);
    let crop = match jitter {
        Some(j) => augment::jitter_crop(&mut rng, w, h, ow, oh, *j, *flip),
        None => augment::random_resized_crop(&mut rng, w, h, ow, oh, *scale, *ratio, *flip),
    };
    let clip = sample.clip_pixels(k, &mut tmp.clip)?;
    cut(clip, crop, (w, h), (ow, oh), t, dst, &mut tmp.resample);
    Ok(augment_view(
        spec,
        dst,
        (ow, oh),
        &mut rng,
        &mut key.erase(v),
        &mut tmp.randaug,
    ))
}

/// The augmentations of one training view after its crop, on the view's `t` frames
/// of `ow`×`oh` RGB bytes in `dst`: RandAugment (`--auto-augment`), one draw of
/// operations from the view's own stream applied to every frame (as VideoMAE applies
/// one draw to a clip). Random erasing happens after normalisation, on the device, so
/// here its rectangles are only drawn (VideoMAE's cube erasing: one draw for every
/// frame).
fn augment_view(
    spec: &LoaderSpec,
    dst: &mut [u8],
    (ow, oh): (usize, usize),
    rng: &mut Rng,
    erase_rng: &mut Rng,
    scratch: &mut randaug::Scratch,
) -> Vec<EraseRect> {
    if let Views::Train {
        auto_augment: Some(aa),
        ..
    } = &spec.views
    {
        let ops = aa.policy.draw(rng);
        if !ops.is_empty() {
            for frame in dst.chunks_exact_mut(ow * oh * 3) {
                randaug::apply(&ops, frame, ow, oh, scratch);
            }
        }
    }
    match &spec.views {
        Views::Train { erase: Some(e), .. } => {
            erase_rects(erase_rng, e.probability, e.max_count, oh, ow)
        }
        _ => vec![],
    }
}

/// Writes every evaluation view of a sample into `out`: evenly spread stored clips ×
/// crops along the long side, in that order.
fn eval_views(
    spec: &LoaderSpec,
    sample: &pmv_shard::Sample<'_>,
    out: &mut [u8],
    tmp: &mut WorkerScratch,
) -> Result<(), pmv_shard::ShardError> {
    let Views::Eval {
        clips: n_clips,
        crops,
        short_side,
    } = &spec.views
    else {
        return Ok(());
    };
    let [clips, t, h, w, _] = spec.shape;
    let (oh, ow) = spec.out;
    let view_len = t * oh * ow * 3;
    let windows = match short_side {
        Some(s) => augment::scaled_eval_crops(w, h, ow, oh, *crops, *s),
        None => augment::eval_crops(w, h, ow, oh, *crops),
    };
    let mut v = 0;
    for k in augment::eval_clips(clips, *n_clips) {
        // Each clip is decoded once for all of its crops.
        let clip = sample.clip_pixels(k, &mut tmp.clip)?;
        for &crop in &windows {
            let dst = &mut out[v * view_len..(v + 1) * view_len];
            cut(clip, crop, (w, h), (ow, oh), t, dst, &mut tmp.resample);
            v += 1;
        }
    }
    Ok(())
}

/// Smallest and largest erased fraction of the frame (timm's and VideoMAE's defaults).
pub const ERASE_AREA: (f64, f64) = (0.02, 1.0 / 3.0);
/// Smallest erased aspect ratio (height / width); the largest is its inverse.
pub const ERASE_MIN_ASPECT: f64 = 0.3;
/// Tries per rectangle (VideoMAE's cube erasing; timm's per-image erasing tries 10).
pub const ERASE_ATTEMPTS: usize = 100;

/// The random-erasing rectangles of one `w`×`h` view, drawn as timm's and VideoMAE's
/// `RandomErasing._erase_cube` draws them: with probability `p` the view is erased;
/// then 1 to `max_count` rectangles (uniform), each of an area drawn uniformly from
/// [`ERASE_AREA`] of the frame divided by the count and an aspect ratio drawn
/// log-uniformly from [0.3, 1/0.3], sides rounded, placed uniformly; a rectangle that
/// does not fit is drawn again, up to [`ERASE_ATTEMPTS`] times. Rows are 0.
pub fn erase_rects(rng: &mut Rng, p: f64, max_count: usize, h: usize, w: usize) -> Vec<EraseRect> {
    // timm: `if random.random() > self.probability: return`.
    if p <= 0.0 || rng.f64() > p {
        return vec![];
    }
    let count = if max_count <= 1 {
        1
    } else {
        1 + rng.below(max_count)
    };
    let area = (h * w) as f64;
    let log_aspect = (ERASE_MIN_ASPECT.ln(), (1.0 / ERASE_MIN_ASPECT).ln());
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        for _ in 0..ERASE_ATTEMPTS {
            let target = rng.range(ERASE_AREA.0, ERASE_AREA.1) * area / count as f64;
            let aspect = rng.range(log_aspect.0, log_aspect.1).exp();
            let eh = (target * aspect).sqrt().round_ties_even() as usize;
            let ew = (target / aspect).sqrt().round_ties_even() as usize;
            if ew < w && eh < h {
                let top = rng.below(h - eh + 1);
                let left = rng.below(w - ew + 1);
                if eh > 0 && ew > 0 {
                    out.push(EraseRect {
                        row: 0,
                        top,
                        left,
                        height: eh,
                        width: ew,
                    });
                }
                break;
            }
        }
    }
    out
}

/// Decodes a JPEG cover and resizes its largest centred `w`×`h`-aspect window to w×h RGB.
fn decode_cover(jpg: &[u8], w: usize, h: usize, tmp: &mut Scratch) -> Result<Vec<u8>, String> {
    let img = image::load_from_memory_with_format(jpg, image::ImageFormat::Jpeg)
        .map_err(|e| format!("not a decodable JPEG: {e}"))?
        .to_rgb8();
    let (sw, sh) = (img.width() as usize, img.height() as usize);
    if sw == 0 || sh == 0 {
        return Err("an empty image".into());
    }
    let crop = augment::cover_window(sw, sh, w, h, 0.5);
    let r = Resampler::new(sw, sh, crop, w, h);
    let mut out = vec![0u8; r.out_len()];
    r.frame(img.as_raw(), &mut out, tmp);
    Ok(out)
}

/// Resamples the `t` frames of one clip through one crop into `out`.
fn cut(
    clip: &[u8],
    crop: Crop,
    (w, h): (usize, usize),
    (ow, oh): (usize, usize),
    t: usize,
    out: &mut [u8],
    tmp: &mut Scratch,
) {
    let r = Resampler::new(w, h, crop, ow, oh);
    let src_len = w * h * 3;
    let dst_len = r.out_len();
    for f in 0..t {
        r.frame(
            &clip[f * src_len..(f + 1) * src_len],
            &mut out[f * dst_len..(f + 1) * dst_len],
            tmp,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use pmv_core::frame_recipe::Codec;

    use super::*;
    use crate::data::stats::{ks, ks_limit};

    /// Area fraction, log aspect (h / w) and relative position of rectangles
    /// `[top, left, h, w]` in an `hh`×`ww` frame.
    fn features(rects: &[[usize; 4]], hh: usize, ww: usize) -> [Vec<f64>; 4] {
        let mut out: [Vec<f64>; 4] = Default::default();
        for &[top, left, h, w] in rects {
            assert!(top + h <= hh && left + w <= ww, "{top} {left} {h} {w}");
            out[0].push((h * w) as f64 / (hh * ww) as f64);
            out[1].push((h as f64 / w as f64).ln());
            out[2].push(if hh > h {
                top as f64 / (hh - h) as f64
            } else {
                0.5
            });
            out[3].push(if ww > w {
                left as f64 / (ww - w) as f64
            } else {
                0.5
            });
        }
        out
    }

    #[test]
    fn erasing_draws_follow_timm() {
        // timm's RandomErasing itself, seeded, on a 48x64 frame (tests/python).
        let (h, w, p, n) = (48usize, 64usize, 0.25, 20_000usize);
        let repo = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let out = std::process::Command::new(repo.join(".venv/bin/python"))
            .arg(repo.join("tests/python/random_erasing_reference.py"))
            .args([h, w].map(|v| v.to_string()))
            .args([p.to_string(), n.to_string(), "3".into()])
            .output()
            .expect("run the venv's python (scripts/setup.sh installs torch and timm)");
        assert!(
            out.status.success(),
            "reference script failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let refs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let rects = |v: &serde_json::Value| -> Vec<[usize; 4]> {
            serde_json::from_value(v.clone()).unwrap()
        };
        let theirs = rects(&refs["rects"]);
        let mut rng = Rng::stream(7, Purpose::Augment, 0, 0);
        let ours: Vec<Vec<EraseRect>> = (0..n).map(|_| erase_rects(&mut rng, p, 1, h, w)).collect();
        // How often a view is erased: both binomial(n, p); allow 4.5 standard
        // deviations of the difference.
        let erased = ours.iter().filter(|r| !r.is_empty()).count() as f64;
        let sd = (2.0 * n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (erased - theirs.len() as f64).abs() < 4.5 * sd,
            "erased {erased} of {n}, timm {}",
            theirs.len()
        );
        assert!(ours.iter().all(|r| r.len() <= 1));
        let mine: Vec<[usize; 4]> = ours
            .iter()
            .flatten()
            .map(|r| [r.top, r.left, r.height, r.width])
            .collect();
        let (a, b) = (features(&mine, h, w), features(&theirs, h, w));
        let limit = ks_limit(a[0].len(), b[0].len());
        for (k, name) in ["area", "log aspect", "top", "left"].iter().enumerate() {
            let d = ks(&a[k], &b[k]);
            assert!(d < limit, "{name}: KS {d:.4} >= {limit:.4}");
        }
        // Up to 3 rectangles, the area shared among them: sizes and erased rate.
        let mut rng = Rng::stream(7, Purpose::Augment, 1, 0);
        let ours: Vec<Vec<EraseRect>> = (0..n).map(|_| erase_rects(&mut rng, p, 3, h, w)).collect();
        let erased = ours.iter().filter(|r| !r.is_empty()).count() as f64;
        let theirs_erased = refs["multi_erased"].as_f64().unwrap();
        assert!(
            (erased - theirs_erased).abs() < 4.5 * sd,
            "{erased} {theirs_erased}"
        );
        let sizes: Vec<[usize; 2]> = serde_json::from_value(refs["multi_sizes"].clone()).unwrap();
        let theirs: Vec<[usize; 4]> = sizes.iter().map(|&[a, b]| [0, 0, a, b]).collect();
        let mine: Vec<[usize; 4]> = ours
            .iter()
            .flatten()
            .map(|r| [0, 0, r.height, r.width])
            .collect();
        let (a, b) = (features(&mine, h, w), features(&theirs, h, w));
        // Rectangles per erased view: 1, 2 or 3 uniformly (mean 2).
        let per_view = mine.len() as f64 / erased;
        assert!((per_view - 2.0).abs() < 0.05, "{per_view}");
        let limit = ks_limit(a[0].len(), b[0].len());
        for (k, name) in ["area", "log aspect"].iter().enumerate() {
            let d = ks(&a[k], &b[k]);
            assert!(d < limit, "3 rectangles, {name}: KS {d:.4} >= {limit:.4}");
        }
        // Off means off.
        assert!((0..100).all(|_| erase_rects(&mut rng, 0.0, 1, h, w).is_empty()));
    }

    #[test]
    fn erasing_fills_only_its_rectangles() {
        tch::manual_seed(1);
        let frames = Tensor::randint(256, [2, 3, 8, 10, 3], (Kind::Uint8, Device::Cpu));
        let norm = Normalizer::new(Device::Cpu);
        let before = norm.apply(&frames);
        let rect = EraseRect {
            row: 1,
            top: 2,
            left: 3,
            height: 4,
            width: 5,
        };
        let inside = Tensor::zeros([2, 3, 3, 8, 10], (Kind::Bool, Device::Cpu));
        let _ = inside.select(0, 1).narrow(2, 2, 4).narrow(3, 3, 5).fill_(1);
        let outside = inside.logical_not();
        let region = |x: &Tensor| x.select(0, 1).narrow(2, 2, 4).narrow(3, 3, 5);
        for mode in [EraseMode::Const, EraseMode::Rand, EraseMode::Pixel] {
            let e = Erasing {
                mode,
                rects: vec![rect],
                seed: 9,
            };
            // The normaliser's output is a permuted view; the fill goes through it.
            let x = norm.apply(&frames);
            e.apply(&x);
            assert!(
                x.masked_select(&outside)
                    .equal(&before.masked_select(&outside)),
                "{mode:?}: values outside the rectangle changed"
            );
            let r = region(&x);
            match mode {
                EraseMode::Const => assert_eq!(r.abs().max().double_value(&[]), 0.0),
                EraseMode::Rand => {
                    // One value per channel and frame.
                    let corner = r.narrow(2, 0, 1).narrow(3, 0, 1);
                    assert_eq!((&r - &corner).abs().max().double_value(&[]), 0.0);
                    let c = corner.flatten(0, -1);
                    assert!(c.std(true).double_value(&[]) > 0.1, "{c}");
                }
                EraseMode::Pixel => {
                    assert!(r.std(true).double_value(&[]) > 0.5);
                    assert!(r.ne_tensor(&region(&before)).all().int64_value(&[]) == 1);
                }
            }
            // The seed fixes the fill.
            let y = norm.apply(&frames);
            e.apply(&y);
            assert!(x.equal(&y), "{mode:?}");
        }
    }

    /// Synthetic shards (4 clips per sample) and a training spec over them.
    fn train_spec(
        dir: &std::path::Path,
        repeats: usize,
        erase: Option<RandomErase>,
        workers: usize,
    ) -> LoaderSpec {
        synth_spec(dir, repeats, erase, workers, Codec::Raw)
    }

    /// [`train_spec`] over shards of `codec`.
    fn synth_spec(
        dir: &std::path::Path,
        repeats: usize,
        erase: Option<RandomErase>,
        workers: usize,
        codec: Codec,
    ) -> LoaderSpec {
        let spec = pmv_shard::synth::SynthSpec {
            classes: 3,
            splits: vec![("train".into(), 4)],
            frames: 2,
            fps: 4.0,
            clips: 4,
            height: 24,
            width: 32,
            samples_per_shard: 5,
            seed: 3,
            codec,
        };
        let splits = pmv_shard::synth::write_shards(dir, &spec).unwrap();
        let shards: Vec<Arc<ShardReader>> = splits[0]
            .shards
            .iter()
            .map(|p| Arc::new(ShardReader::open(p).unwrap()))
            .collect();
        LoaderSpec {
            shards,
            shape: [4, 2, 24, 32, 3],
            out: (16, 16),
            views: Views::Train {
                scale: (0.25, 1.0),
                ratio: (0.75, 1.3333),
                flip: 0.5,
                jitter: None,
                repeats,
                erase,
                auto_augment: None,
            },
            labels: Labels::Single(3),
            batch: 4,
            workers,
            prefetch: 2,
            shuffle: true,
            shuffle_buffer: 8,
            drop_last: true,
            seed: 11,
            pin: None,
            ids: false,
            extras: None,
            share: Default::default(),
        }
    }

    fn frames_of(spec: LoaderSpec) -> Vec<Tensor> {
        Loader::start(Arc::new(spec), 0, 0)
            .map(|b| b.unwrap().frames)
            .collect()
    }

    /// JPEG samples decode in the loader threads into the batches raw samples give (the
    /// same draws, pixels within JPEG's error), and RandAugment's draws depend on the
    /// seed and position, never on the thread count.
    #[test]
    fn jpeg_samples_and_randaugment_in_the_loader() {
        let dir = tempfile::tempdir().unwrap();
        let raw = frames_of(synth_spec(&dir.path().join("raw"), 1, None, 1, Codec::Raw));
        let jpeg_spec = || {
            synth_spec(
                &dir.path().join("jpeg"),
                1,
                None,
                2,
                Codec::Jpeg { quality: 95 },
            )
        };
        let jpeg = frames_of(jpeg_spec());
        assert_eq!(raw.len(), jpeg.len());
        for (r, j) in raw.iter().zip(&jpeg) {
            let d = (r.to_kind(Kind::Float) - j.to_kind(Kind::Float)).abs();
            let mean = d.mean(Kind::Float).double_value(&[]);
            assert!(mean < 4.0, "mean |raw - jpeg| {mean}");
        }
        let aa = |workers| {
            let mut spec = jpeg_spec();
            spec.workers = workers;
            if let Views::Train { auto_augment, .. } = &mut spec.views {
                *auto_augment = Some(AutoAugment::parse("rand-m9-n3-mstd0").unwrap());
            }
            frames_of(spec)
        };
        let (one, two) = (aa(1), aa(2));
        assert!(one.iter().zip(&two).all(|(a, b)| a.equal(b)));
        assert!(one.iter().zip(&jpeg).any(|(a, b)| !a.equal(b)));
    }

    /// A JPEG frame that does not decode leaves its sample out of the batch, named.
    #[test]
    fn a_bad_jpeg_frame_leaves_its_sample_out() {
        let dir = tempfile::tempdir().unwrap();
        let spec = synth_spec(
            &dir.path().join("j"),
            1,
            None,
            1,
            Codec::Jpeg { quality: 90 },
        );
        let victim = spec.shards[0].index()[2].clone();
        // No start-of-image marker at frame 1 of any clip: whichever clip the view
        // draws does not decode. Written in place, under the map.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(spec.shards[0].path())
            .unwrap();
        for (i, m) in victim.frame_members.iter().enumerate() {
            if i % 2 == 1 {
                std::os::unix::fs::FileExt::write_at(&file, &[0, 0], m.offset).unwrap();
            }
        }
        let (mut seen, total) = (0, spec.samples());
        let mut errors = vec![];
        for b in Loader::start(Arc::new(spec), 0, 0) {
            let b = b.unwrap();
            seen += b.len();
            errors.extend(b.errors);
        }
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].key, victim.key);
        assert!(errors[0].error.contains("f001.jpg"), "{}", errors[0].error);
        assert_eq!(seen, total - 1);
    }

    #[test]
    fn repeated_augmentation_gives_independent_keyed_views() {
        let dir = tempfile::tempdir().unwrap();
        let erase = Some(RandomErase {
            probability: 1.0,
            mode: EraseMode::Pixel,
            max_count: 1,
        });
        let three = Arc::new(train_spec(&dir.path().join("a"), 3, erase, 1));
        assert_eq!(three.views_per_sample(), 3);
        let batches: Vec<Batch> = Loader::start(Arc::clone(&three), 1, 0)
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(batches.len(), 3);
        let b = &batches[0];
        assert_eq!((b.len(), b.views, b.rows()), (4, 3, 12));
        assert_eq!(b.frames.size()[0], 12);
        // Labels repeat per view, sample by sample.
        let labels = Vec::<i64>::try_from(b.label_tensor(Device::Cpu)).unwrap();
        let want: Vec<i64> = b.labels.iter().flat_map(|&l| [l; 3]).collect();
        assert_eq!(labels, want);
        // Every view was erased (probability 1), each with its own rectangle.
        let e = b.erase.as_ref().unwrap();
        let mut rows: Vec<usize> = e.rects.iter().map(|r| r.row).collect();
        rows.sort();
        assert_eq!(rows, (0..12).collect::<Vec<_>>());
        assert!(
            e.rects
                .windows(2)
                .any(|w| (w[0].top, w[0].left, w[0].height) != (w[1].top, w[1].left, w[1].height))
        );
        // The views of one sample are different crops.
        let v: Vec<Tensor> = (0..3).map(|i| b.frames.get(i)).collect();
        assert!(!v[0].equal(&v[1]) && !v[1].equal(&v[2]));
        // The same batches whatever the number of threads.
        let four = Arc::new(train_spec(&dir.path().join("b"), 3, erase, 4));
        for (x, y) in batches.iter().zip(Loader::start(four, 1, 0)) {
            let y = y.unwrap();
            assert!(x.frames.equal(&y.frames));
            assert_eq!(
                x.erase.as_ref().unwrap().rects,
                y.erase.as_ref().unwrap().rects
            );
            assert_eq!(
                x.erase.as_ref().unwrap().seed,
                y.erase.as_ref().unwrap().seed
            );
        }
        // View 0 is what a run without repeats draws for the sample.
        let one = Arc::new(train_spec(&dir.path().join("c"), 1, None, 2));
        let single = Loader::start(one, 1, 0).next().unwrap().unwrap();
        assert!(single.erase.is_none());
        assert_eq!(single.labels, b.labels);
        for i in 0..4 {
            assert!(single.frames.get(i).equal(&b.frames.get(3 * i)));
        }
        // Temporal jitter: the views and epochs of a sample pick their own stored clips.
        let key = |epoch| ViewKey {
            seed: 11,
            epoch,
            position: 0,
        };
        let clips: std::collections::BTreeSet<usize> = (0..4)
            .flat_map(|e| (0..4).map(move |v| key(e).view(v).below(4)))
            .collect();
        assert!(clips.len() > 1, "{clips:?}");
    }

    #[test]
    fn epoch_orders_cover_everything_once_and_depend_on_the_epoch() {
        let sizes = [5, 3, 7, 1];
        for buffer in [0, 4, 100] {
            let a = epoch_order(&sizes, 3, 0, buffer);
            let mut sorted = a.clone();
            sorted.sort();
            let all: Vec<(u32, u32)> = sizes
                .iter()
                .enumerate()
                .flat_map(|(s, &n)| (0..n).map(move |i| (s as u32, i as u32)))
                .collect();
            assert_eq!(sorted, all, "buffer {buffer}");
            assert_eq!(a, epoch_order(&sizes, 3, 0, buffer));
            assert_ne!(a, epoch_order(&sizes, 3, 1, buffer));
        }
        // Without a buffer each shard is read front to back.
        let a = epoch_order(&sizes, 3, 0, 0);
        for s in 0..4u32 {
            let idx: Vec<u32> = a.iter().filter(|x| x.0 == s).map(|x| x.1).collect();
            assert!(idx.windows(2).all(|w| w[0] < w[1]));
        }
    }

    /// Two ranks with batch 2 read, step for step, the samples and views one rank with
    /// batch 4 reads, every sample of the epoch once. Evaluation shares
    /// cover every sample once.
    #[test]
    fn ranks_share_an_epoch_as_one_larger_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut one = synth_spec(dir.path(), 1, None, 2, Codec::Raw);
        let one_batches: Vec<Batch> = {
            let spec = Arc::new(std::mem::replace(
                &mut one,
                synth_spec(&dir.path().join("b"), 1, None, 2, Codec::Raw),
            ));
            Loader::start(spec, 1, 0).map(|b| b.unwrap()).collect()
        };
        let rank = |r: usize| {
            let mut spec = synth_spec(&dir.path().join(format!("r{r}")), 1, None, 1, Codec::Raw);
            spec.batch = 2;
            spec.share = Share { rank: r, world: 2 };
            let spec = Arc::new(spec);
            assert_eq!(spec.batches(), 3);
            Loader::start(spec, 1, 0)
                .map(|b| b.unwrap())
                .collect::<Vec<_>>()
        };
        let (r0, r1) = (rank(0), rank(1));
        assert_eq!(one_batches.len(), 3);
        assert_eq!((r0.len(), r1.len()), (3, 3));
        let mut seen = vec![];
        for (i, b) in one_batches.iter().enumerate() {
            let joined = Tensor::cat(&[&r0[i].frames, &r1[i].frames], 0);
            assert!(joined.equal(&b.frames), "step {i}");
            let keys: Vec<_> = r0[i].keys.iter().chain(&r1[i].keys).cloned().collect();
            assert_eq!(keys, b.keys);
            let pos: Vec<u64> = r0[i]
                .positions
                .iter()
                .chain(&r1[i].positions)
                .copied()
                .collect();
            assert_eq!(pos, b.positions);
            seen.extend(keys);
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 12, "each of the 12 samples once");

        // Evaluation: 12 samples in batches of 5 (5, 5, 2) dealt to 2 ranks: 2 + 1.
        let mut all = vec![];
        for r in 0..2 {
            let mut spec = synth_spec(&dir.path().join(format!("e{r}")), 1, None, 1, Codec::Raw);
            spec.batch = 5;
            spec.drop_last = false;
            spec.shuffle = false;
            spec.share = Share { rank: r, world: 2 };
            assert_eq!(spec.batches(), 2 - r);
            all.extend(spec.plan(0).into_iter().flat_map(|(first, items)| {
                items
                    .into_iter()
                    .enumerate()
                    .map(move |(j, it)| (first + j, it))
            }));
        }
        all.sort();
        let positions: Vec<usize> = all.iter().map(|(p, _)| *p).collect();
        assert_eq!(positions, (0..12).collect::<Vec<_>>());
    }
}
