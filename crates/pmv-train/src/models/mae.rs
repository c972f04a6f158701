//! VideoMAE masked pre-training: tube masks, the encoder that sees only visible
//! tubelets, the light decoder and the loss on per-patch normalised pixels, with the
//! parameter names and numerics of `transformers`' `VideoMAEForPreTraining`.
//!
//! Owns the pre-training configuration (read from and written as `config.json`, decoder
//! fields included), tube masking (one random spatial mask per clip, repeated over every
//! temporal slot, the same number of masked tokens in every clip), the model
//! (`videomae.*` encoder, `encoder_to_decoder`, `mask_token`, `decoder.decoder_layers.*`,
//! `decoder.norm`, `decoder.head`) and its loss. Saving the model's variables gives a
//! `VideoMAEForPreTraining` checkpoint and such a checkpoint loads into it. It never reads
//! files and never draws random numbers itself: masks come from the caller's stream.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tch::{Device, Kind, Tensor, nn};

use super::videomae::{Block, Encoder, Linear, Norm, VideoMaeConfig};
use super::{MEAN, ModelError, Noise, STD};
use crate::device::{Precision, to_device_async};
use crate::rng::Rng;

/// The decoder, as `VideoMAEConfig` names its fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
}

impl DecoderConfig {
    /// VideoMAE's decoders: depth 4, width 192 (3 heads) for ViT-S, 384 (6 heads) for
    /// ViT-B, half the encoder width in general; an MLP 4 times as wide.
    pub fn for_encoder(hidden: usize, depth: usize, width: Option<usize>) -> DecoderConfig {
        let width = width.unwrap_or(hidden / 2);
        DecoderConfig {
            hidden_size: width,
            num_hidden_layers: depth,
            num_attention_heads: (width / 64).max(1),
            intermediate_size: width * 4,
        }
    }
}

/// What a pre-training run trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaeConfig {
    /// The encoder (no mean pooling: it ends in `videomae.layernorm`).
    pub encoder: VideoMaeConfig,
    pub decoder: DecoderConfig,
    /// Fraction of the tubelets of each temporal slot that are masked.
    pub mask_ratio: f64,
    /// Targets normalised per tubelet and channel (VideoMAE's default).
    pub norm_pix_loss: bool,
}

impl MaeConfig {
    pub fn check(&self) -> Result<(), String> {
        self.encoder.check()?;
        let d = &self.decoder;
        if d.hidden_size == 0
            || d.num_attention_heads == 0
            || !d.hidden_size.is_multiple_of(d.num_attention_heads)
        {
            return Err(format!(
                "decoder width {} is not a multiple of {} heads",
                d.hidden_size, d.num_attention_heads
            ));
        }
        if !(self.mask_ratio > 0.0 && self.mask_ratio < 1.0) {
            return Err(format!(
                "mask ratio {} is not between 0 and 1",
                self.mask_ratio
            ));
        }
        Ok(())
    }

    /// Reads the decoder fields of a `transformers` `config.json` (defaults as
    /// `VideoMAEConfig` has them).
    pub fn from_hf(v: &Value, mask_ratio: f64) -> Result<MaeConfig, String> {
        let mut encoder = VideoMaeConfig::from_hf(v)?;
        encoder.use_mean_pooling = false;
        let int = |k: &str, d: usize| -> Result<usize, String> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(d),
                Some(x) => x
                    .as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| format!("{k} is not a non-negative integer: {x}")),
            }
        };
        let cfg = MaeConfig {
            decoder: DecoderConfig {
                hidden_size: int("decoder_hidden_size", 384)?,
                num_hidden_layers: int("decoder_num_hidden_layers", 4)?,
                num_attention_heads: int("decoder_num_attention_heads", 6)?,
                intermediate_size: int("decoder_intermediate_size", 1536)?,
            },
            norm_pix_loss: v
                .get("norm_pix_loss")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            mask_ratio,
            encoder,
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// The `config.json` `VideoMAEForPreTraining.from_pretrained` reads.
    pub fn to_hf(&self) -> Value {
        let mut v = self.encoder.to_hf(&[], false);
        let o = v.as_object_mut().expect("an object");
        for k in ["id2label", "label2id", "problem_type"] {
            o.remove(k);
        }
        o.insert("architectures".into(), json!(["VideoMAEForPreTraining"]));
        o.insert("use_mean_pooling".into(), json!(false));
        o.insert("norm_pix_loss".into(), json!(self.norm_pix_loss));
        o.insert(
            "decoder_hidden_size".into(),
            json!(self.decoder.hidden_size),
        );
        o.insert(
            "decoder_num_hidden_layers".into(),
            json!(self.decoder.num_hidden_layers),
        );
        o.insert(
            "decoder_num_attention_heads".into(),
            json!(self.decoder.num_attention_heads),
        );
        o.insert(
            "decoder_intermediate_size".into(),
            json!(self.decoder.intermediate_size),
        );
        v
    }

    /// The encoder configuration as `transformers` spells it for the decoder blocks.
    fn decoder_as_encoder(&self) -> VideoMaeConfig {
        VideoMaeConfig {
            hidden_size: self.decoder.hidden_size,
            num_hidden_layers: self.decoder.num_hidden_layers,
            num_attention_heads: self.decoder.num_attention_heads,
            intermediate_size: self.decoder.intermediate_size,
            ..self.encoder.clone()
        }
    }
}

