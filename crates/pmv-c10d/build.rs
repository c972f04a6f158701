//! Compiles the c10d shim against the libtorch torch-sys links (`LIBTORCH`, as
//! `.cargo/config.toml` sets it), with the flags torch-sys compiles its own C++ with.
//!
//! The Gloo half is always built: the wheel carries Gloo's code in `libtorch_cpu.so`
//! but not its headers, so the headers of the Gloo commit that wheel was built from
//! are vendored under `third_party/gloo` (see `third_party/README.md`). The NCCL half
//! (`shim/nccl.cpp`) is built when libtorch has CUDA (`libtorch_cuda.so`) and the CUDA
//! and NCCL headers are found; the crate then has `cfg(pmv_nccl)`.

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rustc-check-cfg=cfg(pmv_nccl)");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-env-changed=PMV_C10D_CUDA_INCLUDE");
    println!("cargo:rerun-if-env-changed=PMV_C10D_NO_NCCL");
    for f in ["shim/shim.cpp", "shim/shim.h", "shim/nccl.cpp"] {
        println!("cargo:rerun-if-changed={f}");
    }
    let libtorch = PathBuf::from(env::var("LIBTORCH").expect(
        "LIBTORCH must name libtorch (scripts/setup.sh installs it; .cargo/config.toml sets it)",
    ));
    let lib = libtorch.join("lib");
    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let base = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .pic(true)
            .warnings(false)
            .std("c++17")
            .include(libtorch.join("include"))
            .include(libtorch.join("include/torch/csrc/api/include"))
            .include("third_party")
            .include("shim")
            .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
            .define("GLOG_USE_GLOG_EXPORT", None);
        b
    };
    let mut b = base();
    b.define("USE_C10D_GLOO", None).file("shim/shim.cpp");
    let nccl = nccl_includes(&libtorch);
    if nccl.is_some() {
        b.define("PMV_NCCL", None);
    }
    b.compile("pmv_c10d_shim");
    if let Some(dirs) = nccl {
        let mut n = base();
        n.define("USE_C10D_NCCL", None).define("USE_CUDA", None);
        for d in dirs {
            n.include(d);
        }
        n.file("shim/nccl.cpp").compile("pmv_c10d_nccl");
        println!("cargo:rustc-cfg=pmv_nccl");
        for l in ["torch_cuda", "c10_cuda"] {
            println!("cargo:rustc-link-lib=dylib={l}");
        }
    }
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    for l in ["torch_cpu", "c10"] {
        println!("cargo:rustc-link-lib=dylib={l}");
    }
}

/// The include folders the NCCL half needs, when this libtorch has CUDA and they are
/// all found: `cuda_runtime.h` with `crt/host_config.h` and `nv/target` (a CUDA
/// toolkit, `PMV_C10D_CUDA_INCLUDE`, or the `nvidia-cuda-*` wheels beside torch), and
/// the `nccl.h` torch was built with.
fn nccl_includes(libtorch: &Path) -> Option<Vec<PathBuf>> {
    if env::var_os("PMV_C10D_NO_NCCL").is_some()
        || !libtorch.join("lib/libtorch_cuda.so").exists()
        || !Path::new("shim/nccl.cpp").exists()
    {
        return None;
    }
    // site-packages/torch → site-packages/nvidia (libtorch may be a link to torch/).
    let torch = libtorch.canonicalize().ok()?;
    let nvidia = torch.parent()?.join("nvidia");
    let mut candidates: Vec<PathBuf> = env::var_os("PMV_C10D_CUDA_INCLUDE")
        .map(|v| env::split_paths(&v).collect())
        .unwrap_or_default();
    for sub in [
        "cu13/include",
        "cuda_runtime/include",
        "cuda_crt/include",
        "cuda_cccl/include",
    ] {
        candidates.push(nvidia.join(sub));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    let find = |rel: &str| candidates.iter().find(|d| d.join(rel).exists()).cloned();
    let need = [
        find("cuda_runtime.h")?,
        find("crt/host_config.h")?,
        find("nv/target")?,
        nvidia
            .join("nccl/include")
            .join("nccl.h")
            .exists()
            .then(|| nvidia.join("nccl/include"))?,
    ];
    let mut dirs: Vec<PathBuf> = vec![];
    for d in need {
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    Some(dirs)
}
