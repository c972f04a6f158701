//! RandAugment as timm 1.0.31 does it (`timm/data/auto_augment.py`), for clips: the
//! policy string, the draw of a clip's ops, and the ops on uint8 RGB frames, bit-exact
//! with timm's ops on PIL images where PIL's arithmetic allows.
//!
//! Owns the policy grammar (`rand-m7-n4-mstd0.5-inc1`), timm's two op sets (the
//! increasing one of `inc1` and the plain one), the level-to-argument rules with the
//! hyper-parameters VideoMAE's `create_random_augment` passes (fill 128, bicubic
//! resampling, translations relative to the frame), and the pixel arithmetic of the
//! PIL functions timm calls: the affine transform with PIL's bicubic filter and pixel
//! centres, `ImageEnhance` and `Image.blend` with their float32 truncation, and
//! `ImageOps` autocontrast, equalize, posterize, solarize and invert as lookup tables.
//! Every frame of a clip gets the same drawn ops, as VideoMAE applies one draw to all
//! frames. It never crops, flips, erases or normalises (`augment` and the loader do),
//! and never allocates per pixel: the geometric ops and the filters reuse [`Scratch`].

use crate::rng::Rng;

/// timm's `_LEVEL_DENOM`: magnitudes are on a 0..10 scale.
const LEVEL_DENOM: f64 = 10.0;
/// timm's `_FILL` (VideoMAE passes no `img_mean`): what geometric ops bring in.
const FILL: u8 = 128;
/// timm's default `translate_pct` of the relative translations.
const TRANSLATE_PCT: f64 = 0.45;

/// The ops timm names in its RandAugment sets (`NAME_TO_OP` with its level rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    Posterize,
    PosterizeIncreasing,
    Solarize,
    SolarizeIncreasing,
    SolarizeAdd,
    Color,
    ColorIncreasing,
    Contrast,
    ContrastIncreasing,
    Brightness,
    BrightnessIncreasing,
    Sharpness,
    SharpnessIncreasing,
    ShearX,
    ShearY,
    TranslateXRel,
    TranslateYRel,
}

/// timm's `_RAND_INCREASING_TRANSFORMS` (`inc1`), in timm's order.
const INCREASING: [Kind; 15] = [
    Kind::AutoContrast,
    Kind::Equalize,
    Kind::Invert,
    Kind::Rotate,
    Kind::PosterizeIncreasing,
    Kind::SolarizeIncreasing,
    Kind::SolarizeAdd,
    Kind::ColorIncreasing,
    Kind::ContrastIncreasing,
    Kind::BrightnessIncreasing,
    Kind::SharpnessIncreasing,
    Kind::ShearX,
    Kind::ShearY,
    Kind::TranslateXRel,
    Kind::TranslateYRel,
];

/// timm's `_RAND_TRANSFORMS` (`inc0`, the default), in timm's order.
const PLAIN: [Kind; 15] = [
    Kind::AutoContrast,
    Kind::Equalize,
    Kind::Invert,
    Kind::Rotate,
    Kind::Posterize,
    Kind::Solarize,
    Kind::SolarizeAdd,
    Kind::Color,
    Kind::Contrast,
    Kind::Brightness,
    Kind::Sharpness,
    Kind::ShearX,
    Kind::ShearY,
    Kind::TranslateXRel,
    Kind::TranslateYRel,
];

impl Kind {
    /// Whether timm's level rule draws a random sign (`_randomly_negate`).
    fn negates(self) -> bool {
        matches!(
            self,
            Kind::Rotate
                | Kind::ColorIncreasing
                | Kind::ContrastIncreasing
                | Kind::BrightnessIncreasing
                | Kind::SharpnessIncreasing
                | Kind::ShearX
                | Kind::ShearY
                | Kind::TranslateXRel
                | Kind::TranslateYRel
        )
    }

    /// timm's `LEVEL_TO_ARG` rule and op for a clipped `magnitude`; `negate` is the sign
    /// draw of the ops that have one (ignored by the others). The float expressions keep
    /// timm's order of operations.
    fn resolve(self, magnitude: f64, negate: bool) -> Op {
        let level = magnitude / LEVEL_DENOM;
        let sign = |v: f64| if negate { -v } else { v };
        // Python's int() of a non-negative float.
        let posterize = (level * 4.0) as i32;
        let solarize = ((level * 256.0) as i32).min(256);
        let enhance = level * 1.8 + 0.1;
        let enhance_inc = (1.0 + sign(level * 0.9)).max(0.1);
        match self {
            Kind::AutoContrast => Op::AutoContrast,
            Kind::Equalize => Op::Equalize,
            Kind::Invert => Op::Invert,
            Kind::Rotate => Op::Rotate {
                degrees: sign(level * 30.0),
            },
            Kind::Posterize => Op::Posterize { bits: posterize },
            Kind::PosterizeIncreasing => Op::Posterize {
                bits: 4 - posterize,
            },
            Kind::Solarize => Op::Solarize {
                threshold: solarize,
            },
            Kind::SolarizeIncreasing => Op::Solarize {
                threshold: 256 - solarize,
            },
            Kind::SolarizeAdd => Op::SolarizeAdd {
                add: ((level * 110.0) as i32).min(128),
                threshold: 128,
            },
            Kind::Color => Op::Color { factor: enhance },
            Kind::ColorIncreasing => Op::Color {
                factor: enhance_inc,
            },
            Kind::Contrast => Op::Contrast { factor: enhance },
            Kind::ContrastIncreasing => Op::Contrast {
                factor: enhance_inc,
            },
            Kind::Brightness => Op::Brightness { factor: enhance },
            Kind::BrightnessIncreasing => Op::Brightness {
                factor: enhance_inc,
            },
            Kind::Sharpness => Op::Sharpness { factor: enhance },
            Kind::SharpnessIncreasing => Op::Sharpness {
                factor: enhance_inc,
            },
            Kind::ShearX => Op::ShearX {
                factor: sign(level * 0.3),
            },
            Kind::ShearY => Op::ShearY {
                factor: sign(level * 0.3),
            },
            Kind::TranslateXRel => Op::TranslateXRel {
                fraction: sign(level * TRANSLATE_PCT),
            },
            Kind::TranslateYRel => Op::TranslateYRel {
                fraction: sign(level * TRANSLATE_PCT),
            },
        }
    }
}

