//! The trainer: libtorch through tch.
//!
//! Owns every call into libtorch: the shard loader and augmentation, the models
//! (`tiny3d`, VideoMAE ViTs), the optimiser and schedule, checkpoints and resume,
//! evaluation, reports and plots, benchmarks. It also reports which libtorch this binary
//! runs on and what it can reach, so `pmv-data doctor` can tell a broken install from a
//! working one. It reads the catalog and shards through the `pmv_data` library and never
//! writes to either.

pub mod augment;
pub mod data;
pub mod device;
pub mod loader;
pub mod model;
pub mod optim;
pub mod rng;
pub mod tiny3d;
pub mod videomae;

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
        cpu_threads: tch::get_num_threads(),
        tensor_ok: (sum - 6.0).abs() < 1e-6,
    }
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
