//! VideoMAE ViT encoders with a classification head, numerically equal to Hugging Face
//! `transformers`' `VideoMAEForVideoClassification`, with its parameter names.
//!
//! Owns the VideoMAE configuration (read from and written as `config.json`), the
//! fixed sinusoidal position table, the encoder blocks (pre-norm, q/k/v projections with
//! query and value biases `q_bias`/`v_bias` as `transformers` stores them, exact GELU,
//! scaled dot-product attention), mean pooling with
//! `fc_norm` or the first token after a final norm, and stochastic depth. Tubelets are
//! embedded as one matrix product over unfolded 2×16×16 patches, which is the Conv3d
//! with kernel = stride. In bf16 the products run in bf16 while weights, norms, softmax
//! statistics and the residual stream stay fp32, as under `torch.autocast`. It never
//! reads files: checkpoint loading is in [`super`] (`models`).

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tch::{Device, Kind, Tensor, nn};

use super::{ModelError, Noise, depth_rates};
use crate::device::Precision;

/// The architecture, as `transformers`' `VideoMAEConfig` spells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoMaeConfig {
    /// (height, width) the checkpoint was trained at (the position table follows the
    /// input actually given).
    pub image_size: [usize; 2],
    pub patch_size: usize,
    pub num_channels: usize,
    pub num_frames: usize,
    pub tubelet_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub qkv_bias: bool,
    pub use_mean_pooling: bool,
    pub num_labels: usize,
}

impl VideoMaeConfig {
    /// ViT-S/16 (22 M parameters) or ViT-B/16 (86 M).
    pub fn preset(name: &str, classes: usize, frames: usize, size: (usize, usize)) -> Option<Self> {
        let (hidden, layers, heads) = match name {
            "vit-s" => (384, 12, 6),
            "vit-b" => (768, 12, 12),
            "vit-l" => (1024, 24, 16),
            _ => return None,
        };
        Some(VideoMaeConfig {
            image_size: [size.0, size.1],
            patch_size: 16,
            num_channels: 3,
            num_frames: frames,
            tubelet_size: 2,
            hidden_size: hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: hidden * 4,
            hidden_act: "gelu".into(),
            // The original VideoMAE code's value (transformers defaults to 1e-12).
            layer_norm_eps: 1e-6,
            qkv_bias: true,
            use_mean_pooling: true,
            num_labels: classes,
        })
    }

