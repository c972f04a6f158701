//! Where tensors live and in which precision the model computes.
//!
//! Owns the choice that `--device auto|cpu|cuda[:i]` and `--precision auto|fp32|bf16`
//! (parsed in `cli`) resolve to on this machine, how many loader threads feed it by
//! default, and the one way small host tensors reach it without a stall
//! ([`to_device_async`]). It never decides what data to move.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::cli::RuntimeArgs;
pub use super::cli::{DeviceChoice, PrecisionChoice};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("--device cuda:{asked}: this machine has {found} CUDA devices visible to libtorch")]
    NoSuchCuda { asked: usize, found: i64 },
}

/// The device `choice` names on this machine: `auto` is the first CUDA device if
/// there is one.
pub fn resolve_device(choice: DeviceChoice) -> Result<Device, DeviceError> {
    {
        match choice {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Auto => Ok(if tch::Cuda::is_available() {
                Device::Cuda(0)
            } else {
                Device::Cpu
            }),
            DeviceChoice::Cuda(i) => {
                let found = tch::Cuda::device_count();
                if (i as i64) < found {
                    Ok(Device::Cuda(i))
                } else {
                    Err(DeviceError::NoSuchCuda { asked: i, found })
                }
            }
        }
    }
}

pub fn device_name(d: Device) -> String {
    match d {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

/// The resolved precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Bf16,
}

/// The precision `choice` names on `device`: `auto` is bf16 on CUDA.
pub fn resolve_precision(choice: PrecisionChoice, device: Device) -> Precision {
    {
        match choice {
            PrecisionChoice::Fp32 => Precision::Fp32,
            PrecisionChoice::Bf16 => Precision::Bf16,
            PrecisionChoice::Auto if device.is_cuda() => Precision::Bf16,
            PrecisionChoice::Auto => Precision::Fp32,
        }
    }
}

impl Precision {
    /// The kind products and convolutions compute in.
    pub fn compute_kind(self) -> Kind {
        match self {
            Precision::Fp32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        }
    }
}

/// Makes the CPU treat subnormal floats as zero (FTZ and DAZ on x86-64, FZ on
/// AArch64) for this thread and the threads it starts later, libtorch's among them
/// (what `torch.set_flush_denormal(True)` does). Adam's second moments of rarely
/// updated weights and tiny gradients can fall below 1.2e-38, where x86 arithmetic
/// takes microcode assists many times slower than normal; values that small carry no
/// information here. Call it first in `main`, before libtorch starts its thread pool.
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    {
        let mut csr: u32 = 0;
        // SAFETY: stmxcsr/ldmxcsr read and write this thread's SSE control register;
        // setting FTZ (bit 15) and DAZ (bit 6) only changes how subnormals round.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
            csr |= 0x8040;
            std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: FPCR is this thread's floating-point control register; bit 24 (FZ)
        // flushes subnormals to zero.
        unsafe {
            let mut fpcr: u64;
            std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags));
            fpcr |= 1 << 24;
            std::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack, preserves_flags));
        }
    }
}

/// A small host tensor on `device` without stalling the host: on CUDA it is staged in
/// pinned memory and copied asynchronously (a copy from pageable memory would first
/// wait for every kernel already queued, so the host could no longer run ahead of the
/// GPU). Elsewhere it is moved as it is.
pub fn to_device_async(t: Tensor, device: Device) -> Tensor {
    if device.is_cuda() {
        let kind = t.kind();
        t.internal_pin_memory(device)
            .to_device_(device, kind, true, false)
    } else {
        t.to_device(device)
    }
}

/// Loader threads when `--workers` is not given.
pub fn default_workers(rt: &RuntimeArgs, device: Device) -> usize {
    rt.workers
        .unwrap_or_else(|| {
            if device.is_cuda() {
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
                cores.saturating_sub(1).clamp(1, 12)
            } else {
                1
            }
        })
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnormals_flush_to_zero() {
        flush_denormals();
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        let half = std::hint::black_box(0.5f32);
        assert_eq!(tiny * half, 0.0);
    }

    #[test]
    fn devices_parse() {
        assert_eq!("auto".parse(), Ok(DeviceChoice::Auto));
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        assert!("gpu".parse::<DeviceChoice>().is_err());
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert_eq!(resolve_device(DeviceChoice::Cpu).unwrap(), Device::Cpu);
        assert_eq!(
            resolve_precision(PrecisionChoice::Auto, Device::Cpu),
            Precision::Fp32
        );
        assert_eq!(
            resolve_precision(PrecisionChoice::Auto, Device::Cuda(0)),
            Precision::Bf16
        );
        if !tch::Cuda::is_available() {
            let e = resolve_device(DeviceChoice::Cuda(0)).unwrap_err();
            assert!(e.to_string().contains("0 CUDA devices"), "{e}");
        }
    }
}
