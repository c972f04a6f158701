//! Training: from a dataset's shards (or a shard directory) to a run directory with
//! weights, checkpoints, metrics and plots.
//!
//! Owns the run's setup (data, classes, input size, model, recipe → `run.json`), the
//! step loop (loader batches → device → mixup/cutmix → forward → soft-target or BCE
//! loss → backward with gradient accumulation → clipping → AdamW at the scheduled lr),
//! periodic checkpoints and validation, `metrics.jsonl` and `errors.jsonl`, resume from
//! the last checkpoint, and a checkpoint on SIGINT/SIGTERM. On CUDA nothing in the step
//! loop waits for the device except the metrics line every `--log-every` steps.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use pmv_core::report::{Reporter, Unit};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tch::{Device, Kind, Reduction, Tensor, nn};

use super::checkpoint::{self, RunDir, STATE_VERSION, State};
use super::cli::{ModelName, TrainArgs};
use super::data::loader::{Batch, Labels, Loader, LoaderSpec, Normalizer, Views};
use super::data::{self, Source, SplitData};
use super::device::{Precision, default_workers, device_name};
use super::error::TrainError;
use super::eval;
use super::models::mae::{DecoderConfig, MaeConfig, TubeMask, VideoMaePretrain};
use super::models::videomae::VideoMaeConfig;
use super::models::{self, InitReport, ModelSpec, Net, Noise};
use super::optim::{AdamW, ParamRule, Schedule};
use super::plot;
use super::rng::{Purpose, Rng};
use super::run::{self, RUN_VERSION, Recipe, RunConfig};
use pmv_term::output::errln;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    // A second signal ends the process the usual way.
    // SAFETY: signal() is async-signal-safe; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

/// SIGINT and SIGTERM ask the step loop to checkpoint and stop.
fn install_stop_handlers() {
    // SAFETY: the handler only stores to an atomic and resets its own disposition.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    Train {
        step: u64,
        /// Fractional epoch.
        epoch: f64,
        loss: f64,
        /// Top-1 on the un-mixed training batches since the last line.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        accuracy: Option<f64>,
        lr: f64,
        clips_per_s: f64,
        elapsed_s: f64,
    },
    Val {
        step: u64,
        epoch: u64,
        loss: f64,
        top1: f64,
        top5: f64,
        mean_class_accuracy: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        map: Option<f64>,
        samples: u64,
    },
    /// Pre-training: the reconstruction loss on the validation split, with the same
    /// masks at every validation.
    #[serde(rename = "val_reconstruction")]
    ValReconstruction {
        step: u64,
        epoch: u64,
        loss: f64,
        samples: u64,
    },
}

/// Appends lines to a JSON-lines file.
struct Lines {
    path: PathBuf,
    file: fs_err::File,
}

impl Lines {
    fn open(path: PathBuf) -> Result<Lines, TrainError> {
        let file = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(TrainError::io(&path))?;
        Ok(Lines { path, file })
    }

    fn push(&mut self, value: &impl Serialize) -> Result<(), TrainError> {
        let mut line = serde_json::to_vec(value).unwrap_or_default();
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(TrainError::io(&self.path))
    }

    fn sync(&self) -> Result<(), TrainError> {
        self.file.sync_data().map_err(TrainError::io(&self.path))
    }
}

/// Keeps the lines of a JSON-lines file that `keep` accepts (a resumed run drops what
/// was written after its checkpoint).
fn truncate_lines(
    path: &Path,
    keep: impl Fn(&serde_json::Value) -> bool,
) -> Result<(), TrainError> {
    if !path.exists() {
        return Ok(());
    }
    let text = fs_err::read_to_string(path).map_err(TrainError::io(path))?;
    let mut out = String::new();
    for line in text.lines() {
        // A torn last line (killed mid-write) is dropped too.
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
            && keep(&v)
        {
            out.push_str(line);
            out.push('\n');
        }
    }
    pmv_core::util::write_atomic(path, out.as_bytes()).map_err(TrainError::io(path))
}

pub fn read_records(path: &Path) -> Vec<Record> {
    fs_err::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Draws `loss.png` and `accuracy.png` from `metrics.jsonl`.
pub fn draw_curves(dir: &Path, records: &[Record]) -> Result<Vec<PathBuf>, TrainError> {
    let mut train_loss = vec![];
    let mut train_acc = vec![];
    let mut val_loss = vec![];
    let mut val_top1 = vec![];
    let mut val_top5 = vec![];
    for r in records {
        match r {
            Record::Train {
                step,
                loss,
                accuracy,
                ..
            } => {
                train_loss.push((*step as f64, *loss));
                if let Some(a) = accuracy {
                    train_acc.push((*step as f64, *a));
                }
            }
            Record::Val {
                step,
                loss,
                top1,
                top5,
                ..
            } => {
                val_loss.push((*step as f64, *loss));
                val_top1.push((*step as f64, *top1));
                val_top5.push((*step as f64, *top5));
            }
            Record::ValReconstruction { step, loss, .. } => {
                val_loss.push((*step as f64, *loss));
            }
        }
    }
    let series = |name, points, markers| plot::Series {
        name,
        points,
        markers,
    };
    let loss = plot::curves(
        &dir.join("loss.png"),
        "Loss",
        "loss",
        &[
            series("train", train_loss, false),
            series("validation", val_loss, true),
        ],
        None,
    )?;
    if train_acc.is_empty() && val_top1.is_empty() {
        // Pre-training: no accuracy to draw.
        return Ok(vec![loss]);
    }
    let acc = plot::curves(
        &dir.join("accuracy.png"),
        "Accuracy",
        "accuracy",
        &[
            series("train top-1", train_acc, false),
            series("validation top-1", val_top1, true),
            series("validation top-5", val_top5, true),
        ],
        Some((0.0, 1.0)),
    )?;
    Ok(vec![loss, acc])
}

/// Whether a safetensors file holds VideoMAE pre-training tensors (its header only).
fn is_pretraining_checkpoint(path: &Path) -> Result<bool, TrainError> {
    let mut f = fs_err::File::open(path).map_err(TrainError::io(path))?;
    let mut len = [0u8; 8];
    std::io::Read::read_exact(&mut f, &mut len).map_err(TrainError::io(path))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        return Err(TrainError::Invalid(format!(
            "{}: not a safetensors file (header of {n} bytes)",
            path.display()
        )));
    }
    let mut header = vec![0u8; n as usize];
    std::io::Read::read_exact(&mut f, &mut header).map_err(TrainError::io(path))?;
    let v: serde_json::Value = serde_json::from_slice(&header).map_err(|e| {
        TrainError::Invalid(format!("{}: not a safetensors file: {e}", path.display()))
    })?;
    Ok(v.as_object().is_some_and(|o| {
        o.keys()
            .any(|k| k.starts_with("decoder.") || k.starts_with("encoder_to_decoder."))
    }))
}

/// The data a run reads: its source, the train split and the validation split.
struct DataPlan {
    source: Source,
    train: SplitData,
    val: Option<SplitData>,
    classes: Option<Vec<String>>,
    multi_label: bool,
    /// Root to record catalog shard paths relative to.
    rel_root: Option<PathBuf>,
    name: String,
}

