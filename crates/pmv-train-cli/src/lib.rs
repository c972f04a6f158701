//! pmv-train-cli: the trainer's command line: the whole parser ([`app`]), one argument
//! struct per subcommand (clap derive), the values they parse into (`--device`,
//! `--precision`, `--optimizer`, `--model`), and recipe files, which become options
//! placed before the command line's ([`recipe_file`]).
//!
//! Only parsing and defaults live here; what each command does is in `pmv_train`. This
//! crate never links libtorch: it is the contract between the two processes, so that
//! `pmv-data` (which runs the trainer with the arguments it was given) knows the options
//! of `train`, `pretrain` and `eval` for its shell completions.

pub mod app;
pub mod recipe_file;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelName {
    /// A small 3D CNN (trains on a CPU in minutes)
    Tiny3d,
    /// VideoMAE ViT-S/16 (22 M parameters)
    #[value(name = "vit-s")]
    VitS,
    /// VideoMAE ViT-B/16 (86 M parameters)
    #[value(name = "vit-b")]
    VitB,
    /// The VideoMAE architecture of --init's config.json (any size)
    Videomae,
    /// X3D-M (3.8 M parameters; also X3D-XS and X3D-S, the same network at other input
    /// sizes), PySlowFast's names
    #[value(name = "x3d-m")]
    X3dM,
    /// X3D-L (depth factor 5.0)
    #[value(name = "x3d-l")]
    X3dL,
    /// MViTv2-S (34.5 M parameters: pooling attention, decomposed relative positions),
    /// torchvision's names
    #[value(name = "mvit-v2-s")]
    MvitV2S,
    /// UniFormer-S (21.4 M parameters: convolution blocks, then global attention), the
    /// names of its official video code
    #[value(name = "uniformer-s")]
    UniformerS,
}

impl ModelName {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelName::Tiny3d => "tiny3d",
            ModelName::VitS => "vit-s",
            ModelName::VitB => "vit-b",
            ModelName::Videomae => "videomae",
            ModelName::X3dM => "x3d-m",
            ModelName::X3dL => "x3d-l",
            ModelName::MvitV2S => "mvit-v2-s",
            ModelName::UniformerS => "uniformer-s",
        }
    }

    /// A VideoMAE ViT (the presets: tubelets of 2×16×16; `videomae`: its checkpoint's).
    pub fn is_vit(self) -> bool {
        matches!(
            self,
            ModelName::VitS | ModelName::VitB | ModelName::Videomae
        )
    }
}

/// The one rule of a ViT's input, for `train`, `pretrain` and `eval` alike: height and
/// width are multiples of the patch size, never rounded. Returns the usage error.
pub fn check_vit_input((h, w): (usize, usize), patch: usize) -> Result<(), String> {
    if patch == 0 || h == 0 || w == 0 || !h.is_multiple_of(patch) || !w.is_multiple_of(patch) {
        return Err(format!(
            "--input {h}x{w}: a ViT needs multiples of its {patch} pixel patches"
        ));
    }
    Ok(())
}

/// The frame half of the rule: clips of a multiple of the tubelet's frames.
pub fn check_vit_frames(frames: usize, tubelet: usize) -> Result<(), String> {
    if tubelet == 0 || frames == 0 || !frames.is_multiple_of(tubelet) {
        return Err(format!(
            "the samples have {frames} frames per clip; a ViT needs a multiple of its \
             {tubelet}-frame tubelets"
        ));
    }
    Ok(())
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(DeviceChoice::Cuda(i)),
                _ => Err(format!("{s:?} is not auto, cpu, cuda or cuda:N")),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// The arithmetic of the matrix products and convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionChoice {
    /// bf16 on CUDA, fp32 on the CPU.
    Auto,
    Fp32,
    /// bf16 products and convolutions, fp32 weights, norms, softmax and residual stream
    /// (what `torch.autocast(dtype=torch.bfloat16)` does).
    Bf16,
}

/// The optimiser of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// AdamW (decoupled weight decay)
    #[default]
    Adamw,
    /// SGD with momentum (weight decay added to the gradient), as PySlowFast trains
    /// X3D
    Sgd,
}

/// What random erasing fills a rectangle with, in normalised units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EraseMode {
    /// Zero (the dataset mean)
    Const,
    /// One standard-normal value per channel (and frame)
    Rand,
    /// One standard-normal value per pixel and channel
    #[default]
    Pixel,
}

