//! Temporal sampling: which source frames a sample takes.
//!
//! The video is first seen on a timeline normalised to `fps` (default 30): position `j`
//! is the time `j / fps` after the first frame, and shows the source frame on screen at
//! that time (the last frame whose presentation time is at or before it). A 60 fps
//! video at 30 fps gives every second frame; a 24 fps one repeats some; a variable frame
//! rate is followed as it is. On that timeline:
//!
//! - **stride** (`T` frames `S` apart, window `(T-1)·S + 1`): `K` windows evenly spread
//!   over the video — one clip is centred, several start at the first position and end
//!   at the last with equal steps between (as VideoMAE's multi-clip test does);
//! - **segments** (TSN): the timeline cut into `T` equal segments; clip `k` of `K` takes
//!   the frame at fraction `(k + ½) / K` of each segment (one clip: the centre).
//!
//! Positions past the end (a video shorter than the window) are the last frame: short
//! videos are padded with it. This module is pure arithmetic; it never opens a file.

use pmv_core::frame_recipe::{FrameParams, SampleMode};

/// Slack when matching a timeline position to a presentation time: well below any
/// frame interval (a 1000 fps video has 1 ms), well above rounding of time bases.
const TIME_EPS: f64 = 1e-4;

/// The temporal part of a recipe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub frames: u32,
    pub mode: SampleMode,
    /// Stride mode only.
    pub stride: u32,
    pub clips: u32,
    pub fps: f64,
}

impl From<&FrameParams> for Sampling {
    fn from(p: &FrameParams) -> Sampling {
        Sampling {
            frames: p.frames,
            mode: p.sampling,
            stride: p.stride.unwrap_or(1),
            clips: p.clips,
            fps: p.fps,
        }
    }
}

/// Length of the normalised timeline of a video lasting `duration_s`: at least one
/// position.
pub fn timeline_len(duration_s: f64, fps: f64) -> i64 {
    let n = (duration_s.max(0.0) * fps + 1e-6).floor();
    if n.is_finite() { (n as i64).max(1) } else { 1 }
}

/// Positions on the normalised timeline, per clip (before mapping to source frames).
pub fn timeline_positions(s: &Sampling, len: i64) -> Vec<Vec<i64>> {
    let t = s.frames.max(1) as i64;
    let k_all = s.clips.max(1) as i64;
    let last = len.max(1) - 1;
    (0..k_all)
        .map(|k| match s.mode {
            SampleMode::Stride => {
                let stride = s.stride.max(1) as i64;
                let window = (t - 1) * stride + 1;
                let span = (len - window).max(0);
                let start = if k_all == 1 {
                    span / 2
                } else {
                    ((k * span) as f64 / (k_all - 1) as f64).round() as i64
                };
                (0..t).map(|i| (start + i * stride).min(last)).collect()
            }
            SampleMode::Segments => {
                let seg = len as f64 / t as f64;
                let offset = (k as f64 + 0.5) / k_all as f64;
                (0..t)
                    .map(|i| ((seg * (i as f64 + offset)).floor() as i64).clamp(0, last))
                    .collect()
            }
        })
        .collect()
}

/// The source frame shown at `time_s` (seconds after the first frame): the last one
/// whose presentation time is at or before it.
pub fn frame_at(times: &[f64], time_s: f64) -> usize {
    times
        .partition_point(|&p| p <= time_s + TIME_EPS)
        .saturating_sub(1)
}