/// A parsed RandAugment policy in timm's grammar: `rand` then dash-separated sections
/// `m<int>` (magnitude, default 10), `n<int>` (ops per clip, default 2), `p<float>`
/// (probability of applying each drawn op, default 0.5), `mstd<float>` (standard
/// deviation of the magnitude; above 100 the magnitude is uniform in [0, m]), `mmax<int>`
/// (the magnitude's upper clip, default 10) and `inc<int>` (1: the ops whose severity
/// increases with the magnitude). timm's `t<set>` sections (weighted or 3-Augment sets)
/// are refused, as are unknown keys and repeated ones (where timm would silently keep
/// the first or the last).
#[derive(Debug, Clone, PartialEq)]
pub struct RandAugment {
    magnitude: u32,
    layers: usize,
    prob: f64,
    magnitude_std: f64,
    magnitude_max: Option<u32>,
    increasing: bool,
}

impl RandAugment {
    /// Parses a policy such as `rand-m7-n4-mstd0.5-inc1`; the error names the section.
    pub fn parse(spec: &str) -> Result<RandAugment, String> {
        let mut sections = spec.split('-');
        if sections.next() != Some("rand") {
            return Err(format!(
                "RandAugment policy {spec:?} does not start with \"rand\""
            ));
        }
        let mut ra = RandAugment {
            magnitude: 10,
            layers: 2,
            prob: 0.5,
            magnitude_std: 0.0,
            magnitude_max: None,
            increasing: false,
        };
        let mut seen: Vec<&str> = Vec::new();
        for section in sections {
            if section.starts_with('t') {
                return Err(format!(
                    "RandAugment policy {spec:?}: transform set {section:?} is not supported \
                     (only timm's default sets, chosen with inc0/inc1)"
                ));
            }
            let Some(at) = section.find(|c: char| c.is_ascii_digit()) else {
                return Err(format!(
                    "RandAugment policy {spec:?}: section {section:?} has no number"
                ));
            };
            let (key, value) = section.split_at(at);
            if seen.contains(&key) {
                return Err(format!(
                    "RandAugment policy {spec:?}: key {key:?} given twice"
                ));
            }
            seen.push(key);
            let bad = |what: &str| {
                format!("RandAugment policy {spec:?}: {key:?} needs {what}, not {value:?}")
            };
            match key {
                "m" => ra.magnitude = value.parse().map_err(|_| bad("an integer"))?,
                "n" => ra.layers = value.parse().map_err(|_| bad("an integer"))?,
                "mmax" => ra.magnitude_max = Some(value.parse().map_err(|_| bad("an integer"))?),
                "inc" => {
                    let v: u32 = value.parse().map_err(|_| bad("an integer"))?;
                    ra.increasing = v != 0;
                }
                "p" => {
                    let p: f64 = value.parse().map_err(|_| bad("a number"))?;
                    if !(0.0..=1.0).contains(&p) {
                        return Err(bad("a probability in [0, 1]"));
                    }
                    ra.prob = p;
                }
                "mstd" => {
                    let s: f64 = value.parse().map_err(|_| bad("a number"))?;
                    ra.magnitude_std = if s > 100.0 { f64::INFINITY } else { s };
                }
                _ => {
                    return Err(format!(
                        "RandAugment policy {spec:?}: unknown key {key:?} \
                         (known: m, n, p, mstd, mmax, inc)"
                    ));
                }
            }
        }
        Ok(ra)
    }

    /// The ops one clip gets, as timm's `RandAugment.__call__` draws them: `n` ops chosen
    /// uniformly with replacement from the set, each kept with probability `p`, its
    /// magnitude drawn from N(m, mstd) (uniform in [0, m] when mstd is infinite) and
    /// clipped to [0, mmax], and a random sign for the ops where timm negates. Every
    /// frame of the clip gets the same ops, in this order.
    pub fn draw(&self, rng: &mut Rng) -> Vec<Op> {
        let set = if self.increasing { &INCREASING } else { &PLAIN };
        let upper = match self.magnitude_max {
            // timm's `self.magnitude_max or _LEVEL_DENOM`: 0 means the default.
            Some(m) if m > 0 => m as f64,
            _ => LEVEL_DENOM,
        };
        let mut ops = Vec::with_capacity(self.layers);
        for _ in 0..self.layers {
            let kind = set[rng.below(set.len())];
            if self.prob < 1.0 && rng.f64() > self.prob {
                continue;
            }
            let mut magnitude = self.magnitude as f64;
            if self.magnitude_std == f64::INFINITY {
                magnitude = rng.range(0.0, magnitude);
            } else if self.magnitude_std > 0.0 {
                magnitude += self.magnitude_std * rng.normal();
            }
            let magnitude = magnitude.min(upper).max(0.0);
            let negate = kind.negates() && rng.f64() > 0.5;
            ops.push(kind.resolve(magnitude, negate));
        }
        ops
    }
}

