//! Shards: fixed-shape frame tensors of one recipe in WebDataset-layout tar files.
//!
//! [`mod@format`] owns the bytes of a shard (sample keys, tar and npy headers, sample
//! metadata, the writer) and [`reader`] maps a shard and hands out samples without
//! copying. Both compile in every build: the trainer reads shards without FFmpeg, and
//! so do [`recipe`] (what a sample is, and its stable id) and [`work`] (what the catalog
//! says is left to shard). The stage itself — decoding with the media layer
//! ([`run`], [`rebuild_shard`]), quarantine of corrupt videos — needs the `media`
//! feature.

pub mod format;
pub mod reader;

pub use format::{
    Member, SampleIndex, SampleInput, SampleMeta, ShardError, ShardSummary, ShardWriter, sample_key,
};
pub use reader::{Sample, ShardReader};

#[cfg(feature = "media")]
mod pipeline;
#[cfg(feature = "media")]
pub mod quarantine;
pub mod recipe;
#[cfg(feature = "media")]
mod stage;
pub mod work;

#[cfg(feature = "media")]
pub use pipeline::Stop;
pub use recipe::{Recipe, RecipeParams};
#[cfg(feature = "media")]
pub use stage::{
    DEFAULT_SHARD_BYTES, Failure, RebuildReport, ShardOptions, ShardRecord, ShardReport,
    ShardRunError, rebuild_shard, register_recipe, run, samples_per_shard, stored_recipe,
};
pub use work::{OpenError, ShardRow, live_shards, open_shard};