/// `A,B` as two floats.
pub fn parse_pair(s: &str) -> Result<(f64, f64), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("{s:?} is not A,B"))?;
    let a: f64 = a
        .trim()
        .parse()
        .map_err(|_| format!("{a:?} is not a number"))?;
    let b: f64 = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not a number"))?;
    if !(a > 0.0 && b >= a) {
        return Err(format!("{s:?}: need 0 < A <= B"));
    }
    Ok((a, b))
}

/// `HxW` (or one number for a square).
pub fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let parse = |v: &str| {
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{s:?} is not HxW"))
    };
    match s.split_once(['x', 'X']) {
        Some((h, w)) => Ok((parse(h)?, parse(w)?)),
        None => {
            let n = parse(s)?;
            Ok((n, n))
        }
    }
}

/// `CLIPSxCROPS`; CLIPS may be `all`.
pub fn parse_views(s: &str) -> Result<(Option<usize>, usize), String> {
    let (c, k) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?} is not CLIPSxCROPS (e.g. 5x3, allx3)"))?;
    let clips = if c == "all" {
        None
    } else {
        Some(
            c.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{c:?} is not a clip count"))?,
        )
    };
    let crops = k
        .parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{k:?} is not a crop count"))?;
    Ok((clips, crops))
}

/// A count of at least 1.
fn parse_count(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{s:?} is not a count of at least 1"))
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 1"))
    }
}

#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Data root holding the catalog and shards [env PMV_DATA_ROOT; default
    /// ./pmv-data-root]; relative --out and --run paths are taken from it
    #[arg(long, env = "PMV_DATA_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Dataset in the catalog
    #[arg(
        long,
        value_name = "NAME",
        required_unless_present = "shards",
        conflicts_with = "shards"
    )]
    pub dataset: Option<String>,

    /// Shard recipe (id or name) [default: the dataset's only recipe with shards]
    #[arg(long, value_name = "R", requires = "dataset")]
    pub recipe: Option<String>,

    /// Train on shards without a catalog: a directory of .tar files, one with
    /// SPLIT/ subdirectories, or a glob in the file name
    #[arg(long, value_name = "DIR_OR_GLOB")]
    pub shards: Option<String>,

    /// Validation shards for --shards [default: the val split under --shards]
    #[arg(long, value_name = "DIR_OR_GLOB", requires = "shards")]
    pub val_shards: Option<String>,

    /// Class names for --shards, one per line or id,name [default: classes.txt beside
    /// the shards, else class_ID]
    #[arg(long, value_name = "FILE", requires = "shards")]
    pub classes: Option<PathBuf>,

    /// Split to train on
    #[arg(long, default_value = "train", value_name = "S")]
    pub train_split: String,

    /// Split evaluated after each epoch; `none` for none
    #[arg(long, default_value = "val", value_name = "S")]
    pub val_split: String,

    /// Check each catalog shard's SHA-256 (and decode every frame of JPEG shards)
    /// before reading it
    #[arg(long)]
    pub verify: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Device: auto (the first CUDA device if any), cpu, cuda or cuda:N
    #[arg(long, default_value = "auto", value_name = "D")]
    pub device: DeviceChoice,

    /// Arithmetic: auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16
    #[arg(long, value_enum, default_value = "auto", value_name = "P")]
    pub precision: PrecisionChoice,

    /// Loader threads [default: cores - 1 (at most 12) on CUDA, 1 on the CPU]
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Batches prepared ahead of the model
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub prefetch: usize,

    /// libtorch CPU threads [default: libtorch's choice]
    #[arg(long, value_name = "N")]
    pub threads: Option<i32>,
}

/// How `train`, `pretrain` and `eval` run on several processes (ranks): started by
/// `--nproc` here, by `torchrun --no-python`, or by Slurm's `srun`.
#[derive(Debug, Clone, Args)]
pub struct DistArgs {
    /// Start N local ranks (processes) on this machine and train data-parallel, one
    /// device each (CUDA: cuda:0..N-1; CPU: N shares of the cores). Under torchrun or
    /// srun the launcher's ranks are used instead
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub nproc: u32,

    /// Seconds a rank waits for the others (joining, and each collective) before it
    /// stops with an error naming the ranks it lost
    #[arg(long, default_value_t = 600, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub dist_timeout: u64,
}

