//! MViTv2 (Li et al., CVPR 2022), the multiscale vision transformer the PMV-400
//! baselines train as MViTv2-S, numerically equal to torchvision's `MViT` built as
//! `mvit_v2_s` builds it, with torchvision's parameter names.
//!
//! Owns the configuration (one entry a block: heads, widths, pooling kernels and
//! strides), the 3×7×7 patch embedding, the class token, the multiscale blocks (pooling
//! attention: depthwise 3D convolutions pool q, k and v, each followed by a LayerNorm;
//! decomposed relative positions along t, h and w added to the scores; residual pooling
//! of q; a max-pooled skip and a linear projection where the block changes width), the
//! final norm on the class token, head dropout and the classifier, and stochastic depth.
//! The relative-position tables are sized for the configured input: both spatial
//! tables from the longer side, as torchvision and PySlowFast size them, or each from its
//! own side, as PMV-400's MViT code does for its portrait runs (`per_axis_tables`, the
//! preset's choice); another input resamples them linearly at each forward, as both
//! do. Products run in the compute precision; norms, softmax and the residual stream
//! stay fp32. It never reads files and never draws random numbers in a forward: training
//! noise comes from [`Noise`].

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn};

use super::videomae::{Linear, Norm, trunc_normal};
use super::{ModelError, Noise, depth_rates};
use crate::device::Precision;

/// One multiscale block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MvitBlockConfig {
    /// Attention heads (head width = `dim_out / heads`).
    pub heads: usize,
    /// Width of the tokens coming in.
    pub dim_in: usize,
    /// Width of the tokens going out (attention, MLP and skip projection work at it).
    pub dim_out: usize,
    /// Depthwise pooling kernel of q, and of k and v, (t, h, w).
    pub kernel_q: [usize; 3],
    pub kernel_kv: [usize; 3],
    /// Pooling strides of q (which also pool the block's output grid) and of k and v.
    pub stride_q: [usize; 3],
    pub stride_kv: [usize; 3],
}

impl MvitBlockConfig {
    /// The MViTv2 block list: `depths[s]` blocks in stage s; the first block of every
    /// stage after the first doubles the width and the head count and pools q by 2 in
    /// h and w; k and v are pooled by `kv_stride` in h and w in the first stage and by
    /// `kv_stride` divided by the q pooling so far (at least 1) after it; every kernel is
    /// 3×3×3.
    pub fn stages(depths: &[usize], dim: usize, heads: usize, kv_stride: usize) -> Vec<Self> {
        let mut out = vec![];
        let (mut dim_in, mut heads_now, mut q_pool) = (dim, heads, 1);
        for (s, &depth) in depths.iter().enumerate() {
            for i in 0..depth {
                let transition = s > 0 && i == 0;
                let (dim_out, sq) = if transition {
                    heads_now *= 2;
                    q_pool *= 2;
                    (dim_in * 2, 2)
                } else {
                    (dim_in, 1)
                };
                let kv = (kv_stride / q_pool).max(1);
                out.push(MvitBlockConfig {
                    heads: heads_now,
                    dim_in,
                    dim_out,
                    kernel_q: [3, 3, 3],
                    kernel_kv: [3, 3, 3],
                    stride_q: [1, sq, sq],
                    stride_kv: [1, kv, kv],
                });
                dim_in = dim_out;
            }
        }
        out
    }
}

/// The MViTv2 architecture (residual pooling, decomposed relative positions, the
/// projection after attention, LayerNorm everywhere, a class token and no absolute
/// position embedding), as torchvision's `mvit_v2_s` configures `MViT`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MvitConfig {
    /// Frames of the input the relative-position tables are sized for.
    pub frames: usize,
    /// (height, width) of the input the tables are sized for.
    pub size: [usize; 2],
    /// Patch embedding convolution (t, h, w): kernel, stride, padding.
    pub patch_kernel: [usize; 3],
    pub patch_stride: [usize; 3],
    pub patch_padding: [usize; 3],
    pub blocks: Vec<MvitBlockConfig>,
    /// MLP hidden width / block output width.
    pub mlp_ratio: usize,
    pub layer_norm_eps: f64,
    /// Each spatial relative-position table sized from its own side of the grid
    /// (PMV-400's MViT code: 143 h and 95 w rows in the first block at 288x192) rather
    /// than both from the longer side (torchvision and PySlowFast: 143 and 143, the w
    /// table resampled to 95 at every forward). The same for square inputs.
    #[serde(default)]
    pub per_axis_tables: bool,
    pub classes: usize,
    /// Dropout on the class token's feature before the classifier.
    pub dropout: f64,
    /// Stochastic depth of the last block (linear from 0 at the first).
    pub drop_path: f64,
}

impl MvitConfig {
    /// `mvit-v2-s` (34.5 M parameters with 400 classes); `frames` and `size` (height,
    /// width) size the relative-position tables, each spatial one from its own side.
    pub fn preset(
        name: &str,
        classes: usize,
        frames: usize,
        size: (usize, usize),
        dropout: f64,
        drop_path: f64,
    ) -> Option<Self> {
        let blocks = match name {
            "mvit-v2-s" => MvitBlockConfig::stages(&[1, 2, 11, 2], 96, 1, 8),
            _ => return None,
        };
        Some(MvitConfig {
            frames,
            size: [size.0, size.1],
            patch_kernel: [3, 7, 7],
            patch_stride: [2, 4, 4],
            patch_padding: [1, 3, 3],
            blocks,
            mlp_ratio: 4,
            layer_norm_eps: 1e-6,
            per_axis_tables: true,
            classes,
            dropout,
            drop_path,
        })
    }

