//! Frame recipes: how a video becomes a fixed-shape sample (frames, temporal sampling,
//! clips, fps normalisation, output size, fit, scaling filter and the frame codec), their
//! built-in names and their stable ids.
//!
//! "Recipe" alone means this in the shard stage, the catalog (`recipes` table), shard
//! paths and `--recipe`; the trainer's TOML files of options are *recipe files*
//! (`pmv_train::recipe_file`) and the options a training run resolved are its
//! *hyper-parameters* (`pmv_train::run::HyperParams`).
//!
//! A recipe's id is the first 12 hex digits of the SHA-256 of its canonical parameters
//! (the JSON of [`FrameParams`], fields in declaration order), so the same parameters
//! always give the same id whatever they are called. This module owns that vocabulary
//! and its validation; it never decodes and never touches the catalog (the shard stage
//! stores recipes in the `recipes` table). It compiles in every build: readers of shards
//! need it without FFmpeg.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Version of the sampling and geometry rules. Part of every recipe id, so a change
/// of the rules can never mix old and new samples under one id.
pub const RULES_VERSION: u32 = 1;

/// The default fps of the normalised timeline.
pub const DEFAULT_FPS: f64 = 30.0;

/// How T frames are chosen from a clip window.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SampleMode {
    /// T frames `stride` apart on the normalised timeline (VideoMAE, MViT).
    Stride,
    /// TSN: the video cut into T equal segments, one frame from each.
    Segments,
}

/// How the source picture is fitted to the output H×W.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Fit {
    /// Scale (keeping the aspect ratio) until the picture covers H×W, centre crop.
    Cover,
    /// Scale until the whole picture fits in H×W, centre it, pad with black.
    Contain,
    /// Scale the short side to `short_side` (default min(H, W)), centre crop H×W; if
    /// that does not cover H×W, scale up until it does.
    ShortSide,
}

/// The swscale filter used to resize.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    Bicubic,
    Area,
    Bilinear,
    Lanczos,
}

/// How a sample's frames are stored in a shard.
///
/// Serialised as `{"kind":"raw"}` or `{"kind":"jpeg","quality":90}`; [`FrameParams`]
/// leaves a raw codec out of its JSON, so the ids of recipes made before codecs
/// existed stay what they were.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Codec {
    /// One uint8 `(clips, T, H, W, 3)` NumPy array (`<key>.frames.npy`), mapped
    /// without a copy by readers.
    #[default]
    Raw,
    /// One baseline JPEG per frame (`<key>.c{KK}f{TTT}.jpg`, 4:2:0), libjpeg-turbo
    /// quality 1..=100.
    Jpeg { quality: u8 },
}

/// The `--codec` values: the codec without its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CodecKind {
    Raw,
    Jpeg,
}

/// The JPEG quality `--codec jpeg` uses when `--jpeg-quality` is not given.
pub const DEFAULT_JPEG_QUALITY: u8 = 90;

impl Codec {
    /// Whether this is [`Codec::Raw`] (what recipe JSON leaves out).
    pub fn is_raw(&self) -> bool {
        matches!(self, Codec::Raw)
    }

    /// `raw`, `jpeg90`.
    pub fn label(&self) -> String {
        match self {
            Codec::Raw => "raw".into(),
            Codec::Jpeg { quality } => format!("jpeg{quality}"),
        }
    }

    /// Checks the codec's parameters.
    pub fn validate(&self) -> Result<(), FrameRecipeError> {
        match self {
            Codec::Raw => Ok(()),
            Codec::Jpeg { quality } if (1..=100).contains(quality) => Ok(()),
            Codec::Jpeg { quality } => Err(FrameRecipeError(format!(
                "JPEG quality must be 1..=100, not {quality}"
            ))),
        }
    }
}

impl Fit {
    pub fn as_str(self) -> &'static str {
        match self {
            Fit::Cover => "cover",
            Fit::Contain => "contain",
            Fit::ShortSide => "short-side",
        }
    }
}

impl Filter {
    pub fn as_str(self) -> &'static str {
        match self {
            Filter::Bicubic => "bicubic",
            Filter::Area => "area",
            Filter::Bilinear => "bilinear",
            Filter::Lanczos => "lanczos",
        }
    }
}

