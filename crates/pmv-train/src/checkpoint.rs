//! Run directories, checkpoints and resume.
//!
//! Owns the layout of a run directory (`run.json`, `state.json`, `checkpoints/`,
//! `model.safetensors`, `metrics.jsonl`, `errors.jsonl`, plots, `eval-*/`), the lock that
//! keeps two processes out of one run, and durable writes: every file is written to a
//! temporary name, fsynced and renamed, and `state.json` (which names the checkpoint
//! files) is replaced only after the files it names are durable. So a run killed at any
//! moment resumes from a complete checkpoint. Weights are safetensors files with the
//! model's own parameter names (for ViTs, `transformers`' names and a `config.json`
//! beside them); optimiser moments are a second safetensors file.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("the run {path} is in use by another process (its lock is held)")]
    Busy { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A run directory: locked while this value lives, unless it follows another process's
/// ([`RunDir::follow`]).
pub struct RunDir {
    path: PathBuf,
    _lock: Option<std::fs::File>,
}

impl RunDir {
    /// Creates (if needed) and locks `path`.
    pub fn open(path: &Path) -> Result<RunDir, CheckpointError> {
        fs_err::create_dir_all(path).map_err(io(path))?;
        let lock_path = path.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(CheckpointError::Busy {
                    path: path.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        Ok(RunDir {
            path: path.to_owned(),
            _lock: Some(file),
        })
    }

    /// `path` as another process holds it: no lock taken, nothing created. Data-parallel
    /// ranks other than 0 read the run rank 0 has opened and locked.
    pub fn follow(path: &Path) -> RunDir {
        RunDir {
            path: path.to_owned(),
            _lock: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.path.join("checkpoints")
    }
}

/// Where a run stands; `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Optimiser steps done.
    pub step: u64,
    /// The epoch in progress (0-based) and the batches of it already consumed.
    pub epoch: u64,
    pub batch_in_epoch: usize,
    pub finished: bool,
    /// Checkpoint files, relative to the run directory.
    pub weights: String,
    pub optimizer: String,
    /// Every random draw derives from this seed and the position it is made at.
    pub seed: u64,
    pub rng: String,
    pub classes: Vec<String>,
    /// The training recipe (a copy of run.json's, for readers of this file alone).
    /// The run's hyper-parameters (`hyper`; `recipe` in runs written before).
    #[serde(rename = "hyper", alias = "recipe")]
    pub hyper: serde_json::Value,
    /// Samples left out so far because they could not be read.
    pub bad_samples: u64,
    pub saved_at: i64,
    /// Data-parallel ranks the run had when it saved this (`batch_in_epoch` counts
    /// each rank's batches); 1 in runs written before.
    #[serde(default = "one_rank")]
    pub world: usize,
    /// The checkpoint's moving average of the weights (`--model-ema`), relative to the
    /// run directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<String>,
}

pub const STATE_VERSION: u32 = 1;

fn one_rank() -> usize {
    1
}

fn safetensors_dtype(kind: Kind) -> Option<&'static str> {
    Some(match kind {
        Kind::Float => "F32",
        Kind::Double => "F64",
        Kind::Half => "F16",
        Kind::BFloat16 => "BF16",
        Kind::Int64 => "I64",
        Kind::Int => "I32",
        Kind::Int16 => "I16",
        Kind::Int8 => "I8",
        Kind::Uint8 => "U8",
        Kind::Bool => "BOOL",
        _ => return None,
    })
}

/// Writes `tensors` as a safetensors file (sorted by name, header padded to 8 bytes,
/// `metadata` in `__metadata__`), durably: temporary file, fsync, rename, directory
/// fsync.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), CheckpointError> {
    let mut sorted: Vec<&(String, Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).unwrap_or_default(),
        );
    }
    let mut offset = 0usize;
    let mut cpu = Vec::with_capacity(sorted.len());
    for (name, t) in &sorted {
        let dtype = safetensors_dtype(t.kind()).ok_or_else(|| CheckpointError::Invalid {
            path: path.to_owned(),
            message: format!("{name}: tensors of kind {:?} cannot be saved", t.kind()),
        })?;
        let t = t.detach().to_device(Device::Cpu).contiguous();
        let bytes = t.numel() * t.kind().elt_size_in_bytes();
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": dtype,
                "shape": t.size(),
                "data_offsets": [offset, offset + bytes],
            }),
        );
        offset += bytes;
        cpu.push(t);
    }
    let mut head = serde_json::to_vec(&header).map_err(|e| CheckpointError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let file = fs_err::File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        w.write_all(&(head.len() as u64).to_le_bytes())?;
        w.write_all(&head)?;
        let mut buf = vec![];
        for t in &cpu {
            let n = t.numel() * t.kind().elt_size_in_bytes();
            buf.resize(n, 0);
            t.f_copy_data_u8(&mut buf, t.numel())
                .map_err(std::io::Error::other)?;
            w.write_all(&buf)?;
        }
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = fs_err::remove_file(&tmp);
        return Err(io(path)(e));
    }
    fs_err::rename(&tmp, path).map_err(io(path))?;
    pmv_core::util::sync_dir(dir).map_err(io(dir))
}

