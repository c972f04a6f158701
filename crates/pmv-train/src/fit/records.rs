//! A run's line files: `metrics.jsonl` (one [`Record`] a line, each also an event in
//! the TensorBoard files) and `errors.jsonl`, and the loss and accuracy curves drawn
//! from the metrics.
//!
//! Owns appending lines, cutting a resumed run's files back to its checkpoint, reading
//! the records back and drawing them. It never decides what a line says.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::tensorboard::{self, EventWriter};
use crate::error::TrainError;
use crate::plot;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    Train {
        step: u64,
        /// Fractional epoch.
        epoch: f64,
        loss: f64,
        /// Top-1 on the un-mixed training batches since the last line.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        accuracy: Option<f64>,
        lr: f64,
        /// Clips per second, every rank's together.
        clips_per_s: f64,
        elapsed_s: f64,
        /// Data-parallel runs: seconds per step spent averaging the gradients across
        /// ranks (rank 0's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allreduce_s: Option<f64>,
    },
    Val {
        step: u64,
        epoch: u64,
        loss: f64,
        top1: f64,
        top5: f64,
        mean_class_accuracy: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        map: Option<f64>,
        samples: u64,
        /// The same scores of the weights' moving average (`--model-ema`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ema: Option<EmaScores>,
    },
    /// Pre-training: the reconstruction loss on the validation split, with the same
    /// masks at every validation.
    #[serde(rename = "val_reconstruction")]
    ValReconstruction {
        step: u64,
        epoch: u64,
        loss: f64,
        samples: u64,
    },
}

/// Validation scores of the weights' moving average, in a `val` line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmaScores {
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
    pub mean_class_accuracy: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<f64>,
}

/// Appends each record to `metrics.jsonl` and, unless `--no-tensorboard`, as an event
/// to a new TensorBoard file in `<run>/tb/`.
pub(super) struct Metrics {
    lines: Lines,
    events: Option<EventWriter>,
}

impl Metrics {
    /// Writes nothing (data-parallel ranks other than 0).
    pub(super) fn none() -> Metrics {
        Metrics {
            lines: Lines::none(),
            events: None,
        }
    }

    pub(super) fn open(run_dir: &Path, tensorboard: bool) -> Result<Metrics, TrainError> {
        let lines = Lines::open(run_dir.join("metrics.jsonl"))?;
        let events = if tensorboard {
            Some(EventWriter::create(&run_dir.join(tensorboard::DIR))?)
        } else {
            None
        };
        Ok(Metrics { lines, events })
    }

    pub(super) fn push(&mut self, record: &Record) -> Result<(), TrainError> {
        self.lines.push(record)?;
        if let Some(events) = &mut self.events {
            let value = serde_json::to_value(record).unwrap_or_default();
            events.push(record.step(), &value)?;
        }
        Ok(())
    }

    /// Makes both durable (at each checkpoint).
    pub(super) fn sync(&self) -> Result<(), TrainError> {
        self.lines.sync()?;
        if let Some(events) = &self.events {
            events.sync()?;
        }
        Ok(())
    }
}

impl Record {
    /// The global optimiser step of the record.
    pub fn step(&self) -> u64 {
        match self {
            Record::Train { step, .. }
            | Record::Val { step, .. }
            | Record::ValReconstruction { step, .. } => *step,
        }
    }
}

/// Appends lines to a JSON-lines file (or, made with [`Lines::none`], nowhere).
pub(super) struct Lines {
    path: PathBuf,
    file: Option<fs_err::File>,
}

impl Lines {
    pub(super) fn open(path: PathBuf) -> Result<Lines, TrainError> {
        let file = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(TrainError::io(&path))?;
        Ok(Lines {
            path,
            file: Some(file),
        })
    }

    /// Writes nothing (data-parallel ranks other than 0).
    pub(super) fn none() -> Lines {
        Lines {
            path: PathBuf::new(),
            file: None,
        }
    }

    pub(super) fn push(&mut self, value: &impl Serialize) -> Result<(), TrainError> {
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(value).unwrap_or_default();
        line.push(b'\n');
        file.write_all(&line).map_err(TrainError::io(&self.path))
    }

    pub(super) fn sync(&self) -> Result<(), TrainError> {
        match &self.file {
            Some(f) => f.sync_data().map_err(TrainError::io(&self.path)),
            None => Ok(()),
        }
    }
}

/// Keeps the lines of a JSON-lines file that `keep` accepts (a resumed run drops what
/// was written after its checkpoint).
pub(super) fn truncate_lines(
    path: &Path,
    keep: impl Fn(&serde_json::Value) -> bool,
) -> Result<(), TrainError> {
    if !path.exists() {
        return Ok(());
    }
    let text = fs_err::read_to_string(path).map_err(TrainError::io(path))?;
    let mut out = String::new();
    for line in text.lines() {
        // A torn last line (killed mid-write) is dropped too.
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
            && keep(&v)
        {
            out.push_str(line);
            out.push('\n');
        }
    }
    pmv_core::util::write_atomic(path, out.as_bytes()).map_err(TrainError::io(path))
}

pub fn read_records(path: &Path) -> Vec<Record> {
    fs_err::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Draws `loss.png` and `accuracy.png` from `metrics.jsonl`.
pub fn draw_curves(dir: &Path, records: &[Record]) -> Result<Vec<PathBuf>, TrainError> {
    let mut train_loss = vec![];
    let mut train_acc = vec![];
    let mut val_loss = vec![];
    let mut val_top1 = vec![];
    let mut val_top5 = vec![];
    for r in records {
        match r {
            Record::Train {
                step,
                loss,
                accuracy,
                ..
            } => {
                train_loss.push((*step as f64, *loss));
                if let Some(a) = accuracy {
                    train_acc.push((*step as f64, *a));
                }
            }
            Record::Val {
                step,
                loss,
                top1,
                top5,
                ..
            } => {
                val_loss.push((*step as f64, *loss));
                val_top1.push((*step as f64, *top1));
                val_top5.push((*step as f64, *top5));
            }
            Record::ValReconstruction { step, loss, .. } => {
                val_loss.push((*step as f64, *loss));
            }
        }
    }
    let series = |name, points, markers| plot::Series {
        name,
        points,
        markers,
    };
    let loss = plot::curves(
        &dir.join("loss.png"),
        "Loss",
        "loss",
        &[
            series("train", train_loss, false),
            series("validation", val_loss, true),
        ],
        None,
    )?;
    if train_acc.is_empty() && val_top1.is_empty() {
        // Pre-training: no accuracy to draw.
        return Ok(vec![loss]);
    }
    let acc = plot::curves(
        &dir.join("accuracy.png"),
        "Accuracy",
        "accuracy",
        &[
            series("train top-1", train_acc, false),
            series("validation top-1", val_top1, true),
            series("validation top-5", val_top5, true),
        ],
        Some((0.0, 1.0)),
    )?;
    Ok(vec![loss, acc])
}
