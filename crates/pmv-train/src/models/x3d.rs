//! X3D (Feichtenhofer, CVPR 2020), the 3D CNN the PMV-400 baselines train as X3D-M: a
//! 1×3×3 + depthwise 5×1×1 stem, four stages of bottleneck blocks (1×1×1 expansion, a
//! depthwise 3×3×3 convolution with squeeze-excitation on every other block and Swish,
//! 1×1×1 projection, BatchNorm after each, a projected shortcut where the shape
//! changes), then a 1×1×1 convolution, global average pooling, a 2048-wide layer,
//! dropout and the classifier.
//!
//! Widths and depths follow PySlowFast's X3D builder (width factor 2.0, depth factor 2.2,
//! bottleneck factor 2.25 for X3D-XS/S/M, which share one network and differ in input
//! size; depth factor 5.0 for X3D-L), and so do the parameter names
//! (`s1.pathway0_stem.*`, `s{2-5}.pathway0_res{i}.branch{1,2}.*`, `head.*`), so its
//! checkpoints convert by name. It owns the model's arithmetic only.
//!
//! pytorchvideo's `create_x3d` computes the same logits in eval mode (the tests here
//! compare them, train-mode batch statistics and the parameter count); its names differ
//! and it has no BatchNorm on a projected shortcut that keeps the width
//! (`s2.pathway0_res0` in X3D-M): `scripts/convert_x3d.py` maps the names and writes an
//! identity norm there, which in training normalises that shortcut as PySlowFast does.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use super::Noise;
use crate::device::Precision;

/// The X3D architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct X3dConfig {
    /// Channel multiplier of the stem and the stages (2.0).
    pub width_factor: f64,
    /// Block count multiplier of the stages' 1, 2, 5, 3 (2.2 for X3D-M, 5.0 for X3D-L).
    pub depth_factor: f64,
    /// Inner (depthwise) width over a stage's width (2.25).
    pub bottleneck_factor: f64,
    /// Width of the stem before the width factor (PySlowFast's `DIM_C1`).
    pub dim_c1: usize,
    /// Width of the layer before the classifier (`DIM_C5`).
    pub dim_c5: usize,
    /// Squeeze-excitation width over the inner width (0.0625; 0 for none).
    pub se_ratio: f64,
    /// Classifier outputs.
    pub classes: usize,
    /// Dropout rate on the `dim_c5` feature before the classifier (training only).
    pub dropout: f64,
    /// BatchNorm γ of each block's last norm starts at 0 (`ZERO_INIT_FINAL_BN`).
    pub zero_init_final_bn: bool,
}

impl X3dConfig {
    /// `x3d-m` (also XS and S: the same network at other input sizes) or `x3d-l`.
    pub fn preset(name: &str, classes: usize, dropout: f64) -> Option<X3dConfig> {
        let depth_factor = match name {
            "x3d-xs" | "x3d-s" | "x3d-m" => 2.2,
            "x3d-l" => 5.0,
            _ => return None,
        };
        Some(X3dConfig {
            width_factor: 2.0,
            depth_factor,
            bottleneck_factor: 2.25,
            dim_c1: 12,
            dim_c5: 2048,
            se_ratio: 0.0625,
            classes,
            dropout,
            zero_init_final_bn: true,
        })
    }

    /// (blocks, width, inner width) of the four stages.
    pub fn stages(&self) -> Vec<(usize, usize, usize)> {
        let mut dim = self.dim_c1;
        let mut out = vec![];
        for (i, base) in [1usize, 2, 5, 3].into_iter().enumerate() {
            if i > 0 {
                dim = round_width(dim as f64, 2.0);
            }
            let width = round_width(dim as f64, self.width_factor);
            let inner = (self.bottleneck_factor * width as f64) as usize;
            let blocks = (self.depth_factor * base as f64).ceil() as usize;
            out.push((blocks, width, inner));
        }
        out
    }

    /// Channels of the stem's output.
    pub fn stem_width(&self) -> usize {
        round_width(self.dim_c1 as f64, self.width_factor)
    }
}

