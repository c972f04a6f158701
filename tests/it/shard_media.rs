//! The media layer against the `ffmpeg` command line: sampled frames equal what the CLI
//! gives for the same frame indices and geometry (PSNR ≥ 35 dB, in practice far above),
//! for H.264, HEVC and VP9, portrait and landscape, rotation, VFR, odd sizes, non-square
//! pixels, short clips and the real xinpianchang sample; broken files are corrupt.

use std::path::Path;

use pmv_core::frame_recipe::{self, Filter, Fit, FrameParams, Overrides};
use pmv_pipeline::media::geometry::Target;
use pmv_pipeline::media::{
    Decoder, DecoderOptions, Geometry, MediaError, Sampling, VideoFile, sample_indices,
};

use crate::shard_util::{Spec, cli_frames, ffmpeg, ffprobe_times, make_video, psnr};
use crate::util::repo;

/// Required similarity to the command line's frames.
const MIN_PSNR: f64 = 35.0;

fn params(name: &str, o: Overrides) -> FrameParams {
    frame_recipe::resolve(Some(name), &o).unwrap().params
}

/// Samples `video` with `p` and compares every output frame with the CLI's; returns
/// the decoded sample, the geometry and the indices.
fn check_against_cli(video: &Path, p: &FrameParams) -> (Vec<u8>, Geometry, Vec<Vec<i64>>, f64) {
    let mut v = VideoFile::open(video).unwrap();
    let idx = sample_indices(&Sampling::from(p), &v.table().times, v.table().duration_s);
    let target = Target::from(p);
    let mut out = vec![0u8; p.sample_bytes() as usize];
    let (stats, g) = Decoder::new()
        .extract(&mut v, &idx, &target, &DecoderOptions::default(), &mut out)
        .unwrap();
    assert_eq!(stats.frames_kept, (p.clips * p.frames) as u64);
    let flat: Vec<i64> = idx.iter().flatten().copied().collect();
    let c = g.display_src;
    let reference = cli_frames(video, &flat, (c.w, c.h, c.x, c.y), p.width, p.height);
    let fb = (p.width * p.height * 3) as usize;
    let mut worst = f64::INFINITY;
    for (slot, want) in reference.iter().enumerate() {
        let got = &out[slot * fb..(slot + 1) * fb];
        let db = psnr(got, want);
        worst = worst.min(db);
        assert!(
            db >= MIN_PSNR,
            "{}: slot {slot} (frame {}) differs from ffmpeg: {db:.1} dB",
            video.display(),
            flat[slot]
        );
    }
    (out, g, idx, worst)
}

fn stride_params(clips: u32, h: u32, w: u32, fit: Fit) -> FrameParams {
    frame_recipe::resolve(
        None,
        &Overrides {
            frames: Some(8),
            stride: Some(3),
            clips: Some(clips),
            size: Some((h, w)),
            fit: Some(fit),
            ..Default::default()
        },
    )
    .unwrap()
    .params
}

#[test]
fn h264_landscape_matches_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let v = make_video(dir.path(), &Spec::h264("land.mp4", 320, 240, 3.0));
    let p = stride_params(2, 112, 112, Fit::ShortSide);
    let (_, g, idx, worst) = check_against_cli(&v, &p);
    assert_eq!(g.src.w, 240);
    assert_eq!(idx.len(), 2);
    eprintln!("h264 landscape: worst PSNR {worst:.1} dB");
}

#[test]
fn hevc_portrait_matches_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        codec: &[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "log-level=error:keyint=15:bframes=3",
            "-pix_fmt",
            "yuv420p",
            "-tag:v",
            "hvc1",
        ],
        ..Spec::h264("portrait.mp4", 180, 320, 2.0)
    };
    let v = make_video(dir.path(), &spec);
    let p = stride_params(1, 96, 64, Fit::Cover);
    let (_, g, _, worst) = check_against_cli(&v, &p);
    assert_eq!((g.display_w, g.display_h), (180, 320));
    eprintln!("hevc portrait: worst PSNR {worst:.1} dB");
}