/// Tube masks of a batch: per clip, the sorted indices of its visible and of its masked
/// tokens (`[B, V]` and `[B, M]`, the same V and M for every clip).
pub struct TubeMask {
    pub visible: Tensor,
    pub masked: Tensor,
}

impl TubeMask {
    /// Masked tubelets per temporal slot for `per_slot` tubelets at `ratio` (VideoMAE:
    /// the integer part of ratio × tubelets, at least 1 and leaving at least 1 visible).
    pub fn masked_per_slot(per_slot: usize, ratio: f64) -> usize {
        ((ratio * per_slot as f64) as usize).clamp(1, per_slot.saturating_sub(1).max(1))
    }

    /// One random spatial mask per clip drawn from `rng`, repeated over `slots`
    /// temporal slots of `per_slot` tubelets; token index = slot · per_slot + position.
    pub fn draw(
        rng: &mut Rng,
        batch: usize,
        slots: usize,
        per_slot: usize,
        ratio: f64,
        device: Device,
    ) -> TubeMask {
        let m = Self::masked_per_slot(per_slot, ratio);
        let mut flags = Vec::with_capacity(batch * per_slot);
        for _ in 0..batch {
            let mut f: Vec<bool> = (0..per_slot).map(|i| i < m).collect();
            rng.shuffle(&mut f);
            flags.extend(f);
        }
        Self::from_flags(&flags, batch, slots, per_slot, device)
    }

    /// The masks of per-clip spatial flags (`true`: masked), `[batch × per_slot]`.
    pub fn from_flags(
        flags: &[bool],
        batch: usize,
        slots: usize,
        per_slot: usize,
        device: Device,
    ) -> TubeMask {
        let mut visible = vec![];
        let mut masked = vec![];
        for b in 0..batch {
            let f = &flags[b * per_slot..(b + 1) * per_slot];
            for t in 0..slots {
                for (i, &is_masked) in f.iter().enumerate() {
                    let idx = (t * per_slot + i) as i64;
                    if is_masked {
                        masked.push(idx);
                    } else {
                        visible.push(idx);
                    }
                }
            }
        }
        let b = batch as i64;
        TubeMask {
            visible: to_device_async(Tensor::from_slice(&visible).view([b, -1]), device),
            masked: to_device_async(Tensor::from_slice(&masked).view([b, -1]), device),
        }
    }

    #[cfg(test)]
    /// The masks of full per-token flags (`true`: masked), `[batch × tokens]`; every
    /// clip must mask the same number of tokens.
    pub fn from_token_flags(
        flags: &[bool],
        batch: usize,
        tokens: usize,
        device: Device,
    ) -> Result<TubeMask, String> {
        let counts: Vec<usize> = flags
            .chunks(tokens)
            .map(|c| c.iter().filter(|&&f| f).count())
            .collect();
        if flags.len() != batch * tokens || counts.windows(2).any(|w| w[0] != w[1]) {
            return Err(format!(
                "a mask of {} flags for {batch} clips of {tokens} tokens, masking {counts:?}",
                flags.len()
            ));
        }
        Ok(Self::from_flags(flags, batch, 1, tokens, device))
    }

    #[cfg(test)]
    /// A full boolean mask `[B, N]` (`true`: masked), as `transformers` takes it.
    pub fn bool_mask(&self, tokens: i64) -> Tensor {
        let b = self.masked.size()[0];
        let mut m = Tensor::zeros([b, tokens], (Kind::Bool, self.masked.device()));
        let _ = m.scatter_value_(1, &self.masked, 1.0);
        m
    }
}