    /// Reads a `transformers` `config.json` (defaults as `VideoMAEConfig` has them).
    pub fn from_hf(v: &Value) -> Result<Self, String> {
        let int = |k: &str, d: usize| -> Result<usize, String> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(d),
                Some(x) => x
                    .as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| format!("{k} is not a non-negative integer: {x}")),
            }
        };
        let flag = |k: &str| v.get(k).and_then(Value::as_bool);
        if let Some(t) = v.get("model_type").and_then(Value::as_str)
            && t != "videomae"
        {
            return Err(format!("model_type is {t:?}, not \"videomae\""));
        }
        let image_size = match v.get("image_size") {
            None => [224, 224],
            Some(Value::Array(a)) if a.len() == 2 => {
                let g = |i: usize| a[i].as_u64().map(|n| n as usize);
                match (g(0), g(1)) {
                    (Some(h), Some(w)) => [h, w],
                    _ => return Err(format!("bad image_size {a:?}")),
                }
            }
            Some(x) => match x.as_u64() {
                Some(n) => [n as usize, n as usize],
                None => return Err(format!("bad image_size {x}")),
            },
        };
        let patch_size = match v.get("patch_size") {
            Some(Value::Array(a)) if a.len() == 2 && a[0] == a[1] => {
                a[0].as_u64().unwrap_or(16) as usize
            }
            Some(Value::Array(a)) => return Err(format!("non-square patch_size {a:?}")),
            _ => int("patch_size", 16)?,
        };
        let num_labels = match v.get("id2label").and_then(Value::as_object) {
            Some(m) if !m.is_empty() => m.len(),
            _ => int("num_labels", 2)?,
        };
        let cfg = VideoMaeConfig {
            image_size,
            patch_size,
            num_channels: int("num_channels", 3)?,
            num_frames: int("num_frames", 16)?,
            tubelet_size: int("tubelet_size", 2)?,
            hidden_size: int("hidden_size", 768)?,
            num_hidden_layers: int("num_hidden_layers", 12)?,
            num_attention_heads: int("num_attention_heads", 12)?,
            intermediate_size: int("intermediate_size", 3072)?,
            hidden_act: v
                .get("hidden_act")
                .and_then(Value::as_str)
                .unwrap_or("gelu")
                .to_owned(),
            layer_norm_eps: v
                .get("layer_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-12),
            qkv_bias: flag("qv_bias").or(flag("qkv_bias")).unwrap_or(true),
            use_mean_pooling: flag("use_mean_pooling").unwrap_or(true),
            num_labels,
        };
        cfg.check()?;
        Ok(cfg)
    }

    pub fn check(&self) -> Result<(), String> {
        if self.num_channels != 3 {
            return Err(format!(
                "{} input channels (RGB needs 3)",
                self.num_channels
            ));
        }
        if self.hidden_size == 0
            || self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden size {} is not a multiple of {} heads",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.patch_size == 0 || self.tubelet_size == 0 {
            return Err("zero patch or tubelet size".into());
        }
        if !matches!(
            self.hidden_act.as_str(),
            "gelu" | "gelu_new" | "gelu_pytorch_tanh" | "relu"
        ) {
            return Err(format!("activation {:?} is not supported", self.hidden_act));
        }
        Ok(())
    }

    /// The `config.json` `transformers` loads this model from.
    pub fn to_hf(&self, classes: &[String], multi_label: bool) -> Value {
        let id2label: serde_json::Map<String, Value> = classes
            .iter()
            .enumerate()
            .map(|(i, n)| (i.to_string(), Value::String(n.clone())))
            .collect();
        let label2id: serde_json::Map<String, Value> = classes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), json!(i)))
            .collect();
        let image_size = if self.image_size[0] == self.image_size[1] {
            json!(self.image_size[0])
        } else {
            json!(self.image_size)
        };
        json!({
            "architectures": ["VideoMAEForVideoClassification"],
            "model_type": "videomae",
            "image_size": image_size,
            "patch_size": self.patch_size,
            "num_channels": self.num_channels,
            "num_frames": self.num_frames,
            "tubelet_size": self.tubelet_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": self.hidden_act,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
            "initializer_range": 0.02,
            "layer_norm_eps": self.layer_norm_eps,
            "qv_bias": self.qkv_bias,
            "use_mean_pooling": self.use_mean_pooling,
            "id2label": id2label,
            "label2id": label2id,
            "problem_type": if multi_label { "multi_label_classification" } else { "single_label_classification" },
            "torch_dtype": "float32",
        })
    }
}

