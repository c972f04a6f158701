//! Integration tests: one binary, one module per area, each test in its own temp root.

mod cli;
mod format_compat;
mod ingest_bad;
mod ingest_changes;
mod ingest_formats;
mod ingest_pmv400;
mod util;
mod shard_media;
mod shard_util;
mod shard_run;
