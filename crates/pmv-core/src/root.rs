//! The data root: where everything pmv-data writes lives, and the lock that keeps
//! two writers out of it at once.
//!
//! Owns the layout (`catalog.sqlite`, `videos/`, `covers/`, `shards/`, `runs/`,
//! `quarantine/`, `.lock`) and the exclusive root lock. The lock is an advisory
//! `flock` on `.lock`: the kernel drops it when its holder exits, even on SIGKILL, so a
//! lock left by a killed run is never stale. Nothing may be written outside the root.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::util::{now_unix, rfc3339};

/// Default root when neither `--root` nor `PMV_DATA_ROOT` nor the config names one.
pub const DEFAULT_ROOT: &str = "./pmv-data-root";

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("data root {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another pmv-data process holds the data root {root}: {holder}")]
    Locked { root: PathBuf, holder: String },
}

#[derive(Debug, Clone)]
pub struct DataRoot {
    path: PathBuf,
}

/// Held while a command changes the root; released on drop or process exit.
#[derive(Debug)]
pub struct RootLock {
    _file: std::fs::File,
}

impl DataRoot {
    pub fn new(path: impl Into<PathBuf>) -> DataRoot {
        DataRoot { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn catalog_path(&self) -> PathBuf {
        self.path.join("catalog.sqlite")
    }

    pub fn videos_dir(&self) -> PathBuf {
        self.path.join("videos")
    }

    pub fn covers_dir(&self) -> PathBuf {
        self.path.join("covers")
    }

    pub fn shards_dir(&self) -> PathBuf {
        self.path.join("shards")
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.path.join("runs")
    }

    pub fn quarantine_dir(&self) -> PathBuf {
        self.path.join("quarantine")
    }

    /// Scratch space (sort runs) for the command holding the lock; emptied when a
    /// command takes the lock, since only a killed run can have left anything there.
    pub fn tmp_dir(&self) -> PathBuf {
        self.path.join("tmp")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.path.join(".lock")
    }

    /// Creates the root and its directories (idempotent).
    pub fn ensure(&self) -> Result<(), RootError> {
        for dir in [
            self.path.clone(),
            self.videos_dir(),
            self.covers_dir(),
            self.shards_dir(),
            self.runs_dir(),
            self.quarantine_dir(),
        ] {
            fs_err::create_dir_all(&dir).map_err(|source| RootError::Io { path: dir, source })?;
        }
        Ok(())
    }

    /// Takes the exclusive root lock without waiting. On success the lock file names
    /// this process, so a second process can say who holds it.
    pub fn lock(&self, command: &str) -> Result<RootLock, RootError> {
        let path = self.lock_path();
        let io = |source| RootError::Io {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(RootError::Locked {
                    root: self.path.clone(),
                    holder: if holder.is_empty() {
                        "a process that has not yet written its name".into()
                    } else {
                        holder.to_owned()
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let who = format!(
            "pid {} ({}, started {})\n",
            std::process::id(),
            command,
            rfc3339(now_unix())
        );
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(who.as_bytes()).map_err(io)?;
        let tmp = self.tmp_dir();
        if tmp.exists() {
            fs_err::remove_dir_all(&tmp).map_err(|source| RootError::Io { path: tmp, source })?;
        }
        Ok(RootLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder_and_drop_releases() {
        let dir = tempfile::tempdir().unwrap();
        let root = DataRoot::new(dir.path());
        root.ensure().unwrap();
        let held = root.lock("ingest").unwrap();
        let err = root.lock("fetch").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("ingest"), "{msg}");
        drop(held);
        root.lock("fetch").unwrap();
    }
}