/// The `preprocessor_config.json` from which `transformers`' `AutoImageProcessor` builds a
/// `VideoMAEImageProcessor` that prepares frames as the trainer's evaluation does: resize
/// the short side to `shortest_edge`, centre-crop `input` (height, width), scale by
/// 1/255, normalise by [`MEAN`](super::MEAN) and [`STD`](super::STD).
///
/// The evaluation scales the frames so they cover the input (and their short side
/// reaches `test_scale`, when given) and crops the centre; `shortest_edge` is that
/// scale's short side for frames of the stored size `stored` (height, width). For a
/// square input it is the same for frames of any size; for another input, only for
/// frames of the stored aspect. Both resample with an antialiased triangle filter
/// (PIL's bilinear); the evaluation cuts its window at sub-pixel positions where the
/// processor crops whole pixels after resizing.
pub fn image_processor_config(
    input: (usize, usize),
    stored: (usize, usize),
    test_scale: Option<usize>,
) -> Value {
    let (oh, ow) = input;
    let (sh, sw) = (stored.0.max(1) as f64, stored.1.max(1) as f64);
    let short = sh.min(sw);
    let f = (oh as f64 / sh)
        .max(ow as f64 / sw)
        .max(test_scale.map_or(0.0, |s| s as f64 / short));
    let shortest_edge = (short * f).round() as usize;
    json!({
        "image_processor_type": "VideoMAEImageProcessor",
        "do_resize": true,
        "size": { "shortest_edge": shortest_edge },
        // PIL.Image.BILINEAR
        "resample": 2,
        "do_center_crop": true,
        "crop_size": { "height": oh, "width": ow },
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": super::MEAN,
        "image_std": super::STD,
    })
}

pub(crate) struct Linear {
    pub(crate) w: Tensor,
    pub(crate) b: Option<Tensor>,
}

impl Linear {
    pub(crate) fn new(p: &nn::Path, name: &str, inp: usize, out: usize, bias: bool) -> Linear {
        let p = p.sub(name);
        Linear {
            w: p.var("weight", &[out as i64, inp as i64], trunc_normal()),
            b: bias.then(|| p.var("bias", &[out as i64], nn::Init::Const(0.0))),
        }
    }

    pub(crate) fn forward(&self, x: &Tensor, kind: Kind) -> Tensor {
        let b = self.b.as_ref().map(|b| b.to_kind(kind));
        x.to_kind(kind).linear(&self.w.to_kind(kind), b.as_ref())
    }
}

pub(crate) fn trunc_normal() -> nn::Init {
    // timm's trunc_normal_(std=0.02) cuts at ±2 in absolute units, i.e. at 100 σ:
    // a plain normal.
    nn::Init::Randn {
        mean: 0.0,
        stdev: 0.02,
    }
}

pub(crate) struct Norm {
    w: Tensor,
    b: Tensor,
    eps: f64,
}

impl Norm {
    pub(crate) fn new(p: &nn::Path, name: &str, dim: usize, eps: f64) -> Norm {
        let p = p.sub(name);
        Norm {
            w: p.var("weight", &[dim as i64], nn::Init::Const(1.0)),
            b: p.var("bias", &[dim as i64], nn::Init::Const(0.0)),
            eps,
        }
    }

    /// Always in fp32.
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let d = self.w.size()[0];
        x.to_kind(Kind::Float)
            .layer_norm([d], Some(&self.w), Some(&self.b), self.eps, true)
    }
}

pub(crate) struct Block {
    norm1: Norm,
    query: Linear,
    key: Linear,
    value: Linear,
    /// `q_bias` / `v_bias`: the query and value biases (the key has none).
    q_bias: Option<Tensor>,
    v_bias: Option<Tensor>,
    proj: Linear,
    norm2: Norm,
    fc1: Linear,
    fc2: Linear,
    heads: i64,
    act: String,
    drop_path: f64,
}

impl Block {
    pub(crate) fn new(p: &nn::Path, cfg: &VideoMaeConfig, drop_path: f64) -> Block {
        let d = cfg.hidden_size;
        let att = p.sub("attention");
        let qkv = att.sub("attention");
        let bias = |name: &str| {
            cfg.qkv_bias
                .then(|| qkv.var(name, &[d as i64], nn::Init::Const(0.0)))
        };
        Block {
            norm1: Norm::new(p, "layernorm_before", d, cfg.layer_norm_eps),
            query: Linear::new(&qkv, "query", d, d, false),
            key: Linear::new(&qkv, "key", d, d, false),
            value: Linear::new(&qkv, "value", d, d, false),
            q_bias: bias("q_bias"),
            v_bias: bias("v_bias"),
            proj: Linear::new(&att.sub("output"), "dense", d, d, true),
            norm2: Norm::new(p, "layernorm_after", d, cfg.layer_norm_eps),
            fc1: Linear::new(
                &p.sub("intermediate"),
                "dense",
                d,
                cfg.intermediate_size,
                true,
            ),
            fc2: Linear::new(&p.sub("output"), "dense", cfg.intermediate_size, d, true),
            heads: cfg.num_attention_heads as i64,
            act: cfg.hidden_act.clone(),
            drop_path,
        }
    }

