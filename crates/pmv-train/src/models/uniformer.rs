//! UniFormer (Li et al., ICLR 2022) for video, as mmaction2 builds UniFormer-S: a 3×4×4
//! convolutional stem (temporal stride 2) and 1×2×2 patch merges, each followed by a
//! LayerNorm; four stages whose blocks first add a depthwise 3×3×3 convolution of their
//! input (the dynamic position embedding), then two residual branches: in stages 1-2
//! local "attention" (BatchNorm, 1×1×1 convolution, depthwise 5×5×5 convolution, 1×1×1
//! convolution) and a convolutional MLP, in stages 3-4 global multi-head self-attention
//! and an MLP, both after a LayerNorm; a final BatchNorm, global average pooling, dropout
//! and the classifier.
//!
//! Parameter names are the official UniFormer video code's (`patch_embed1.proj.weight`,
//! `blocks1.0.pos_embed.weight`, `blocks3.2.attn.qkv.weight`, `norm.running_mean`,
//! `head.weight`): mmaction2's backbone names without the `backbone.` prefix, its
//! `cls_head.fc_cls` as `head` (`scripts/convert_uniformer.py` maps both). Products and
//! convolutions run in the compute precision; norms, softmax statistics and the residual
//! stream stay fp32. Stochastic depth and head dropout draw only from [`Noise`]. It owns
//! the model's arithmetic only and never reads files.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use super::x3d::Bn;
use super::{ModelError, Noise, depth_rates};
use crate::device::Precision;

/// The UniFormer architecture and its training-time regularisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UniformerConfig {
    /// Blocks per stage (UniFormer-S: 3, 4, 8, 3); stages 1-2 convolutional, 3-4
    /// self-attention.
    pub depth: [usize; 4],
    /// Channels per stage (64, 128, 320, 512).
    pub embed_dim: [usize; 4],
    /// Channels per attention head (64): stage width / head_dim heads.
    pub head_dim: usize,
    /// MLP hidden width over block width (4).
    pub mlp_ratio: usize,
    /// Whether the attention's qkv projection has a bias (true).
    pub qkv_bias: bool,
    /// eps of the attention blocks' LayerNorms: 1e-6 as the official code (and PMV-400's
    /// copy of it) builds them, 1e-5 in mmaction2's; the patch-embedding LayerNorms
    /// always use 1e-5.
    pub norm_eps: f64,
    /// Classifier outputs.
    pub classes: usize,
    /// Dropout rate on the pooled feature before the classifier.
    pub dropout: f64,
    /// Largest stochastic-depth rate: block i of n drops with drop_path · i / (n - 1).
    pub drop_path: f64,
}

impl UniformerConfig {
    /// `uniformer-s` (21.4 M parameters with 400 classes) or `uniformer-b` (deeper:
    /// 5, 8, 20, 7 blocks). No parameter depends on the input, so `frames` and `size` only
    /// matter to [`check_input`](Self::check_input), which any run checks its input with.
    pub fn preset(
        name: &str,
        classes: usize,
        frames: usize,
        size: (usize, usize),
        dropout: f64,
        drop_path: f64,
    ) -> Option<Self> {
        let _ = (frames, size);
        let depth = match name {
            "uniformer-s" => [3, 4, 8, 3],
            "uniformer-b" => [5, 8, 20, 7],
            _ => return None,
        };
        Some(UniformerConfig {
            depth,
            embed_dim: [64, 128, 320, 512],
            head_dim: 64,
            mlp_ratio: 4,
            qkv_bias: true,
            norm_eps: 1e-6,
            classes,
            dropout,
            drop_path,
        })
    }

