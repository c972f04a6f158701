//! X3D-M through a PMV recipe file on portrait synthetic shards: the recipe's SGD,
//! short-side jitter and portrait crops reach the run, command-line options override
//! the recipe, and evaluation takes its views from the frame scaled to a short side.

use pmv_shard::synth::{SynthSpec, write_shards};

use crate::util::{Env, repo, s, train_run};

#[test]
fn x3d_m_trains_from_the_pmv_portrait_recipe() {
    let env = Env::new();
    let data = env.path("shards");
    write_shards(
        &data,
        &SynthSpec {
            classes: 2,
            splits: vec![("train".into(), 4), ("val".into(), 2)],
            frames: 4,
            fps: 6.0,
            clips: 2,
            height: 64,
            width: 40,
            samples_per_shard: 8,
            seed: 4,
            ..Default::default()
        },
    )
    .unwrap();
    let recipe = repo().join("manifests/recipes/x3d-m-pmv400-288x192.toml");
    let out = env.path("run");
    // The recipe trains 288x192 crops for 300 epochs; here the sizes and the length
    // are overridden for a CPU, the optimiser and the crop mode come from the recipe.
    let r = train_run(&[
        "--json",
        "--quiet",
        "train",
        "--recipe-file",
        s(&recipe),
        "--shards",
        s(&data),
        "--input",
        "48x32",
        "--jitter-scales",
        "36,40",
        "--test-scale",
        "36",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--accum",
        "1",
        "--warmup-epochs",
        "0",
        "--device",
        "cpu",
        "--out",
        s(&out),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["model"], "x3d-m");
    assert_eq!(v["steps"], 2);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    let recipe_v = &cfg["hyper"];
    assert_eq!(recipe_v["optimizer"], "sgd");
    assert_eq!(recipe_v["nesterov"], true);
    assert_eq!(recipe_v["momentum"], 0.9);
    assert_eq!(recipe_v["lr"], 0.2);
    assert_eq!(recipe_v["adamw"]["weight_decay"], 5e-5);
    assert_eq!(recipe_v["jitter"], serde_json::json!([36, 40]));
    assert_eq!(recipe_v["test_scale"], 36);
    assert_eq!(cfg["input"], serde_json::json!([4, 48, 32]));
    assert_eq!(cfg["model"]["arch"], "x3d");
    let weights = std::fs::read(out.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&weights[8..8 + n]);
    assert!(
        header.contains("s4.pathway0_res10.branch2.b.weight"),
        "PySlowFast names"
    );
    let optim = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".optim.safetensors"))
        .unwrap();
    let o = std::fs::read(&optim).unwrap();
    let n = u64::from_le_bytes(o[..8].try_into().unwrap()) as usize;
    assert!(String::from_utf8_lossy(&o[8..8 + n]).contains("momentum_buffer."));

    // Evaluation: 2 clips x 3 portrait crops down the frame, another input size.
    let e = train_run(&[
        "--json",
        "--quiet",
        "eval",
        "--run",
        s(&out),
        "--views",
        "allx3",
        "--input",
        "56x40",
        "--test-scale",
        "40",
        "--device",
        "cpu",
    ]);
    assert_eq!(e.code, 0, "{}", e.stderr);
    assert_eq!(e.json()["views"], "2x3");
    assert_eq!(e.json()["samples"], 4);
}
