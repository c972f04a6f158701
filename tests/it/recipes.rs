//! The shipped recipe files (`manifests/recipes`) against the frame recipes they name:
//! each names a built-in frame recipe in `[recipe] shards`, and what its training and
//! evaluation ask of those shards is there: no more test clips than stored, no scale or
//! crop that would blow the stored frames up, and room for distinct crops along the long
//! side when it tests several.

use std::path::PathBuf;

use pmv_core::frame_recipe::builtin;

use crate::util::repo;

fn pair(v: &toml::Value) -> (f64, f64) {
    match v {
        toml::Value::String(s) => {
            let (a, b) = s.split_once('x').expect("HxW");
            (a.parse().unwrap(), b.parse().unwrap())
        }
        toml::Value::Array(a) => (
            a[0].as_float()
                .or(a[0].as_integer().map(|i| i as f64))
                .unwrap(),
            a[1].as_float()
                .or(a[1].as_integer().map(|i| i as f64))
                .unwrap(),
        ),
        other => panic!("not a pair: {other}"),
    }
}

#[test]
fn recipe_files_fit_the_shards_they_name() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("manifests/recipes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 9);
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let doc: toml::Table = toml::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let shards = doc["recipe"]
            .get("shards")
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("{name}: [recipe] names no shards"));
        let p = builtin(shards)
            .unwrap_or_else(|| panic!("{name}: {shards} is not a built-in frame recipe"))
            .params;
        let (short, long) = (p.height.min(p.width) as f64, p.height.max(p.width) as f64);
        for command in ["train", "pretrain", "eval"] {
            let Some(t) = doc.get(command).and_then(|t| t.as_table()) else {
                continue;
            };
            let at = format!("{name} [{command}]");
            // The frame a crop is taken from: the stored one, or scaled to a short side.
            let mut largest_short = 0.0f64;
            if let Some(j) = t.get("jitter-scales") {
                largest_short = largest_short.max(pair(j).1);
            }
            let test_scale = t
                .get("test-scale")
                .and_then(|v| v.as_integer())
                .map(|s| s as f64);
            if let Some(s) = test_scale {
                largest_short = largest_short.max(s);
            }
            assert!(
                largest_short <= short,
                "{at}: scales the short side to {largest_short}, the shards store {short}"
            );
            // Evaluation takes the run's input unless it names its own.
            let input = t
                .get("input")
                .or_else(|| doc.get("train").and_then(|tr| tr.get("input")))
                .map(pair);
            if let Some((h, w)) = input {
                assert!(
                    h.min(w) <= short && h.max(w) <= long,
                    "{at}: input {h}x{w} is larger than the stored {}x{}",
                    p.height,
                    p.width
                );
            }
            if let Some(v) = t.get("views").and_then(|v| v.as_str()) {
                let (clips, crops) = v.split_once('x').unwrap();
                if clips != "all" {
                    let k: u32 = clips.parse().unwrap();
                    assert!(
                        k <= p.clips,
                        "{at}: {k} test clips, the shards store {}",
                        p.clips
                    );
                }
                let crops: u32 = crops.parse().unwrap();
                if crops > 1 {
                    // The long side at the test scale must be longer than the crop's.
                    let s = test_scale.unwrap_or(short);
                    let (h, w) = input.unwrap_or((p.height as f64, p.width as f64));
                    assert!(
                        long * s / short > h.max(w),
                        "{at}: {crops} crops of {h}x{w} along a long side of {}: no room",
                        long * s / short
                    );
                }
            }
        }
    }
}