/// PySlowFast's channel rounding: to a multiple of 8, at least 8, never more than 10%
/// below the exact width.
fn round_width(width: f64, multiplier: f64) -> usize {
    let w = width * multiplier;
    let mut out = (8usize).max(((w + 4.0) as usize) / 8 * 8);
    if (out as f64) < 0.9 * w {
        out += 8;
    }
    out
}

/// BatchNorm with running statistics (momentum 0.1, eps 1e-5), always in fp32: batch
/// statistics when training (the running ones updated), running statistics otherwise.
/// UniFormer's convolution blocks use it too.
pub(crate) struct Bn {
    gamma: Tensor,
    beta: Tensor,
    mean: Tensor,
    var: Tensor,
}

impl Bn {
    /// `weight`, `bias`, `running_mean`, `running_var` under `p`; γ starts at `gamma`.
    pub(crate) fn new(p: &nn::Path, dim: usize, gamma: f64) -> Bn {
        let d = dim as i64;
        Bn {
            gamma: p.var("weight", &[d], nn::Init::Const(gamma)),
            beta: p.var("bias", &[d], nn::Init::Const(0.0)),
            mean: p.zeros_no_train("running_mean", &[d]),
            var: p.ones_no_train("running_var", &[d]),
        }
    }

    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        super::batch_norm(
            &x.to_kind(Kind::Float),
            &self.gamma,
            &self.beta,
            &self.mean,
            &self.var,
            train,
        )
    }
}

/// A bias-free 3D convolution.
struct Conv {
    w: Tensor,
    stride: [i64; 3],
    padding: [i64; 3],
    groups: i64,
}

impl Conv {
    fn new(
        p: &nn::Path,
        inp: usize,
        out: usize,
        kernel: [i64; 3],
        stride: [i64; 3],
        groups: usize,
    ) -> Conv {
        // Kaiming normal with fan out for ReLU, as PySlowFast's c2_msra_fill.
        let fan_out = (out as i64 * kernel.iter().product::<i64>()) as f64;
        Conv {
            w: p.var(
                "weight",
                &[
                    out as i64,
                    (inp / groups) as i64,
                    kernel[0],
                    kernel[1],
                    kernel[2],
                ],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: (2.0 / fan_out).sqrt(),
                },
            ),
            stride,
            padding: [kernel[0] / 2, kernel[1] / 2, kernel[2] / 2],
            groups: groups as i64,
        }
    }

    fn forward(&self, x: &Tensor, kind: Kind) -> Tensor {
        x.to_kind(kind).conv3d(
            &self.w.to_kind(kind),
            None::<&Tensor>,
            self.stride,
            self.padding,
            [1, 1, 1],
            self.groups,
        )
    }
}

/// Squeeze-excitation: channel gates from the globally pooled input.
struct Se {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
}