/// The options `train` and `pretrain` share: the data loop's shuffle and seed, the run
/// directory and its checkpoints, how often to validate and log, and the runtime.
/// `pretrain` keeps its own help for `--seed`, `--out` and `--eval-every`.
#[derive(Debug, Clone, Args)]
// Flattened: the command's own about stays, not this doc.
#[command(about = None, long_about = None)]
pub struct RunArgs {
    /// Samples the shuffle buffer mixes across shards
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub shuffle_buffer: usize,

    /// Seed of every random draw (shuffling, crops, mixing, initialisation)
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub seed: u64,

    /// Run directory [default: runs/DATASET-MODEL]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Continue the run in --out from its last checkpoint
    #[arg(long)]
    pub resume: bool,

    /// Also checkpoint every N optimiser steps (0: only at epoch ends)
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub save_every: u64,

    /// Checkpoints kept
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub keep: usize,

    /// Evaluate the validation split every N epochs (and after the last)
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub eval_every: u64,

    /// Write a metrics line every N optimiser steps
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub log_every: u64,

    /// Fail on the first sample that cannot be read instead of counting it
    #[arg(long)]
    pub strict: bool,

    /// Write no TensorBoard event files (`<run>/tb/`) beside metrics.jsonl
    #[arg(long)]
    pub no_tensorboard: bool,

    #[command(flatten)]
    pub runtime: RuntimeArgs,

    #[command(flatten)]
    pub dist: DistArgs,
}