fn absolute(p: &str) -> String {
    let path = Path::new(p);
    if path.is_absolute() {
        p.to_owned()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path).to_string_lossy().into_owned())
            .unwrap_or_else(|_| p.to_owned())
    }
}

fn plan_data(args: &TrainArgs, root: &Path) -> Result<DataPlan, TrainError> {
    let d = &args.data;
    let want_val = d.val_split != "none";
    if let Some(dataset) = &d.dataset {
        let info = data::catalog_data(root, dataset, d.recipe.as_deref())?;
        let abs_root = fs_err::canonicalize(root).map_err(TrainError::io(root))?;
        let train = data::catalog_split(&abs_root, &info.dataset, &info.recipe_id, &d.train_split)?;
        let val = if want_val {
            match data::catalog_split(&abs_root, &info.dataset, &info.recipe_id, &d.val_split) {
                Ok(v) => Some(v),
                Err(data::DataError::NoShards { .. }) => {
                    tracing::warn!("no {} shards: training without validation", d.val_split);
                    None
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        Ok(DataPlan {
            source: Source::Catalog {
                root: abs_root.clone(),
                dataset: info.dataset.clone(),
                recipe_id: info.recipe_id.clone(),
                recipe_name: info.recipe_name.clone(),
                recipe_params: info.recipe_params.clone(),
            },
            train,
            val,
            classes: Some(info.classes),
            multi_label: info.multi_label,
            rel_root: Some(abs_root),
            name: info.dataset,
        })
    } else {
        let spec = absolute(d.shards.as_deref().unwrap_or_default());
        let train = data::shards_split(&spec, &d.train_split, true)?;
        let mut splits = vec![];
        let val = if !want_val {
            None
        } else if let Some(v) = &d.val_shards {
            let v = absolute(v);
            splits.push((d.val_split.clone(), v.clone()));
            Some(data::shards_split(&v, &d.val_split, true)?)
        } else {
            data::shards_split(&spec, &d.val_split, false).ok()
        };
        let classes = match &d.classes {
            Some(f) => Some(data::read_class_file(f)?),
            None => match data::find_class_file(&spec) {
                Some(f) => Some(data::read_class_file(&f)?),
                None => None,
            },
        };
        let name = Path::new(&spec)
            .components()
            .rev()
            .find_map(|c| {
                let s = c.as_os_str().to_string_lossy();
                (!s.contains(['*', '?']) && s != d.train_split).then(|| s.into_owned())
            })
            .unwrap_or_else(|| "shards".into());
        Ok(DataPlan {
            source: Source::Shards {
                train: spec,
                splits,
            },
            train,
            val,
            classes,
            multi_label: false,
            rel_root: None,
            name,
        })
    }
}

/// Class names from the labels the samples carry (`class_<id>` up to the largest).
fn classes_from_labels(readers: &[Arc<pmv_shard::ShardReader>]) -> Vec<String> {
    let mut max = None;
    for r in readers {
        for i in 0..r.len() {
            if let Ok(s) = r.sample(i) {
                let l = s
                    .label
                    .or_else(|| s.meta().ok().and_then(|m| m.labels.iter().max().copied()));
                if let Some(l) = l {
                    max = max.max(Some(l));
                }
            }
        }
    }
    (0..max.map_or(0, |m| m as usize + 1))
        .map(|i| format!("class_{i}"))
        .collect()
}

/// The model input (T, H, W) for samples of `shape`.
fn input_size(args: &TrainArgs, shape: [usize; 5]) -> Result<[usize; 3], TrainError> {
    let t = shape[1];
    let (mut h, mut w) = args.input.unwrap_or((shape[2], shape[3]));
    if args.model.is_vit() {
        if !t.is_multiple_of(2) {
            return Err(TrainError::Usage(format!(
                "the samples have {t} frames per clip; a ViT needs an even number (tubelets of 2 frames)"
            )));
        }
        h -= h % 16;
        w -= w % 16;
        if h == 0 || w == 0 {
            return Err(TrainError::Usage(format!(
                "input {:?} is smaller than one 16x16 ViT patch",
                args.input.unwrap_or((shape[2], shape[3]))
            )));
        }
    } else if h < 8 || w < 8 || (!matches!(args.model, ModelName::Tiny3d) && (h < 32 || w < 32)) {
        return Err(TrainError::Usage(format!(
            "input {h}x{w} is too small for {}",
            args.model.as_str()
        )));
    }
    Ok([t, h, w])
}

fn model_spec(
    args: &TrainArgs,
    classes: usize,
    input: [usize; 3],
) -> Result<ModelSpec, TrainError> {
    let [t, h, w] = input;
    if let Some(p) = &args.pretrain {
        return mae_spec(args, p, input);
    }
    match args.model {
        ModelName::Tiny3d => Ok(ModelSpec::Tiny3d {
            width: args.width.max(1),
            classes,
            dropout: args.dropout.unwrap_or(0.3),
        }),
        ModelName::X3dM | ModelName::X3dL => {
            let name = args.model.as_str();
            Ok(ModelSpec::X3d {
                name: name.into(),
                config: super::models::x3d::X3dConfig::preset(
                    name,
                    classes,
                    args.dropout.unwrap_or(0.5),
                )
                .expect("a preset"),
            })
        }
        ModelName::VitS | ModelName::VitB | ModelName::Videomae => {
            let name = args.model.as_str();
            let preset = VideoMaeConfig::preset(name, classes, t, (h, w));
            let mut config = match (&preset, &args.init) {
                (Some(p), _) => p.clone(),
                (None, Some(init)) => models::checkpoint_config(init)?,
                (None, None) => {
                    return Err(TrainError::Usage(
                        "--model videomae takes its architecture from --init's config.json: give --init".into(),
                    ));
                }
            };
            if let Some(init) = &args.init {
                let ck = models::checkpoint_config(init)?;
                if ck.hidden_size != config.hidden_size
                    || ck.num_hidden_layers != config.num_hidden_layers
                {
                    return Err(TrainError::Usage(format!(
                        "{} is a ViT with {} layers of width {}, not --model {name} ({} layers of width {})",
                        init.display(),
                        ck.num_hidden_layers,
                        ck.hidden_size,
                        config.num_hidden_layers,
                        config.hidden_size
                    )));
                }
                let pretraining = is_pretraining_checkpoint(init)?;
                config = VideoMaeConfig {
                    num_labels: classes,
                    num_frames: t,
                    image_size: [h, w],
                    // Fine-tuning a pre-trained encoder: mean pooling and fc_norm.
                    use_mean_pooling: pretraining || ck.use_mean_pooling,
                    ..ck
                };
            }
            Ok(ModelSpec::Videomae {
                name: name.into(),
                config,
                drop_path: args.drop_path.unwrap_or(0.1),
            })
        }
    }
}

/// The multimodal model around the video model `video`. A fresh run builds the text
/// vocabulary from the training split's texts and saves it as `tokenizer.json` in the
/// run; a resumed run reads that file.
fn multimodal_spec(
    args: &TrainArgs,
    video: ModelSpec,
    classes: usize,
    train: &[Arc<pmv_shard::ShardReader>],
    run_dir: &RunDir,
    existing: bool,
) -> Result<ModelSpec, TrainError> {
    use super::data::text::Tokenizer;
    use super::models::multimodal::{CoverSpec, MultimodalSpec, TextSpec};
    let text = if args.no_text {
        None
    } else {
        let path = run_dir.file("tokenizer.json");
        let tok = if existing && path.is_file() {
            Tokenizer::load(&path).map_err(|e| TrainError::Invalid(e.to_string()))?
        } else {
            let mut texts: Vec<String> = vec![];
            for r in train {
                for i in 0..r.len() {
                    if let Ok(s) = r.sample(i)
                        && let Some(t) = s.txt
                    {
                        texts.push(t.to_owned());
                    }
                }
            }
            let tok = Tokenizer::build(
                texts.iter().map(String::as_str),
                args.min_count,
                args.vocab_size,
                args.text_len.max(1),
            );
            if tok.is_empty() {
                tracing::warn!(
                    "--multimodal: the training samples carry no text seen {} times or more; \
                     the text branch will only learn when text is absent (--no-text leaves it out)",
                    args.min_count
                );
            }
            pmv_core::util::write_atomic(&path, &tok.to_bytes()).map_err(TrainError::io(&path))?;
            tok
        };
        Some(TextSpec {
            vocab: tok.len(),
            dim: args.text_dim.max(1),
            max_len: tok.max_len,
            tokenizer_sha256: pmv_core::util::sha256_hex(&tok.to_bytes()),
        })
    };
    Ok(ModelSpec::Multimodal(Box::new(MultimodalSpec {
        video,
        cover: (!args.no_cover).then_some(CoverSpec {
            height: args.cover_size.0,
            width: args.cover_size.1,
            channels: args.cover_channels.max(1),
        }),
        text,
        fusion: args.fusion_dim.max(1),
        classes,
        dropout: args.dropout.unwrap_or(0.3),
        modality_dropout: args.modality_dropout,
    })))
}

/// The pre-training model: a preset encoder with a fresh decoder, or the architecture
/// of `--init`'s `config.json` (a `VideoMAEForPreTraining` checkpoint).
fn mae_spec(
    args: &TrainArgs,
    p: &super::cli::PretrainOptions,
    [t, h, w]: [usize; 3],
) -> Result<ModelSpec, TrainError> {
    let name = args.model.as_str();
    let config = match &args.init {
        Some(init) => {
            if !is_pretraining_checkpoint(init)? {
                return Err(TrainError::Usage(format!(
                    "{} has no pre-training decoder: pretrain --init continues a \
                     VideoMAEForPreTraining checkpoint (fine-tune encoders with train --init)",
                    init.display()
                )));
            }
            let dir = init.parent().unwrap_or(Path::new("."));
            let path = dir.join("config.json");
            let text = fs_err::read_to_string(&path).map_err(TrainError::io(&path))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))?;
            let mut c = MaeConfig::from_hf(&v, p.mask_ratio)
                .map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))?;
            if let Some(preset) = VideoMaeConfig::preset(name, 0, t, (h, w))
                && (preset.hidden_size != c.encoder.hidden_size
                    || preset.num_hidden_layers != c.encoder.num_hidden_layers)
            {
                return Err(TrainError::Usage(format!(
                    "{} is a ViT with {} layers of width {}, not --model {name}",
                    init.display(),
                    c.encoder.num_hidden_layers,
                    c.encoder.hidden_size
                )));
            }
            c.encoder.num_frames = t;
            c.encoder.image_size = [h, w];
            c.encoder.num_labels = 0;
            c
        }
        None => {
            let mut encoder = VideoMaeConfig::preset(name, 0, t, (h, w)).ok_or_else(|| {
                TrainError::Usage(format!(
                    "pretrain --model {name}: give vit-s or vit-b, or --init a \
                     VideoMAEForPreTraining checkpoint"
                ))
            })?;
            encoder.use_mean_pooling = false;
            let decoder = DecoderConfig::for_encoder(
                encoder.hidden_size,
                p.decoder_depth.max(1),
                p.decoder_width,
            );
            MaeConfig {
                encoder,
                decoder,
                mask_ratio: p.mask_ratio,
                norm_pix_loss: p.norm_pix_loss,
            }
        }
    };
    config.check().map_err(TrainError::Usage)?;
    Ok(ModelSpec::Mae {
        name: name.into(),
        config,
        drop_path: args.drop_path.unwrap_or(0.0),
    })
}

