//! Spatial views of stored frames: random resized crops and flips for training, the
//! crops along the long side for evaluation, and the resampler that cuts and scales
//! them.
//!
//! Owns crop geometry and the separable resampler (a triangle filter whose support
//! grows with the scale factor, as PIL's bilinear filter does, so downscaling does not
//! alias; 14-bit fixed-point weights). The same crop applies to every frame of a clip.
//! It works on uint8 RGB bytes only: it never allocates tensors and never normalises.

use crate::rng::Rng;

/// A window of the source frame, in source pixels, and whether to mirror it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crop {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub flip: bool,
}

/// Random resized crop: an area fraction drawn from `scale`, an aspect ratio (relative
/// to the output's) drawn log-uniformly from `ratio`, placed uniformly; after ten misses
/// the whole frame, narrowed to the nearest aspect `ratio` allows, centred (as torchvision's
/// `RandomResizedCrop` falls back).
#[allow(clippy::too_many_arguments)]
pub fn random_resized_crop(
    rng: &mut Rng,
    src_w: usize,
    src_h: usize,
    out_w: usize,
    out_h: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    flip_p: f64,
) -> Crop {
    let (sw, sh) = (src_w as f64, src_h as f64);
    let out_aspect = out_w as f64 / out_h as f64;
    let area = sw * sh;
    let mut crop = None;
    for _ in 0..10 {
        let target = area * rng.range(scale.0, scale.1);
        let aspect = out_aspect * rng.range(ratio.0.ln(), ratio.1.ln()).exp();
        let w = (target * aspect).sqrt();
        let h = (target / aspect).sqrt();
        if w <= sw && h <= sh && w >= 1.0 && h >= 1.0 {
            let x = rng.range(0.0, sw - w);
            let y = rng.range(0.0, sh - h);
            crop = Some((x, y, w, h));
            break;
        }
    }
    // After ten misses, torchvision's fallback: the whole frame, narrowed to the nearest
    // aspect the ratio range allows, centred.
    let (x, y, w, h) = crop.unwrap_or_else(|| {
        let r = sw / sh / out_aspect;
        let (w, h) = if r < ratio.0 {
            (sw, sw / (ratio.0 * out_aspect))
        } else if r > ratio.1 {
            (sh * ratio.1 * out_aspect, sh)
        } else {
            (sw, sh)
        };
        ((sw - w) / 2.0, (sh - h) / 2.0, w, h)
    });
    let flip = flip_p > 0.0 && rng.f64() < flip_p;
    Crop { x, y, w, h, flip }
}

/// Short-side scale jitter, then a random crop (SlowFast's
/// `random_short_side_scale_jitter` + `random_crop`, and the PMV repository's
/// `random_crop_rect` for rectangular outputs): the frame's short side is scaled to a
/// length drawn uniformly from `short_side` (raised where the scaled frame would not
/// hold the output, as PMV's `TRAIN_JITTER_SCALES_AUTO_ADJUST` does), and an
/// `out_w`×`out_h` window of the scaled frame is taken at a uniform position.
#[allow(clippy::too_many_arguments)]
pub fn jitter_crop(
    rng: &mut Rng,
    src_w: usize,
    src_h: usize,
    out_w: usize,
    out_h: usize,
    short_side: (usize, usize),
    flip_p: f64,
) -> Crop {
    let s = rng
        .range(short_side.0 as f64, short_side.1 as f64 + 1.0)
        .floor()
        .min(short_side.1 as f64);
    let f = scale_for(src_w, src_h, out_w, out_h, s);
    let (w, h) = (out_w as f64 / f, out_h as f64 / f);
    let x = rng.range(0.0, (src_w as f64 - w).max(0.0));
    let y = rng.range(0.0, (src_h as f64 - h).max(0.0));
    let flip = flip_p > 0.0 && rng.f64() < flip_p;
    Crop { x, y, w, h, flip }
}