#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,

    /// Options from the train table of a recipe file (manifests/recipes/*.toml);
    /// options given here override them
    #[arg(long, value_name = "FILE")]
    pub recipe_file: Option<PathBuf>,

    /// Model to train
    #[arg(long, value_enum, value_name = "M")]
    pub model: ModelName,

    /// Initial weights: a safetensors file (ViT: with config.json beside it, as
    /// transformers and scripts/convert_videomae.py write them)
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,

    #[arg(long, default_value_t = 30, value_name = "N")]
    pub epochs: u64,

    /// Samples per batch: B x --repeated-aug clips go through the model
    #[arg(long, default_value_t = 8, value_name = "B")]
    pub batch_size: usize,

    /// Batches per optimiser step (gradient accumulation)
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub accum: usize,

    /// Peak learning rate [default: --base-lr x batch x accum / 256 for ViTs, 2e-3 for
    /// CNNs]
    #[arg(long, value_name = "X", conflicts_with = "base_lr")]
    pub lr: Option<f64>,

    /// Peak learning rate per 256 clips: lr = X x batch x accum x ranks / 256
    /// (VideoMAE's --lr) [default: 1e-3 for ViTs]
    #[arg(long, value_name = "X")]
    pub base_lr: Option<f64>,

    /// `pretrain`'s final and warm-up learning rates per 256 clips (scaled like
    /// `--base-lr`), where `--min-lr` and `--warmup-lr` are not given.
    #[arg(skip)]
    pub base_min_lr: Option<f64>,
    #[arg(skip)]
    pub base_warmup_lr: Option<f64>,

    /// Final learning rate of the cosine [default: lr / 100]
    #[arg(long, value_name = "X")]
    pub min_lr: Option<f64>,

    /// Epochs of linear warm-up [default: a tenth of the epochs, at most 5]
    #[arg(long, value_name = "E")]
    pub warmup_epochs: Option<f64>,

    /// Learning rate at the start of the warm-up [default: lr / 100]
    #[arg(long, value_name = "X")]
    pub warmup_lr: Option<f64>,

    /// AdamW weight decay (not on biases, norms or position tables)
    #[arg(long, default_value_t = 0.05, value_name = "X")]
    pub weight_decay: f64,

    /// AdamW betas
    #[arg(long, value_parser = parse_betas, default_value = "0.9,0.999", value_name = "B1,B2")]
    pub betas: (f64, f64),

    /// Optimiser
    #[arg(long, value_enum, default_value = "adamw", value_name = "O")]
    pub optimizer: Optimizer,

    /// SGD momentum [default: 0.9 with --optimizer sgd]
    #[arg(long, value_name = "M", value_parser = parse_fraction)]
    pub momentum: Option<f64>,

    /// Nesterov momentum for SGD
    #[arg(long)]
    pub nesterov: bool,

    /// Layer-wise lr decay for ViTs [default: 0.75 with --init, else 1]
    #[arg(long, value_name = "X", value_parser = parse_fraction)]
    pub layer_decay: Option<f64>,

    #[arg(long, default_value_t = 0.1, value_name = "X", value_parser = parse_fraction)]
    pub label_smoothing: f64,

    /// Mixup alpha (0: off)
    #[arg(long, default_value_t = 0.0, value_name = "A")]
    pub mixup: f64,

    /// CutMix alpha (0: off); with mixup too, each mixed batch picks one at random
    #[arg(long, default_value_t = 0.0, value_name = "A")]
    pub cutmix: f64,

    /// Probability that a batch is mixed when mixup or cutmix is on
    #[arg(long, default_value_t = 1.0, value_name = "P", value_parser = parse_fraction)]
    pub mix_prob: f64,

    /// Stochastic depth of the last ViT block [default: 0.1]
    #[arg(long, value_name = "P", value_parser = parse_fraction)]
    pub drop_path: Option<f64>,

    /// With several ranks: batch norm's training statistics over every rank's batch
    /// (as one process with the whole global batch), not each rank's own
    #[arg(long)]
    pub sync_bn: bool,

    /// Dropout before the classifier [default: tiny3d 0.3, X3D 0.5]
    #[arg(long, value_name = "P", value_parser = parse_fraction)]
    pub dropout: Option<f64>,

    /// Clip the global gradient norm to this
    #[arg(long, value_name = "X")]
    pub clip_grad: Option<f64>,

    /// Width of tiny3d's first stage
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub width: i64,

    /// Model input HxW; a ViT's must be multiples of its patch size [default: the
    /// stored frame size, for ViTs rounded down to multiples of the patch size]
    #[arg(long, value_parser = parse_size, value_name = "HxW")]
    pub input: Option<(usize, usize)>,

    /// Random resized crop: range of the area fraction
    #[arg(long, value_parser = parse_pair, default_value = "0.25,1", value_name = "A,B")]
    pub crop_scale: (f64, f64),

    /// Instead of the random resized crop: scale the short side to a random length in
    /// [MIN, MAX] pixels, then crop --input at a random place (SlowFast's and PMV's
    /// default recipe: 256,320)
    #[arg(long, value_parser = parse_scales, value_name = "MIN,MAX")]
    pub jitter_scales: Option<(usize, usize)>,

    /// Evaluation views: scale the short side to S pixels, then crop --input (along the
    /// long side for several crops) [default: the largest window of the input's aspect]
    #[arg(long, value_name = "S")]
    pub test_scale: Option<usize>,

    /// Random resized crop: range of the aspect ratio relative to the input's
    #[arg(long, value_parser = parse_pair, default_value = "0.75,1.3333", value_name = "A,B")]
    pub crop_ratio: (f64, f64),

    /// Probability of a horizontal flip (0 when left and right are different classes)
    #[arg(long, default_value_t = 0.5, value_name = "P", value_parser = parse_fraction)]
    pub flip: f64,

    /// Repeated augmentation: each sample read gives N independently augmented views
    /// (own clip, crop, flip, erasing), so an optimiser step sees batch x N x accum
    /// clips (VideoMAE's --num_sample)
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = parse_count)]
    pub repeated_aug: usize,

    /// Probability of random erasing per training view (0: off), after normalisation,
    /// one rectangle through every frame of the clip (VideoMAE's --reprob)
    #[arg(long, default_value_t = 0.0, value_name = "P", value_parser = parse_fraction)]
    pub random_erase: f64,

    /// What random erasing fills with: const (0), rand (a normal value per channel and
    /// frame) or pixel (a normal value per pixel)
    #[arg(long, value_enum, default_value = "pixel", value_name = "M")]
    pub erase_mode: EraseMode,

    /// Random erasing: at most N rectangles per view (1 to N, area shared among them)
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = parse_count)]
    pub erase_count: usize,

    /// RandAugment policy applied to each training view after its crop, timm's syntax
    /// (e.g. rand-m7-n4-mstd0.5-inc1, VideoMAE's fine-tuning policy)
    #[arg(long, value_name = "SPEC")]
    pub auto_augment: Option<String>,

    /// Keep an exponential moving average of the weights and buffers (timm's
    /// ModelEmaV2), validate it beside the model and save it as model-ema.safetensors
    #[arg(long)]
    pub model_ema: bool,

    /// Decay of --model-ema per optimiser step
    #[arg(long, default_value_t = 0.9999, value_name = "D", value_parser = parse_fraction)]
    pub model_ema_decay: f64,

    /// Multimodal classifier: the --model video branch fused with a cover-image branch
    /// (the samples' .jpg) and a text branch (their .txt), as the xinpianchang baseline
    #[arg(long)]
    pub multimodal: bool,

    /// Multimodal: cover input HxW (the cover's centred window of that aspect)
    #[arg(long, value_parser = parse_size, default_value = "64x112", value_name = "HxW")]
    pub cover_size: (usize, usize),

    /// Multimodal: channels of the cover CNN's first stage
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub cover_channels: usize,

    /// Multimodal: leave the cover branch out
    #[arg(long)]
    pub no_cover: bool,

    /// Multimodal: leave the text branch out
    #[arg(long)]
    pub no_text: bool,

    /// Multimodal: tokens kept per text
    #[arg(long, default_value_t = 48, value_name = "N")]
    pub text_len: usize,

    /// Multimodal: token embedding width
    #[arg(long, default_value_t = 64, value_name = "D")]
    pub text_dim: usize,

    /// Multimodal: largest vocabulary built from the training split's texts
    #[arg(long, default_value_t = 50_000, value_name = "N")]
    pub vocab_size: usize,

    /// Multimodal: tokens seen fewer times in the training split are unknown
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub min_count: usize,

    /// Multimodal: width of each branch's projection and of the fusion layer
    #[arg(long, default_value_t = 256, value_name = "D")]
    pub fusion_dim: usize,

    /// Multimodal: probability of dropping a whole branch of a training sample
    #[arg(long, default_value_t = 0.1, value_name = "P", value_parser = parse_fraction)]
    pub modality_dropout: f64,

    /// Train a sigmoid/BCE head (several labels per item) [default: as the dataset is]
    #[arg(long, conflicts_with = "single_label")]
    pub multi_label: bool,

    /// Train a softmax head on the first label of each item
    #[arg(long)]
    pub single_label: bool,

    #[command(flatten)]
    pub run: RunArgs,

    /// Set by `pretrain`: masked pre-training instead of classification.
    #[arg(skip)]
    pub pretrain: Option<PretrainOptions>,
}