    /// `keep`: per-sample scale of each residual branch under stochastic depth.
    pub(crate) fn forward(&self, x: &Tensor, kind: Kind, keep: Option<(Tensor, Tensor)>) -> Tensor {
        let (b, n, d) = x.size3().expect("tokens are [B, N, D]");
        let h = self.norm1.forward(x).to_kind(kind);
        // One product for q, k and v (the weights stacked), as the original code does.
        let w = Tensor::cat(&[&self.query.w, &self.key.w, &self.value.w], 0).to_kind(kind);
        let bias = match (&self.q_bias, &self.v_bias) {
            (Some(q), Some(v)) => Some(Tensor::cat(&[q, &q.zeros_like(), v], 0).to_kind(kind)),
            _ => None,
        };
        let qkv = h
            .linear(&w, bias.as_ref())
            .view([b, n, 3, self.heads, d / self.heads])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let a = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<&Tensor>,
            0.0,
            false,
            None::<f64>,
            false,
        );
        let a = a.transpose(1, 2).reshape([b, n, d]);
        let a = self.proj.forward(&a, kind);
        let x = match &keep {
            Some((k1, _)) => x + a * k1,
            None => x + a,
        };
        let h = self.fc1.forward(&self.norm2.forward(&x), kind);
        let h = match self.act.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" => h.gelu("tanh"),
            "relu" => h.relu(),
            _ => h.gelu("none"),
        };
        let h = self.fc2.forward(&h, kind);
        match &keep {
            Some((_, k2)) => x + h * k2,
            None => x + h,
        }
    }
}

/// The VideoMAE encoder (`videomae.*`): tubelet embedding, position table, blocks and,
/// without mean pooling, the final norm. Shared by the classifier and the pre-training
/// model.
pub struct Encoder {
    pub cfg: VideoMaeConfig,
    patch_w: Tensor,
    patch_b: Tensor,
    blocks: Vec<Block>,
    /// `videomae.layernorm` (when not mean pooling).
    final_norm: Option<Norm>,
    precision: Precision,
    positions: Mutex<HashMap<(i64, usize, Device), Tensor>>,
}

impl Encoder {
    /// Builds the encoder under `p` (the `videomae` scope), freshly initialised.
    pub fn new(
        p: &nn::Path,
        cfg: &VideoMaeConfig,
        drop_path: f64,
        precision: Precision,
    ) -> Result<Encoder, ModelError> {
        cfg.check().map_err(ModelError::Config)?;
        let d = cfg.hidden_size as i64;
        let emb = p
            .sub("embeddings")
            .sub("patch_embeddings")
            .sub("projection");
        let (t, s) = (cfg.tubelet_size as i64, cfg.patch_size as i64);
        let fan_in = 3 * t * s * s;
        let patch_w = emb.var("weight", &[d, 3, t, s, s], trunc_normal());
        let patch_b = emb.var(
            "bias",
            &[d],
            nn::Init::Uniform {
                lo: -1.0 / (fan_in as f64).sqrt(),
                up: 1.0 / (fan_in as f64).sqrt(),
            },
        );
        let layers = p.sub("encoder").sub("layer");
        let blocks = depth_rates(drop_path, cfg.num_hidden_layers)
            .into_iter()
            .enumerate()
            .map(|(i, rate)| Block::new(&layers.sub(i), cfg, rate))
            .collect();
        let final_norm = (!cfg.use_mean_pooling)
            .then(|| Norm::new(p, "layernorm", cfg.hidden_size, cfg.layer_norm_eps));
        Ok(Encoder {
            cfg: cfg.clone(),
            patch_w,
            patch_b,
            blocks,
            final_norm,
            precision,
            positions: Mutex::new(HashMap::new()),
        })
    }