    /// Usage error text when an input [T, H, W] cannot run through this model: T must be
    /// even (the stem halves it), H and W multiples of 32 (the total spatial stride).
    pub fn check_input(&self, input: [usize; 3]) -> Result<(), String> {
        let [t, h, w] = input;
        if t == 0 || !t.is_multiple_of(2) {
            return Err(format!(
                "UniFormer needs an even, non-zero frame count (its stem halves time); got {t}"
            ));
        }
        if h == 0 || w == 0 || !h.is_multiple_of(32) || !w.is_multiple_of(32) {
            return Err(format!(
                "UniFormer needs height and width that are multiples of 32 (its total \
                 stride); got {h}x{w}"
            ));
        }
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        if self.head_dim == 0 {
            return Err("head_dim is 0".into());
        }
        for (s, &d) in self.embed_dim.iter().enumerate() {
            if d == 0 || (s >= 2 && !d.is_multiple_of(self.head_dim)) {
                return Err(format!(
                    "stage {} width {d} is not a non-zero multiple of head_dim {}",
                    s + 1,
                    self.head_dim
                ));
            }
        }
        if self.mlp_ratio == 0 {
            return Err("mlp_ratio is 0".into());
        }
        if !(0.0..1.0).contains(&self.dropout) || !(0.0..1.0).contains(&self.drop_path) {
            return Err(format!(
                "dropout {} and drop_path {} must lie in [0, 1)",
                self.dropout, self.drop_path
            ));
        }
        Ok(())
    }

    fn blocks(&self) -> usize {
        self.depth.iter().sum()
    }
}

/// A 3D convolution with bias, PyTorch's default initialisation (uniform in ±1/√fan_in
/// for weight and bias), which the reference keeps for its convolutions.
struct Conv {
    w: Tensor,
    b: Tensor,
    stride: [i64; 3],
    padding: [i64; 3],
    groups: i64,
}

impl Conv {
    #[allow(clippy::too_many_arguments)]
    fn new(
        p: &nn::Path,
        name: &str,
        inp: usize,
        out: usize,
        kernel: [i64; 3],
        stride: [i64; 3],
        padding: [i64; 3],
        groups: usize,
    ) -> Conv {
        let p = p.sub(name);
        let per_group = (inp / groups) as i64;
        let fan_in = (per_group * kernel.iter().product::<i64>()) as f64;
        let bound = 1.0 / fan_in.sqrt();
        let init = nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Conv {
            w: p.var(
                "weight",
                &[out as i64, per_group, kernel[0], kernel[1], kernel[2]],
                init,
            ),
            b: p.var("bias", &[out as i64], init),
            stride,
            padding,
            groups: groups as i64,
        }
    }

    /// A kernel-sized, same-padded depthwise convolution.
    fn depthwise(p: &nn::Path, name: &str, dim: usize, k: i64) -> Conv {
        Conv::new(p, name, dim, dim, [k; 3], [1; 3], [k / 2; 3], dim)
    }

    /// A 1×1×1 convolution.
    fn pointwise(p: &nn::Path, name: &str, inp: usize, out: usize) -> Conv {
        Conv::new(p, name, inp, out, [1; 3], [1; 3], [0; 3], 1)
    }

    fn forward(&self, x: &Tensor, kind: Kind) -> Tensor {
        x.to_kind(kind).conv3d(
            &self.w.to_kind(kind),
            Some(&self.b.to_kind(kind)),
            self.stride,
            self.padding,
            [1, 1, 1],
            self.groups,
        )
    }
}

/// A linear layer, trunc-normal(0.02) weights and zero bias as the reference initialises.
struct Linear {
    w: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    fn new(p: &nn::Path, name: &str, inp: usize, out: usize, bias: bool, std: f64) -> Linear {
        let p = p.sub(name);
        Linear {
            w: p.var(
                "weight",
                &[out as i64, inp as i64],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: std,
                },
            ),
            b: bias.then(|| p.var("bias", &[out as i64], nn::Init::Const(0.0))),
        }
    }

    fn forward(&self, x: &Tensor, kind: Kind) -> Tensor {
        let b = self.b.as_ref().map(|b| b.to_kind(kind));
        x.to_kind(kind).linear(&self.w.to_kind(kind), b.as_ref())
    }
}