#[test]
fn vp9_odd_sizes_match_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        codec: &[
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-g",
            "10",
            "-pix_fmt",
            "yuv420p",
        ],
        // testsrc2 makes even sizes only.
        filter: Some("scale=321:243"),
        ..Spec::h264("odd.webm", 322, 244, 2.0)
    };
    let v = make_video(dir.path(), &spec);
    let probe = VideoFile::open(&v).unwrap().probe().clone();
    assert_eq!((probe.width, probe.height), (321, 243));
    assert_eq!(probe.codec, "vp9");
    let p = stride_params(2, 100, 100, Fit::ShortSide);
    let (_, g, _, worst) = check_against_cli(&v, &p);
    assert!(g.src.x + g.src.w <= 321 && g.src.y + g.src.h <= 243);
    eprintln!("vp9 odd: worst PSNR {worst:.1} dB");
}

/// Makes a portrait picture, top half red and bottom half blue, stored as landscape
/// (turned by `transpose`) with a `rotate` tag that turns it back (as phones record).
fn rotated(dir: &Path, name: &str, transpose: &str, rotate: &str) -> std::path::PathBuf {
    let plain = dir.join(format!("plain-{name}"));
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=red:size=180x160:rate=30:duration=2",
        "-f",
        "lavfi",
        "-i",
        "color=blue:size=180x160:rate=30:duration=2",
        "-filter_complex",
        &format!("[0][1]vstack,transpose={transpose}"),
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "15",
        "-pix_fmt",
        "yuv420p",
        plain.to_str().unwrap(),
    ]);
    let path = dir.join(name);
    ffmpeg(&[
        "-i",
        plain.to_str().unwrap(),
        "-c",
        "copy",
        "-metadata:s:v:0",
        &format!("rotate={rotate}"),
        path.to_str().unwrap(),
    ]);
    path
}

#[test]
fn rotated_portrait_comes_out_upright() {
    let dir = tempfile::tempdir().unwrap();
    let p = stride_params(1, 96, 64, Fit::Cover);
    let mut outs = vec![];
    for (name, transpose, tag, turn) in [
        (
            "r90.mp4",
            "cclock",
            "270",
            pmv_pipeline::media::Rotation::R90,
        ),
        (
            "r270.mp4",
            "clock",
            "90",
            pmv_pipeline::media::Rotation::R270,
        ),
    ] {
        let path = rotated(dir.path(), name, transpose, tag);
        let v = VideoFile::open(&path).unwrap();
        let probe = v.probe().clone();
        assert_eq!((probe.width, probe.height), (320, 180));
        assert_eq!(probe.rotation, turn.degrees(), "{probe:?}");
        assert_eq!((probe.display_width, probe.display_height), (180, 320));
        drop(v);
        let (out, g, _, _) = check_against_cli(&path, &p);
        assert_eq!(g.rotation, turn);
        // Upright: the top rows red, the bottom rows blue.
        let px = |x: usize, y: usize| &out[(y * 64 + x) * 3..][..3];
        let (top, bottom) = (px(32, 5), px(32, 90));
        assert!(
            top[0] > 200 && top[2] < 60,
            "{name}: top is not red: {top:?}"
        );
        assert!(
            bottom[2] > 200 && bottom[0] < 60,
            "{name}: bottom is not blue: {bottom:?}"
        );
        outs.push(out);
    }
    eprintln!("rotations agree to {:.1} dB", psnr(&outs[0], &outs[1]));
}

#[test]
fn variable_frame_rate_follows_the_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    // Frames 0-29 at 30 fps, then 10 fps: timestamps stretch after the first second.
    let spec = Spec {
        filter: Some("setpts='if(lt(N,30),N/30,1+(N-30)/10)/TB'"),
        extra: &["-fps_mode", "vfr"],
        ..Spec::h264("vfr.mp4", 160, 120, 3.0)
    };
    let v = make_video(dir.path(), &spec);
    let file = VideoFile::open(&v).unwrap();
    assert!(file.probe().vfr, "{:?}", file.probe());
    let times = ffprobe_times(&v);
    assert_eq!(times.len(), file.table().len());
    let first = times[0];
    let p = stride_params(1, 64, 64, Fit::ShortSide);
    let idx = sample_indices(
        &Sampling::from(&p),
        &file.table().times,
        file.table().duration_s,
    );
    drop(file);
    // Each position j shows the last frame presented at or before j/30 s.
    let len = pmv_pipeline::media::sample::timeline_len(times.last().unwrap() - first + 0.1, 30.0);
    let positions = pmv_pipeline::media::sample::timeline_positions(&Sampling::from(&p), len);
    for (j, &i) in positions[0].iter().zip(&idx[0]) {
        let t = *j as f64 / 30.0;
        let expect = times.iter().rposition(|&x| x - first <= t + 1e-4).unwrap() as i64;
        assert_eq!(i, expect, "position {j}");
    }
    check_against_cli(&v, &p);
}