/// `VideoMAEForPreTraining`.
pub struct VideoMaePretrain {
    pub cfg: MaeConfig,
    pub enc: Encoder,
    encoder_to_decoder: Tensor,
    mask_token: Tensor,
    blocks: Vec<Block>,
    norm: Norm,
    head: Linear,
    precision: Precision,
}

impl VideoMaePretrain {
    /// Builds the model under `root` with `transformers`' names; linear layers start
    /// Xavier-uniform and the mask token N(0, 0.02), as VideoMAE pre-training does.
    pub fn new(
        root: &nn::Path,
        cfg: &MaeConfig,
        drop_path: f64,
        precision: Precision,
    ) -> Result<VideoMaePretrain, ModelError> {
        cfg.check().map_err(ModelError::Config)?;
        let mut enc_cfg = cfg.encoder.clone();
        enc_cfg.use_mean_pooling = false;
        let enc = Encoder::new(&root.sub("videomae"), &enc_cfg, drop_path, precision)?;
        let dcfg = cfg.decoder_as_encoder();
        let dd = cfg.decoder.hidden_size;
        let d = cfg.encoder.hidden_size;
        let bound = (6.0 / (d + dd) as f64).sqrt();
        let encoder_to_decoder = root.sub("encoder_to_decoder").var(
            "weight",
            &[dd as i64, d as i64],
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        let mask_token = root.var(
            "mask_token",
            &[1, 1, dd as i64],
            nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        );
        let dec = root.sub("decoder");
        let layers = dec.sub("decoder_layers");
        let blocks = (0..cfg.decoder.num_hidden_layers)
            .map(|i| Block::new(&layers.sub(i), &dcfg, 0.0))
            .collect();
        // `transformers` builds the decoder norm with LayerNorm's default eps.
        let norm = Norm::new(&dec, "norm", dd, 1e-5);
        let (ts, ps) = (cfg.encoder.tubelet_size, cfg.encoder.patch_size);
        let head = Linear::new(&dec, "head", dd, 3 * ts * ps * ps, true);
        let model = VideoMaePretrain {
            cfg: cfg.clone(),
            enc,
            encoder_to_decoder,
            mask_token,
            blocks,
            norm,
            head,
            precision,
        };
        Ok(model)
    }

    /// Re-initialises every matrix of `vs` (that is not the patch embedding, a norm or
    /// the mask token) Xavier-uniform, biases to zero: VideoMAE pre-training's init.
    pub fn xavier_init(vs: &nn::VarStore) {
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                if name == "mask_token" || name.contains("norm") || name.contains("layernorm") {
                    continue;
                }
                let size = t.size();
                if size.len() >= 2 {
                    let fan_out = size[0] as f64;
                    let fan_in: f64 = size[1..].iter().product::<i64>() as f64;
                    let bound = (6.0 / (fan_in + fan_out)).sqrt();
                    let _ = t.uniform_(-bound, bound);
                } else if name.ends_with(".bias")
                    || name.ends_with("q_bias")
                    || name.ends_with("v_bias")
                {
                    let _ = t.zero_();
                }
            }
        });
    }

    /// Tokens per temporal slot and slots for input `x`.
    pub fn grid(&self, x: &Tensor) -> (usize, usize) {
        let (nt, nh, nw) = self.enc.grid(x);
        (nt as usize, (nh * nw) as usize)
    }

    pub fn noise_len(&self, batch: usize) -> usize {
        self.enc.noise_len(batch)
    }

    /// Predicted pixels of the masked tubelets `[B, M, ts·ps·ps·3]` (fp32).
    pub fn predict(&self, x: &Tensor, mask: &TubeMask, noise: Option<&Noise>) -> Tensor {
        let kind = self.precision.compute_kind();
        let visible = self.enc.encode_visible(x, &mask.visible, noise);
        let y = visible
            .to_kind(kind)
            .linear::<Tensor>(&self.encoder_to_decoder.to_kind(kind), None);
        let (b, v, dd) = y.size3().expect("[B, V, Dd]");
        let m = mask.masked.size()[1];
        let n = v + m;
        let pos = self
            .enc
            .positions(n, dd as usize, x.device())
            .expand([b, n, dd], false);
        let pos_vis = pos.gather(
            1,
            &mask.visible.unsqueeze(-1).expand([b, v, dd], false),
            false,
        );
        let pos_mask = pos.gather(
            1,
            &mask.masked.unsqueeze(-1).expand([b, m, dd], false),
            false,
        );
        let mut h = Tensor::cat(
            &[
                y.to_kind(Kind::Float) + pos_vis,
                self.mask_token.expand([b, m, dd], false) + pos_mask,
            ],
            1,
        );
        for block in &self.blocks {
            h = block.forward(&h, kind, None);
        }
        let h = self.norm.forward(&h.narrow(1, v, m));
        self.head.forward(&h, kind).to_kind(Kind::Float)
    }

    /// The reconstruction targets of the masked tubelets `[B, M, ts·ps·ps·3]`: pixels in
    /// [0, 1] (the input un-normalised with the ImageNet statistics), per tubelet and
    /// channel normalised by mean and unbiased std when `norm_pix_loss`, flattened
    /// channel-fastest.
    pub fn targets(&self, x: &Tensor, mask: &TubeMask) -> Tensor {
        tch::no_grad(|| {
            let (nt, nh, nw) = self.enc.grid(x);
            let b = x.size()[0];
            let (ts, ps) = (
                self.cfg.encoder.tubelet_size as i64,
                self.cfg.encoder.patch_size as i64,
            );
            let dev = x.device();
            let mean = to_device_async(Tensor::from_slice(&MEAN.map(|v| v as f32)), dev)
                .view([1, 3, 1, 1, 1]);
            let std = to_device_async(Tensor::from_slice(&STD.map(|v| v as f32)), dev)
                .view([1, 3, 1, 1, 1]);
            let frames = x.to_kind(Kind::Float) * std + mean;
            let n = nt * nh * nw;
            let per = ts * ps * ps;
            let p = frames
                .view([b, 3, nt, ts, nh, ps, nw, ps].as_slice())
                .permute([0i64, 2, 4, 6, 3, 5, 7, 1].as_slice())
                .reshape([b, n, per, 3]);
            let p = if self.cfg.norm_pix_loss {
                let mu = p.mean_dim(-2, true, Kind::Float);
                let sd = p.var_dim(-2, true, true).sqrt();
                (p - mu) / (sd + 1e-6)
            } else {
                p
            };
            let p = p.reshape([b, n, per * 3]);
            let m = mask.masked.size()[1];
            p.gather(
                1,
                &mask.masked.unsqueeze(-1).expand([b, m, per * 3], false),
                false,
            )
        })
    }

    /// Mean squared error on the masked tubelets.
    pub fn loss(&self, x: &Tensor, mask: &TubeMask, noise: Option<&Noise>) -> Tensor {
        let pred = self.predict(x, mask, noise);
        let target = self.targets(x, mask);
        pred.mse_loss(&target, tch::Reduction::Mean)
    }

    /// Layer index for layer-wise lr decay (pre-training uses none; kept for the rule).
    pub fn layer_of(&self, name: &str) -> usize {
        self.enc.layer_of(name)
    }

    pub fn depth(&self) -> usize {
        self.enc.depth()
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::*;
    use crate::models::{ModelSpec, load_into, read_weights};

    fn python(args: &[&str]) -> String {
        let repo = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let out = Command::new(repo.join(".venv/bin/python"))
            .arg(repo.join("tests/python/videomae_pretrain_reference.py"))
            .args(args)
            .output()
            .expect("run the venv's python (scripts/setup.sh installs torch and transformers)");
        assert!(
            out.status.success(),
            "reference script failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn mask_of(dir: &Path) -> TubeMask {
        let m = Tensor::read_npy(dir.join("mask.npy")).unwrap();
        let (b, n) = m.size2().unwrap();
        let flags: Vec<u8> = Vec::try_from(m.view([-1])).unwrap();
        let flags: Vec<bool> = flags.iter().map(|&v| v != 0).collect();
        TubeMask::from_token_flags(&flags, b as usize, n as usize, Device::Cpu).unwrap()
    }

    fn spec(cfg: &MaeConfig) -> ModelSpec {
        ModelSpec::Mae {
            name: "test".into(),
            config: cfg.clone(),
            drop_path: 0.0,
        }
    }

    /// A `transformers` checkpoint loads with nothing left over or missing and gives
    /// the same loss and predictions on the same input and mask.
    #[test]
    fn loss_matches_transformers_pretraining() {
        let dir = tempfile::tempdir().unwrap();
        python(&["make", dir.path().to_str().unwrap()]);
        let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        let cfg = MaeConfig::from_hf(&serde_json::from_str(&text).unwrap(), 0.5).unwrap();
        assert_eq!(cfg.decoder.num_hidden_layers, 2);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = VideoMaePretrain::new(&vs.root(), &cfg, 0.0, Precision::Fp32).unwrap();
        let w = dir.path().join("model.safetensors");
        let report = load_into(&vs, &spec(&cfg), &w, read_weights(&w).unwrap(), false).unwrap();
        assert!(report.set_aside.is_empty() && report.reinitialised.is_empty());
        let x = Tensor::read_npy(dir.path().join("input.npy")).unwrap();
        let mask = mask_of(dir.path());
        let (loss, pred) =
            tch::no_grad(|| (model.loss(&x, &mask, None), model.predict(&x, &mask, None)));
        let want: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("loss.json")).unwrap())
                .unwrap();
        let want = want["loss"].as_f64().unwrap();
        let got = loss.double_value(&[]);
        assert!(
            (got - want).abs() < 1e-5 * want.abs().max(1.0),
            "loss {got} vs {want}"
        );
        let logits = Tensor::read_npy(dir.path().join("logits.npy")).unwrap();
        let d = (&pred - &logits).abs().max().double_value(&[]);
        assert!(d < 1e-4, "predictions differ by {d}");
    }

    /// Our model, saved with its own names and `config.json`, loads in `transformers`
    /// with nothing missing, and `transformers` computes the loss we compute.
    #[test]
    fn our_checkpoints_load_in_transformers_with_the_same_loss() {
        let dir = tempfile::tempdir().unwrap();
        let enc = VideoMaeConfig {
            layer_norm_eps: 1e-6,
            use_mean_pooling: false,
            ..VideoMaeConfig::preset("vit-s", 0, 4, (32, 48)).unwrap()
        };
        let enc = VideoMaeConfig {
            hidden_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 128,
            ..enc
        };
        let cfg = MaeConfig {
            decoder: DecoderConfig::for_encoder(64, 1, Some(32)),
            encoder: enc,
            mask_ratio: 0.75,
            norm_pix_loss: true,
        };
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = VideoMaePretrain::new(&vs.root(), &cfg, 0.0, Precision::Fp32).unwrap();
        VideoMaePretrain::xavier_init(&vs);
        let x = Tensor::randn([3, 3, 4, 32, 48], (Kind::Float, Device::Cpu));
        let (slots, per_slot) = model.grid(&x);
        assert_eq!((slots, per_slot), (2, 6));
        let mut rng = crate::rng::Rng::stream(1, crate::rng::Purpose::Mask, 0, 0);
        let mask = TubeMask::draw(&mut rng, 3, slots, per_slot, cfg.mask_ratio, Device::Cpu);
        assert_eq!(mask.visible.size(), [3, 4]);
        assert_eq!(mask.masked.size(), [3, 8]);
        // Every temporal slot masks the same positions.
        let m = mask.bool_mask(12);
        assert!(m.narrow(1, 0, 6).equal(&m.narrow(1, 6, 6)));
        let loss = tch::no_grad(|| model.loss(&x, &mask, None)).double_value(&[]);

        let weights: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        crate::checkpoint::write_safetensors(
            &dir.path().join("model.safetensors"),
            &weights,
            &[("format".to_owned(), "pt".to_owned())]
                .into_iter()
                .collect(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec_pretty(&cfg.to_hf()).unwrap(),
        )
        .unwrap();
        x.write_npy(dir.path().join("input.npy")).unwrap();
        m.to_kind(Kind::Uint8)
            .write_npy(dir.path().join("mask.npy"))
            .unwrap();
        let out = python(&["check", dir.path().to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let theirs = v["loss"].as_f64().unwrap();
        assert!(
            (theirs - loss).abs() < 1e-5 * loss.abs().max(1.0),
            "{theirs} vs {loss}"
        );
    }

    #[test]
    fn masks_keep_counts() {
        assert_eq!(TubeMask::masked_per_slot(196, 0.9), 176);
        assert_eq!(TubeMask::masked_per_slot(196, 0.75), 147);
        assert_eq!(TubeMask::masked_per_slot(4, 0.99), 3);
        assert!(
            TubeMask::from_token_flags(&[true, false, false, false], 2, 2, Device::Cpu).is_err()
        );
    }
}
