//! pmv-shard: the frame-shard format, the contract between the shard stage, the
//! trainer and the outside world.
//!
//! Owns the bytes of a shard: [`mod@format`] (sample keys, tar and npy headers, sample
//! metadata, the writer), [`codec`] (the JPEG frame codec) and [`reader`] (maps a shard
//! and hands out samples without copying raw frames), [`index`] (the shard index and
//! class list beside a split's shards), plus [`synth`], the synthetic dataset written in
//! the same format for tests and benchmarks. What a sample holds is
//! [`pmv_core::frame_recipe`]. It never decodes video (no FFmpeg) and never opens the
//! catalog: the shard stage and the trainer both build on it.

pub mod codec;
pub mod format;
pub mod index;
pub mod reader;
pub mod synth;

pub use format::{
    FrameData, Member, SampleIndex, SampleInput, SampleMeta, ShardError, ShardSummary, ShardWriter,
    sample_key,
};
pub use reader::{Sample, ShardReader};
