//! Synthetic videos whose classes need motion to tell apart: moving and rotating shapes
//! on textured backgrounds, drawn in plain Rust.
//!
//! Owns the class list, the per-video randomness and the renderer, and can write a
//! small sharded dataset of such clips through the shard writer (tests, benchmarks and
//! GPU machines without FFmpeg use it; the demo encodes the same frames as video). A
//! single frame shows the shape (square or triangle) but not its class: whether it
//! moves left or right, turns clockwise or anticlockwise, drifts down slowly or fast
//! only shows across frames. Multimodal sets add a cover (JPEG) and a text per video, and
//! the label is carried by exactly one of video, cover and text: the other two are
//! neutral (a shape that does not move; a cover without stripes; filler words). It
//! never touches the catalog and never decodes video.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{FrameData, SampleInput, SampleMeta, ShardError, ShardWriter, sample_key};
use pmv_core::frame_recipe::Codec;
use pmv_core::util::{sha256_hex, sync_dir};

/// How many distinct classes the generator knows.
pub const MAX_CLASSES: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Square,
    Triangle,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Motion {
    /// Translation in frame sizes per second (x right, y down).
    Move { dx: f64, dy: f64 },
    /// Rotation in radians per second (positive: clockwise on screen).
    Turn(f64),
}

/// The classes, in label order: (name, shape, motion).
const CLASSES: [(&str, Shape, Motion); MAX_CLASSES] = [
    (
        "square_right",
        Shape::Square,
        Motion::Move { dx: 0.4, dy: 0.0 },
    ),
    (
        "square_left",
        Shape::Square,
        Motion::Move { dx: -0.4, dy: 0.0 },
    ),
    ("square_clockwise", Shape::Square, Motion::Turn(2.2)),
    ("square_anticlockwise", Shape::Square, Motion::Turn(-2.2)),
    (
        "triangle_right",
        Shape::Triangle,
        Motion::Move { dx: 0.4, dy: 0.0 },
    ),
    (
        "triangle_left",
        Shape::Triangle,
        Motion::Move { dx: -0.4, dy: 0.0 },
    ),
    ("triangle_clockwise", Shape::Triangle, Motion::Turn(2.2)),
    (
        "triangle_anticlockwise",
        Shape::Triangle,
        Motion::Turn(-2.2),
    ),
    (
        "square_down_slow",
        Shape::Square,
        Motion::Move { dx: 0.0, dy: 0.15 },
    ),
    (
        "square_down_fast",
        Shape::Square,
        Motion::Move { dx: 0.0, dy: 0.6 },
    ),
    (
        "triangle_down_slow",
        Shape::Triangle,
        Motion::Move { dx: 0.0, dy: 0.15 },
    ),
    (
        "triangle_down_fast",
        Shape::Triangle,
        Motion::Move { dx: 0.0, dy: 0.6 },
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("synthetic data: {0}")]
    Invalid(String),
    #[error("synthetic data: {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Shard(#[from] ShardError),
}

/// The names of the first `n` classes (`n` at most [`MAX_CLASSES`]).
pub fn class_names(n: usize) -> Vec<String> {
    CLASSES
        .iter()
        .take(n)
        .map(|(name, ..)| (*name).to_owned())
        .collect()
}

/// A small deterministic generator (SplitMix64) for the per-video draws.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One synthetic video: its class and every random choice that makes it unique.
#[derive(Debug, Clone)]
pub struct SynthVideo {
    pub class: usize,
    shape: Shape,
    motion: Motion,
    seed: u64,
    /// Background colours at the top and the bottom of the frame.
    bg_top: [f64; 3],
    bg_bottom: [f64; 3],
    fg: [f64; 3],
    /// Half the side of the shape, as a fraction of the frame's shorter side.
    size: f64,
    /// Start position, as fractions of the frame.
    x0: f64,
    y0: f64,
    angle0: f64,
    /// Speed multiplier around the class's nominal speed.
    speed: f64,
    /// A static disc that carries no class information.
    distractor: ([f64; 3], f64, f64, f64),
}