    /// What the input's frames, height and width must be multiples of: the patch
    /// stride times the largest pooling any block applies to the grid (q pooling so
    /// far times this block's q or kv stride), so every pooling divides evenly.
    pub fn multiples(&self) -> [usize; 3] {
        let mut out = [1usize; 3];
        let mut q_pool = [1usize; 3];
        for b in &self.blocks {
            for d in 0..3 {
                let need = q_pool[d] * b.stride_q[d].max(b.stride_kv[d]);
                out[d] = lcm(out[d], need);
                q_pool[d] *= b.stride_q[d];
            }
        }
        [0, 1, 2].map(|d| out[d] * self.patch_stride[d])
    }

    /// Usage error text when an input [T, H, W] cannot run through this model: for
    /// MViTv2-S, T must be a positive multiple of 2 and H and W positive multiples of
    /// 32 (the 2×4×4 patch stride, then q pooling by 8 and k/v pooling by 8).
    pub fn check_input(&self, input: [usize; 3]) -> Result<(), String> {
        let m = self.multiples();
        let names = ["frames", "height", "width"];
        let bad: Vec<String> = (0..3)
            .filter(|&d| input[d] == 0 || !input[d].is_multiple_of(m[d]))
            .map(|d| {
                format!(
                    "{} {} is not a positive multiple of {}",
                    names[d], input[d], m[d]
                )
            })
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "input {}x{}x{} does not fit MViT: {}",
                input[0],
                input[1],
                input[2],
                bad.join("; ")
            ))
        }
    }

    /// Errors in the configuration itself.
    pub fn check(&self) -> Result<(), String> {
        if self.blocks.is_empty() {
            return Err("no blocks".into());
        }
        for (i, b) in self.blocks.iter().enumerate() {
            if b.heads == 0 || b.dim_out == 0 || !b.dim_out.is_multiple_of(b.heads) {
                return Err(format!(
                    "block {i}: width {} is not a multiple of {} heads",
                    b.dim_out, b.heads
                ));
            }
            if i > 0 && self.blocks[i - 1].dim_out != b.dim_in {
                return Err(format!(
                    "block {i} takes {} channels, block {} gives {}",
                    b.dim_in,
                    i - 1,
                    self.blocks[i - 1].dim_out
                ));
            }
            if b.stride_q.contains(&0) || b.stride_kv.contains(&0) {
                return Err(format!("block {i}: zero stride"));
            }
        }
        if self.patch_stride.contains(&0) || self.mlp_ratio == 0 {
            return Err("zero patch stride or MLP ratio".into());
        }
        if !(0.0..1.0).contains(&self.dropout) || !(0.0..1.0).contains(&self.drop_path) {
            return Err(format!(
                "dropout {} and drop path {} must be in [0, 1)",
                self.dropout, self.drop_path
            ));
        }
        self.check_input([self.frames, self.size[0], self.size[1]])
            .map_err(|e| format!("the configured {e}"))
    }

    /// Token grid (t, h, w) the patch embedding gives for an input [T, H, W].
    pub fn grid(&self, input: [usize; 3]) -> [usize; 3] {
        [0, 1, 2].map(|d| {
            let (k, s, p) = (
                self.patch_kernel[d],
                self.patch_stride[d],
                self.patch_padding[d],
            );
            (input[d] + 2 * p).saturating_sub(k) / s + 1
        })
    }

    /// Lengths of each block's (t, h, w) relative-position tables: sized from the
    /// configured input's grid as torchvision sizes them (`T'`-based temporal, `max(H',
    /// W')`-based spatial, the grid shrinking by integer division with each q stride),
    /// or with `per_axis_tables` the h table from `H'` and the w table from `W'`.
    pub fn table_lengths(&self) -> Vec<[usize; 3]> {
        let mut g =
            [0, 1, 2].map(|d| [self.frames, self.size[0], self.size[1]][d] / self.patch_stride[d]);
        self.blocks
            .iter()
            .map(|b| {
                let longer = g[1].max(g[2]);
                let spatial = |d: usize| {
                    let size = if self.per_axis_tables { g[d] } else { longer };
                    2 * (size / b.stride_q[d]).max(size / b.stride_kv[d]) - 1
                };
                let lengths = [2 * g[0] - 1, spatial(1), spatial(2)];
                g = [0, 1, 2].map(|d| g[d] / b.stride_q[d]);
                lengths
            })
            .collect()
    }

    /// The tables an input [T, H, W] resamples, as `blocks.{i}.attn.rel_pos_{t,h,w}
    /// (stored -> used)`: none at the configured input when it is square.
    pub fn resized_tables(&self, input: [usize; 3]) -> Vec<String> {
        let mut g = self.grid(input);
        let mut out = vec![];
        for (i, (b, stored)) in self.blocks.iter().zip(self.table_lengths()).enumerate() {
            let q = pooled(g, b.kernel_q, b.stride_q);
            let k = pooled(g, b.kernel_kv, b.stride_kv);
            for (d, axis) in ["t", "h", "w"].into_iter().enumerate() {
                let used = 2 * q[d].max(k[d]) - 1;
                if used != stored[d] {
                    out.push(format!(
                        "blocks.{i}.attn.rel_pos_{axis} ({} -> {used})",
                        stored[d]
                    ));
                }
            }
            g = q;
        }
        out
    }

    /// Total stochastic-depth and dropout draws for a batch.
    fn block_draws(&self, batch: usize) -> usize {
        if self.drop_path > 0.0 {
            2 * self.blocks.len() * batch
        } else {
            0
        }
    }
}

/// The grid after a pooling convolution with padding kernel/2 (torchvision's).
fn pooled(g: [usize; 3], kernel: [usize; 3], stride: [usize; 3]) -> [usize; 3] {
    [0, 1, 2].map(|d| (g[d] + 2 * (kernel[d] / 2)).saturating_sub(kernel[d]) / stride[d] + 1)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a, b) * b
}

