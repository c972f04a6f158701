//! TensorBoard event files read by TensorBoard itself (`EventAccumulator` from the
//! `tensorboard` package in .venv): every number of `metrics.jsonl` is a scalar with its
//! step and value, and a run killed after a checkpoint and resumed shows one curve with
//! no repeated step. `--no-tensorboard` writes none.

use std::collections::BTreeMap;
use std::path::Path;

use crate::train::{kill_at_first_checkpoint, motion_shards, small};
use crate::util::{Out, s, trainer, venv_python};

/// `tag -> [(step, value)]` as TensorBoard reads the folder.
type Curves = BTreeMap<String, Vec<(u64, f32)>>;

fn tensorboard_curves(dir: &Path) -> Curves {
    let script = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
print(json.dumps({t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}))
"#;
    let out = venv_python(["-c".as_ref(), script.as_ref(), dir.as_os_str()]);
    let v: BTreeMap<String, Vec<(u64, f64)>> = serde_json::from_str(&out).unwrap();
    v.into_iter()
        .map(|(t, pts)| (t, pts.into_iter().map(|(s, x)| (s, x as f32)).collect()))
        .collect()
}

fn flatten(tag: &str, v: &serde_json::Value, step: u64, out: &mut Curves) {
    match v {
        serde_json::Value::Number(n) => out
            .entry(tag.to_owned())
            .or_default()
            .push((step, n.as_f64().unwrap() as f32)),
        serde_json::Value::Object(o) => {
            for (k, v) in o {
                flatten(&format!("{tag}/{k}"), v, step, out);
            }
        }
        _ => {}
    }
}

/// The same curves from `metrics.jsonl`: `<kind>/<field>` for every number but `step`.
fn metrics_curves(run: &Path) -> Curves {
    let mut out = Curves::new();
    for line in std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let kind = v["kind"].as_str().unwrap();
        let step = v["step"].as_u64().unwrap();
        for (k, x) in v.as_object().unwrap() {
            if k != "kind" && k != "step" {
                flatten(&format!("{kind}/{k}"), x, step, &mut out);
            }
        }
    }
    out
}

fn event_files(run: &Path) -> usize {
    std::fs::read_dir(run.join("tb"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn tensorboard_reads_every_metric_and_a_resumed_run_continues_its_curves() {
    let env = crate::util::Env::new();
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
            ]
            .iter()
            .map(|x| x.to_string()),
        );
        v
    };
    let cut = env.path("cut");
    kill_at_first_checkpoint(&opts(&cut), &cut);
    let mut c = trainer();
    c.args(opts(&cut)).arg("--resume");
    let r = Out::of(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.json()["resumed_from_step"].as_u64().unwrap() >= 1);
    assert_eq!(event_files(&cut), 2, "the resumed run starts its own file");

    let expected = metrics_curves(&cut);
    for tag in [
        "train/loss",
        "train/lr",
        "train/clips_per_s",
        "val/top1",
        "val/top5",
        "val/loss",
        "val/ema/top1",
    ] {
        assert!(expected.contains_key(tag), "{tag} not in metrics.jsonl");
    }
    // 2 steps an epoch, 3 epochs: steps 1..=6 once each, whatever the cut left behind.
    let steps: Vec<u64> = expected["train/loss"].iter().map(|p| p.0).collect();
    assert_eq!(steps, (1..=6).collect::<Vec<_>>());
    assert_eq!(tensorboard_curves(&cut.join("tb")), expected);

    // Off: no event files.
    let off = env.path("off");
    let mut c = trainer();
    c.args(small(&off, 1))
        .args(["--shards", s(&data), "--no-tensorboard"]);
    let r = Out::of(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!off.join("tb").exists());
}