impl Se {
    fn new(p: &nn::Path, dim: usize, ratio: f64) -> Se {
        let fc = round_width(dim as f64, ratio) as i64;
        let d = dim as i64;
        let init = |fan_out: i64| nn::Init::Randn {
            mean: 0.0,
            stdev: (2.0 / fan_out as f64).sqrt(),
        };
        Se {
            w1: p.sub("fc1").var("weight", &[fc, d, 1, 1, 1], init(fc)),
            b1: p.sub("fc1").var("bias", &[fc], nn::Init::Const(0.0)),
            w2: p.sub("fc2").var("weight", &[d, fc, 1, 1, 1], init(d)),
            b2: p.sub("fc2").var("bias", &[d], nn::Init::Const(0.0)),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let s = x.mean_dim([2i64, 3, 4].as_slice(), true, Kind::Float);
        let s = s
            .conv3d(&self.w1, Some(&self.b1), [1, 1, 1], [0, 0, 0], [1, 1, 1], 1)
            .relu()
            .conv3d(&self.w2, Some(&self.b2), [1, 1, 1], [0, 0, 0], [1, 1, 1], 1)
            .sigmoid();
        x.to_kind(Kind::Float) * s
    }
}

struct Block {
    shortcut: Option<(Conv, Bn)>,
    a: Conv,
    a_bn: Bn,
    b: Conv,
    b_bn: Bn,
    se: Option<Se>,
    c: Conv,
    c_bn: Bn,
}

impl Block {
    fn new(
        p: &nn::Path,
        cfg: &X3dConfig,
        inp: usize,
        out: usize,
        inner: usize,
        stride: i64,
        index: usize,
    ) -> Block {
        let br = p.sub("branch2");
        let s = [1, stride, stride];
        Block {
            shortcut: (inp != out || stride != 1).then(|| {
                (
                    Conv::new(&p.sub("branch1"), inp, out, [1, 1, 1], s, 1),
                    Bn::new(&p.sub("branch1_bn"), out, 1.0),
                )
            }),
            a: Conv::new(&br.sub("a"), inp, inner, [1, 1, 1], [1, 1, 1], 1),
            a_bn: Bn::new(&br.sub("a_bn"), inner, 1.0),
            b: Conv::new(&br.sub("b"), inner, inner, [3, 3, 3], s, inner),
            b_bn: Bn::new(&br.sub("b_bn"), inner, 1.0),
            // Squeeze-excitation on every other block, from the first.
            se: (cfg.se_ratio > 0.0 && index.is_multiple_of(2))
                .then(|| Se::new(&br.sub("se"), inner, cfg.se_ratio)),
            c: Conv::new(&br.sub("c"), inner, out, [1, 1, 1], [1, 1, 1], 1),
            c_bn: Bn::new(
                &br.sub("c_bn"),
                out,
                if cfg.zero_init_final_bn { 0.0 } else { 1.0 },
            ),
        }
    }

    fn forward(&self, x: &Tensor, train: bool, kind: Kind) -> Tensor {
        let h = self.a_bn.forward(&self.a.forward(x, kind), train).relu();
        let mut h = self.b_bn.forward(&self.b.forward(&h, kind), train);
        if let Some(se) = &self.se {
            h = se.forward(&h);
        }
        let h = h.silu();
        let h = self.c_bn.forward(&self.c.forward(&h, kind), train);
        let skip = match &self.shortcut {
            Some((conv, bn)) => bn.forward(&conv.forward(x, kind), train),
            None => x.to_kind(Kind::Float),
        };
        (skip + h).relu()
    }
}

/// An X3D network on a `VarStore` (PySlowFast's parameter names).
pub struct X3d {
    pub cfg: X3dConfig,
    stem_xy: Conv,
    stem_t: Conv,
    stem_bn: Bn,
    stages: Vec<Vec<Block>>,
    conv5: Conv,
    conv5_bn: Bn,
    lin5: Conv,
    proj_w: Tensor,
    proj_b: Tensor,
    precision: Precision,
}

impl X3d {
    /// Builds the network under `root`, freshly initialised as PySlowFast does (fan-out
    /// Kaiming normal convolutions, N(0, 0.01) classifier, zero β, γ = 1 or 0 for each
    /// block's last norm with `zero_init_final_bn`).
    pub fn new(root: &nn::Path, cfg: &X3dConfig, precision: Precision) -> X3d {
        let stem = root.sub("s1").sub("pathway0_stem");
        let w1 = cfg.stem_width();
        let stem_xy = Conv::new(&stem.sub("conv_xy"), 3, w1, [1, 3, 3], [1, 2, 2], 1);
        let stem_t = Conv::new(&stem.sub("conv"), w1, w1, [5, 1, 1], [1, 1, 1], w1);
        let stem_bn = Bn::new(&stem.sub("bn"), w1, 1.0);
        let mut inp = w1;
        let mut stages = vec![];
        let mut last_inner = w1;
        for (s, (blocks, width, inner)) in cfg.stages().into_iter().enumerate() {
            let sp = root.sub(format!("s{}", s + 2));
            let stage = (0..blocks)
                .map(|i| {
                    Block::new(
                        &sp.sub(format!("pathway0_res{i}")),
                        cfg,
                        if i == 0 { inp } else { width },
                        width,
                        inner,
                        if i == 0 { 2 } else { 1 },
                        i,
                    )
                })
                .collect();
            stages.push(stage);
            inp = width;
            last_inner = inner;
        }
        let head = root.sub("head");
        let conv5 = Conv::new(
            &head.sub("conv_5"),
            inp,
            last_inner,
            [1, 1, 1],
            [1, 1, 1],
            1,
        );
        let conv5_bn = Bn::new(&head.sub("conv_5_bn"), last_inner, 1.0);
        let lin5 = Conv::new(
            &head.sub("lin_5"),
            last_inner,
            cfg.dim_c5,
            [1, 1, 1],
            [1, 1, 1],
            1,
        );
        let proj = head.sub("projection");
        let proj_w = proj.var(
            "weight",
            &[cfg.classes as i64, cfg.dim_c5 as i64],
            nn::Init::Randn {
                mean: 0.0,
                stdev: 0.01,
            },
        );
        let proj_b = proj.var("bias", &[cfg.classes as i64], nn::Init::Const(0.0));
        X3d {
            cfg: cfg.clone(),
            stem_xy,
            stem_t,
            stem_bn,
            stages,
            conv5,
            conv5_bn,
            lin5,
            proj_w,
            proj_b,
            precision,
        }
    }