#[test]
fn non_square_pixels_are_widened() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        filter: Some("setsar=16/15"),
        ..Spec::h264("anamorphic.mp4", 360, 288, 1.0)
    };
    let v = make_video(dir.path(), &spec);
    let file = VideoFile::open(&v).unwrap();
    assert_eq!(file.probe().sar, "16:15");
    assert_eq!(
        (file.probe().display_width, file.probe().display_height),
        (384, 288)
    );
    drop(file);
    // short side 288 display px -> a 288x288 display square is 270 stored px wide.
    let p = stride_params(1, 64, 64, Fit::ShortSide);
    let (_, g, _, _) = check_against_cli(&v, &p);
    assert_eq!(
        g.src,
        pmv_pipeline::media::Rect {
            x: 44,
            y: 0,
            w: 270,
            h: 288
        }
    );
}

#[test]
fn a_clip_shorter_than_the_window_is_padded() {
    let dir = tempfile::tempdir().unwrap();
    let v = make_video(dir.path(), &Spec::h264("short.mp4", 160, 120, 1.0));
    let p = params(
        "videomae-16x4-224",
        Overrides {
            size: Some((64, 64)),
            ..Default::default()
        },
    );
    let (_, _, idx, _) = check_against_cli(&v, &p);
    assert_eq!(idx[0][..8], [0, 4, 8, 12, 16, 20, 24, 28]);
    assert!(idx[0][8..].iter().all(|&i| i == 29), "{idx:?}");
}

#[test]
fn the_real_xinpianchang_sample() {
    let v = repo().join("tests/data/xinpianchang/example/99945958.mp4");
    let file = VideoFile::open(&v).unwrap();
    let pr = file.probe().clone();
    assert_eq!(pr.codec, "h264");
    assert_eq!((pr.width, pr.height), (640, 360));
    assert_eq!(pr.frames, 369);
    assert!((pr.avg_fps.unwrap() - 24000.0 / 1001.0).abs() < 1e-6);
    assert!((pr.duration_s - 15.39).abs() < 0.01, "{}", pr.duration_s);
    assert!(!pr.vfr);
    drop(file);
    let p = params(
        "pmv-portrait-16x4-288x192",
        Overrides {
            clips: Some(2),
            ..Default::default()
        },
    );
    let (_, g, _, worst) = check_against_cli(&v, &p);
    // Landscape under a portrait crop: the middle 240x360 strip.
    assert_eq!(
        g.src,
        pmv_pipeline::media::Rect {
            x: 200,
            y: 0,
            w: 240,
            h: 360
        }
    );
    eprintln!("xinpianchang: worst PSNR {worst:.1} dB");
}

#[test]
fn only_the_needed_gops_are_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        codec: &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "60",
            "-bf",
            "3",
            "-pix_fmt",
            "yuv420p",
        ],
        ..Spec::h264("long.mp4", 160, 288, 15.0)
    };
    let v = make_video(dir.path(), &spec);
    let p = params(
        "videomae-16x4-224",
        Overrides {
            size: Some((64, 64)),
            ..Default::default()
        },
    );
    let mut file = VideoFile::open(&v).unwrap();
    assert_eq!(file.probe().frames, 450);
    assert_eq!(file.probe().max_gop, 60);
    let idx = sample_indices(
        &Sampling::from(&p),
        &file.table().times,
        file.table().duration_s,
    );
    // Frames 194..=254 lie in the GOPs starting at 180 and 240: 75 frames at most.
    assert_eq!(idx[0][0], 194);
    let mut out = vec![0u8; p.sample_bytes() as usize];
    let (stats, _) = Decoder::new()
        .extract(
            &mut file,
            &idx,
            &Target::from(&p),
            &DecoderOptions::default(),
            &mut out,
        )
        .unwrap();
    assert!(stats.frames_decoded <= 75, "{stats:?}");
    assert!(stats.frames_decoded >= 16, "{stats:?}");
    assert!(stats.seeks >= 1);
    // Threaded decoding gives the same pixels.
    let mut out2 = vec![0u8; out.len()];
    let mut file = VideoFile::open(&v).unwrap();
    Decoder::new()
        .extract(
            &mut file,
            &idx,
            &Target::from(&p),
            &DecoderOptions { threads: 2 },
            &mut out2,
        )
        .unwrap();
    assert!(out == out2, "threaded decoding differs");
}

