//! Where the trainer binary (`pmv-data-train`, which links libtorch) is found.

use std::path::PathBuf;

/// `pmv-data-train` beside this executable, else on `PATH`; `PMV_DATA_TRAIN`
/// overrides both.
#[cfg_attr(not(feature = "train"), allow(dead_code))]
pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os("PMV_DATA_TRAIN") {
        return PathBuf::from(p);
    }
    let name = "pmv-data-train";
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name(name))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}