/// LayerNorm over the last dimension, in fp32.
struct LayerNorm {
    w: Tensor,
    b: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn new(p: &nn::Path, name: &str, dim: usize, eps: f64) -> LayerNorm {
        let p = p.sub(name);
        LayerNorm {
            w: p.var("weight", &[dim as i64], nn::Init::Const(1.0)),
            b: p.var("bias", &[dim as i64], nn::Init::Const(0.0)),
            eps,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let d = self.w.size()[0];
        x.to_kind(Kind::Float)
            .layer_norm([d], Some(&self.w), Some(&self.b), self.eps, true)
    }
}

/// A patch embedding: a strided convolution, then LayerNorm over channels.
struct PatchEmbed {
    proj: Conv,
    norm: LayerNorm,
}

impl PatchEmbed {
    fn new(p: &nn::Path, inp: usize, out: usize, stem: bool) -> PatchEmbed {
        let proj = if stem {
            Conv::new(p, "proj", inp, out, [3, 4, 4], [2, 4, 4], [1, 0, 0], 1)
        } else {
            Conv::new(p, "proj", inp, out, [1, 2, 2], [1, 2, 2], [0, 0, 0], 1)
        };
        PatchEmbed {
            proj,
            norm: LayerNorm::new(p, "norm", out, 1e-5),
        }
    }

    /// `[B, C, T, H, W]` → `[B, C', T', H', W']` (fp32).
    fn forward(&self, x: &Tensor, kind: Kind) -> Tensor {
        let h = self.proj.forward(x, kind).permute([0, 2, 3, 4, 1]);
        self.norm.forward(&h).permute([0, 4, 1, 2, 3]).contiguous()
    }
}

/// Stage 1-2 block: local convolutional aggregation.
struct CBlock {
    pos_embed: Conv,
    norm1: Bn,
    conv1: Conv,
    attn: Conv,
    conv2: Conv,
    norm2: Bn,
    fc1: Conv,
    fc2: Conv,
}

impl CBlock {
    fn new(p: &nn::Path, dim: usize, hidden: usize) -> CBlock {
        let mlp = p.sub("mlp");
        CBlock {
            pos_embed: Conv::depthwise(p, "pos_embed", dim, 3),
            norm1: Bn::new(&p.sub("norm1"), dim, 1.0),
            conv1: Conv::pointwise(p, "conv1", dim, dim),
            attn: Conv::depthwise(p, "attn", dim, 5),
            conv2: Conv::pointwise(p, "conv2", dim, dim),
            norm2: Bn::new(&p.sub("norm2"), dim, 1.0),
            fc1: Conv::pointwise(&mlp, "fc1", dim, hidden),
            fc2: Conv::pointwise(&mlp, "fc2", hidden, dim),
        }
    }

    fn forward(&self, x: &Tensor, train: bool, kind: Kind, keep: Option<&[Tensor; 2]>) -> Tensor {
        let x = x + self.pos_embed.forward(x, kind).to_kind(Kind::Float);
        let h = self.conv1.forward(&self.norm1.forward(&x, train), kind);
        let h = self
            .conv2
            .forward(&self.attn.forward(&h, kind), kind)
            .to_kind(Kind::Float);
        let x = residual(&x, h, keep.map(|k| &k[0]));
        let h = self.fc1.forward(&self.norm2.forward(&x, train), kind);
        let h = self.fc2.forward(&h.gelu("none"), kind).to_kind(Kind::Float);
        residual(&x, h, keep.map(|k| &k[1]))
    }
}

/// Stage 3-4 block: global multi-head self-attention over all T·H·W tokens.
struct SaBlock {
    pos_embed: Conv,
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: i64,
}

impl SaBlock {
    fn new(p: &nn::Path, dim: usize, hidden: usize, cfg: &UniformerConfig) -> SaBlock {
        let (attn, mlp) = (p.sub("attn"), p.sub("mlp"));
        SaBlock {
            pos_embed: Conv::depthwise(p, "pos_embed", dim, 3),
            norm1: LayerNorm::new(p, "norm1", dim, cfg.norm_eps),
            qkv: Linear::new(&attn, "qkv", dim, 3 * dim, cfg.qkv_bias, 0.02),
            proj: Linear::new(&attn, "proj", dim, dim, true, 0.02),
            norm2: LayerNorm::new(p, "norm2", dim, cfg.norm_eps),
            fc1: Linear::new(&mlp, "fc1", dim, hidden, true, 0.02),
            fc2: Linear::new(&mlp, "fc2", hidden, dim, true, 0.02),
            heads: (dim / cfg.head_dim) as i64,
        }
    }

