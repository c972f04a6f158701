//! The data root: where everything pmv-data writes lives, and the lock that keeps
//! two writers out of it at once.
//!
//! Owns the layout (`catalog.sqlite`, `videos/`, `covers/`, `shards/`, `reports/` for
//! the reports of commands, `runs/` for training runs, `quarantine/`, `.lock`) and the
//! exclusive root lock. The lock is an advisory
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

    /// Where every command that changes the root leaves its report
    /// (`reports/<run-id>.json`, and `<run-id>-rejected.txt` beside an ingest's).
    pub fn reports_dir(&self) -> PathBuf {
        self.path.join("reports")
    }

    /// Where training runs keep their directories unless `--out` is absolute
    /// (`runs/<name>/`).
    pub fn training_runs_dir(&self) -> PathBuf {
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
            self.reports_dir(),
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
        self.move_old_reports()?;
        Ok(RootLock { _file: file })
    }

    /// Moves the command reports an earlier version wrote into `runs/` (beside the
    /// training runs) to `reports/`. Only regular files named like a report
    /// (`<run-id>.json`, `<run-id>-rejected.txt`) move; a name already taken in
    /// `reports/` is left where it is, and training run directories never move. Runs
    /// under the root lock, so no command writes a report meanwhile.
    fn move_old_reports(&self) -> Result<(), RootError> {
        let old = self.training_runs_dir();
        let entries = match std::fs::read_dir(&old) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(RootError::Io { path: old, source }),
        };
        let new = self.reports_dir();
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| RootError::Io { path, source }
        };
        for entry in entries {
            let entry = entry.map_err(io(&old))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let is_file = entry.file_type().map_err(io(&old))?.is_file();
            if !is_file || !is_report_name(name) {
                continue;
            }
            fs_err::create_dir_all(&new).map_err(io(&new))?;
            let to = new.join(name);
            if to.exists() {
                continue;
            }
            fs_err::rename(entry.path(), &to).map_err(io(&to))?;
        }
        Ok(())
    }
}

/// `<run-id>.json` or `<run-id>-rejected.txt`, where a run id is
/// `YYYYMMDDTHHMMSSZ-<command>-<4 hex digits>` (see `report::new_run_id`).
fn is_report_name(name: &str) -> bool {
    let Some(id) = name
        .strip_suffix("-rejected.txt")
        .or_else(|| name.strip_suffix(".json"))
    else {
        return false;
    };
    let Some((stamp, rest)) = id.split_once('-') else {
        return false;
    };
    let Some((command, salt)) = rest.rsplit_once('-') else {
        return false;
    };
    let b = stamp.as_bytes();
    b.len() == 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && !command.is_empty()
        && command.bytes().all(|c| c.is_ascii_lowercase() || c == b'-')
        && salt.len() == 4
        && salt.bytes().all(|c| c.is_ascii_hexdigit())
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

    #[test]
    fn reports_of_an_older_root_move_out_of_the_training_runs() {
        let dir = tempfile::tempdir().unwrap();
        let root = DataRoot::new(dir.path());
        let runs = dir.path().join("runs");
        std::fs::create_dir_all(runs.join("pmv400-tiny3d")).unwrap();
        std::fs::write(runs.join("pmv400-tiny3d/run.json"), "{}").unwrap();
        std::fs::write(runs.join("20261122T031502Z-ingest-3f9a.json"), "{}").unwrap();
        std::fs::write(runs.join("20261122T031502Z-ingest-3f9a-rejected.txt"), "x").unwrap();
        std::fs::write(runs.join("20261123T000000Z-refresh-00ff.json"), "{}").unwrap();
        std::fs::write(runs.join("notes.json"), "{}").unwrap();
        // A report already in reports/ is never overwritten.
        std::fs::create_dir_all(dir.path().join("reports")).unwrap();
        std::fs::write(
            dir.path()
                .join("reports/20261123T000000Z-refresh-00ff.json"),
            "new",
        )
        .unwrap();
        root.ensure().unwrap();
        drop(root.lock("status").unwrap());
        let reports = dir.path().join("reports");
        assert!(reports.join("20261122T031502Z-ingest-3f9a.json").is_file());
        assert!(
            reports
                .join("20261122T031502Z-ingest-3f9a-rejected.txt")
                .is_file()
        );
        assert_eq!(
            std::fs::read_to_string(reports.join("20261123T000000Z-refresh-00ff.json")).unwrap(),
            "new"
        );
        assert!(runs.join("20261123T000000Z-refresh-00ff.json").is_file());
        assert!(runs.join("notes.json").is_file());
        assert!(runs.join("pmv400-tiny3d/run.json").is_file());
        assert!(!runs.join("20261122T031502Z-ingest-3f9a.json").exists());
    }
}
