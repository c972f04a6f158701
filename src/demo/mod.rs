//! The built-in demo: a small synthetic portrait dataset that needs motion to classify,
//! served over HTTP from inside the process and taken through every stage.
//!
//! [`synth`] renders the videos, [`serve`] serves them on 127.0.0.1. Neither touches the
//! catalog; the demo command drives the stages through their library APIs.

pub mod serve;
pub mod synth;