fn corrupt_reason(path: &Path) -> String {
    match VideoFile::open(path).and_then(|mut v| {
        let p = params(
            "videomae-16x4-224",
            Overrides {
                size: Some((32, 32)),
                ..Default::default()
            },
        );
        let idx = sample_indices(&Sampling::from(&p), &v.table().times, v.table().duration_s);
        let mut out = vec![0u8; p.sample_bytes() as usize];
        Decoder::new().extract(
            &mut v,
            &idx,
            &Target::from(&p),
            &DecoderOptions::default(),
            &mut out,
        )?;
        Ok(())
    }) {
        Err(e @ MediaError::Corrupt { .. }) => e.to_string(),
        other => panic!("{} should be corrupt, got {other:?}", path.display()),
    }
}

#[test]
fn broken_files_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let good = make_video(dir.path(), &Spec::h264("good.mp4", 160, 120, 2.0));
    let faststart = make_video(
        dir.path(),
        &Spec {
            extra: &["-movflags", "+faststart"],
            ..Spec::h264("faststart.mp4", 160, 120, 2.0)
        },
    );
    let webm = make_video(
        dir.path(),
        &Spec {
            codec: &[
                "-c:v",
                "libvpx-vp9",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-g",
                "10",
            ],
            ..Spec::h264("good.webm", 160, 120, 4.0)
        },
    );
    for (src, name) in [
        (&good, "cut.mp4"),
        (&faststart, "cut-faststart.mp4"),
        (&webm, "cut.webm"),
    ] {
        let bytes = std::fs::read(src).unwrap();
        let cut = dir.path().join(name);
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let r = corrupt_reason(&cut);
        assert!(r.contains(name), "{r}");
    }
    let random = dir.path().join("random.mp4");
    let noise: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&random, noise).unwrap();
    assert!(corrupt_reason(&random).contains("not a video container"));

    let audio = dir.path().join("audio-only.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=duration=1",
        "-c:a",
        "aac",
        audio.to_str().unwrap(),
    ]);
    assert!(corrupt_reason(&audio).contains("no video stream"));

    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    assert!(corrupt_reason(&empty).contains("empty"));

    // A missing file is not the file's fault: an I/O error, not corrupt.
    let e = VideoFile::open(&dir.path().join("missing.mp4"))
        .err()
        .unwrap();
    assert!(matches!(e, MediaError::Io { .. }), "{e:?}");
}

#[test]
fn covers_become_jpeg() {
    let dir = tempfile::tempdir().unwrap();
    let jpeg = repo().join("tests/data/xinpianchang/example/99945958.jpeg");
    let same = pmv_pipeline::media::image::cover_jpeg(&jpeg).unwrap();
    assert_eq!(same, std::fs::read(&jpeg).unwrap());
    let png = dir.path().join("cover.png");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=96x64:duration=1",
        "-frames:v",
        "1",
        png.to_str().unwrap(),
    ]);
    let j = pmv_pipeline::media::image::cover_jpeg(&png).unwrap();
    assert!(pmv_pipeline::media::image::is_jpeg(&j));
    // The JPEG decodes back to the picture.
    let back = dir.path().join("back.jpg");
    std::fs::write(&back, &j).unwrap();
    let a = ffmpeg(&[
        "-i",
        png.to_str().unwrap(),
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]);
    let b = ffmpeg(&[
        "-i",
        back.to_str().unwrap(),
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]);
    assert!(psnr(&a, &b) > 30.0);
    let bad = dir.path().join("bad.png");
    std::fs::write(&bad, b"not an image at all").unwrap();
    assert!(
        pmv_pipeline::media::image::cover_jpeg(&bad)
            .unwrap_err()
            .is_corrupt()
    );
}

#[test]
fn recipes_drive_the_geometry() {
    // The built-in portrait recipe on a 720x1280 picture: the 720x1080 middle.
    let p = params("pmv-portrait-16x4-288x192", Overrides::default());
    let g = Geometry::plan(
        720,
        1280,
        (1, 1),
        pmv_pipeline::media::Rotation::R0,
        &Target::from(&p),
    )
    .unwrap();
    assert_eq!(
        g.src,
        pmv_pipeline::media::Rect {
            x: 0,
            y: 100,
            w: 720,
            h: 1080
        }
    );
    assert_eq!(Target::from(&p).filter, Filter::Bicubic);
}