    fn forward(&self, x: &Tensor, kind: Kind, keep: Option<&[Tensor; 2]>) -> Tensor {
        let x = x + self.pos_embed.forward(x, kind).to_kind(Kind::Float);
        let (b, c, t, h, w) = x.size5().expect("features are [B, C, T, H, W]");
        let n = t * h * w;
        // Tokens in t, h, w order: [B, N, C].
        let x = x.flatten(2, -1).transpose(1, 2);
        let qkv = self
            .qkv
            .forward(&self.norm1.forward(&x), kind)
            .view([b, n, 3, self.heads, c / self.heads])
            .permute([2, 0, 3, 1, 4]);
        let a = Tensor::scaled_dot_product_attention(
            &qkv.get(0),
            &qkv.get(1),
            &qkv.get(2),
            None::<&Tensor>,
            0.0,
            false,
            None::<f64>,
            false,
        )
        .transpose(1, 2)
        .reshape([b, n, c]);
        let a = self.proj.forward(&a, kind).to_kind(Kind::Float);
        let x = residual(&x, a, keep.map(|k| k[0].view([-1, 1, 1])).as_ref());
        let m = self.fc1.forward(&self.norm2.forward(&x), kind).gelu("none");
        let m = self.fc2.forward(&m, kind).to_kind(Kind::Float);
        let x = residual(&x, m, keep.map(|k| k[1].view([-1, 1, 1])).as_ref());
        x.transpose(1, 2).reshape([b, c, t, h, w])
    }
}

/// `x + branch`, the branch scaled per sample when stochastic depth is on.
fn residual(x: &Tensor, branch: Tensor, keep: Option<&Tensor>) -> Tensor {
    match keep {
        Some(k) => x + branch * k,
        None => x + branch,
    }
}

enum Block {
    Conv(Box<CBlock>),
    Attention(Box<SaBlock>),
}

/// UniFormer with its classifier head.
pub struct Uniformer {
    /// The configuration the model was built from.
    pub cfg: UniformerConfig,
    patch_embed: [PatchEmbed; 4],
    /// Blocks of the four stages, in order, with their stochastic-depth rates.
    stages: [Vec<(Block, f64)>; 4],
    norm: Bn,
    head: Linear,
    precision: Precision,
}

impl Uniformer {
    /// Builds the model under `root` with the official names, freshly initialised as the
    /// reference is: trunc-normal(0.02) linear weights with zero biases, LayerNorm and
    /// BatchNorm at identity, convolutions at PyTorch's default, the classifier
    /// normal(0.01) with zero bias (mmaction2's `I3DHead`).
    pub fn new(
        root: &nn::Path,
        cfg: &UniformerConfig,
        precision: Precision,
    ) -> Result<Uniformer, ModelError> {
        cfg.check().map_err(ModelError::Config)?;
        let dims = cfg.embed_dim;
        let mut rates = depth_rates(cfg.drop_path, cfg.blocks()).into_iter();
        let patch_embed = [0, 1, 2, 3].map(|s| {
            let inp = if s == 0 { 3 } else { dims[s - 1] };
            PatchEmbed::new(
                &root.sub(format!("patch_embed{}", s + 1)),
                inp,
                dims[s],
                s == 0,
            )
        });
        let stages = [0, 1, 2, 3].map(|s| {
            let p = root.sub(format!("blocks{}", s + 1));
            (0..cfg.depth[s])
                .map(|i| {
                    let bp = p.sub(i.to_string());
                    let hidden = dims[s] * cfg.mlp_ratio;
                    let block = if s < 2 {
                        Block::Conv(Box::new(CBlock::new(&bp, dims[s], hidden)))
                    } else {
                        Block::Attention(Box::new(SaBlock::new(&bp, dims[s], hidden, cfg)))
                    };
                    (block, rates.next().expect("a rate for every block"))
                })
                .collect()
        });
        let norm = Bn::new(&root.sub("norm"), dims[3], 1.0);
        let head = Linear::new(root, "head", dims[3], cfg.classes, true, 0.01);
        Ok(Uniformer {
            cfg: cfg.clone(),
            patch_embed,
            stages,
            norm,
            head,
            precision,
        })
    }