fn recipe(args: &TrainArgs) -> Recipe {
    let vit = args.model.is_vit();
    let eff_batch = (args.batch_size * args.accum.max(1)) as f64;
    let lr = match (args.lr, args.base_lr) {
        (Some(lr), _) => lr,
        (None, Some(b)) => b * eff_batch / 256.0,
        (None, None) if vit => 1e-3 * eff_batch / 256.0,
        (None, None) => 2e-3,
    };
    Recipe {
        epochs: args.epochs,
        batch_size: args.batch_size,
        accum: args.accum.max(1),
        lr,
        min_lr: args.min_lr.unwrap_or(lr / 100.0),
        warmup_lr: args.warmup_lr.unwrap_or(lr / 100.0),
        warmup_epochs: args
            .warmup_epochs
            .unwrap_or_else(|| (args.epochs as f64 / 10.0).min(5.0)),
        adamw: super::optim::AdamWConfig {
            weight_decay: args.weight_decay,
            beta1: args.betas.0,
            beta2: args.betas.1,
            sgd: (args.optimizer == super::run::Optimizer::Sgd).then(|| super::optim::SgdConfig {
                momentum: args.momentum.unwrap_or(0.9),
                nesterov: args.nesterov,
            }),
            ..Default::default()
        },
        layer_decay: args.layer_decay.unwrap_or(if vit && args.init.is_some() {
            0.75
        } else {
            1.0
        }),
        label_smoothing: args.label_smoothing,
        mixup: args.mixup,
        cutmix: args.cutmix,
        mix_prob: args.mix_prob,
        clip_grad: args.clip_grad,
        crop_scale: args.crop_scale,
        crop_ratio: args.crop_ratio,
        jitter: args.jitter_scales,
        test_scale: args.test_scale,
        optimizer: args.optimizer,
        momentum: (args.optimizer == super::run::Optimizer::Sgd)
            .then(|| args.momentum.unwrap_or(0.9)),
        nesterov: args.nesterov,
        flip: args.flip,
        shuffle_buffer: args.run.shuffle_buffer,
    }
}

/// Targets `[n, C]` for single-label batches: one-hot, label-smoothed.
fn smoothed(labels: &Tensor, classes: i64, smoothing: f64) -> Tensor {
    let n = labels.size()[0];
    let off = smoothing / classes as f64;
    let mut t = Tensor::full([n, classes], off, (Kind::Float, labels.device()));
    let _ = t.scatter_value_(1, &labels.unsqueeze(1), 1.0 - smoothing + off);
    t
}