/// The canonical parameters of a recipe; their JSON is hashed into the id.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FrameParams {
    /// Version of the sampling and geometry rules ([`RULES_VERSION`]).
    pub rules: u32,
    /// T: frames per clip.
    pub frames: u32,
    pub sampling: SampleMode,
    /// Frames between samples on the normalised timeline (`stride` mode only).
    pub stride: Option<u32>,
    /// K: clips per video, evenly spread (K = 1: the centre of the video).
    pub clips: u32,
    /// Frame rate of the normalised timeline the stride counts on.
    pub fps: f64,
    /// Output height and width, in pixels (H×W).
    pub height: u32,
    pub width: u32,
    pub fit: Fit,
    /// `short-side` only: the length the short side is scaled to.
    pub short_side: Option<u32>,
    pub filter: Filter,
    /// How the frames are stored; left out of the JSON (and so of the id) when raw.
    #[serde(default, skip_serializing_if = "Codec::is_raw")]
    pub codec: Codec,
}

/// A recipe: parameters and the name its shards' directory carries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FrameRecipe {
    pub name: String,
    pub params: FrameParams,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("recipe: {0}")]
pub struct FrameRecipeError(pub String);

/// Limits that keep a sample's size sane (one sample is held in memory per worker).
const MAX_FRAMES: u32 = 1024;
const MAX_CLIPS: u32 = 64;
const MAX_SIDE: u32 = 4096;
const MAX_SAMPLE_BYTES: u64 = 1 << 30;

impl FrameParams {
    /// Checks every parameter; the error says which one is wrong and why.
    pub fn validate(&self) -> Result<(), FrameRecipeError> {
        let err = |m: String| Err(FrameRecipeError(m));
        if self.rules != RULES_VERSION {
            return err(format!(
                "rules version {} is not the one this pmv-data implements ({RULES_VERSION})",
                self.rules
            ));
        }
        if self.frames == 0 || self.frames > MAX_FRAMES {
            return err(format!(
                "frames must be 1..={MAX_FRAMES}, not {}",
                self.frames
            ));
        }
        match (self.sampling, self.stride) {
            (SampleMode::Stride, Some(s)) if (1..=10_000).contains(&s) => {}
            (SampleMode::Stride, Some(s)) => {
                return err(format!("stride must be 1..=10000, not {s}"));
            }
            (SampleMode::Stride, None) => return err("stride sampling needs a stride".into()),
            (SampleMode::Segments, None) => {}
            (SampleMode::Segments, Some(_)) => {
                return err("segments sampling takes no stride".into());
            }
        }
        if self.clips == 0 || self.clips > MAX_CLIPS {
            return err(format!("clips must be 1..={MAX_CLIPS}, not {}", self.clips));
        }
        if !(self.fps.is_finite() && self.fps >= 1.0 && self.fps <= 1000.0) {
            return err(format!("fps must be 1..=1000, not {}", self.fps));
        }
        for (name, v) in [("height", self.height), ("width", self.width)] {
            if !(8..=MAX_SIDE).contains(&v) {
                return err(format!("{name} must be 8..={MAX_SIDE}, not {v}"));
            }
        }
        match (self.fit, self.short_side) {
            (Fit::ShortSide, Some(s)) if (8..=MAX_SIDE).contains(&s) => {}
            (Fit::ShortSide, Some(s)) => {
                return err(format!("short side must be 8..={MAX_SIDE}, not {s}"));
            }
            (Fit::ShortSide, None) => return err("short-side fit needs a short side".into()),
            (_, Some(_)) => return err("only the short-side fit takes a short side".into()),
            (_, None) => {}
        }
        self.codec.validate()?;
        if self.sample_bytes() > MAX_SAMPLE_BYTES {
            return err(format!(
                "one sample would hold {} bytes (clips × frames × H × W × 3), more than 1 GiB",
                self.sample_bytes()
            ));
        }
        Ok(())
    }

    /// `(clips, T, H, W, 3)`.
    pub fn shape(&self) -> [usize; 5] {
        [
            self.clips as usize,
            self.frames as usize,
            self.height as usize,
            self.width as usize,
            3,
        ]
    }

