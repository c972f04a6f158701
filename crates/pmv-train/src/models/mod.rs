//! The models a run can train, how they are described in a run, and how initial weights
//! are loaded into them.
//!
//! Owns [`ModelSpec`] (what `run.json` records), building a model on a `VarStore`,
//! the parameter rules of the optimiser (weight decay off for biases, norms and
//! position tables; layer index for layer-wise lr decay), and `--init`: a safetensors
//! checkpoint whose names, shapes and config must match, except that a missing or
//! differently sized head is re-initialised and the pre-training decoder of a
//! `VideoMAEForPreTraining` checkpoint is set aside, both said so. Anything else that is
//! missing, unexpected or mis-shaped is an error listing all of it.
//!
//! One file a model family: [`tiny3d`], [`videomae`] (the classifying ViT),
//! [`mae`] (its masked pre-training, built from the ViT's blocks), [`x3d`], [`mvit`]
//! (MViTv2), [`uniformer`] and [`multimodal`] (a video model from this factory fused with cover and text branches:
//! the one family that uses [`ModelSpec`] and [`Net`] from here). The families share
//! [`ModelError`], [`Noise`] and the input normalisation ([`MEAN`], [`STD`]) from here.
//! Models never read shards or batches: nothing here imports `data`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn};

pub mod mae;
pub mod multimodal;
pub mod mvit;
pub mod tiny3d;
pub mod uniformer;
pub mod videomae;
pub mod x3d;

use crate::device::{Precision, to_device_async};
use mae::{MaeConfig, VideoMaePretrain};
use multimodal::{Extra, Multimodal, MultimodalSpec};
use mvit::{Mvit, MvitConfig};
use tiny3d::Tiny3d;
use uniformer::{Uniformer, UniformerConfig};
use videomae::{VideoMae, VideoMaeConfig};
use x3d::{X3d, X3dConfig};

/// ImageNet statistics, as VideoMAE normalises: the input every model here expects
/// (the loader normalises with them; `model.json` records them).
pub const MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const STD: [f64; 3] = [0.229, 0.224, 0.225];

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model configuration: {0}")]
    Config(String),
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error(
        "{path} does not fit the model:{}",
        list_problems(missing, unexpected, mismatched)
    )]
    Mismatch {
        path: PathBuf,
        missing: Vec<String>,
        unexpected: Vec<String>,
        mismatched: Vec<String>,
    },
}

fn list_problems(missing: &[String], unexpected: &[String], mismatched: &[String]) -> String {
    let mut s = String::new();
    for (what, list) in [
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape", mismatched),
    ] {
        if !list.is_empty() {
            let shown: Vec<&str> = list.iter().take(20).map(String::as_str).collect();
            s.push_str(&format!(
                "\n  {what} ({}): {}",
                list.len(),
                shown.join(", ")
            ));
            if list.len() > 20 {
                s.push_str(", ...");
            }
        }
    }
    s
}

/// What a run trains, as `run.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "lowercase")]
pub enum ModelSpec {
    Tiny3d {
        width: i64,
        classes: usize,
        dropout: f64,
    },
    Videomae {
        /// `vit-s`, `vit-b`, ... or the name of the `--init` checkpoint's architecture.
        name: String,
        config: VideoMaeConfig,
        drop_path: f64,
    },
    /// X3D (`x3d-m`, `x3d-l`), PySlowFast's names.
    X3d { name: String, config: X3dConfig },
    /// MViTv2 (`mvit-v2-s`), torchvision's names.
    Mvit { name: String, config: MvitConfig },
    /// UniFormer (`uniformer-s`), the names of its official video code.
    Uniformer {
        name: String,
        config: UniformerConfig,
    },
    /// Video, cover and text branches fused (the xinpianchang classifier).
    Multimodal(Box<MultimodalSpec>),
    /// VideoMAE masked pre-training (`VideoMAEForPreTraining`).
    Mae {
        /// `vit-s`, `vit-b`, ... or `videomae` for the architecture of `--init`.
        name: String,
        config: MaeConfig,
        drop_path: f64,
    },
}

impl ModelSpec {
    pub fn name(&self) -> &str {
        match self {
            ModelSpec::Tiny3d { .. } => "tiny3d",
            ModelSpec::Videomae { name, .. }
            | ModelSpec::Mae { name, .. }
            | ModelSpec::X3d { name, .. }
            | ModelSpec::Mvit { name, .. }
            | ModelSpec::Uniformer { name, .. } => name,
            ModelSpec::Multimodal(_) => "multimodal",
        }
    }

