//! Group commit: results reach the catalog in batches, and a verified file is
//! recorded only once its bytes and its name are durable.
//!
//! Owns the application of the events the scheduler sends to the calling thread
//! ([`Event`], defined in `event` so that the scheduler never reaches this module):
//! every batch (at most `commit_interval` old or `commit_files` verified files)
//! flushes the data of its files together (`syncfs` on each file system, after each
//! file's writeback was started when it was complete), renames each checked partial
//! file to its final name, fsyncs the directories once, and then records the whole
//! batch in one transaction of the catalog's file transitions
//! ([`FileBatch`](pmv_catalog::FileBatch)). So no file waits alone for its own fsync,
//! nothing is marked before it is durable, and a run killed at any point leaves at
//! worst a complete file under its final name that the catalog does not yet know
//! (the next run finds and adopts it). It never downloads anything and writes no SQL.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::FetchError;
use super::event::Event;
use super::report::{FailureExample, FetchReport, MAX_EXAMPLES};
use crate::net::settings::FetchSettings;
use pmv_catalog::{Catalog, FailedState, FileFailure, StoredFile, Validators};
use pmv_core::report::Reporter;
use pmv_core::root::DataRoot;

pub(crate) struct Committer {
    root: DataRoot,
    pending: Vec<Event>,
    verified: usize,
    first: Option<Instant>,
    interval: Duration,
    max_files: usize,
}

impl Committer {
    pub fn new(root: DataRoot, settings: &FetchSettings) -> Committer {
        Committer {
            root,
            pending: vec![],
            verified: 0,
            first: None,
            interval: settings.commit_interval,
            max_files: settings.commit_files.max(1),
        }
    }

    pub fn push(&mut self, ev: Event, report: &mut FetchReport, reporter: &dyn Reporter) {
        match &ev {
            Event::NeedJobs(_) => unreachable!("answered by the caller"),
            Event::Started { .. } => report.attempts += 1,
            Event::Interrupted => {
                report.interrupted += 1;
                reporter.advance(1);
                return;
            }
            Event::Verified(_) => self.verified += 1,
            Event::Validators { .. } | Event::Failed(_) => {}
        }
        self.first.get_or_insert_with(Instant::now);
        self.pending.push(ev);
    }

    /// Whether the batch should be written now.
    pub fn due(&self) -> bool {
        self.first
            .is_some_and(|f| self.verified >= self.max_files || f.elapsed() >= self.interval)
    }

    /// How long until the batch is due.
    pub fn time_to_flush(&self) -> Option<Duration> {
        self.first
            .map(|f| self.interval.saturating_sub(f.elapsed()))
    }