/// What `pretrain` adds to a training run.
#[derive(Debug, Clone, PartialEq)]
pub struct PretrainOptions {
    pub mask_ratio: f64,
    pub decoder_depth: usize,
    pub decoder_width: Option<usize>,
    pub norm_pix_loss: bool,
}

/// `MIN,MAX` pixels, 0 < MIN <= MAX.
pub fn parse_scales(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("{s:?} is not MIN,MAX"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{v:?} is not a length in pixels"))
    };
    let (a, b) = (parse(a)?, parse(b)?);
    if a > b {
        return Err(format!("{s:?}: need MIN <= MAX"));
    }
    Ok((a, b))
}

/// `B1,B2`, each in [0, 1).
pub fn parse_betas(s: &str) -> Result<(f64, f64), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("{s:?} is not B1,B2"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<f64>()
            .ok()
            .filter(|x| (0.0..1.0).contains(x))
            .ok_or_else(|| format!("{v:?} is not a beta in [0, 1)"))
    };
    Ok((parse(a)?, parse(b)?))
}

#[derive(Debug, Clone, Args)]
#[command(
    mut_arg("seed", |a| a.help("Seed of every random draw (shuffling, crops, masks, initialisation)")),
    mut_arg("out", |a| a.help("Run directory [default: runs/DATASET-MODEL-pretrain]")),
    mut_arg("eval_every", |a| {
        a.help("Reconstruction loss on the validation split every N epochs (and after the last)")
    })
)]
pub struct PretrainArgs {
    #[command(flatten)]
    pub data: DataArgs,

    /// Options from the pretrain table of a recipe file (manifests/recipes/*.toml);
    /// options given here override them
    #[arg(long, value_name = "FILE")]
    pub recipe_file: Option<PathBuf>,

    /// Encoder to pre-train
    #[arg(long, value_enum, value_name = "M")]
    pub model: ModelName,

    /// Continue from a VideoMAEForPreTraining checkpoint (safetensors with config.json
    /// beside it: a transformers folder or a pretrain run's model or checkpoint)
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,

    /// Fraction of each frame's tubelets hidden from the encoder (0.75 for small sets)
    #[arg(long, default_value_t = 0.9, value_name = "R", value_parser = parse_fraction)]
    pub mask_ratio: f64,