    /// The sinusoidal table for `n` tokens of width `d`, `[1, n, d]` on `device`, cached.
    pub(crate) fn positions(&self, n: i64, d: usize, device: Device) -> Tensor {
        let mut cache = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((n, d, device))
            .or_insert_with(|| sinusoid_table(n as usize, d).to_device(device))
            .shallow_clone()
    }

    /// Stochastic-depth draws a training forward pass needs.
    pub fn noise_len(&self, batch: usize) -> usize {
        if self.blocks.iter().any(|b| b.drop_path > 0.0) {
            self.blocks.len() * 2 * batch
        } else {
            0
        }
    }

    /// Tokens per clip of `x`'s shape: (temporal, height, width) slots.
    pub fn grid(&self, x: &Tensor) -> (i64, i64, i64) {
        let (_, c, t, h, w) = x.size5().expect("input is [B, 3, T, H, W]");
        let (ts, ps) = (self.cfg.tubelet_size as i64, self.cfg.patch_size as i64);
        assert!(
            c == 3 && t % ts == 0 && h % ps == 0 && w % ps == 0,
            "input {:?} does not divide into {ts}x{ps}x{ps} tubelets",
            x.size()
        );
        (t / ts, h / ps, w / ps)
    }

    /// Tubelets unfolded in the Conv3d weight's (C, t, h, w) order, tokens in t, h, w
    /// order: `[B, N, 3·ts·ps·ps]` in the compute precision.
    fn patches(&self, x: &Tensor) -> Tensor {
        let kind = self.precision.compute_kind();
        let (nt, nh, nw) = self.grid(x);
        let b = x.size()[0];
        let (ts, ps) = (self.cfg.tubelet_size as i64, self.cfg.patch_size as i64);
        x.to_kind(kind)
            .view([b, 3, nt, ts, nh, ps, nw, ps].as_slice())
            .permute([0i64, 2, 4, 6, 1, 3, 5, 7].as_slice())
            .reshape([b, nt * nh * nw, 3 * ts * ps * ps])
    }

    /// Encoder tokens `[B, N, D]` (after the final norm when not mean pooling).
    pub fn encode(&self, x: &Tensor, noise: Option<&Noise>) -> Tensor {
        let patches = self.patches(x);
        let n = patches.size()[1];
        let tokens = self.embed(&patches) + self.positions(n, self.cfg.hidden_size, x.device());
        self.run_blocks(tokens, noise)
    }

    /// Tokens of the visible tubelets only: `visible` `[B, V]` holds each clip's visible
    /// token indices (the same count for every clip); the rest is never computed.
    pub fn encode_visible(&self, x: &Tensor, visible: &Tensor, noise: Option<&Noise>) -> Tensor {
        let patches = self.patches(x);
        let (b, n, p) = patches.size3().expect("[B, N, P]");
        let v = visible.size()[1];
        let picked = patches.gather(1, &visible.unsqueeze(-1).expand([b, v, p], false), false);
        let d = self.cfg.hidden_size as i64;
        let pos = self
            .positions(n, self.cfg.hidden_size, x.device())
            .expand([b, n, d], false)
            .gather(1, &visible.unsqueeze(-1).expand([b, v, d], false), false);
        self.run_blocks(self.embed(&picked) + pos, noise)
    }

    /// The tubelet embedding of unfolded patches `[B, N, P]` → `[B, N, D]`.
    fn embed(&self, patches: &Tensor) -> Tensor {
        let kind = self.precision.compute_kind();
        let d = self.cfg.hidden_size as i64;
        let w_flat = self.patch_w.to_kind(kind).view([d, -1]);
        patches.linear(&w_flat, Some(&self.patch_b.to_kind(kind)))
    }

