//! Opening and probing a video: container, codec, geometry, display rotation, frame
//! rates, duration, and the frame table every seek relies on.
//!
//! [`VideoFile::open`] opens a file through [`super::open`] (FFmpeg reads only that file,
//! as one of the video containers the fetch stage stores, its declarations bounded and
//! pictures over 8K refused before anything is decoded), picks its video stream and
//! reads every packet of it once, without decoding: that gives the
//! exact frame count, each frame's presentation time, the keyframes and where to seek
//! for each, and proves every packet is there (a file cut short is caught here). It
//! never decodes pixels (that is [`super::decode`]) and never writes anything.

use std::path::{Path, PathBuf};

use ffmpeg_next::codec::packet::{Mut as _, Ref as _};
use ffmpeg_next::{self as ff, ffi, format, media};
use serde::Serialize;

use super::geometry::Rotation;
use super::{MediaError, enums};

/// More frames than any short video has (9 hours at 30 fps); a file claiming more is
/// refused rather than indexed into unbounded memory.
const MAX_FRAMES: usize = 1_000_000;
/// A video stream shorter than this share of what its container declares was cut short.
const MIN_DECLARED_SHARE: f64 = 0.8;

/// What the media layer sees in a video file.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Probe {
    /// Demuxer name, e.g. `mov,mp4,m4a,3gp,3g2,mj2`.
    pub container: String,
    /// Codec name, e.g. `h264`.
    pub codec: String,
    pub profile: Option<String>,
    pub pixel_format: String,
    /// Stored (coded) size.
    pub width: u32,
    pub height: u32,
    /// Upright display size: SAR applied, rotation applied.
    pub display_width: u32,
    pub display_height: u32,
    /// Clockwise quarter turns that make the picture upright, in degrees.
    pub rotation: u32,
    /// Sample aspect ratio `num:den` (`1:1` for square pixels).
    pub sar: String,
    /// The container's average frame rate.
    pub avg_fps: Option<f64>,
    /// The lowest frame rate that represents all timestamps (FFmpeg's `r_frame_rate`).
    pub real_fps: Option<f64>,
    /// First frame to the end of the last one, in seconds.
    pub duration_s: f64,
    /// Frames counted in the stream.
    pub frames: u64,
    /// Frames the container declares (0 when it does not say).
    pub declared_frames: u64,
    pub keyframes: u64,
    /// Longest distance between keyframes, in frames.
    pub max_gop: u64,
    /// Whether frame intervals vary (variable frame rate).
    pub vfr: bool,
    pub bit_rate: Option<u64>,
    pub color_space: String,
    pub color_range: String,
    pub has_audio: bool,
}

/// The frames of a stream in presentation order.
#[derive(Debug, Clone)]
pub struct FrameTable {
    /// Presentation timestamps, ascending, in the stream time base.
    pub pts: Vec<i64>,
    /// Seconds after the first frame, per frame.
    pub times: Vec<f64>,
    /// Keyframes: the presentation index decoding from it reaches first, and the
    /// keyframe packet's own timestamp. The first keyframe reaches frame 0 (frames
    /// shown before it, in an open GOP, are decoded after it).
    pub keyframes: Vec<(usize, i64)>,
    /// First frame to the end of the last one, in seconds.
    pub duration_s: f64,
    /// Seconds per time-base tick.
    pub tick_s: f64,
}

impl FrameTable {
    pub fn len(&self) -> usize {
        self.pts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pts.is_empty()
    }

    /// The presentation index of a timestamp: exact, else the nearest frame within
    /// half a frame interval.
    pub fn index_of(&self, ts: i64) -> Option<usize> {
        match self.pts.binary_search(&ts) {
            Ok(i) => Some(i),
            Err(i) => {
                let before = i.checked_sub(1);
                let after = (i < self.pts.len()).then_some(i);
                let near = [before, after]
                    .into_iter()
                    .flatten()
                    .min_by_key(|&j| (self.pts[j] - ts).unsigned_abs())?;
                let gap = self.interval_around(near);
                ((self.pts[near] - ts).unsigned_abs() * 2 < gap.max(2)).then_some(near)
            }
        }
    }

    fn interval_around(&self, i: usize) -> u64 {
        let next = self
            .pts
            .get(i + 1)
            .map(|p| (p - self.pts[i]).unsigned_abs());
        let prev = i
            .checked_sub(1)
            .map(|j| (self.pts[i] - self.pts[j]).unsigned_abs());
        next.or(prev).unwrap_or(2)
    }

