//! The xinpianchang multimodal classifier: video frames, the cover image and the
//! description text, each through its own branch, fused, then one head (softmax or
//! sigmoid), as the upstream baseline fuses its three branches.
//!
//! The video branch is any of the video models (`video.*`, their own names, so a video
//! checkpoint loads into it); the cover goes through a 2D CNN (`cover.*`: four stride-2
//! 3×3 convolution stages with BatchNorm and ReLU, global average pooling); the text
//! through token embeddings with masked mean and max pooling (`text.*`; the vocabulary is
//! the run's `pmv-tokenizer.json`). Each branch is projected to the fusion width and layer
//! normalised; a branch whose input an item lacks (no cover, no text) contributes a
//! learned "absent" vector instead, and in training whole branches are dropped at random
//! (modality dropout) so no branch can hide behind another. The fused vector goes through
//! one hidden layer with dropout to the head. It owns the model's arithmetic only.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use super::{ModelError, ModelSpec, Net, Noise};
use crate::device::Precision;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextSpec {
    /// Vocabulary size, `<pad>` and `<unk>` included.
    pub vocab: usize,
    pub dim: usize,
    pub max_len: usize,
    /// SHA-256 of the run's `pmv-tokenizer.json` (`tokenizer.json` in older runs).
    pub tokenizer_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoverSpec {
    /// The cover is resized (centre crop of its aspect) to height × width.
    pub height: usize,
    pub width: usize,
    /// Channels of the first CNN stage (then ×2 per stage).
    pub channels: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultimodalSpec {
    /// The video branch (its head is not used).
    pub video: ModelSpec,
    pub cover: Option<CoverSpec>,
    pub text: Option<TextSpec>,
    pub fusion: usize,
    pub classes: usize,
    pub dropout: f64,
    /// Probability of dropping a whole branch of a training sample.
    pub modality_dropout: f64,
}

/// The cover and text inputs of a batch, one row per view.
pub struct Extra {
    /// Normalised `[N, 3, H, W]`.
    pub cover: Option<Tensor>,
    /// `[N]` bool: the item has a cover.
    pub cover_present: Option<Tensor>,
    /// `[N, L]` int64 token ids (0 = padding).
    pub tokens: Option<Tensor>,
    /// `[N]` bool: the item has text.
    pub text_present: Option<Tensor>,
}

struct Proj {
    w: Tensor,
    b: Tensor,
    ln_w: Tensor,
    ln_b: Tensor,
}

impl Proj {
    fn new(p: &nn::Path, inp: usize, out: usize) -> Proj {
        let bound = 1.0 / (inp as f64).sqrt();
        Proj {
            w: p.var(
                "weight",
                &[out as i64, inp as i64],
                nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            ),
            b: p.var("bias", &[out as i64], nn::Init::Const(0.0)),
            ln_w: p
                .sub("norm")
                .var("weight", &[out as i64], nn::Init::Const(1.0)),
            ln_b: p
                .sub("norm")
                .var("bias", &[out as i64], nn::Init::Const(0.0)),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let d = self.b.size()[0];
        x.to_kind(Kind::Float)
            .linear(&self.w, Some(&self.b))
            .layer_norm([d], Some(&self.ln_w), Some(&self.ln_b), 1e-5, true)
    }
}

struct CoverNet {
    stages: Vec<(Tensor, Tensor, Tensor, Tensor, Tensor)>,
    out: usize,
}

impl CoverNet {
    fn new(p: &nn::Path, channels: usize) -> CoverNet {
        let mut inp = 3i64;
        let mut stages = vec![];
        for i in 0..4 {
            let out = (channels << i) as i64;
            let s = p.sub("stages").sub(i);
            let fan_out = (out * 9) as f64;
            let w = s.sub("conv").var(
                "weight",
                &[out, inp, 3, 3],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: (2.0 / fan_out).sqrt(),
                },
            );
            let bn = s.sub("bn");
            stages.push((
                w,
                bn.var("weight", &[out], nn::Init::Const(1.0)),
                bn.var("bias", &[out], nn::Init::Const(0.0)),
                bn.zeros_no_train("running_mean", &[out]),
                bn.ones_no_train("running_var", &[out]),
            ));
            inp = out;
        }
        CoverNet {
            stages,
            out: inp as usize,
        }
    }

    fn forward(&self, x: &Tensor, train: bool, kind: Kind) -> Tensor {
        let mut h = x.contiguous();
        for (w, g, b, m, v) in &self.stages {
            let y = h.to_kind(kind).conv2d(
                &w.to_kind(kind),
                None::<&Tensor>,
                [2, 2],
                [1, 1],
                [1, 1],
                1,
            );
            h = super::batch_norm(&y.to_kind(Kind::Float), g, b, m, v, train).relu();
        }
        h.mean_dim([2i64, 3].as_slice(), false, Kind::Float)
    }
}

pub struct Multimodal {
    pub spec: MultimodalSpec,
    video: Net,
    video_proj: Proj,
    cover: Option<(CoverNet, Proj, Tensor)>,
    text: Option<(Tensor, Proj, Tensor)>,
    hidden_w: Tensor,
    hidden_b: Tensor,
    head_w: Tensor,
    head_b: Tensor,
    precision: Precision,
}

fn linear_vars(p: &nn::Path, inp: usize, out: usize) -> (Tensor, Tensor) {
    let bound = 1.0 / (inp as f64).sqrt();
    (
        p.var(
            "weight",
            &[out as i64, inp as i64],
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        ),
        p.var("bias", &[out as i64], nn::Init::Const(0.0)),
    )
}

impl Multimodal {
    pub fn new(
        root: &nn::Path,
        spec: &MultimodalSpec,
        precision: Precision,
    ) -> Result<Multimodal, ModelError> {
        if matches!(spec.video, ModelSpec::Multimodal(_) | ModelSpec::Mae { .. }) {
            return Err(ModelError::Config(
                "the video branch must be a video classifier".into(),
            ));
        }
        let video = spec.video.build(&root.sub("video"), precision)?;
        let vdim = video
            .feature_dim()
            .ok_or_else(|| ModelError::Config("the video branch has no features".into()))?;
        let fusion = root.sub("fusion");
        let f = spec.fusion;
        let absent = |name: &str| fusion.var(name, &[f as i64], nn::Init::Const(0.0));
        let cover = spec.cover.as_ref().map(|c| {
            let net = CoverNet::new(&root.sub("cover"), c.channels.max(1));
            let proj = Proj::new(&fusion.sub("cover"), net.out, f);
            (net, proj, absent("cover_absent"))
        });
        let text = spec.text.as_ref().map(|t| {
            let emb = root.sub("text").sub("embed").var(
                "weight",
                &[t.vocab as i64, t.dim as i64],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.1,
                },
            );
            let proj = Proj::new(&fusion.sub("text"), 2 * t.dim, f);
            (emb, proj, absent("text_absent"))
        });
        let branches = 1 + cover.is_some() as usize + text.is_some() as usize;
        let (hidden_w, hidden_b) = linear_vars(&root.sub("hidden"), branches * f, f);
        let (head_w, head_b) = linear_vars(&root.sub("head"), f, spec.classes);
        Ok(Multimodal {
            spec: spec.clone(),
            video_proj: Proj::new(&fusion.sub("video"), vdim, f),
            video,
            cover,
            text,
            hidden_w,
            hidden_b,
            head_w,
            head_b,
            precision,
        })
    }

    /// Draws: the video branch's, then per sample one per branch (modality dropout),
    /// then one per hidden unit (dropout).
    pub fn noise_len(&self, batch: usize) -> usize {
        self.video.noise_len(batch) + batch * 3 + batch * self.spec.fusion
    }

    /// Logits `[N, classes]` (fp32).
    pub fn forward(
        &self,
        x: &Tensor,
        extra: Option<&Extra>,
        train: bool,
        noise: Option<&Noise>,
    ) -> Tensor {
        let n = x.size()[0];
        let vlen = self.video.noise_len(n as usize) as i64;
        let video_noise = noise
            .filter(|_| vlen > 0)
            .map(|nz| Noise::from_tensor(nz.slice(0, vlen)));
        let drops = noise.map(|nz| nz.slice(vlen, n * 3).view([3, n]));
        let keep = |branch: i64| -> Option<Tensor> {
            match (&drops, train && self.spec.modality_dropout > 0.0) {
                (Some(d), true) => Some(d.get(branch).ge(self.spec.modality_dropout)),
                _ => None,
            }
        };
        let video = self
            .video_proj
            .forward(&self.video.features(x, train, video_noise.as_ref()));
        let mut parts = vec![match keep(0) {
            Some(k) => video
                .zeros_like()
                .where_self(&k.logical_not().unsqueeze(1), &video),
            None => video,
        }];
        let choose =
            |feat: Tensor, absent: &Tensor, present: Option<&Tensor>, k: Option<Tensor>| {
                let mut use_it = match present {
                    Some(p) => p.shallow_clone(),
                    None => Tensor::zeros([n], (Kind::Bool, x.device())),
                };
                if let Some(k) = k {
                    use_it = use_it.logical_and(&k);
                }
                feat.where_self(&use_it.unsqueeze(1), &absent.unsqueeze(0).expand_as(&feat))
            };
        let kind = self.precision.compute_kind();
        if let Some((net, proj, absent)) = &self.cover {
            let feat = match extra.and_then(|e| e.cover.as_ref()) {
                Some(c) => proj.forward(&net.forward(c, train, kind)),
                None => absent.unsqueeze(0).expand([n, -1], false),
            };
            parts.push(choose(
                feat,
                absent,
                extra.and_then(|e| e.cover_present.as_ref()),
                keep(1),
            ));
        }
        if let Some((emb, proj, absent)) = &self.text {
            let feat = match extra.and_then(|e| e.tokens.as_ref()) {
                Some(ids) => {
                    let e = Tensor::embedding(emb, ids, 0, false, false);
                    let mask = ids.ne(0).unsqueeze(-1).to_kind(Kind::Float);
                    let count = mask
                        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
                        .clamp_min(1.0);
                    let mean =
                        (&e * &mask).sum_dim_intlist([1i64].as_slice(), false, Kind::Float) / count;
                    let max = (&e + (mask - 1.0) * 1e4)
                        .amax([1i64].as_slice(), false)
                        .clamp_min(-1e3);
                    proj.forward(&Tensor::cat(&[mean, max], 1))
                }
                None => absent.unsqueeze(0).expand([n, -1], false),
            };
            parts.push(choose(
                feat,
                absent,
                extra.and_then(|e| e.text_present.as_ref()),
                keep(2),
            ));
        }
        let fused = Tensor::cat(&parts, 1);
        let mut h = fused.linear(&self.hidden_w, Some(&self.hidden_b)).relu();
        if let (true, Some(nz)) = (train && self.spec.dropout > 0.0, noise) {
            h = nz.dropout(&h, vlen + n * 3, self.spec.dropout);
        }
        h.linear(&self.head_w, Some(&self.head_b))
    }
}
