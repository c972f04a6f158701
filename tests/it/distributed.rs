//! Data-parallel training on CPU ranks (Gloo): two ranks with batch B train the weights
//! one rank with batch 2B trains, read every sample once, evaluate as one process, stop
//! naming a lost rank, and resume on another number of ranks.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pmv_shard::synth::{SynthSpec, write_shards};

use crate::util::{Env, Out, repo, s, trainer};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// `pmv-data-train ARGS` as rank `rank` of `world`, as torchrun would start it.
fn rank_command(rank: usize, world: usize, port: u16, args: &[String]) -> Command {
    let mut c = trainer();
    c.args(args)
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("OMP_NUM_THREADS", "1")
        .env_remove("SLURM_PROCID");
    c
}

/// Every rank of one command, run to its end; outputs in rank order.
fn ranks(world: usize, args: &[String]) -> Vec<Out> {
    let port = free_port();
    let children: Vec<Child> = (0..world)
        .map(|r| {
            rank_command(r, world, port, args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            Out {
                code: o.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            }
        })
        .collect()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// The F32 tensors of a safetensors file, by name.
fn weights(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut out = BTreeMap::new();
    for (name, t) in header.as_object().unwrap() {
        if t["dtype"] != "F32" {
            continue;
        }
        let a = t["data_offsets"][0].as_u64().unwrap() as usize;
        let b = t["data_offsets"][1].as_u64().unwrap() as usize;
        let v = data[a..b]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        out.insert(name.clone(), v);
    }
    out
}

/// The largest difference between two models' tensors (they must have the same ones).
fn max_difference(a: &Path, b: &Path) -> f32 {
    let (a, b) = (weights(a), weights(b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(!a.is_empty());
    a.iter()
        .flat_map(|(k, x)| x.iter().zip(&b[k]).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

fn shards(dir: &Path, classes: usize, train: usize, val: usize) {
    write_shards(
        dir,
        &SynthSpec {
            classes,
            splits: vec![("train".into(), train), ("val".into(), val)],
            frames: 4,
            fps: 6.0,
            clips: 2,
            height: 32,
            width: 32,
            samples_per_shard: 6,
            seed: 9,
            ..Default::default()
        },
    )
    .unwrap();
}

/// Training options without random noise in the step (no dropout, drop path, mixing
/// or flips), so two runs can only differ by how the batch is split.
fn plain(data: &Path, out: &Path, batch: usize) -> Vec<String> {
    strings(&[
        "--quiet",
        "train",
        "--shards",
        s(data),
        "--epochs",
        "2",
        "--batch-size",
        &batch.to_string(),
        "--flip",
        "0",
        "--dropout",
        "0",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--log-every",
        "1",
        "--no-tensorboard",
        "--out",
        s(out),
    ])
}

/// fp32, after 4 optimiser steps: the ranks' sums are added in another order than one
/// process adds them, nothing else differs. Measured: 6e-7 for tiny3d, 1e-7 for the ViT.
const SAME_WEIGHTS: f32 = 1e-5;

#[test]
fn two_ranks_train_the_weights_one_rank_with_twice_the_batch_trains() {
    let env = Env::new();
    let data = env.path("shards");
    shards(&data, 4, 4, 1);

    // tiny3d, its batch norm over both ranks' batches.
    let mut one = plain(&data, &env.path("one"), 8);
    one.extend(strings(&["--model", "tiny3d", "--width", "8", "--sync-bn"]));
    let r = crate::util::train_run(&one.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut two = plain(&data, &env.path("two"), 4);
    two.extend(strings(&["--model", "tiny3d", "--width", "8", "--sync-bn"]));
    let outs = ranks(2, &two);
    for o in &outs {
        assert_eq!(o.code, 0, "{}", o.stderr);
    }
    let d = max_difference(
        &env.path("one/model.safetensors"),
        &env.path("two/model.safetensors"),
    );
    eprintln!("tiny3d, 2 ranks vs 1: max |Δ| {d:e}");
    assert!(d < SAME_WEIGHTS, "tiny3d: max |Δ| {d}");
    // Rank 0 alone wrote the run; the metrics lines count both ranks' clips.
    let lines = std::fs::read_to_string(env.path("two/metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert!(first["allreduce_s"].as_f64().unwrap() > 0.0, "{first}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("two/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["world"], 2);
    assert_eq!(state["step"], 4, "16 samples / (4 × 2 ranks) × 2 epochs");

    // Without --sync-bn each rank normalises its own batch: another model.
    let mut own = plain(&data, &env.path("own"), 4);
    own.extend(strings(&["--model", "tiny3d", "--width", "8"]));
    for o in ranks(2, &own) {
        assert_eq!(o.code, 0, "{}", o.stderr);
    }
    let d = max_difference(
        &env.path("one/model.safetensors"),
        &env.path("own/model.safetensors"),
    );
    assert!(d > 1e-3, "per-rank batch norm should differ: {d}");

    // A small ViT (a random transformers checkpoint).
    let ck = env.path("vit");
    let py = repo().join(".venv/bin/python");
    let out = Command::new(&py)
        .arg(repo().join("tests/python/videomae_reference.py"))
        .args([s(&ck), "pretrain", "--mean-pooling", "0"])
        .args(["--height", "32", "--width", "32"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vit = |out: &str, batch: usize| {
        let mut a = plain(&data, &env.path(out), batch);
        a.extend(strings(&[
            "--model",
            "videomae",
            "--init",
            s(&ck.join("model.safetensors")),
            "--drop-path",
            "0",
        ]));
        a
    };
    let r = crate::util::train_run(
        &vit("vit-one", 8)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    for o in ranks(2, &vit("vit-two", 4)) {
        assert_eq!(o.code, 0, "{}", o.stderr);
    }
    let d = max_difference(
        &env.path("vit-one/model.safetensors"),
        &env.path("vit-two/model.safetensors"),
    );
    eprintln!("ViT, 2 ranks vs 1: max |Δ| {d:e}");
    assert!(d < SAME_WEIGHTS, "ViT: max |Δ| {d}");
}

/// Samples whose label is outside the run's classes are left out and listed in
/// `errors.jsonl`: with two ranks (started by `--nproc`), rank 0 lists every rank's,
/// each once per epoch, so each of those samples was read once an epoch by one rank.
#[test]
fn two_ranks_read_every_sample_once_an_epoch() {
    let env = Env::new();
    let data = env.path("shards");
    // 4 classes written, 2 declared: half the samples carry a label the run lacks.
    shards(&data, 4, 6, 2);
    std::fs::write(data.join("classes.txt"), "0\n1\n").unwrap();
    // `pmv-data train --nproc 2`: the trainer starts its two ranks itself.
    let mut args = plain(&data, &env.path("run"), 3);
    args.extend(strings(&[
        "--model", "tiny3d", "--width", "8", "--nproc", "2",
    ]));
    args.insert(0, "--json".into());
    let r = env.run(&args);
    // Exit 3 (rank 0's, the first to fail): samples were left out, counted, reported.
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("rank 0 exited with status 3"),
        "{}",
        r.stderr
    );
    // One result, rank 0's, as its schema says.
    let doc = r.json();
    crate::json_output::check(&doc);
    assert_eq!(
        doc["distributed"],
        serde_json::json!({"world_size": 2, "backend": "gloo", "launcher": "nproc"})
    );
    let errors = std::fs::read_to_string(env.path("run/errors.jsonl")).unwrap();
    let mut seen: BTreeMap<(u64, String), usize> = BTreeMap::new();
    for l in errors.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if v["split"] == "val" {
            continue;
        }
        *seen
            .entry((
                v["epoch"].as_u64().unwrap(),
                v["key"].as_str().unwrap().to_owned(),
            ))
            .or_default() += 1;
    }
    // 24 samples, 12 of classes 2 and 3, every one in both epochs, once.
    assert_eq!(seen.len(), 24, "{errors}");
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("run/summary.json")).unwrap())
            .unwrap();
    assert!(summary["bad_samples"].as_u64().unwrap() >= 24, "{summary}");
}

/// `eval` on two ranks writes what one process writes: every sample once, in order,
/// with the same probabilities.
#[test]
fn two_ranks_evaluate_as_one() {
    let env = Env::new();
    let data = env.path("shards");
    shards(&data, 4, 2, 5);
    let mut args = plain(&data, &env.path("run"), 4);
    args.extend(strings(&[
        "--model", "tiny3d", "--width", "8", "--epochs", "1",
    ]));
    let r = crate::util::train_run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let eval = |out: &str| {
        strings(&[
            "--quiet",
            "eval",
            "--run",
            s(&env.path("run")),
            "--views",
            "2x3",
            "--batch-size",
            "3",
            "--device",
            "cpu",
            "--out",
            s(&env.path(out)),
        ])
    };
    let r = crate::util::train_run(&eval("one").iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let outs = ranks(2, &eval("two"));
    for o in &outs {
        assert_eq!(o.code, 0, "{}", o.stderr);
    }
    // Only rank 0 speaks.
    assert!(outs[1].stdout.is_empty(), "{}", outs[1].stdout);
    let one = std::fs::read_to_string(env.path("one/predictions.csv")).unwrap();
    let two = std::fs::read_to_string(env.path("two/predictions.csv")).unwrap();
    assert_eq!(one.lines().count(), 21, "20 samples and the header");
    assert_eq!(one, two);
    assert_eq!(
        std::fs::read(env.path("one/probabilities.npy")).unwrap(),
        std::fs::read(env.path("two/probabilities.npy")).unwrap()
    );
}

/// A rank killed mid-epoch: the other stops with an error naming it, long before the
/// timeout, and no process is left behind.
#[test]
fn a_killed_rank_stops_the_other_with_its_name() {
    let env = Env::new();
    let data = env.path("shards");
    shards(&data, 4, 4, 1);
    let mut args = plain(&data, &env.path("run"), 2);
    args.extend(strings(&[
        "--model",
        "tiny3d",
        "--width",
        "8",
        "--epochs",
        "1000",
        "--dist-timeout",
        "60",
    ]));
    let port = free_port();
    let mut r0 = rank_command(0, 2, port, &args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut r1 = rank_command(1, 2, port, &args)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Until both train: rank 0 has written a metrics line.
    let metrics = env.path("run/metrics.jsonl");
    let waited = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 3 {
        assert!(waited.elapsed() < Duration::from_secs(120), "no training");
        assert!(r0.try_wait().unwrap().is_none(), "rank 0 ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    r1.kill().unwrap();
    r1.wait().unwrap();
    let killed = Instant::now();
    let out = r0.wait_with_output().unwrap();
    let took = killed.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("lost rank 1 (it stopped)"), "{stderr}");
    assert!(took < Duration::from_secs(30), "{took:?}: {stderr}");
}

/// A checkpoint of two ranks, saved mid-epoch, resumes on two (the weights of a run
/// never stopped) and on one (from the same point of training, in its own steps).
#[test]
fn a_two_rank_checkpoint_resumes_on_two_ranks_and_on_one() {
    let env = Env::new();
    let data = env.path("shards");
    shards(&data, 4, 4, 1);
    let args = |out: &str, resume: bool| {
        let mut a = plain(&data, &env.path(out), 2);
        a.extend(strings(&["--model", "tiny3d", "--width", "8", "--sync-bn"]));
        a.extend(strings(&["--save-every", "1", "--keep", "100"]));
        if resume {
            a.push("--resume".into());
        }
        a
    };
    // 16 samples, 2 × 2 a step: 4 steps an epoch, 8 in all; a checkpoint every step.
    for o in ranks(2, &args("whole", false)) {
        assert_eq!(o.code, 0, "{}", o.stderr);
    }
    // The run as it stood after step 3 (a rank lost there, say): its files, and the
    // state that checkpoint wrote.
    let at_step_3 = |to: &str| {
        let (src, dst) = (env.path("whole"), env.path(to));
        std::fs::create_dir_all(dst.join("checkpoints")).unwrap();
        for f in ["run.json", "metrics.jsonl", "errors.jsonl"] {
            std::fs::copy(src.join(f), dst.join(f)).unwrap();
        }
        for e in std::fs::read_dir(src.join("checkpoints")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dst.join("checkpoints").join(e.file_name())).unwrap();
        }
        let mut st: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(src.join("state.json")).unwrap())
                .unwrap();
        assert_eq!(st["world"], 2);
        st["step"] = 3.into();
        st["epoch"] = 0.into();
        st["batch_in_epoch"] = 3.into();
        st["finished"] = false.into();
        st["weights"] = "checkpoints/step-00000003.safetensors".into();
        st["optimizer"] = "checkpoints/step-00000003.optim.safetensors".into();
        std::fs::write(dst.join("state.json"), st.to_string()).unwrap();
    };
    at_step_3("on-two");
    for o in ranks(2, &args("on-two", true)) {
        assert_eq!(o.code, 0, "{}", o.stderr);
    }
    let d = max_difference(
        &env.path("whole/model.safetensors"),
        &env.path("on-two/model.safetensors"),
    );
    assert!(d < SAME_WEIGHTS, "{d}");

    // One rank: the 12 samples done are 6 of its steps of 2; 8 steps an epoch now.
    at_step_3("on-one");
    let mut one = args("on-one", true);
    one.retain(|a| a != "--quiet");
    let r = crate::util::train_run(&one.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("saved by 2 rank(s), this run has 1: step 3 becomes step 6"),
        "{}",
        r.stderr
    );
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("on-one/state.json")).unwrap())
            .unwrap();
    assert_eq!(
        (st["step"].as_u64(), st["world"].as_u64()),
        (Some(16), Some(1))
    );
    assert_eq!(st["finished"], true);
}

/// Masked pre-training on two ranks (`pmv-data pretrain --nproc 2`): each rank masks
/// its own clips, and the validation loss counts every validation sample once.
#[test]
fn pretraining_runs_on_two_ranks() {
    let env = Env::new();
    let data = env.path("shards");
    shards(&data, 4, 4, 1);
    let out = env.path("pre");
    let r = env.run(&[
        "--json",
        "pretrain",
        "--shards",
        s(&data),
        "--model",
        "vit-s",
        "--decoder-depth",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--no-tensorboard",
        "--nproc",
        "2",
        "--out",
        s(&out),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["steps"], 4, "16 samples / (2 × 2 ranks)");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let val: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "val_reconstruction")
        .collect();
    assert_eq!(val.len(), 1, "{metrics}");
    assert_eq!(val[0]["samples"], 4);
    assert!(val[0]["loss"].as_f64().unwrap().is_finite());
}

/// SIGTERM to `--nproc`'s launcher (as Slurm or cron sends it): every rank stops at the
/// same step after one checkpoint, exit 130, and `--resume` on two ranks ends with the
/// weights of a run never stopped.
#[test]
fn sigterm_checkpoints_every_rank_at_one_step_and_resumes() {
    let env = Env::new();
    let data = env.path("shards");
    shards(&data, 4, 30, 1);
    let args = |out: &str| {
        let mut a = plain(&data, &env.path(out), 2);
        a.extend(strings(&[
            "--model",
            "tiny3d",
            "--width",
            "8",
            "--sync-bn",
            "--epochs",
            "3",
        ]));
        a.extend(strings(&["--nproc", "2"]));
        a
    };
    let r = crate::util::train_run(&args("whole").iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(r.code, 0, "{}", r.stderr);

    let mut launcher = trainer()
        .args(args("stopped"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = env.path("stopped/metrics.jsonl");
    let waited = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 2 {
        assert!(waited.elapsed() < Duration::from_secs(120), "no training");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling a child of this test.
    unsafe {
        libc::kill(launcher.id() as i32, libc::SIGTERM);
    }
    let mut err = String::new();
    use std::io::Read;
    launcher
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = launcher.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("stopped/state.json")).unwrap())
            .unwrap();
    assert_eq!(st["finished"], false, "{st}");
    let step = st["step"].as_u64().unwrap();
    assert!(step > 0 && step < 180, "stopped at step {step} of 180");

    let mut again = args("stopped");
    again.push("--resume".into());
    let r = crate::util::train_run(&again.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let d = max_difference(
        &env.path("whole/model.safetensors"),
        &env.path("stopped/model.safetensors"),
    );
    assert!(d < SAME_WEIGHTS, "{d}");
}