fn i64s(v: [usize; 3]) -> [i64; 3] {
    v.map(|x| x as i64)
}

/// A depthwise pooling convolution followed by a LayerNorm over the head width, the
/// class token passing the convolution untouched (`pool.weight`, `norm_act.0.*`).
struct Pool {
    w: Tensor,
    norm: Norm,
    stride: [i64; 3],
    padding: [i64; 3],
}

impl Pool {
    fn new(p: &nn::Path, hd: usize, kernel: [usize; 3], stride: [usize; 3], eps: f64) -> Pool {
        let fan_in = (kernel[0] * kernel[1] * kernel[2]) as f64;
        let bound = 1.0 / fan_in.sqrt();
        let k = i64s(kernel);
        Pool {
            w: p.sub("pool").var(
                "weight",
                &[hd as i64, 1, k[0], k[1], k[2]],
                nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            ),
            norm: Norm::new(&p.sub("norm_act"), "0", hd, eps),
            stride: i64s(stride),
            padding: k.map(|k| k / 2),
        }
    }

    /// `x` `[B, heads, 1 + t·h·w, hd]` → pooled and normalised (fp32), and its grid.
    fn forward(&self, x: &Tensor, thw: [i64; 3], kind: Kind) -> (Tensor, [i64; 3]) {
        let (b, h, n, hd) = x.size4().expect("[B, heads, N, hd]");
        let cls = x.narrow(2, 0, 1);
        let grid =
            x.narrow(2, 1, n - 1)
                .transpose(2, 3)
                .reshape([b * h, hd, thw[0], thw[1], thw[2]]);
        let pooled = grid.to_kind(kind).conv3d(
            &self.w.to_kind(kind),
            None::<&Tensor>,
            self.stride,
            self.padding,
            [1, 1, 1],
            hd,
        );
        let s = pooled.size();
        let out_thw = [s[2], s[3], s[4]];
        let tokens = pooled.reshape([b, h, hd, -1]).transpose(2, 3);
        let x = Tensor::cat(&[cls.to_kind(kind), tokens], 2);
        (self.norm.forward(&x), out_thw)
    }
}

/// Relative-position distance indices for `q` query and `k` key positions along one
/// axis, computed as torchvision does (float32 products, truncated), cached per device.
type IndexCache = Mutex<HashMap<(i64, i64, Device), Tensor>>;

fn distance_index(cache: &IndexCache, q: i64, k: i64, device: Device) -> Tensor {
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry((q, k, device))
        .or_insert_with(|| {
            let q_ratio = (k as f64 / q as f64).max(1.0);
            let k_ratio = (q as f64 / k as f64).max(1.0);
            let cpu = (Kind::Int64, Device::Cpu);
            // arange · python float is a float32 product, as in the reference.
            let qi = Tensor::arange(q, cpu).unsqueeze(1) * q_ratio;
            let ki = (Tensor::arange(k, cpu).unsqueeze(0) + (1.0 - k as f64)) * k_ratio;
            (qi - ki).to_kind(Kind::Int64).to_device(device)
        })
        .shallow_clone()
}

/// A table `[L, hd]` resampled to `len` rows by linear interpolation (half-pixel
/// centres, no corner alignment), unchanged when it already has them.
fn resample(table: &Tensor, len: i64) -> Tensor {
    if table.size()[0] == len {
        return table.shallow_clone();
    }
    #[cfg(test)]
    tests::RESAMPLED.with(|c| c.set(c.get() + 1));
    table
        .transpose(0, 1)
        .unsqueeze(0)
        .upsample_linear1d([len], false, None::<f64>)
        .squeeze_dim(0)
        .transpose(0, 1)
}

struct Attention {
    qkv: Linear,
    project: Linear,
    pool_q: Option<Pool>,
    pool_k: Option<Pool>,
    pool_v: Option<Pool>,
    rel_t: Tensor,
    rel_h: Tensor,
    rel_w: Tensor,
    heads: i64,
    dim: i64,
}

impl Attention {
    fn new(p: &nn::Path, b: &MvitBlockConfig, tables: [usize; 3], eps: f64) -> Attention {
        let hd = b.dim_out / b.heads;
        let pools = |kernel: [usize; 3], stride: [usize; 3]| {
            kernel.iter().product::<usize>() > 1 || stride.iter().product::<usize>() > 1
        };
        let pool = |name: &str, kernel, stride| Pool::new(&p.sub(name), hd, kernel, stride, eps);
        let table = |name: &str, len: usize| p.var(name, &[len as i64, hd as i64], trunc_normal());
        Attention {
            qkv: Linear::new(p, "qkv", b.dim_in, 3 * b.dim_out, true),
            project: Linear::new(&p.sub("project"), "0", b.dim_out, b.dim_out, true),
            pool_q: pools(b.kernel_q, b.stride_q).then(|| pool("pool_q", b.kernel_q, b.stride_q)),
            pool_k: pools(b.kernel_kv, b.stride_kv)
                .then(|| pool("pool_k", b.kernel_kv, b.stride_kv)),
            pool_v: pools(b.kernel_kv, b.stride_kv)
                .then(|| pool("pool_v", b.kernel_kv, b.stride_kv)),
            rel_h: table("rel_pos_h", tables[1]),
            rel_w: table("rel_pos_w", tables[2]),
            rel_t: table("rel_pos_t", tables[0]),
            heads: b.heads as i64,
            dim: b.dim_out as i64,
        }
    }