    /// Bytes of one sample's decoded frame array (what a reader hands out; a JPEG
    /// sample's shard bytes are fewer).
    pub fn sample_bytes(&self) -> u64 {
        self.clips as u64 * self.frames as u64 * self.height as u64 * self.width as u64 * 3
    }

    /// The canonical JSON the id is computed from.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("recipe parameters always serialise")
    }

    /// The stable id: 12 hex digits of the SHA-256 of [`Self::canonical_json`].
    pub fn id(&self) -> String {
        crate::util::sha256_hex(self.canonical_json().as_bytes())[..12].to_owned()
    }

    /// A name that says what the parameters are, for recipes given by flags:
    /// `16x4-k5-224x224-ss224`, `8seg-288x192-cover-25fps`, `16x5-k10-568x320-ss320-jpeg90`.
    pub fn describe(&self) -> String {
        let mut s = match (self.sampling, self.stride) {
            (SampleMode::Stride, Some(st)) => format!("{}x{st}", self.frames),
            _ => format!("{}seg", self.frames),
        };
        if self.clips != 1 {
            s.push_str(&format!("-k{}", self.clips));
        }
        s.push_str(&format!("-{}x{}", self.height, self.width));
        match (self.fit, self.short_side) {
            (Fit::ShortSide, Some(n)) => s.push_str(&format!("-ss{n}")),
            (fit, _) => {
                s.push('-');
                s.push_str(fit.as_str());
            }
        }
        if self.fps != DEFAULT_FPS {
            s.push_str(&format!("-{}fps", fmt_num(self.fps)));
        }
        if self.filter != Filter::Bicubic {
            s.push('-');
            s.push_str(self.filter.as_str());
        }
        if !self.codec.is_raw() {
            s.push('-');
            s.push_str(&self.codec.label());
        }
        s
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}").replace('.', "p")
    }
}

fn stride(
    frames: u32,
    stride: u32,
    height: u32,
    width: u32,
    fit: Fit,
    short: Option<u32>,
) -> FrameParams {
    FrameParams {
        rules: RULES_VERSION,
        frames,
        sampling: SampleMode::Stride,
        stride: Some(stride),
        clips: 1,
        fps: DEFAULT_FPS,
        height,
        width,
        fit,
        short_side: short,
        filter: Filter::Bicubic,
        codec: Codec::Raw,
    }
}

/// A stride recipe with room for augmentation and multi-view testing: K clips,
/// short-side fit, stored as JPEG at [`DEFAULT_JPEG_QUALITY`].
fn with_room(frames: u32, stride_: u32, clips: u32, (h, w): (u32, u32), short: u32) -> FrameParams {
    FrameParams {
        clips,
        codec: Codec::Jpeg {
            quality: DEFAULT_JPEG_QUALITY,
        },
        ..stride(frames, stride_, h, w, Fit::ShortSide, Some(short))
    }
}

/// The built-in recipes, by name.
pub fn builtins() -> Vec<FrameRecipe> {
    let r = |name: &str, params: FrameParams| FrameRecipe {
        name: name.to_owned(),
        params,
    };
    vec![
        // VideoMAE / UniFormer: 16 frames 4 apart at 30 fps, short side 224, centre 224².
        r(
            "videomae-16x4-224",
            stride(16, 4, 224, 224, Fit::ShortSide, Some(224)),
        ),
        // Portrait-first: 288×192 (H×W) covering the picture.
        r(
            "pmv-portrait-16x4-288x192",
            stride(16, 4, 288, 192, Fit::Cover, None),
        ),
        // The PMV-400 baselines: 16 frames 5 apart, short side 256 → 256×192 crop, and
        // short side 224 → 288×192 crop.
        r(
            "pmv-16x5-256x192",
            stride(16, 5, 256, 192, Fit::ShortSide, Some(256)),
        ),
        r(
            "pmv-16x5-288x192",
            stride(16, 5, 288, 192, Fit::ShortSide, Some(224)),
        ),
        // TSN: 8 segments, one frame each, short side 224, centre 224².
        r(
            "tsn-8seg-224",
            FrameParams {
                rules: RULES_VERSION,
                frames: 8,
                sampling: SampleMode::Segments,
                stride: None,
                clips: 1,
                fps: DEFAULT_FPS,
                height: 224,
                width: 224,
                fit: Fit::ShortSide,
                short_side: Some(224),
                filter: Filter::Bicubic,
                codec: Codec::Raw,
            },
        ),
        // Room for train-time crops and jitter and for K-clip × 3-crop testing, as
        // JPEG. VideoMAE on landscape Kinetics: short side 256, 16:9 kept (256×456).
        r(
            "videomae-16x4-s256-k5-jpeg",
            with_room(16, 4, 5, (256, 456), 256),
        ),
        // Portrait PMV at 9:16 (568×320): X3D-M (short-side jitter up to 320, 10×3
        // test views) at stride 5, MViTv2-S and UniFormer-S at stride 4.
        r(
            "pmv-16x5-s320-k10-jpeg",
            with_room(16, 5, 10, (568, 320), 320),
        ),
        r(
            "pmv-16x4-s320-k10-jpeg",
            with_room(16, 4, 10, (568, 320), 320),
        ),
    ]
}