    /// Uniform draws a training forward needs: one per feature per sample for dropout,
    /// none without it.
    pub fn noise_len(&self, batch: usize) -> usize {
        if self.cfg.dropout > 0.0 {
            batch * self.cfg.dim_c5
        } else {
            0
        }
    }

    /// The pooled 2048-wide feature `[B, C5]` the classifier reads (fp32), before dropout.
    pub fn features(&self, x: &Tensor, train: bool) -> Tensor {
        let kind = self.precision.compute_kind();
        let h = self
            .stem_t
            .forward(&self.stem_xy.forward(&x.contiguous(), kind), kind);
        let mut h = self.stem_bn.forward(&h, train).relu();
        for stage in &self.stages {
            for block in stage {
                h = block.forward(&h, train, kind);
            }
        }
        let h = self
            .conv5_bn
            .forward(&self.conv5.forward(&h, kind), train)
            .relu();
        let pooled = h.mean_dim([2i64, 3, 4].as_slice(), true, Kind::Float);
        self.lin5
            .forward(&pooled, kind)
            .to_kind(Kind::Float)
            .relu()
            .flatten(1, -1)
    }

    /// Logits `[B, classes]` (fp32). `train`: batch statistics (updating the running
    /// ones) and dropout from `noise`.
    pub fn forward(&self, x: &Tensor, train: bool, noise: Option<&Noise>) -> Tensor {
        let mut f = self.features(x, train);
        if let (true, Some(nz)) = (train && self.cfg.dropout > 0.0, noise) {
            f = nz.dropout(&f, 0, self.cfg.dropout);
        }
        f.linear(&self.proj_w, Some(&self.proj_b))
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use serde_json::Value;
    use tch::Device;

    use super::*;
    use crate::models::{ModelSpec, load_into, read_weights, test_noise};

    /// pytorchvideo's X3D-M with 400 classes (`sum(p.numel() for p in parameters())`).
    const PYTORCHVIDEO_X3D_M: i64 = 3_794_274;

    #[test]
    fn x3d_m_has_the_published_shape() {
        let cfg = X3dConfig::preset("x3d-m", 400, 0.5).unwrap();
        assert_eq!(cfg.stem_width(), 24);
        assert_eq!(
            cfg.stages(),
            vec![(3, 24, 54), (5, 48, 108), (11, 96, 216), (7, 192, 432)]
        );
        let vs = nn::VarStore::new(Device::Cpu);
        let model = X3d::new(&vs.root(), &cfg, Precision::Fp32);
        let params: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        // pytorchvideo's count and the γ and β of the one shortcut BatchNorm it lacks
        // (s2.pathway0_res0.branch1_bn, 24 wide).
        assert_eq!(params, PYTORCHVIDEO_X3D_M + 48);
        let names = vs.variables();
        for n in [
            "s1.pathway0_stem.conv_xy.weight",
            "s1.pathway0_stem.conv.weight",
            "s2.pathway0_res0.branch1.weight",
            "s2.pathway0_res0.branch2.se.fc1.weight",
            "s5.pathway0_res6.branch2.c_bn.running_var",
            "head.lin_5.weight",
            "head.projection.bias",
        ] {
            assert!(names.contains_key(n), "{n}");
        }
        assert!(!names.contains_key("s2.pathway0_res1.branch2.se.fc1.weight"));
        // Any input size, portrait included.
        let x = Tensor::randn([2, 3, 4, 64, 48], (Kind::Float, Device::Cpu));
        let y = tch::no_grad(|| model.forward(&x, false, None));
        assert_eq!(y.size(), [2, 400]);
    }

    fn repo() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
    }