    /// The decomposed relative-position term `[B, heads, q_t·q_h·q_w, k_t·k_h·k_w]`
    /// of the pooled queries `q` (class token excluded).
    fn rel_pos(
        &self,
        q: &Tensor,
        q_thw: [i64; 3],
        k_thw: [i64; 3],
        kind: Kind,
        cache: &IndexCache,
    ) -> Tensor {
        let (b, h, n, hd) = q.size4().expect("[B, heads, N, hd]");
        let [qt, qh, qw] = q_thw;
        let [kt, kh, kw] = k_thw;
        let r = q
            .narrow(2, 1, n - 1)
            .to_kind(kind)
            .reshape([b, h, qt, qh, qw, hd]);
        let axis = |table: &Tensor, qn: i64, kn: i64| {
            let t = resample(table, 2 * qn.max(kn) - 1);
            let idx = distance_index(cache, qn, kn, t.device());
            t.index_select(0, &idx.view([-1]))
                .view([qn, kn, hd])
                .to_kind(kind)
        };
        let rt = axis(&self.rel_t, qt, kt);
        let rh = axis(&self.rel_h, qh, kh);
        let rw = axis(&self.rel_w, qw, kw);
        let by_h = Tensor::einsum("bythwc,hkc->bythwk", &[&r, &rh], None::<&[i64]>);
        let by_w = Tensor::einsum("bythwc,wkc->bythwk", &[&r, &rw], None::<&[i64]>);
        let by_t = Tensor::einsum("bythwc,tkc->bythwk", &[&r, &rt], None::<&[i64]>);
        (by_h.view([b, h, qt, qh, qw, 1, kh, 1].as_slice())
            + by_w.view([b, h, qt, qh, qw, 1, 1, kw].as_slice())
            + by_t.view([b, h, qt, qh, qw, kt, 1, 1].as_slice()))
        .reshape([b, h, qt * qh * qw, kt * kh * kw])
    }

    /// `x` normalised tokens `[B, 1 + N, C_in]` → `[B, 1 + N', C_out]` (compute kind) and
    /// the pooled grid.
    fn forward(
        &self,
        x: &Tensor,
        thw: [i64; 3],
        kind: Kind,
        cache: &IndexCache,
    ) -> (Tensor, [i64; 3]) {
        let (b, n, _) = x.size3().expect("[B, N, C]");
        let hd = self.dim / self.heads;
        let qkv = self
            .qkv
            .forward(x, kind)
            .view([b, n, 3, self.heads, hd])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let pool = |p: &Option<Pool>, t: Tensor| match p {
            Some(p) => p.forward(&t, thw, kind),
            None => (t, thw),
        };
        let (k, k_thw) = pool(&self.pool_k, k);
        let (v, _) = pool(&self.pool_v, v);
        let (q, q_thw) = pool(&self.pool_q, q);
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = (q.to_kind(kind) * scale).matmul(&k.to_kind(kind).transpose(2, 3));
        let rel = self
            .rel_pos(&q, q_thw, k_thw, kind, cache)
            .constant_pad_nd([1, 0, 1, 0]);
        let attn = (scores + rel)
            .to_kind(Kind::Float)
            .softmax(-1, Kind::Float)
            .to_kind(kind);
        let out = attn.matmul(&v.to_kind(kind));
        // Residual pooling: the pooled queries join every token but the class token.
        let nq = out.size()[2];
        let q = q.to_kind(kind);
        let out = Tensor::cat(
            &[
                out.narrow(2, 0, 1),
                out.narrow(2, 1, nq - 1) + q.narrow(2, 1, nq - 1),
            ],
            2,
        );
        let out = out.transpose(1, 2).reshape([b, nq, self.dim]);
        (self.project.forward(&out, kind), q_thw)
    }
}

struct Block {
    norm1: Norm,
    attn: Attention,
    /// The skip's width change (`project`), from the normalised input.
    project: Option<Linear>,
    /// Max pooling of the skip where q is pooled: kernel, stride, padding.
    skip_pool: Option<([i64; 3], [i64; 3], [i64; 3])>,
    norm2: Norm,
    fc1: Linear,
    fc2: Linear,
    drop_path: f64,
}

impl Block {
    fn new(
        p: &nn::Path,
        b: &MvitBlockConfig,
        tables: [usize; 3],
        eps: f64,
        ratio: usize,
        drop_path: f64,
    ) -> Block {
        let skip_pool = (b.stride_q.iter().product::<usize>() > 1).then(|| {
            let kernel = b
                .stride_q
                .map(|s| if s > 1 { s as i64 + 1 } else { s as i64 });
            (kernel, i64s(b.stride_q), kernel.map(|k| k / 2))
        });
        let mlp = p.sub("mlp");
        Block {
            norm1: Norm::new(p, "norm1", b.dim_in, eps),
            attn: Attention::new(&p.sub("attn"), b, tables, eps),
            project: (b.dim_in != b.dim_out)
                .then(|| Linear::new(p, "project", b.dim_in, b.dim_out, true)),
            skip_pool,
            norm2: Norm::new(p, "norm2", b.dim_out, eps),
            fc1: Linear::new(&mlp, "0", b.dim_out, ratio * b.dim_out, true),
            fc2: Linear::new(&mlp, "3", ratio * b.dim_out, b.dim_out, true),
            drop_path,
        }
    }