    fn run_blocks(&self, tokens: Tensor, noise: Option<&Noise>) -> Tensor {
        let kind = self.precision.compute_kind();
        let b = tokens.size()[0];
        let mut x = tokens.to_kind(Kind::Float);
        for (i, block) in self.blocks.iter().enumerate() {
            let keep = match noise {
                Some(nz) if block.drop_path > 0.0 => {
                    let (a, m) = nz.drop_path(i, b, block.drop_path);
                    Some((a.view([b, 1, 1]), m.view([b, 1, 1])))
                }
                _ => None,
            };
            x = block.forward(&x, kind, keep);
        }
        match &self.final_norm {
            Some(norm) => norm.forward(&x),
            None => x,
        }
    }

    /// Layer index of a parameter for layer-wise lr decay: 0 the embedding, i+1 block
    /// i, layers+1 anything else (head, final norms).
    pub fn layer_of(&self, name: &str) -> usize {
        if name.starts_with("videomae.embeddings.") {
            return 0;
        }
        if let Some(rest) = name.strip_prefix("videomae.encoder.layer.")
            && let Some(i) = rest.split('.').next().and_then(|i| i.parse::<usize>().ok())
        {
            return i + 1;
        }
        self.cfg.num_hidden_layers + 1
    }

    pub fn depth(&self) -> usize {
        self.cfg.num_hidden_layers + 1
    }
}

/// A VideoMAE encoder with its classification head.
pub struct VideoMae {
    pub enc: Encoder,
    fc_norm: Option<Norm>,
    classifier: Linear,
    precision: Precision,
}

impl VideoMae {
    /// Builds the model under `root` with `transformers`' names, freshly initialised.
    pub fn new(
        root: &nn::Path,
        cfg: &VideoMaeConfig,
        drop_path: f64,
        precision: Precision,
    ) -> Result<VideoMae, ModelError> {
        let enc = Encoder::new(&root.sub("videomae"), cfg, drop_path, precision)?;
        let fc_norm = cfg
            .use_mean_pooling
            .then(|| Norm::new(root, "fc_norm", cfg.hidden_size, 1e-5));
        let classifier = Linear::new(root, "classifier", cfg.hidden_size, cfg.num_labels, true);
        // VideoMAE fine-tuning starts the head small (init_scale 0.001).
        tch::no_grad(|| {
            let mut w = classifier.w.shallow_clone();
            let _ = w.g_mul_scalar_(0.001);
        });
        Ok(VideoMae {
            enc,
            fc_norm,
            classifier,
            precision,
        })
    }

    /// Stochastic-depth draws a training forward pass needs.
    pub fn noise_len(&self, batch: usize) -> usize {
        self.enc.noise_len(batch)
    }

    /// Encoder tokens `[B, N, D]` (after the final norm when not mean pooling).
    pub fn encode(&self, x: &Tensor, noise: Option<&Noise>) -> Tensor {
        self.enc.encode(x, noise)
    }

    /// The pooled feature `[B, D]` the head reads (fp32).
    pub fn features(&self, x: &Tensor, noise: Option<&Noise>) -> Tensor {
        let tokens = self.encode(x, noise);
        match &self.fc_norm {
            Some(norm) => norm.forward(&tokens.mean_dim(1, false, Kind::Float)),
            None => tokens.select(1, 0),
        }
    }

    /// Logits `[B, classes]` in fp32.
    pub fn forward(&self, x: &Tensor, noise: Option<&Noise>) -> Tensor {
        let kind = self.precision.compute_kind();
        let pooled = self.features(x, noise);
        self.classifier.forward(&pooled, kind).to_kind(Kind::Float)
    }

