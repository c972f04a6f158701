//! The decode engine: worker threads turn videos into sample frames (and, for a JPEG
//! recipe, encode them, so the single writer thread never does), the calling thread
//! receives them strictly in work order.
//!
//! Each worker owns a [`Decoder`] (its frame, packet, scaler and scratch space live as
//! long as the worker) and takes the next video only after it holds a buffer from a
//! small pool, so at most `jobs + 2` samples exist at once whatever the dataset size,
//! and the video the caller waits for always has a buffer. With many videos each worker
//! decodes one video single-threaded (one video per core); with fewer videos than cores
//! each decoder gets the spare cores as frame threads. A deadline or a cancellation flag
//! stops the taking of new videos; videos already started are finished and delivered.
//! This module never touches the catalog or writes files; the caller's `sink` does.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, mpsc};
use std::time::Instant;

use crate::media::geometry::Target;
use crate::media::{
    DecodeStats, Decoder, DecoderOptions, MediaError, Probe, Sampling, VideoFile, image,
    sample_indices,
};
use crate::sharding::work::Work;
use pmv_core::frame_recipe::{Codec, FrameParams};

/// One decoded video.
pub struct Decoded {
    /// uint8 RGB `(clips, T, H, W, 3)`.
    pub frames: Vec<u8>,
    /// A JPEG recipe's frames, one JPEG each, clip-major (encoded by the worker);
    /// empty for a raw recipe.
    pub jpegs: Vec<Vec<u8>>,
    pub indices: Vec<Vec<i64>>,
    pub probe: Probe,
    pub stats: DecodeStats,
    /// The cover as JPEG, when the item has one that could be read.
    pub cover: Option<Vec<u8>>,
    /// Why the cover was left out.
    pub cover_error: Option<String>,
}

/// Why the engine stopped taking videos before the end of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stop {
    Deadline,
    Cancelled,
    Error,
}

pub struct EngineOptions<'a> {
    /// Worker threads (videos decoded at once).
    pub jobs: usize,
    pub deadline: Option<Instant>,
    pub cancel: Option<&'a AtomicBool>,
}

pub struct EngineSummary {
    /// Videos taken (and delivered to the sink).
    pub started: usize,
    pub stopped: Option<Stop>,
    pub jobs: usize,
    pub threads_per_video: usize,
}

/// Buffers for samples, handed to workers and back.
struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
    ready: Condvar,
}

impl Pool {
    fn new(n: usize) -> Pool {
        Pool {
            free: Mutex::new((0..n).map(|_| Vec::new()).collect()),
            ready: Condvar::new(),
        }
    }

    fn take(&self) -> Vec<u8> {
        let mut free = self.free.lock().expect("pool lock");
        loop {
            if let Some(b) = free.pop() {
                return b;
            }
            free = self.ready.wait(free).expect("pool lock");
        }
    }

    fn give(&self, b: Vec<u8>) {
        self.free.lock().expect("pool lock").push(b);
        self.ready.notify_one();
    }
}

