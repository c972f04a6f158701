//! `pmv-data doctor`: what this build and this machine can do. Writes nothing.

use anyhow::Result;
use pmv_data::catalog::{Catalog, MIGRATIONS};
use serde_json::json;

use super::App;
use crate::exit::Exit;
use crate::output::outln;

pub fn run(app: &App) -> Result<Exit> {
    let mut problems: Vec<String> = vec![];
    let catalog_path = app.root.catalog_path();
    let catalog = match Catalog::open_existing_readonly(&catalog_path) {
        Ok(Some(c)) => json!({ "path": catalog_path, "schema_version": c.schema_version()? }),
        Ok(None) => json!({ "path": catalog_path, "schema_version": null }),
        Err(e) => {
            problems.push(e.to_string());
            json!({ "path": catalog_path, "error": e.to_string() })
        }
    };
    let media = media_info(&mut problems);
    let train = train_info(&mut problems);
    let doc = json!({
        "pmv_data": pmv_data::VERSION,
        "features": pmv_data::features(),
        "schema_version": MIGRATIONS.len(),
        "root": app.root.path(),
        "catalog": catalog,
        "media": media,
        "train": train,
        "problems": problems,
    });
    if app.json {
        app.print_json(&doc)?;
    } else {
        outln!(
            "pmv-data {} (features: {})",
            pmv_data::VERSION,
            pmv_data::features().join(", ")
        );
        outln!("root      {}", app.root.path().display());
        match doc["catalog"]["schema_version"].as_u64() {
            Some(v) => outln!("catalog   schema v{v} (this build: v{})", MIGRATIONS.len()),
            None => outln!("catalog   none yet"),
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
                        d[0].as_str().unwrap_or("?"),
                        if d[1] == true { "" } else { " (missing)" }
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
        if train.is_null() {
            outln!("train     not built (feature `train` off)");
        } else {
            outln!(
                "train     libtorch {} from {}; CUDA {} ({} devices), cuDNN {}, {} CPU threads",
                train["libtorch"].as_str().unwrap_or("?"),
                train["lib_dir"].as_str().unwrap_or("?"),
                if train["cuda_available"] == true {
                    "yes"
                } else {
                    "no"
                },
                train["cuda_devices"],
                if train["cudnn"] == true { "yes" } else { "no" },
                train["cpu_threads"]
            );
        }
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
fn media_info(problems: &mut Vec<String>) -> serde_json::Value {
    match pmv_data::media::info() {
        Ok(info) => {
            if !info.decoders.iter().any(|(n, ok)| n == "h264" && *ok) {
                problems.push("FFmpeg has no H.264 decoder".into());
            }
            serde_json::to_value(info).unwrap_or_default()
        }
        Err(e) => {
            problems.push(format!("FFmpeg failed to initialise: {e}"));
            serde_json::Value::Null
        }
    }
}

#[cfg(not(feature = "media"))]
fn media_info(_: &mut Vec<String>) -> serde_json::Value {
    serde_json::Value::Null
}

/// Asks the trainer binary, which is the only one that loads libtorch.
#[cfg(feature = "train")]
fn train_info(problems: &mut Vec<String>) -> serde_json::Value {
    let exe = crate::trainer::path();
    match std::process::Command::new(&exe)
        .args(["info", "--json"])
        .output()
    {
        Ok(out) if out.status.success() => match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{} printed no JSON: {e}", exe.display()));
                serde_json::Value::Null
            }
        },
        Ok(out) => {
            problems.push(format!(
                "{} info failed ({}): {}",
                exe.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            serde_json::Value::Null
        }
        Err(e) => {
            problems.push(format!("cannot run the trainer {}: {e}", exe.display()));
            serde_json::Value::Null
        }
    }
}

#[cfg(not(feature = "train"))]
fn train_info(_: &mut Vec<String>) -> serde_json::Value {
    serde_json::Value::Null
}
