//! VideoMAE masked pre-training end to end on synthetic shards: the reconstruction
//! loss falls, the run's model loads in `transformers` as a `VideoMAEForPreTraining`,
//! and it fine-tunes through `train --init`; `eval` refuses a pre-training run.

use std::path::Path;
use std::process::Command;

use pmv_shard::synth::{SynthSpec, write_shards};

use crate::util::{Env, Out, repo, s, trainer};

fn lines(run: &Path, kind: &str) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn pretraining_loss_falls_and_the_checkpoint_fine_tunes() {
    let env = Env::new();
    let data = env.path("shards");
    write_shards(
        &data,
        &SynthSpec {
            classes: 4,
            splits: vec![("train".into(), 8), ("val".into(), 2)],
            frames: 4,
            fps: 6.0,
            clips: 1,
            height: 32,
            width: 48,
            samples_per_shard: 16,
            seed: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let pre = env.path("pre");
    let mut c = trainer();
    c.args([
        "--json",
        "--quiet",
        "pretrain",
        "--shards",
        s(&data),
        "--model",
        "vit-s",
        "--mask-ratio",
        "0.75",
        "--decoder-depth",
        "1",
        "--epochs",
        "6",
        "--batch-size",
        "8",
        "--lr",
        "1e-3",
        "--warmup-epochs",
        "1",
        "--log-every",
        "2",
        "--device",
        "cpu",
        "--out",
        s(&pre),
    ]);
    let r = Out::of(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["steps"], 24);
    let train = lines(&pre, "train");
    let val = lines(&pre, "val_reconstruction");
    assert_eq!(val.len(), 6);
    assert!(
        train.last().unwrap() < &(train[0] * 0.95),
        "training loss did not fall: {train:?}"
    );
    assert!(val[5] < val[0], "validation loss did not fall: {val:?}");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pre.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "VideoMAEForPreTraining");
    assert_eq!(cfg["decoder_hidden_size"], 192);
    assert_eq!(cfg["decoder_num_hidden_layers"], 1);

    // transformers loads the run with nothing missing or left over.
    let script = r#"
import sys
from transformers import VideoMAEForPreTraining
m, info = VideoMAEForPreTraining.from_pretrained(sys.argv[1], output_loading_info=True)
assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
print(m.config.decoder_hidden_size)
"#;
    let out = Command::new(repo().join(".venv/bin/python"))
        .arg("-c")
        .arg(script)
        .arg(&pre)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A pre-training run is not a classifier.
    let mut c = trainer();
    c.args(["eval", "--run", s(&pre), "--device", "cpu"]);
    let e = Out::of(c);
    assert_eq!(e.code, 2, "{}", e.stderr);
    assert!(e.stderr.contains("train --init"), "{}", e.stderr);

    // Fine-tuning starts from the encoder: the decoder is set aside, the head is new.
    let ft = env.path("ft");
    let mut c = trainer();
    c.args([
        "--json",
        "--quiet",
        "train",
        "--shards",
        s(&data),
        "--model",
        "vit-s",
        "--init",
        s(&pre.join("model.safetensors")),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--out",
        s(&ft),
    ]);
    let r = Out::of(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let init = &r.json()["init"];
    let aside: Vec<&str> = init["set_aside"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        aside.contains(&"mask_token") && aside.contains(&"decoder.head.weight"),
        "{aside:?}"
    );
    assert_eq!(init["reinitialised"].as_array().unwrap().len(), 4, "{init}");

    // Continuing pre-training needs a pre-training checkpoint.
    let mut c = trainer();
    c.args([
        "pretrain",
        "--shards",
        s(&data),
        "--model",
        "vit-s",
        "--init",
        s(&ft.join("model.safetensors")),
        "--device",
        "cpu",
        "--out",
        s(&env.path("refused")),
    ]);
    let r = Out::of(c);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("no pre-training decoder"), "{}", r.stderr);

    // pmv-data pretrain hands its arguments to the trainer.
    let out = env.run(&["pretrain", "--model", "tiny3d", "--shards", s(&data)]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("vit-s or vit-b"), "{}", out.stderr);
}