    /// `x` fp32 tokens `[B, 1 + N, C_in]` on grid `thw`; `keep`: per-sample scales of
    /// the two residual branches under stochastic depth.
    fn forward(
        &self,
        x: &Tensor,
        thw: [i64; 3],
        kind: Kind,
        keep: Option<(Tensor, Tensor)>,
        cache: &IndexCache,
    ) -> (Tensor, [i64; 3]) {
        let xn = self.norm1.forward(x);
        let (a, out_thw) = self.attn.forward(&xn, thw, kind, cache);
        let a = a.to_kind(Kind::Float);
        let skip = match &self.project {
            Some(p) => p.forward(&xn, kind).to_kind(Kind::Float),
            None => x.shallow_clone(),
        };
        let skip = match &self.skip_pool {
            Some((kernel, stride, padding)) => {
                let (b, n, c) = skip.size3().expect("[B, N, C]");
                let grid = skip
                    .narrow(1, 1, n - 1)
                    .transpose(1, 2)
                    .reshape([b, c, thw[0], thw[1], thw[2]])
                    .max_pool3d(*kernel, *stride, *padding, [1, 1, 1], false);
                let tokens = grid.reshape([b, c, -1]).transpose(1, 2);
                Tensor::cat(&[skip.narrow(1, 0, 1), tokens], 1)
            }
            None => skip,
        };
        let x = match &keep {
            Some((k1, _)) => skip + a * k1,
            None => skip + a,
        };
        let h = self.fc1.forward(&self.norm2.forward(&x), kind).gelu("none");
        let h = self.fc2.forward(&h, kind).to_kind(Kind::Float);
        let x = match &keep {
            Some((_, k2)) => x + h * k2,
            None => x + h,
        };
        (x, out_thw)
    }
}

/// MViTv2 with its classifier, torchvision's names (`conv_proj.*`,
/// `pos_encoding.class_token`, `blocks.{i}.*`, `norm.*`, `head.1.*`).
pub struct Mvit {
    pub cfg: MvitConfig,
    conv_w: Tensor,
    conv_b: Tensor,
    class_token: Tensor,
    blocks: Vec<Block>,
    norm: Norm,
    head: Linear,
    precision: Precision,
    index: IndexCache,
}

impl Mvit {
    /// Builds the model under `root`, freshly initialised as torchvision initialises
    /// it (linears, the class token and the tables normal with σ 0.02, biases 0, norms
    /// 1 and 0, convolutions PyTorch's default uniform).
    pub fn new(
        root: &nn::Path,
        cfg: &MvitConfig,
        precision: Precision,
    ) -> Result<Mvit, ModelError> {
        cfg.check().map_err(ModelError::Config)?;
        let d0 = cfg.blocks[0].dim_in;
        let k = i64s(cfg.patch_kernel);
        let bound = 1.0 / ((3 * k[0] * k[1] * k[2]) as f64).sqrt();
        let uniform = nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let conv = root.sub("conv_proj");
        let conv_w = conv.var("weight", &[d0 as i64, 3, k[0], k[1], k[2]], uniform);
        let conv_b = conv.var("bias", &[d0 as i64], uniform);
        let class_token = root
            .sub("pos_encoding")
            .var("class_token", &[d0 as i64], trunc_normal());
        let n = cfg.blocks.len();
        let blocks_p = root.sub("blocks");
        let blocks = cfg
            .blocks
            .iter()
            .zip(cfg.table_lengths())
            .zip(depth_rates(cfg.drop_path, n))
            .enumerate()
            .map(|(i, ((b, tables), rate))| {
                Block::new(
                    &blocks_p.sub(i),
                    b,
                    tables,
                    cfg.layer_norm_eps,
                    cfg.mlp_ratio,
                    rate,
                )
            })
            .collect();
        let last = cfg.blocks[n - 1].dim_out;
        Ok(Mvit {
            cfg: cfg.clone(),
            conv_w,
            conv_b,
            class_token,
            blocks,
            norm: Norm::new(root, "norm", last, cfg.layer_norm_eps),
            head: Linear::new(&root.sub("head"), "1", last, cfg.classes, true),
            precision,
            index: Mutex::new(HashMap::new()),
        })
    }

    /// Uniform draws a training forward needs: two per block per sample (stochastic
    /// depth of the attention and MLP branches) when drop path is on, then one per
    /// feature per sample (head dropout) when dropout is on.
    pub fn noise_len(&self, batch: usize) -> usize {
        let head = if self.cfg.dropout > 0.0 {
            batch * self.feature_dim()
        } else {
            0
        };
        self.cfg.block_draws(batch) + head
    }

    /// Width of [`Mvit::features`].
    pub fn feature_dim(&self) -> usize {
        self.cfg.blocks[self.cfg.blocks.len() - 1].dim_out
    }

    /// The normalised class token `[B, C]` (fp32) the classifier reads. `train` with
    /// `noise`: stochastic depth per sample from it.
    pub fn features(&self, x: &Tensor, train: bool, noise: Option<&Noise>) -> Tensor {
        let kind = self.precision.compute_kind();
        let emb = x.to_kind(kind).conv3d(
            &self.conv_w.to_kind(kind),
            Some(&self.conv_b.to_kind(kind)),
            i64s(self.cfg.patch_stride),
            i64s(self.cfg.patch_padding),
            [1, 1, 1],
            1,
        );
        let s = emb.size();
        let (b, c) = (s[0], s[1]);
        let mut thw = [s[2], s[3], s[4]];
        let tokens = emb.flatten(2, -1).transpose(1, 2).to_kind(Kind::Float);
        let cls = self.class_token.view([1, 1, c]).expand([b, 1, c], false);
        let mut h = Tensor::cat(&[cls, tokens], 1);
        for (i, block) in self.blocks.iter().enumerate() {
            let keep = match (train, noise) {
                (true, Some(nz)) if block.drop_path > 0.0 => {
                    let (a, m) = nz.drop_path(i, b, block.drop_path);
                    Some((a.view([b, 1, 1]), m.view([b, 1, 1])))
                }
                _ => None,
            };
            (h, thw) = block.forward(&h, thw, kind, keep, &self.index);
        }
        self.norm.forward(&h).select(1, 0)
    }

