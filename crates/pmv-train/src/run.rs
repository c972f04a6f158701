//! What a run is: the `run.json` record shared by training, resuming and evaluation.
//!
//! Owns [`RunConfig`] (data source and the exact shards trained on, classes, sample and
//! input shapes, model, hyper-parameters, seed), the comparison a resume makes against it, where
//! run directories live, what a run's model reads besides frames ([`extras_of`]:
//! used by both training and evaluation) and the files `transformers` reads from a run
//! folder ([`hf_files`]). It computes nothing and trains nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::checkpoint::RunDir;
use super::data::loader::Extras;
pub use super::data::loader::RandomErase;
use super::data::text::Tokenizer;
use super::data::{self, DataError, ShardRef, Source, SplitData};
use super::error::TrainError;
use super::models::ModelSpec;
use super::optim::AdamWConfig;

pub use super::cli::{EraseMode, Optimizer};

pub const RUN_VERSION: u32 = 1;

/// A multimodal run's text vocabulary, in the run directory. Not `tokenizer.json`: that
/// name is Hugging Face's, and `transformers` would take this file for its own.
pub const TOKENIZER_FILE: &str = "pmv-tokenizer.json";
/// The vocabulary's name in runs written before [`TOKENIZER_FILE`]; still read.
pub const OLD_TOKENIZER_FILE: &str = "tokenizer.json";

/// The vocabulary file of `run_dir`: [`TOKENIZER_FILE`], or [`OLD_TOKENIZER_FILE`] where
/// only that one exists (an older run). The new name when neither exists (to write).
pub fn tokenizer_file(run_dir: &RunDir) -> PathBuf {
    let new = run_dir.file(TOKENIZER_FILE);
    let old = run_dir.file(OLD_TOKENIZER_FILE);
    if !new.is_file() && old.is_file() {
        old
    } else {
        new
    }
}

/// One shard as a run records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<usize>,
}

/// A training run's hyper-parameters, every value resolved (from the defaults, a
/// recipe file and the command line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HyperParams {
    pub epochs: u64,
    pub batch_size: usize,
    pub accum: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_lr: f64,
    pub warmup_epochs: f64,
    pub adamw: AdamWConfig,
    pub layer_decay: f64,
    pub label_smoothing: f64,
    pub mixup: f64,
    pub cutmix: f64,
    pub mix_prob: f64,
    pub clip_grad: Option<f64>,
    pub crop_scale: (f64, f64),
    pub crop_ratio: (f64, f64),
    /// Short-side scale jitter range instead of the random resized crop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<(usize, usize)>,
    /// Short side the frames are scaled to for evaluation views.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_scale: Option<usize>,
    #[serde(default)]
    pub optimizer: Optimizer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nesterov: bool,
    pub flip: f64,
    pub shuffle_buffer: usize,
    /// Independently augmented views per sample read (repeated augmentation).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub repeated_aug: usize,
    /// Random erasing per training view: probability, fill and most rectangles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_erase: Option<RandomErase>,
    /// RandAugment policy of the training views (timm's syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_augment: Option<String>,
    /// Decay of the weights' moving average (`--model-ema`), when kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_ema: Option<f64>,
    /// Data-parallel ranks at the run's start: the learning-rate rules per 256 clips
    /// counted `ranks × batch_size × accum` (a resume on another number keeps them).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub ranks: usize,
    /// Batch norm's training statistics over every rank's batch (`--sync-bn`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sync_bn: bool,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub version: u32,
    pub source: Source,
    pub train_split: String,
    pub val_split: Option<String>,
    /// The shards trained on, fixed for the life of the run (a resume reads these even
    /// if new shards have appeared since).
    pub train_shards: Vec<ShardEntry>,
    pub val_shards: Vec<ShardEntry>,
    pub classes: Vec<String>,
    pub multi_label: bool,
    /// `(clips, T, H, W, 3)` of the samples.
    pub sample_shape: [usize; 5],
    /// Model input (T, H, W).
    pub input: [usize; 3],
    pub model: ModelSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
    /// Stored as `hyper`; runs written before the name changed have `recipe`.
    #[serde(rename = "hyper", alias = "recipe")]
    pub hyper: HyperParams,
    pub seed: u64,
}

