//! The nightly refresh: one command that a crontab or systemd timer runs, which brings
//! every configured dataset up to date (ingest, fetch, shard, verify) within limits.
//!
//! Owns the order of the stages, the time, item and byte budget of a run, the rotating
//! bit-rot check and the run's report. The stages themselves belong to their modules;
//! the refresh only calls their library APIs, in this order:
//!
//! 1. **ingest** every dataset's manifests (an unchanged manifest is not read again);
//! 2. **re-hash** a rotating slice of the stored videos and covers: changed bytes go to
//!    `quarantine/` and back to `pending`, so step 3 fetches them again;
//! 3. **fetch** what is due, within the item and byte budget;
//! 4. **check shards**: re-hash a rotating slice of the live shards; a damaged one is
//!    written again from its videos under a new name (the catalog switches in one
//!    transaction; the damaged file stays for inspection);
//! 5. **shard** every newly verified video with every recipe of its dataset.
//!
//! The deadline (`max_duration`) bounds every stage, the work in flight included (see
//! `run`); later stages are then skipped. It never deletes a stored byte.

/// The `[refresh]` and `[[datasets]]` sections, read with the rest of the file.
pub use crate::config::refresh as config;
#[cfg(feature = "media")]
mod run;

pub use config::{DatasetPlan, RefreshPlan};
#[cfg(feature = "media")]
pub use run::{
    DatasetOutcome, RecipeOutcome, RefreshError, RefreshOptions, RefreshReport, ShardCheck,
    StageTime, find_recipe, run, turn,
};
