//! Training and evaluation end to end on synthetic shards: learning, determinism,
//! resume after SIGKILL, bad samples, the catalog path through `pmv-data train|eval`,
//! and a ViT run whose exported checkpoint `transformers` loads.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pmv_pipeline::sharding::{SampleInput, SampleMeta, ShardReader, ShardWriter, sample_key};
use pmv_shard::synth::{SynthSpec, write_shards};

use crate::util::{Env, Out, repo, s, trainer};

/// Square moving right / left / turning clockwise / anticlockwise: the same look, four
/// motions, so only motion tells the classes apart.
pub(crate) fn motion_shards(dir: &Path, train: usize, val: usize) {
    write_shards(
        dir,
        &SynthSpec {
            classes: 4,
            splits: vec![("train".into(), train), ("val".into(), val)],
            frames: 8,
            fps: 6.0,
            clips: 2,
            height: 32,
            width: 32,
            samples_per_shard: 16,
            seed: 5,
            ..Default::default()
        },
    )
    .unwrap();
}

/// Common training options for a fast CPU run.
pub(crate) fn small(out: &Path, epochs: u32) -> Vec<String> {
    [
        "--json",
        "--quiet",
        "train",
        "--model",
        "tiny3d",
        "--width",
        "8",
        "--epochs",
        &epochs.to_string(),
        "--batch-size",
        "8",
        "--flip",
        "0",
        "--crop-scale",
        "0.7,1",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--out",
        s(out),
    ]
    .iter()
    .map(|x| x.to_string())
    .collect()
}

fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn tiny3d_learns_motion_and_reports() {
    let env = Env::new();
    let data = env.path("shards");
    motion_shards(&data, 24, 8);
    let out = env.path("run");
    let mut c = trainer();
    c.args(small(&out, 10))
        .args(["--shards", s(&data), "--lr", "3e-3"]);
    let r = Out::of(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    // Four classes that differ only in motion: chance is 25%.
    let top1 = v["top1"].as_f64().unwrap();
    assert!(top1 >= 0.6, "val top-1 {top1}: {v}");
    assert_eq!(v["steps"], 120);
    assert_eq!(v["bad_samples"], 0);
    for f in [
        "model.safetensors",
        "model.json",
        "run.json",
        "state.json",
        "summary.json",
        "loss.png",
        "accuracy.png",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let l = losses(&out);
    assert!(l.last().unwrap() < &l[0], "loss did not fall: {l:?}");

    // Evaluation with every view: 2 stored clips x 3 crops.
    let mut c = trainer();
    c.args([
        "--json",
        "--quiet",
        "eval",
        "--run",
        s(&out),
        "--device",
        "cpu",
    ]);
    let e = Out::of(c);
    assert_eq!(e.code, 0, "{}", e.stderr);
    let ev = e.json();
    assert_eq!(ev["views"], "2x3");
    assert_eq!(ev["samples"], 32);
    assert!(ev["top1"].as_f64().unwrap() >= 0.6, "{ev}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval-val-2x3/eval.json")).unwrap())
            .unwrap();
    assert_eq!(report["per_class"].as_array().unwrap().len(), 4);
    assert_eq!(report["per_class"][1]["name"], "square_left");
    assert_eq!(report["confusion"].as_array().unwrap().len(), 4);
    let csv = std::fs::read_to_string(out.join("eval-val-2x3/predictions.csv")).unwrap();
    assert_eq!(csv.lines().count(), 33);
    assert!(csv.starts_with("key,id,labels,predicted,confidence,correct,top5\n"));
    assert!(
        csv.contains("synth-val-000001"),
        "ids come from the samples"
    );
    assert!(
        std::fs::read(out.join("eval-val-2x3/confusion.png"))
            .unwrap()
            .starts_with(b"\x89PNG")
    );

    // A second run in the same place needs --resume; a finished run does not resume.
    let mut c = trainer();
    c.args(small(&out, 10)).args(["--shards", s(&data)]);
    let again = Out::of(c);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(again.stderr.contains("--resume"), "{}", again.stderr);
}