/// Per clip, the source frame indices (presentation order) a sample takes from a video
/// whose frames are presented at `times` (seconds after the first frame, ascending) and
/// which lasts `duration_s`.
pub fn sample_indices(s: &Sampling, times: &[f64], duration_s: f64) -> Vec<Vec<i64>> {
    if times.is_empty() {
        return vec![vec![]; s.clips.max(1) as usize];
    }
    let len = timeline_len(duration_s, s.fps);
    timeline_positions(s, len)
        .into_iter()
        .map(|clip| {
            clip.into_iter()
                .map(|j| frame_at(times, j as f64 / s.fps) as i64)
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stride(frames: u32, stride: u32, clips: u32) -> Sampling {
        Sampling {
            frames,
            mode: SampleMode::Stride,
            stride,
            clips,
            fps: 30.0,
        }
    }

    fn cfr(n: usize, fps: f64) -> (Vec<f64>, f64) {
        ((0..n).map(|i| i as f64 / fps).collect(), n as f64 / fps)
    }

    #[test]
    fn one_clip_is_centred() {
        let (t, d) = cfr(450, 30.0);
        let idx = sample_indices(&stride(16, 4, 1), &t, d);
        assert_eq!(idx.len(), 1);
        // window 61 frames; (450 - 61) / 2 = 194
        assert_eq!(idx[0], (0..16).map(|i| 194 + 4 * i).collect::<Vec<i64>>());
    }

    #[test]
    fn several_clips_span_the_video() {
        let (t, d) = cfr(450, 30.0);
        let idx = sample_indices(&stride(16, 4, 5), &t, d);
        let starts: Vec<i64> = idx.iter().map(|c| c[0]).collect();
        assert_eq!(starts, vec![0, 97, 195, 292, 389]);
        assert_eq!(*idx[4].last().unwrap(), 449);
    }

    #[test]
    fn the_timeline_is_normalised_to_the_fps() {
        // 60 fps: every second frame.
        let (t, d) = cfr(900, 60.0);
        let idx = sample_indices(&stride(16, 4, 1), &t, d);
        assert_eq!(
            idx[0],
            (0..16).map(|i| 2 * (194 + 4 * i)).collect::<Vec<i64>>()
        );
        // 24000/1001 fps (the xinpianchang sample): 369 frames, 15.39 s.
        let fps = 24000.0 / 1001.0;
        let (t, d) = cfr(369, fps);
        let idx = sample_indices(&stride(16, 4, 1), &t, d);
        let len = timeline_len(d, 30.0);
        assert_eq!(len, 461);
        let start = (461 - 61) / 2;
        for (i, &f) in idx[0].iter().enumerate() {
            let time = (start + 4 * i as i64) as f64 / 30.0;
            assert_eq!(f, (time * fps + 1e-9).floor() as i64, "position {i}");
        }
    }

    #[test]
    fn short_videos_are_padded_with_their_last_frame() {
        let (t, d) = cfr(30, 30.0);
        let idx = sample_indices(&stride(16, 4, 1), &t, d);
        assert_eq!(
            idx[0],
            vec![0, 4, 8, 12, 16, 20, 24, 28, 29, 29, 29, 29, 29, 29, 29, 29]
        );
        let idx = sample_indices(&stride(4, 1, 3), &[0.0], 0.04);
        assert_eq!(idx, vec![vec![0; 4]; 3]);
    }

    #[test]
    fn variable_frame_rates_show_the_frame_on_screen() {
        // Frames at 0, 0.1, 0.5, 0.52 s: the 0.4 s position still shows frame 1.
        let times = [0.0, 0.1, 0.5, 0.52];
        assert_eq!(frame_at(&times, 0.0), 0);
        assert_eq!(frame_at(&times, 0.099999), 1);
        assert_eq!(frame_at(&times, 0.4), 1);
        assert_eq!(frame_at(&times, 0.51), 2);
        assert_eq!(frame_at(&times, 9.0), 3);
    }

    #[test]
    fn segments_take_the_centre_of_each() {
        let s = Sampling {
            frames: 8,
            mode: SampleMode::Segments,
            stride: 1,
            clips: 1,
            fps: 30.0,
        };
        let (t, d) = cfr(240, 30.0);
        let idx = sample_indices(&s, &t, d);
        assert_eq!(idx[0], vec![15, 45, 75, 105, 135, 165, 195, 225]);
        let s2 = Sampling { clips: 2, ..s };
        let idx = sample_indices(&s2, &t, d);
        assert_eq!(idx[0][0], 7);
        assert_eq!(idx[1][0], 22);
    }
}