    /// Uniform draws a training forward needs: two per block per sample for stochastic
    /// depth (when drop_path > 0), then one per pooled feature per sample for the head
    /// dropout (when dropout > 0).
    pub fn noise_len(&self, batch: usize) -> usize {
        self.drop_path_len(batch) + self.dropout_len(batch)
    }

    fn drop_path_len(&self, batch: usize) -> usize {
        if self.cfg.drop_path > 0.0 {
            self.cfg.blocks() * 2 * batch
        } else {
            0
        }
    }

    fn dropout_len(&self, batch: usize) -> usize {
        if self.cfg.dropout > 0.0 {
            batch * self.feature_dim()
        } else {
            0
        }
    }

    /// Width of the pooled feature (the last stage's).
    pub fn feature_dim(&self) -> usize {
        self.cfg.embed_dim[3]
    }

    /// Whether a parameter belongs to the classifier.
    pub fn is_head(name: &str) -> bool {
        name.starts_with("head.")
    }

    /// The pooled feature `[B, feature_dim()]` (fp32) before dropout. `train`: BatchNorm
    /// uses (and updates) batch statistics, and blocks drop per sample from `noise`.
    pub fn features(&self, x: &Tensor, train: bool, noise: Option<&Noise>) -> Tensor {
        let kind = self.precision.compute_kind();
        let b = x.size()[0];
        let mut index = 0;
        let mut h = x.shallow_clone();
        for (embed, stage) in self.patch_embed.iter().zip(&self.stages) {
            h = embed.forward(&h, kind);
            for (block, p) in stage {
                let keep = match noise {
                    Some(nz) if train && *p > 0.0 => {
                        let (a, m) = nz.drop_path(index, b, *p);
                        Some([a, m])
                    }
                    _ => None,
                };
                h = match block {
                    Block::Conv(blk) => {
                        let keep =
                            keep.map(|[a, c]| [a.view([b, 1, 1, 1, 1]), c.view([b, 1, 1, 1, 1])]);
                        blk.forward(&h, train, kind, keep.as_ref())
                    }
                    Block::Attention(blk) => blk.forward(&h, kind, keep.as_ref()),
                };
                index += 1;
            }
        }
        self.norm
            .forward(&h, train)
            .mean_dim([2i64, 3, 4].as_slice(), false, Kind::Float)
    }