#[test]
fn a_seed_fixes_the_loss_curve() {
    let env = Env::new();
    let data = env.path("shards");
    motion_shards(&data, 8, 2);
    let go = |name: &str, seed: &str| {
        let out = env.path(name);
        let mut c = trainer();
        c.args(small(&out, 2)).args([
            "--shards",
            s(&data),
            "--seed",
            seed,
            "--log-every",
            "1",
            "--workers",
            "2",
        ]);
        let r = Out::of(c);
        assert_eq!(r.code, 0, "{}", r.stderr);
        losses(&out)
    };
    let a = go("a", "7");
    let b = go("b", "7");
    let c = go("c", "8");
    assert_eq!(a.len(), 8);
    assert_eq!(a, b, "same seed, same curve");
    assert_ne!(a, c, "another seed, another curve");
}

fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    // The safetensors payload without its header: equal weights, equal bytes.
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut out = vec![];
    for (name, v) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        let o = v["data_offsets"].as_array().unwrap();
        let (a, b) = (
            o[0].as_u64().unwrap() as usize,
            o[1].as_u64().unwrap() as usize,
        );
        out.push((name.clone(), bytes[8 + n + a..8 + n + b].to_vec()));
    }
    out.sort();
    out
}

/// Starts the trainer with `args` and kills it (SIGKILL) as soon as the run in `dir`
/// has its first checkpoint on disk.
pub(crate) fn kill_at_first_checkpoint(args: &[String], dir: &Path) {
    let mut c = trainer();
    c.args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    let start = Instant::now();
    while !dir.join("state.json").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it could be killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn resume_after_sigkill_ends_where_an_uninterrupted_run_ends() {
    let env = Env::new();
    let data = env.path("shards");
    motion_shards(&data, 12, 2);
    let opts = |out: &Path| {
        let mut v = small(out, 4);
        v.extend(
            [
                "--shards",
                s(&data),
                "--save-every",
                "2",
                "--log-every",
                "1",
                "--mixup",
                "0.4",
                "--cutmix",
                "1.0",
            ]
            .iter()
            .map(|x| x.to_string()),
        );
        v
    };
    let whole = env.path("whole");
    let mut c = trainer();
    c.args(opts(&whole));
    let r = Out::of(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["steps"], 24);

    // Kill the second run as soon as its first checkpoint is on disk.
    let cut = env.path("cut");
    kill_at_first_checkpoint(&opts(&cut), &cut);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cut.join("state.json")).unwrap()).unwrap();
    assert!(!state["finished"].as_bool().unwrap());
    assert!(!cut.join("model.safetensors").exists());

    let mut c = trainer();
    c.args(opts(&cut)).arg("--resume");
    let r = Out::of(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["steps"], 24);
    assert!(v["resumed_from_step"].as_u64().unwrap() >= 2);
    assert_eq!(
        tensors(&whole.join("model.safetensors")),
        tensors(&cut.join("model.safetensors")),
        "resumed weights differ from the uninterrupted run's"
    );
    assert_eq!(
        losses(&whole),
        losses(&cut),
        "the metrics after resume differ"
    );

    // Resuming with other options is refused, naming them.
    let mut c = trainer();
    let mut o = opts(&cut);
    o.push("--resume".into());
    o.extend(["--lr".to_string(), "0.5".to_string()]);
    c.args(o);
    let r = Out::of(c);
    assert_ne!(r.code, 0);
}

