//! `pmv-data doctor`: what this build and this machine can do. Writes nothing.
//!
//! Two facts are told apart, each from one source: the features this `pmv-data` was
//! compiled with (`media` links FFmpeg into it), and whether the trainer binary that
//! `train`, `pretrain` and `eval` run (`pmv-data-train`, the only one that loads
//! libtorch) is found and answers. The second is always asked of the trainer itself,
//! whatever the features say.

use std::path::Path;

use anyhow::Result;
use pmv_catalog::{Catalog, MIGRATIONS};
use serde_json::{Value, json};

use super::App;
use pmv_term::exit::Exit;
use pmv_term::output::outln;

pub fn run(app: &App) -> Result<Exit> {
    let mut problems: Vec<String> = vec![];
    let catalog_path = app.root.catalog_path();
    let catalog = match Catalog::open_existing_readonly(&catalog_path) {
        Ok(Some(c)) => {
            json!({ "path": catalog_path, "schema_version": c.schema_version()?, "error": null })
        }
        Ok(None) => json!({ "path": catalog_path, "schema_version": null, "error": null }),
        Err(e) => {
            problems.push(e.to_string());
            json!({ "path": catalog_path, "schema_version": null, "error": e.to_string() })
        }
    };
    let media = media_info(&mut problems);
    let trainer = trainer_info(&mut problems);
    let features = pmv_pipeline::features();
    if app.json {
        app.print_json(&json!({
            "command": "doctor",
            "pmv_data": pmv_core::VERSION,
            "features": features,
            "schema_version": MIGRATIONS.len(),
            "root": app.root.path(),
            "catalog": catalog,
            "media": media,
            "trainer": trainer,
            "problems": problems,
        }))?;
    } else {
        outln!(
            "pmv-data {} (features: {})",
            pmv_core::VERSION,
            if features.is_empty() {
                "none".to_owned()
            } else {
                features.join(", ")
            }
        );
        outln!("root      {}", app.root.path().display());
        match catalog["schema_version"].as_u64() {
            Some(v) => outln!("catalog   schema v{v} (this build: v{})", MIGRATIONS.len()),
            None if catalog["error"].is_null() => outln!("catalog   none yet"),
            None => outln!("catalog   unreadable"),
        }
        if media.is_null() {
            outln!("media     not built (feature `media` off)");
        } else {
            let decoders: Vec<String> = media["decoders"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    format!(
                        "{}{}",
                        d["name"].as_str().unwrap_or("?"),
                        if d["available"] == true {
                            ""
                        } else {
                            " (missing)"
                        }
                    )
                })
                .collect();
            outln!(
                "media     libavformat {}, libavcodec {}, libswscale {}; decoders {}",
                media["libavformat"].as_str().unwrap_or("?"),
                media["libavcodec"].as_str().unwrap_or("?"),
                media["libswscale"].as_str().unwrap_or("?"),
                decoders.join(", ")
            );
        }
        outln!("trainer   {}", trainer_line(&trainer));
        for p in &problems {
            outln!("problem   {p}");
        }
    }
    Ok(if problems.is_empty() {
        Exit::Ok
    } else {
        Exit::Error
    })
}

#[cfg(feature = "media")]
fn media_info(problems: &mut Vec<String>) -> Value {
    match pmv_pipeline::media::info() {
        Ok(info) => {
            if !info.decoders.iter().any(|(n, ok)| n == "h264" && *ok) {
                problems.push("FFmpeg has no H.264 decoder".into());
            }
            json!({
                "libavformat": info.libavformat,
                "libavcodec": info.libavcodec,
                "libswscale": info.libswscale,
                "libavutil": info.libavutil,
                "decoders": info
                    .decoders
                    .iter()
                    .map(|(name, available)| json!({ "name": name, "available": available }))
                    .collect::<Vec<_>>(),
            })
        }
        Err(e) => {
            problems.push(format!("FFmpeg failed to initialise: {e}"));
            Value::Null
        }
    }
}

#[cfg(not(feature = "media"))]
fn media_info(_: &mut Vec<String>) -> Value {
    Value::Null
}

/// Asks the trainer binary (`pmv-data-train info --json`) what it runs on.
/// `status` is `ok`, `missing` (not found or not runnable) or `failed` (it ran and
/// failed, or printed no JSON). Not finding it is a problem when this build has the
/// `train` feature (the trainer is built beside pmv-data) or `PMV_DATA_TRAIN` names it.
fn trainer_info(problems: &mut Vec<String>) -> Value {
    let exe = crate::trainer::path();
    let expected = cfg!(feature = "train") || std::env::var_os("PMV_DATA_TRAIN").is_some();
    let failed = |why: String| ("failed", Some(why), Value::Null);
    let (status, error, info) = match std::process::Command::new(&exe)
        .args(["info", "--json"])
        .output()
    {
        Ok(out) if !out.status.success() => failed(format!(
            "{} info failed ({}): {}",
            exe.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(out) => match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(v) if v.is_object() => ("ok", None, v),
            _ => failed(format!("{} info printed no JSON", exe.display())),
        },
        Err(e) => (
            "missing",
            Some(format!("cannot run the trainer {}: {e}", exe.display())),
            Value::Null,
        ),
    };
    if let Some(e) = &error
        && (status == "failed" || expected)
    {
        let hint = if std::env::var_os("PMV_DATA_TRAIN").is_some() {
            "PMV_DATA_TRAIN names it"
        } else {
            "`cargo build --release` builds it beside pmv-data; PMV_DATA_TRAIN names another"
        };
        problems.push(format!("{e}; train, pretrain and eval need it ({hint})"));
    }
    json!({ "path": exe, "status": status, "error": error, "info": info })
}

/// The `trainer` line of the text report.
fn trainer_line(t: &Value) -> String {
    let path = Path::new(t["path"].as_str().unwrap_or("?")).display();
    let i = &t["info"];
    match t["status"].as_str() {
        Some("ok") => format!(
            "{path}: libtorch {} from {}; CUDA {} ({} devices), cuDNN {}, NCCL {}, {} CPU threads",
            i["libtorch"].as_str().unwrap_or("?"),
            i["lib_dir"].as_str().unwrap_or("?"),
            if i["cuda_available"] == true {
                "yes"
            } else {
                "no"
            },
            i["cuda_devices"],
            if i["cudnn"] == true { "yes" } else { "no" },
            if i["nccl"] == true { "yes" } else { "no" },
            i["cpu_threads"]
        ),
        Some("missing") if !cfg!(feature = "train") => format!(
            "{path} not found (this build has no `train` feature; train, pretrain and \
             eval need the trainer of a build with it)"
        ),
        Some("missing") => format!("{path} not found"),
        _ => format!("{path} does not work"),
    }
}