/// The factor that scales the short side to `short` pixels, raised so the scaled
/// frame holds an `out_w`×`out_h` window.
fn scale_for(src_w: usize, src_h: usize, out_w: usize, out_h: usize, short: f64) -> f64 {
    let f = short / src_w.min(src_h) as f64;
    f.max(out_w as f64 / src_w as f64)
        .max(out_h as f64 / src_h as f64)
}

/// Evaluation crops after scaling the short side to `short` pixels (SlowFast's and
/// PMV's `uniform_crop` / `uniform_crop_rect`): 1 centred, or `n` spread evenly along
/// the long side and centred on the short one.
pub fn scaled_eval_crops(
    src_w: usize,
    src_h: usize,
    out_w: usize,
    out_h: usize,
    n: usize,
    short: usize,
) -> Vec<Crop> {
    let f = scale_for(src_w, src_h, out_w, out_h, short as f64);
    let (w, h) = (out_w as f64 / f, out_h as f64 / f);
    let (room_x, room_y) = ((src_w as f64 - w).max(0.0), (src_h as f64 - h).max(0.0));
    let at = |i: usize| {
        if n <= 1 {
            0.5
        } else {
            i as f64 / (n - 1) as f64
        }
    };
    (0..n.max(1))
        .map(|i| {
            let (px, py) = if src_h > src_w {
                (0.5, at(i))
            } else {
                (at(i), 0.5)
            };
            Crop {
                x: room_x * px,
                y: room_y * py,
                w,
                h,
                flip: false,
            }
        })
        .collect()
}

/// The largest window of the output's aspect ratio inside the source (what VideoMAE's
/// "resize the short side, crop the output size" evaluation takes), at `position` along
/// the axis with room to spare: 0 the start (top or left), 0.5 the centre, 1 the end.
pub fn cover_window(src_w: usize, src_h: usize, out_w: usize, out_h: usize, position: f64) -> Crop {
    let (sw, sh) = (src_w as f64, src_h as f64);
    let s = (sw / out_w as f64).min(sh / out_h as f64);
    let (w, h) = (out_w as f64 * s, out_h as f64 * s);
    Crop {
        x: (sw - w) * position,
        y: (sh - h) * position,
        w,
        h,
        flip: false,
    }
}

/// The spatial crops of evaluation views: 1 centre crop, or `n` crops spread evenly
/// along the long side of the source (3: start, centre, end).
pub fn eval_crops(src_w: usize, src_h: usize, out_w: usize, out_h: usize, n: usize) -> Vec<Crop> {
    if n <= 1 {
        return vec![cover_window(src_w, src_h, out_w, out_h, 0.5)];
    }
    (0..n)
        .map(|i| cover_window(src_w, src_h, out_w, out_h, i as f64 / (n - 1) as f64))
        .collect()
}

/// The evenly spread clip indices of `n` views out of `k` stored clips (all when n ≥ k).
pub fn eval_clips(k: usize, n: usize) -> Vec<usize> {
    if n >= k || n == 0 {
        return (0..k).collect();
    }
    if n == 1 {
        return vec![k / 2];
    }
    (0..n)
        .map(|i| (i * (k - 1) + (n - 1) / 2) / (n - 1))
        .collect()
}

const BITS: u32 = 14;
/// The horizontal pass keeps 7 fractional bits more than a byte.
const MID_SHIFT: u32 = 7;

/// The source taps of every output pixel along one axis: `n` consecutive source pixels
/// from `starts[j]`, with `weights[j * n..(j + 1) * n]` (zero-padded to the same `n` for
/// all outputs, so the inner loops have a fixed length).
#[derive(Debug, Clone)]
struct Axis {
    starts: Vec<usize>,
    weights: Vec<i32>,
    n: usize,
}

