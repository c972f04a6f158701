//! The shard loader: worker threads turn shard samples into uint8 batches, in an order
//! fixed by the seed, behind a bounded prefetch queue.
//!
//! An epoch reads whole shards in a shuffled order, sequentially within each, through a
//! shuffle buffer that mixes samples across shards. For training each sample gives one
//! random clip of the K stored, one random resized crop and maybe a flip; for
//! evaluation it gives every view (clips × crops along the long side). The order and
//! every random choice derive from (seed, epoch, position), so the batches are the same
//! whatever the number of threads, and a resumed run can start mid-epoch. Workers fill
//! the batch tensor in place (pinned for CUDA); normalisation happens on the device.
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
use super::text;
use crate::device::to_device_async;
use crate::models::multimodal::Extra;
use crate::models::{MEAN, STD};
use crate::rng::{Purpose, Rng};

/// A sample that could not be used.
#[derive(Debug, Clone, Serialize)]
pub struct SampleError {
    pub shard: PathBuf,
    pub key: String,
    pub error: String,
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
    /// One random clip, a random resized crop (or, with `jitter`, short-side scale
    /// jitter to that range and a random crop), flip with probability `flip`.
    Train {
        scale: (f64, f64),
        ratio: (f64, f64),
        flip: f64,
        jitter: Option<(usize, usize)>,
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
            Views::Train { .. } => 1,
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

    /// Batches in an epoch.
    pub fn batches(&self) -> usize {
        let n = self.samples();
        if self.drop_last {
            n / self.batch
        } else {
            n.div_ceil(self.batch)
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

/// One batch, ready to go to the device.
pub struct Batch {
    /// uint8 `[N * views, T, H, W, 3]` (pinned when the spec asks).
    pub frames: Tensor,
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
    /// uint8 `[N, H, W, 3]` covers (zeros where absent) and which samples have one.
    pub covers: Option<(Tensor, Vec<bool>)>,
    /// `[N × max_len]` token ids (0-padded) and which samples have text.
    pub tokens: Option<(Vec<i64>, usize, Vec<bool>)>,
}

impl Batch {
    /// Samples in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The model input on `device`: float `[N * views, 3, T, H, W]`, normalised with the
    /// ImageNet mean and std. The copy from pinned memory does not block the host.
    pub fn input(&self, device: Device, norm: &Normalizer) -> Tensor {
        norm.apply(&self.frames.to_device_(device, Kind::Uint8, true, false))
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

    /// Labels as an int64 tensor on `device`.
    pub fn label_tensor(&self, device: Device) -> Tensor {
        to_device_async(Tensor::from_slice(&self.labels), device)
    }

    /// Multi-hot targets `[N, classes]` on `device` (multi-label batches).
    pub fn target_tensor(&self, device: Device, classes: usize) -> Option<Tensor> {
        self.targets.as_ref().map(|t| {
            to_device_async(
                Tensor::from_slice(t).view([self.len() as i64, classes as i64]),
                device,
            )
        })
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
    plan: Vec<Vec<(u32, u32)>>,
    next_yield: usize,
    next_send: usize,
    depth: usize,
    batch: usize,
}

impl Loader {
    /// Starts the workers on `epoch`, beginning at batch `start` (a resumed run skips the
    /// batches it has done without reading them).
    pub fn start(spec: Arc<LoaderSpec>, epoch: u64, start: usize) -> Loader {
        let order = spec.order(epoch);
        let mut plan: Vec<Vec<(u32, u32)>> = order
            .chunks(spec.batch.max(1))
            .map(|c| c.to_vec())
            .collect();
        if spec.drop_last && plan.last().is_some_and(|b| b.len() < spec.batch) {
            plan.pop();
        }
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
            batch: spec.batch.max(1),
        };
        loader.refill();
        loader
    }

    /// Batches in this epoch (including skipped ones).
    pub fn batches(&self) -> usize {
        self.plan.len()
    }

    fn refill(&mut self) {
        let batch = self.batch;
        while self.next_send < self.plan.len() && self.next_send < self.next_yield + self.depth {
            let i = self.next_send;
            let job = Job {
                index: i,
                first: i * batch,
                items: std::mem::take(&mut self.plan[i]),
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
    let mut tmp = Scratch::default();
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

fn build(spec: &LoaderSpec, epoch: u64, job: Job, tmp: &mut Scratch) -> Batch {
    let views = spec.views_per_sample();
    let [clips, t, h, w, _] = spec.shape;
    let (oh, ow) = spec.out;
    let frame_out = oh * ow * 3;
    let view_len = t * frame_out;
    let n = job.items.len();
    let mut frames = Tensor::zeros(
        [(n * views) as i64, t as i64, oh as i64, ow as i64, 3],
        (Kind::Uint8, Device::Cpu),
    );
    let classes = spec.labels.classes();
    let multi = matches!(spec.labels, Labels::Multi(_));
    let mut labels = Vec::with_capacity(n);
    let mut targets = multi.then(|| Vec::with_capacity(n * classes));
    let mut keys = Vec::with_capacity(n);
    let mut ids = vec![];
    let mut all_labels = Vec::with_capacity(n);
    let mut errors = vec![];
    let mut filled = 0usize;
    let cover_size = spec.extras.as_ref().and_then(|e| e.cover);
    let tokenizer = spec.extras.as_ref().and_then(|e| e.tokenizer.clone());
    let mut cover_t = cover_size.map(|(ch, cw)| {
        Tensor::zeros(
            [n as i64, ch as i64, cw as i64, 3],
            (Kind::Uint8, Device::Cpu),
        )
    });
    let mut cover_present: Vec<bool> = Vec::with_capacity(n);
    let mut tokens = tokenizer.as_ref().map(|t| {
        (
            Vec::with_capacity(n * t.max_len),
            t.max_len,
            Vec::with_capacity(n),
        )
    });
    {
        let bytes = tensor_bytes_mut(&mut frames);
        let mut cover_bytes = cover_t.as_mut().map(tensor_bytes_mut);
        for (pos, &(s, i)) in job.items.iter().enumerate() {
            let reader = &spec.shards[s as usize];
            let fail = |key: &str, error: String| SampleError {
                shard: reader.path().to_owned(),
                key: key.to_owned(),
                error,
            };
            let sample = match reader.sample(i as usize) {
                Ok(x) => x,
                Err(e) => {
                    let key = reader
                        .index()
                        .get(i as usize)
                        .map_or_else(|| format!("#{i}"), |x| x.key.clone());
                    errors.push(fail(&key, e.to_string()));
                    continue;
                }
            };
            if sample.shape[1..] != spec.shape[1..] || sample.shape[0] != clips {
                errors.push(fail(
                    sample.key,
                    format!(
                        "frames of shape {:?}, but this run's samples are {:?}",
                        sample.shape, spec.shape
                    ),
                ));
                continue;
            }
            let need_meta =
                multi || spec.ids || (sample.label.is_none() && spec.labels != Labels::None);
            let meta = if need_meta {
                match sample.meta() {
                    Ok(m) => Some(m),
                    Err(e) => {
                        errors.push(fail(sample.key, e.to_string()));
                        continue;
                    }
                }
            } else {
                None
            };
            let sample_labels = match read_labels(spec, sample.label, meta.as_ref()) {
                Ok(l) => l,
                Err(e) => {
                    errors.push(fail(sample.key, e));
                    continue;
                }
            };
            // The cover first: a sample whose cover cannot be decoded is left out whole.
            let cover = match (cover_size, sample.jpg) {
                (Some((ch, cw)), Some(jpg)) => match decode_cover(jpg, cw, ch, tmp) {
                    Ok(px) => Some(px),
                    Err(e) => {
                        errors.push(fail(sample.key, format!("cover (.jpg): {e}")));
                        continue;
                    }
                },
                _ => None,
            };
            if let Some(buf) = cover_bytes.as_mut() {
                let len = buf.len() / n;
                if let Some(px) = &cover {
                    buf[filled * len..(filled + 1) * len].copy_from_slice(px);
                }
                cover_present.push(cover.is_some());
            }
            if let (Some((ids, len, present)), Some(tok)) = (tokens.as_mut(), tokenizer.as_ref()) {
                let mut row = sample.txt.map(|t| tok.encode(t)).unwrap_or_default();
                present.push(sample.txt.is_some_and(|t| !t.trim().is_empty()));
                row.resize(*len, text::PAD);
                ids.extend(row);
            }
            let out = &mut bytes[filled * views * view_len..(filled + 1) * views * view_len];
            match &spec.views {
                Views::Train {
                    scale,
                    ratio,
                    flip,
                    jitter,
                } => {
                    let mut rng =
                        Rng::stream(spec.seed, Purpose::Augment, epoch, (job.first + pos) as u64);
                    let k = rng.below(clips);
                    let crop = match jitter {
                        Some(j) => augment::jitter_crop(&mut rng, w, h, ow, oh, *j, *flip),
                        None => augment::random_resized_crop(
                            &mut rng, w, h, ow, oh, *scale, *ratio, *flip,
                        ),
                    };
                    cut(sample.clip(k), crop, (w, h), (ow, oh), t, out, tmp);
                }
                Views::Eval {
                    clips: n_clips,
                    crops,
                    short_side,
                } => {
                    let mut v = 0;
                    let windows = match short_side {
                        Some(s) => augment::scaled_eval_crops(w, h, ow, oh, *crops, *s),
                        None => augment::eval_crops(w, h, ow, oh, *crops),
                    };
                    for k in augment::eval_clips(clips, *n_clips) {
                        for &crop in &windows {
                            let dst = &mut out[v * view_len..(v + 1) * view_len];
                            cut(sample.clip(k), crop, (w, h), (ow, oh), t, dst, tmp);
                            v += 1;
                        }
                    }
                }
            }
            labels.push(sample_labels.first().map_or(-1, |&l| l as i64));
            if let Some(tg) = targets.as_mut() {
                let at = tg.len();
                tg.resize(at + classes, 0.0);
                for &l in &sample_labels {
                    tg[at + l as usize] = 1.0;
                }
            }
            keys.push(sample.key.to_owned());
            if spec.ids {
                ids.push(meta.as_ref().map(|m| m.id.clone()).unwrap_or_default());
            }
            all_labels.push(sample_labels);
            filled += 1;
        }
    }
    if filled < n {
        frames = frames.narrow(0, 0, (filled * views) as i64);
        if let Some(c) = cover_t.as_mut() {
            *c = c.narrow(0, 0, filled as i64);
        }
    }
    let covers = cover_t.map(|t| (t, cover_present));
    if let Some(device) = spec.pin
        && filled > 0
    {
        // `_pin_memory` directly: `pin_memory(device)` warns that the argument is
        // deprecated on every call.
        frames = frames.internal_pin_memory(device);
    }
    Batch {
        covers,
        tokens,
        frames,
        views,
        labels,
        targets,
        keys,
        ids,
        all_labels,
        errors,
    }
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
    use super::*;

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
}