/// Writes a shard whose samples are fine except one of another shape and one whose
/// label is outside the classes.
fn shard_with_bad_samples(from: &Path, path: &Path) {
    let good = [2usize, 8, 32, 32, 3];
    let odd = [2usize, 8, 16, 32, 3];
    let src = ShardReader::open(from).unwrap();
    let mut w = ShardWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..src.len() {
        let smp = src.sample(i).unwrap();
        let mut meta = smp.meta().unwrap();
        let (shape, frames, label): ([usize; 5], Vec<u8>, u32) = match i {
            3 => (
                odd,
                smp.raw_frames().unwrap()[..odd.iter().product::<usize>()].to_vec(),
                smp.label.unwrap(),
            ),
            5 => {
                meta.labels = vec![99];
                (good, smp.raw_frames().unwrap().to_vec(), 99)
            }
            _ => (good, smp.raw_frames().unwrap().to_vec(), smp.label.unwrap()),
        };
        w.append(&SampleInput {
            key: smp.key,
            shape,
            frames: pmv_shard::FrameData::Raw(&frames),
            label: Some(label),
            meta: &meta,
            jpg: None,
            txt: None,
        })
        .unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn bad_samples_are_counted_reported_and_never_replaced() {
    let env = Env::new();
    let data = env.path("shards");
    motion_shards(&data, 8, 2);
    // Replace the first training shard with one holding two bad samples.
    let first = data.join("train/train-000000.tar");
    let copy = env.path("orig.tar");
    std::fs::copy(&first, &copy).unwrap();
    shard_with_bad_samples(&copy, &first);
    // And a shard that is not a tar at all.
    std::fs::write(data.join("train/train-000099.tar"), b"not a tar file").unwrap();

    let out = env.path("run");
    let mut c = trainer();
    c.args(small(&out, 1)).args(["--shards", s(&data)]);
    let r = Out::of(c);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["bad_samples"], 3, "{v}");
    let errors = std::fs::read_to_string(out.join("errors.jsonl")).unwrap();
    assert_eq!(errors.lines().count(), 3, "{errors}");
    assert!(errors.contains("train-000099.tar"));
    assert!(errors.contains(&format!("\"key\":\"{}\"", sample_key("synth-train-000003"))));
    assert!(
        errors.contains("label 99 is outside the 4 classes"),
        "{errors}"
    );
    assert!(errors.contains("[2, 8, 16, 32, 3]"), "{errors}");
    // Training went on with the good samples.
    assert_eq!(v["steps"], 4);

    let strict = env.path("strict");
    let mut c = trainer();
    c.args(small(&strict, 1))
        .args(["--shards", s(&data), "--strict"]);
    let r = Out::of(c);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("train-000099.tar"), "{}", r.stderr);
}

/// Registers synthetic shards in a catalog as the shard stage would: items through a
/// real ingest, then recipe, shard and sample rows.
fn catalog_with_shards(env: &Env) -> String {
    let mut manifest = String::new();
    for split in ["train", "val"] {
        let n = if split == "train" { 12 * 4 } else { 4 * 4 };
        for j in 0..n {
            manifest.push_str(&format!(
                "{{\"id\": \"synth-{split}-{j:06}\", \"label\": {}, \"split\": \"{split}\", \"urls\": [\"http://127.0.0.1:9/{j}.mp4\"]}}\n",
                j % 4
            ));
        }
    }
    let classes = env.write("classes.txt", pmv_shard::synth::class_names(4).join("\n"));
    let m = env.write("items.jsonl", manifest);
    let r = env.ingest(&[
        "--dataset",
        "moving",
        "--format",
        "jsonl",
        "--classes",
        s(&classes),
        s(&m),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let recipe = "r1a2b3";
    let rel_dir = format!("shards/moving/tiny-{recipe}");
    let dir = env.root.join(&rel_dir);
    write_shards(
        &dir,
        &SynthSpec {
            classes: 4,
            splits: vec![("train".into(), 12), ("val".into(), 4)],
            frames: 8,
            fps: 6.0,
            clips: 2,
            height: 32,
            width: 32,
            samples_per_shard: 16,
            seed: 5,
            ..Default::default()
        },
    )
    .unwrap();
    let db = rusqlite::Connection::open(env.root.join("catalog.sqlite")).unwrap();
    db.execute(
        "INSERT INTO recipes (id, name, params, created_at) VALUES (?1, 'tiny', '{\"frames\": 8}', 0)",
        [recipe],
    )
    .unwrap();
    for split in ["train", "val"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(split))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "tar"))
            .collect();
        files.sort();
        for (seq, f) in files.iter().enumerate() {
            let reader = ShardReader::open(f).unwrap();
            let rel = format!(
                "{rel_dir}/{split}/{}",
                f.file_name().unwrap().to_string_lossy()
            );
            let (sha, bytes) = pmv_core::util::sha256_file(f).unwrap();
            db.execute(
                "INSERT INTO shards (dataset_id, recipe_id, split, seq, path, sha256, bytes, samples, state, created_at) \
                 VALUES ((SELECT id FROM datasets WHERE name = 'moving'), ?1, ?2, ?3, ?4, ?5, ?6, ?7, 'live', 0)",
                rusqlite::params![recipe, split, seq as i64, rel, sha, bytes as i64, reader.len() as i64],
            )
            .unwrap();
            let shard_id = db.last_insert_rowid();
            for (i, idx) in reader.index().iter().enumerate() {
                let meta: SampleMeta = reader.sample(i).unwrap().meta().unwrap();
                db.execute(
                    "INSERT INTO samples (shard_id, item_id, ordinal, label, frames_offset, frames_bytes, members) \
                     VALUES (?1, (SELECT id FROM items WHERE key = ?2), ?3, ?4, ?5, ?6, ?7)",
                    rusqlite::params![
                        shard_id,
                        meta.id,
                        i as i64,
                        meta.labels[0] as i64,
                        idx.frames.offset as i64,
                        idx.frames.size as i64,
                        serde_json::to_string(idx).unwrap()
                    ],
                )
                .unwrap();
            }
        }
    }
    rel_dir
}

