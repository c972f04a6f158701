//! One training micro-batch: its targets (label-smoothed one-hot or multi-hot),
//! mixup/CutMix, the stochastic-depth and dropout noise, the pre-training masks, and
//! the loss.
//!
//! Owns the arithmetic of a step up to the loss; every random draw comes from the
//! run's counter-based streams. It never waits for the device, never calls backward
//! and never touches the optimiser (the epoch loop does).

use tch::{Device, Kind, Reduction, Tensor};

use crate::data::loader::{Batch, Normalizer};
use crate::models::mae::{TubeMask, VideoMaePretrain};
use crate::models::{Net, Noise};
use crate::rng::{Purpose, Rng};
use crate::run::HyperParams;

/// Targets `[n, C]` for single-label batches: one-hot, label-smoothed.
fn smoothed(labels: &Tensor, classes: i64, smoothing: f64) -> Tensor {
    let n = labels.size()[0];
    let off = smoothing / classes as f64;
    let mut t = Tensor::full([n, classes], off, (Kind::Float, labels.device()));
    let _ = t.scatter_value_(1, &labels.unsqueeze(1), 1.0 - smoothing + off);
    t
}

/// Mixup or CutMix of a batch and its targets (timm's pairing: each clip with the
/// batch reversed). Returns whether the batch was mixed.
fn mix(x: &mut Tensor, y: &mut Tensor, r: &HyperParams, rng: &mut Rng) -> bool {
    let on = r.mixup > 0.0 || r.cutmix > 0.0;
    if !on || x.size()[0] < 2 || rng.f64() >= r.mix_prob {
        return false;
    }
    let use_cutmix = match (r.mixup > 0.0, r.cutmix > 0.0) {
        (true, true) => rng.f64() < 0.5,
        (false, true) => true,
        _ => false,
    };
    let alpha = if use_cutmix { r.cutmix } else { r.mixup };
    let mut lam = rng.beta(alpha, alpha);
    if use_cutmix {
        let size = x.size();
        let (h, w) = (size[3] as f64, size[4] as f64);
        let cut = (1.0 - lam).sqrt();
        let (ch, cw) = (h * cut, w * cut);
        let (cy, cx) = (rng.range(0.0, h), rng.range(0.0, w));
        let y0 = (cy - ch / 2.0).clamp(0.0, h) as i64;
        let y1 = (cy + ch / 2.0).clamp(0.0, h) as i64;
        let x0 = (cx - cw / 2.0).clamp(0.0, w) as i64;
        let x1 = (cx + cw / 2.0).clamp(0.0, w) as i64;
        if y1 > y0 && x1 > x0 {
            let flipped = x.flip([0]);
            let mut region = x.narrow(3, y0, y1 - y0).narrow(4, x0, x1 - x0);
            region.copy_(&flipped.narrow(3, y0, y1 - y0).narrow(4, x0, x1 - x0));
        }
        lam = 1.0 - ((y1 - y0).max(0) * (x1 - x0).max(0)) as f64 / (h * w);
    } else {
        *x = &*x * lam + x.flip([0]) * (1.0 - lam);
    }
    *y = &*y * lam + y.flip([0]) * (1.0 - lam);
    true
}

/// The tube masks of a batch, from the run's mask stream at `index` (and data-parallel
/// `rank`: each rank masks its own samples).
pub(super) fn draw_mask(
    mae: &VideoMaePretrain,
    x: &Tensor,
    seed: u64,
    index: u64,
    rank: u64,
    device: Device,
) -> TubeMask {
    let (slots, per_slot) = mae.grid(x);
    let mut rng = Rng::stream(seed, Purpose::Mask, index, rank);
    TubeMask::draw(
        &mut rng,
        x.size()[0] as usize,
        slots,
        per_slot,
        mae.cfg.mask_ratio,
        device,
    )
}

/// Stochastic-depth and dropout draws of one micro-batch (of data-parallel `rank`).
fn noise_for(
    net: &Net,
    batch: usize,
    seed: u64,
    index: u64,
    rank: u64,
    device: Device,
) -> Option<Noise> {
    let noise_len = net.noise_len(batch);
    (noise_len > 0).then(|| {
        let mut rng = Rng::stream(seed, Purpose::Noise, index, rank);
        let v: Vec<f32> = (0..noise_len).map(|_| rng.f32()).collect();
        Noise::new(&v, device)
    })
}

/// What one training micro-batch needs.
pub(super) struct MicroInput<'a> {
    pub(super) net: &'a Net,
    pub(super) batch: &'a Batch,
    pub(super) hyper: &'a HyperParams,
    pub(super) seed: u64,
    /// Global index of the micro-batch (keys its mixing and noise draws).
    pub(super) micro_index: u64,
    /// The data-parallel rank (keys them too: ranks draw apart; rank 0 as one process).
    pub(super) rank: u64,
    pub(super) device: Device,
    pub(super) norm: &'a Normalizer,
    pub(super) classes: usize,
    pub(super) multi_label: bool,
}

/// The loss of a micro-batch, and its top-1 hits when the batch was not mixed.
pub(super) struct MicroOutput {
    pub(super) loss: Tensor,
    pub(super) hits: Option<Tensor>,
}

/// Forward pass and loss of one micro-batch: targets (label-smoothed one-hot, or
/// multi-hot), mixup/CutMix, the stochastic-depth and dropout noise, soft-target
/// cross-entropy or binary cross-entropy. Nothing here waits for the device.
pub(super) fn micro_step(m: &MicroInput<'_>) -> MicroOutput {
    let b = m.batch;
    let r = m.hyper;
    if let Some(mae) = m.net.mae() {
        let x = b.input(m.device, m.norm);
        let mask = draw_mask(mae, &x, m.seed, m.micro_index, m.rank, m.device);
        let noise = noise_for(m.net, b.rows(), m.seed, m.micro_index, m.rank, m.device);
        return MicroOutput {
            loss: mae.loss(&x, &mask, noise.as_ref()),
            hits: None,
        };
    }
    let mut x = b.input(m.device, m.norm);
    let labels = b.label_tensor(m.device);
    let mut y = if m.multi_label {
        let t = b
            .target_tensor(m.device, m.classes)
            .expect("multi-label batches carry targets");
        t * (1.0 - r.label_smoothing) + r.label_smoothing / 2.0
    } else {
        smoothed(&labels, m.classes as i64, r.label_smoothing)
    };
    let mut mix_rng = Rng::stream(m.seed, Purpose::Mix, m.micro_index, m.rank);
    let mixed = mix(&mut x, &mut y, r, &mut mix_rng);
    let noise = noise_for(m.net, b.rows(), m.seed, m.micro_index, m.rank, m.device);
    let extra = b.extra(m.device, m.norm);
    let logits = m.net.forward_with(&x, extra.as_ref(), true, noise.as_ref());
    let loss = if m.multi_label {
        logits.binary_cross_entropy_with_logits::<Tensor>(&y, None, None, Reduction::Mean)
    } else {
        -(&y * logits.log_softmax(-1, Kind::Float))
            .sum_dim_intlist([-1i64].as_slice(), false, Kind::Float)
            .mean(Kind::Float)
    };
    let hits = (!mixed && !m.multi_label)
        .then(|| logits.argmax(-1, false).eq_tensor(&labels).sum(Kind::Int64));
    MicroOutput { loss, hits }
}