    /// Makes the batch durable and records it.
    pub fn flush(
        &mut self,
        catalog: &mut Catalog,
        report: &mut FetchReport,
        reporter: &dyn Reporter,
    ) -> Result<(), FetchError> {
        self.first = None;
        self.verified = 0;
        if self.pending.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut self.pending);
        let dirs = new_file_dirs(&events);
        // 1. The data of every new file, in one flush per file system.
        sync_data(&dirs)?;
        // 2. Final names.
        self.rename_final(&events)?;
        // 3. The renames themselves.
        for d in &dirs {
            pmv_core::util::sync_dir(d).map_err(|source| io(d, source))?;
        }
        // 4. One transaction for the whole batch.
        record(catalog, &events)?;
        report.commits += 1;
        tally(events, report, reporter);
        Ok(())
    }

    /// Renames each checked partial file to its final name, and removes an earlier
    /// copy of the file with another extension in the same folder.
    fn rename_final(&self, events: &[Event]) -> Result<(), FetchError> {
        for ev in events {
            if let Event::Verified(v) = ev {
                if let Some(partial) = &v.fetched.partial {
                    fs_err::rename(partial, &v.fetched.final_path)
                        .map_err(|source| io(&v.fetched.final_path, source))?;
                }
                // An earlier copy with another extension in the same folder (only
                // there: a path elsewhere, such as quarantine/, is left alone).
                let same_dir = v
                    .fetched
                    .final_rel
                    .rsplit_once('/')
                    .is_some_and(|(dir, _)| old_in(v.old_path.as_deref(), dir));
                if let Some(old) = &v.old_path
                    && same_dir
                    && *old != v.fetched.final_rel
                {
                    let p = self.root.path().join(old);
                    match std::fs::remove_file(&p) {
                        Ok(()) => {
                            tracing::debug!(path = %p.display(), "removed the file's earlier copy")
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            tracing::warn!(path = %p.display(), "cannot remove the file's earlier copy: {e}")
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The folders that receive a new file in this batch.
fn new_file_dirs(events: &[Event]) -> BTreeSet<PathBuf> {
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for ev in events {
        if let Event::Verified(v) = ev
            && v.fetched.partial.is_some()
            && let Some(d) = v.fetched.final_path.parent()
        {
            dirs.insert(d.to_owned());
        }
    }
    dirs
}

/// Flushes the data of the new files: one `syncfs` per file system that holds one
/// of `dirs`.
fn sync_data(dirs: &BTreeSet<PathBuf>) -> Result<(), FetchError> {
    let mut synced_devices = BTreeSet::new();
    for d in dirs {
        let f = fs_err::File::open(d).map_err(|source| io(d, source))?;
        let dev =
            std::os::unix::fs::MetadataExt::dev(&f.metadata().map_err(|source| io(d, source))?);
        if synced_devices.insert(dev) {
            rustix::fs::syncfs(f.file()).map_err(|e| io(d, e.into()))?;
        }
    }
    Ok(())
}

/// Records every event of the batch in one transaction.
fn record(catalog: &mut Catalog, events: &[Event]) -> Result<(), FetchError> {
    let batch = catalog.file_batch()?;
    for ev in events {
        match ev {
            Event::Started {
                item_id,
                role,
                rank,
            } => batch.start_download(*item_id, *role, *rank)?,
            Event::Validators {
                item_id,
                role,
                rank,
                etag,
                last_modified,
                total,
            } => batch.record_validators(
                *item_id,
                *role,
                &Validators {
                    rank: *rank,
                    etag: etag.as_deref(),
                    last_modified: last_modified.as_deref(),
                    total: *total,
                },
            )?,
            Event::Verified(v) => {
                let f = &v.fetched;
                batch.mark_verified(
                    v.item_id,
                    v.role,
                    &StoredFile {
                        path: &f.final_rel,
                        size: f.digests.len,
                        sha256: &f.digests.sha256,
                        etag: f.etag.as_deref(),
                        last_modified: f.last_modified.as_deref(),
                        source_rank: v.source_rank,
                    },
                )?
            }
            Event::Failed(x) => {
                let f = &x.failure;
                batch.record_failure(
                    x.item_id,
                    x.role,
                    &FileFailure {
                        state: f.state,
                        class: f.class.as_str(),
                        message: &f.message,
                        source_rank: f.source_rank,
                        next_retry_at: f.next_retry_at,
                    },
                )?
            }
            Event::NeedJobs(_) | Event::Interrupted => {}
        }
    }
    batch.commit()?;
    Ok(())
}

/// Counts a recorded batch into the report (and removes the partial files that
/// nothing will resume).
fn tally(events: Vec<Event>, report: &mut FetchReport, reporter: &dyn Reporter) {
    for ev in events {
        match ev {
            Event::Verified(v) => {
                reporter.advance(1);
                report.verified += 1;
                report.bytes_resumed += v.fetched.resumed;
                if v.imported {
                    report.imported += 1;
                }
                if v.adopted {
                    report.adopted += 1;
                }
                if let Some(k) = v.kind {
                    *report.sources.entry(k.as_str().to_owned()).or_default() += 1;
                }
                *report.via.entry(v.via.to_owned()).or_default() += 1;
            }
            Event::Failed(x) => {
                reporter.advance(1);
                let f = &x.failure;
                if f.state == FailedState::Permanent {
                    report.failed_permanent += 1;
                    match std::fs::remove_file(&x.partial) {
                        Ok(()) | Err(_) => {}
                    }
                } else {
                    report.failed_transient += 1;
                }
                *report
                    .failures
                    .entry(f.class.as_str().to_owned())
                    .or_default() += 1;
                if report.examples.len() < MAX_EXAMPLES {
                    report.examples.push(FailureExample {
                        dataset: x.dataset.to_string(),
                        item: x.key.clone(),
                        role: x.role.as_str().to_owned(),
                        state: f.state.as_str().to_owned(),
                        class: f.class.as_str().to_owned(),
                        message: f.message.clone(),
                    });
                }
            }
            _ => {}
        }
    }
}

/// Whether `old` names a file directly in `dir` (both relative to the root), with no
/// `..` or empty component.
fn old_in(old: Option<&str>, dir: &str) -> bool {
    old.and_then(|o| o.strip_prefix(dir))
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|name| !name.is_empty() && !name.contains('/') && name != "..")
}

fn io(path: &Path, source: std::io::Error) -> FetchError {
    FetchError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_earlier_copies_in_the_same_folder_are_replaced() {
        assert!(old_in(Some("videos/d/x.webm"), "videos/d"));
        assert!(!old_in(Some("quarantine/d/x.webm"), "videos/d"));
        assert!(!old_in(Some("videos/d/sub/x.webm"), "videos/d"));
        assert!(!old_in(Some("videos/d/../../x"), "videos/d"));
        assert!(!old_in(Some("videos/dd/x.mp4"), "videos/d"));
        assert!(!old_in(Some("videos/d/"), "videos/d"));
        assert!(!old_in(None, "videos/d"));
    }
}