/// Mixup or CutMix of a batch and its targets (timm's pairing: each clip with the
/// batch reversed). Returns whether the batch was mixed.
fn mix(x: &mut Tensor, y: &mut Tensor, r: &Recipe, rng: &mut Rng) -> bool {
    let on = r.mixup > 0.0 || r.cutmix > 0.0;
    if !on || x.size()[0] < 2 || rng.f64() >= r.mix_prob {
        return false;
    }
    let use_cutmix = match (r.mixup > 0.0, r.cutmix > 0.0) {
        (true, true) => rng.f64() < 0.5,
        (false, true) => true,
        _ => false,
    };
    let alpha = if use_cutmix { r.cutmix } else { r.mixup };
    let mut lam = rng.beta(alpha, alpha);
    if use_cutmix {
        let size = x.size();
        let (h, w) = (size[3] as f64, size[4] as f64);
        let cut = (1.0 - lam).sqrt();
        let (ch, cw) = (h * cut, w * cut);
        let (cy, cx) = (rng.range(0.0, h), rng.range(0.0, w));
        let y0 = (cy - ch / 2.0).clamp(0.0, h) as i64;
        let y1 = (cy + ch / 2.0).clamp(0.0, h) as i64;
        let x0 = (cx - cw / 2.0).clamp(0.0, w) as i64;
        let x1 = (cx + cw / 2.0).clamp(0.0, w) as i64;
        if y1 > y0 && x1 > x0 {
            let flipped = x.flip([0]);
            let mut region = x.narrow(3, y0, y1 - y0).narrow(4, x0, x1 - x0);
            region.copy_(&flipped.narrow(3, y0, y1 - y0).narrow(4, x0, x1 - x0));
        }
        lam = 1.0 - ((y1 - y0).max(0) * (x1 - x0).max(0)) as f64 / (h * w);
    } else {
        *x = &*x * lam + x.flip([0]) * (1.0 - lam);
    }
    *y = &*y * lam + y.flip([0]) * (1.0 - lam);
    true
}

/// The tube masks of a batch, from the run's mask stream at `index`.
fn draw_mask(
    mae: &VideoMaePretrain,
    x: &Tensor,
    seed: u64,
    index: u64,
    device: Device,
) -> TubeMask {
    let (slots, per_slot) = mae.grid(x);
    let mut rng = Rng::stream(seed, Purpose::Mask, index, 0);
    TubeMask::draw(
        &mut rng,
        x.size()[0] as usize,
        slots,
        per_slot,
        mae.cfg.mask_ratio,
        device,
    )
}

/// Stochastic-depth and dropout draws of one micro-batch.
fn noise_for(net: &Net, batch: usize, seed: u64, index: u64, device: Device) -> Option<Noise> {
    let noise_len = net.noise_len(batch);
    (noise_len > 0).then(|| {
        let mut rng = Rng::stream(seed, Purpose::Noise, index, 0);
        let v: Vec<f32> = (0..noise_len).map(|_| rng.f32()).collect();
        Noise::new(&v, device)
    })
}

/// The mean reconstruction loss of a pre-training model over `spec` (no gradients),
/// with masks keyed by each batch's position, so every validation sees the same ones.
fn validate_reconstruction(
    mae: &VideoMaePretrain,
    spec: Arc<LoaderSpec>,
    device: Device,
    seed: u64,
    reporter: &dyn Reporter,
    label: &str,
) -> Result<(f64, u64, Vec<super::data::loader::SampleError>), TrainError> {
    let norm = Normalizer::new(device);
    let loader = Loader::start(Arc::clone(&spec), 0, 0);
    reporter.begin(label, Some(loader.batches() as u64), Unit::Items);
    let mut sum = Tensor::zeros([], (Kind::Double, device));
    let mut samples = 0u64;
    let mut errors = vec![];
    let result = tch::no_grad(|| -> Result<(), TrainError> {
        for (i, batch) in loader.enumerate() {
            let b = batch?;
            errors.extend(b.errors.iter().cloned());
            reporter.advance(1);
            if b.is_empty() {
                continue;
            }
            let x = b.input(device, &norm);
            // Validation masks live in their own corner of the mask stream.
            let mask = draw_mask(mae, &x, seed ^ 0x7661_6c69_6461_7465, i as u64, device);
            let loss = mae.loss(&x, &mask, None);
            let _ = sum.g_add_(&(loss.to_kind(Kind::Double) * b.len() as f64));
            samples += b.len() as u64;
        }
        Ok(())
    });
    reporter.end();
    result?;
    let loss = if samples > 0 {
        sum.double_value(&[]) / samples as f64
    } else {
        f64::NAN
    };
    Ok((loss, samples, errors))
}

/// What one training micro-batch needs.
struct MicroInput<'a> {
    net: &'a Net,
    batch: &'a Batch,
    recipe: &'a Recipe,
    seed: u64,
    /// Global index of the micro-batch (keys its mixing and noise draws).
    micro_index: u64,
    device: Device,
    norm: &'a Normalizer,
    classes: usize,
    multi_label: bool,
}

/// The loss of a micro-batch, and its top-1 hits when the batch was not mixed.
struct MicroOutput {
    loss: Tensor,
    hits: Option<Tensor>,
}

/// Forward pass and loss of one micro-batch: targets (label-smoothed one-hot, or
/// multi-hot), mixup/CutMix, the stochastic-depth and dropout noise, soft-target
/// cross-entropy or binary cross-entropy. Nothing here waits for the device.
fn micro_step(m: &MicroInput<'_>) -> MicroOutput {
    let b = m.batch;
    let r = m.recipe;
    if let Some(mae) = m.net.mae() {
        let x = b.input(m.device, m.norm);
        let mask = draw_mask(mae, &x, m.seed, m.micro_index, m.device);
        let noise = noise_for(m.net, b.len(), m.seed, m.micro_index, m.device);
        return MicroOutput {
            loss: mae.loss(&x, &mask, noise.as_ref()),
            hits: None,
        };
    }
    let mut x = b.input(m.device, m.norm);
    let labels = b.label_tensor(m.device);
    let mut y = if m.multi_label {
        let t = b
            .target_tensor(m.device, m.classes)
            .expect("multi-label batches carry targets");
        t * (1.0 - r.label_smoothing) + r.label_smoothing / 2.0
    } else {
        smoothed(&labels, m.classes as i64, r.label_smoothing)
    };
    let mut mix_rng = Rng::stream(m.seed, Purpose::Mix, m.micro_index, 0);
    let mixed = mix(&mut x, &mut y, r, &mut mix_rng);
    let noise = noise_for(m.net, b.len(), m.seed, m.micro_index, m.device);
    let extra = b.extra(m.device, m.norm);
    let logits = m.net.forward_with(&x, extra.as_ref(), true, noise.as_ref());
    let loss = if m.multi_label {
        logits.binary_cross_entropy_with_logits::<Tensor>(&y, None, None, Reduction::Mean)
    } else {
        -(&y * logits.log_softmax(-1, Kind::Float))
            .sum_dim_intlist([-1i64].as_slice(), false, Kind::Float)
            .mean(Kind::Float)
    };
    let hits = (!mixed && !m.multi_label)
        .then(|| logits.argmax(-1, false).eq_tensor(&labels).sum(Kind::Int64));
    MicroOutput { loss, hits }
}