#[test]
fn pmv_data_train_and_eval_from_the_catalog() {
    let env = Env::new();
    let rel_dir = catalog_with_shards(&env);
    // `pmv-data train --help` is the trainer's help.
    let help = env.run(&["train", "--help"]);
    assert_eq!(help.code, 0, "{}", help.stderr);
    assert!(
        help.stdout.contains("--batch-size") && help.stdout.contains("--resume"),
        "{}",
        help.stdout
    );

    let r = env.run(&[
        "--json",
        "--quiet",
        "train",
        "--dataset",
        "moving",
        "--model",
        "tiny3d",
        "--width",
        "8",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--flip",
        "0",
        "--device",
        "cpu",
        "--verify",
        "--out",
        "runs/moving-tiny",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["data"], "moving");
    assert_eq!(v["steps"], 12);
    let run_dir = env.root.join("runs/moving-tiny");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(cfg["source"]["kind"], "catalog");
    assert_eq!(cfg["source"]["recipe_name"], "tiny");
    assert_eq!(cfg["classes"][3], "square_anticlockwise");
    assert_eq!(
        cfg["train_shards"][0]["path"],
        format!("{rel_dir}/train/train-000000.tar")
    );
    // The catalog records the run.
    let runs: i64 =
        env.query("SELECT count(*) FROM runs WHERE command = 'train' AND status = 'ok'");
    assert_eq!(runs, 1);

    let e = env.run(&[
        "--json",
        "--quiet",
        "eval",
        "--run",
        "runs/moving-tiny",
        "--views",
        "1x1",
        "--device",
        "cpu",
    ]);
    assert_eq!(e.code, 0, "{}", e.stderr);
    let ev = e.json();
    assert_eq!(ev["samples"], 16);
    assert!(run_dir.join("eval-val-1x1/eval.json").is_file());

    // A shard whose bytes no longer match the catalog fails --verify and is reported.
    let shard = env.root.join(format!("{rel_dir}/val/val-000000.tar"));
    let mut bytes = std::fs::read(&shard).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&shard, bytes).unwrap();
    let e = env.run(&[
        "--json",
        "--quiet",
        "eval",
        "--run",
        "runs/moving-tiny",
        "--verify",
        "--device",
        "cpu",
    ]);
    assert_eq!(e.code, 1, "{}", e.stderr);
    assert!(e.stderr.contains("SHA-256"), "{}", e.stderr);
    let missing = env.run(&["eval", "--run", "runs/nothing"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("not a run directory"),
        "{}",
        missing.stderr
    );
}

#[test]
fn vit_fine_tunes_from_a_transformers_checkpoint_and_exports_one() {
    let env = Env::new();
    let data = env.path("shards");
    write_shards(
        &data,
        &SynthSpec {
            classes: 3,
            splits: vec![("train".into(), 4), ("val".into(), 2)],
            frames: 4,
            fps: 6.0,
            clips: 1,
            height: 32,
            width: 32,
            samples_per_shard: 8,
            seed: 1,
            ..Default::default()
        },
    )
    .unwrap();
    // A tiny random pre-training checkpoint from transformers.
    let ck = env.path("pretrained");
    let py = repo().join(".venv/bin/python");
    let out = Command::new(&py)
        .arg(repo().join("tests/python/videomae_reference.py"))
        .args([
            s(&ck),
            "pretrain",
            "--mean-pooling",
            "0",
            "--height",
            "32",
            "--width",
            "32",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let run_dir = env.path("vit");
    let mut c = trainer();
    c.args([
        "--json",
        "train",
        "--shards",
        s(&data),
        "--model",
        "videomae",
        "--init",
        s(&ck.join("model.safetensors")),
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--flip",
        "0",
        "--device",
        "cpu",
        "--mixup",
        "0.8",
        "--clip-grad",
        "1.0",
        "--out",
        s(&run_dir),
    ]);
    let r = Out::of(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert!(r.stderr.contains("head re-initialised"), "{}", r.stderr);
    let init = &v["init"];
    assert_eq!(init["reinitialised"].as_array().unwrap().len(), 4, "{init}");
    assert!(
        init["set_aside"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "decoder.norm.weight")
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["num_attention_heads"], 3);
    assert_eq!(cfg["layer_norm_eps"], 1e-12);
    assert_eq!(cfg["use_mean_pooling"], true);
    assert_eq!(cfg["id2label"]["2"], "square_clockwise");

    // transformers loads the exported run with nothing missing or left over, and
    // computes the logits our eval computes.
    let script = r#"
import json, sys, numpy as np, torch
from transformers import VideoMAEForVideoClassification
m, info = VideoMAEForVideoClassification.from_pretrained(sys.argv[1], output_loading_info=True)
assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
print(json.dumps({"labels": m.config.num_labels}))
"#;
    let out = Command::new(&py)
        .arg("-c")
        .arg(script)
        .arg(&run_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"labels\": 3"));

    // A checkpoint of another width is refused for a preset model.
    let mut c = trainer();
    c.args([
        "train",
        "--shards",
        s(&data),
        "--model",
        "vit-s",
        "--init",
        s(&ck.join("model.safetensors")),
        "--device",
        "cpu",
        "--out",
        s(&env.path("refused")),
    ]);
    let r = Out::of(c);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("not --model vit-s"), "{}", r.stderr);
}

#[test]
fn official_checkpoints_convert_and_fine_tune_with_their_head() {
    let env = Env::new();
    let work = env.path("convert");
    let py = repo().join(".venv/bin/python");
    let out = Command::new(&py)
        .arg(repo().join("tests/python/convert_roundtrip.py"))
        .arg(&work)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cases = String::from_utf8_lossy(&out.stdout);
    assert_eq!(cases.lines().count(), 3, "{cases}");

    // The converted fine-tuned checkpoint has a 5-class head: on 5 classes it is kept.
    let data = env.path("shards");
    write_shards(
        &data,
        &SynthSpec {
            classes: 5,
            splits: vec![("train".into(), 2), ("val".into(), 1)],
            frames: 4,
            fps: 6.0,
            clips: 1,
            height: 32,
            width: 32,
            samples_per_shard: 8,
            seed: 2,
            ..Default::default()
        },
    )
    .unwrap();
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
        s(&work.join("finetuned/model.safetensors")),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--out",
        s(&env.path("run")),
    ]);
    let r = Out::of(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let init = &r.json()["init"];
    assert_eq!(init["reinitialised"].as_array().unwrap().len(), 0, "{init}");
    assert_eq!(init["set_aside"].as_array().unwrap().len(), 0, "{init}");
}

/// Rewrites every shard under `dir` through `edit`, which may change a sample's metadata
/// and label.
fn rewrite_shards(dir: &Path, edit: impl Fn(&mut SampleMeta, &mut Option<u32>)) {
    for split in std::fs::read_dir(dir).unwrap() {
        let split = split.unwrap().path();
        if !split.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&split).unwrap() {
            let f = f.unwrap().path();
            let src = ShardReader::open(&f).unwrap();
            let tmp = f.with_extension("new");
            let mut w = ShardWriter::new(std::fs::File::create(&tmp).unwrap());
            for i in 0..src.len() {
                let smp = src.sample(i).unwrap();
                let mut meta = smp.meta().unwrap();
                let mut label = smp.label;
                edit(&mut meta, &mut label);
                w.append(&SampleInput {
                    key: smp.key,
                    shape: smp.shape,
                    frames: pmv_shard::FrameData::Raw(smp.raw_frames().unwrap()),
                    label,
                    meta: &meta,
                    jpg: None,
                    txt: None,
                })
                .unwrap();
            }
            w.finish().unwrap();
            drop(src);
            std::fs::rename(&tmp, &f).unwrap();
        }
    }
}