    /// Logits `[B, classes]` (fp32); `train` as for [`features`](Self::features), plus
    /// head dropout from `noise`.
    pub fn forward(&self, x: &Tensor, train: bool, noise: Option<&Noise>) -> Tensor {
        let kind = self.precision.compute_kind();
        let mut f = self.features(x, train, noise);
        if let (true, Some(nz)) = (train && self.cfg.dropout > 0.0, noise) {
            let start = self.drop_path_len(f.size()[0] as usize) as i64;
            f = nz.dropout(&f, start, self.cfg.dropout);
        }
        self.head.forward(&f, kind).to_kind(Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use tch::Device;

    use super::*;
    use crate::models::{ModelSpec, load_into, read_weights, test_noise};

    fn repo() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
    }

    /// Runs a script of tests/python with the venv's python; its stdout.
    fn python(script: &str, args: &[&str]) -> String {
        let out = std::process::Command::new(repo().join(".venv/bin/python"))
            .arg(repo().join("tests/python").join(script))
            .args(args)
            .output()
            .expect("run the venv's python (scripts/setup.sh installs torch and mmaction2)");
        assert!(
            out.status.success(),
            "{script} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Loads a checkpoint into the model `cfg` built on `vs` as `--init` loads strictly,
    /// failing on any missing, unexpected or mis-shaped tensor.
    fn load_strict(vs: &nn::VarStore, cfg: &UniformerConfig, path: &Path) {
        let spec = ModelSpec::Uniformer {
            name: "uniformer-s".into(),
            config: cfg.clone(),
        };
        let report = load_into(vs, &spec, path, read_weights(path).unwrap(), false).unwrap();
        assert_eq!(report.loaded, vs.variables().len());
    }

    /// UniFormer-S as mmaction2 builds it (the reference): its LayerNorm eps.
    fn s_config(classes: usize, dropout: f64, drop_path: f64) -> UniformerConfig {
        UniformerConfig {
            norm_eps: 1e-5,
            ..UniformerConfig::preset("uniformer-s", classes, 16, (224, 224), dropout, drop_path)
                .unwrap()
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.size(), b.size());
        (a - b).abs().max().double_value(&[])
    }

    /// Reference logits for `args`; ours in fp32 (asserted within 1e-4) and bf16
    /// (within 5% of the largest logit). Returns the fp32 max |difference|.
    fn parity(frames: usize, height: usize, width: usize) -> f64 {
        let dir = tempfile::tempdir().unwrap();
        let (t, h, w) = (frames.to_string(), height.to_string(), width.to_string());
        python(
            "uniformer_reference.py",
            &[
                dir.path().to_str().unwrap(),
                "--frames",
                &t,
                "--height",
                &h,
                "--width",
                &w,
            ],
        );
        let cfg = s_config(400, 0.0, 0.0);
        cfg.check_input([frames, height, width]).unwrap();
        let x = Tensor::read_npy(dir.path().join("input.npy")).unwrap();
        let expected = Tensor::read_npy(dir.path().join("expected.npy")).unwrap();
        let weights = dir.path().join("model.safetensors");
        let run = |precision| {
            let vs = nn::VarStore::new(Device::Cpu);
            let model = Uniformer::new(&vs.root(), &cfg, precision).unwrap();
            load_strict(&vs, &cfg, &weights);
            tch::no_grad(|| model.forward(&x, false, None))
        };
        let logits = run(Precision::Fp32);
        let d = max_diff(&logits, &expected);
        assert!(d < 1e-4, "max |difference| {d}");
        let bf = run(Precision::Bf16);
        let rel = max_diff(&bf, &logits) / logits.abs().max().double_value(&[]);
        assert!(rel < 5e-2, "bf16 relative difference {rel}");
        d
    }

    #[test]
    fn logits_match_mmaction_square() {
        parity(4, 64, 64);
    }

    #[test]
    fn logits_match_mmaction_portrait() {
        parity(4, 96, 64);
    }

    #[test]
    fn uniformer_s_has_the_published_shape() {
        let cfg = s_config(400, 0.0, 0.1);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Uniformer::new(&vs.root(), &cfg, Precision::Fp32).unwrap();
        let params: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        // mmaction2's UniFormer-S backbone (21,195,200) and a 400-class fc.
        assert_eq!(params, 21_195_200 + 512 * 400 + 400);
        let names = vs.variables();
        // 316 tensors: the reference's 331 less 15 BatchNorm counters.
        assert_eq!(names.len(), 316);
        for n in [
            "patch_embed1.proj.weight",
            "patch_embed4.norm.bias",
            "blocks1.0.pos_embed.weight",
            "blocks2.3.attn.weight",
            "blocks2.3.norm2.running_var",
            "blocks3.7.attn.qkv.bias",
            "blocks4.2.mlp.fc2.weight",
            "norm.running_mean",
            "head.weight",
        ] {
            assert!(names.contains_key(n), "{n}");
        }
        assert_eq!(names["blocks1.0.attn.weight"].size(), [64, 1, 5, 5, 5]);
        assert_eq!(names["blocks3.0.attn.qkv.weight"].size(), [960, 320]);
        assert!(Uniformer::is_head("head.bias") && !Uniformer::is_head("norm.weight"));
        // Stochastic depth rises linearly over the 18 blocks to drop_path.
        let rates: Vec<f64> = model.stages.iter().flatten().map(|(_, p)| *p).collect();
        assert_eq!(rates.len(), 18);
        assert_eq!(rates[0], 0.0);
        assert!((rates[17] - 0.1).abs() < 1e-12 && (rates[9] - 0.1 * 9.0 / 17.0).abs() < 1e-12);
        assert_eq!(model.feature_dim(), 512);
        assert!(cfg.check_input([16, 288, 192]).is_ok());
        assert!(
            cfg.check_input([15, 224, 224])
                .unwrap_err()
                .contains("even")
        );
        assert!(cfg.check_input([16, 224, 200]).unwrap_err().contains("32"));
        assert!(UniformerConfig::preset("uniformer-x", 4, 16, (224, 224), 0.0, 0.0).is_none());
        let x = Tensor::randn([1, 3, 4, 96, 64], (Kind::Float, Device::Cpu));
        let y = tch::no_grad(|| model.forward(&x, false, None));
        assert_eq!(y.size(), [1, 400]);
    }

    #[test]
    fn training_draws_only_from_noise_and_trains() {
        let cfg = UniformerConfig {
            depth: [1, 1, 1, 1],
            ..s_config(5, 0.5, 0.5)
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Uniformer::new(&vs.root(), &cfg, Precision::Fp32).unwrap();
        let b = 3;
        // 4 blocks x 2 branches x 3 samples, then 3 x 512 for the head dropout.
        assert_eq!(model.noise_len(b), 4 * 2 * 3 + 3 * 512);
        let quiet = Uniformer::new(
            &nn::VarStore::new(Device::Cpu).root(),
            &UniformerConfig {
                dropout: 0.0,
                drop_path: 0.0,
                ..cfg.clone()
            },
            Precision::Fp32,
        )
        .unwrap();
        assert_eq!(quiet.noise_len(b), 0);
        let x = Tensor::randn([b as i64, 3, 4, 64, 64], (Kind::Float, Device::Cpu));
        let draws = |seed: u64| test_noise(model.noise_len(b), seed);
        let mean0 = vs.variables()["norm.running_mean"].copy();
        let y1 = model.forward(&x, true, Some(&draws(1)));
        let y1_again = model.forward(&x, true, Some(&draws(1)));
        let y2 = model.forward(&x, true, Some(&draws(2)));
        assert!(y1.isfinite().all().int64_value(&[]) == 1);
        assert_eq!(max_diff(&y1, &y1_again), 0.0, "same noise, same output");
        assert!(max_diff(&y1, &y2) > 1e-6, "other noise, other output");
        // Training updates the BatchNorm running statistics.
        assert!(max_diff(&vs.variables()["norm.running_mean"], &mean0) > 0.0);
        let loss = y1.square().mean(Kind::Float);
        loss.backward();
        let mut any = false;
        for (i, t) in vs.trainable_variables().iter().enumerate() {
            let g = t.grad();
            if g.defined() {
                assert!(g.isfinite().all().int64_value(&[]) == 1, "gradient {i}");
                any |= g.abs().sum(Kind::Float).double_value(&[]) > 0.0;
            }
        }
        assert!(any, "no gradient reached the parameters");
        // Eval ignores the noise.
        let e1 = tch::no_grad(|| model.forward(&x, false, Some(&draws(1))));
        let e2 = tch::no_grad(|| model.forward(&x, false, Some(&draws(2))));
        assert_eq!(max_diff(&e1, &e2), 0.0);
    }

    #[test]
    fn converter_round_trips_bit_exact() {
        let dir = tempfile::tempdir().unwrap();
        let out = python("uniformer_roundtrip.py", &[dir.path().to_str().unwrap()]);
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5, "{out}");
        for case in &lines[..4] {
            assert_eq!(case["tensors"], 316, "{case}");
            assert_eq!(case["tensors_equal"], true, "{case}");
            assert_eq!(case["reconverted_equal"], true, "{case}");
            assert_eq!(case["diff"].as_f64(), Some(0.0), "{case}");
        }
        assert_eq!(lines[4]["rejected_by_name"], true, "{out}");
    }
}