impl SynthVideo {
    /// Video `seed` of class `class` (less than [`MAX_CLASSES`]).
    pub fn new(class: usize, seed: u64) -> SynthVideo {
        let (_, shape, motion) = CLASSES[class % MAX_CLASSES];
        // The look depends on the seed alone, so no class differs from another by colour.
        let mut d = Draw(mix(seed ^ 0x005E_ED0F_5A17));
        let dark = d.range(0.0, 1.0) < 0.5;
        let base = if dark {
            d.range(20.0, 90.0)
        } else {
            d.range(150.0, 230.0)
        };
        let tint = |d: &mut Draw| {
            [
                base + d.range(-25.0, 25.0),
                base + d.range(-25.0, 25.0),
                base + d.range(-25.0, 25.0),
            ]
        };
        let bg_top = tint(&mut d);
        let bg_bottom = tint(&mut d);
        // The shape contrasts with the background: light on dark, dark on light, any hue.
        let level = if dark {
            d.range(170.0, 250.0)
        } else {
            d.range(10.0, 80.0)
        };
        let fg = [
            level + d.range(-40.0, 5.0),
            level + d.range(-40.0, 5.0),
            level + d.range(-40.0, 5.0),
        ];
        let distractor_colour = [
            d.range(0.0, 255.0),
            d.range(0.0, 255.0),
            d.range(0.0, 255.0),
        ];
        SynthVideo {
            class,
            shape,
            motion,
            seed,
            bg_top,
            bg_bottom,
            fg,
            size: d.range(0.2, 0.26),
            x0: d.range(0.0, 1.0),
            y0: d.range(0.0, 1.0),
            // Moving shapes stand nearly upright; turning ones start anywhere.
            angle0: match motion {
                Motion::Turn(_) => d.range(0.0, std::f64::consts::TAU),
                Motion::Move { .. } => d.range(-0.15, 0.15),
            },
            speed: d.range(0.85, 1.15),
            distractor: (
                distractor_colour,
                d.range(0.1, 0.9),
                d.range(0.1, 0.9),
                d.range(0.04, 0.08),
            ),
        }
    }

    /// Video `seed` of no class: a shape of either kind that stands still.
    pub fn still(seed: u64) -> SynthVideo {
        let mut v = SynthVideo::new(4 * (seed % 2) as usize, seed);
        v.motion = Motion::Move { dx: 0.0, dy: 0.0 };
        v
    }

    /// Draws the frame at `t` seconds as RGB24 (`height` rows of `width` pixels) into
    /// `out`, which must hold `width * height * 3` bytes.
    pub fn render(&self, t: f64, width: usize, height: usize, out: &mut [u8]) {
        assert_eq!(out.len(), width * height * 3, "frame buffer size");
        let (w, h) = (width as f64, height as f64);
        let short = w.min(h);
        let frame_no = (t * 1000.0).round() as i64 as u64;
        // Background: vertical gradient, static texture, a little noise per frame.
        for y in 0..height {
            let f = y as f64 / (h - 1.0).max(1.0);
            let row: [f64; 3] =
                std::array::from_fn(|c| self.bg_top[c] * (1.0 - f) + self.bg_bottom[c] * f);
            for x in 0..width {
                let texture = (mix(self.seed ^ ((y as u64) << 20) ^ x as u64) & 15) as f64 - 7.5;
                let noise =
                    (mix(self.seed ^ frame_no.rotate_left(40) ^ ((y as u64) << 20) ^ x as u64) & 7)
                        as f64
                        - 3.5;
                let p = (y * width + x) * 3;
                for c in 0..3 {
                    out[p + c] = (row[c] + texture + noise).clamp(0.0, 255.0) as u8;
                }
            }
        }
        let (dc, dx, dy, dr) = self.distractor;
        let reach = dr * short + 1.0;
        let around = (
            dx * w - reach,
            dy * h - reach,
            dx * w + reach,
            dy * h + reach,
        );
        self.fill(out, width, height, dc, around, |px, py| {
            let (u, v) = ((px - dx * w) / short, (py - dy * h) / short);
            u * u + v * v <= dr * dr
        });

        let (mut cx, mut cy, mut angle) = (self.x0 * w, self.y0 * h, self.angle0);
        match self.motion {
            Motion::Move { dx, dy } => {
                cx += dx * self.speed * t * w;
                cy += dy * self.speed * t * h;
            }
            Motion::Turn(rate) => angle += rate * self.speed * t,
        }
        cx = cx.rem_euclid(w);
        cy = cy.rem_euclid(h);
        let half = self.size * short;
        let (sin, cos) = angle.sin_cos();
        let shape = self.shape;
        // The frame wraps around: a shape leaving on one side comes back on the other.
        for ox in [-w, 0.0, w] {
            for oy in [-h, 0.0, h] {
                let (ccx, ccy) = (cx + ox, cy + oy);
                if ccx + 1.5 * half < 0.0
                    || ccx - 1.5 * half > w
                    || ccy + 1.5 * half < 0.0
                    || ccy - 1.5 * half > h
                {
                    continue;
                }
                let reach = 1.5 * half + 1.0;
                let around = (ccx - reach, ccy - reach, ccx + reach, ccy + reach);
                self.fill(out, width, height, self.fg, around, |px, py| {
                    // Into the shape's own frame: unrotate, scale to unit size.
                    let (rx, ry) = (px - ccx, py - ccy);
                    let u = (cos * rx + sin * ry) / half;
                    let v = (-sin * rx + cos * ry) / half;
                    inside(shape, u, v)
                });
            }
        }
    }

