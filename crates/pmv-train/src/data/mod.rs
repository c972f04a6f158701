//! The data side of the trainer: which shards a run reads and how they become batches.
//!
//! Owns the catalog view (which shards, which classes: `catalog`, re-exported here as
//! `data::*`), the shard loader and its worker threads ([`loader`]), the frame
//! augmentation it applies ([`augment`]) and the tokenizer of multimodal texts
//! ([`text`]). It never builds or runs a model: the models never import it, and it uses
//! them only for the normalisation they expect and the shape of their extra inputs.

mod catalog;

pub mod augment;
pub mod loader;
pub mod randaug;
#[cfg(test)]
mod stats;
pub mod text;

pub use catalog::*;