/// One drawn op with its resolved argument, as timm passes it to the PIL function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// `ImageOps.autocontrast`: each channel stretched to 0..255.
    AutoContrast,
    /// `ImageOps.equalize`: each channel's histogram equalised.
    Equalize,
    /// `ImageOps.invert`.
    Invert,
    /// `Image.rotate` by `degrees` counter-clockwise about the centre, bicubic.
    Rotate { degrees: f64 },
    /// Keep the `bits` high bits (8 or more: unchanged; 0 or fewer: black).
    Posterize { bits: i32 },
    /// Values at or above `threshold` inverted.
    Solarize { threshold: i32 },
    /// `add` added (saturating) to values below `threshold`.
    SolarizeAdd { add: i32, threshold: i32 },
    /// `ImageEnhance.Color`: blend with the L grayscale by `factor`.
    Color { factor: f64 },
    /// `ImageEnhance.Contrast`: blend with the rounded mean of L by `factor`.
    Contrast { factor: f64 },
    /// `ImageEnhance.Brightness`: blend with black by `factor`.
    Brightness { factor: f64 },
    /// `ImageEnhance.Sharpness`: blend with PIL's SMOOTH filter by `factor`.
    Sharpness { factor: f64 },
    /// Affine `(1, factor, 0, 0, 1, 0)`: x' = x + factor·y, bicubic.
    ShearX { factor: f64 },
    /// Affine `(1, 0, 0, factor, 1, 0)`: y' = factor·x + y, bicubic.
    ShearY { factor: f64 },
    /// Shift by `fraction` of the width (content moves left for a positive one), bicubic.
    TranslateXRel { fraction: f64 },
    /// Shift by `fraction` of the height (content moves up for a positive one), bicubic.
    TranslateYRel { fraction: f64 },
}

/// The buffer the ops reuse between frames: a copy of the frame for the geometric ops
/// and the filter, which read the input while writing the output.
#[derive(Default)]
pub struct Scratch {
    frame: Vec<u8>,
}

/// Applies the ops, in order, to one RGB uint8 frame of `w`×`h`, in place.
///
/// Panics if `frame` does not hold `w`·`h`·3 bytes (a caller's bug, not data).
pub fn apply(ops: &[Op], frame: &mut [u8], w: usize, h: usize, scratch: &mut Scratch) {
    assert_eq!(frame.len(), w * h * 3, "frame of {w}x{h} RGB");
    if w == 0 || h == 0 {
        return;
    }
    for op in ops {
        match *op {
            Op::AutoContrast => {
                let hist = histograms(frame);
                let luts = hist.map(|h| autocontrast_lut(&h));
                map_luts(frame, &luts);
            }
            Op::Equalize => {
                let hist = histograms(frame);
                let luts = hist.map(|h| equalize_lut(&h));
                map_luts(frame, &luts);
            }
            Op::Invert => map_lut(frame, &std::array::from_fn(|i| 255 - i as u8)),
            Op::Posterize { bits } => {
                if bits < 8 {
                    // PIL's mask ~(2^(8-bits) - 1); bits <= 0 keeps nothing (Pillow 10
                    // and later refuse such bits; earlier ones gave black).
                    let mask = if bits <= 0 {
                        0
                    } else {
                        !((1u32 << (8 - bits)) - 1) as u8
                    };
                    map_lut(frame, &std::array::from_fn(|i| i as u8 & mask));
                }
            }
            Op::Solarize { threshold } => map_lut(
                frame,
                &std::array::from_fn(|i| {
                    if (i as i32) < threshold {
                        i as u8
                    } else {
                        255 - i as u8
                    }
                }),
            ),
            Op::SolarizeAdd { add, threshold } => map_lut(
                frame,
                &std::array::from_fn(|i| {
                    if (i as i32) < threshold {
                        (i as i32 + add).clamp(0, 255) as u8
                    } else {
                        i as u8
                    }
                }),
            ),
            Op::Brightness { factor } => {
                let a = factor as f32;
                map_lut(frame, &std::array::from_fn(|i| blend(0, i as u8, a)));
            }
            Op::Contrast { factor } => {
                let a = factor as f32;
                let sum: u64 = frame.chunks_exact(3).map(|p| luma(p) as u64).sum();
                // ImageStat's mean of L, rounded as int(mean + 0.5).
                let mean = (sum as f64 / (w * h) as f64 + 0.5) as u8;
                map_lut(frame, &std::array::from_fn(|i| blend(mean, i as u8, a)));
            }
            Op::Color { factor } => {
                let a = factor as f32;
                for p in frame.chunks_exact_mut(3) {
                    let l = luma(p);
                    for v in p {
                        *v = blend(l, *v, a);
                    }
                }
            }
            Op::Sharpness { factor } => sharpness(frame, w, h, factor as f32, scratch),
            Op::Rotate { degrees } => rotate(frame, w, h, degrees, scratch),
            Op::ShearX { factor } => {
                affine(frame, w, h, [1.0, factor, 0.0, 0.0, 1.0, 0.0], scratch)
            }
            Op::ShearY { factor } => {
                affine(frame, w, h, [1.0, 0.0, 0.0, factor, 1.0, 0.0], scratch)
            }
            Op::TranslateXRel { fraction } => {
                let pixels = fraction * w as f64;
                affine(frame, w, h, [1.0, 0.0, pixels, 0.0, 1.0, 0.0], scratch)
            }
            Op::TranslateYRel { fraction } => {
                let pixels = fraction * h as f64;
                affine(frame, w, h, [1.0, 0.0, 0.0, 0.0, 1.0, pixels], scratch)
            }
        }
    }
}