    /// Blends `colour` into every pixel of the box `(x0, y0, x1, y1)` by the fraction of
    /// its 4 sub-samples that `covers` accepts (anti-aliased edges).
    #[allow(clippy::too_many_arguments)]
    fn fill(
        &self,
        out: &mut [u8],
        width: usize,
        height: usize,
        colour: [f64; 3],
        (x0, y0, x1, y1): (f64, f64, f64, f64),
        covers: impl Fn(f64, f64) -> bool,
    ) {
        let span = |lo: f64, hi: f64, n: usize| {
            (lo.floor().max(0.0) as usize).min(n)..(hi.ceil().max(0.0) as usize).min(n)
        };
        for y in span(y0, y1, height) {
            for x in span(x0, x1, width) {
                let mut hits = 0;
                for (sx, sy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
                    if covers(x as f64 + sx, y as f64 + sy) {
                        hits += 1;
                    }
                }
                if hits == 0 {
                    continue;
                }
                let a = hits as f64 / 4.0;
                let p = (y * width + x) * 3;
                for c in 0..3 {
                    let v = out[p + c] as f64 * (1.0 - a) + colour[c].clamp(0.0, 255.0) * a;
                    out[p + c] = v.round() as u8;
                }
            }
        }
    }
}

/// Whether (u, v), in units of the shape's half size, lies inside the shape.
fn inside(shape: Shape, u: f64, v: f64) -> bool {
    match shape {
        Shape::Square => u.abs() <= 1.0 && v.abs() <= 1.0,
        Shape::Triangle => {
            // An isosceles triangle pointing up (apex at v = -1.3): a rotation of it is
            // never the same picture, unlike an equilateral one turned by 120 degrees.
            (-1.3..=0.9).contains(&v) && u.abs() <= (v + 1.3) * 0.5
        }
    }
}

/// What [`write_shards`] makes.
#[derive(Debug, Clone, Serialize)]
pub struct SynthSpec {
    /// Number of classes (at most [`MAX_CLASSES`]).
    pub classes: usize,
    /// Videos per class in each split, e.g. `[("train", 40), ("val", 10)]`.
    pub splits: Vec<(String, usize)>,
    /// Frames per clip.
    pub frames: usize,
    /// Frame rate of the sampled timeline.
    pub fps: f64,
    /// Clips stored per video (consecutive windows).
    pub clips: usize,
    pub height: usize,
    pub width: usize,
    pub samples_per_shard: usize,
    pub seed: u64,
    /// How the frames are stored: raw `.frames.npy` or one JPEG per frame.
    pub codec: Codec,
}

