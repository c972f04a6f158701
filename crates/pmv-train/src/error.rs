//! The error of a trainer command, and the exit status it maps to.

use std::path::PathBuf;

use pmv_term::exit::Exit;

use super::checkpoint::CheckpointError;
use super::data::DataError;
use super::data::loader::LoaderError;
use super::device::DeviceError;
use super::models::ModelError;
use super::plot::PlotError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Plot(#[from] PlotError),
    #[error(transparent)]
    Synth(#[from] pmv_shard::synth::SynthError),
    /// The command line asks for something that cannot be done (exit 2).
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Invalid(String),
    /// A collective failed, or the ranks disagree (the message names the ranks).
    #[error("{0}")]
    Dist(String),
    /// SIGINT or SIGTERM stopped the run after a checkpoint (exit 130).
    #[error("interrupted at step {step}: checkpoint saved; continue with --resume --out {}", run_dir.display())]
    Interrupted { step: u64, run_dir: PathBuf },
    /// With --strict: the first sample that could not be read.
    #[error("{0} (without --strict such samples are counted and left out)")]
    BadSample(String),
    #[error(
        "training diverged: the loss is {loss} at step {step} (try a lower --lr or --clip-grad)"
    )]
    Diverged { step: u64, loss: f64 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl TrainError {
    pub fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
        move |source| TrainError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// [`Exit::Usage`] (2) for a command line that cannot work, [`Exit::Locked`] (75)
    /// for a run in use, [`Exit::Interrupted`] (130) for a run stopped by a signal, else
    /// [`Exit::Error`] (1).
    pub fn exit(&self) -> Exit {
        match self {
            TrainError::Usage(_) => Exit::Usage,
            TrainError::Interrupted { .. } => Exit::Interrupted,
            TrainError::Checkpoint(CheckpointError::Busy { .. }) => Exit::Locked,
            _ => Exit::Error,
        }
    }
}