    /// Decoder blocks
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub decoder_depth: usize,

    /// Decoder width [default: half the encoder's: 192 for vit-s, 384 for vit-b]
    #[arg(long, value_name = "D")]
    pub decoder_width: Option<usize>,

    /// Reconstruct raw pixels instead of per-tubelet normalised ones
    #[arg(long)]
    pub no_norm_pix_loss: bool,

    #[arg(long, default_value_t = 800, value_name = "N")]
    pub epochs: u64,

    /// Clips per batch
    #[arg(long, default_value_t = 8, value_name = "B")]
    pub batch_size: usize,

    /// Batches per optimiser step (gradient accumulation)
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub accum: usize,

    /// Peak learning rate [default: --base-lr x batch x accum / 256]
    #[arg(long, value_name = "X", conflicts_with = "base_lr")]
    pub lr: Option<f64>,

    /// Peak learning rate per 256 clips (VideoMAE's --lr)
    #[arg(long, default_value_t = 1.5e-4, value_name = "X")]
    pub base_lr: f64,

    /// Final learning rate of the cosine [default: 1e-5 x batch x accum x ranks / 256]
    #[arg(long, value_name = "X")]
    pub min_lr: Option<f64>,

    /// Learning rate at the start of the warm-up [default: 1e-6 x batch x accum x ranks / 256]
    #[arg(long, value_name = "X")]
    pub warmup_lr: Option<f64>,

    /// Epochs of linear warm-up [default: a twentieth of the epochs, at most 40]
    #[arg(long, value_name = "E")]
    pub warmup_epochs: Option<f64>,

    #[arg(long, default_value_t = 0.05, value_name = "X")]
    pub weight_decay: f64,

    /// AdamW betas
    #[arg(long, value_parser = parse_betas, default_value = "0.9,0.95", value_name = "B1,B2")]
    pub betas: (f64, f64),

    /// Clip the global gradient norm to this
    #[arg(long, value_name = "X")]
    pub clip_grad: Option<f64>,

    /// Stochastic depth of the last encoder block
    #[arg(long, default_value_t = 0.0, value_name = "P", value_parser = parse_fraction)]
    pub drop_path: f64,

    /// Model input HxW, multiples of the patch size [default: the stored frame size,
    /// rounded down to multiples of the patch size]
    #[arg(long, value_parser = parse_size, value_name = "HxW")]
    pub input: Option<(usize, usize)>,

    /// Random resized crop: range of the area fraction (VideoMAE's multi-scale crop
    /// takes sides of 1 to 0.66 of the short side)
    #[arg(long, value_parser = parse_pair, default_value = "0.44,1", value_name = "A,B")]
    pub crop_scale: (f64, f64),

    /// Random resized crop: range of the aspect ratio relative to the input's
    #[arg(long, value_parser = parse_pair, default_value = "0.75,1.3333", value_name = "A,B")]
    pub crop_ratio: (f64, f64),

    /// Probability of a horizontal flip
    #[arg(long, default_value_t = 0.0, value_name = "P", value_parser = parse_fraction)]
    pub flip: f64,

    #[command(flatten)]
    pub run: RunArgs,
}