impl Default for SynthSpec {
    /// 4 classes, 8 train and 2 val videos per class, one clip of 8 frames of 32×32 at
    /// 15 fps, 16 samples a shard, raw frames.
    fn default() -> Self {
        SynthSpec {
            classes: 4,
            splits: vec![("train".into(), 8), ("val".into(), 2)],
            frames: 8,
            fps: 15.0,
            clips: 1,
            height: 32,
            width: 32,
            samples_per_shard: 16,
            seed: 0,
            codec: Codec::Raw,
        }
    }
}

impl SynthSpec {
    /// The recipe id recorded in every sample (`-jpeg90` at the end for JPEG frames).
    pub fn recipe_id(&self) -> String {
        let codec = match self.codec {
            Codec::Raw => String::new(),
            c => format!("-{}", c.label()),
        };
        format!(
            "synth-{}x{}x{}-k{}-{}fps{codec}",
            self.frames, self.height, self.width, self.clips, self.fps
        )
    }
}

/// The shards one split was written to.
#[derive(Debug, Clone, Serialize)]
pub struct SynthSplit {
    pub split: String,
    pub shards: Vec<PathBuf>,
    pub samples: usize,
}

/// Renders the clips of one video: `(clips, T, H, W, 3)` bytes.
pub fn render_clips(video: &SynthVideo, spec: &SynthSpec) -> Vec<u8> {
    let frame = spec.height * spec.width * 3;
    let mut out = vec![0u8; spec.clips * spec.frames * frame];
    for k in 0..spec.clips {
        for i in 0..spec.frames {
            let t = (k * spec.frames + i) as f64 / spec.fps;
            let at = (k * spec.frames + i) * frame;
            video.render(t, spec.width, spec.height, &mut out[at..at + frame]);
        }
    }
    out
}

/// Which of a multimodal sample's inputs shows its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Carrier {
    Video,
    Cover,
    Text,
}

impl Carrier {
    /// The carrier of sample `j` of a split of `classes` classes: samples cycle through
    /// the classes, and each round of classes through video, cover, text.
    pub fn of(j: usize, classes: usize) -> Carrier {
        match (j / classes.max(1)) % 3 {
            0 => Carrier::Video,
            1 => Carrier::Cover,
            _ => Carrier::Text,
        }
    }
}

/// What a multimodal synthetic set adds: a cover of this size per video, and a text.
#[derive(Debug, Clone, Serialize)]
pub struct MultimodalSynth {
    pub cover_height: usize,
    pub cover_width: usize,
}

/// Class words of the texts: one Chinese and one English word per class (a carrier
/// text holds one of the two).
const WORDS_ZH: [&str; MAX_CLASSES] = [
    "红色", "蓝天", "绿叶", "黄金", "紫藤", "橙汁", "黑夜", "白雪", "银河", "粉笔", "灰尘", "棕熊",
];
const WORDS_EN: [&str; MAX_CLASSES] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima",
];
/// Words of no class.
const FILLER: [&str; 20] = [
    "视频", "拍摄", "城市", "自然", "生活", "风景", "旅行", "音乐", "美丽", "时光", "video",
    "footage", "city", "nature", "life", "travel", "music", "clip", "shot", "scene",
];

/// The text of a sample: filler words, plus the class's Chinese or English word when the
/// text carries the class.
pub fn synth_text(class: Option<usize>, seed: u64) -> String {
    let mut d = Draw(mix(seed ^ 0x7e47));
    let n = 5 + (d.next() % 4) as usize;
    let mut words: Vec<&str> = (0..n)
        .map(|_| FILLER[(d.next() % FILLER.len() as u64) as usize])
        .collect();
    if let Some(c) = class {
        let w = if d.next().is_multiple_of(2) {
            WORDS_ZH[c % MAX_CLASSES]
        } else {
            WORDS_EN[c % MAX_CLASSES]
        };
        let at = (d.next() % (words.len() as u64 + 1)) as usize;
        words.insert(at, w);
    }
    words.join(" ")
}