    /// Position in `keyframes` of the last keyframe at or before frame `i`.
    pub fn keyframe_before(&self, i: usize) -> usize {
        self.keyframes
            .partition_point(|&(k, _)| k <= i)
            .saturating_sub(1)
    }
}

/// An open video: the demuxer, the chosen stream, its frame table and probe.
pub struct VideoFile {
    pub(crate) path: PathBuf,
    pub(crate) input: format::context::Input,
    pub(crate) stream: usize,
    pub(crate) table: FrameTable,
    pub(crate) probe: Probe,
    pub(crate) rotation: Rotation,
    pub(crate) sar: (u32, u32),
    /// The decoder, opened on first use with `decoder_threads` threads.
    pub(crate) decoder: Option<ff::decoder::Video>,
    pub(crate) decoder_threads: usize,
}

fn corrupt(path: &Path, reason: impl Into<String>) -> MediaError {
    MediaError::Corrupt {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn rational(r: ff::Rational) -> Option<f64> {
    (r.numerator() > 0 && r.denominator() > 0)
        .then(|| r.numerator() as f64 / r.denominator() as f64)
}

struct Entry {
    pts: i64,
    key: bool,
    duration: i64,
}

impl VideoFile {
    /// Opens `path`, picks its video stream and reads its frame table.
    pub fn open(path: &Path) -> Result<VideoFile, MediaError> {
        super::init();
        let mut input = super::open::open(path, super::open::Kind::Video)?;
        let has_audio = input
            .streams()
            .any(|s| s.parameters().medium() == media::Type::Audio);
        let stream = input
            .streams()
            .filter(|s| s.parameters().medium() == media::Type::Video)
            .find(|s| {
                !s.disposition()
                    .contains(format::stream::Disposition::ATTACHED_PIC)
            })
            .map(|s| s.index())
            .ok_or_else(|| corrupt(path, "no video stream"))?;

        let (time_base, avg_fps, real_fps, declared, rotation, sar, params) = {
            let st = input.stream(stream).expect("index from the iterator");
            let rotation = st
                .side_data()
                .find(|sd| sd.kind() == ff::codec::packet::side_data::Type::DisplayMatrix)
                .and_then(|sd| {
                    let data = sd.data();
                    (data.len() >= 36).then(|| {
                        let mut m = [0i32; 9];
                        for (i, v) in m.iter_mut().enumerate() {
                            *v = i32::from_ne_bytes(data[i * 4..i * 4 + 4].try_into().unwrap());
                        }
                        // SAFETY: m is the 3x3 matrix av_display_rotation_get reads.
                        let ccw = unsafe { ffi::av_display_rotation_get(m.as_ptr()) };
                        Rotation::from_clockwise_degrees(-ccw)
                    })
                })
                .unwrap_or(Rotation::R0);
            // SAFETY: both pointers are valid for the life of `input`.
            let sar = unsafe {
                ffi::av_guess_sample_aspect_ratio(
                    input.as_ptr() as *mut _,
                    st.as_ptr() as *mut _,
                    std::ptr::null_mut(),
                )
            };
            let sar = if sar.num > 0 && sar.den > 0 {
                (sar.num as u32, sar.den as u32)
            } else {
                (1, 1)
            };
            (
                st.time_base(),
                rational(st.avg_frame_rate()),
                rational(st.rate()),
                st.frames().max(0) as u64,
                rotation,
                sar,
                st.parameters(),
            )
        };
        if time_base.numerator() <= 0 || time_base.denominator() <= 0 {
            return Err(corrupt(path, "the video stream has no time base"));
        }
        let tick_s = time_base.numerator() as f64 / time_base.denominator() as f64;

        let entries = scan(path, &mut input, stream, declared)?;
        let table = build_table(path, entries, tick_s, avg_fps.or(real_fps))?;

        // SAFETY: codecpar belongs to the stream and lives as long as `input`; its
        // enum-typed fields are read as the numbers they hold (a file may put any there).
        let (codec_id, profile, format, width, height, color_space, color_range, bit_rate) = unsafe {
            let p = params.as_ptr();
            (
                enums::raw(std::ptr::addr_of!((*p).codec_id)),
                (*p).profile,
                (*p).format,
                (*p).width,
                (*p).height,
                enums::raw(std::ptr::addr_of!((*p).color_space)),
                enums::raw(std::ptr::addr_of!((*p).color_range)),
                (*input.as_ptr()).bit_rate,
            )
        };
        if width <= 0 || height <= 0 {
            return Err(corrupt(path, "the video stream has no picture size"));
        }
        // Pictures over 8K were refused by `open`, before anything was decoded.
        let (width, height) = (width as u32, height as u32);
        // A file cut short whose container does not count frames (Matroska, WebM) still
        // declares how long it is.
        let declared_s = declared_duration(&input, stream);
        if let Some(d) = declared_s
            && table.duration_s + 1.0 < d * MIN_DECLARED_SHARE
        {
            return Err(corrupt(
                path,
                format!(
                    "the container says {d:.2} s but only {:.2} s of video can be read (a truncated file?)",
                    table.duration_s
                ),
            ));
        }
        let geometry = super::geometry::Geometry::plan(
            width,
            height,
            sar,
            rotation,
            &super::geometry::Target {
                height: 8,
                width: 8,
                fit: pmv_core::frame_recipe::Fit::Contain,
                short_side: None,
                filter: pmv_core::frame_recipe::Filter::Bicubic,
            },
        )
        .map_err(|e| corrupt(path, e.0))?;
        let mut max_gop = 0u64;
        for w in table.keyframes.windows(2) {
            max_gop = max_gop.max((w[1].0 - w[0].0) as u64);
        }
        if let Some(&(last, _)) = table.keyframes.last() {
            max_gop = max_gop.max((table.len() - last) as u64);
        }
        let probe = Probe {
            container: input.format().name().to_owned(),
            codec: enums::codec_name(codec_id),
            profile: enums::profile_name(codec_id, profile),
            pixel_format: enums::pixel_format_name(format),
            width,
            height,
            display_width: geometry.display_w,
            display_height: geometry.display_h,
            rotation: rotation.degrees(),
            sar: format!("{}:{}", sar.0, sar.1),
            avg_fps,
            real_fps,
            duration_s: table.duration_s,
            frames: table.len() as u64,
            declared_frames: declared,
            keyframes: table.keyframes.len() as u64,
            max_gop,
            vfr: is_vfr(&table.pts),
            bit_rate: (bit_rate > 0).then_some(bit_rate as u64),
            color_space: enums::color_space_name(color_space),
            color_range: enums::color_range_name(color_range),
            has_audio,
        };
        Ok(VideoFile {
            path: path.to_owned(),
            input,
            stream,
            table,
            probe,
            rotation,
            sar,
            decoder: None,
            decoder_threads: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    pub fn table(&self) -> &FrameTable {
        &self.table
    }

    pub fn rotation(&self) -> Rotation {
        self.rotation
    }

    /// Sample aspect ratio (num, den).
    pub fn sar(&self) -> (u32, u32) {
        self.sar
    }
}

/// How long the container says the video lasts: the stream's own duration, else the
/// whole file's when the file has no other stream that could make it longer.
fn declared_duration(input: &format::context::Input, stream: usize) -> Option<f64> {
    let st = input.stream(stream)?;
    let tb = st.time_base();
    if st.duration() > 0 && tb.denominator() > 0 {
        return Some(st.duration() as f64 * tb.numerator() as f64 / tb.denominator() as f64);
    }
    let only_video = input.streams().count() == 1;
    (only_video && input.duration() > 0)
        .then(|| input.duration() as f64 / f64::from(ffi::AV_TIME_BASE))
}

/// Reads every packet of the stream (no decoding).
fn scan(
    path: &Path,
    input: &mut format::context::Input,
    stream: usize,
    declared: u64,
) -> Result<Vec<Entry>, MediaError> {
    let mut packet = ff::Packet::empty();
    let mut entries: Vec<Entry> = Vec::with_capacity(declared.clamp(16, 100_000) as usize);
    let mut missing_ts = 0usize;
    loop {
        // SAFETY: unreferencing the previous packet before reading the next one.
        unsafe { ffi::av_packet_unref(packet.as_mut_ptr()) };
        match packet.read(input) {
            Ok(()) => {}
            Err(ff::Error::Eof) => break,
            Err(e) => {
                return Err(corrupt(
                    path,
                    format!("unreadable after {} frames: {e}", entries.len()),
                ));
            }
        }
        if packet.stream() != stream {
            continue;
        }
        // SAFETY: reading plain fields of a valid packet.
        let flags = unsafe { (*packet.as_ptr()).flags };
        if flags & ffi::AV_PKT_FLAG_CORRUPT != 0 {
            return Err(corrupt(
                path,
                format!(
                    "frame {} is damaged or cut short (a truncated file?)",
                    entries.len()
                ),
            ));
        }
        if flags & ffi::AV_PKT_FLAG_DISCARD != 0 {
            continue; // before the start of an edit list: decoded, never shown
        }
        let Some(pts) = packet.pts().or(packet.dts()) else {
            missing_ts += 1;
            continue;
        };
        let key = flags & ffi::AV_PKT_FLAG_KEY != 0;
        entries.push(Entry {
            pts,
            key,
            duration: packet.duration(),
        });
        if entries.len() > MAX_FRAMES {
            return Err(corrupt(path, format!("more than {MAX_FRAMES} frames")));
        }
    }
    if missing_ts > 0 {
        return Err(MediaError::Unsupported {
            path: path.to_owned(),
            reason: format!("{missing_ts} frames carry no timestamp, so frames cannot be located"),
        });
    }
    if entries.is_empty() {
        return Err(corrupt(path, "the video stream has no frames"));
    }
    if declared > 0 && (entries.len() as u64) < declared {
        // Edit lists may hide a few frames; a file cut short loses many.
        let hidden_allowance = 16;
        if entries.len() as u64 + hidden_allowance < declared {
            return Err(corrupt(
                path,
                format!(
                    "the container lists {declared} frames but only {} can be read (a truncated file?)",
                    entries.len()
                ),
            ));
        }
    }
    Ok(entries)
}

fn build_table(
    path: &Path,
    mut entries: Vec<Entry>,
    tick_s: f64,
    fps: Option<f64>,
) -> Result<FrameTable, MediaError> {
    entries.sort_by_key(|e| e.pts);
    entries.dedup_by_key(|e| e.pts);
    if !entries.iter().any(|e| e.key) {
        return Err(corrupt(path, "the video stream has no keyframe"));
    }
    let first = entries[0].pts;
    let last = entries.last().expect("not empty");
    let pts: Vec<i64> = entries.iter().map(|e| e.pts).collect();
    let last_duration = if last.duration > 0 {
        last.duration as f64 * tick_s
    } else if pts.len() >= 2 {
        (pts[pts.len() - 1] - pts[pts.len() - 2]) as f64 * tick_s
    } else {
        1.0 / fps.unwrap_or(30.0)
    };
    let duration_s = (last.pts - first) as f64 * tick_s + last_duration;
    let times = pts.iter().map(|&p| (p - first) as f64 * tick_s).collect();
    let mut keyframes: Vec<(usize, i64)> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.key)
        .map(|(i, e)| (i, e.pts))
        .collect();
    // Frames before the first keyframe (open GOP leading pictures) are reached from it.
    if keyframes[0].0 != 0 {
        keyframes[0].0 = 0;
    }
    Ok(FrameTable {
        pts,
        times,
        keyframes,
        duration_s,
        tick_s,
    })
}

/// Whether frame intervals vary by more than timestamp rounding can explain.
fn is_vfr(pts: &[i64]) -> bool {
    if pts.len() < 3 {
        return false;
    }
    let mut d: Vec<i64> = pts.windows(2).map(|w| w[1] - w[0]).collect();
    d.sort_unstable();
    let median = d[d.len() / 2];
    let tolerance = (median / 20).max(1);
    d[0] < median - tolerance || d[d.len() - 1] > median + tolerance
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pts: Vec<i64>, keys: &[usize]) -> FrameTable {
        FrameTable {
            times: pts.iter().map(|&p| p as f64 / 30.0).collect(),
            keyframes: keys.iter().map(|&k| (k, pts[k])).collect(),
            pts,
            duration_s: 0.0,
            tick_s: 1.0 / 30.0,
        }
    }

    #[test]
    fn timestamps_map_to_frames() {
        let t = table(vec![0, 512, 1024, 1536], &[0, 2]);
        assert_eq!(t.index_of(512), Some(1));
        assert_eq!(t.index_of(600), Some(1));
        assert_eq!(t.index_of(1700), Some(3));
        assert_eq!(t.index_of(1900), None);
        assert_eq!(t.index_of(9000), None);
        assert_eq!(t.keyframe_before(1), 0);
        assert_eq!(t.keyframe_before(2), 1);
        assert_eq!(t.keyframe_before(3), 1);
    }

    #[test]
    fn vfr_is_told_from_rounding() {
        assert!(!is_vfr(&[0, 33, 67, 100, 133, 167]));
        assert!(!is_vfr(&(0..100).map(|i| i * 512).collect::<Vec<_>>()));
        assert!(is_vfr(&[0, 33, 67, 100, 200, 233]));
    }
}