    /// The ViT inside this model (itself, a multimodal model's video branch, the
    /// pre-training encoder), if any: its patch and tubelet sizes bound the input.
    pub fn vit(&self) -> Option<&VideoMaeConfig> {
        match self {
            ModelSpec::Videomae { config, .. } => Some(config),
            ModelSpec::Mae { config, .. } => Some(&config.encoder),
            ModelSpec::Multimodal(m) => m.video.vit(),
            ModelSpec::Tiny3d { .. }
            | ModelSpec::X3d { .. }
            | ModelSpec::Mvit { .. }
            | ModelSpec::Uniformer { .. } => None,
        }
    }

    /// The CNN and transformer baselines by name (`x3d-m`, `x3d-l`, `mvit-v2-s`,
    /// `uniformer-s`) for `classes` at `input` `[T, H, W]`, with the head dropout and
    /// stochastic depth their PMV-400 recipes train with unless given (X3D: dropout 0.5,
    /// no stochastic depth; MViTv2-S: 0.5 and 0.2; UniFormer-S: none and 0.1). `None` for
    /// another name; the usage error when the input cannot run through the model.
    pub fn baseline(
        name: &str,
        classes: usize,
        input: [usize; 3],
        dropout: Option<f64>,
        drop_path: Option<f64>,
    ) -> Option<Result<ModelSpec, String>> {
        let [t, h, w] = input;
        let spec = if let Some(config) = X3dConfig::preset(name, classes, dropout.unwrap_or(0.5)) {
            ModelSpec::X3d {
                name: name.into(),
                config,
            }
        } else if let Some(config) = MvitConfig::preset(
            name,
            classes,
            t,
            (h, w),
            dropout.unwrap_or(0.5),
            drop_path.unwrap_or(0.2),
        ) {
            ModelSpec::Mvit {
                name: name.into(),
                config,
            }
        } else {
            ModelSpec::Uniformer {
                name: name.into(),
                config: UniformerConfig::preset(
                    name,
                    classes,
                    t,
                    (h, w),
                    dropout.unwrap_or(0.0),
                    drop_path.unwrap_or(0.1),
                )?,
            }
        };
        Some(spec.check_input(input).map(|()| spec))
    }

    /// Whether clips of `input` `[T, H, W]` can run through the model: the usage error
    /// if not (the ViTs' own rule is [`crate::cli::check_vit_input`]).
    pub fn check_input(&self, input: [usize; 3]) -> Result<(), String> {
        match self {
            ModelSpec::Mvit { config, .. } => config.check_input(input),
            ModelSpec::Uniformer { config, .. } => config.check_input(input),
            ModelSpec::Multimodal(m) => m.video.check_input(input),
            _ => Ok(()),
        }
    }

    /// Whether this is a pre-training model (no classes, a reconstruction loss).
    pub fn is_pretraining(&self) -> bool {
        matches!(self, ModelSpec::Mae { .. })
    }

    pub fn build(&self, root: &nn::Path, precision: Precision) -> Result<Net, ModelError> {
        Ok(match self {
            ModelSpec::Tiny3d {
                width,
                classes,
                dropout,
            } => Net::Tiny3d(Tiny3d::new(root, *width, *classes, *dropout, precision)),
            ModelSpec::Videomae {
                config, drop_path, ..
            } => Net::VideoMae(Box::new(VideoMae::new(
                root, config, *drop_path, precision,
            )?)),
            ModelSpec::X3d { config, .. } => Net::X3d(Box::new(X3d::new(root, config, precision))),
            ModelSpec::Mvit { config, .. } => {
                Net::Mvit(Box::new(Mvit::new(root, config, precision)?))
            }
            ModelSpec::Uniformer { config, .. } => {
                Net::Uniformer(Box::new(Uniformer::new(root, config, precision)?))
            }
            ModelSpec::Multimodal(spec) => {
                Net::Multimodal(Box::new(Multimodal::new(root, spec, precision)?))
            }
            ModelSpec::Mae {
                config, drop_path, ..
            } => Net::Mae(Box::new(VideoMaePretrain::new(
                root, config, *drop_path, precision,
            )?)),
        })
    }