/// The number of cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Decodes `work` with `opts.jobs` workers and hands each result to `sink` in work
/// order; `sink` may give the frame buffer back for reuse. A sink error stops the engine
/// (videos in flight are finished and dropped) and is returned.
pub fn run<E>(
    root: &Path,
    work: &[Work],
    recipe: &FrameParams,
    opts: &EngineOptions<'_>,
    mut sink: impl FnMut(usize, Result<Decoded, MediaError>) -> Result<Option<Vec<u8>>, E>,
) -> Result<EngineSummary, E> {
    let jobs = opts.jobs.max(1).min(work.len().max(1));
    let threads = (cores() / jobs).max(1);
    let pool = Pool::new(jobs + 2);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let stopped: Mutex<Option<Stop>> = Mutex::new(None);
    let sample_bytes = recipe.sample_bytes() as usize;
    let mut error: Option<E> = None;
    let mut delivered = 0usize;

    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Result<Decoded, MediaError>, Vec<u8>)>();
        for _ in 0..jobs {
            let tx = tx.clone();
            let (pool, next, stop, stopped) = (&pool, &next, &stop, &stopped);
            scope.spawn(move || {
                let mut decoder = Decoder::new();
                let halt = |why: Stop| {
                    stop.store(true, Ordering::SeqCst);
                    stopped.lock().expect("stop lock").get_or_insert(why);
                };
                loop {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if opts.cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
                        halt(Stop::Cancelled);
                        break;
                    }
                    if opts.deadline.is_some_and(|d| Instant::now() >= d) {
                        halt(Stop::Deadline);
                        break;
                    }
                    let mut buf = pool.take();
                    if stop.load(Ordering::SeqCst) {
                        pool.give(buf);
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= work.len() {
                        pool.give(buf);
                        break;
                    }
                    buf.resize(sample_bytes, 0);
                    let result =
                        decode_one(&mut decoder, root, &work[i], recipe, threads, &mut buf)
                            .and_then(|d| encode(d, root, &work[i], recipe, &buf));
                    if tx.send((i, result, buf)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut waiting: BTreeMap<usize, (Result<Decoded, MediaError>, Vec<u8>)> = BTreeMap::new();
        for (i, result, buf) in rx {
            waiting.insert(i, (result, buf));
            while let Some((result, buf)) = waiting.remove(&delivered) {
                let mut back = None;
                let result = match result {
                    Ok(mut d) => {
                        // The frames travel in the pooled buffer.
                        d.frames = buf;
                        Ok(d)
                    }
                    Err(e) => {
                        back = Some(buf);
                        Err(e)
                    }
                };
                if error.is_none() {
                    match sink(delivered, result) {
                        Ok(b) => back = back.or(b),
                        Err(e) => {
                            error = Some(e);
                            stop.store(true, Ordering::SeqCst);
                            stopped
                                .lock()
                                .expect("stop lock")
                                .get_or_insert(Stop::Error);
                        }
                    }
                }
                pool.give(back.unwrap_or_default());
                delivered += 1;
            }
        }
    });
    if let Some(e) = error {
        return Err(e);
    }
    Ok(EngineSummary {
        started: delivered,
        stopped: *stopped.lock().expect("stop lock"),
        jobs,
        threads_per_video: threads,
    })
}

/// Encodes a decoded sample's frames with the recipe's codec (raw: nothing to do).
fn encode(
    mut d: Decoded,
    root: &Path,
    w: &Work,
    recipe: &FrameParams,
    frames: &[u8],
) -> Result<Decoded, MediaError> {
    if let Codec::Jpeg { quality } = recipe.codec {
        d.jpegs = pmv_shard::codec::encode_frames(frames, recipe.shape(), quality).map_err(
            |message| MediaError::Invalid {
                path: root.join(&w.video),
                message,
            },
        )?;
    }
    Ok(d)
}

fn decode_one(
    decoder: &mut Decoder,
    root: &Path,
    w: &Work,
    recipe: &FrameParams,
    threads: usize,
    buf: &mut [u8],
) -> Result<Decoded, MediaError> {
    let path = root.join(&w.video);
    let meta = fs_err::symlink_metadata(&path).map_err(|source| MediaError::Io {
        path: path.clone(),
        source,
    })?;
    // A symlink under a final name could change its bytes behind the verified record:
    // never read; the file is fetched again.
    if !meta.file_type().is_file() {
        return Err(MediaError::Io {
            path,
            source: std::io::Error::other(
                "not a regular file (a symbolic link under a final name is never read)",
            ),
        });
    }
    if w.size > 0 && meta.len() != w.size {
        return Err(MediaError::Io {
            path,
            source: std::io::Error::other(format!(
                "the file has {} bytes, the catalog verified {} (changed since it was verified)",
                meta.len(),
                w.size
            )),
        });
    }
    let mut video = VideoFile::open(&path)?;
    let indices = sample_indices(
        &Sampling::from(recipe),
        &video.table().times,
        video.table().duration_s,
    );
    let (stats, _) = decoder.extract(
        &mut video,
        &indices,
        &Target::from(recipe),
        &DecoderOptions { threads },
        buf,
    )?;
    let (cover, cover_error) = match &w.cover {
        Some(c) if std::fs::symlink_metadata(root.join(c)).is_ok_and(|m| !m.is_file()) => (
            None,
            Some(format!("{c} is not a regular file; the cover is left out")),
        ),
        Some(c) => match image::cover_jpeg(&root.join(c)) {
            Ok(b) => (Some(b), None),
            Err(e) => (None, Some(e.to_string())),
        },
        None => (None, None),
    };
    Ok(Decoded {
        frames: Vec::new(),
        jpegs: Vec::new(),
        indices,
        probe: video.probe().clone(),
        stats,
        cover,
        cover_error,
    })
}