impl PretrainArgs {
    /// The training run this is: the same loop with a reconstruction objective.
    pub fn to_train_args(&self) -> TrainArgs {
        TrainArgs {
            data: self.data.clone(),
            recipe_file: self.recipe_file.clone(),
            model: self.model,
            init: self.init.clone(),
            epochs: self.epochs,
            batch_size: self.batch_size,
            accum: self.accum,
            // Scaled by the global batch where the ranks are known.
            lr: self.lr,
            base_lr: Some(self.base_lr),
            base_min_lr: Some(1e-5),
            base_warmup_lr: Some(1e-6),
            min_lr: self.min_lr,
            warmup_lr: self.warmup_lr,
            warmup_epochs: Some(
                self.warmup_epochs
                    .unwrap_or_else(|| (self.epochs as f64 / 20.0).min(40.0)),
            ),
            weight_decay: self.weight_decay,
            betas: self.betas,
            layer_decay: Some(1.0),
            label_smoothing: 0.0,
            mixup: 0.0,
            cutmix: 0.0,
            mix_prob: 1.0,
            drop_path: Some(self.drop_path),
            dropout: None,
            sync_bn: false,
            clip_grad: self.clip_grad,
            width: 16,
            input: self.input,
            crop_scale: self.crop_scale,
            crop_ratio: self.crop_ratio,
            jitter_scales: None,
            test_scale: None,
            optimizer: Optimizer::Adamw,
            momentum: None,
            nesterov: false,
            flip: self.flip,
            repeated_aug: 1,
            random_erase: 0.0,
            erase_mode: EraseMode::Pixel,
            erase_count: 1,
            auto_augment: None,
            model_ema: false,
            model_ema_decay: 0.9999,
            multi_label: false,
            single_label: false,
            multimodal: false,
            cover_size: (64, 112),
            cover_channels: 16,
            no_cover: false,
            no_text: false,
            text_len: 48,
            text_dim: 64,
            vocab_size: 50_000,
            min_count: 2,
            fusion_dim: 256,
            modality_dropout: 0.1,
            run: self.run.clone(),
            pretrain: Some(PretrainOptions {
                mask_ratio: self.mask_ratio,
                decoder_depth: self.decoder_depth,
                decoder_width: self.decoder_width,
                norm_pix_loss: !self.no_norm_pix_loss,
            }),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Options from the eval table of a recipe file (manifests/recipes/*.toml);
    /// options given here override them
    #[arg(long, value_name = "FILE")]
    pub recipe_file: Option<PathBuf>,

    /// Run directory to evaluate (relative: from the data root)
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,

    /// Data root [env PMV_DATA_ROOT; default ./pmv-data-root]
    #[arg(long, env = "PMV_DATA_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Split to evaluate
    #[arg(long, default_value = "val", value_name = "S")]
    pub split: String,

    /// Views per video: stored clips x spatial crops (1: centre; 3: start, centre and
    /// end of the long side); CLIPS may be `all` [default: allx3]
    #[arg(long, value_parser = parse_views, value_name = "CLIPSxCROPS")]
    pub views: Option<(Option<usize>, usize)>,

    /// Evaluation input HxW [default: the run's input] (X3D-M is tested at 256 after
    /// training at 224; a ViT's must be multiples of its patch size)
    #[arg(long, value_parser = parse_size, value_name = "HxW")]
    pub input: Option<(usize, usize)>,

    /// Scale the short side to S pixels before cropping the views [default: the run's
    /// --test-scale, else the largest window of the input's aspect]
    #[arg(long, value_name = "S")]
    pub test_scale: Option<usize>,

    /// Evaluate these shards instead of the run's split
    #[arg(long, value_name = "DIR_OR_GLOB")]
    pub shards: Option<String>,

    /// Weights to evaluate [default: the run's final model, else its last checkpoint]
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,

    /// Videos per batch (each with all its views)
    #[arg(long, default_value_t = 4, value_name = "B")]
    pub batch_size: usize,

    /// Output directory [default: RUN/eval-SPLIT-CLIPSxCROPS; with --shards,
    /// RUN/eval-shards-NAME-CLIPSxCROPS]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Check each catalog shard's SHA-256 (and decode every frame of JPEG shards)
    /// before reading it
    #[arg(long)]
    pub verify: bool,

    /// Evaluate the run's moving average of the weights (model-ema.safetensors, or the
    /// last checkpoint's; a run trained with --model-ema)
    #[arg(long, conflicts_with = "checkpoint")]
    pub ema: bool,

    #[command(flatten)]
    pub runtime: RuntimeArgs,

    #[command(flatten)]
    pub dist: DistArgs,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value = "vit-s", value_name = "M")]
    pub model: ModelName,

    #[arg(long, default_value_t = 8, value_name = "B")]
    pub batch: usize,

    #[arg(long, default_value_t = 16, value_name = "T")]
    pub frames: usize,

    #[arg(long, value_parser = parse_size, default_value = "224", value_name = "HxW")]
    pub size: (usize, usize),

    #[arg(long, default_value_t = 400, value_name = "N")]
    pub classes: usize,

    /// Timed optimiser steps
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub steps: usize,

    /// Untimed steps first
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub warmup: usize,

    /// Time VideoMAE masked pre-training steps (encoder on the visible tubelets,
    /// decoder, reconstruction loss) at this mask ratio instead of fine-tuning steps
    #[arg(long, value_name = "R", value_parser = parse_fraction)]
    pub pretrain: Option<f64>,

    /// Feed batches from these shards through the loader instead of one synthetic
    /// batch kept on the device
    #[arg(long, value_name = "DIR_OR_GLOB")]
    pub shards: Option<String>,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Clone, Args)]
pub struct BenchLoaderArgs {
    /// Shards to read: a directory of .tar files, one with train/, or a glob
    #[arg(long, value_name = "DIR_OR_GLOB")]
    pub shards: String,

    #[arg(long, default_value_t = 8, value_name = "B")]
    pub batch: usize,

    /// Output HxW [default: the stored size]
    #[arg(long, value_parser = parse_size, value_name = "HxW")]
    pub size: Option<(usize, usize)>,

    /// Loader threads
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub workers: usize,

    /// Epochs over the shards
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub epochs: u64,

    /// Random resized crop: range of the area fraction
    #[arg(long, value_parser = parse_pair, default_value = "0.25,1", value_name = "A,B")]
    pub crop_scale: (f64, f64),

    /// RandAugment policy applied to each view after its crop, as train takes it
    #[arg(long, value_name = "SPEC")]
    pub auto_augment: Option<String>,

    /// Random erasing probability per view: its rectangles are drawn in the loader
    /// threads (the fill happens on the device, after normalisation, outside this
    /// benchmark)
    #[arg(long, default_value_t = 0.0, value_name = "P", value_parser = parse_fraction)]
    pub random_erase: f64,

    /// Views per sample read (repeated augmentation)
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = parse_count)]
    pub repeated_aug: usize,
}

#[derive(Debug, Clone, Args)]
pub struct SynthArgs {
    /// Directory to write SPLIT/SPLIT-NNNNNN.tar and classes.txt into
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Classes (at most 12)
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub classes: usize,

    /// Videos per class in the train split
    #[arg(long, default_value_t = 40, value_name = "N")]
    pub train: usize,

    /// Videos per class in the val split
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub val: usize,

    /// Videos per class in the test split
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub test: usize,

    #[arg(long, default_value_t = 8, value_name = "T")]
    pub frames: usize,

    /// Frame size HxW
    #[arg(long, value_parser = parse_size, default_value = "64x48", value_name = "HxW")]
    pub size: (usize, usize),

    /// Clips per video
    #[arg(long, default_value_t = 2, value_name = "K")]
    pub clips: usize,

    #[arg(long, default_value_t = 10.0, value_name = "FPS")]
    pub fps: f64,

    #[arg(long, default_value_t = 64, value_name = "N")]
    pub shard_size: usize,

    /// Also write a cover (.jpg) and a text (.txt) per video; each video's class then
    /// shows in only one of video, cover and text
    #[arg(long)]
    pub multimodal: bool,

    /// Cover size HxW for --multimodal
    #[arg(long, value_parser = parse_size, default_value = "36x64", value_name = "HxW")]
    pub cover_size: (usize, usize),

    #[arg(long, default_value_t = 0, value_name = "N")]
    pub seed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vit_inputs_are_multiples_of_the_patch_never_rounded() {
        assert_eq!(check_vit_input((40, 40), 8), Ok(()));
        assert_eq!(check_vit_input((224, 160), 16), Ok(()));
        let e = check_vit_input((40, 40), 16).unwrap_err();
        assert_eq!(
            e,
            "--input 40x40: a ViT needs multiples of its 16 pixel patches"
        );
        assert!(check_vit_input((36, 40), 8).is_err());
        assert!(check_vit_input((0, 8), 8).is_err());
        assert_eq!(check_vit_frames(4, 2), Ok(()));
        assert!(
            check_vit_frames(3, 2)
                .unwrap_err()
                .contains("2-frame tubelets")
        );
        assert!(check_vit_frames(4, 4).is_ok() && check_vit_frames(2, 4).is_err());
    }

    #[test]
    fn values_parse() {
        assert_eq!(parse_size("288x192"), Ok((288, 192)));
        assert_eq!(parse_size("224"), Ok((224, 224)));
        assert!(parse_size("0x3").is_err());
        assert_eq!(parse_pair("0.25,1"), Ok((0.25, 1.0)));
        assert!(parse_pair("1,0.5").is_err());
        assert_eq!(parse_views("5x3"), Ok((Some(5), 3)));
        assert_eq!(parse_views("allx1"), Ok((None, 1)));
        assert!(parse_views("3").is_err());
    }
}