    /// Names of the head's parameters (re-initialised when `--init` has none that fit).
    fn is_head(&self, name: &str) -> bool {
        match self {
            ModelSpec::Tiny3d { .. } => name.starts_with("head."),
            ModelSpec::Videomae { .. } => {
                name.starts_with("classifier.") || name.starts_with("fc_norm.")
            }
            ModelSpec::Mae { .. } => false,
            ModelSpec::X3d { .. } => name.starts_with("head.projection."),
            ModelSpec::Mvit { .. } => Mvit::is_head(name),
            ModelSpec::Uniformer { .. } => Uniformer::is_head(name),
            // With a video checkpoint, everything outside the video branch is new.
            ModelSpec::Multimodal(_) => {
                !name.starts_with("video.")
                    || name.starts_with("video.classifier.")
                    || name.starts_with("video.fc_norm.")
                    || name.starts_with("video.head.")
            }
        }
    }
}

/// Uniform random numbers for one training forward pass, drawn on the host from the
/// run's counter-based streams (so a resumed run draws the same).
pub struct Noise(Tensor);

impl Noise {
    pub fn new(values: &[f32], device: Device) -> Noise {
        Noise(to_device_async(Tensor::from_slice(values), device))
    }

    pub fn slice(&self, start: i64, len: i64) -> Tensor {
        self.0.narrow(0, start, len)
    }

    /// Draws already on the device (a part of another model's).
    pub fn from_tensor(t: Tensor) -> Noise {
        Noise(t)
    }

    /// Inverted dropout at rate `p` of the features `x` `[B, C]`, from the B·C draws at
    /// `start`: a feature is kept (and scaled by 1/(1-p)) when its draw is at least `p`.
    pub fn dropout(&self, x: &Tensor, start: i64, p: f64) -> Tensor {
        let (b, c) = x.size2().expect("features are [B, C]");
        let keep = self
            .slice(start, b * c)
            .ge(p)
            .to_kind(Kind::Float)
            .view([b, c]);
        x * keep / (1.0 - p)
    }

    /// Stochastic depth at rate `p` of block `block` for a batch of `b`: the per-sample
    /// scales (0 or 1/(1-p), `[B]`) of its two residual branches, from the 2·B draws
    /// at 2·block·B.
    pub fn drop_path(&self, block: usize, b: i64, p: f64) -> (Tensor, Tensor) {
        let u = self.slice(2 * block as i64 * b, 2 * b);
        let keep = (u.ge(p).to_kind(Kind::Float) / (1.0 - p)).view([2, b]);
        (keep.get(0), keep.get(1))
    }
}

/// Stochastic-depth rates of `n` blocks: linear from 0 at the first to `max` at the
/// last (VideoMAE's, MViTv2's and UniFormer's rule).
pub fn depth_rates(max: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| {
            if n > 1 {
                max * i as f64 / (n - 1) as f64
            } else {
                0.0
            }
        })
        .collect()
}

/// `n` draws of the run generator's noise stream `seed`, on the CPU: the noise a test
/// hands a training forward.
#[cfg(test)]
pub(crate) fn test_noise(n: usize, seed: u64) -> Noise {
    let mut r = crate::rng::Rng::stream(seed, crate::rng::Purpose::Noise, 0, 0);
    let v: Vec<f32> = (0..n).map(|_| r.f32()).collect();
    Noise::new(&v, Device::Cpu)
}

/// A built model.
pub enum Net {
    Tiny3d(Tiny3d),
    VideoMae(Box<VideoMae>),
    Mae(Box<VideoMaePretrain>),
    X3d(Box<X3d>),
    Mvit(Box<Mvit>),
    Uniformer(Box<Uniformer>),
    Multimodal(Box<Multimodal>),
}

impl Net {
    /// Logits `[B, classes]` in fp32; `train` with the step's noise. A pre-training
    /// model has no logits: see [`Net::mae`].
    pub fn forward(&self, x: &Tensor, train: bool, noise: Option<&Noise>) -> Tensor {
        match self {
            Net::Tiny3d(m) => m.forward(x, train, noise),
            Net::VideoMae(m) => m.forward(x, if train { noise } else { None }),
            Net::X3d(m) => m.forward(x, train, noise),
            Net::Mvit(m) => m.forward(x, train, noise),
            Net::Uniformer(m) => m.forward(x, train, noise),
            Net::Multimodal(m) => m.forward(x, None, train, noise),
            Net::Mae(_) => panic!("a pre-training model has no classification logits"),
        }
    }

    /// Logits with the cover and text of multimodal batches (video models ignore them).
    pub fn forward_with(
        &self,
        x: &Tensor,
        extra: Option<&Extra>,
        train: bool,
        noise: Option<&Noise>,
    ) -> Tensor {
        match self {
            Net::Multimodal(m) => m.forward(x, extra, train, noise),
            _ => self.forward(x, train, noise),
        }
    }