impl Axis {
    /// Weights mapping `[origin, origin + extent)` of a `src`-pixel axis onto `out`
    /// pixels, mirrored when `flip`.
    fn new(src: usize, origin: f64, extent: f64, out: usize, flip: bool) -> Axis {
        let scale = extent / out as f64;
        let support = scale.max(1.0);
        let mut taps: Vec<(usize, Vec<i32>)> = Vec::with_capacity(out);
        let mut w = vec![];
        for j in 0..out {
            let centre = origin + (j as f64 + 0.5) * scale;
            let lo = (centre - support - 0.5).floor() as i64;
            let hi = (centre + support - 0.5).ceil() as i64;
            let first = lo.clamp(0, src as i64 - 1) as usize;
            let last = hi.clamp(0, src as i64 - 1) as usize;
            w.clear();
            w.resize(last - first + 1, 0.0f64);
            for i in lo..=hi {
                let d = ((i as f64 + 0.5) - centre).abs() / support;
                if d < 1.0 {
                    let at = i.clamp(0, src as i64 - 1) as usize - first;
                    w[at] += 1.0 - d;
                }
            }
            let sum: f64 = w.iter().sum();
            if sum <= 0.0 {
                // Cannot happen for a window inside the frame; take the nearest pixel.
                let at = (centre.floor() as i64).clamp(0, src as i64 - 1) as usize;
                taps.push((at, vec![1 << BITS]));
                continue;
            }
            let mut fixed: Vec<i32> = w
                .iter()
                .map(|v| (v / sum * (1 << BITS) as f64).round() as i32)
                .collect();
            // Exact unit gain: the rounding remainder goes to the largest weight.
            let rest = (1 << BITS) - fixed.iter().sum::<i32>();
            let big = (0..fixed.len()).max_by_key(|&i| fixed[i]).unwrap_or(0);
            fixed[big] += rest;
            let a = fixed.iter().position(|&v| v != 0).unwrap_or(0);
            let b = fixed.iter().rposition(|&v| v != 0).unwrap_or(0);
            taps.push((first + a, fixed[a..=b].to_vec()));
        }
        if flip {
            taps.reverse();
        }
        let n = taps.iter().map(|t| t.1.len()).max().unwrap_or(1).min(src);
        let mut starts = Vec::with_capacity(out);
        let mut weights = Vec::with_capacity(out * n);
        for (start, ws) in taps {
            // Pad to n taps, moving the window left where it would pass the edge.
            let start_padded = start.min(src - n);
            let lead = start - start_padded;
            starts.push(start_padded);
            let at = weights.len();
            weights.resize(at + n, 0);
            weights[at + lead..at + lead + ws.len()].copy_from_slice(&ws);
        }
        Axis { starts, weights, n }
    }
}

/// Cuts one crop out of `src_w`×`src_h` RGB frames and scales it to `out_w`×`out_h`.
#[derive(Debug, Clone)]
pub struct Resampler {
    src_w: usize,
    src_h: usize,
    out_w: usize,
    out_h: usize,
    x: Axis,
    y: Axis,
    /// Source rows the vertical pass reads.
    rows: std::ops::Range<usize>,
    /// The crop is the whole frame at the same size: a copy (mirrored when flipped).
    copy: Option<bool>,
}

/// Scratch space of a resampler, reused between frames.
#[derive(Default)]
pub struct Scratch {
    rows: Vec<i32>,
    acc: Vec<i32>,
}

/// The horizontal pass over one source line with `N` taps per output pixel.
fn horizontal<const N: usize>(line: &[u8], axis: &Axis, out: &mut [i32]) {
    let half = 1i32 << (BITS - MID_SHIFT - 1);
    for ((&start, w), o) in axis
        .starts
        .iter()
        .zip(axis.weights.chunks_exact(N))
        .zip(out.chunks_exact_mut(3))
    {
        let px = &line[start * 3..(start + N) * 3];
        let (mut a, mut b, mut c) = (half, half, half);
        for k in 0..N {
            a += w[k] * px[3 * k] as i32;
            b += w[k] * px[3 * k + 1] as i32;
            c += w[k] * px[3 * k + 2] as i32;
        }
        o[0] = a >> (BITS - MID_SHIFT);
        o[1] = b >> (BITS - MID_SHIFT);
        o[2] = c >> (BITS - MID_SHIFT);
    }
}