    /// Layer index of a parameter for layer-wise lr decay: 0 the embedding, i+1 block
    /// i, layers+1 the head and final norms.
    pub fn layer_of(&self, name: &str) -> usize {
        self.enc.layer_of(name)
    }

    pub fn depth(&self) -> usize {
        self.enc.depth()
    }
}

/// `transformers`' `get_sinusoid_encoding_table`: angle p / 10000^(2⌊j/2⌋/D) in f64,
/// sin at even j, cos at odd j, then f32; `[1, n, D]`.
pub fn sinusoid_table(n: usize, d: usize) -> Tensor {
    let mut v = vec![0f32; n * d];
    let rates: Vec<f64> = (0..d)
        .map(|j| 10000f64.powf(2.0 * (j / 2) as f64 / d as f64))
        .collect();
    for p in 0..n {
        for j in 0..d {
            let a = p as f64 / rates[j];
            v[p * d + j] = if j.is_multiple_of(2) {
                a.sin()
            } else {
                a.cos()
            } as f32;
        }
    }
    Tensor::from_slice(&v).view([1, n as i64, d as i64])
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::models::{ModelSpec, checkpoint_config, load_into, read_weights};

    #[test]
    fn the_image_processor_covers_the_input_as_eval_does() {
        let edge = |input, stored, scale| {
            image_processor_config(input, stored, scale)["size"]["shortest_edge"].clone()
        };
        // A square input: its side, whatever the frames.
        assert_eq!(edge((224, 224), (256, 456), None), 224);
        assert_eq!(edge((40, 40), (48, 40), None), 40);
        // Other inputs from 256x456 frames: the height covers when it is the tighter
        // side; for 96x200 the width is (200 of 456: a short side of 112.3).
        assert_eq!(edge((224, 160), (256, 456), None), 224);
        assert_eq!(edge((96, 160), (256, 456), None), 96);
        assert_eq!(edge((96, 200), (256, 456), None), 112);
        // --test-scale raises the short side, never below covering the input.
        assert_eq!(edge((224, 224), (256, 456), Some(256)), 256);
        assert_eq!(edge((224, 224), (256, 456), Some(200)), 224);
        let c = image_processor_config((48, 32), (64, 64), None);
        assert_eq!(c["crop_size"], json!({"height": 48, "width": 32}));
        assert_eq!(c["rescale_factor"].as_f64(), Some(1.0 / 255.0));
        assert_eq!(c["image_processor_type"], "VideoMAEImageProcessor");
    }

    /// Runs tests/python/videomae_reference.py into a fresh directory.
    fn reference(args: &[&str]) -> tempfile::TempDir {
        let repo = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(repo.join(".venv/bin/python"))
            .arg(repo.join("tests/python/videomae_reference.py"))
            .arg(dir.path())
            .args(args)
            .output()
            .expect("run the venv's python (scripts/setup.sh installs torch and transformers)");
        assert!(
            out.status.success(),
            "reference script failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    }

    fn npy(path: &Path) -> Tensor {
        Tensor::read_npy(path).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.size(), b.size());
        (a - b).abs().max().double_value(&[])
    }

    /// Builds the model a checkpoint folder describes and loads it strictly.
    fn load(dir: &Path, precision: Precision) -> (nn::VarStore, VideoMae) {
        let weights = dir.join("model.safetensors");
        let config = checkpoint_config(&weights).unwrap();
        let spec = ModelSpec::Videomae {
            name: "test".into(),
            config: config.clone(),
            drop_path: 0.0,
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let model = VideoMae::new(&vs.root(), &config, 0.0, precision).unwrap();
        let report =
            load_into(&vs, &spec, &weights, read_weights(&weights).unwrap(), false).unwrap();
        assert!(
            report.reinitialised.is_empty() && report.set_aside.is_empty(),
            "{report:?}"
        );
        (vs, model)
    }

    #[test]
    fn logits_match_transformers_mean_pooling_portrait() {
        let dir = reference(&["classify"]);
        let (_vs, model) = load(dir.path(), Precision::Fp32);
        assert_eq!(model.enc.cfg.layer_norm_eps, 1e-12);
        assert_eq!(model.enc.cfg.image_size, [48, 32]);
        let x = npy(&dir.path().join("input.npy"));
        let logits = tch::no_grad(|| model.forward(&x, None));
        let d = max_diff(&logits, &npy(&dir.path().join("expected.npy")));
        assert!(d < 1e-4, "max |difference| {d}");
        // bf16 products stay close to the fp32 result.
        let (_vs2, bf) = load(dir.path(), Precision::Bf16);
        let lb = tch::no_grad(|| bf.forward(&x, None));
        let rel = max_diff(&lb, &logits) / logits.abs().max().double_value(&[]);
        assert!(rel < 5e-2, "bf16 relative difference {rel}");
    }

    #[test]
    fn logits_match_transformers_final_norm_and_new_names() {
        let dir = reference(&[
            "classify",
            "--mean-pooling",
            "0",
            "--eps",
            "1e-6",
            "--new-names",
        ]);
        let (_vs, model) = load(dir.path(), Precision::Fp32);
        assert!(!model.enc.cfg.use_mean_pooling);
        let x = npy(&dir.path().join("input.npy"));
        let logits = tch::no_grad(|| model.forward(&x, None));
        let d = max_diff(&logits, &npy(&dir.path().join("expected.npy")));
        assert!(d < 1e-4, "max |difference| {d}");
    }

    #[test]
    fn pretraining_encoder_loads_and_matches() {
        let dir = reference(&["pretrain", "--mean-pooling", "0", "--eps", "1e-6"]);
        let weights = dir.path().join("model.safetensors");
        let mut config = checkpoint_config(&weights).unwrap();
        // Fine-tuning: mean pooling + fc_norm, a head for 7 classes.
        config.use_mean_pooling = true;
        config.num_labels = 7;
        let spec = ModelSpec::Videomae {
            name: "test".into(),
            config: config.clone(),
            drop_path: 0.0,
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let model = VideoMae::new(&vs.root(), &config, 0.0, Precision::Fp32).unwrap();
        let tensors = read_weights(&weights).unwrap();
        // Strictly, the head is missing and the decoder is left over.
        let strict = load_into(&vs, &spec, &weights, read_weights(&weights).unwrap(), false);
        assert!(
            strict
                .unwrap_err()
                .to_string()
                .contains("classifier.weight")
        );
        let report = load_into(&vs, &spec, &weights, tensors, true).unwrap();
        assert_eq!(report.reinitialised.len(), 4, "{report:?}");
        assert!(report.set_aside.iter().any(|n| n.starts_with("decoder.")));
        assert!(
            report
                .set_aside
                .iter()
                .any(|n| n == "encoder_to_decoder.weight")
        );
        assert!(
            report
                .set_aside
                .iter()
                .any(|n| n == "videomae.layernorm.weight")
        );
        let x = npy(&dir.path().join("input.npy"));
        let tokens = tch::no_grad(|| model.encode(&x, None));
        let d = max_diff(&tokens, &npy(&dir.path().join("expected.npy")));
        assert!(d < 1e-4, "max |difference| {d}");
    }

    #[test]
    fn position_table_matches_the_formula() {
        let t = sinusoid_table(3, 4);
        let v: Vec<f32> = Vec::try_from(t.view([-1])).unwrap();
        let expect = |p: f64, j: usize| {
            let a = p / 10000f64.powf(2.0 * (j / 2) as f64 / 4.0);
            if j.is_multiple_of(2) {
                a.sin()
            } else {
                a.cos()
            }
        };
        for p in 0..3 {
            for j in 0..4 {
                assert!((v[p * 4 + j] as f64 - expect(p as f64, j)).abs() < 1e-7);
            }
        }
    }
}
