//! Integration tests: one binary, one module per area, each test in its own temp root.

mod cli;
mod format_compat;
mod ingest_bad;
mod ingest_changes;
mod ingest_formats;
mod ingest_pmv400;
#[cfg(feature = "media")]
mod probe;
#[cfg(feature = "media")]
mod shard_media;
#[cfg(feature = "media")]
mod shard_run;
#[cfg(feature = "media")]
mod shard_util;
mod util;
