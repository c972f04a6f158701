//! The nightly refresh: one command that a crontab or systemd timer runs, which brings
//! every configured dataset up to date (ingest, fetch, shard, verify) within limits.
//!
//! Owns the order of the stages, the time and size budget of a run, the rotating
//! bit-rot check and the run's report. The stages themselves belong to their modules;
//! the refresh only calls their library APIs. It never deletes a stored byte.

pub mod config;