/// A cover (RGB, `height` rows of `width` pixels): a soft two-colour background with a
/// few blobs; when it carries `class` of `classes`, stripes at an angle of class × 180° /
/// classes over it.
pub fn render_cover(
    class: Option<(usize, usize)>,
    seed: u64,
    width: usize,
    height: usize,
) -> Vec<u8> {
    let mut d = Draw(mix(seed ^ 0xC0FE));
    let a: [f64; 3] = std::array::from_fn(|_| d.range(30.0, 220.0));
    let b: [f64; 3] = std::array::from_fn(|_| d.range(30.0, 220.0));
    let blobs: Vec<(f64, f64, f64)> = (0..3)
        .map(|_| (d.range(0.0, 1.0), d.range(0.0, 1.0), d.range(0.08, 0.2)))
        .collect();
    let stripe: [f64; 3] =
        std::array::from_fn(|_| if d.range(0.0, 1.0) < 0.5 { 20.0 } else { 235.0 });
    let period = d.range(8.0, 12.0);
    let phase = d.range(0.0, 1.0);
    let (w, h) = (width as f64, height as f64);
    let mut out = vec![0u8; width * height * 3];
    for y in 0..height {
        for x in 0..width {
            let (u, v) = (x as f64 / w, y as f64 / h);
            let f = 0.5 + 0.5 * (3.0 * u + 2.0 * v + seed as f64).sin();
            let mut px: [f64; 3] = std::array::from_fn(|c| a[c] * f + b[c] * (1.0 - f));
            for &(bx, by, br) in &blobs {
                if (u - bx).powi(2) + (v - by).powi(2) < br * br {
                    for p in &mut px {
                        *p = 255.0 - *p;
                    }
                }
            }
            if let Some((c, n)) = class {
                let angle = c as f64 * std::f64::consts::PI / n.max(1) as f64;
                let t = (x as f64 * angle.cos() + y as f64 * angle.sin()) / period + phase;
                if t.rem_euclid(1.0) < 0.5 {
                    px = stripe;
                }
            }
            let p = (y * width + x) * 3;
            for c in 0..3 {
                out[p + c] = px[c].clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// `rgb` as a JPEG (quality 90).
pub fn encode_jpeg(rgb: &[u8], width: usize, height: usize) -> Result<Vec<u8>, SynthError> {
    let mut buf = vec![];
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 90)
        .encode(rgb, width as u32, height as u32, image::ColorType::Rgb8)
        .map_err(|e| SynthError::Invalid(format!("JPEG encoding: {e}")))?;
    Ok(buf)
}

/// Writes a synthetic dataset under `dir`: `<split>/<split>-NNNNNN.tar` shards (samples
/// of all classes interleaved, one label each) and `classes.txt`. Each shard is written to
/// a temporary name and renamed into place once complete.
pub fn write_shards(dir: &Path, spec: &SynthSpec) -> Result<Vec<SynthSplit>, SynthError> {
    write_shards_with(dir, spec, None)
}

/// [`write_shards`], with a cover (`.jpg`) and a text (`.txt`) per sample when
/// `multimodal` is given: sample j's class shows in its video, cover or text only
/// ([`Carrier::of`]); its `.json` `extra` says which (`"carrier"`).
pub fn write_shards_with(
    dir: &Path,
    spec: &SynthSpec,
    multimodal: Option<&MultimodalSynth>,
) -> Result<Vec<SynthSplit>, SynthError> {
    if spec.classes == 0 || spec.classes > MAX_CLASSES {
        return Err(SynthError::Invalid(format!(
            "{} classes asked for; the generator has 1 to {MAX_CLASSES}",
            spec.classes
        )));
    }
    if spec.frames == 0 || spec.clips == 0 || spec.height < 8 || spec.width < 8 {
        return Err(SynthError::Invalid(format!(
            "clips of {} x {} frames of {}x{} pixels are too small",
            spec.clips, spec.frames, spec.height, spec.width
        )));
    }
    spec.codec
        .validate()
        .map_err(|e| SynthError::Invalid(e.to_string()))?;
    if spec.samples_per_shard == 0 || spec.fps <= 0.0 {
        return Err(SynthError::Invalid(
            "samples per shard and fps must be positive".into(),
        ));
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SynthError::Io { path, source }
    };
    fs_err::create_dir_all(dir).map_err(io(dir))?;
    let names = class_names(spec.classes).join("\n") + "\n";
    let classes_path = dir.join("classes.txt");
    pmv_core::util::write_atomic(&classes_path, names.as_bytes()).map_err(io(&classes_path))?;
    let recipe = spec.recipe_id();
    let shape = [spec.clips, spec.frames, spec.height, spec.width, 3];
    let mut out = vec![];
    for (split_no, (split, per_class)) in spec.splits.iter().enumerate() {
        let split_dir = dir.join(split);
        fs_err::create_dir_all(&split_dir).map_err(io(&split_dir))?;
        let total = per_class * spec.classes;
        let mut shards = vec![];
        let mut i = 0;
        while i < total {
            let n = spec.samples_per_shard.min(total - i);
            let path = split_dir.join(format!("{split}-{:06}.tar", shards.len()));
            let tmp = split_dir.join(format!(".{split}-{:06}.tar.tmp", shards.len()));
            let file = fs_err::File::create(&tmp).map_err(io(&tmp))?;
            let mut w = ShardWriter::new(BufWriter::with_capacity(1 << 20, file)).with_path(&tmp);
            for j in i..i + n {
                let class = j % spec.classes;
                let seed = mix(spec.seed ^ ((split_no as u64) << 56) ^ j as u64);
                let carrier = multimodal.map(|_| Carrier::of(j, spec.classes));
                let video = match carrier {
                    None | Some(Carrier::Video) => SynthVideo::new(class, seed),
                    Some(_) => SynthVideo::still(seed),
                };
                let (jpg, txt) = match multimodal {
                    Some(m) => {
                        let shown =
                            (carrier == Some(Carrier::Cover)).then_some((class, spec.classes));
                        let rgb = render_cover(shown, seed, m.cover_width, m.cover_height);
                        let jpg = encode_jpeg(&rgb, m.cover_width, m.cover_height)?;
                        let said = (carrier == Some(Carrier::Text)).then_some(class);
                        (Some(jpg), Some(synth_text(said, seed)))
                    }
                    None => (None, None),
                };
                let frames = render_clips(&video, spec);
                let id = format!("synth-{split}-{j:06}");
                let meta = SampleMeta {
                    id: id.clone(),
                    dataset: "synth".into(),
                    labels: vec![class as u32],
                    split: split.clone(),
                    recipe: recipe.clone(),
                    source: None,
                    sha256: sha256_hex(&frames),
                    size: frames.len() as u64,
                    duration_s: Some((spec.clips * spec.frames) as f64 / spec.fps),
                    fps: Some(spec.fps),
                    width: spec.width as u32,
                    height: spec.height as u32,
                    frame_indices: (0..spec.clips)
                        .map(|k| {
                            (0..spec.frames)
                                .map(|f| (k * spec.frames + f) as i64)
                                .collect()
                        })
                        .collect(),
                    extra: [("synthetic".to_owned(), serde_json::Value::Bool(true))]
                        .into_iter()
                        .chain(carrier.map(|c| {
                            (
                                "carrier".to_owned(),
                                serde_json::to_value(c).unwrap_or_default(),
                            )
                        }))
                        .collect(),
                };
                let jpegs = match spec.codec {
                    Codec::Raw => vec![],
                    Codec::Jpeg { quality } => crate::codec::encode_frames(&frames, shape, quality)
                        .map_err(SynthError::Invalid)?,
                };
                w.append(&SampleInput {
                    key: &sample_key(&id),
                    shape,
                    frames: match spec.codec {
                        Codec::Raw => FrameData::Raw(&frames),
                        Codec::Jpeg { quality } => FrameData::Jpeg {
                            quality,
                            frames: &jpegs,
                        },
                    },
                    label: Some(class as u32),
                    meta: &meta,
                    jpg: jpg.as_deref(),
                    txt: txt.as_deref(),
                })?;
            }
            let (buf, _) = w.finish()?;
            let file = buf.into_inner().map_err(|e| SynthError::Io {
                path: tmp.clone(),
                source: e.into_error(),
            })?;
            file.sync_all().map_err(io(&tmp))?;
            drop(file);
            fs_err::rename(&tmp, &path).map_err(io(&path))?;
            shards.push(path);
            i += n;
        }
        sync_dir(&split_dir).map_err(io(&split_dir))?;
        out.push(SynthSplit {
            split: split.clone(),
            shards,
            samples: total,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(v: &SynthVideo, t: f64) -> Vec<u8> {
        let mut out = vec![0u8; 32 * 24 * 3];
        v.render(t, 24, 32, &mut out);
        out
    }

    #[test]
    fn videos_are_deterministic_and_move() {
        let a = SynthVideo::new(0, 7);
        assert_eq!(frames(&a, 0.3), frames(&SynthVideo::new(0, 7), 0.3));
        assert_ne!(frames(&a, 0.0), frames(&a, 0.5), "the shape moves");
        assert_ne!(frames(&a, 0.0), frames(&SynthVideo::new(0, 8), 0.0));
        let turning = SynthVideo::new(2, 3);
        assert_ne!(frames(&turning, 0.0), frames(&turning, 0.2));
    }

    #[test]
    fn jpeg_synth_shards_decode_close_to_the_rendered_frames() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SynthSpec {
            classes: 2,
            splits: vec![("train".into(), 1)],
            frames: 3,
            clips: 2,
            height: 40,
            width: 56,
            codec: Codec::Jpeg { quality: 90 },
            ..Default::default()
        };
        assert_eq!(spec.recipe_id(), "synth-3x40x56-k2-15fps-jpeg90");
        let out = write_shards(dir.path(), &spec).unwrap();
        let r = crate::ShardReader::open(&out[0].shards[0]).unwrap();
        assert_eq!(r.len(), 2);
        r.check_frames().unwrap();
        let mut buf = vec![];
        for i in 0..2 {
            let s = r.sample(i).unwrap();
            assert_eq!(s.shape, [2, 3, 40, 56, 3]);
            assert_eq!(s.codec, Codec::Jpeg { quality: 90 });
            let class = s.label.unwrap() as usize;
            let seed = mix(spec.seed ^ i as u64);
            let want = render_clips(&SynthVideo::new(class, seed), &spec);
            let clip = want.len() / 2;
            for k in 0..2 {
                let got = s.clip_pixels(k, &mut buf).unwrap();
                let db = crate::codec::tests::psnr(got, &want[k * clip..(k + 1) * clip]);
                // Flat shapes with hard edges on noise-free colour: JPEG keeps well
                // above 30 dB.
                assert!(db >= 30.0, "sample {i} clip {k}: {db:.1} dB");
            }
        }
        let bad = SynthSpec {
            codec: Codec::Jpeg { quality: 0 },
            ..spec
        };
        assert!(write_shards(dir.path(), &bad).is_err());
    }

    #[test]
    fn classes_differ_only_in_shape_and_motion() {
        // The same seed draws the same look and start; only the motion tells them apart.
        let right = SynthVideo::new(0, 11);
        let left = SynthVideo::new(1, 11);
        assert_eq!(frames(&right, 0.0), frames(&left, 0.0));
        assert_ne!(frames(&right, 0.3), frames(&left, 0.3));
        let slow = SynthVideo::new(8, 5);
        let fast = SynthVideo::new(9, 5);
        assert_eq!(frames(&slow, 0.0), frames(&fast, 0.0));
        assert_ne!(frames(&slow, 0.5), frames(&fast, 0.5));
        assert_eq!(class_names(2), vec!["square_right", "square_left"]);
        assert_eq!(class_names(99).len(), MAX_CLASSES);
    }
}
