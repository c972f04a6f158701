//! `tiny3d`: a small 3D CNN that learns short motion-and-appearance clips on a CPU in
//! minutes.
//!
//! Four Conv3d + BatchNorm + ReLU stages (3×3×3 kernels, so every stage sees motion;
//! spatial stride 2 in each, temporal stride 2 in the last two), global average pooling,
//! dropout and a linear head. Widths w, 2w, 4w, 8w (w = 16 by default). Parameter
//! names are `stages.{i}.conv.weight`, `stages.{i}.bn.*` and `head.*`. It owns the
//! model's arithmetic only; checkpoints and optimisation live elsewhere.

use tch::{Kind, Tensor, nn};

use super::Noise;
use crate::device::Precision;

struct Stage {
    w: Tensor,
    gamma: Tensor,
    beta: Tensor,
    mean: Tensor,
    var: Tensor,
    stride: [i64; 3],
}

impl Stage {
    fn new(p: &nn::Path, inp: i64, out: i64, stride: [i64; 3]) -> Stage {
        let bn = p.sub("bn");
        // Kaiming normal, fan out, for ReLU (what torchvision's video ResNets use).
        let fan_out = (out * 27) as f64;
        Stage {
            w: p.sub("conv").var(
                "weight",
                &[out, inp, 3, 3, 3],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: (2.0 / fan_out).sqrt(),
                },
            ),
            gamma: bn.var("weight", &[out], nn::Init::Const(1.0)),
            beta: bn.var("bias", &[out], nn::Init::Const(0.0)),
            mean: bn.zeros_no_train("running_mean", &[out]),
            var: bn.ones_no_train("running_var", &[out]),
            stride,
        }
    }

    fn forward(&self, x: &Tensor, train: bool, kind: Kind) -> Tensor {
        let y = x.to_kind(kind).conv3d(
            &self.w.to_kind(kind),
            None::<&Tensor>,
            self.stride,
            [1, 1, 1],
            [1, 1, 1],
            1,
        );
        super::batch_norm(
            &y.to_kind(Kind::Float),
            &self.gamma,
            &self.beta,
            &self.mean,
            &self.var,
            train,
        )
        .relu()
    }
}

pub struct Tiny3d {
    stages: Vec<Stage>,
    head_w: Tensor,
    head_b: Tensor,
    dropout: f64,
    precision: Precision,
}

impl Tiny3d {
    pub fn new(
        root: &nn::Path,
        width: i64,
        classes: usize,
        dropout: f64,
        precision: Precision,
    ) -> Tiny3d {
        let p = root.sub("stages");
        let widths = [width, width * 2, width * 4, width * 8];
        let strides = [[1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2]];
        let mut inp = 3;
        let stages = widths
            .iter()
            .zip(strides)
            .enumerate()
            .map(|(i, (&out, stride))| {
                let s = Stage::new(&p.sub(i), inp, out, stride);
                inp = out;
                s
            })
            .collect();
        let head = root.sub("head");
        let bound = 1.0 / (inp as f64).sqrt();
        Tiny3d {
            stages,
            head_w: head.var(
                "weight",
                &[classes as i64, inp],
                nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            ),
            head_b: head.var("bias", &[classes as i64], nn::Init::Const(0.0)),
            dropout,
            precision,
        }
    }

    pub fn noise_len(&self, batch: usize) -> usize {
        if self.dropout > 0.0 {
            batch * self.head_w.size()[1] as usize
        } else {
            0
        }
    }

    /// The pooled feature `[B, 8w]` the head reads (fp32), before dropout.
    pub fn features(&self, x: &Tensor, train: bool) -> Tensor {
        let kind = self.precision.compute_kind();
        let mut h = x.contiguous();
        for s in &self.stages {
            h = s.forward(&h, train, kind);
        }
        h.mean_dim([2i64, 3, 4].as_slice(), false, Kind::Float)
    }

    pub fn feature_dim(&self) -> usize {
        self.head_w.size()[1] as usize
    }

    /// Logits `[B, classes]` (fp32). `train`: batch statistics (updating the running
    /// ones) and dropout from `noise`.
    pub fn forward(&self, x: &Tensor, train: bool, noise: Option<&Noise>) -> Tensor {
        let mut pooled = self.features(x, train);
        if let (true, Some(nz)) = (train && self.dropout > 0.0, noise) {
            pooled = nz.dropout(&pooled, 0, self.dropout);
        }
        pooled.linear(&self.head_w, Some(&self.head_b))
    }
}
