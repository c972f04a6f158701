//! pmv-core: the ground floor every pmv-data crate stands on.
//!
//! Owns the vocabulary the stages share and nothing that does a stage's work: item ids
//! ([`ids`]), splits ([`split`]), manifest formats, source kinds, file roles and
//! locators ([`kinds`]), what a shard sample is made of ([`frame_recipe`]), byte sizes and
//! small file helpers ([`util`]), the data root and its lock ([`root`]), free space
//! ([`disk`]), how a URL is shown ([`redact`]), the Python-literal parser that reads
//! `.npy` headers and xinpianchang metadata ([`pydict`]) and the [`Reporter`] every
//! long stage reports progress through. It never prints, opens a network connection,
//! runs SQL or links FFmpeg or libtorch.

pub mod disk;
pub mod frame_recipe;
pub mod ids;
pub mod kinds;
pub mod pydict;
pub mod redact;
pub mod report;
pub mod root;
pub mod size;
pub mod split;
pub mod util;

pub use kinds::{Format, Locator, Role, SourceKind};
pub use report::Reporter;

/// The version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
