//! Integration tests: one binary, one module per area, each test in its own temp root.

// Tests may say on stderr why they skipped a case; only the shipped code must not print.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[cfg(feature = "train")]
mod baselines;
mod cli;
#[cfg(all(feature = "media", feature = "train"))]
mod demo;
#[cfg(feature = "train")]
mod distributed;
mod douyin_cookies;
mod fetch;
mod fetch_api;
mod fetch_budget;
mod fetch_disk;
mod fetch_dry_run;
mod fetch_faults;
mod fetch_kill;
mod fetch_private;
mod fetch_resolve;
mod fetch_sources;
#[cfg(all(feature = "media", feature = "train"))]
mod fidelity;
mod format_compat;
#[cfg(feature = "train")]
mod hf_interop;
mod httpd;
mod ingest_bad;
mod ingest_changes;
mod ingest_formats;
mod ingest_pmv400;
mod json_output;
mod local;
#[cfg(feature = "media")]
mod media_hostile;
#[cfg(feature = "train")]
mod multimodal;
mod onedrive;
#[cfg(feature = "train")]
mod pretrain;
#[cfg(feature = "media")]
mod probe;
#[cfg(all(feature = "media", feature = "train"))]
mod readme;
mod recipes;
#[cfg(feature = "media")]
mod refresh;
#[cfg(feature = "media")]
mod shard_codec;
#[cfg(feature = "media")]
mod shard_index;
#[cfg(feature = "media")]
mod shard_media;
#[cfg(feature = "media")]
mod shard_run;
#[cfg(feature = "media")]
mod shard_util;
#[cfg(feature = "train")]
mod tensorboard;
#[cfg(feature = "train")]
mod train;
mod util;
#[cfg(feature = "train")]
mod x3d;
