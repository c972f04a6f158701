//! The multimodal classifier on synthetic shards where only the video, only the cover
//! or only the text of a sample shows its class: each branch must learn its case, the
//! vocabulary is saved with the model, and evaluation reads the same covers and texts.

use std::collections::BTreeMap;

use pmv_shard::synth::{Carrier, MultimodalSynth, SynthSpec, write_shards_with};

use crate::util::{Env, s, train_run};

/// Top-1 per carrier from a predictions.csv of the val split.
fn per_carrier(csv: &str, classes: usize) -> BTreeMap<String, (usize, usize)> {
    let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let j: usize = f[1].rsplit('-').next().unwrap().parse().unwrap();
        let c = format!("{:?}", Carrier::of(j, classes));
        let e = out.entry(c).or_default();
        e.1 += 1;
        if f[5] == "true" {
            e.0 += 1;
        }
    }
    out
}

/// Many distinct samples, each seen a few times. A sample's two other inputs are
/// neutral but unique (its filler words, the cover's colours and blobs, the look of the
/// still shape), so a small set seen many times is learned by heart through them: with
/// 128 samples for 40 epochs at lr 5e-3 the text branch alone named the class of 43 of
/// the 44 video-carried training samples, and on unseen samples such memorised opinions
/// of the cover and text branches outvoted the video branch, which on its own (cover and
/// text replaced by their "absent" vectors) got every one right. 384 samples for 13
/// epochs take as many optimiser steps (624, not 640); at 2e-3 the fast text branch no
/// longer memorises the video-carried samples before the slow video branch learns their
/// motion. Validation holds 22 / 22 / 20 samples per carrier, so the thresholds measure
/// the branch rather than the luck of a dozen samples.
#[test]
fn each_branch_learns_the_samples_it_carries() {
    let env = Env::new();
    let data = env.path("shards");
    write_shards_with(
        &data,
        &SynthSpec {
            classes: 2,
            splits: vec![("train".into(), 192), ("val".into(), 32)],
            frames: 8,
            fps: 6.0,
            clips: 1,
            height: 32,
            width: 32,
            samples_per_shard: 64,
            seed: 9,
            ..Default::default()
        },
        Some(&MultimodalSynth {
            cover_height: 48,
            cover_width: 48,
        }),
    )
    .unwrap();
    let out = env.path("run");
    let r = train_run(&[
        "--json",
        "--quiet",
        "train",
        "--shards",
        s(&data),
        "--model",
        "tiny3d",
        "--width",
        "8",
        "--multimodal",
        "--cover-size",
        "48x48",
        "--fusion-dim",
        "64",
        "--text-dim",
        "32",
        "--epochs",
        "13",
        "--batch-size",
        "8",
        "--flip",
        "0",
        "--crop-scale",
        "0.8,1",
        "--lr",
        "2e-3",
        "--device",
        "cpu",
        "--threads",
        "2",
        "--out",
        s(&out),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["model"], "multimodal");
    let csv = std::fs::read_to_string(v["files"]["predictions_csv"].as_str().unwrap()).unwrap();
    let acc = per_carrier(&csv, 2);
    assert_eq!(acc.len(), 3, "{acc:?}");
    let sizes: Vec<usize> = acc.values().map(|(_, n)| *n).collect();
    assert_eq!(sizes, [22, 20, 22], "cover, text, video samples: {acc:?}");
    for (carrier, (hits, n)) in &acc {
        // Two classes: chance is 50%. Text is the easiest case (a word); motion and
        // stripes take longer to learn.
        let need = if carrier == "Text" { 0.9 } else { 0.6 };
        assert!(
            *hits as f64 >= need * *n as f64,
            "the {carrier} branch did not learn its samples: {acc:?}"
        );
    }
    // The vocabulary was built from the training texts, both languages, and saved.
    // Under its own name: `tokenizer.json` is Hugging Face's.
    assert!(!out.join("tokenizer.json").exists());
    let tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("pmv-tokenizer.json")).unwrap())
            .unwrap();
    let tokens: Vec<&str> = tok["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(&tokens[..2], ["<pad>", "<unk>"]);
    for t in ["红色", "红", "alpha", "蓝天", "bravo", "video"] {
        assert!(tokens.contains(&t), "{t} not in the vocabulary");
    }
    let files: Vec<&str> = v["files"]["model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with("/pmv-tokenizer.json")),
        "{files:?}"
    );

    // Evaluation reads covers and texts through the saved vocabulary.
    let eval = || {
        train_run(&[
            "--json",
            "--quiet",
            "eval",
            "--run",
            s(&out),
            "--views",
            "1x1",
            "--device",
            "cpu",
        ])
    };
    let e = eval();
    assert_eq!(e.code, 0, "{}", e.stderr);
    assert_eq!(e.json()["top1"], v["top1"]);
    // A cover that is not a JPEG leaves its sample out, named.
    let bad = env.path("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let src = pmv_pipeline::sharding::ShardReader::open(&data.join("val/val-000000.tar")).unwrap();
    let path = bad.join("val.tar");
    let file = std::fs::File::create(&path).unwrap();
    let mut w =
        pmv_pipeline::sharding::ShardWriter::new(std::io::BufWriter::new(file)).with_path(&path);
    for i in 0..src.len() {
        let smp = src.sample(i).unwrap();
        let meta = smp.meta().unwrap();
        w.append(&pmv_pipeline::sharding::SampleInput {
            key: smp.key,
            shape: smp.shape,
            frames: pmv_pipeline::sharding::FrameData::Raw(smp.raw_frames().unwrap()),
            label: smp.label,
            meta: &meta,
            jpg: Some(if i == 3 {
                &b"not a jpeg"[..]
            } else {
                smp.jpg.unwrap()
            }),
            txt: smp.txt,
        })
        .unwrap();
    }
    w.finish().unwrap();
    let own = std::fs::read(out.join("eval-val-1x1/eval.json")).unwrap();
    let e = train_run(&[
        "--json",
        "--quiet",
        "eval",
        "--run",
        s(&out),
        "--shards",
        s(&path),
        "--views",
        "1x1",
        "--device",
        "cpu",
    ]);
    assert_eq!(e.code, 3, "{}", e.stderr);
    assert_eq!(e.json()["bad_samples"], 1);
    // Beside the run's own validation report, not over it.
    let eval_json = e.json()["eval_json"].as_str().unwrap().to_owned();
    assert!(eval_json.contains("/eval-shards-"), "{eval_json}");
    assert_eq!(
        std::fs::read(out.join("eval-val-1x1/eval.json")).unwrap(),
        own
    );
    let report = std::fs::read_to_string(&eval_json).unwrap();
    assert!(
        report.contains("cover (.jpg): not a decodable JPEG"),
        "{report}"
    );

    // A run from before the rename keeps its vocabulary as `tokenizer.json`: still read.
    std::fs::rename(out.join("pmv-tokenizer.json"), out.join("tokenizer.json")).unwrap();
    let e = eval();
    assert_eq!(e.code, 0, "{}", e.stderr);
    assert_eq!(e.json()["top1"], v["top1"]);

    // Another vocabulary is refused.
    std::fs::write(
        out.join("tokenizer.json"),
        "{\"kind\": \"pmv-data-tokenizer\", \"version\": 1, \"max_len\": 4, \"tokens\": [\"<pad>\", \"<unk>\"]}",
    )
    .unwrap();
    let e = train_run(&["eval", "--run", s(&out), "--device", "cpu"]);
    assert_ne!(e.code, 0);
    assert!(e.stderr.contains("not the vocabulary"), "{}", e.stderr);
}