/// Writes a JSON document durably (temporary file, fsync, rename).
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), CheckpointError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| CheckpointError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    bytes.push(b'\n');
    pmv_core::util::write_atomic(path, &bytes).map_err(io(path))
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CheckpointError> {
    let text = fs_err::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| CheckpointError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The state of a run, if it has one.
pub fn load_state(run: &RunDir) -> Result<Option<State>, CheckpointError> {
    let path = run.file("state.json");
    if !path.exists() {
        return Ok(None);
    }
    let s: State = read_json(&path)?;
    if s.version != STATE_VERSION {
        return Err(CheckpointError::Invalid {
            path,
            message: format!("state version {} is not {STATE_VERSION}", s.version),
        });
    }
    Ok(Some(s))
}

/// Saves a checkpoint at `state.step`: weights, moments, the weights' moving average
/// (when given), then `state.json`; removes checkpoints older than the newest `keep`.
pub fn save(
    run: &RunDir,
    weights: &[(String, Tensor)],
    moments: &[(String, Tensor)],
    ema: Option<&[(String, Tensor)]>,
    mut state: State,
    metadata: &BTreeMap<String, String>,
    keep: usize,
) -> Result<State, CheckpointError> {
    let dir = run.checkpoints();
    fs_err::create_dir_all(&dir).map_err(io(&dir))?;
    let stem = format!("step-{:08}", state.step);
    let w = format!("checkpoints/{stem}.safetensors");
    let o = format!("checkpoints/{stem}.optim.safetensors");
    write_safetensors(&run.file(&w), weights, metadata)?;
    write_safetensors(&run.file(&o), moments, &BTreeMap::new())?;
    state.ema = match ema {
        Some(e) => {
            let f = format!("checkpoints/{stem}.ema.safetensors");
            write_safetensors(&run.file(&f), e, metadata)?;
            Some(f)
        }
        None => None,
    };
    state.weights = w;
    state.optimizer = o;
    state.saved_at = pmv_core::util::now_unix();
    write_json(&run.file("state.json"), &state)?;
    prune(&dir, keep.max(1));
    Ok(state)
}

/// Removes all but the newest `keep` checkpoints (never the one `state.json` names,
/// which is the newest).
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = fs_err::read_dir(dir) else {
        return;
    };
    let mut steps: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix(".optim.safetensors")
                .filter(|s| s.starts_with("step-"))
                .map(str::to_owned)
        })
        .collect();
    steps.sort();
    let drop = steps.len().saturating_sub(keep);
    for stem in &steps[..drop] {
        for suffix in [".safetensors", ".optim.safetensors", ".ema.safetensors"] {
            let p = dir.join(format!("{stem}{suffix}"));
            if suffix == ".ema.safetensors" && !p.exists() {
                continue;
            }
            if let Err(e) = fs_err::remove_file(&p) {
                tracing::warn!("cannot remove an old checkpoint: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_through_libtorch_and_keep_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]);
        let b = Tensor::from_slice(&[7i64]);
        let c = Tensor::from_slice(&[0.5f32]).to_kind(Kind::BFloat16);
        let meta: BTreeMap<String, String> = [("format".to_owned(), "pt".to_owned())].into();
        write_safetensors(
            &p,
            &[
                ("z.a".into(), a.shallow_clone()),
                ("b".into(), b),
                ("c".into(), c),
            ],
            &meta,
        )
        .unwrap();
        let back = Tensor::read_safetensors(&p).unwrap();
        let names: Vec<&str> = back.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        let got = &back.iter().find(|(n, _)| n == "z.a").unwrap().1;
        assert!(got.equal(&a));
        let bytes = std::fs::read(&p).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        assert_eq!(header["__metadata__"]["format"], "pt");
        assert_eq!(header["c"]["dtype"], "BF16");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_run_is_locked_and_old_checkpoints_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path()).unwrap();
        assert!(matches!(
            RunDir::open(dir.path()),
            Err(CheckpointError::Busy { .. })
        ));
        let w = [("w".to_owned(), Tensor::from_slice(&[1.0f32]))];
        let mut state = State {
            version: STATE_VERSION,
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            finished: false,
            weights: String::new(),
            optimizer: String::new(),
            seed: 1,
            rng: "counter".into(),
            classes: vec![],
            hyper: serde_json::Value::Null,
            bad_samples: 0,
            saved_at: 0,
            ema: None,
            world: 1,
        };
        for step in [1, 2, 3] {
            state.step = step;
            let ema = (step > 1).then_some(&w[..]);
            state = save(&run, &w, &w, ema, state, &BTreeMap::new(), 2).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(run.checkpoints())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "step-00000002.ema.safetensors",
                "step-00000002.optim.safetensors",
                "step-00000002.safetensors",
                "step-00000003.ema.safetensors",
                "step-00000003.optim.safetensors",
                "step-00000003.safetensors"
            ]
        );
        // A state.json written before the hyper-parameters were called `hyper` reads the
        // same, and is written back under the new name.
        let mut old = serde_json::to_value(&state).unwrap();
        let o = old.as_object_mut().unwrap();
        let hp = o.remove("hyper").unwrap();
        o.insert("recipe".into(), serde_json::json!({"lr": 0.1}));
        assert!(hp.is_null());
        let read: State = serde_json::from_value(old).unwrap();
        assert_eq!(read.hyper, serde_json::json!({"lr": 0.1}));
        assert!(serde_json::to_value(&read).unwrap().get("hyper").is_some());
        let s = load_state(&run).unwrap().unwrap();
        assert_eq!(s.step, 3);
        assert_eq!(s.weights, "checkpoints/step-00000003.safetensors");
        assert_eq!(
            s.ema.as_deref(),
            Some("checkpoints/step-00000003.ema.safetensors")
        );
    }
}