/// The built-in recipe called `name`.
pub fn builtin(name: &str) -> Option<FrameRecipe> {
    builtins().into_iter().find(|r| r.name == name)
}

/// Changes to a recipe given on the command line. Every field left `None` keeps the
/// base recipe's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub frames: Option<u32>,
    pub stride: Option<u32>,
    pub segments: bool,
    pub clips: Option<u32>,
    pub fps: Option<f64>,
    /// (H, W)
    pub size: Option<(u32, u32)>,
    pub fit: Option<Fit>,
    pub short_side: Option<u32>,
    pub filter: Option<Filter>,
    /// `--codec`: the storage codec's kind.
    pub codec: Option<CodecKind>,
    /// `--jpeg-quality`: with a JPEG codec (given or the base recipe's).
    pub jpeg_quality: Option<u8>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.frames.is_none()
            && self.stride.is_none()
            && !self.segments
            && self.clips.is_none()
            && self.fps.is_none()
            && self.size.is_none()
            && self.fit.is_none()
            && self.short_side.is_none()
            && self.filter.is_none()
            && self.codec.is_none()
            && self.jpeg_quality.is_none()
    }
}

/// Resolves `--recipe NAME` and the flags that change it (or build a recipe without a
/// base) into a validated recipe. A recipe whose parameters equal a built-in's takes
/// the built-in's name, so the same samples never live under two names.
pub fn resolve(base: Option<&str>, o: &Overrides) -> Result<FrameRecipe, FrameRecipeError> {
    let base = match base {
        Some(name) => Some(builtin(name).ok_or_else(|| {
            FrameRecipeError(format!(
                "no recipe called {name:?}; built-in: {}",
                builtins()
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?),
        None => None,
    };
    if o.stride.is_some() && o.segments {
        return Err(FrameRecipeError(
            "--stride and --segments exclude each other".into(),
        ));
    }
    let mut p = match &base {
        Some(b) => b.params.clone(),
        None => {
            let frames = o.frames.ok_or_else(|| {
                FrameRecipeError(
                    "give --recipe NAME, or --frames with --stride or --segments".into(),
                )
            })?;
            if o.stride.is_none() && !o.segments {
                return Err(FrameRecipeError(
                    "--frames needs --stride S or --segments".into(),
                ));
            }
            let (h, w) = o
                .size
                .ok_or_else(|| FrameRecipeError("--size HxW is required".into()))?;
            FrameParams {
                rules: RULES_VERSION,
                frames,
                sampling: SampleMode::Stride,
                stride: Some(1),
                clips: 1,
                fps: DEFAULT_FPS,
                height: h,
                width: w,
                fit: Fit::ShortSide,
                short_side: None,
                filter: Filter::Bicubic,
                codec: Codec::Raw,
            }
        }
    };
    if let Some(f) = o.frames {
        p.frames = f;
    }
    if let Some(s) = o.stride {
        p.sampling = SampleMode::Stride;
        p.stride = Some(s);
    }
    if o.segments {
        p.sampling = SampleMode::Segments;
        p.stride = None;
    }
    if let Some(k) = o.clips {
        p.clips = k;
    }
    if let Some(f) = o.fps {
        p.fps = f;
    }
    if let Some((h, w)) = o.size {
        p.height = h;
        p.width = w;
    }
    if let Some(f) = o.filter {
        p.filter = f;
    }
    let kind = o.codec.unwrap_or(match p.codec {
        Codec::Raw => CodecKind::Raw,
        Codec::Jpeg { .. } => CodecKind::Jpeg,
    });
    p.codec = match (kind, o.jpeg_quality, p.codec) {
        (CodecKind::Raw, None, _) => Codec::Raw,
        (CodecKind::Raw, Some(_), _) => {
            return Err(FrameRecipeError(
                "--jpeg-quality applies to --codec jpeg, not raw".into(),
            ));
        }
        (CodecKind::Jpeg, Some(quality), _) => Codec::Jpeg { quality },
        (CodecKind::Jpeg, None, Codec::Jpeg { quality }) => Codec::Jpeg { quality },
        (CodecKind::Jpeg, None, Codec::Raw) => Codec::Jpeg {
            quality: DEFAULT_JPEG_QUALITY,
        },
    };
    let size_changed = o.size.is_some();
    match o.fit.unwrap_or(p.fit) {
        Fit::ShortSide => {
            p.fit = Fit::ShortSide;
            p.short_side = match (o.short_side, p.short_side) {
                (Some(s), _) => Some(s),
                // A new size without a short side: the crop's own short side.
                (None, Some(_)) if !size_changed => p.short_side,
                _ => Some(p.height.min(p.width)),
            };
        }
        fit => {
            if o.short_side.is_some() {
                return Err(FrameRecipeError(format!(
                    "--short-side applies to --fit short-side, not {}",
                    fit.as_str()
                )));
            }
            p.fit = fit;
            p.short_side = None;
        }
    }
    p.validate()?;
    if let Some(b) = builtins().into_iter().find(|b| b.params == p) {
        return Ok(b);
    }
    Ok(FrameRecipe {
        name: p.describe(),
        params: p,
    })
}

/// Parses `HxW` (also `H×W` and `H,W`): height first, as the shapes are.
pub fn parse_size(s: &str) -> Result<(u32, u32), FrameRecipeError> {
    let bad = || FrameRecipeError(format!("size {s:?}: expected HxW, e.g. 224x224 or 288x192"));
    let (h, w) = s.split_once(['x', 'X', '×', ',']).ok_or_else(bad)?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    Ok((h, w))
}

impl FrameRecipe {
    pub fn id(&self) -> String {
        self.params.id()
    }

    /// The directory name of this recipe's shards: `<name>-<id>`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.name, self.id())
    }
}

impl fmt::Display for FrameRecipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.params;
        write!(f, "{} ({}): {} frames", self.name, self.id(), p.frames)?;
        match p.stride {
            Some(s) => write!(f, " stride {s}")?,
            None => write!(f, " in segments")?,
        }
        write!(
            f,
            " at {} fps, {} clip{}, {}x{} {}",
            fmt_num(p.fps).replace('p', "."),
            p.clips,
            if p.clips == 1 { "" } else { "s" },
            p.height,
            p.width,
            p.fit.as_str()
        )?;
        if let Some(s) = p.short_side {
            write!(f, " {s}")?;
        }
        write!(f, ", {}", p.filter.as_str())?;
        if !p.codec.is_raw() {
            write!(f, ", {}", p.codec.label())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_valid_and_have_distinct_stable_ids() {
        let all = builtins();
        let mut ids: Vec<String> = all.iter().map(|r| r.id()).collect();
        for r in &all {
            r.params.validate().unwrap();
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all.len());
        let v = builtin("videomae-16x4-224").unwrap();
        assert_eq!(v.params.shape(), [1, 16, 224, 224, 3]);
        // The canonical JSON (and so the id) must never drift: a changed id would
        // re-shard every dataset.
        assert_eq!(
            v.params.canonical_json(),
            r#"{"rules":1,"frames":16,"sampling":"stride","stride":4,"clips":1,"fps":30.0,"height":224,"width":224,"fit":"short-side","short_side":224,"filter":"bicubic"}"#
        );
        assert_eq!(
            v.id(),
            crate::util::sha256_hex(v.params.canonical_json().as_bytes())[..12]
        );
        let p = builtin("pmv-portrait-16x4-288x192").unwrap();
        assert_eq!(p.params.shape(), [1, 16, 288, 192, 3]);
        assert_eq!(p.params.fit, Fit::Cover);
    }

    #[test]
    fn codecs_keep_old_ids_and_name_new_ones() {
        // The ids the built-ins had before recipes had a codec: a raw codec is left out
        // of the canonical JSON, so they must never change.
        for (name, id) in [
            ("videomae-16x4-224", "fed50da160a8"),
            ("pmv-portrait-16x4-288x192", "62521c8006bf"),
            ("pmv-16x5-256x192", "19490db828f2"),
            ("pmv-16x5-288x192", "503095c6cf45"),
            ("tsn-8seg-224", "9eed7d4a5d5b"),
        ] {
            let r = builtin(name).unwrap();
            assert_eq!(r.id(), id, "{name}");
            assert!(!r.params.canonical_json().contains("codec"), "{name}");
        }
        // JSON without a codec (the catalog's older recipes) reads as raw.
        let old: FrameParams = serde_json::from_str(
            r#"{"rules":1,"frames":16,"sampling":"stride","stride":4,"clips":1,"fps":30.0,"height":224,"width":224,"fit":"short-side","short_side":224,"filter":"bicubic"}"#,
        )
        .unwrap();
        assert_eq!(old, builtin("videomae-16x4-224").unwrap().params);

        for (name, id) in [
            ("videomae-16x4-s256-k5-jpeg", "f7b4e58aa7c1"),
            ("pmv-16x5-s320-k10-jpeg", "9b7159d89362"),
            ("pmv-16x4-s320-k10-jpeg", "c5ee96e966d6"),
        ] {
            assert_eq!(builtin(name).unwrap().id(), id, "{name}");
        }
        let v = builtin("videomae-16x4-s256-k5-jpeg").unwrap();
        assert_eq!(v.params.shape(), [5, 16, 256, 456, 3]);
        assert_eq!(v.params.short_side, Some(256));
        assert!(
            v.params
                .canonical_json()
                .ends_with(r#""filter":"bicubic","codec":{"kind":"jpeg","quality":90}}"#),
            "{}",
            v.params.canonical_json()
        );
        for (name, stride) in [("pmv-16x5-s320-k10-jpeg", 5), ("pmv-16x4-s320-k10-jpeg", 4)] {
            let p = builtin(name).unwrap().params;
            assert_eq!(p.shape(), [10, 16, 568, 320, 3], "{name}");
            assert_eq!((p.stride, p.short_side), (Some(stride), Some(320)));
            assert_eq!(p.codec, Codec::Jpeg { quality: 90 });
        }

        // --codec jpeg on a raw recipe: quality 90 and a name that says so.
        let o = Overrides {
            codec: Some(CodecKind::Jpeg),
            ..Default::default()
        };
        let r = resolve(Some("videomae-16x4-224"), &o).unwrap();
        assert_eq!(r.params.codec, Codec::Jpeg { quality: 90 });
        assert_eq!(r.name, "16x4-224x224-ss224-jpeg90");
        assert_ne!(r.id(), "fed50da160a8");
        assert!(r.to_string().ends_with(", bicubic, jpeg90"), "{r}");
        // --jpeg-quality on a JPEG recipe keeps the codec; --codec raw drops it, and
        // spelling out a built-in gets its name back.
        let o = Overrides {
            jpeg_quality: Some(75),
            ..Default::default()
        };
        let r = resolve(Some("pmv-16x5-s320-k10-jpeg"), &o).unwrap();
        assert_eq!(r.params.codec, Codec::Jpeg { quality: 75 });
        assert_eq!(r.name, "16x5-k10-568x320-ss320-jpeg75");
        let o = Overrides {
            codec: Some(CodecKind::Jpeg),
            jpeg_quality: Some(90),
            ..Default::default()
        };
        assert_eq!(
            resolve(Some("pmv-16x5-s320-k10-jpeg"), &o).unwrap().name,
            "pmv-16x5-s320-k10-jpeg"
        );
        let o = Overrides {
            codec: Some(CodecKind::Raw),
            clips: Some(1),
            size: Some((224, 224)),
            stride: Some(4),
            short_side: Some(224),
            ..Default::default()
        };
        assert_eq!(
            resolve(Some("videomae-16x4-s256-k5-jpeg"), &o)
                .unwrap()
                .name,
            "videomae-16x4-224"
        );
        // Bad qualities and a quality without JPEG say why.
        for q in [0, 101] {
            let o = Overrides {
                codec: Some(CodecKind::Jpeg),
                jpeg_quality: Some(q),
                ..Default::default()
            };
            let e = resolve(Some("videomae-16x4-224"), &o).unwrap_err();
            assert!(e.0.contains("quality must be 1..=100"), "{e}");
        }
        let o = Overrides {
            jpeg_quality: Some(80),
            ..Default::default()
        };
        let e = resolve(Some("videomae-16x4-224"), &o).unwrap_err();
        assert!(e.0.contains("--codec jpeg"), "{e}");
        let bad: Result<FrameParams, _> = serde_json::from_str(
            r#"{"rules":1,"frames":16,"sampling":"stride","stride":4,"clips":1,"fps":30.0,"height":224,"width":224,"fit":"short-side","short_side":224,"filter":"bicubic","codec":{"kind":"png"}}"#,
        );
        assert!(bad.is_err());
    }

    #[test]
    fn flags_override_and_name_recipes() {
        let o = Overrides {
            clips: Some(5),
            ..Default::default()
        };
        let r = resolve(Some("videomae-16x4-224"), &o).unwrap();
        assert_eq!(r.params.clips, 5);
        assert_eq!(r.name, "16x4-k5-224x224-ss224");
        assert_ne!(r.id(), builtin("videomae-16x4-224").unwrap().id());

        // Flags that spell out a built-in get its name.
        let o = Overrides {
            frames: Some(16),
            stride: Some(4),
            size: Some((224, 224)),
            fit: Some(Fit::ShortSide),
            ..Default::default()
        };
        assert_eq!(resolve(None, &o).unwrap().name, "videomae-16x4-224");

        let o = Overrides {
            frames: Some(8),
            segments: true,
            size: Some((288, 192)),
            fit: Some(Fit::Cover),
            fps: Some(25.0),
            ..Default::default()
        };
        let r = resolve(None, &o).unwrap();
        assert_eq!(r.name, "8seg-288x192-cover-25fps");
        assert_eq!(r.params.stride, None);
        assert_eq!(r.dir_name(), format!("8seg-288x192-cover-25fps-{}", r.id()));
    }

    #[test]
    fn bad_recipes_say_why() {
        let e = resolve(Some("nope"), &Overrides::default()).unwrap_err();
        assert!(e.0.contains("videomae-16x4-224"), "{e}");
        let e = resolve(None, &Overrides::default()).unwrap_err();
        assert!(e.0.contains("--recipe"), "{e}");
        let o = Overrides {
            frames: Some(16),
            size: Some((224, 224)),
            ..Default::default()
        };
        assert!(resolve(None, &o).unwrap_err().0.contains("--stride"));
        let o = Overrides {
            clips: Some(0),
            ..Default::default()
        };
        assert!(
            resolve(Some("videomae-16x4-224"), &o)
                .unwrap_err()
                .0
                .contains("clips")
        );
        let o = Overrides {
            fit: Some(Fit::Cover),
            short_side: Some(256),
            ..Default::default()
        };
        assert!(resolve(Some("videomae-16x4-224"), &o).is_err());
        let o = Overrides {
            size: Some((4096, 4096)),
            clips: Some(64),
            ..Default::default()
        };
        assert!(
            resolve(Some("videomae-16x4-224"), &o)
                .unwrap_err()
                .0
                .contains("1 GiB")
        );
        assert_eq!(parse_size("288x192").unwrap(), (288, 192));
        assert_eq!(parse_size("224×224").unwrap(), (224, 224));
        assert!(parse_size("224").is_err());
    }

    #[test]
    fn short_side_follows_a_new_size() {
        let o = Overrides {
            size: Some((256, 256)),
            ..Default::default()
        };
        let r = resolve(Some("videomae-16x4-224"), &o).unwrap();
        assert_eq!(r.params.short_side, Some(256));
        let o = Overrides {
            short_side: Some(320),
            ..Default::default()
        };
        let r = resolve(Some("videomae-16x4-224"), &o).unwrap();
        assert_eq!(r.params.short_side, Some(320));
    }
}
