//! Run folders as Hugging Face users pick them up: a patch-8 ViT trained at 40x40
//! exports `image_size` 40 and a `preprocessor_config.json`; `transformers`'
//! `AutoImageProcessor` and `pipeline("video-classification")` on the run folder give
//! every sample the top class and probability `pmv-data eval` gives; numpy reads
//! `probabilities.npy` as `predictions.csv` lists it; and `train` and `eval` refuse an
//! input that is not a multiple of the patch with the same message.

use std::path::Path;
use std::process::Command;

use pmv_shard::synth::{SynthSpec, write_shards};

use crate::util::{Env, Out, repo, s, trainer};

/// `tests/python/<script> ARGS` with the project's Python.
fn python(script: &str, args: &[&str]) -> std::process::Output {
    Command::new(repo().join(".venv/bin/python"))
        .arg(repo().join("tests/python").join(script))
        .args(args)
        .output()
        .unwrap()
}

fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_vit_run_folder_classifies_in_transformers_as_eval_does() {
    let env = Env::new();
    let data = env.path("shards");
    // Frames taller than the input: the evaluation's centre crop is the processor's.
    write_shards(
        &data,
        &SynthSpec {
            classes: 3,
            splits: vec![("train".into(), 6), ("val".into(), 3)],
            frames: 4,
            fps: 6.0,
            clips: 1,
            height: 48,
            width: 40,
            samples_per_shard: 16,
            seed: 3,
            ..Default::default()
        },
    )
    .unwrap();
    // A tiny random transformers checkpoint with 8x8 patches, trained at 40x40.
    let ck = env.path("pretrained");
    let out = python(
        "videomae_reference.py",
        &[
            s(&ck),
            "classify",
            "--height",
            "40",
            "--width",
            "40",
            "--patch",
            "8",
            "--frames",
            "4",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let init = ck.join("model.safetensors");
    let run_dir = env.path("vit");
    let train = |input: &str| {
        let mut c = trainer();
        c.args([
            "--json",
            "--quiet",
            "train",
            "--shards",
            s(&data),
            "--model",
            "videomae",
            "--init",
            s(&init),
            "--input",
            input,
            "--epochs",
            "6",
            "--lr",
            "2e-3",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--out",
            s(&run_dir),
        ]);
        Out::of(c)
    };

    // One rule for train and eval: multiples of the patch, never rounded.
    let refused = "--input 36x36: a ViT needs multiples of its 8 pixel patches";
    let r = train("36x36");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains(refused), "{}", r.stderr);
    assert!(!run_dir.join("model.safetensors").exists());

    let r = train("40x40");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let cfg = json_file(&run_dir.join("config.json"));
    assert_eq!(
        (&cfg["image_size"], &cfg["patch_size"]),
        (&40.into(), &8.into())
    );
    assert_eq!(cfg["id2label"]["1"], "square_left");
    assert_eq!(cfg["label2id"]["square_left"], 1);
    let pre = json_file(&run_dir.join("preprocessor_config.json"));
    assert_eq!(pre["size"]["shortest_edge"], 40);
    assert_eq!(
        pre["crop_size"],
        serde_json::json!({"height": 40, "width": 40})
    );
    // Beside the checkpoints too, so any of them is a transformers folder.
    assert_eq!(
        json_file(&run_dir.join("checkpoints/preprocessor_config.json")),
        pre
    );

    let r = env.run(&["eval", "--run", s(&run_dir), "--input", "36x36"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains(refused), "{}", r.stderr);

    let e = env.run(&[
        "--json",
        "--quiet",
        "eval",
        "--run",
        s(&run_dir),
        "--views",
        "1x1",
        "--device",
        "cpu",
    ]);
    assert_eq!(e.code, 0, "{}", e.stderr);
    let ev = e.json();
    let csv_path = Path::new(ev["predictions_csv"].as_str().unwrap()).to_owned();
    assert_eq!(
        Path::new(ev["probabilities_npy"].as_str().unwrap()),
        csv_path.with_file_name("probabilities.npy")
    );
    let eval_dir = csv_path.parent().unwrap();
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let rows: Vec<(String, String, f32)> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_owned(), f[3].to_owned(), f[4].parse().unwrap())
        })
        .collect();
    assert_eq!(rows.len(), 9);

    let work = env.path("videos");
    std::fs::create_dir_all(&work).unwrap();
    let val = data.join("val/val-000000.tar");
    let out = python(
        "hf_interop.py",
        &[s(&run_dir), s(eval_dir), s(&work), s(&val)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hf: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(hf["processor"], "VideoMAEImageProcessor");
    assert_eq!(hf["npy_shape"], serde_json::json!([9, 3]));
    let cfg = &hf["processor_config"];
    assert_eq!(cfg["size"]["shortest_edge"], 40);
    assert_eq!(cfg["image_mean"], serde_json::json!([0.485, 0.456, 0.406]));
    let ways: Vec<&str> = if hf["frames"].is_null() {
        vec!["file"]
    } else {
        vec!["file", "frames"]
    };
    for way in ways {
        for (key, predicted, confidence) in &rows {
            let got = &hf[way][key];
            assert_eq!(
                got[0],
                predicted.as_str(),
                "{way} {key}: {got} vs eval's {predicted}"
            );
            let p = got[1].as_f64().unwrap();
            // The same pixels; only the order of float operations differs.
            assert!(
                (p - f64::from(*confidence)).abs() < 1e-5,
                "{way} {key}: {p} vs eval's {confidence}"
            );
        }
    }

    // Without preprocessor_config.json the folder is not a transformers pipeline's.
    let bare = env.path("bare");
    std::fs::create_dir_all(&bare).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(run_dir.join(f), bare.join(f)).unwrap();
    }
    let out = python("hf_interop.py", &[s(&bare), s(eval_dir), s(&work), s(&val)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("preprocessor_config.json"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
