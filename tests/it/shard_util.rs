//! Helpers for the media and shard tests: videos generated with the `ffmpeg` command
//! line, reference frames from it, PSNR, and registering local files in a catalog as
//! verified downloads (what the fetch stage's `local` source records).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::Env;

/// Runs the `ffmpeg` command line; panics with its stderr on failure.
pub fn ffmpeg(args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
        .args(args)
        .output()
        .expect("run ffmpeg (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A generated test video.
pub struct Spec<'a> {
    /// Stored size (before any rotation).
    pub size: (u32, u32),
    pub fps: u32,
    pub seconds: f64,
    /// `-c:v` and its options, e.g. `["-c:v", "libx264", "-g", "12"]`.
    pub codec: &'a [&'a str],
    /// Extra filters after the source (e.g. `transpose=cclock`, `setsar=16/15`).
    pub filter: Option<&'a str>,
    /// Extra output options (e.g. `-metadata:s:v rotate=90`).
    pub extra: &'a [&'a str],
    pub file: &'a str,
}

pub const H264: &[&str] = &[
    "-c:v", "libx264", "-preset", "veryfast", "-g", "12", "-bf", "2", "-pix_fmt", "yuv420p",
];

impl Spec<'_> {
    pub fn h264(file: &str, w: u32, h: u32, seconds: f64) -> Spec<'_> {
        Spec {
            size: (w, h),
            fps: 30,
            seconds,
            codec: H264,
            filter: None,
            extra: &[],
            file,
        }
    }
}

/// Generates `spec.file` in `dir` from FFmpeg's `testsrc2` pattern (moving, colourful).
pub fn make_video(dir: &Path, spec: &Spec<'_>) -> PathBuf {
    let path = dir.join(spec.file);
    let mut src = format!(
        "testsrc2=size={}x{}:rate={}:duration={}",
        spec.size.0, spec.size.1, spec.fps, spec.seconds
    );
    if let Some(f) = spec.filter {
        src.push(',');
        src.push_str(f);
    }
    let mut args: Vec<&str> = vec!["-f", "lavfi", "-i", &src];
    args.extend_from_slice(spec.codec);
    args.extend_from_slice(spec.extra);
    let p = path.to_str().unwrap().to_owned();
    args.push(&p);
    ffmpeg(&args);
    path
}

/// Frames `indices` (decode order counted by `select`, i.e. presentation order) of
/// `video`, cropped (after FFmpeg's autorotation) and scaled to W×H RGB by the command
/// line, in ascending index order.
pub fn cli_frames(
    video: &Path,
    indices: &[i64],
    crop: (u32, u32, u32, u32),
    out_w: u32,
    out_h: u32,
) -> Vec<Vec<u8>> {
    let mut uniq = indices.to_vec();
    uniq.sort_unstable();
    uniq.dedup();
    let select: Vec<String> = uniq.iter().map(|i| format!("eq(n\\,{i})")).collect();
    let (w, h, x, y) = crop;
    let vf = format!(
        "select='{}',crop={w}:{h}:{x}:{y},scale={out_w}:{out_h}:flags=bicubic+full_chroma_int+accurate_rnd",
        select.join("+")
    );
    let raw = ffmpeg(&[
        "-i",
        video.to_str().unwrap(),
        "-vf",
        &vf,
        "-fps_mode",
        "passthrough",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]);
    let frame = (out_w * out_h * 3) as usize;
    assert_eq!(
        raw.len(),
        frame * uniq.len(),
        "ffmpeg gave a different number of frames"
    );
    let by_index: std::collections::HashMap<i64, Vec<u8>> = uniq
        .iter()
        .zip(raw.chunks(frame))
        .map(|(&i, f)| (i, f.to_vec()))
        .collect();
    indices.iter().map(|i| by_index[i].clone()).collect()
}

/// Peak signal-to-noise ratio of two 8-bit pictures, in dB (infinite when equal).
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let se: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x as f64 - y as f64;
            d * d
        })
        .sum();
    if se == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 * a.len() as f64 / se).log10()
}

/// Presentation timestamps (seconds) of every frame, from `ffprobe`.
pub fn ffprobe_times(video: &Path) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(video)
        .output()
        .expect("run ffprobe");
    assert!(out.status.success());
    let mut t: Vec<f64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    t.sort_by(f64::total_cmp);
    t
}

/// Registers `file` as the verified video (or cover) of item `key` in `dataset`: copies
/// it under the root's `videos/<dataset>/` (or `covers/`) with the name fetch gives it
/// (the key's file stem), hashes it and writes the `files` row, as fetch does for a
/// downloaded or imported file.
pub fn register(env: &Env, dataset: &str, key: &str, role: &str, file: &Path) -> PathBuf {
    let dir = if role == "cover" { "covers" } else { "videos" };
    let name = format!(
        "{}.{}",
        pmv_pipeline::manifest::file_stem(key),
        file.extension().and_then(|e| e.to_str()).unwrap_or("bin")
    );
    let rel = format!("{dir}/{dataset}/{name}");
    let dest = env.root.join(&rel);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(file, &dest).unwrap();
    let bytes = std::fs::read(&dest).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let conn = rusqlite::Connection::open(env.root.join("catalog.sqlite")).unwrap();
    let item: i64 = conn
        .query_row(
            "SELECT i.id FROM items i JOIN datasets d ON d.id = i.dataset_id \
             WHERE d.name = ?1 AND i.key = ?2",
            [dataset, key],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("no item {key} in {dataset}: {e}"));
    conn.execute(
        "INSERT OR REPLACE INTO files (item_id, role, state, path, size, sha256, source_rank, \
           attempts, updated_at) VALUES (?1, ?2, 'verified', ?3, ?4, ?5, 0, 1, 0)",
        rusqlite::params![item, role, rel, bytes.len() as i64, sha],
    )
    .unwrap();
    dest
}

/// Ingests a JSON lines manifest of `items` (id, label, split, and optionally text)
/// into `dataset`.
pub fn ingest_items(env: &Env, dataset: &str, items: &[serde_json::Value]) {
    let text: String = items.iter().map(|v| format!("{v}\n")).collect();
    let manifest = env.write(&format!("{dataset}.jsonl"), text);
    let out = env.ingest(&[
        "--dataset",
        dataset,
        "--format",
        "jsonl",
        manifest.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "ingest failed: {}", out.stderr);
}