    /// The pooled video feature a classifier's head reads, `[B, F]` (fp32).
    pub fn features(&self, x: &Tensor, train: bool, noise: Option<&Noise>) -> Tensor {
        match self {
            Net::Tiny3d(m) => m.features(x, train),
            Net::VideoMae(m) => m.features(x, if train { noise } else { None }),
            Net::X3d(m) => m.features(x, train),
            Net::Mvit(m) => m.features(x, train, noise),
            Net::Uniformer(m) => m.features(x, train, noise),
            Net::Mae(_) | Net::Multimodal(_) => panic!("not a video feature model"),
        }
    }

    /// Width of [`Net::features`].
    pub fn feature_dim(&self) -> Option<usize> {
        match self {
            Net::Tiny3d(m) => Some(m.feature_dim()),
            Net::VideoMae(m) => Some(m.enc.cfg.hidden_size),
            Net::X3d(m) => Some(m.cfg.dim_c5),
            Net::Mvit(m) => Some(m.feature_dim()),
            Net::Uniformer(m) => Some(m.feature_dim()),
            Net::Mae(_) | Net::Multimodal(_) => None,
        }
    }

    /// The pre-training model, when this is one.
    pub fn mae(&self) -> Option<&VideoMaePretrain> {
        match self {
            Net::Mae(m) => Some(m),
            _ => None,
        }
    }

    pub fn noise_len(&self, batch: usize) -> usize {
        match self {
            Net::Tiny3d(m) => m.noise_len(batch),
            Net::VideoMae(m) => m.noise_len(batch),
            Net::Mae(m) => m.noise_len(batch),
            Net::X3d(m) => m.noise_len(batch),
            Net::Mvit(m) => m.noise_len(batch),
            Net::Uniformer(m) => m.noise_len(batch),
            Net::Multimodal(m) => m.noise_len(batch),
        }
    }

    /// (layer index, highest layer index) for layer-wise lr decay.
    pub fn layer_of(&self, name: &str) -> (usize, usize) {
        match self {
            Net::Tiny3d(_)
            | Net::X3d(_)
            | Net::Mvit(_)
            | Net::Uniformer(_)
            | Net::Multimodal(_) => (0, 0),
            Net::VideoMae(m) => (m.layer_of(name), m.depth()),
            Net::Mae(m) => (m.layer_of(name), m.depth()),
        }
    }
}

/// Weight decay applies to matrices and kernels only: not to biases, norms, position
/// tables or tokens. A position *convolution* (UniFormer's `pos_embed`, a 3-D kernel) is
/// a kernel like any other, decayed as its reference code decays it.
pub fn decays(name: &str, shape: &[i64]) -> bool {
    !(shape.len() <= 1
        || name.ends_with(".bias")
        || name.contains("position")
        || (name.contains("pos_embed") && shape.len() <= 3)
        || name.ends_with("mask_token")
        || name.ends_with("cls_token"))
}

/// What `--init` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InitReport {
    pub path: PathBuf,
    pub loaded: usize,
    /// Head tensors left at their fresh initialisation (absent, or sized for another
    /// class count).
    pub reinitialised: Vec<String>,
    /// Tensors of the checkpoint this model has no use for (a pre-training decoder).
    pub set_aside: Vec<String>,
}

