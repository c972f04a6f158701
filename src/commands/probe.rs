//! `pmv-data probe FILE...`: print what the media layer sees in each file (and, with
//! `--decode`, whether every frame decodes). Touches no data root.

use anyhow::Result;

use super::App;
use crate::cli::ProbeArgs;
use pmv_term::exit::Exit;
#[cfg(feature = "media")]
use pmv_term::output::{errln, outln};

#[cfg(not(feature = "media"))]
pub fn run(_app: &App, _args: ProbeArgs) -> Result<Exit> {
    anyhow::bail!("this pmv-data was built without the `media` feature (FFmpeg), which probe needs")
}

#[cfg(feature = "media")]
pub fn run(app: &App, args: ProbeArgs) -> Result<Exit> {
    use pmv_pipeline::media::{MediaError, VideoFile};

    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut docs = vec![];
    let mut bad = 0;
    let mut hard_error = None;
    for file in &args.files {
        let result = VideoFile::open(file).and_then(|mut v| {
            let decoded = if args.decode {
                Some(v.decode_all(threads)?)
            } else {
                None
            };
            Ok((v.probe().clone(), decoded))
        });
        match result {
            Ok((probe, decoded)) => {
                if app.json {
                    docs.push(serde_json::json!({
                        "file": file,
                        "probe": probe,
                        "decoded_frames": decoded,
                        "corrupt": false,
                        "error": null,
                    }));
                } else {
                    print_probe(file, &probe, decoded);
                }
            }
            Err(e) => {
                let bad_file = e.is_corrupt() || matches!(e, MediaError::Unsupported { .. });
                if bad_file {
                    bad += 1;
                } else if hard_error.is_none() {
                    hard_error = Some(e.to_string());
                }
                if app.json {
                    docs.push(serde_json::json!({
                        "file": file,
                        "probe": null,
                        "decoded_frames": null,
                        "corrupt": e.is_corrupt(),
                        "error": e.to_string(),
                    }));
                } else {
                    errln!("{e}");
                }
            }
        }
    }
    if app.json {
        app.print_json(&serde_json::json!({ "command": "probe", "files": docs }))?;
    }
    Ok(if hard_error.is_some() {
        Exit::Error
    } else if bad > 0 {
        Exit::Rejected
    } else {
        Exit::Ok
    })
}

#[cfg(feature = "media")]
fn print_probe(file: &std::path::Path, p: &pmv_pipeline::media::Probe, decoded: Option<u64>) {
    let fps = |v: Option<f64>| v.map(|f| format!("{f:.3}")).unwrap_or_else(|| "?".into());
    outln!("{}", file.display());
    outln!("  container  {}", p.container);
    outln!(
        "  video      {}{} {} {}x{} (SAR {}), shown upright as {}x{}{}",
        p.codec,
        p.profile
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default(),
        p.pixel_format,
        p.width,
        p.height,
        p.sar,
        p.display_width,
        p.display_height,
        if p.rotation != 0 {
            format!(" (rotate {}° clockwise)", p.rotation)
        } else {
            String::new()
        }
    );
    outln!("  colour     {} {}", p.color_space, p.color_range);
    outln!(
        "  frames     {} in {:.3} s ({} declared), {} fps average, {} fps real{}",
        p.frames,
        p.duration_s,
        p.declared_frames,
        fps(p.avg_fps),
        fps(p.real_fps),
        if p.vfr { ", variable frame rate" } else { "" }
    );
    outln!(
        "  keyframes  {} (longest GOP {} frames)",
        p.keyframes,
        p.max_gop
    );
    if let Some(b) = p.bit_rate {
        outln!(
            "  bit rate   {} kb/s{}",
            b / 1000,
            if p.has_audio { ", with audio" } else { "" }
        );
    }
    if let Some(n) = decoded {
        outln!("  decodes    all {n} frames");
    }
}
