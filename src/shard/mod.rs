//! Shards: fixed-shape frame tensors of one recipe in WebDataset-layout tar files.
//!
//! [`format`] owns the bytes of a shard (sample keys, tar and npy headers, sample
//! metadata, the writer) and [`reader`] maps a shard and hands out samples without
//! copying. Both compile in every build: the trainer reads shards without FFmpeg.

pub mod format;
pub mod reader;

pub use format::{
    Member, SampleIndex, SampleInput, SampleMeta, ShardError, ShardSummary, ShardWriter, sample_key,
};
pub use reader::{Sample, ShardReader};

pub mod recipe;

pub use recipe::{Recipe, RecipeParams};
