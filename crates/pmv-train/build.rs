//! Build script: gives the binary an rpath to the libtorch it was linked against.
//!
//! torch-sys (links = "tch") reports the directory of the libtorch shared libraries it
//! found (the `torch` wheel in the repository's venv, or `LIBTORCH`). Recording it as an
//! rpath lets `pmv-data-train` and this crate's tests start without `LD_LIBRARY_PATH`.
//! Nothing else happens here.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Cargo exposes a dependency's `cargo:KEY=VALUE` metadata as DEP_<LINKS>_<KEY>.
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .or_else(|_| std::env::var("DEP_TORCH_SYS_LIBTORCH_LIB"));
    match lib {
        Ok(dir) if !dir.is_empty() => {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
            // Nothing calls into libtorch_cuda directly, so `--as-needed` would drop it
            // and CUDA would look absent on a GPU machine. Only the trainer binary keeps
            // it: `pmv-data` itself links no libtorch at all (it starts in a tenth of
            // the time and a third of the memory).
            if std::path::Path::new(&dir).join("libtorch_cuda.so").exists() {
                println!(
                    "cargo:rustc-link-arg-bin=pmv-data-train=-Wl,--no-as-needed,-ltorch_cuda,--as-needed"
                );
            }
            println!("cargo:rustc-env=PMV_LIBTORCH_LIB={dir}");
            // The torch wheel keeps its version next to lib/: torch/version.py.
            let version_py = std::path::Path::new(&dir).join("../version.py");
            println!("cargo:rerun-if-changed={}", version_py.display());
            if let Ok(text) = std::fs::read_to_string(&version_py) {
                let version = text
                    .lines()
                    .find_map(|l| l.strip_prefix("__version__"))
                    .and_then(|rest| rest.split(['\'', '"']).nth(1));
                if let Some(v) = version {
                    println!("cargo:rustc-env=PMV_LIBTORCH_VERSION={v}");
                }
            }
        }
        _ => println!(
            "cargo:warning=torch-sys did not report a libtorch directory; \
             set LD_LIBRARY_PATH to libtorch's lib directory to run pmv-data-train"
        ),
    }
}