impl RunConfig {
    /// Field-by-field differences against another config, for a refused resume.
    pub fn differences(&self, other: &RunConfig) -> Vec<String> {
        let a = serde_json::to_value(self).unwrap_or_default();
        let b = serde_json::to_value(other).unwrap_or_default();
        let mut out = vec![];
        diff("", &a, &b, &mut out);
        out
    }
}

fn diff(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                diff(
                    &p,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if a != b => {
            let show = |v: &Value| {
                let s = v.to_string();
                if s.len() > 60 {
                    format!("{}...", &s[..57])
                } else {
                    s
                }
            };
            out.push(format!("{prefix}: {} then, {} now", show(a), show(b)));
        }
        _ => {}
    }
}

/// The default data root.
pub fn root_or_default(root: &Option<PathBuf>) -> PathBuf {
    root.clone()
        .unwrap_or_else(|| PathBuf::from(pmv_core::root::DEFAULT_ROOT))
}

/// A run directory: relative paths are taken from the data root.
pub fn run_path(root: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        root.join(path)
    }
}

pub fn entries(split: &SplitData, root: Option<&Path>) -> Vec<ShardEntry> {
    split
        .shards
        .iter()
        .map(|s| ShardEntry {
            path: match root {
                Some(r) => s.path.strip_prefix(r).unwrap_or(&s.path).to_owned(),
                None => s.path.clone(),
            },
            sha256: s.sha256.clone(),
            samples: s.samples,
        })
        .collect()
}

/// The shards a run recorded, with the catalog's member index for catalog runs.
pub fn recorded_split(
    cfg: &RunConfig,
    split: &str,
    entries: &[ShardEntry],
) -> Result<SplitData, DataError> {
    match &cfg.source {
        Source::Catalog { root, .. } => {
            let rel: Vec<PathBuf> = entries.iter().map(|e| e.path.clone()).collect();
            data::catalog_shards_by_path(root, split, &rel)
        }
        Source::Shards { .. } => Ok(SplitData {
            split: split.to_owned(),
            shards: entries
                .iter()
                .map(|e| ShardRef {
                    path: e.path.clone(),
                    sha256: e.sha256.clone(),
                    samples: e.samples,
                    index: None,
                })
                .collect(),
        }),
    }
}

/// The current shards of `split` for the run's data source.
pub fn current_split(cfg: &RunConfig, split: &str) -> Result<SplitData, DataError> {
    match &cfg.source {
        Source::Catalog {
            root,
            dataset,
            recipe_id,
            ..
        } => data::catalog_split(root, dataset, recipe_id, split),
        Source::Shards { train, splits } => {
            if let Some((_, spec)) = splits.iter().find(|(s, _)| s == split) {
                data::shards_split(spec, split, true)
            } else {
                data::shards_split(train, split, split == cfg.train_split)
            }
        }
    }
}

/// The files a run folder holds for `transformers` (name, content): a ViT's
/// `config.json` (`VideoMAEForVideoClassification`, or `VideoMAEForPreTraining` for a
/// pre-training run) and its `preprocessor_config.json` (the evaluation's
/// preprocessing as a `VideoMAEImageProcessor`). None for other models.
pub fn hf_files(cfg: &RunConfig) -> Vec<(&'static str, serde_json::Value)> {
    let config = match &cfg.model {
        ModelSpec::Videomae { config, .. } => config.to_hf(&cfg.classes, cfg.multi_label),
        ModelSpec::Mae { config, .. } => config.to_hf(),
        _ => return vec![],
    };
    let processor = crate::models::videomae::image_processor_config(
        (cfg.input[1], cfg.input[2]),
        (cfg.sample_shape[2], cfg.sample_shape[3]),
        cfg.hyper.test_scale,
    );
    vec![
        ("config.json", config),
        ("preprocessor_config.json", processor),
    ]
}