/// PIL's RGB → L: (R·19595 + G·38470 + B·7471 + 0x8000) >> 16.
#[inline]
fn luma(p: &[u8]) -> u8 {
    ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

/// `Image.blend(degenerate, image, alpha)` for one value: float32 arithmetic, truncated,
/// clipped to 0..255 (the cast saturates, as PIL clips when extrapolating).
#[inline]
fn blend(degenerate: u8, image: u8, alpha: f32) -> u8 {
    (degenerate as f32 + alpha * ((image as i32 - degenerate as i32) as f32)) as u8
}

fn histograms(frame: &[u8]) -> [[u32; 256]; 3] {
    let mut h = [[0u32; 256]; 3];
    for p in frame.chunks_exact(3) {
        h[0][p[0] as usize] += 1;
        h[1][p[1] as usize] += 1;
        h[2][p[2] as usize] += 1;
    }
    h
}

fn map_lut(frame: &mut [u8], lut: &[u8; 256]) {
    for v in frame {
        *v = lut[*v as usize];
    }
}

fn map_luts(frame: &mut [u8], luts: &[[u8; 256]; 3]) {
    for p in frame.chunks_exact_mut(3) {
        p[0] = luts[0][p[0] as usize];
        p[1] = luts[1][p[1] as usize];
        p[2] = luts[2][p[2] as usize];
    }
}

fn identity() -> [u8; 256] {
    std::array::from_fn(|i| i as u8)
}

/// `ImageOps.autocontrast` (no cutoff) for one channel's histogram.
fn autocontrast_lut(h: &[u32; 256]) -> [u8; 256] {
    let lo = h.iter().position(|&c| c > 0);
    let hi = h.iter().rposition(|&c| c > 0);
    match (lo, hi) {
        (Some(lo), Some(hi)) if hi > lo => {
            let scale = 255.0 / (hi - lo) as f64;
            let offset = -(lo as f64) * scale;
            std::array::from_fn(|ix| ((ix as f64 * scale + offset) as i64).clamp(0, 255) as u8)
        }
        _ => identity(),
    }
}

/// `ImageOps.equalize` for one channel's histogram (Pillow ≥ 10's step: // 255).
fn equalize_lut(h: &[u32; 256]) -> [u8; 256] {
    let nonzero = h.iter().filter(|&&c| c > 0).count();
    let last = h.iter().rev().find(|&&c| c > 0).copied().unwrap_or(0) as u64;
    let total: u64 = h.iter().map(|&c| c as u64).sum();
    if nonzero <= 1 {
        return identity();
    }
    let step = (total - last) / 255;
    if step == 0 {
        return identity();
    }
    let mut n = step / 2;
    std::array::from_fn(|i| {
        let v = (n / step).min(255) as u8;
        n += h[i] as u64;
        v
    })
}

/// `ImageEnhance.Sharpness`: blend with PIL's SMOOTH 3×3 filter (kernel 1 1 1 / 1 5 1 /
/// 1 1 1 over 13, float32, +0.5 and truncated), whose border pixels are the image's.
fn sharpness(frame: &mut [u8], w: usize, h: usize, alpha: f32, scratch: &mut Scratch) {
    if w < 3 || h < 3 {
        return; // The filter keeps every pixel; blending a frame with itself is a no-op.
    }
    let src = &mut scratch.frame;
    src.clear();
    src.extend_from_slice(frame);
    let k = 1.0f32 / 13.0;
    let kc = 5.0f32 / 13.0;
    let row = w * 3;
    for y in 1..h - 1 {
        let up = &src[(y - 1) * row..y * row];
        let mid = &src[y * row..(y + 1) * row];
        let down = &src[(y + 1) * row..(y + 2) * row];
        let out = &mut frame[y * row..(y + 1) * row];
        for i in 3..row - 3 {
            let f = |v: u8| v as f32;
            // PIL's order: offset, then the row below, this row, the row above.
            let mut ss = 0.5f32;
            ss += f(down[i - 3]) * k + f(down[i]) * k + f(down[i + 3]) * k;
            ss += f(mid[i - 3]) * k + f(mid[i]) * kc + f(mid[i + 3]) * k;
            ss += f(up[i - 3]) * k + f(up[i]) * k + f(up[i + 3]) * k;
            let smooth = ss as u8;
            out[i] = blend(smooth, mid[i], alpha);
        }
    }
}

/// `Image.rotate(degrees, BICUBIC, fillcolor)`: PIL's exact cases (0, 180, and 90/270 on
/// square frames are copies), else its affine matrix about the centre, rounded to 15
/// decimals as PIL rounds it.
fn rotate(frame: &mut [u8], w: usize, h: usize, degrees: f64, scratch: &mut Scratch) {
    // Python's float modulo: the result takes the divisor's sign.
    let mut angle = degrees % 360.0;
    if angle != 0.0 && angle < 0.0 {
        angle += 360.0;
    }
    if angle == 0.0 {
        return;
    }
    if angle == 180.0 || (w == h && (angle == 90.0 || angle == 270.0)) {
        let src = &mut scratch.frame;
        src.clear();
        src.extend_from_slice(frame);
        for y in 0..h {
            for x in 0..w {
                // Where output (x, y) comes from.
                let (sx, sy) = if angle == 180.0 {
                    (w - 1 - x, h - 1 - y)
                } else if angle == 90.0 {
                    (w - 1 - y, x)
                } else {
                    (y, h - 1 - x)
                };
                let (o, s) = ((y * w + x) * 3, (sy * w + sx) * 3);
                frame[o..o + 3].copy_from_slice(&src[s..s + 3]);
            }
        }
        return;
    }
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let a = -angle.to_radians();
    let round15 = |v: f64| -> f64 { format!("{v:.15}").parse().unwrap_or(v) };
    let (cos, sin) = (round15(a.cos()), round15(a.sin()));
    let mut m = [cos, sin, 0.0, round15(-a.sin()), cos, 0.0];
    let (tx, ty) = (-cx, -cy);
    m[2] += m[0] * tx + m[1] * ty;
    m[5] += m[3] * tx + m[4] * ty;
    m[2] += cx;
    m[5] += cy;
    affine(frame, w, h, m, scratch);
}

/// PIL's `Image.transform(size, AFFINE, m, BICUBIC, fillcolor=128)`: output pixel
/// (x, y) samples the input at m·(x + 0.5, y + 0.5) with PIL's bicubic filter (a = -1
/// cubic convolution in float64, clamped taps, truncated), or keeps the fill where that
/// point lies outside the frame.
fn affine(frame: &mut [u8], w: usize, h: usize, m: [f64; 6], scratch: &mut Scratch) {
    let src = &mut scratch.frame;
    src.clear();
    src.extend_from_slice(frame);
    let (wf, hf) = (w as f64, h as f64);
    let (wi, hi) = (w as isize, h as isize);
    let row = w * 3;
    let col = |i: isize| i.clamp(0, wi - 1) as usize * 3;
    let line = |j: isize| {
        let r = j.clamp(0, hi - 1) as usize * row;
        &src[r..r + row]
    };
    for (y, out_row) in frame.chunks_exact_mut(row).enumerate() {
        let yin = y as f64 + 0.5;
        for (x, out) in out_row.chunks_exact_mut(3).enumerate() {
            let xin = x as f64 + 0.5;
            let xx = m[0] * xin + m[1] * yin + m[2];
            let yy = m[3] * xin + m[4] * yin + m[5];
            if !(xx >= 0.0 && xx < wf && yy >= 0.0 && yy < hf) {
                out.fill(FILL);
                continue;
            }
            let (xs, ys) = (xx - 0.5, yy - 0.5);
            // PIL's FLOOR (both are at least -0.5 here).
            let fx = if xs < 0.0 { -1 } else { xs as isize };
            let fy = if ys < 0.0 { -1 } else { ys as isize };
            let (dx, dy) = (xs - fx as f64, ys - fy as f64);
            // A zero fraction makes PIL's cubic return its second tap exactly, so the
            // shears and translations (one fraction is zero everywhere) need one pass.
            if dy == 0.0 {
                let r = line(fy);
                let cols = [col(fx - 1), col(fx), col(fx + 1), col(fx + 2)];
                for (c, o) in out.iter_mut().enumerate() {
                    let t = |i: usize| r[cols[i] + c] as i32;
                    *o = cubic_int(t(0), t(1), t(2), t(3), dx) as u8;
                }
            } else if dx == 0.0 {
                let rows = [line(fy - 1), line(fy), line(fy + 1), line(fy + 2)];
                let k = col(fx);
                for (c, o) in out.iter_mut().enumerate() {
                    let t = |j: usize| rows[j][k + c] as i32;
                    *o = cubic_int(t(0), t(1), t(2), t(3), dy) as u8;
                }
            } else {
                let rows = [line(fy - 1), line(fy), line(fy + 1), line(fy + 2)];
                let cols = [col(fx - 1), col(fx), col(fx + 1), col(fx + 2)];
                // The 12 horizontal passes (4 rows x 3 channels) side by side, so the
                // compiler can run them in vector lanes; each lane is PIL's expression.
                let tap = |i: usize| -> [i32; 12] {
                    std::array::from_fn(|l| rows[l / 3][cols[i] + l % 3] as i32)
                };
                let (t0, t1, t2, t3) = (tap(0), tap(1), tap(2), tap(3));
                let v: [f64; 12] =
                    std::array::from_fn(|l| cubic_int(t0[l], t1[l], t2[l], t3[l], dx));
                for (c, o) in out.iter_mut().enumerate() {
                    *o = cubic(v[c], v[3 + c], v[6 + c], v[9 + c], dy) as u8;
                }
            }
        }
    }
}

/// PIL's BICUBIC macro on integer taps (its p terms are exact integer arithmetic).
#[inline]
fn cubic_int(v1: i32, v2: i32, v3: i32, v4: i32, d: f64) -> f64 {
    let p1 = v2 as f64;
    let p2 = (-v1 + v3) as f64;
    let p3 = (2 * (v1 - v2) + v3 - v4) as f64;
    let p4 = (-v1 + v2 - v3 + v4) as f64;
    p1 + d * (p2 + d * (p3 + d * p4))
}

/// PIL's BICUBIC macro on float64 taps.
#[inline]
fn cubic(v1: f64, v2: f64, v3: f64, v4: f64, d: f64) -> f64 {
    let p1 = v2;
    let p2 = -v1 + v3;
    let p3 = 2.0 * (v1 - v2) + v3 - v4;
    let p4 = -v1 + v2 - v3 + v4;
    p1 + d * (p2 + d * (p3 + d * p4))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use serde_json::Value;
    use tch::Tensor;

    use super::*;
    use crate::data::augment::random_resized_crop;
    use crate::data::stats::ks;
    use crate::rng::Purpose;

    /// Runs scripts/ref_augment.py (timm and torchvision in the venv) into a fresh
    /// directory and returns it with the script's manifest.
    fn reference(args: &[&str]) -> (tempfile::TempDir, Value) {
        let repo = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(repo.join(".venv/bin/python"))
            .arg(repo.join("scripts/ref_augment.py"))
            .arg(args[0])
            .arg(dir.path())
            .args(&args[1..])
            .output()
            .expect("run the venv's python (scripts/setup.sh installs timm and torchvision)");
        assert!(
            out.status.success(),
            "reference script failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest = std::fs::read_to_string(dir.path().join("manifest.json")).unwrap();
        (dir, serde_json::from_str(&manifest).unwrap())
    }

    fn npy_u8(path: &Path) -> Vec<u8> {
        Vec::<u8>::try_from(Tensor::read_npy(path).unwrap().flatten(0, -1)).unwrap()
    }

    fn npy_i64(path: &Path) -> Vec<i64> {
        Vec::<i64>::try_from(Tensor::read_npy(path).unwrap().flatten(0, -1)).unwrap()
    }

    fn npy_f64(path: &Path) -> Vec<f64> {
        Vec::<f64>::try_from(Tensor::read_npy(path).unwrap().flatten(0, -1)).unwrap()
    }

    fn kind(name: &str) -> Kind {
        let all = INCREASING.iter().chain(PLAIN.iter());
        *all.into_iter()
            .find(|k| format!("{k:?}") == name)
            .unwrap_or_else(|| panic!("no op {name}"))
    }

    /// The op's arguments in timm's `level_to_arg` form.
    fn args(op: &Op) -> Vec<f64> {
        match *op {
            Op::AutoContrast | Op::Equalize | Op::Invert => vec![],
            Op::Posterize { bits } => vec![bits as f64],
            Op::Solarize { threshold } => vec![threshold as f64],
            Op::SolarizeAdd { add, .. } => vec![add as f64],
            Op::Rotate { degrees: v }
            | Op::Color { factor: v }
            | Op::Contrast { factor: v }
            | Op::Brightness { factor: v }
            | Op::Sharpness { factor: v }
            | Op::ShearX { factor: v }
            | Op::ShearY { factor: v }
            | Op::TranslateXRel { fraction: v }
            | Op::TranslateYRel { fraction: v } => vec![v],
        }
    }

    fn geometric(op: &Op) -> bool {
        matches!(
            op,
            Op::Rotate { .. }
                | Op::ShearX { .. }
                | Op::ShearY { .. }
                | Op::TranslateXRel { .. }
                | Op::TranslateYRel { .. }
        )
    }

    /// Every op of both sets at magnitudes 0, 3, 5.5, 7 and 10 with both signs, on a
    /// 67x45 frame of gradients, edges, a flat patch and noise: the arguments equal
    /// timm's level rules and the frames equal timm's ops on PIL, byte for byte (the
    /// bicubic geometry too: the same float64 expressions in the same order).
    #[test]
    fn ops_match_timm_on_pil() {
        let (dir, manifest) = reference(&["ops", "67", "45"]);
        let (w, h) = (67, 45);
        let image = npy_u8(&dir.path().join("image.npy"));
        assert_eq!(image.len(), w * h * 3);
        let cases = manifest["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 21 * 5 * 2);
        let mut scratch = Scratch::default();
        let mut failures = Vec::new();
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let magnitude = case["magnitude"].as_f64().unwrap();
            let negate = case["negate"].as_bool().unwrap();
            let op = kind(name).resolve(magnitude, negate);
            let want: Vec<f64> = case["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().parse().unwrap())
                .collect();
            if args(&op) != want {
                failures.push(format!(
                    "{name} at {magnitude} negate {negate}: {op:?}, timm {want:?}"
                ));
            }
            let expected = npy_u8(&dir.path().join(case["file"].as_str().unwrap()));
            let mut got = image.clone();
            apply(&[op], &mut got, w, h, &mut scratch);
            let diff: Vec<i32> = got
                .iter()
                .zip(&expected)
                .map(|(a, b)| (*a as i32 - *b as i32).abs())
                .collect();
            let bad = diff.iter().filter(|d| **d != 0).count();
            if bad > 0 {
                failures.push(format!(
                    "{op:?} (geometric {}): {bad} of {} values differ, max {}",
                    geometric(&op),
                    diff.len(),
                    diff.iter().max().unwrap()
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// PIL copies pixels for 180 degrees and, on square frames, for 90 and 270 (0 and
    /// 360 are the frame itself); its general affine path at those angles samples pixel
    /// centres exactly, so both must give the same frame.
    #[test]
    fn right_angle_rotations_move_whole_pixels() {
        let cases = [
            (5, 5, 90.0),
            (5, 5, -90.0),
            (5, 5, 270.0),
            (7, 4, 180.0),
            (7, 4, -180.0),
            (7, 4, 360.0),
            (7, 4, -0.0),
        ];
        for (w, h, deg) in cases {
            let src: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
            let mut fast = src.clone();
            apply(
                &[Op::Rotate { degrees: deg }],
                &mut fast,
                w,
                h,
                &mut Scratch::default(),
            );
            let a = -f64::rem_euclid(deg, 360.0).to_radians();
            let (c, s) = (a.cos().round(), a.sin().round());
            let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
            let m = [c, s, cx - c * cx - s * cy, -s, c, cy + s * cx - c * cy];
            let mut general = src.clone();
            affine(&mut general, w, h, m, &mut Scratch::default());
            assert_eq!(fast, general, "{w}x{h} by {deg}");
        }
        // Counter-clockwise: the top-right pixel becomes the top-left one.
        let src: Vec<u8> = (0..75).map(|i| i as u8).collect();
        let mut out = src.clone();
        apply(
            &[Op::Rotate { degrees: 90.0 }],
            &mut out,
            5,
            5,
            &mut Scratch::default(),
        );
        assert_eq!(out[..3], src[12..15]);
    }

    #[test]
    fn parses_timm_policies() {
        let ra = RandAugment::parse("rand-m7-n4-mstd0.5-inc1").unwrap();
        assert_eq!(
            ra,
            RandAugment {
                magnitude: 7,
                layers: 4,
                prob: 0.5,
                magnitude_std: 0.5,
                magnitude_max: None,
                increasing: true,
            }
        );
        let ra = RandAugment::parse("rand").unwrap();
        assert_eq!((ra.magnitude, ra.layers, ra.prob), (10, 2, 0.5));
        assert_eq!((ra.magnitude_std, ra.increasing), (0.0, false));
        let ra = RandAugment::parse("rand-m9-n3-mstd0.5").unwrap();
        assert_eq!((ra.magnitude, ra.layers, ra.magnitude_std), (9, 3, 0.5));
        let ra = RandAugment::parse("rand-mstd101-m9").unwrap();
        assert_eq!(ra.magnitude_std, f64::INFINITY);
        let ra = RandAugment::parse("rand-m12-mmax15-p0.7-inc0-n1").unwrap();
        assert_eq!(
            (ra.magnitude, ra.magnitude_max, ra.prob),
            (12, Some(15), 0.7)
        );
        assert_eq!((ra.layers, ra.increasing), (1, false));
        for (bad, says) in [
            ("", "start with"),
            ("auto-m9", "start with"),
            ("rand-x5", "unknown key \"x\""),
            ("rand-m9-w3", "unknown key \"w\""),
            ("rand-m", "has no number"),
            ("rand--m9", "has no number"),
            ("rand-m9.5", "\"m\" needs an integer"),
            ("rand-n-1", "has no number"),
            ("rand-p1.5", "probability"),
            ("rand-mstd0.5x", "\"mstd\" needs a number"),
            ("rand-tweights", "transform set"),
            ("rand-m9-m8", "given twice"),
        ] {
            let err = RandAugment::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    /// Our draws of a policy against timm's over 20000 clips each: how many ops a clip
    /// gets, how often each op is drawn, and the clipped magnitude's distribution.
    /// Tolerances are five standard errors of the difference of two samples.
    fn draws_match_timm(spec: &str, seed: u64) {
        const N: usize = 20_000;
        let (dir, manifest) = reference(&["draw", spec, &N.to_string()]);
        let names: Vec<String> = manifest["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let t_op = npy_i64(&dir.path().join("op.npy"));
        let t_mag = npy_f64(&dir.path().join("magnitude.npy"));
        let t_applied = npy_i64(&dir.path().join("applied.npy"));

        let ra = RandAugment::parse(spec).unwrap();
        let set = if ra.increasing { INCREASING } else { PLAIN };
        assert_eq!(
            names,
            set.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>()
        );
        // Our magnitudes come back from the arguments of Rotate (level·30, sign drawn).
        let mut rng = Rng::stream(seed, Purpose::Augment, 0, 0);
        let mut applied = vec![0usize; ra.layers + 1];
        let mut counts = [0usize; 15];
        let mut ours = 0usize;
        let (mut rot, mut negative) = (Vec::new(), 0usize);
        for _ in 0..N {
            let ops = ra.draw(&mut rng);
            applied[ops.len()] += 1;
            ours += ops.len();
            for op in &ops {
                let i = (0..15)
                    .find(|&i| {
                        std::mem::discriminant(&set[i].resolve(5.0, false))
                            == std::mem::discriminant(op)
                    })
                    .unwrap();
                counts[i] += 1;
                if let Op::Rotate { degrees } = op {
                    rot.push(degrees.abs() / 30.0 * 10.0);
                    negative += (*degrees < 0.0) as usize;
                }
            }
        }
        // Ops per clip: Binomial(n, p) in both.
        let mut t_hist = vec![0usize; ra.layers + 1];
        for &a in &t_applied {
            t_hist[a as usize] += 1;
        }
        for k in 0..=ra.layers {
            let (a, b) = (applied[k] as f64 / N as f64, t_hist[k] as f64 / N as f64);
            let se = (2.0 * b.max(1e-4) * (1.0 - b) / N as f64).sqrt();
            assert!(
                (a - b).abs() < 5.0 * se + 1e-3,
                "{spec}: {k} ops {a} vs timm {b}"
            );
        }
        // Each op's share of the applied ops: 1/15 in both.
        let mut t_counts = [0usize; 15];
        for &i in &t_op {
            t_counts[i as usize] += 1;
        }
        for i in 0..15 {
            let a = counts[i] as f64 / ours as f64;
            let b = t_counts[i] as f64 / t_op.len() as f64;
            let p = 1.0 / 15.0;
            let se = (p * (1.0 - p) * (1.0 / ours as f64 + 1.0 / t_op.len() as f64)).sqrt();
            assert!(
                (a - b).abs() < 5.0 * se,
                "{spec}: {} {a} vs timm {b}",
                names[i]
            );
        }
        // The magnitude: mean, standard deviation and the two-sample KS statistic.
        let stats = |v: &[f64]| {
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let s = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
            (m, s)
        };
        let (am, asd) = stats(&rot);
        let (bm, bsd) = stats(&t_mag);
        let se = bsd * (1.0 / rot.len() as f64 + 1.0 / t_mag.len() as f64).sqrt();
        assert!(
            (am - bm).abs() < 5.0 * se + 1e-9,
            "{spec}: mean {am} vs timm {bm}"
        );
        assert!(
            (asd - bsd).abs() < 0.05 * bsd + 1e-9,
            "{spec}: std {asd} vs timm {bsd}"
        );
        let d = ks(&rot, &t_mag);
        // The 0.1% critical value of the two-sample KS statistic.
        let crit =
            1.95 * ((rot.len() + t_mag.len()) as f64 / (rot.len() * t_mag.len()) as f64).sqrt();
        assert!(d < crit, "{spec}: magnitude KS {d} >= {crit}");
        // timm negates with probability 1/2.
        let p = negative as f64 / rot.len() as f64;
        assert!(
            (p - 0.5).abs() < 5.0 * (0.25 / rot.len() as f64).sqrt(),
            "{spec}: {p}"
        );
    }

    #[test]
    fn videomae_policy_draws_match_timm() {
        draws_match_timm("rand-m7-n4-mstd0.5-inc1", 11);
    }

    #[test]
    fn uniform_magnitude_plain_set_draws_match_timm() {
        draws_match_timm("rand-m9-n2-mstd101-p0.7", 12);
    }

    /// `augment::random_resized_crop` for square outputs against torchvision's
    /// `RandomResizedCrop.get_params(scale=(0.08, 1), ratio=(3/4, 4/3))`, 20000 windows
    /// each on a portrait, a landscape and a 4:1 frame: the area fraction and log aspect
    /// of the windows (two-sample KS below its 0.1% critical value, about 0.02; ours are
    /// real-valued where torchvision rounds to whole pixels) and how often ten misses
    /// fall back, and the window they fall back to (the whole frame narrowed to the ratio
    /// range, centred: 133x100 of 400x100; within a pixel, as torchvision rounds). Measured: KS area 0.011 / 0.011 / 0.015,
    /// KS log-aspect 0.013 / 0.009 / 0.013 (bounds 0.0195, 0.0195, 0.0208); fallbacks
    /// 0.04% / 0.06% / 11.98% against torchvision's 0.06% / 0.06% / 12.26%.
    #[test]
    fn random_resized_crop_matches_torchvision() {
        const N: usize = 20_000;
        let sizes = [(180usize, 320usize), (320, 180), (400, 100)];
        let names: Vec<String> = sizes.iter().map(|(w, h)| format!("{w}x{h}")).collect();
        let mut args = vec!["rrc".to_string(), N.to_string()];
        args.extend(names.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (dir, _) = reference(&args);
        for ((w, h), name) in sizes.into_iter().zip(&names) {
            let boxes = npy_i64(&dir.path().join(format!("boxes_{name}.npy")));
            let t_fell = npy_u8(&dir.path().join(format!("fallback_{name}.npy")));
            let t_fallback = t_fell.iter().filter(|&&f| f != 0).count() as f64 / N as f64;
            let area = (w * h) as f64;
            // The drawn windows only: the fallbacks are counted apart.
            let (mut t_frac, mut t_aspect) = (Vec::new(), Vec::new());
            for (b, _) in boxes.chunks_exact(4).zip(&t_fell).filter(|(_, f)| **f == 0) {
                let (bh, bw) = (b[2] as f64, b[3] as f64);
                t_frac.push(bw * bh / area);
                t_aspect.push((bw / bh).ln());
            }
            let mut rng = Rng::stream(3, Purpose::Augment, w as u64, h as u64);
            let (r, wf, hf) = (w as f64 / h as f64, w as f64, h as f64);
            let fallback = match r {
                r if r < 0.75 => (0.0, (hf - wf / 0.75) / 2.0, wf, wf / 0.75),
                r if r > 4.0 / 3.0 => ((wf - hf * (4.0 / 3.0)) / 2.0, 0.0, hf * (4.0 / 3.0), hf),
                _ => (0.0, 0.0, wf, hf),
            };
            if let Some(b) = boxes.chunks_exact(4).zip(&t_fell).find(|(_, f)| **f != 0) {
                let (b, _) = b;
                let t = (b[1] as f64, b[0] as f64, b[3] as f64, b[2] as f64);
                for (a, e) in [
                    (fallback.0, t.0),
                    (fallback.1, t.1),
                    (fallback.2, t.2),
                    (fallback.3, t.3),
                ] {
                    assert!(
                        (a - e).abs() <= 1.0,
                        "{name}: fallback {fallback:?} vs torchvision {t:?}"
                    );
                }
            }
            let (mut frac, mut aspect, mut fell) = (Vec::new(), Vec::new(), 0usize);
            for _ in 0..N {
                let (scale, ratio) = ((0.08, 1.0), (0.75, 4.0 / 3.0));
                let c = random_resized_crop(&mut rng, w, h, 224, 224, scale, ratio, 0.0);
                let (wf, hf) = (w as f64 + 1e-9, h as f64 + 1e-9);
                assert!(c.x >= 0.0 && c.y >= 0.0 && c.x + c.w <= wf && c.y + c.h <= hf);
                if (c.x, c.y, c.w, c.h) == fallback {
                    fell += 1;
                    continue;
                }
                frac.push(c.w * c.h / area);
                aspect.push((c.w / c.h).ln());
            }
            let (n, m) = (frac.len() as f64, t_frac.len() as f64);
            let crit = 1.95 * ((n + m) / (n * m)).sqrt();
            let d_frac = ks(&frac, &t_frac);
            let d_aspect = ks(&aspect, &t_aspect);
            assert!(d_frac < crit, "{name}: area KS {d_frac} >= {crit}");
            assert!(
                d_aspect < crit,
                "{name}: log-aspect KS {d_aspect} >= {crit}"
            );
            let ours = fell as f64 / N as f64;
            let se = (t_fallback.max(1e-4) * 2.0 / N as f64).sqrt();
            assert!(
                (ours - t_fallback).abs() < 5.0 * se + 1e-3,
                "{name}: fallback {ours} vs torchvision {t_fallback}"
            );
        }
    }
}
