//! What a training command asks for, resolved: the data it names (a catalog dataset
//! or a shard directory), the class names, the model input, the model (classifier,
//! multimodal or masked pre-training) and the recipe with every default filled in.
//!
//! Owns those decisions and their usage errors. It opens no run directory and builds
//! no model; the multimodal vocabulary is the one file it writes (`pmv-tokenizer.json`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::checkpoint::RunDir;
use crate::cli::{ModelName, TrainArgs};
use crate::data::{self, Source, SplitData};
use crate::error::TrainError;
use crate::models::mae::{DecoderConfig, MaeConfig};
use crate::models::videomae::VideoMaeConfig;
use crate::models::{self, ModelSpec};
use crate::run::HyperParams;

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
pub(super) struct DataPlan {
    pub(super) source: Source,
    pub(super) train: SplitData,
    pub(super) val: Option<SplitData>,
    pub(super) classes: Option<Vec<String>>,
    pub(super) multi_label: bool,
    /// Root to record catalog shard paths relative to.
    pub(super) rel_root: Option<PathBuf>,
    pub(super) name: String,
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

pub(super) fn plan_data(args: &TrainArgs, root: &Path) -> Result<DataPlan, TrainError> {
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
            None => match data::find_class_file(&spec, &d.train_split) {
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
pub(super) fn classes_from_labels(readers: &[Arc<pmv_shard::ShardReader>]) -> Vec<String> {
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

/// The model input (T, H, W) for samples of `shape`. A ViT's follows the rule `eval`
/// checks too ([`crate::cli::check_vit_input`]): `--input` must be multiples of the
/// patch size (refused otherwise, never rounded); without `--input`, the stored frame
/// size is rounded down to such multiples, and the log says so.
pub(super) fn input_size(args: &TrainArgs, shape: [usize; 5]) -> Result<[usize; 3], TrainError> {
    let t = shape[1];
    let (mut h, mut w) = args.input.unwrap_or((shape[2], shape[3]));
    if args.model.is_vit() {
        let (patch, tubelet) = vit_geometry(args)?;
        crate::cli::check_vit_frames(t, tubelet).map_err(TrainError::Usage)?;
        if args.input.is_some() {
            crate::cli::check_vit_input((h, w), patch).map_err(TrainError::Usage)?;
        } else {
            let (sh, sw) = (h, w);
            h -= h % patch;
            w -= w % patch;
            if h == 0 || w == 0 {
                return Err(TrainError::Usage(format!(
                    "the stored frames ({sh}x{sw}) are smaller than one {patch}x{patch} ViT patch"
                )));
            }
            if (h, w) != (sh, sw) {
                tracing::warn!(
                    "the stored frames are {sh}x{sw}; the ViT's input is {h}x{w}, the largest \
                     multiples of its {patch} pixel patches (give --input to choose)"
                );
            }
        }
    } else if h < 8 || w < 8 || (!matches!(args.model, ModelName::Tiny3d) && (h < 32 || w < 32)) {
        return Err(TrainError::Usage(format!(
            "input {h}x{w} is too small for {}",
            args.model.as_str()
        )));
    }
    Ok([t, h, w])
}

/// A ViT's patch size and tubelet length: `--init`'s `config.json`'s, else the
/// presets' (16 and 2).
fn vit_geometry(args: &TrainArgs) -> Result<(usize, usize), TrainError> {
    match &args.init {
        Some(init) => {
            let c = models::checkpoint_config(init)?;
            Ok((c.patch_size, c.tubelet_size))
        }
        None => Ok((16, 2)),
    }
}

pub(super) fn model_spec(
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
        ModelName::X3dM | ModelName::X3dL | ModelName::MvitV2S | ModelName::UniformerS => {
            ModelSpec::baseline(
                args.model.as_str(),
                classes,
                input,
                args.dropout,
                args.drop_path,
            )
            .expect("a baseline preset")
            .map_err(TrainError::Usage)
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
/// vocabulary from the training split's texts and saves it as `pmv-tokenizer.json` in
/// the run; a resumed run reads that file (`tokenizer.json` in runs from before).
pub(super) fn multimodal_spec(
    args: &TrainArgs,
    video: ModelSpec,
    classes: usize,
    train: &[Arc<pmv_shard::ShardReader>],
    run_dir: &RunDir,
    existing: bool,
) -> Result<ModelSpec, TrainError> {
    use crate::data::text::Tokenizer;
    use crate::models::multimodal::{CoverSpec, MultimodalSpec, TextSpec};
    let text = if args.no_text {
        None
    } else {
        let path = crate::run::tokenizer_file(run_dir);
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
    p: &crate::cli::PretrainOptions,
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

/// The run's hyper-parameters. Learning-rate rules per 256 clips count the global
/// batch, `ranks` (the data-parallel ranks the run started with) × batch × accum.
pub(super) fn hyper_params(args: &TrainArgs, ranks: usize) -> HyperParams {
    let vit = args.model.is_vit();
    let eff_batch = (args.batch_size * args.accum.max(1) * ranks.max(1)) as f64;
    let per_256 = |x: f64| x * eff_batch / 256.0;
    let lr = match (args.lr, args.base_lr) {
        (Some(lr), _) => lr,
        (None, Some(b)) => per_256(b),
        (None, None) if vit => per_256(1e-3),
        (None, None) => 2e-3,
    };
    HyperParams {
        epochs: args.epochs,
        batch_size: args.batch_size,
        accum: args.accum.max(1),
        lr,
        min_lr: args
            .min_lr
            .or(args.base_min_lr.map(per_256))
            .unwrap_or(lr / 100.0),
        warmup_lr: args
            .warmup_lr
            .or(args.base_warmup_lr.map(per_256))
            .unwrap_or(lr / 100.0),
        ranks: ranks.max(1),
        sync_bn: args.sync_bn,
        warmup_epochs: args
            .warmup_epochs
            .unwrap_or_else(|| (args.epochs as f64 / 10.0).min(5.0)),
        adamw: crate::optim::AdamWConfig {
            weight_decay: args.weight_decay,
            beta1: args.betas.0,
            beta2: args.betas.1,
            sgd: (args.optimizer == crate::run::Optimizer::Sgd).then(|| crate::optim::SgdConfig {
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
        momentum: (args.optimizer == crate::run::Optimizer::Sgd)
            .then(|| args.momentum.unwrap_or(0.9)),
        nesterov: args.nesterov,
        flip: args.flip,
        shuffle_buffer: args.run.shuffle_buffer,
        repeated_aug: args.repeated_aug.max(1),
        random_erase: (args.random_erase > 0.0).then_some(crate::run::RandomErase {
            probability: args.random_erase,
            mode: args.erase_mode,
            max_count: args.erase_count.max(1),
        }),
        auto_augment: args.auto_augment.clone(),
        model_ema: args.model_ema.then_some(args.model_ema_decay),
    }
}