/// The same for any number of taps.
fn horizontal_any(line: &[u8], axis: &Axis, out: &mut [i32]) {
    let half = 1i32 << (BITS - MID_SHIFT - 1);
    let n = axis.n;
    for ((&start, w), o) in axis
        .starts
        .iter()
        .zip(axis.weights.chunks_exact(n))
        .zip(out.chunks_exact_mut(3))
    {
        let px = &line[start * 3..(start + n) * 3];
        let (mut a, mut b, mut c) = (half, half, half);
        for (wk, p) in w.iter().zip(px.chunks_exact(3)) {
            a += wk * p[0] as i32;
            b += wk * p[1] as i32;
            c += wk * p[2] as i32;
        }
        o[0] = a >> (BITS - MID_SHIFT);
        o[1] = b >> (BITS - MID_SHIFT);
        o[2] = c >> (BITS - MID_SHIFT);
    }
}

impl Resampler {
    pub fn new(src_w: usize, src_h: usize, crop: Crop, out_w: usize, out_h: usize) -> Resampler {
        let whole = crop.x == 0.0
            && crop.y == 0.0
            && crop.w == src_w as f64
            && crop.h == src_h as f64
            && src_w == out_w
            && src_h == out_h;
        let x = Axis::new(src_w, crop.x, crop.w, out_w, crop.flip);
        let y = Axis::new(src_h, crop.y, crop.h, out_h, false);
        let first = y.starts.iter().copied().min().unwrap_or(0);
        let last = y.starts.iter().map(|s| s + y.n).max().unwrap_or(0);
        Resampler {
            src_w,
            src_h,
            out_w,
            out_h,
            x,
            y,
            rows: first..last,
            copy: whole.then_some(crop.flip),
        }
    }

    /// Bytes of one output frame.
    pub fn out_len(&self) -> usize {
        self.out_w * self.out_h * 3
    }