/// What the loader must read besides frames for `model`: covers and texts of a
/// multimodal run (its tokenizer from the run directory, checked against the hash the
/// run recorded).
pub fn extras_of(model: &ModelSpec, run_dir: &RunDir) -> Result<Option<Arc<Extras>>, TrainError> {
    let ModelSpec::Multimodal(m) = model else {
        return Ok(None);
    };
    let tokenizer = match &m.text {
        Some(t) => {
            let path = tokenizer_file(run_dir);
            let tok = Tokenizer::load(&path).map_err(|e| TrainError::Invalid(e.to_string()))?;
            let sha = pmv_core::util::sha256_hex(&tok.to_bytes());
            if sha != t.tokenizer_sha256 {
                return Err(TrainError::Invalid(format!(
                    "{}: not the vocabulary this run was trained with (SHA-256 {sha}, the run recorded {})",
                    path.display(),
                    t.tokenizer_sha256
                )));
            }
            Some(Arc::new(tok))
        }
        None => None,
    };
    Ok(Some(Arc::new(Extras {
        cover: m.cover.as_ref().map(|c| (c.height, c.width)),
        tokenizer,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vocabulary_is_read_under_its_new_name_then_its_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path()).unwrap();
        // A fresh run writes the new name.
        assert_eq!(tokenizer_file(&run), dir.path().join(TOKENIZER_FILE));
        // A run from before has only the old name.
        std::fs::write(dir.path().join(OLD_TOKENIZER_FILE), "{}").unwrap();
        assert_eq!(tokenizer_file(&run), dir.path().join(OLD_TOKENIZER_FILE));
        // Both: the new one.
        std::fs::write(dir.path().join(TOKENIZER_FILE), "{}").unwrap();
        assert_eq!(tokenizer_file(&run), dir.path().join(TOKENIZER_FILE));
    }

    #[test]
    fn hyper_parameters_of_older_runs_read_as_without_the_newer_options() {
        let old = serde_json::json!({
            "epochs": 3, "batch_size": 8, "accum": 1, "lr": 0.1, "min_lr": 0.001,
            "warmup_lr": 0.001, "warmup_epochs": 0.3,
            "adamw": serde_json::to_value(AdamWConfig::default()).unwrap(),
            "layer_decay": 1.0, "label_smoothing": 0.1, "mixup": 0.0, "cutmix": 0.0,
            "mix_prob": 1.0, "clip_grad": null, "crop_scale": [0.25, 1.0],
            "crop_ratio": [0.75, 1.3333], "flip": 0.5, "shuffle_buffer": 16
        });
        let h: HyperParams = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(h.repeated_aug, 1);
        assert_eq!(
            (h.random_erase, &h.auto_augment, h.model_ema),
            (None, &None, None)
        );
        // Written back, it is what it was: a resume finds no differences.
        let back = serde_json::to_value(&h).unwrap();
        for key in ["repeated_aug", "random_erase", "auto_augment", "model_ema"] {
            assert!(back.get(key).is_none(), "{key}");
        }
        let set = HyperParams {
            repeated_aug: 2,
            random_erase: Some(RandomErase {
                probability: 0.25,
                mode: EraseMode::Pixel,
                max_count: 1,
            }),
            model_ema: Some(0.9999),
            ..h
        };
        let v = serde_json::to_value(&set).unwrap();
        assert_eq!(v["random_erase"]["mode"], "pixel");
        assert_eq!(serde_json::from_value::<HyperParams>(v).unwrap(), set);
    }

    #[test]
    fn differences_name_the_fields() {
        let a = serde_json::json!({"hyper": {"lr": 0.1, "epochs": 3}, "seed": 1});
        let b = serde_json::json!({"hyper": {"lr": 0.2, "epochs": 3}, "seed": 1});
        let mut out = vec![];
        diff("", &a, &b, &mut out);
        assert_eq!(out, vec!["hyper.lr: 0.1 then, 0.2 now"]);
        assert_eq!(
            run_path(Path::new("/r"), Path::new("runs/x")),
            Path::new("/r/runs/x")
        );
        assert_eq!(
            run_path(Path::new("/r"), Path::new("/abs")),
            Path::new("/abs")
        );
    }
}