#[test]
fn multi_label_runs_train_a_sigmoid_head_and_report_map() {
    let env = Env::new();
    let data = env.path("shards");
    motion_shards(&data, 6, 2);
    // Every item also carries the next class; no .cls member, labels from .json only.
    rewrite_shards(&data, |meta, label| {
        let c = meta.labels[0];
        meta.labels = vec![c, (c + 1) % 4];
        *label = None;
    });
    let out = env.path("run");
    let mut c = trainer();
    c.args(small(&out, 2))
        .args(["--shards", s(&data), "--multi-label", "--mixup", "0.5"]);
    let r = Out::of(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(cfg["multi_label"], true);
    let mut c = trainer();
    c.args([
        "--json",
        "--quiet",
        "eval",
        "--run",
        s(&out),
        "--views",
        "1x1",
        "--device",
        "cpu",
    ]);
    let e = Out::of(c);
    assert_eq!(e.code, 0, "{}", e.stderr);
    let ev = e.json();
    let map = ev["map"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&map), "{ev}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval-val-1x1/eval.json")).unwrap())
            .unwrap();
    assert!(report["confusion"].is_null());
    assert!(report["per_class"][0]["average_precision"].is_number());
    let csv = std::fs::read_to_string(out.join("eval-val-1x1/predictions.csv")).unwrap();
    assert!(
        csv.lines().nth(1).unwrap().contains('|'),
        "two labels per row: {csv}"
    );
}