    /// Runs a script of tests/python with the venv's python; returns its last stdout
    /// line as JSON.
    fn python(script: &str, dir: &Path, args: &[&str]) -> Value {
        let out = std::process::Command::new(repo().join(".venv/bin/python"))
            .arg(repo().join("tests/python").join(script))
            .arg(dir)
            .args(args)
            .output()
            .expect("run the venv's python (scripts/setup.sh installs torch and pytorchvideo)");
        assert!(
            out.status.success(),
            "{script} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().expect("a JSON line");
        serde_json::from_str(last).expect("JSON")
    }

    fn npy(path: &Path) -> Tensor {
        Tensor::read_npy(path).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.size(), b.size());
        (a - b).abs().max().double_value(&[])
    }

    fn trainable(vs: &nn::VarStore) -> i64 {
        vs.trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum()
    }

    /// X3D-M for `classes`, loaded strictly from the reference's converted weights.
    fn load(dir: &Path, classes: usize, precision: Precision) -> (nn::VarStore, X3d) {
        let weights = dir.join("model.safetensors");
        let config = X3dConfig::preset("x3d-m", classes, 0.0).unwrap();
        let spec = ModelSpec::X3d {
            name: "x3d-m".into(),
            config: config.clone(),
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let model = X3d::new(&vs.root(), &config, precision);
        let report =
            load_into(&vs, &spec, &weights, read_weights(&weights).unwrap(), false).unwrap();
        assert!(report.reinitialised.is_empty(), "{report:?}");
        assert_eq!(report.loaded, vs.variables().len());
        (vs, model)
    }

    /// Eval logits against the reference's, fp32 and bf16; returns max |Δ| in fp32.
    fn check_eval(dir: &Path, classes: usize) -> f64 {
        let (vs, model) = load(dir, classes, Precision::Fp32);
        let x = npy(&dir.join("input.npy"));
        let expected = npy(&dir.join("expected.npy"));
        let logits = tch::no_grad(|| model.forward(&x, false, None));
        let d = max_diff(&logits, &expected);
        assert!(d < 1e-4, "max |difference| {d}");
        // The logits depend on the input: a wrong layer could not hide behind biases.
        let spread = max_diff(&expected.get(0), &expected.get(1));
        assert!(
            spread > 0.1,
            "samples give nearly the same logits ({spread})"
        );
        let (_vs, bf) = load(dir, classes, Precision::Bf16);
        let lb = tch::no_grad(|| bf.forward(&x, false, None));
        let rel = max_diff(&lb, &logits) / logits.abs().max().double_value(&[]);
        assert!(rel < 5e-2, "bf16 relative difference {rel}");
        drop(vs);
        d
    }

    #[test]
    fn logits_match_pytorchvideo_square_with_its_own_head_pool() {
        let dir = tempfile::tempdir().unwrap();
        let info = python(
            "x3d_reference.py",
            dir.path(),
            &[
                "--frames", "4", "--height", "64", "--width", "64", "--train",
            ],
        );
        // pytorchvideo's pool kernel (T, ceil(64/32), ceil(64/32)) is the final map, so
        // its head is used as it is.
        assert_eq!(info["stock_head"], true, "{info}");
        assert_eq!(info["pool_kernel"], serde_json::json!([4, 2, 2]), "{info}");
        assert_eq!(info["params"], PYTORCHVIDEO_X3D_M, "{info}");
        assert_eq!(info["identity_norms_added"], 1, "{info}");
        let (vs, _) = load(dir.path(), 400, Precision::Fp32);
        assert_eq!(trainable(&vs), PYTORCHVIDEO_X3D_M + 48);
        check_eval(dir.path(), 400);

        // One train-mode forward: batch statistics give pytorchvideo's train-mode logits,
        // and the running statistics move as its momentum 0.1 moves them. (The reference
        // has an identity norm added on s2.pathway0_res0's shortcut, as here: in train
        // mode that norm uses batch statistics.)
        let (vs, model) = load(dir.path(), 400, Precision::Fp32);
        let x = npy(&dir.path().join("input.npy"));
        let logits = tch::no_grad(|| model.forward(&x, true, None));
        let d = max_diff(&logits, &npy(&dir.path().join("expected_train.npy")));
        assert!(d < 1e-4, "train-mode max |difference| {d}");
        let stats = read_weights(&dir.path().join("train_stats.safetensors")).unwrap();
        let vars = vs.variables();
        assert_eq!(
            stats.len(),
            2 * 84,
            "one mean and one variance per BatchNorm"
        );
        for (name, expected) in &stats {
            let ours = vars.get(name).unwrap_or_else(|| panic!("{name}"));
            let d = max_diff(ours, expected);
            let scale = expected.abs().max().double_value(&[]).max(1.0);
            assert!(d / scale < 1e-5, "{name}: max |difference| {d}");
        }
    }

    #[test]
    fn logits_match_pytorchvideo_portrait_with_global_pooling() {
        let dir = tempfile::tempdir().unwrap();
        let info = python(
            "x3d_reference.py",
            dir.path(),
            &[
                "--frames",
                "4",
                "--height",
                "96",
                "--width",
                "64",
                "--classes",
                "7",
            ],
        );
        // create_x3d knows square crops only: its pool could not cover the 4x3x2 map.
        assert_eq!(info["stock_head"], false, "{info}");
        assert_eq!(info["final_map"], serde_json::json!([4, 3, 2]), "{info}");
        check_eval(dir.path(), 7);
    }

    #[test]
    fn training_forward_uses_the_noise_and_has_finite_gradients() {
        let cfg = X3dConfig::preset("x3d-m", 5, 0.5).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let model = X3d::new(&vs.root(), &cfg, Precision::Fp32);
        let x = Tensor::randn([2, 3, 4, 32, 32], (Kind::Float, Device::Cpu));
        let n = model.noise_len(2);
        assert_eq!(n, 2 * 2048);
        let (a, b) = (test_noise(n, 1), test_noise(n, 2));
        let ya = model.forward(&x, true, Some(&a));
        let yb = model.forward(&x, true, Some(&b));
        assert!(
            max_diff(&ya, &yb) > 0.0,
            "the dropout noise changes nothing"
        );
        let again = model.forward(&x, true, Some(&a));
        assert_eq!(max_diff(&ya, &again), 0.0, "same noise, same output");
        ya.pow_tensor_scalar(2).sum(Kind::Float).backward();
        for (name, v) in vs.variables() {
            if v.requires_grad() {
                let g = v.grad();
                assert!(g.defined(), "{name} has no gradient");
                assert!(
                    g.isfinite().all().int64_value(&[]) == 1,
                    "{name}: gradient not finite"
                );
            }
        }
    }

    #[test]
    fn converter_round_trips_pytorchvideo_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let info = python("x3d_roundtrip.py", dir.path(), &[]);
        assert_eq!(info["ok"], true, "{info}");
    }
}
