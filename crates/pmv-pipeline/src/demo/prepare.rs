//! The demo's data half: render the synthetic videos, encode them as H.264 MP4, serve
//! them on 127.0.0.1, and take them through ingest, fetch and shard like any user's
//! dataset. Training and evaluation happen in the trainer binary (it links libtorch).
//!
//! Owns the demo's directory in the data root (`demo/www/`, `demo/manifest.jsonl`,
//! `demo/classes.txt`) and the demo recipe. Videos already rendered are kept: a second
//! demo renders nothing, downloads nothing and shards nothing new. It writes only
//! inside the data root.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;

use super::serve::FileServer;
use crate::fetch::{self, FetchOptions, FetchReport};
use crate::ingest::{self, DEFAULT_MEMORY_BUDGET, IngestOptions, IngestReport};
use crate::manifest::{Format, SplitRatios};
use crate::media::encode::{EncodeOptions, Mp4Writer};
use crate::sharding::{ShardOptions, ShardReport, ShardRunError};
use pmv_catalog::Catalog;
use pmv_core::frame_recipe::{Filter, Fit, FrameParams, FrameRecipe, SampleMode};
use pmv_core::report::Reporter;
use pmv_core::root::DataRoot;
use pmv_shard::synth::{MAX_CLASSES, SynthVideo, class_names};

/// The demo's dataset name in the catalog.
pub const DATASET: &str = "demo";

