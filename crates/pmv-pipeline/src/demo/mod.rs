//! The built-in demo: a small synthetic portrait dataset that needs motion to classify,
//! served over HTTP from inside the process and taken through every stage.
//!
//! The videos are rendered by [`pmv_shard::synth`] and encoded by the media layer; [`serve`]
//! serves them on 127.0.0.1. The demo drives every stage through its library API.

#[cfg(feature = "media")]
mod prepare;
pub mod serve;

#[cfg(feature = "media")]
pub use prepare::{DATASET, DemoError, DemoOptions, Prepared, prepare, recipe};