/// Reads a safetensors file into named fp32 tensors on the CPU.
pub fn read_weights(path: &Path) -> Result<Vec<(String, Tensor)>, ModelError> {
    let tensors = Tensor::read_safetensors(path).map_err(|e| ModelError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(tensors
        .into_iter()
        .map(|(n, t)| {
            let t = if t.is_floating_point() {
                t.to_kind(Kind::Float)
            } else {
                t
            };
            (n, t)
        })
        .collect())
}

/// The query and value biases are stored as `q_bias` / `v_bias` (what `transformers`
/// writes and the Hub holds); `query.bias` / `value.bias` (its in-memory names) are
/// accepted too.
fn canonical_name(name: &str) -> String {
    if let Some(p) = name.strip_suffix(".attention.attention.query.bias") {
        return format!("{p}.attention.attention.q_bias");
    }
    if let Some(p) = name.strip_suffix(".attention.attention.value.bias") {
        return format!("{p}.attention.attention.v_bias");
    }
    name.to_owned()
}

/// Whether a checkpoint tensor belongs to VideoMAE's pre-training model only.
fn pretraining_only(name: &str) -> bool {
    name.starts_with("encoder_to_decoder.")
        || name == "mask_token"
        || name.starts_with("decoder.")
        || name.starts_with("position_embeddings")
}

/// Copies `tensors` into the variables of `vs`. With `lenient_head`, head tensors that
/// are absent or mis-shaped keep their fresh values; otherwise every variable must be
/// present with its shape and nothing may be left over.
pub fn load_into(
    vs: &nn::VarStore,
    spec: &ModelSpec,
    path: &Path,
    tensors: Vec<(String, Tensor)>,
    lenient_head: bool,
) -> Result<InitReport, ModelError> {
    let vars = vs.variables();
    let mut given: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut report = InitReport {
        path: path.to_owned(),
        ..InitReport::default()
    };
    let videomae = matches!(spec, ModelSpec::Videomae { .. } | ModelSpec::Mae { .. });
    // A bare `VideoMAEModel` checkpoint has no `videomae.` prefix.
    let bare = matches!(spec, ModelSpec::Videomae { .. })
        && !tensors.iter().any(|(n, _)| n.starts_with("videomae."))
        && tensors
            .iter()
            .any(|(n, _)| n.starts_with("embeddings.") || n.starts_with("encoder."));
    // A video checkpoint given to a multimodal model fills its video branch.
    let into_video = matches!(spec, ModelSpec::Multimodal(_))
        && !tensors.iter().any(|(n, _)| n.starts_with("video."));
    let tensors: Vec<(String, Tensor)> = if into_video {
        let inner = match spec {
            ModelSpec::Multimodal(m) => &m.video,
            _ => unreachable!(),
        };
        let is_vit = matches!(inner, ModelSpec::Videomae { .. });
        tensors
            .into_iter()
            .map(|(n, t)| {
                let n = if is_vit { canonical_name(&n) } else { n };
                (format!("video.{n}"), t)
            })
            .filter(|(n, _)| {
                // The video model's own head stays as built: the fusion head replaces it.
                !(n.starts_with("video.classifier.")
                    || n.starts_with("video.head.")
                    || (is_vit && pretraining_only(&n["video.".len()..])))
            })
            .collect()
    } else {
        tensors
    };
    for (name, t) in tensors {
        let mut name = if videomae {
            canonical_name(&name)
        } else {
            name
        };
        if bare
            && (name.starts_with("embeddings.")
                || name.starts_with("encoder.")
                || name.starts_with("layernorm."))
        {
            name = format!("videomae.{name}");
        }
        given.insert(name, t);
    }
    if let ModelSpec::Videomae { config, .. } = spec {
        let mut aside: Vec<String> = given
            .keys()
            .filter(|n| pretraining_only(n))
            .cloned()
            .collect();
        // A pre-training encoder ends in a norm that mean pooling replaces by fc_norm.
        if config.use_mean_pooling {
            aside.extend(
                given
                    .keys()
                    .filter(|n| n.starts_with("videomae.layernorm."))
                    .cloned(),
            );
        }
        for n in &aside {
            given.remove(n);
        }
        report.set_aside = aside;
    }
    let mut missing = vec![];
    let mut mismatched = vec![];
    let mut loads = vec![];
    for (name, var) in &vars {
        match given.remove(name) {
            Some(t) if t.size() == var.size() => loads.push((var.shallow_clone(), t)),
            Some(t) => {
                if lenient_head && spec.is_head(name) {
                    report.reinitialised.push(format!(
                        "{name} ({:?} in the checkpoint, {:?} here)",
                        t.size(),
                        var.size()
                    ));
                } else {
                    mismatched.push(format!(
                        "{name} ({:?} in the file, {:?} in the model)",
                        t.size(),
                        var.size()
                    ));
                }
            }
            None => {
                if lenient_head && spec.is_head(name) {
                    report.reinitialised.push(format!("{name} (absent)"));
                } else {
                    missing.push(name.clone());
                }
            }
        }
    }
    let unexpected: Vec<String> = given.into_keys().collect();
    if !missing.is_empty() || !unexpected.is_empty() || !mismatched.is_empty() {
        missing.sort();
        mismatched.sort();
        return Err(ModelError::Mismatch {
            path: path.to_owned(),
            missing,
            unexpected,
            mismatched,
        });
    }
    report.reinitialised.sort();
    tch::no_grad(|| {
        for (mut var, t) in loads {
            var.copy_(&t);
        }
    });
    report.loaded = vars.len() - report.reinitialised.len();
    Ok(report)
}

/// The VideoMAE configuration of a checkpoint folder (`config.json` beside the weights).
pub fn checkpoint_config(weights: &Path) -> Result<VideoMaeConfig, ModelError> {
    let dir = weights.parent().unwrap_or(Path::new("."));
    let path = dir.join("config.json");
    let text = fs_err::read_to_string(&path).map_err(|e| ModelError::Read {
        path: weights.to_owned(),
        message: format!(
            "{e}: a VideoMAE checkpoint is a folder with model.safetensors and config.json \
             (the head count and layer_norm_eps are not in the weights; \
             scripts/convert_videomae.py writes both)"
        ),
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Read {
        path: path.clone(),
        message: e.to_string(),
    })?;
    VideoMaeConfig::from_hf(&v).map_err(|message| ModelError::Read { path, message })
}

/// Batch norm as every model here uses it (momentum 0.1, ε 1e-5, statistics in fp32):
/// in training, over every data-parallel rank's batch when the run synchronises them
/// (`--sync-bn`), else over this process's batch.
pub(crate) fn batch_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    train: bool,
) -> Tensor {
    if train && let Some(group) = SYNC_BN.read().ok().and_then(|g| g.clone()) {
        // A forward pass has no error path: a lost rank ends the process, with the
        // message naming it.
        return group
            .sync_batch_norm(x, Some(gamma), Some(beta), Some(mean), Some(var), 1e-5, 0.1)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    Tensor::batch_norm(
        x,
        Some(gamma),
        Some(beta),
        Some(mean),
        Some(var),
        train,
        0.1,
        1e-5,
        true,
    )
}

/// The group training-mode batch norm computes its statistics over, while a run asks
/// for it (`--sync-bn` with several ranks).
static SYNC_BN: std::sync::RwLock<Option<std::sync::Arc<pmv_c10d::Group>>> =
    std::sync::RwLock::new(None);

/// Makes [`batch_norm`] normalise over every rank of `group` (or, with `None`, over
/// this process's batch again).
pub(crate) fn synchronise_batch_norm(group: Option<std::sync::Arc<pmv_c10d::Group>>) {
    if let Ok(mut slot) = SYNC_BN.write() {
        *slot = group;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_rules() {
        assert!(decays(
            "videomae.encoder.layer.0.attention.attention.query.weight",
            &[8, 8]
        ));
        assert!(!decays(
            "videomae.encoder.layer.0.attention.attention.q_bias",
            &[8]
        ));
        assert!(!decays("fc_norm.weight", &[8]));
        assert!(!decays("mask_token", &[1, 1, 8]));
        assert!(decays("stages.0.conv.weight", &[8, 3, 3, 3, 3]));
        assert!(!decays("pos_embed", &[1, 16, 8]));
        assert!(decays("blocks1.0.pos_embed.weight", &[64, 1, 3, 3, 3]));
        assert_eq!(
            canonical_name("videomae.encoder.layer.3.attention.attention.query.bias"),
            "videomae.encoder.layer.3.attention.attention.q_bias"
        );
    }

    #[test]
    fn init_reports_head_and_refuses_strangers() {
        let spec = ModelSpec::Tiny3d {
            width: 2,
            classes: 3,
            dropout: 0.0,
        };
        let vs = nn::VarStore::new(Device::Cpu);
        spec.build(&vs.root(), Precision::Fp32).unwrap();
        let mut tensors: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(n, _)| !n.starts_with("head."))
            .map(|(n, t)| (n, t.detach().ones_like()))
            .collect();
        tensors.push((
            "head.weight".into(),
            Tensor::zeros([5, 16], (Kind::Float, Device::Cpu)),
        ));
        let r = load_into(&vs, &spec, Path::new("x"), tensors, true).unwrap();
        assert_eq!(r.reinitialised.len(), 2, "{r:?}");
        assert!(r.reinitialised[0].contains("absent") || r.reinitialised[1].contains("absent"));
        let w = &vs.variables()["stages.0.conv.weight"];
        assert_eq!(w.sum(Kind::Float).double_value(&[]), w.numel() as f64);

        let e = load_into(
            &vs,
            &spec,
            Path::new("x"),
            vec![(
                "stray".into(),
                Tensor::zeros([1], (Kind::Float, Device::Cpu)),
            )],
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unexpected (1): stray"), "{e}");
        assert!(e.contains("missing ("), "{e}");
    }
}