    /// Logits `[B, classes]` in fp32. `train` with `noise`: stochastic depth and head
    /// dropout from it.
    pub fn forward(&self, x: &Tensor, train: bool, noise: Option<&Noise>) -> Tensor {
        let kind = self.precision.compute_kind();
        let mut f = self.features(x, train, noise);
        if let (true, Some(nz)) = (train && self.cfg.dropout > 0.0, noise) {
            let start = self.cfg.block_draws(f.size()[0] as usize) as i64;
            f = nz.dropout(&f, start, self.cfg.dropout);
        }
        self.head.forward(&f, kind).to_kind(Kind::Float)
    }

    /// Whether a parameter belongs to the classifier (`head.1.*`).
    pub fn is_head(name: &str) -> bool {
        name.starts_with("head.")
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::models::{ModelSpec, load_into, read_weights, test_noise};

    thread_local! {
        /// Tables this thread's forwards resampled.
        pub(super) static RESAMPLED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Tables one eval forward of `model` on `x` resamples.
    fn resampled_by(model: &Mvit, x: &Tensor) -> usize {
        RESAMPLED.with(|c| c.set(0));
        let _ = tch::no_grad(|| model.forward(x, false, None));
        RESAMPLED.with(|c| c.get())
    }

    fn repo() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
    }

    /// Runs tests/python/`script` into a fresh directory; returns it and the stdout.
    fn python(script: &str, args: &[&str]) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(repo().join(".venv/bin/python"))
            .arg(repo().join("tests/python").join(script))
            .arg(dir.path())
            .args(args)
            .output()
            .expect("run the venv's python (scripts/setup.sh installs torch and torchvision)");
        assert!(
            out.status.success(),
            "{script} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (dir, String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Loads a safetensors file into the model `cfg` built on `vs` as `--init` loads
    /// strictly: every variable present with its shape, nothing left over. Returns the
    /// tensors loaded.
    fn load_strict(vs: &nn::VarStore, cfg: &MvitConfig, path: &Path) -> Result<usize, String> {
        let spec = ModelSpec::Mvit {
            name: "mvit-v2-s".into(),
            config: cfg.clone(),
        };
        let tensors = read_weights(path).map_err(|e| e.to_string())?;
        load_into(vs, &spec, path, tensors, false)
            .map(|report| report.loaded)
            .map_err(|e| e.to_string())
    }

    fn npy(path: &Path) -> Tensor {
        Tensor::read_npy(path).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.size(), b.size());
        (a - b).abs().max().double_value(&[])
    }

    /// MViTv2-S as torchvision builds it (spatial tables from the longer side).
    fn small(frames: usize, h: usize, w: usize, classes: usize) -> MvitConfig {
        MvitConfig {
            per_axis_tables: false,
            ..MvitConfig::preset("mvit-v2-s", classes, frames, (h, w), 0.0, 0.0).unwrap()
        }
    }

    /// torchvision's logits against ours for MViTv2-S (the real 16 blocks, widths,
    /// heads and strides) at a small input; returns max |Δ| in fp32.
    fn parity(frames: usize, h: usize, w: usize, batch: usize, classes: usize) -> f64 {
        parity_in(frames, h, w, batch, classes).1
    }

    /// [`parity`], also returning the reference's folder.
    fn parity_in(
        frames: usize,
        h: usize,
        w: usize,
        batch: usize,
        classes: usize,
    ) -> (tempfile::TempDir, f64) {
        let [t, hs, ws, b, c] = [frames, h, w, batch, classes].map(|v| v.to_string());
        let args = [
            "--frames",
            &t,
            "--height",
            &hs,
            "--width",
            &ws,
            "--batch",
            &b,
            "--classes",
            &c,
        ];
        let (dir, _) = python("mvit_reference.py", &args);
        let cfg = small(frames, h, w, classes);
        let weights = dir.path().join("model.safetensors");
        let x = npy(&dir.path().join("input.npy"));
        let expected = npy(&dir.path().join("expected.npy"));
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Mvit::new(&vs.root(), &cfg, Precision::Fp32).unwrap();
        assert_eq!(load_strict(&vs, &cfg, &weights).unwrap(), 397);
        let logits = tch::no_grad(|| model.forward(&x, false, None));
        // The forward resamples exactly the tables the configuration says it does.
        let input = [frames, h, w];
        assert_eq!(resampled_by(&model, &x), cfg.resized_tables(input).len());
        let d = max_diff(&logits, &expected);
        assert!(d < 1e-4, "max |difference| {d}");
        // bf16 products stay close to the fp32 result.
        let vs = nn::VarStore::new(Device::Cpu);
        let bf = Mvit::new(&vs.root(), &cfg, Precision::Bf16).unwrap();
        load_strict(&vs, &cfg, &weights).unwrap();
        let lb = tch::no_grad(|| bf.forward(&x, false, None));
        let rel = max_diff(&lb, &logits) / logits.abs().max().double_value(&[]);
        assert!(rel < 5e-2, "bf16 relative difference {rel}");
        (dir, d)
    }

    #[test]
    fn logits_match_torchvision_square() {
        // At the configured square input no table is resampled.
        assert!(small(4, 64, 64, 10).resized_tables([4, 64, 64]).is_empty());
        parity(4, 64, 64, 2, 10);
    }

    #[test]
    fn logits_match_torchvision_portrait() {
        // Tables are sized from max(H', W'): the w tables are resampled at every forward.
        let resized = small(4, 96, 64, 10).resized_tables([4, 96, 64]);
        assert_eq!(resized.len(), 16, "{resized:?}");
        assert!(
            resized.iter().all(|n| n.contains(".rel_pos_w ")),
            "{resized:?}"
        );
        assert_eq!(resized[0], "blocks.0.attn.rel_pos_w (47 -> 31)");
        let (dir, _) = parity_in(4, 96, 64, 2, 10);

        // Tables sized per axis (the preset, PMV-400's portrait layout): at the
        // configured input nothing is resampled, and with each w table resampled once
        // to its length the logits are torchvision's exactly, so the two layouts compute
        // the same function of their tables.
        let cfg = MvitConfig::preset("mvit-v2-s", 10, 4, (96, 64), 0.0, 0.0).unwrap();
        assert!(cfg.per_axis_tables);
        assert!(cfg.resized_tables([4, 96, 64]).is_empty());
        assert_eq!(cfg.table_lengths()[0], [3, 47, 31]);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Mvit::new(&vs.root(), &cfg, Precision::Fp32).unwrap();
        let vars = vs.variables();
        let mut tensors = read_weights(&dir.path().join("model.safetensors")).unwrap();
        for (name, t) in tensors.iter_mut() {
            let want = vars[name.as_str()].size()[0];
            if name.ends_with(".rel_pos_w") && t.size()[0] != want {
                *t = resample(t, want).contiguous();
            }
        }
        let per_axis = dir.path().join("per-axis.safetensors");
        Tensor::write_safetensors(&tensors, &per_axis).unwrap();
        assert_eq!(load_strict(&vs, &cfg, &per_axis).unwrap(), 397);
        let x = npy(&dir.path().join("input.npy"));
        assert_eq!(resampled_by(&model, &x), 0);
        let logits = tch::no_grad(|| model.forward(&x, false, None));
        let d = max_diff(&logits, &npy(&dir.path().join("expected.npy")));
        assert!(d < 1e-4, "per-axis tables: max |difference| {d}");
    }

    #[test]
    #[ignore = "full size, a few minutes on one core"]
    fn logits_match_torchvision_full_size() {
        parity(16, 224, 224, 1, 400);
        parity(16, 288, 192, 1, 400);
    }

    #[test]
    fn mvit_v2_s_has_torchvision_shape() {
        let cfg = MvitConfig::preset("mvit-v2-s", 400, 16, (224, 224), 0.5, 0.2).unwrap();
        // At PMV's portrait input each spatial table follows its own side.
        let portrait = MvitConfig::preset("mvit-v2-s", 400, 16, (288, 192), 0.5, 0.2).unwrap();
        let t = portrait.table_lengths();
        assert_eq!(
            [t[0], t[1], t[3], t[15]],
            [[15, 143, 95], [15, 71, 47], [15, 35, 23], [15, 17, 11]]
        );
        let heads: Vec<usize> = cfg.blocks.iter().map(|b| b.heads).collect();
        assert_eq!(heads, [1, 2, 2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 8, 8]);
        let q: Vec<usize> = cfg.blocks.iter().map(|b| b.stride_q[1]).collect();
        assert_eq!(q, [1, 2, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1]);
        let kv: Vec<usize> = cfg.blocks.iter().map(|b| b.stride_kv[1]).collect();
        assert_eq!(kv, [8, 4, 4, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1]);
        let out: Vec<usize> = cfg.blocks.iter().map(|b| b.dim_out).collect();
        assert_eq!(&out[..4], [96, 192, 192, 384]);
        assert_eq!(&out[13..], [384, 768, 768]);
        let tables = cfg.table_lengths();
        assert_eq!(tables[0], [15, 111, 111]);
        assert_eq!(tables[1], [15, 55, 55]);
        assert_eq!(tables[3], [15, 27, 27]);
        assert_eq!(tables[14], [15, 27, 27]);
        assert_eq!(tables[15], [15, 13, 13]);
        assert_eq!(cfg.multiples(), [2, 32, 32]);
        assert!(cfg.check_input([16, 288, 192]).is_ok());
        let e = cfg.check_input([15, 224, 200]).unwrap_err();
        assert!(
            e.contains("frames 15 is not a positive multiple of 2"),
            "{e}"
        );
        assert!(
            e.contains("width 200 is not a positive multiple of 32"),
            "{e}"
        );
        assert!(!e.contains("height"), "{e}");
        assert!(MvitConfig::preset("mvit-v2-x", 400, 16, (224, 224), 0.0, 0.0).is_none());
        let mut bad = cfg.clone();
        bad.size = [224, 100];
        assert!(
            Mvit::new(
                &nn::VarStore::new(Device::Cpu).root(),
                &bad,
                Precision::Fp32
            )
            .is_err()
        );

        let vs = nn::VarStore::new(Device::Cpu);
        let model = Mvit::new(&vs.root(), &cfg, Precision::Fp32).unwrap();
        let vars = vs.variables();
        let params: i64 = vars.values().map(|t| t.numel() as i64).sum();
        // torchvision's mvit_v2_s(num_classes=400).
        assert_eq!(params, 34_537_744);
        assert_eq!(vars.len(), 397);
        for (n, shape) in [
            ("conv_proj.weight", vec![96, 3, 3, 7, 7]),
            ("pos_encoding.class_token", vec![96]),
            ("blocks.0.attn.rel_pos_h", vec![111, 96]),
            ("blocks.0.attn.rel_pos_t", vec![15, 96]),
            ("blocks.0.attn.pool_q.pool.weight", vec![96, 1, 3, 3, 3]),
            ("blocks.0.attn.pool_v.norm_act.0.bias", vec![96]),
            ("blocks.1.attn.qkv.weight", vec![576, 96]),
            ("blocks.1.attn.project.0.weight", vec![192, 192]),
            ("blocks.1.project.weight", vec![192, 96]),
            ("blocks.1.mlp.0.weight", vec![768, 192]),
            ("blocks.15.mlp.3.weight", vec![768, 3072]),
            ("norm.weight", vec![768]),
            ("head.1.weight", vec![400, 768]),
        ] {
            assert_eq!(vars.get(n).map(Tensor::size), Some(shape), "{n}");
        }
        assert!(!vars.contains_key("blocks.0.project.weight"));
        assert!(Mvit::is_head("head.1.bias") && !Mvit::is_head("norm.weight"));
        assert_eq!(model.feature_dim(), 768);
        assert_eq!(model.noise_len(2), 2 * 16 * 2 + 2 * 768);
        // A freshly built model has torchvision's initial statistics.
        let std = vars["blocks.3.attn.qkv.weight"].std(true).double_value(&[]);
        assert!((std - 0.02).abs() < 1e-3, "{std}");
        assert_eq!(
            vars["blocks.3.norm1.weight"]
                .mean(Kind::Float)
                .double_value(&[]),
            1.0
        );
    }

    #[test]
    fn other_inputs_run_with_resampled_tables() {
        let cfg = small(4, 64, 64, 5);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Mvit::new(&vs.root(), &cfg, Precision::Fp32).unwrap();
        for input in [[4usize, 64, 64], [2, 96, 64], [6, 64, 128]] {
            let shape = [2, 3, input[0] as i64, input[1] as i64, input[2] as i64];
            let x = Tensor::randn(shape, (Kind::Float, Device::Cpu));
            let y = tch::no_grad(|| model.forward(&x, false, None));
            assert_eq!(y.size(), [2, 5]);
            assert!(bool::try_from(y.isfinite().all()).unwrap());
            let n = resampled_by(&model, &x);
            assert_eq!(n, cfg.resized_tables(input).len(), "{input:?}");
            assert_eq!(n == 0, input == [4, 64, 64], "{input:?}");
        }
        assert!(cfg.resized_tables([4, 64, 64]).is_empty());
        let other = cfg.resized_tables([6, 64, 128]);
        assert!(
            other.contains(&"blocks.0.attn.rel_pos_t (3 -> 5)".to_string()),
            "{other:?}"
        );
        assert!(
            other.contains(&"blocks.0.attn.rel_pos_w (31 -> 63)".to_string()),
            "{other:?}"
        );
        assert!(!other.iter().any(|n| n.contains("rel_pos_h")), "{other:?}");
    }

    #[test]
    fn training_uses_the_given_noise_only() {
        let cfg = MvitConfig::preset("mvit-v2-s", 3, 2, (32, 32), 0.5, 0.3).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Mvit::new(&vs.root(), &cfg, Precision::Fp32).unwrap();
        let b = 3;
        let n = model.noise_len(b);
        assert_eq!(n, 2 * 16 * b + b * 768);
        let x = Tensor::randn([b as i64, 3, 2, 32, 32], (Kind::Float, Device::Cpu));
        let (n1, n2) = (test_noise(n, 1), test_noise(n, 2));
        let y1 = model.forward(&x, true, Some(&n1));
        let y1b = model.forward(&x, true, Some(&n1));
        let y2 = model.forward(&x, true, Some(&n2));
        assert_eq!(max_diff(&y1, &y1b), 0.0, "same noise, same output");
        assert!(max_diff(&y1, &y2) > 1e-6, "other noise, other output");
        // Evaluation ignores noise.
        let e1 = tch::no_grad(|| model.forward(&x, false, Some(&n1)));
        let e2 = tch::no_grad(|| model.forward(&x, false, None));
        assert_eq!(max_diff(&e1, &e2), 0.0);
        y1.sum(Kind::Float).backward();
        let vars = vs.variables();
        for name in [
            "conv_proj.weight",
            "blocks.0.attn.rel_pos_h",
            "blocks.15.mlp.3.weight",
            "head.1.weight",
        ] {
            let g = vars[name].grad();
            assert!(g.defined(), "{name} has no gradient");
            assert!(bool::try_from(g.isfinite().all()).unwrap(), "{name}");
            assert!(g.abs().sum(Kind::Float).double_value(&[]) > 0.0, "{name}");
        }
        let off = MvitConfig::preset("mvit-v2-s", 3, 2, (32, 32), 0.0, 0.0).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        assert_eq!(
            Mvit::new(&vs.root(), &off, Precision::Fp32)
                .unwrap()
                .noise_len(b),
            0
        );
    }

    #[test]
    fn converter_round_trips_and_resizes_for_another_input() {
        let (dir, stdout) = python("mvit_roundtrip.py", &[]);
        for case in ["\"torchvision\"", "\"pyslowfast\"", "\"input\""] {
            assert!(stdout.contains(case), "{stdout}");
        }
        assert!(stdout.contains("\"logit_diff\": 0.0"), "{stdout}");
        // The weights converted for 4x96x64 load strictly into that model and run.
        let cfg = small(4, 96, 64, 7);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Mvit::new(&vs.root(), &cfg, Precision::Fp32).unwrap();
        load_strict(&vs, &cfg, &dir.path().join("resized.safetensors")).unwrap();
        let x = Tensor::randn([1, 3, 4, 96, 64], (Kind::Float, Device::Cpu));
        assert_eq!(
            tch::no_grad(|| model.forward(&x, false, None)).size(),
            [1, 7]
        );
        // Without --square-tables, into the preset (tables per axis).
        let cfg = MvitConfig::preset("mvit-v2-s", 7, 4, (96, 64), 0.0, 0.0).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Mvit::new(&vs.root(), &cfg, Precision::Fp32).unwrap();
        load_strict(&vs, &cfg, &dir.path().join("resized-per-axis.safetensors")).unwrap();
        assert_eq!(resampled_by(&model, &x), 0);
    }
}
