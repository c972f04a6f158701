//! The shard stage: stored videos decoded into frame shards of one frame recipe.
//!
//! Owns the decoding pipeline that feeds the shard writer (`pipeline`, with the media
//! layer), the stage that picks the work, writes and registers shards ([`run`],
//! [`rebuild_shard`]), what the catalog says is left to shard ([`work`]), the shard
//! index and class list beside each split's shards ([`index`]) and the quarantine of
//! corrupt videos. The shard bytes themselves are `pmv_shard`'s; what a
//! sample holds is [`pmv_core::frame_recipe`]; the rows of recipes, shards and samples are
//! read and written through `pmv_catalog` (its shards module), never here. Only [`work`]
//! and [`index`] compile without the `media` feature.

pub mod index;
#[cfg(feature = "media")]
mod pipeline;
#[cfg(feature = "media")]
pub mod quarantine;
#[cfg(feature = "media")]
mod stage;
pub mod work;

pub use pmv_core::frame_recipe::{self, FrameParams, FrameRecipe};
pub use pmv_shard::{
    FrameData, Member, Sample, SampleIndex, SampleInput, SampleMeta, ShardError, ShardReader,
    ShardSummary, ShardWriter, format, reader, sample_key,
};

pub use index::{IndexError, IndexTarget};
#[cfg(feature = "media")]
pub use pipeline::Stop;
#[cfg(feature = "media")]
pub use stage::{
    DEFAULT_SHARD_BYTES, Failure, RebuildReport, ShardOptions, ShardRecord, ShardReport,
    ShardRunError, rebuild_shard, register_recipe, run, samples_per_shard, stored_recipe,
};
pub use work::{OpenError, open_shard};
