//! Every HTTP request pmv-data makes: the client, its settings, how a failure is
//! classed, politeness towards each host, and which addresses are never fetched.
//!
//! Owns the wire (reqwest with rustls), redirects checked hop by hop, per-host limits
//! and retry timing. It knows nothing of manifests, sources or the catalog: those call
//! in here.

pub mod client;
pub mod failure;
pub mod politeness;
pub mod reach;
pub mod settings;

pub use failure::{ErrorClass, Failure};
pub use settings::{FetchConfig, FetchSettings};