/// `pmv-data-train train`: returns the summary and the number of samples left out.
pub fn train(
    args: &TrainArgs,
    reporter: &dyn Reporter,
    quiet: bool,
) -> Result<(serde_json::Value, u64), TrainError> {
    let started = Instant::now();
    if args.batch_size == 0 || args.epochs == 0 {
        return Err(TrainError::Usage(
            "--batch-size and --epochs must be positive".into(),
        ));
    }
    let root = run::root_or_default(&args.data.root);

    // Where the run lives; with --resume, what it recorded.
    let plan = plan_data(args, &root)?;
    let out = match &args.run.out {
        Some(o) => run::run_path(&root, o),
        None => root.join("runs").join(format!(
            "{}-{}{}",
            plan.name,
            args.model.as_str(),
            if args.pretrain.is_some() {
                "-pretrain"
            } else {
                ""
            }
        )),
    };
    let existing = out.join("run.json").is_file();
    if existing && !args.run.resume {
        return Err(TrainError::Usage(format!(
            "{} already holds a run: add --resume to continue it, or choose another --out",
            out.display()
        )));
    }
    let run_dir = RunDir::open(&out)?;
    let stored: Option<RunConfig> = if existing {
        Some(checkpoint::read_json(&run_dir.file("run.json"))?)
    } else {
        None
    };
    let state: Option<State> = if args.run.resume {
        checkpoint::load_state(&run_dir)?
    } else {
        None
    };
    if state.as_ref().is_some_and(|s| s.finished) {
        return Err(TrainError::Usage(format!(
            "{} has finished training; evaluate it, or start a new run with --init {}",
            out.display(),
            run_dir.file("model.safetensors").display()
        )));
    }

    // Data: a fresh run takes the current shards; a resumed one the shards it recorded.
    let (train_split, val_split) = match &stored {
        Some(cfg) => (
            run::recorded_split(cfg, &cfg.train_split, &cfg.train_shards)?,
            match &cfg.val_split {
                Some(v) if !cfg.val_shards.is_empty() => {
                    Some(run::recorded_split(cfg, v, &cfg.val_shards)?)
                }
                _ => None,
            },
        ),
        None => (plan.train.clone(), plan.val.clone()),
    };
    let (train_readers, mut shard_problems) = data::open_split(&train_split, args.data.verify);
    if train_readers.is_empty() {
        return Err(TrainError::Invalid(format!(
            "none of the {} training shards could be opened; first: {}",
            train_split.shards.len(),
            shard_problems.first().map_or("", |p| p.error.as_str())
        )));
    }
    if args.run.strict
        && let Some(p) = shard_problems.first()
    {
        return Err(TrainError::BadSample(p.error.clone()));
    }
    let (val_readers, val_problems) = match &val_split {
        Some(v) => data::open_split(v, args.data.verify),
        None => (vec![], vec![]),
    };
    if args.run.strict
        && let Some(p) = val_problems.first()
    {
        return Err(TrainError::BadSample(p.error.clone()));
    }
    let val_shard_problems = val_problems.clone();
    shard_problems.extend(val_problems);
    let sample_shape = train_readers
        .iter()
        .find_map(|r| r.index().first().map(|s| s.shape))
        .ok_or_else(|| TrainError::Invalid("the training shards hold no samples".into()))?;
    let classes = match &plan.classes {
        Some(c) if !c.is_empty() => c.clone(),
        _ => {
            let all: Vec<_> = train_readers.iter().chain(&val_readers).cloned().collect();
            classes_from_labels(&all)
        }
    };
    let pretraining = args.pretrain.is_some();
    if classes.len() < 2 && !pretraining {
        return Err(TrainError::Invalid(format!(
            "{} class(es) found; classification needs at least 2",
            classes.len()
        )));
    }
    let multi_label = if pretraining {
        false
    } else if args.multi_label {
        true
    } else if args.single_label {
        false
    } else {
        plan.multi_label
    };
    let input = input_size(args, sample_shape)?;
    let mut model_spec = model_spec(args, classes.len(), input)?;
    if args.multimodal {
        if pretraining {
            return Err(TrainError::Usage("pretrain has no --multimodal".into()));
        }
        if args.mixup > 0.0 || args.cutmix > 0.0 {
            return Err(TrainError::Usage(
                "--multimodal: mixup and CutMix mix frames but not covers or texts; leave them off"
                    .into(),
            ));
        }
        model_spec = multimodal_spec(
            args,
            model_spec,
            classes.len(),
            &train_readers,
            &run_dir,
            existing,
        )?;
    }
    let recipe = recipe(args);
    let rel_root = plan.rel_root.as_deref();
    let cfg = RunConfig {
        version: RUN_VERSION,
        source: plan.source.clone(),
        train_split: args.data.train_split.clone(),
        val_split: val_split.as_ref().map(|v| v.split.clone()),
        train_shards: run::entries(&train_split, rel_root),
        val_shards: val_split
            .as_ref()
            .map(|v| run::entries(v, rel_root))
            .unwrap_or_default(),
        classes: classes.clone(),
        multi_label,
        sample_shape,
        input,
        model: model_spec.clone(),
        init: args.init.clone(),
        recipe: recipe.clone(),
        seed: args.run.seed,
    };
    if let Some(old) = &stored {
        let diffs = old.differences(&cfg);
        if !diffs.is_empty() {
            return Err(TrainError::Usage(format!(
                "--resume: this command differs from the run in {}:\n  {}\n\
                 (resume with the run's own options, or start a new run)",
                out.display(),
                diffs.join("\n  ")
            )));
        }
    } else {
        checkpoint::write_json(&run_dir.file("run.json"), &cfg)?;
    }

    // Model and optimiser.
    let device = crate::device::resolve_device(args.run.runtime.device)?;
    if let Some(t) = args.run.runtime.threads {
        tch::set_num_threads(t);
    }
    let precision = crate::device::resolve_precision(args.run.runtime.precision, device);
    tch::manual_seed(args.run.seed as i64);
    let vs = nn::VarStore::new(device);
    let net = model_spec.build(&vs.root(), precision)?;
    if pretraining && args.init.is_none() && state.is_none() {
        VideoMaePretrain::xavier_init(&vs);
    }
    let mut init_report: Option<InitReport> = None;
    if let (Some(init), None) = (&args.init, &state) {
        let r = models::load_into(&vs, &model_spec, init, models::read_weights(init)?, true)?;
        for n in &r.reinitialised {
            tracing::warn!("--init: {n} re-initialised");
        }
        if !r.set_aside.is_empty() {
            tracing::info!(
                "--init: {} pre-training tensors set aside (decoder, mask token, final norm)",
                r.set_aside.len()
            );
        }
        if !quiet {
            errln!(
                "init: {} tensors from {}; head re-initialised: {}; set aside: {}",
                r.loaded,
                init.display(),
                if r.reinitialised.is_empty() {
                    "none".to_owned()
                } else {
                    r.reinitialised.join(", ")
                },
                r.set_aside.len()
            );
        }
        init_report = Some(r);
    }
    let mut trainable: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    trainable.sort_by(|a, b| a.0.cmp(&b.0));
    let params: i64 = trainable.iter().map(|(_, t)| t.numel() as i64).sum();
    let layer_decay = recipe.layer_decay;
    let mut opt = AdamW::new(trainable, device, recipe.adamw, |name, shape| {
        let (layer, depth) = net.layer_of(name);
        ParamRule {
            lr_scale: layer_decay.powi((depth - layer) as i32),
            decay: models::decays(name, shape),
        }
    });
    let mut bad_samples = 0u64;
    let (mut step, mut epoch, mut batch_in_epoch) = (0u64, 0u64, 0usize);
    let resumed_from = state.as_ref().map(|s| s.step);
    if let Some(s) = &state {
        let w = run_dir.file(&s.weights);
        models::load_into(&vs, &model_spec, &w, models::read_weights(&w)?, false)?;
        let o = run_dir.file(&s.optimizer);
        opt.load_state(models::read_weights(&o)?, s.step)
            .map_err(|e| TrainError::Invalid(format!("{}: {e}", o.display())))?;
        step = s.step;
        epoch = s.epoch;
        batch_in_epoch = s.batch_in_epoch;
        bad_samples = s.bad_samples;
        // Lines written after the checkpoint are written again.
        // (A validation line belongs to an epoch the checkpoint has completed.)
        let (cut_step, cut_epoch) = (s.step, s.epoch);
        truncate_lines(&run_dir.file("metrics.jsonl"), |v| {
            let st = v["step"].as_u64().unwrap_or(u64::MAX);
            match v["kind"].as_str() {
                Some("val") => st <= cut_step && v["epoch"].as_u64().is_some_and(|e| e < cut_epoch),
                _ => st <= cut_step,
            }
        })?;
        truncate_lines(&run_dir.file("errors.jsonl"), |v| {
            v["step"].as_u64().is_some_and(|st| st <= cut_step)
        })?;
        if !quiet {
            errln!(
                "resuming {} at step {} (epoch {}, batch {})",
                out.display(),
                step,
                epoch + 1,
                batch_in_epoch
            );
        }
    }

    // Loaders.
    let workers = default_workers(&args.run.runtime, device);
    let pin = device.is_cuda().then_some(device);
    let labels = if pretraining {
        Labels::None
    } else if multi_label {
        Labels::Multi(classes.len())
    } else {
        Labels::Single(classes.len())
    };
    let extras = run::extras_of(&model_spec, &run_dir)?;
    let train_spec = Arc::new(LoaderSpec {
        shards: train_readers,
        shape: sample_shape,
        out: (input[1], input[2]),
        views: Views::Train {
            scale: recipe.crop_scale,
            ratio: recipe.crop_ratio,
            flip: recipe.flip,
            jitter: recipe.jitter,
        },
        labels,
        batch: recipe.batch_size,
        workers,
        prefetch: args.run.runtime.prefetch,
        shuffle: true,
        shuffle_buffer: recipe.shuffle_buffer,
        drop_last: true,
        seed: args.run.seed,
        pin,
        ids: false,
        extras: extras.clone(),
    });
    let val_spec = (!val_readers.is_empty()).then(|| {
        Arc::new(LoaderSpec {
            shards: val_readers,
            shape: sample_shape,
            out: (input[1], input[2]),
            views: Views::Eval {
                clips: 1,
                crops: 1,
                short_side: recipe.test_scale,
            },
            labels,
            batch: recipe.batch_size,
            workers,
            prefetch: args.run.runtime.prefetch,
            shuffle: false,
            shuffle_buffer: 0,
            drop_last: false,
            seed: args.run.seed,
            pin,
            ids: true,
            extras: extras.clone(),
        })
    });
    let batches = train_spec.batches();
    let accum = recipe.accum;
    let steps_per_epoch = (batches / accum) as u64;
    if steps_per_epoch == 0 {
        return Err(TrainError::Usage(format!(
            "{} training samples make no optimiser step of {} x {} clips",
            train_spec.samples(),
            recipe.batch_size,
            accum
        )));
    }
    let total_steps = steps_per_epoch * recipe.epochs;
    let schedule = Schedule {
        lr: recipe.lr,
        min_lr: recipe.min_lr,
        warmup_lr: recipe.warmup_lr,
        warmup_steps: (recipe.warmup_epochs * steps_per_epoch as f64).round() as u64,
        total_steps,
    };
    if !quiet {
        errln!(
            "{} {} on {} ({} train samples in {} shards{}), {} classes, input {}x{}x{}, \
             {:.1} M parameters, {} on {} ({}), {} epochs of {} steps",
            if pretraining { "pretrain" } else { "train" },
            model_spec.name(),
            plan.name,
            train_spec.samples(),
            train_spec.shards.len(),
            val_spec
                .as_ref()
                .map_or(String::new(), |v| format!(", {} val", v.samples())),
            classes.len(),
            input[0],
            input[1],
            input[2],
            params as f64 / 1e6,
            match precision {
                Precision::Fp32 => "fp32",
                Precision::Bf16 => "bf16",
            },
            device_name(device),
            format_args!("{workers} loader threads"),
            recipe.epochs,
            steps_per_epoch
        );
    }

    install_stop_handlers();
    let mut metrics = Lines::open(run_dir.file("metrics.jsonl"))?;
    let mut errors = Lines::open(run_dir.file("errors.jsonl"))?;
    for p in &shard_problems {
        if state.is_none() {
            errors.push(
                &json!({"step": step, "shard": p.path, "samples": p.samples, "error": p.error}),
            )?;
        }
    }
    if state.is_none() {
        bad_samples += shard_problems
            .iter()
            .map(|p| p.samples.unwrap_or(1) as u64)
            .sum::<u64>();
    }
    let mut state = state.unwrap_or(State {
        version: STATE_VERSION,
        step: 0,
        epoch: 0,
        batch_in_epoch: 0,
        finished: false,
        weights: String::new(),
        optimizer: String::new(),
        seed: args.run.seed,
        rng: "counter-based: xoshiro256++ keyed by (seed, purpose, epoch or step, position)".into(),
        classes: classes.clone(),
        recipe: serde_json::to_value(&recipe).unwrap_or_default(),
        bad_samples: 0,
        saved_at: 0,
    });
    let mut metadata: BTreeMap<String, String> = BTreeMap::new();
    metadata.insert("format".into(), "pt".into());
    metadata.insert("pmv_data_model".into(), model_spec.name().to_owned());
    let hf_config = match &model_spec {
        ModelSpec::Videomae { config, .. } => Some(config.to_hf(&classes, multi_label)),
        ModelSpec::Mae { config, .. } => Some(config.to_hf()),
        _ => None,
    };
    if let Some(c) = &hf_config {
        // Beside the checkpoints, so any of them can be an --init.
        fs_err::create_dir_all(run_dir.checkpoints())
            .map_err(TrainError::io(&run_dir.checkpoints()))?;
        checkpoint::write_json(&run_dir.checkpoints().join("config.json"), c)?;
    }
    let save = |opt: &AdamW,
                state: State,
                bad: u64,
                at: (u64, u64, usize),
                metrics: &Lines,
                errors: &Lines|
     -> Result<State, TrainError> {
        metrics.sync()?;
        errors.sync()?;
        let weights: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        let s = State {
            step: at.0,
            epoch: at.1,
            batch_in_epoch: at.2,
            bad_samples: bad,
            ..state
        };
        Ok(checkpoint::save(
            &run_dir,
            &weights,
            &opt.state(),
            s,
            &metadata,
            args.run.keep,
        )?)
    };

    let norm = Normalizer::new(device);
    let mut last_val: Option<eval::EvalResult> = None;
    let mut last_val_loss: Option<f64> = None;
    let mut interrupted = false;
    let mut last_loss = f64::NAN;
    let mut last_train_acc: Option<f64> = None;
    let mut clips_done = 0u64;
    let train_started = Instant::now();
    'epochs: while epoch < recipe.epochs {
        let mut loader = Loader::start(Arc::clone(&train_spec), epoch, batch_in_epoch);
        reporter.begin(
            &format!("epoch {}/{}", epoch + 1, recipe.epochs),
            Some(steps_per_epoch),
            Unit::Items,
        );
        reporter.advance((batch_in_epoch / accum) as u64);
        // Device-side sums since the last metrics line.
        let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
        let mut correct = Tensor::zeros([], (Kind::Int64, device));
        let (mut micro, mut counted) = (0u64, 0u64);
        let mut window_clips = 0u64;
        let mut window_start = Instant::now();
        while ((batch_in_epoch / accum) as u64) < steps_per_epoch {
            let lr = schedule.at(step);
            for k in 0..accum {
                let b = loader
                    .next()
                    .ok_or_else(|| TrainError::Invalid("the loader ended early".into()))??;
                if !b.errors.is_empty() {
                    for e in &b.errors {
                        tracing::error!("{e}");
                        errors.push(&json!({"step": step, "epoch": epoch, "shard": e.shard, "key": e.key, "error": e.error}))?;
                    }
                    bad_samples += b.errors.len() as u64;
                    if args.run.strict {
                        return Err(TrainError::BadSample(b.errors[0].to_string()));
                    }
                }
                if b.is_empty() {
                    continue;
                }
                let micro_index = step * accum as u64 + k as u64;
                let n = b.len() as u64;
                let m = micro_step(&MicroInput {
                    net: &net,
                    batch: &b,
                    recipe: &recipe,
                    seed: args.run.seed,
                    micro_index,
                    device,
                    norm: &norm,
                    classes: classes.len(),
                    multi_label,
                });
                (&m.loss / accum as f64).backward();
                let _ = loss_sum.g_add_(&m.loss.detach());
                micro += 1;
                if let Some(hits) = &m.hits {
                    let _ = correct.g_add_(hits);
                    counted += n;
                }
                window_clips += n;
                clips_done += n;
            }
            opt.bind_grads();
            if let Some(c) = recipe.clip_grad {
                let _ = opt.clip(c);
            }
            opt.update(lr);
            opt.zero_grad();
            step += 1;
            batch_in_epoch += accum;
            reporter.advance(1);

            let epoch_done = (batch_in_epoch / accum) as u64 >= steps_per_epoch;
            if step.is_multiple_of(args.run.log_every.max(1)) || epoch_done {
                // The one wait for the device: read the sums.
                let loss = if micro > 0 {
                    loss_sum.double_value(&[]) / micro as f64
                } else {
                    f64::NAN
                };
                if micro > 0 && !loss.is_finite() {
                    return Err(TrainError::Diverged { step, loss });
                }
                let acc = (counted > 0).then(|| correct.int64_value(&[]) as f64 / counted as f64);
                let secs = window_start.elapsed().as_secs_f64().max(1e-9);
                metrics.push(&Record::Train {
                    step,
                    epoch: epoch as f64 + (batch_in_epoch / accum) as f64 / steps_per_epoch as f64,
                    loss,
                    accuracy: acc,
                    lr,
                    clips_per_s: window_clips as f64 / secs,
                    elapsed_s: started.elapsed().as_secs_f64(),
                })?;
                tracing::info!(
                    "step {step}/{total_steps}: loss {loss:.4}, lr {lr:.3e}, {:.1} clips/s",
                    window_clips as f64 / secs
                );
                last_loss = loss;
                last_train_acc = acc.or(last_train_acc);
                let _ = loss_sum.zero_();
                let _ = correct.zero_();
                micro = 0;
                counted = 0;
                window_clips = 0;
                window_start = Instant::now();
            }
            if args.run.save_every > 0 && step.is_multiple_of(args.run.save_every) && !epoch_done {
                state = save(
                    &opt,
                    state,
                    bad_samples,
                    (step, epoch, batch_in_epoch),
                    &metrics,
                    &errors,
                )?;
            }
            if STOP.load(Ordering::SeqCst) {
                state = save(
                    &opt,
                    state,
                    bad_samples,
                    (step, epoch, batch_in_epoch),
                    &metrics,
                    &errors,
                )?;
                interrupted = true;
                reporter.end();
                break 'epochs;
            }
        }
        reporter.end();
        drop(loader);
        // End of the epoch: validate, then checkpoint at the start of the next.
        let last_epoch = epoch + 1 == recipe.epochs;
        let validate_now = (epoch + 1).is_multiple_of(args.run.eval_every.max(1)) || last_epoch;
        if let (Some(vspec), Some(mae), true) = (&val_spec, net.mae(), validate_now) {
            let (loss, samples, errs) = validate_reconstruction(
                mae,
                Arc::clone(vspec),
                device,
                args.run.seed,
                reporter,
                &format!("validate epoch {}", epoch + 1),
            )?;
            for e in &errs {
                errors.push(&json!({"step": step, "epoch": epoch, "split": "val", "shard": e.shard, "key": e.key, "error": e.error}))?;
            }
            if args.run.strict
                && let Some(e) = errs.first()
            {
                return Err(TrainError::BadSample(e.to_string()));
            }
            metrics.push(&Record::ValReconstruction {
                step,
                epoch,
                loss,
                samples,
            })?;
            if !quiet {
                errln!(
                    "epoch {}/{}: train loss {last_loss:.4}, val reconstruction loss {loss:.4}",
                    epoch + 1,
                    recipe.epochs
                );
            }
            last_val_loss = Some(loss);
        } else if let Some(vspec) = &val_spec
            && net.mae().is_none()
            && ((epoch + 1).is_multiple_of(args.run.eval_every.max(1)) || last_epoch)
        {
            // The last validation keeps its predictions for the run's report.
            let r = eval::evaluate(
                &net,
                Arc::clone(vspec),
                device,
                &classes,
                last_epoch,
                reporter,
                &format!("validate epoch {}", epoch + 1),
            )?;
            for e in &r.errors {
                errors.push(&json!({"step": step, "epoch": epoch, "split": "val", "shard": e.shard, "key": e.key, "error": e.error}))?;
            }
            if args.run.strict
                && let Some(e) = r.errors.first()
            {
                return Err(TrainError::BadSample(e.to_string()));
            }
            let s = &r.summary;
            metrics.push(&Record::Val {
                step,
                epoch,
                loss: s.loss,
                top1: s.top1,
                top5: s.top5,
                mean_class_accuracy: s.mean_class_accuracy,
                map: s.map,
                samples: s.samples,
            })?;
            if !quiet {
                errln!(
                    "epoch {}/{}: train loss {:.4}, val loss {:.4}, val top-1 {:.1}%, top-5 {:.1}%",
                    epoch + 1,
                    recipe.epochs,
                    last_loss,
                    s.loss,
                    100.0 * s.top1,
                    100.0 * s.top5
                );
            }
            last_val = Some(r);
        } else if !quiet {
            errln!(
                "epoch {}/{}: train loss {last_loss:.4}",
                epoch + 1,
                recipe.epochs
            );
        }
        epoch += 1;
        batch_in_epoch = 0;
        state = save(
            &opt,
            state,
            bad_samples,
            (step, epoch, 0),
            &metrics,
            &errors,
        )?;
        let _ = draw_curves(
            run_dir.path(),
            &read_records(&run_dir.file("metrics.jsonl")),
        )
        .map_err(|e| tracing::warn!("{e}"));
        if STOP.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
    }
    let train_secs = train_started.elapsed().as_secs_f64();

    // Final outputs.
    let mut files: Vec<PathBuf> = vec![];
    let plots = draw_curves(
        run_dir.path(),
        &read_records(&run_dir.file("metrics.jsonl")),
    )?;
    if !interrupted {
        files = write_model(&run_dir, &vs, &cfg, &metadata)?;
        state.finished = true;
        state.step = step;
        state.epoch = epoch;
        state.batch_in_epoch = 0;
        state.bad_samples = bad_samples;
        checkpoint::write_json(&run_dir.file("state.json"), &state)?;
    }
    // The last validation as an evaluation report (1 view per video: the middle clip,
    // centre crop); `eval` gives every view.
    let mut val_report: Option<eval::Written> = None;
    if let (false, Some(r), Some(v)) = (interrupted, &last_val, &val_split) {
        let dir = run_dir.file(&format!("eval-{}-1x1", v.split));
        val_report = Some(eval::write_reports(
            &dir,
            &cfg,
            r,
            &val_shard_problems,
            json!({
                "run_dir": run_dir.path(),
                "split": v.split,
                "views": { "clips": 1, "crops": 1 },
                "weights": run_dir.file("model.safetensors"),
                "device": device_name(device),
                "precision": precision,
                "shards": v.shards.iter().map(|s| &s.path).collect::<Vec<_>>(),
            }),
        )?);
    }
    let checkpoints: Vec<PathBuf> = fs_err::read_dir(run_dir.checkpoints())
        .map(|rd| {
            let mut v: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().ends_with(".safetensors"))
                })
                .collect();
            v.sort();
            v
        })
        .unwrap_or_default();
    let val = last_val.as_ref().map(|r| {
        json!({
            "top1": r.summary.top1,
            "top5": r.summary.top5,
            "loss": r.summary.loss,
            "mean_class_accuracy": r.summary.mean_class_accuracy,
            "map": r.summary.map,
            "samples": r.summary.samples,
        })
    });
    let mut summary = json!({
        "run_dir": run_dir.path(),
        "status": if interrupted { "interrupted" } else { "ok" },
        "model": model_spec.name(),
        "data": plan.name,
        "classes": classes.len(),
        "parameters": params,
        "steps": step,
        "epochs": epoch,
        "resumed_from_step": resumed_from,
        "final_loss": last_loss,
        "train_top1": last_train_acc,
        "val": val,
        "val_loss": val.as_ref().map(|v| v["loss"].clone()).or(last_val_loss.map(|l| json!(l))),
        "top1": val.as_ref().map(|v| v["top1"].clone()),
        "top5": val.as_ref().map(|v| v["top5"].clone()),
        "eval_json": val_report.as_ref().map(|w| &w.eval_json),
        "bad_samples": bad_samples,
        "device": device_name(device),
        "precision": precision,
        "clips_per_s": clips_done as f64 / train_secs.max(1e-9),
        "duration_s": started.elapsed().as_secs_f64(),
        "init": init_report,
        "files": {
            "run_json": run_dir.file("run.json"),
            "state_json": run_dir.file("state.json"),
            "metrics": run_dir.file("metrics.jsonl"),
            "errors": run_dir.file("errors.jsonl"),
            "model": files,
            "checkpoints": checkpoints,
            "plots": plots,
            "eval_json": val_report.as_ref().map(|w| &w.eval_json),
            "predictions_csv": val_report.as_ref().map(|w| &w.predictions_csv),
            "eval_plots": val_report.as_ref().map(|w| &w.plots),
        },
    });
    checkpoint::write_json(&run_dir.file("summary.json"), &summary)?;
    // A run on a catalog's shards is recorded there, as every pmv-data run is.
    let command = if args.pretrain.is_some() {
        "pretrain"
    } else {
        "train"
    };
    let recorded = match &plan.source {
        Source::Catalog { root, .. } => {
            record_in_catalog(root, command, &summary, interrupted, bad_samples)
        }
        _ => None,
    };
    if let Some(o) = summary.as_object_mut() {
        o.insert("command".into(), command.into());
        o.insert("run_id".into(), json!(recorded.as_ref().map(|r| &r.0)));
        o.insert("report".into(), json!(recorded.as_ref().map(|r| &r.1)));
    }
    if interrupted {
        return Err(TrainError::Interrupted {
            step,
            run_dir: run_dir.path().to_owned(),
        });
    }
    Ok((summary, bad_samples))
}

