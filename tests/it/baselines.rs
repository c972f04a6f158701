//! MViTv2-S and UniFormer-S through their PMV-400 recipe files on portrait synthetic
//! shards: every recipe trains (AdamW, gradient clipping, stochastic depth, repeated
//! augmentation, mixup/CutMix, RandAugment and random erasing as the recipe says) with
//! only the sizes and the length overridden for a CPU, the weights carry the reference
//! implementations' names, and evaluation takes the recipe's published views. A
//! torchvision MViTv2-S checkpoint at its public size, converted for a portrait input,
//! starts a run.

use pmv_shard::synth::{SynthSpec, write_shards};

use crate::util::{Env, repo, s, train_run};

/// Header of a safetensors file (the tensor names and shapes).
fn header(path: &std::path::Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    String::from_utf8_lossy(&bytes[8..8 + n]).into_owned()
}

/// Trains `recipe` for one epoch at 4x64x32 and evaluates the run with the recipe's
/// views; returns run.json.
fn train_recipe(recipe: &str, model: &str, arch: &str, names: &[&str]) -> serde_json::Value {
    let env = Env::new();
    let data = env.path("shards");
    write_shards(
        &data,
        &SynthSpec {
            classes: 2,
            splits: vec![("train".into(), 4), ("val".into(), 2)],
            frames: 4,
            fps: 6.0,
            clips: 5,
            height: 80,
            width: 48,
            samples_per_shard: 8,
            seed: 15,
            ..Default::default()
        },
    )
    .unwrap();
    let file = repo().join("manifests/recipes").join(recipe);
    let out = env.path("run");
    let sizes = [
        "--input",
        "64x32",
        "--jitter-scales",
        "36,40",
        "--test-scale",
        "40",
    ];
    let mut args = vec![
        "--json",
        "--quiet",
        "train",
        "--recipe-file",
        s(&file),
        "--shards",
        s(&data),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--accum",
        "1",
        "--warmup-epochs",
        "0",
        "--device",
        "cpu",
        "--out",
        s(&out),
    ];
    args.extend(sizes);
    let r = train_run(&args);
    assert_eq!(r.code, 0, "{recipe}: {}", r.stderr);
    let v = r.json();
    assert_eq!(v["model"], model, "{recipe}");
    // 2 classes x 4 training samples, 2 a batch.
    assert_eq!(v["steps"], 4, "{recipe}");
    assert!(
        v["final_loss"].as_f64().unwrap().is_finite(),
        "{recipe}: {v}"
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(cfg["model"]["arch"], arch, "{recipe}");
    assert_eq!(cfg["input"], serde_json::json!([4, 64, 32]), "{recipe}");
    let weights = header(&out.join("model.safetensors"));
    for n in names {
        assert!(weights.contains(n), "{recipe}: {n} not in the weights");
    }

    // Evaluation with the recipe's views (its scale and input overridden for the
    // small frames).
    let mut args = vec![
        "--json",
        "--quiet",
        "eval",
        "--run",
        s(&out),
        "--recipe-file",
        s(&file),
        "--device",
        "cpu",
    ];
    args.extend(sizes[..2].iter().chain(&sizes[4..]));
    let e = train_run(&args);
    assert_eq!(e.code, 0, "{recipe}: {}", e.stderr);
    let doc: toml::Table = toml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(
        e.json()["views"].as_str(),
        doc["eval"]["views"].as_str(),
        "{recipe}"
    );
    assert_eq!(e.json()["samples"], 4, "{recipe}");
    cfg
}

#[test]
fn mvit_v2_s_trains_from_the_pmv_recipes() {
    for recipe in ["mvit-v2-s-pmv400.toml", "mvit-v2-s-pmv400-288x192.toml"] {
        let cfg = train_recipe(
            recipe,
            "mvit-v2-s",
            "mvit",
            &[
                "conv_proj.weight",
                "blocks.15.attn.rel_pos_h",
                "blocks.14.attn.pool_q.pool.weight",
                "head.1.weight",
            ],
        );
        let h = &cfg["hyper"];
        assert_eq!(h["optimizer"], "adamw", "{recipe}");
        assert_eq!(h["lr"], 4e-4, "{recipe}");
        assert_eq!(h["clip_grad"], 1.0, "{recipe}");
        assert_eq!(h["repeated_aug"], 2, "{recipe}");
        assert_eq!(h["mixup"], 0.8, "{recipe}");
        assert_eq!(h["auto_augment"], "rand-m7-n4-mstd0.5-inc1", "{recipe}");
        assert_eq!(cfg["model"]["config"]["drop_path"], 0.2, "{recipe}");
        assert_eq!(cfg["model"]["config"]["dropout"], 0.5, "{recipe}");
    }
}

#[test]
fn uniformer_s_trains_from_the_pmv_recipes() {
    for recipe in ["uniformer-s-pmv400.toml", "uniformer-s-pmv400-288x192.toml"] {
        let cfg = train_recipe(
            recipe,
            "uniformer-s",
            "uniformer",
            &[
                "patch_embed1.proj.weight",
                "blocks1.2.attn.weight",
                "blocks3.7.attn.qkv.weight",
                "norm.running_var",
                "head.weight",
            ],
        );
        let h = &cfg["hyper"];
        assert_eq!(h["optimizer"], "adamw", "{recipe}");
        assert_eq!(h["lr"], 8e-4, "{recipe}");
        assert_eq!(h["clip_grad"], serde_json::Value::Null, "{recipe}");
        assert_eq!(h["repeated_aug"], 2, "{recipe}");
        assert_eq!(cfg["model"]["config"]["drop_path"], 0.1, "{recipe}");
    }
}

/// A public-size checkpoint in a reference layout, converted for a run's input, starts
/// that run: torchvision's MViTv2-S (16x224x224, 400 classes) converted with
/// `--input` for 4x64x32 portrait crops, then `train --init`, the head re-initialised
/// for 2 classes and every other tensor loaded.
#[test]
fn a_torchvision_mvit_checkpoint_converted_for_a_portrait_input_starts_a_run() {
    let env = Env::new();
    let data = env.path("shards");
    write_shards(
        &data,
        &SynthSpec {
            classes: 2,
            splits: vec![("train".into(), 2), ("val".into(), 1)],
            frames: 4,
            fps: 6.0,
            clips: 1,
            height: 80,
            width: 48,
            samples_per_shard: 8,
            seed: 16,
            ..Default::default()
        },
    )
    .unwrap();
    let ckpt = env.path("mvit_v2_s.pth");
    let script = format!(
        "import sys, torch; sys.dont_write_bytecode = True; sys.path.insert(0, {scripts:?}); \
         from refmodels import mvit; torch.manual_seed(0); \
         torch.save({{'model': mvit.build(16, 224, 224, 400).state_dict()}}, {ckpt:?})",
        scripts = s(&repo().join("scripts")),
        ckpt = s(&ckpt),
    );
    crate::util::venv_python(["-c", script.as_str()]);
    let converted = env.path("converted");
    let said = crate::util::venv_python([
        s(&repo().join("scripts/convert_mvit.py")),
        s(&ckpt),
        s(&converted),
        "--input",
        "4x64x32",
    ]);
    // The 111-row spatial tables of 224 become 31 (h) and 15 (w) rows.
    assert!(
        said.contains("resized blocks.0.attn.rel_pos_h (111 -> 31)")
            && said.contains("resized blocks.0.attn.rel_pos_w (111 -> 15)")
            && said.contains("resized blocks.0.attn.rel_pos_t (15 -> 3)"),
        "{said}"
    );
    let out = env.path("run");
    let r = train_run(&[
        "--json",
        "--quiet",
        "train",
        "--shards",
        s(&data),
        "--model",
        "mvit-v2-s",
        "--init",
        s(&converted.join("model.safetensors")),
        "--input",
        "64x32",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--out",
        s(&out),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let init = &r.json()["init"];
    assert_eq!(init["loaded"], 397 - 2, "{init}");
    let reinit = init["reinitialised"].to_string();
    assert!(
        reinit.contains("head.1.weight") && reinit.contains("head.1.bias"),
        "{reinit}"
    );
}

/// A checkpoint is data, not code: a `.pth` whose pickle would run a command as it loads
/// is refused by every converter, naming the file and the way out (`--trust-pickle`),
/// and the command never runs.
#[test]
fn converters_refuse_checkpoints_that_would_run_code() {
    let env = Env::new();
    let evil = env.path("evil.pth");
    let marker = env.path("ran");
    let script = format!(
        "import os, torch\n\
         class Payload:\n    def __reduce__(self):\n        return (os.system, ('touch ' + {marker:?},))\n\
         torch.save({{'model_state': {{'w': torch.zeros(1)}}, 'extra': Payload()}}, {evil:?})\n",
        marker = s(&marker),
        evil = s(&evil),
    );
    crate::util::venv_python(["-c", script.as_str()]);
    for converter in [
        "convert_x3d.py",
        "convert_mvit.py",
        "convert_uniformer.py",
        "convert_videomae.py",
    ] {
        let out = std::process::Command::new(repo().join(".venv/bin/python"))
            .arg(repo().join("scripts").join(converter))
            .arg(&evil)
            .arg(env.path("out"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{converter} accepted it");
        assert!(
            stderr.contains(s(&evil)) && stderr.contains("--trust-pickle"),
            "{converter}: {stderr}"
        );
        assert!(!marker.exists(), "{converter} ran the file's command");
    }
}
