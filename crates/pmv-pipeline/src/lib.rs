//! pmv-pipeline: the stages that turn manifests into verified files and frame shards.
//!
//! Data flows one way: manifests ([`manifest`]) are merged into the catalog by
//! [`ingest`]; [`fetch`] resolves each item's sources ([`source`]) and stores verified
//! files; [`sharding`] decodes them with the media layer ([`media`], FFmpeg behind the
//! `media` feature) into shards; [`refresh`] runs all of it from one configuration file
//! ([`config`]) and [`demo`] on built-in data. Every HTTP request goes through [`net`].
//! Layers, each using only those below it: refresh and demo → ingest, fetch, sharding →
//! manifest, source, media → net. The catalog (`pmv_catalog`), the shard format
//! (`pmv_shard`) and the shared vocabulary (`pmv_core`) sit under all of them. Nothing
//! here prints: progress goes through [`pmv_core::Reporter`].

pub mod config;
pub mod demo;
pub mod fetch;
pub mod ingest;
pub mod manifest;
#[cfg(feature = "media")]
pub mod media;
pub mod net;
pub mod refresh;
pub mod sharding;
pub mod source;

/// The cargo features this build was compiled with.
pub fn features() -> Vec<&'static str> {
    let mut f = vec![];
    if cfg!(feature = "media") {
        f.push("media");
    }
    f
}
