//! pmv-data: turns link lists of short videos into verified downloads, fixed-size
//! frame shards and trained video classifiers.
//!
//! Data flows one way through the stages, each owned by one module:
//! manifests ([`manifest`]) are merged into the SQLite catalog ([`catalog`]) by
//! [`ingest`]; every stage records its state in the catalog, inside the data root
//! ([`root`]). Heavy native parts sit behind cargo features: `media` (FFmpeg) and
//! `train` (libtorch). Only the `pmv-data-train` binary links libtorch (its code is in
//! `src/train/`, outside this library), so `pmv-data` starts without loading it.

// The library reports through its types and `Reporter`; it never prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod catalog;
pub mod config;
pub mod demo;
pub mod disk;
pub mod fetch;
pub mod ingest;
pub mod manifest;
#[cfg(feature = "media")]
pub mod media;
pub mod reach;
pub mod redact;
pub mod refresh;
pub mod report;
pub mod root;
pub mod shard;
pub mod source;
pub mod synth;
pub mod util;

/// The version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The cargo features this build was compiled with.
pub fn features() -> Vec<&'static str> {
    let mut f = vec![];
    if cfg!(feature = "media") {
        f.push("media");
    }
    if cfg!(feature = "train") {
        f.push("train");
    }
    f
}