#[test]
fn sigterm_checkpoints_and_resume_finishes() {
    let env = Env::new();
    let data = env.path("shards");
    motion_shards(&data, 12, 2);
    let out = env.path("run");
    let mut opts = small(&out, 40);
    opts.extend(
        ["--shards", s(&data), "--save-every", "0"]
            .iter()
            .map(|x| x.to_string()),
    );
    // Through `pmv-data train`, as a user (or cron, or systemd) starts it: the signal
    // sent to the process they started must reach the trainer, and its status come back.
    let mut c = env.command();
    c.args(&opts)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let start = Instant::now();
    // Wait until training runs (the first epoch's checkpoint), then ask it to stop.
    while !out.join("state.json").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "training did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted at step"), "{stderr}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["finished"], false);
    let at = state["step"].as_u64().unwrap();
    assert!(at > 0 && at < 240, "{state}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "interrupted");

    let mut c = trainer();
    c.args(&opts).arg("--resume");
    let r = Out::of(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["steps"], 240);
}

#[test]
fn model_ema_with_repeated_views_and_erasing_resumes_exactly_and_evaluates() {
    let env = Env::new();
    let data = env.path("shards");
    motion_shards(&data, 4, 1);
    let opts = |out: &Path| {
        let mut v = small(out, 3);
        v.extend(
            [
                "--shards",
                s(&data),
                "--save-every",
                "1",
                "--log-every",
                "1",
                "--model-ema",
                "--model-ema-decay",
                "0.9",
                "--repeated-aug",
                "2",
                "--random-erase",
                "0.5",
                "--erase-count",
                "2",
            ]
            .iter()
            .map(|x| x.to_string()),
        );
        v
    };
    let whole = env.path("whole");
    let mut c = trainer();
    c.args(opts(&whole));
    let r = Out::of(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    // 16 samples in batches of 8, 2 steps an epoch, each of 16 clips.
    assert_eq!(v["steps"], 6);
    assert!(v["val_ema"]["top1"].is_number(), "{v}");
    let model = tensors(&whole.join("model.safetensors"));
    let ema = tensors(&whole.join("model-ema.safetensors"));
    let names = |t: &[(String, Vec<u8>)]| t.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&model),
        names(&ema),
        "the average has the model's names"
    );
    assert_ne!(model, ema, "the average is not the model");
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(whole.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["hyper"]["repeated_aug"], 2);
    assert_eq!(run["hyper"]["model_ema"], 0.9);
    assert_eq!(run["hyper"]["random_erase"]["mode"], "pixel");
    let vals: Vec<serde_json::Value> = std::fs::read_to_string(whole.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["kind"] == "val")
        .collect();
    assert_eq!(vals.len(), 3);
    assert!(
        vals.iter().all(|v| v["ema"]["top1"].is_number()),
        "{vals:?}"
    );

    // Killed after its first checkpoint and resumed: the same weights and average.
    let cut = env.path("cut");
    kill_at_first_checkpoint(&opts(&cut), &cut);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cut.join("state.json")).unwrap()).unwrap();
    assert!(state["ema"].as_str().unwrap().ends_with(".ema.safetensors"));
    let mut c = trainer();
    c.args(opts(&cut)).arg("--resume");
    let r = Out::of(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.json()["resumed_from_step"].as_u64().unwrap() >= 1);
    assert_eq!(model, tensors(&cut.join("model.safetensors")));
    assert_eq!(
        ema,
        tensors(&cut.join("model-ema.safetensors")),
        "the resumed average differs from the uninterrupted run's"
    );

    // eval --ema evaluates the average, beside the model's reports.
    let eval = |extra: &[&str]| {
        let mut c = trainer();
        c.args([
            "--json",
            "--quiet",
            "eval",
            "--run",
            s(&whole),
            "--device",
            "cpu",
        ])
        .args(extra);
        Out::of(c)
    };
    let e = eval(&["--ema", "--views", "1x1"]);
    assert_eq!(e.code, 0, "{}", e.stderr);
    let ev = e.json();
    assert!(
        ev["weights"]
            .as_str()
            .unwrap()
            .ends_with("model-ema.safetensors")
    );
    assert!(whole.join("eval-val-1x1-ema/eval.json").is_file());
    let top1 = ev["top1"].as_f64().unwrap();
    assert!(
        (top1 - v["val_ema"]["top1"].as_f64().unwrap()).abs() < 1e-9,
        "eval --ema {top1}, the run's last validation of the average {}",
        v["val_ema"]
    );

    // A run without the average has none to evaluate.
    let plain = env.path("plain");
    let mut c = trainer();
    c.args(small(&plain, 1)).args(["--shards", s(&data)]);
    assert_eq!(Out::of(c).code, 0);
    let mut c = trainer();
    c.args([
        "--json",
        "--quiet",
        "eval",
        "--run",
        s(&plain),
        "--device",
        "cpu",
        "--ema",
    ]);
    let e = Out::of(c);
    assert_eq!(e.code, 2, "{}", e.stderr);
    assert!(e.stderr.contains("--model-ema"), "{}", e.stderr);
}