    /// Resamples one frame (`src`: src_h×src_w×3) into `dst` (out_h×out_w×3).
    pub fn frame(&self, src: &[u8], dst: &mut [u8], scratch: &mut Scratch) {
        debug_assert_eq!(src.len(), self.src_w * self.src_h * 3);
        debug_assert_eq!(dst.len(), self.out_len());
        match self.copy {
            Some(false) => return dst.copy_from_slice(src),
            Some(true) => {
                for (d, s) in dst
                    .chunks_exact_mut(self.out_w * 3)
                    .zip(src.chunks_exact(self.src_w * 3))
                {
                    for (dp, sp) in d.chunks_exact_mut(3).zip(s.chunks_exact(3).rev()) {
                        dp.copy_from_slice(sp);
                    }
                }
                return;
            }
            None => {}
        }
        let ow3 = self.out_w * 3;
        let sw3 = self.src_w * 3;
        scratch.rows.clear();
        scratch.rows.resize(self.rows.len() * ow3, 0);
        for (r, row) in self.rows.clone().zip(scratch.rows.chunks_exact_mut(ow3)) {
            let line = &src[r * sw3..(r + 1) * sw3];
            match self.x.n {
                1 => horizontal::<1>(line, &self.x, row),
                2 => horizontal::<2>(line, &self.x, row),
                3 => horizontal::<3>(line, &self.x, row),
                4 => horizontal::<4>(line, &self.x, row),
                5 => horizontal::<5>(line, &self.x, row),
                _ => horizontal_any(line, &self.x, row),
            }
        }
        // Vertical pass: whole rows at a time, so the inner loop runs over contiguous
        // values and vectorises.
        let shift = BITS + MID_SHIFT;
        let round = 1i32 << (shift - 1);
        let n = self.y.n;
        scratch.acc.resize(ow3, 0);
        for ((&start, ws), out_row) in self
            .y
            .starts
            .iter()
            .zip(self.y.weights.chunks_exact(n))
            .zip(dst.chunks_exact_mut(ow3))
        {
            let acc = &mut scratch.acc;
            acc.fill(round);
            for (k, &w) in ws.iter().enumerate() {
                if w == 0 {
                    continue;
                }
                let at = (start + k - self.rows.start) * ow3;
                for (a, v) in acc.iter_mut().zip(&scratch.rows[at..at + ow3]) {
                    *a += w * v;
                }
            }
            for (o, a) in out_row.iter_mut().zip(acc.iter()) {
                *o = (a >> shift).clamp(0, 255) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Purpose;

    fn ramp(w: usize, h: usize) -> Vec<u8> {
        let mut v = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let p = (y * w + x) * 3;
                v[p] = (x * 255 / (w - 1)) as u8;
                v[p + 1] = (y * 255 / (h - 1)) as u8;
                v[p + 2] = 77;
            }
        }
        v
    }

    #[test]
    fn whole_frame_is_copied_or_mirrored() {
        let src = ramp(8, 6);
        let mut tmp = Scratch::default();
        let mut dst = vec![0u8; src.len()];
        let full = Crop {
            x: 0.0,
            y: 0.0,
            w: 8.0,
            h: 6.0,
            flip: false,
        };
        Resampler::new(8, 6, full, 8, 6).frame(&src, &mut dst, &mut tmp);
        assert_eq!(dst, src);
        Resampler::new(8, 6, Crop { flip: true, ..full }, 8, 6).frame(&src, &mut dst, &mut tmp);
        assert_eq!(&dst[0..3], &src[7 * 3..8 * 3]);
        // The general path gives the same picture as the copy.
        let mut general = vec![0u8; src.len()];
        let mut r = Resampler::new(8, 6, full, 8, 6);
        r.copy = None;
        r.frame(&src, &mut general, &mut tmp);
        assert_eq!(general, src);
    }

    #[test]
    fn scaling_keeps_flat_colour_and_gradients() {
        // A flat frame stays flat at any scale (unit gain, no ringing).
        let flat = vec![123u8; 40 * 30 * 3];
        let mut tmp = Scratch::default();
        for (ow, oh) in [(17, 11), (80, 60), (40, 30)] {
            let crop = cover_window(40, 30, ow, oh, 0.5);
            let r = Resampler::new(40, 30, crop, ow, oh);
            let mut dst = vec![0u8; r.out_len()];
            r.frame(&flat, &mut dst, &mut tmp);
            assert!(dst.iter().all(|&v| v == 123), "{ow}x{oh}");
        }
        // Halving a horizontal ramp keeps it increasing and within range.
        let src = ramp(64, 8);
        let crop = Crop {
            x: 0.0,
            y: 0.0,
            w: 64.0,
            h: 8.0,
            flip: false,
        };
        let r = Resampler::new(64, 8, crop, 32, 4);
        let mut dst = vec![0u8; r.out_len()];
        r.frame(&src, &mut dst, &mut tmp);
        let reds: Vec<u8> = (0..32).map(|x| dst[x * 3]).collect();
        assert!(reds.windows(2).all(|w| w[0] <= w[1]), "{reds:?}");
        assert!(reds[0] < 10 && reds[31] > 245, "{reds:?}");
        assert!(dst.chunks(3).all(|p| p[2] == 77));
    }

    /// The fixed-point passes against the filter computed in f64 on random crops, sizes
    /// and flips: within one grey level.
    #[test]
    fn matches_a_float_reference() {
        let (sw, sh) = (37usize, 29usize);
        let src: Vec<u8> = (0..sw * sh * 3).map(|i| ((i * 7919) % 251) as u8).collect();
        let weights = |src_n: usize, origin: f64, extent: f64, out: usize, j: usize| {
            let scale = extent / out as f64;
            let support = scale.max(1.0);
            let centre = origin + (j as f64 + 0.5) * scale;
            let mut w = vec![0.0f64; src_n];
            for i in
                (centre - support - 1.0).floor() as i64..=(centre + support + 1.0).ceil() as i64
            {
                let d = ((i as f64 + 0.5) - centre).abs() / support;
                if d < 1.0 {
                    w[i.clamp(0, src_n as i64 - 1) as usize] += 1.0 - d;
                }
            }
            let s: f64 = w.iter().sum();
            w.iter().map(|v| v / s).collect::<Vec<f64>>()
        };
        let mut rng = Rng::stream(3, Purpose::Augment, 1, 1);
        let mut scratch = Scratch::default();
        for _ in 0..40 {
            let (ow, oh) = (1 + rng.below(60), 1 + rng.below(50));
            let crop = random_resized_crop(&mut rng, sw, sh, ow, oh, (0.1, 1.0), (0.5, 2.0), 0.5);
            let r = Resampler::new(sw, sh, crop, ow, oh);
            let mut dst = vec![0u8; r.out_len()];
            r.frame(&src, &mut dst, &mut scratch);
            for y in 0..oh {
                let wy = weights(sh, crop.y, crop.h, oh, y);
                for x in 0..ow {
                    let xs = if crop.flip { ow - 1 - x } else { x };
                    let wx = weights(sw, crop.x, crop.w, ow, xs);
                    for c in 0..3 {
                        let mut v = 0.0;
                        for (i, a) in wy.iter().enumerate().filter(|p| *p.1 != 0.0) {
                            for (k, b) in wx.iter().enumerate().filter(|p| *p.1 != 0.0) {
                                v += a * b * src[(i * sw + k) * 3 + c] as f64;
                            }
                        }
                        let got = dst[(y * ow + x) * 3 + c] as f64;
                        assert!(
                            (got - v).abs() <= 1.0,
                            "{crop:?} {ow}x{oh} at {x},{y},{c}: {got} vs {v}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn jitter_and_scaled_crops_follow_slowfast() {
        let mut rng = Rng::stream(2, Purpose::Augment, 0, 0);
        // A 720x1280 portrait frame, short side jittered to [256, 320], 288x192 crops.
        for _ in 0..200 {
            let c = jitter_crop(&mut rng, 720, 1280, 192, 288, (256, 320), 0.0);
            let f = 192.0 / c.w;
            let short = 720.0 * f;
            assert!((256.0 - 1e-6..=320.0 + 1e-6).contains(&short), "{c:?}");
            assert!((c.h * f - 288.0).abs() < 1e-6);
            assert!(
                c.x >= 0.0 && c.y >= 0.0 && c.x + c.w <= 720.0 + 1e-9 && c.y + c.h <= 1280.0 + 1e-9
            );
        }
        // A jitter too small for the crop is raised until the crop fits.
        let c = jitter_crop(&mut rng, 100, 100, 64, 80, (32, 32), 0.0);
        assert!(c.w <= 100.0 + 1e-9 && c.h <= 100.0 + 1e-9, "{c:?}");
        // Test views: short side 256, three crops down the long side, centred across.
        let v = scaled_eval_crops(720, 1280, 192, 288, 3, 256);
        let f = 256.0 / 720.0;
        assert!((v[0].w - 192.0 / f).abs() < 1e-9 && (v[0].h - 288.0 / f).abs() < 1e-9);
        assert_eq!(v[0].y, 0.0);
        assert!((v[2].y + v[2].h - 1280.0).abs() < 1e-9);
        assert!(v.iter().all(|c| (c.x - (720.0 - c.w) / 2.0).abs() < 1e-9));
        // Square crops of the short side's size are the largest windows.
        let sq = scaled_eval_crops(192, 256, 112, 112, 3, 112);
        assert_eq!(sq, eval_crops(192, 256, 112, 112, 3));
    }

    #[test]
    fn crops_stay_inside_and_views_spread() {
        let mut rng = Rng::stream(1, Purpose::Augment, 0, 0);
        for _ in 0..500 {
            let c = random_resized_crop(
                &mut rng,
                192,
                256,
                112,
                112,
                (0.08, 1.0),
                (0.75, 1.333),
                0.5,
            );
            assert!(
                c.x >= 0.0 && c.y >= 0.0 && c.x + c.w <= 192.0 + 1e-9 && c.y + c.h <= 256.0 + 1e-9,
                "{c:?}"
            );
        }
        let crops = eval_crops(192, 256, 112, 112, 3);
        assert_eq!(crops.len(), 3);
        assert_eq!((crops[0].y, crops[0].w, crops[0].h), (0.0, 192.0, 192.0));
        assert_eq!(crops[1].y, 32.0);
        assert_eq!(crops[2].y, 64.0);
        assert!(crops.iter().all(|c| c.x == 0.0));
        assert_eq!(eval_clips(5, 1), vec![2]);
        assert_eq!(eval_clips(5, 3), vec![0, 2, 4]);
        assert_eq!(eval_clips(5, 2), vec![0, 4]);
        assert_eq!(eval_clips(2, 5), vec![0, 1]);
    }

    /// Checks that two lists of crops are the same windows (to rounding).
    fn assert_same_windows(a: &[Crop], b: &[Crop]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (p, q) in a.iter().zip(b) {
            let d = [p.x - q.x, p.y - q.y, p.w - q.w, p.h - q.h];
            assert!(
                d.iter().all(|v| v.abs() < 1e-9) && p.flip == q.flip,
                "{a:?} vs {b:?}"
            );
        }
    }

    /// Checks that test `crops` of a `w`×`h` frame are distinct, lie inside it, keep the
    /// centre of its short side, and together cover its long side without a gap.
    fn assert_cover_long_side(crops: &[Crop], w: usize, h: usize) {
        let eps = 1e-9;
        for c in crops {
            assert!(
                c.x >= -eps && c.y >= -eps && c.x + c.w <= w as f64 + eps,
                "{c:?} leaves {w}x{h}"
            );
            assert!(c.y + c.h <= h as f64 + eps, "{c:?} leaves {w}x{h}");
            assert!(!c.flip);
        }
        for (i, a) in crops.iter().enumerate() {
            for b in &crops[i + 1..] {
                assert_ne!(a, b, "two views are the same crop");
            }
        }
        let portrait = h > w;
        let (long, short) = (w.max(h) as f64, w.min(h) as f64);
        for c in crops {
            // Where the crop starts and how long it is across the short side.
            let (start, extent) = if portrait { (c.x, c.w) } else { (c.y, c.h) };
            assert!(
                (start + extent / 2.0 - short / 2.0).abs() < 1e-6,
                "not centred across: {crops:?}"
            );
        }
        // Where each crop starts and ends along the long side.
        let mut spans: Vec<(f64, f64)> = crops
            .iter()
            .map(|c| {
                if portrait {
                    (c.y, c.y + c.h)
                } else {
                    (c.x, c.x + c.w)
                }
            })
            .collect();
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(
            spans[0].0.abs() < eps,
            "the first view misses the start: {spans:?}"
        );
        let mut reach = spans[0].1;
        for &(start, end) in &spans[1..] {
            assert!(start <= reach + eps, "a gap before {start}: {spans:?}");
            reach = reach.max(end);
        }
        assert!(
            (reach - long).abs() < eps,
            "the views miss the end: {spans:?}"
        );
    }

    #[test]
    fn three_test_crops_cover_a_portrait_frame_along_its_long_side() {
        // Stored 568x320 (H×W), tested at short side 224 with 224x224 crops: windows of
        // 320x320 stored pixels at the top, the middle and the bottom.
        let v = scaled_eval_crops(320, 568, 224, 224, 3, 224);
        assert_eq!(v.len(), 3);
        assert_cover_long_side(&v, 320, 568);
        for c in &v {
            assert!(
                (c.w - 320.0).abs() < 1e-9 && (c.h - 320.0).abs() < 1e-9,
                "{c:?}"
            );
        }
        for (c, y) in v.iter().zip([0.0, 124.0, 248.0]) {
            assert!((c.y - y).abs() < 1e-9 && c.x.abs() < 1e-9, "{v:?}");
        }
        // At a test scale larger than the crop the windows are smaller and still reach
        // both ends; without a test scale they are the largest square windows.
        let big = scaled_eval_crops(320, 568, 224, 224, 3, 256);
        assert_cover_long_side(&big, 320, 568);
        assert!(big.iter().all(|c| (c.w - 280.0).abs() < 1e-9), "{big:?}");
        assert_same_windows(&eval_crops(320, 568, 224, 224, 3), &v);
        // A portrait input (288x192, H×W) from the same frame: windows of the input's
        // aspect, down the long side.
        let rect = scaled_eval_crops(320, 568, 192, 288, 3, 256);
        assert_cover_long_side(&rect, 320, 568);
        // One crop is the centre one.
        let one = scaled_eval_crops(320, 568, 224, 224, 1, 224);
        assert_eq!(one.len(), 1);
        assert!(
            (one[0].y - 124.0).abs() < 1e-9 && one[0].x.abs() < 1e-9,
            "{one:?}"
        );
    }

    #[test]
    fn three_test_crops_cover_a_landscape_frame_along_its_long_side() {
        let v = scaled_eval_crops(568, 320, 224, 224, 3, 224);
        assert_eq!(v.len(), 3);
        assert_cover_long_side(&v, 568, 320);
        for (c, x) in v.iter().zip([0.0, 124.0, 248.0]) {
            assert!((c.x - x).abs() < 1e-9 && c.y.abs() < 1e-9, "{v:?}");
            assert!(
                (c.w - 320.0).abs() < 1e-9 && (c.h - 320.0).abs() < 1e-9,
                "{v:?}"
            );
        }
        assert_same_windows(&eval_crops(568, 320, 224, 224, 3), &v);
        let big = scaled_eval_crops(568, 320, 224, 224, 3, 256);
        assert_cover_long_side(&big, 568, 320);
        // Five crops spread the same way.
        assert_cover_long_side(&scaled_eval_crops(568, 320, 224, 224, 5, 224), 568, 320);
    }

    #[test]
    fn clip_views_are_distinct_and_reach_both_ends() {
        let crops = scaled_eval_crops(320, 568, 224, 224, 3, 224);
        for (stored, clips, views) in [(10, 5, 15), (10, 10, 30), (5, 5, 15), (2, 10, 6)] {
            let picked = eval_clips(stored, clips);
            assert_eq!(picked.len() * crops.len(), views, "{clips}x3 of {stored}");
            let mut uniq = picked.clone();
            uniq.dedup();
            assert_eq!(uniq, picked, "repeated or unordered clips: {picked:?}");
            assert!(picked.iter().all(|&k| k < stored));
            // The first and the last stored clip, which the shard stage places at the
            // video's start and end, are both tested.
            assert_eq!(picked[0], 0);
            assert_eq!(*picked.last().unwrap_or(&0), stored - 1);
        }
        assert_eq!(eval_clips(10, 10), (0..10).collect::<Vec<_>>());
        assert_eq!(eval_clips(10, 5), vec![0, 2, 5, 7, 9]);
        // Any number of views out of 10 stored clips: distinct clips, evenly spread.
        for n in 2..=10 {
            let picked = eval_clips(10, n);
            assert_eq!(picked.len(), n);
            assert!(picked.windows(2).all(|p| p[0] < p[1]), "{n}: {picked:?}");
            let gaps: Vec<usize> = picked.windows(2).map(|p| p[1] - p[0]).collect();
            let (lo, hi) = (gaps.iter().min(), gaps.iter().max());
            assert!(
                hi.zip(lo).is_some_and(|(h, l)| h - l <= 1),
                "{n}: {picked:?}"
            );
        }
    }
}