/// How big a demo to make.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Classes (at most [`MAX_CLASSES`]).
    pub classes: usize,
    /// Videos per class; a quarter of them (at least one) are held out for evaluation.
    pub videos_per_class: usize,
    /// Seconds per video.
    pub seconds: f64,
    /// Video frame size, W×H (portrait).
    pub width: usize,
    pub height: usize,
    pub seed: u64,
    /// Threads that render and encode videos, and videos decoded at once.
    pub jobs: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            classes: MAX_CLASSES,
            videos_per_class: 64,
            seconds: 2.0,
            width: 96,
            height: 128,
            seed: 0,
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo: {0}")]
    Invalid(String),
    #[error("demo: {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("demo: {0}")]
    Encode(#[from] crate::media::encode::EncodeError),
    #[error("demo: {0}")]
    Catalog(#[from] pmv_catalog::CatalogError),
    #[error("demo: ingest: {0}")]
    Ingest(#[from] ingest::IngestError),
    #[error("demo: fetch: {0}")]
    Fetch(#[from] fetch::FetchError),
    #[error("demo: shard: {0}")]
    Shard(#[from] ShardRunError),
}

/// What the data half did.
#[derive(Debug, Serialize)]
pub struct Prepared {
    pub dataset: &'static str,
    pub classes: Vec<String>,
    pub train_videos: usize,
    pub val_videos: usize,
    /// Videos rendered and encoded by this run (the rest were already there).
    pub rendered: usize,
    pub recipe: FrameRecipe,
    pub recipe_id: String,
    pub ingest: IngestReport,
    pub fetch: FetchReport,
    pub shard: ShardReport,
    /// Seconds per step: render, ingest, fetch, shard.
    pub seconds: Vec<(&'static str, f64)>,
}

/// The demo recipe: 8 frames 5 apart (1.3 s of motion), two clips per video, 64×48
/// portrait frames covering the picture.
pub fn recipe() -> FrameRecipe {
    FrameRecipe {
        name: "demo-8x5-64x48".into(),
        params: FrameParams {
            rules: pmv_core::frame_recipe::RULES_VERSION,
            frames: 8,
            sampling: SampleMode::Stride,
            stride: Some(5),
            clips: 2,
            fps: pmv_core::frame_recipe::DEFAULT_FPS,
            height: 64,
            width: 48,
            fit: Fit::Cover,
            short_side: None,
            filter: Filter::Area,
            codec: pmv_core::frame_recipe::Codec::Raw,
        },
    }
}

/// One video of the demo.
struct VideoPlan {
    id: String,
    class: usize,
    seed: u64,
    split: &'static str,
}

fn plan(opts: &DemoOptions) -> Vec<VideoPlan> {
    let held_out = (opts.videos_per_class / 4).max(1);
    let mut out = vec![];
    for class in 0..opts.classes {
        for n in 0..opts.videos_per_class {
            out.push(VideoPlan {
                id: format!("demo-{class:02}-{n:03}"),
                class,
                seed: opts
                    .seed
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add((class * 1000 + n) as u64),
                split: if n < opts.videos_per_class - held_out {
                    "train"
                } else {
                    "val"
                },
            });
        }
    }
    out
}

/// Renders and encodes one video to `path` (via a temporary name, so a killed demo
/// never leaves a half-written video under its final name).
fn render(v: &VideoPlan, opts: &DemoOptions, path: &Path) -> Result<(), DemoError> {
    let tmp = path.with_extension("mp4.tmp");
    let video = SynthVideo::new(v.class, v.seed);
    let enc = EncodeOptions {
        fps: 30,
        gop: 30,
        crf: 18,
        preset: "veryfast".into(),
    };
    let mut w = Mp4Writer::create(&tmp, opts.width as u32, opts.height as u32, &enc)?;
    let frames = (opts.seconds * 30.0).round() as usize;
    let mut rgb = vec![0u8; opts.width * opts.height * 3];
    for i in 0..frames {
        video.render(i as f64 / 30.0, opts.width, opts.height, &mut rgb);
        w.push_rgb(&rgb)?;
    }
    w.finish()?;
    fs_err::rename(&tmp, path).map_err(|source| DemoError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Makes the demo dataset and takes it through ingest, fetch and shard.
pub fn prepare(
    root: &DataRoot,
    catalog: &mut Catalog,
    opts: &DemoOptions,
    reporter: &dyn Reporter,
) -> Result<Prepared, DemoError> {
    check_options(opts)?;
    let dir = root.path().join("demo");
    let www = dir.join("www");
    fs_err::create_dir_all(&www).map_err(io(&www))?;
    check_shape(root, &dir, opts)?;
    let mut seconds = vec![];

    // 1. Render what is missing, on every core.
    let started = Instant::now();
    let videos = plan(opts);
    let rendered = render_missing(&videos, opts, &www)?;
    seconds.push(("render", started.elapsed().as_secs_f64()));

    // 2. Serve them and list them, as a user's dataset would be.
    let server = FileServer::start(&www).map_err(io(&www))?;
    let names = class_names(opts.classes);
    let (classes_file, manifest_file) = write_lists(&dir, &videos, &names, &server)?;

    // 3. Ingest, fetch, shard.
    let t = Instant::now();
    let ingest = ingest::ingest(
        catalog,
        &IngestOptions {
            dataset: DATASET.into(),
            format: Format::Jsonl,
            inputs: vec![manifest_file],
            split: None,
            classes_file: Some(classes_file),
            links_file: None,
            url_template: None,
            ratios: SplitRatios::default(),
            multi_label: Some(false),
            base_dir: None,
            local_roots: vec![],
            strict: true,
            force: false,
            tmp_dir: root.tmp_dir(),
            memory_budget: DEFAULT_MEMORY_BUDGET,
        },
        reporter,
        &mut |_| {},
    )?;
    seconds.push(("ingest", t.elapsed().as_secs_f64()));
    let t = Instant::now();
    let fetch = fetch::run(
        root,
        catalog,
        &FetchOptions {
            dataset: Some(DATASET.into()),
            // Its own server, on loopback: the one private host the demo fetches from.
            settings: fetch::FetchSettings {
                private_hosts: vec![server.host()],
                ..fetch::FetchSettings::default()
            },
            ..FetchOptions::default()
        },
        reporter,
    )?;
    drop(server);
    if fetch.failed() > 0 {
        return Err(DemoError::Invalid(format!(
            "{} demo videos could not be fetched from the demo's own server: {:?}",
            fetch.failed(),
            fetch.failures
        )));
    }
    seconds.push(("fetch", t.elapsed().as_secs_f64()));
    let t = Instant::now();
    let recipe = recipe();
    let shard = crate::sharding::run(
        root,
        catalog,
        &ShardOptions {
            dataset: DATASET.into(),
            splits: vec![],
            recipe: recipe.clone(),
            samples_per_shard: None,
            jobs: Some(opts.jobs),
            limit: None,
            deadline: None,
            cancel: None,
        },
        reporter,
    )?;
    if !shard.corrupt.is_empty() || !shard.failed.is_empty() {
        return Err(DemoError::Invalid(format!(
            "demo videos did not decode: {:?} {:?}",
            shard.corrupt, shard.failed
        )));
    }
    seconds.push(("shard", t.elapsed().as_secs_f64()));
    let held_out = (opts.videos_per_class / 4).max(1);
    Ok(Prepared {
        dataset: DATASET,
        classes: names,
        train_videos: opts.classes * (opts.videos_per_class - held_out),
        val_videos: opts.classes * held_out,
        rendered,
        recipe_id: recipe.id(),
        recipe,
        ingest,
        fetch,
        shard,
        seconds,
    })
}

/// An I/O error at `path`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + use<> {
    let path = path.to_owned();
    move |source| DemoError::Io { path, source }
}

/// Refuses settings the demo cannot make.
fn check_options(opts: &DemoOptions) -> Result<(), DemoError> {
    if opts.classes < 2 || opts.classes > MAX_CLASSES {
        return Err(DemoError::Invalid(format!(
            "--classes {}: between 2 and {MAX_CLASSES}",
            opts.classes
        )));
    }
    if opts.videos_per_class < 2 {
        return Err(DemoError::Invalid(
            "--videos-per-class: at least 2 (one is held out)".into(),
        ));
    }
    if opts.width % 2 == 1 || opts.height % 2 == 1 || opts.width < 16 || opts.height < 16 {
        return Err(DemoError::Invalid(format!(
            "{}x{}: even sizes of at least 16",
            opts.width, opts.height
        )));
    }
    Ok(())
}

/// Videos are named by class and number only, so one root holds one demo: the
/// settings that shape the videos are recorded, and other settings are refused
/// rather than mixed with them.
fn check_shape(root: &DataRoot, dir: &Path, opts: &DemoOptions) -> Result<(), DemoError> {
    let shape = serde_json::json!({
        "seed": opts.seed,
        "width": opts.width,
        "height": opts.height,
        "seconds": opts.seconds,
    });
    let shape_file = dir.join("videos.json");
    match fs_err::read_to_string(&shape_file) {
        Ok(text) => {
            let stored: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if stored != shape {
                return Err(DemoError::Invalid(format!(
                    "{} holds a demo made with other settings ({stored}); use another \
                     --root for {shape}",
                    root.path().display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            pmv_core::util::write_atomic(&shape_file, shape.to_string().as_bytes())
                .map_err(io(&shape_file))?;
        }
        Err(e) => return Err(io(&shape_file)(e)),
    }
    Ok(())
}

/// Renders the videos not in `www` yet, on every core; returns how many.
fn render_missing(
    videos: &[VideoPlan],
    opts: &DemoOptions,
    www: &Path,
) -> Result<usize, DemoError> {
    let missing: Vec<&VideoPlan> = videos
        .iter()
        .filter(|v| !www.join(format!("{}.mp4", v.id)).is_file())
        .collect();
    let next = AtomicUsize::new(0);
    let first_error = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.clamp(1, 16) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(v) = missing.get(i) else { break };
                    let path = www.join(format!("{}.mp4", v.id));
                    if let Err(e) = render(v, opts, &path) {
                        first_error.lock().unwrap().get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap() {
        return Err(e);
    }
    Ok(missing.len())
}

/// Writes the class list and the manifest that lists every video at `server`; returns
/// their paths.
fn write_lists(
    dir: &Path,
    videos: &[VideoPlan],
    names: &[String],
    server: &FileServer,
) -> Result<(PathBuf, PathBuf), DemoError> {
    let classes_file = dir.join("classes.txt");
    pmv_core::util::write_atomic(&classes_file, (names.join("\n") + "\n").as_bytes())
        .map_err(io(&classes_file))?;
    let mut manifest = String::new();
    for v in videos {
        let row = serde_json::json!({
            "id": v.id,
            "urls": [format!("{}{}.mp4", server.base_url(), v.id)],
            "label": names[v.class],
            "split": v.split,
        });
        manifest.push_str(&row.to_string());
        manifest.push('\n');
    }
    let manifest_file = dir.join("manifest.jsonl");
    pmv_core::util::write_atomic(&manifest_file, manifest.as_bytes())
        .map_err(io(&manifest_file))?;
    Ok((classes_file, manifest_file))
}