/// Writes the final model: `model.safetensors`, `model.json` and, for ViTs, the
/// `transformers` `config.json`. Returns their paths.
fn write_model(
    run: &RunDir,
    vs: &nn::VarStore,
    cfg: &RunConfig,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<PathBuf>, TrainError> {
    let weights: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    let model_file = run.file("model.safetensors");
    checkpoint::write_safetensors(&model_file, &weights, metadata)?;
    let model_json = run.file("model.json");
    checkpoint::write_json(
        &model_json,
        &json!({
            "model": cfg.model,
            "classes": cfg.classes,
            "multi_label": cfg.multi_label,
            "input": { "frames": cfg.input[0], "height": cfg.input[1], "width": cfg.input[2] },
            "normalisation": { "mean": super::models::MEAN, "std": super::models::STD },
        }),
    )?;
    let mut files = vec![model_file, model_json];
    if run.file("tokenizer.json").is_file() {
        files.push(run.file("tokenizer.json"));
    }
    let hf = match &cfg.model {
        ModelSpec::Videomae { config, .. } => Some(config.to_hf(&cfg.classes, cfg.multi_label)),
        ModelSpec::Mae { config, .. } => Some(config.to_hf()),
        _ => None,
    };
    if let Some(v) = hf {
        let c = run.file("config.json");
        checkpoint::write_json(&c, &v)?;
        files.push(c);
    }
    Ok(files)
}

/// Adds a finished row to the catalog's `runs` table and `runs/<id>.json` (shaped as
/// every command's run report); returns the run id and the report's path. A failure
/// here is logged, never fatal (the run directory holds everything).
fn record_in_catalog(
    root: &Path,
    command: &str,
    summary: &serde_json::Value,
    interrupted: bool,
    bad: u64,
) -> Option<(String, PathBuf)> {
    use pmv_catalog::{Catalog, RunStatus};
    let id = pmv_core::report::new_run_id(command);
    let status = if interrupted {
        RunStatus::Interrupted
    } else if bad > 0 {
        RunStatus::Partial
    } else {
        RunStatus::Ok
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = Catalog::open(&root.join("catalog.sqlite")).and_then(|c| {
        c.start_run(&id, command, &json!(argv))?;
        c.finish_run(&id, status, summary)
    });
    if let Err(e) = result {
        tracing::warn!("could not record the run in the catalog: {e}");
        return None;
    }
    let root = pmv_core::root::DataRoot::new(root);
    let document = json!({
        "run_id": id,
        "command": command,
        "pmv_data": pmv_core::VERSION,
        "args": argv,
        "result": summary,
    });
    match pmv_core::report::write_run_report(&root, &id, &document) {
        Ok(path) => Some((id, path)),
        Err(e) => {
            tracing::warn!("could not write the run report: {e}");
            None
        }
    }
}
