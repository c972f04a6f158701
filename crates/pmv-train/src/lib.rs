//! pmv-train: the trainer (`pmv-data-train`), libtorch through tch.
//!
//! Owns every call into libtorch: the shard loader and augmentation, the models
//! (`tiny3d`, VideoMAE ViTs, X3D, the multimodal classifier), the optimiser and
//! schedule, checkpoints and resume, evaluation, reports and plots, benchmarks. It also
//! reports which libtorch this binary runs on and what it can reach, so `pmv-data
//! doctor` can tell a broken install from a working one. It reads the catalog and
//! shards through `pmv_catalog` and `pmv_shard`; it never changes a shard, and writes
//! to the catalog only a training run's row when the run ends.
//!
//! Layout, in the order the modules may import each other (no module imports one that
//! imports it; a folder's `mod.rs` uses its own files):
//! - leaves: [`device`] (device, precision, loader threads, host-to-device copies),
//!   [`rng`] (not under `data`: the models draw their masks and noise from it too),
//!   [`optim`], [`metrics`], [`plot`], [`checkpoint`], [`recipe_file`] (recipe files
//!   as options);
//! - [`models`]: one file a model family, the factory in `models/mod.rs`; models never
//!   import [`data`]. The multimodal family wraps a video model from the factory, so
//!   `models/multimodal.rs` uses `ModelSpec` and `Net` from its parent: the one place
//!   where a model is built from other models;
//! - [`data`]: the catalog view, the loader, augmentation and the tokenizer;
//! - [`error`], then [`run`] (what `run.json` records, and the extra inputs a run's
//!   model reads, which training and evaluation both need);
//! - [`eval`], then [`fit`] (training, which validates through `eval`; `eval` never
//!   imports `fit`), and [`bench`](mod@bench);
//! - [`spawn`] (`--nproc`: this binary starts its own local ranks) imports none of
//!   the others.
//!
//! `eval` stays one file: it is one job (score a run's split and write its reports)
//! and no part of it is shared. `bench` stays one file for the same reason.

pub mod bench;
pub mod checkpoint;
pub use pmv_train_cli as cli;
pub mod data;
pub mod device;
pub mod dist;
pub mod error;
pub mod eval;
pub mod fit;
pub mod metrics;
pub mod models;
pub mod optim;
pub mod plot;
pub use pmv_train_cli::recipe_file;
pub mod rng;
pub mod run;
pub mod spawn;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct TorchInfo {
    /// The libtorch version this binary was built against.
    pub libtorch: &'static str,
    /// Where the build found libtorch (also the binary's rpath).
    pub lib_dir: &'static str,
    pub cuda_available: bool,
    pub cuda_devices: i64,
    pub cudnn: bool,
    /// Data-parallel ranks on CUDA can use NCCL (else Gloo).
    pub nccl: bool,
    pub cpu_threads: i32,
    /// A small tensor computation gave the right answer.
    pub tensor_ok: bool,
}

pub fn info() -> TorchInfo {
    let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    let sum = t.sum(tch::Kind::Float).double_value(&[]);
    TorchInfo {
        libtorch: option_env!("PMV_LIBTORCH_VERSION").unwrap_or("unknown"),
        lib_dir: option_env!("PMV_LIBTORCH_LIB").unwrap_or("unknown"),
        cuda_available: tch::Cuda::is_available(),
        cuda_devices: tch::Cuda::device_count(),
        cudnn: tch::Cuda::cudnn_is_available(),
        nccl: pmv_c10d::has_nccl(),
        cpu_threads: tch::get_num_threads(),
        tensor_ok: (sum - 6.0).abs() < 1e-6,
    }
}

/// `pmv-data-train synth`: a synthetic dataset as shards.
pub fn synth_cmd(args: &cli::SynthArgs) -> Result<serde_json::Value, error::TrainError> {
    let mut splits = vec![
        ("train".to_owned(), args.train),
        ("val".to_owned(), args.val),
    ];
    if args.test > 0 {
        splits.push(("test".to_owned(), args.test));
    }
    splits.retain(|(_, n)| *n > 0);
    let spec = pmv_shard::synth::SynthSpec {
        classes: args.classes,
        splits,
        frames: args.frames,
        fps: args.fps,
        clips: args.clips,
        height: args.size.0,
        width: args.size.1,
        samples_per_shard: args.shard_size,
        seed: args.seed,
        ..Default::default()
    };
    let modal = args
        .multimodal
        .then_some(pmv_shard::synth::MultimodalSynth {
            cover_height: args.cover_size.0,
            cover_width: args.cover_size.1,
        });
    let written = pmv_shard::synth::write_shards_with(&args.out, &spec, modal.as_ref())?;
    Ok(serde_json::json!({
        "out": args.out,
        "recipe": spec.recipe_id(),
        "classes": pmv_shard::synth::class_names(args.classes),
        "samples": written.iter().map(|s| s.samples).sum::<usize>(),
        "splits": written,
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn libtorch_loads_and_computes() {
        let info = super::info();
        assert!(info.tensor_ok);
        assert!(info.libtorch.starts_with("2.11"), "{}", info.libtorch);
    }
}
