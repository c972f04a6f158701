//! Group commit: results reach the catalog in batches, and a verified file is
//! recorded only once its bytes and its name are durable.
//!
//! Owns the events the scheduler sends to the calling thread and their application:
//! every batch (at most `commit_interval` old or `commit_files` verified files)
//! flushes the data of its files together (`syncfs` on each file system, after each
//! file's writeback was started when it was complete), renames each checked partial
//! file to its final name, fsyncs the directories once, and then records the whole
//! batch in one transaction. So no file waits alone for its own fsync, nothing is
//! marked before it is durable, and a run killed at any point leaves at worst a
//! complete file under its final name that the catalog does not yet know (the next
//! run finds and adopts it). It never downloads anything.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::params;

use super::FetchError;
use super::download::Fetched;
use super::job::{FinalFailure, Job};
use super::report::{FailureExample, FetchReport, MAX_EXAMPLES};
use super::verify::Role;
use crate::net::settings::FetchSettings;
use crate::source::SourceKind;
use pmv_catalog::Catalog;
use pmv_core::report::Reporter;
use pmv_core::root::DataRoot;
use pmv_core::util::now_unix;

/// What the scheduler tells the calling thread.
pub(crate) enum Event {
    /// Send the next page of jobs (empty when there are no more).
    NeedJobs(tokio::sync::oneshot::Sender<Vec<Job>>),
    /// An attempt starts: the file is `downloading` from this source.
    Started {
        item_id: i64,
        role: Role,
        rank: Option<i64>,
    },
    /// The validators and length of a download in progress, for resuming it after a
    /// crash.
    Validators {
        item_id: i64,
        role: Role,
        rank: i64,
        etag: Option<String>,
        last_modified: Option<String>,
        total: Option<u64>,
    },
    Verified(Box<Verified>),
    Failed(Box<FailedFile>),
    /// Stopped by cancellation; the row stays `downloading` and the partial file is
    /// kept.
    Interrupted,
}

pub(crate) struct Verified {
    pub item_id: i64,
    pub role: Role,
    pub fetched: Fetched,
    pub source_rank: Option<i64>,
    pub kind: Option<SourceKind>,
    pub via: &'static str,
    pub imported: bool,
    pub adopted: bool,
    /// The path the row recorded before, if any (removed when it differs).
    pub old_path: Option<String>,
}

pub(crate) struct FailedFile {
    pub item_id: i64,
    pub role: Role,
    pub dataset: Arc<str>,
    pub key: String,
    pub failure: FinalFailure,
    /// Removed when the failure is permanent (nothing will resume it).
    pub partial: PathBuf,
}

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

        // 1. The data of every new file, in one flush per file system.
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        for ev in &events {
            if let Event::Verified(v) = ev
                && v.fetched.partial.is_some()
                && let Some(d) = v.fetched.final_path.parent()
            {
                dirs.insert(d.to_owned());
            }
        }
        let mut synced_devices = BTreeSet::new();
        for d in &dirs {
            let f = fs_err::File::open(d).map_err(|source| io(d, source))?;
            let dev =
                std::os::unix::fs::MetadataExt::dev(&f.metadata().map_err(|source| io(d, source))?);
            if synced_devices.insert(dev) {
                rustix::fs::syncfs(f.file()).map_err(|e| io(d, e.into()))?;
            }
        }
        // 2. Final names.
        for ev in &events {
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
        // 3. The renames themselves.
        for d in &dirs {
            pmv_core::util::sync_dir(d).map_err(|source| io(d, source))?;
        }
        // 4. One transaction for the whole batch.
        let now = now_unix();
        let path = catalog.path().to_owned();
        let sql = |source| {
            FetchError::Catalog(pmv_catalog::CatalogError::Sqlite {
                path: path.clone(),
                source,
            })
        };
        let tx = catalog.conn_mut().transaction().map_err(sql)?;
        {
            let mut started = tx
                .prepare_cached(
                    "INSERT INTO files (item_id, role, state, source_rank, attempts, updated_at) \
                     VALUES (?1, ?2, 'downloading', ?3, 1, ?4) \
                     ON CONFLICT (item_id, role) DO UPDATE SET state = 'downloading', \
                       etag = CASE WHEN files.source_rank IS excluded.source_rank THEN files.etag END, \
                       last_modified = CASE WHEN files.source_rank IS excluded.source_rank \
                         THEN files.last_modified END, \
                       size = CASE WHEN files.source_rank IS excluded.source_rank \
                         AND (files.state = 'downloading' OR files.state = 'failed_transient') \
                         THEN files.size END, \
                       path = NULL, sha256 = NULL, \
                       source_rank = excluded.source_rank, attempts = files.attempts + 1, \
                       updated_at = excluded.updated_at",
                )
                .map_err(sql)?;
            let mut validators = tx
                .prepare_cached(
                    "UPDATE files SET etag = ?3, last_modified = ?4, size = ?5, source_rank = ?6, \
                     updated_at = ?7 WHERE item_id = ?1 AND role = ?2 AND state = 'downloading'",
                )
                .map_err(sql)?;
            let mut verified = tx
                .prepare_cached(
                    "INSERT INTO files (item_id, role, state, path, size, sha256, etag, last_modified, \
                       source_rank, attempts, updated_at) \
                     VALUES (?1, ?2, 'verified', ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9) \
                     ON CONFLICT (item_id, role) DO UPDATE SET state = 'verified', path = excluded.path, \
                       size = excluded.size, sha256 = excluded.sha256, \
                       etag = coalesce(excluded.etag, files.etag), \
                       last_modified = coalesce(excluded.last_modified, files.last_modified), \
                       source_rank = excluded.source_rank, error_class = NULL, error_message = NULL, \
                       next_retry_at = NULL, updated_at = excluded.updated_at",
                )
                .map_err(sql)?;
            let mut failed = tx
                .prepare_cached(
                    "INSERT INTO files (item_id, role, state, source_rank, attempts, error_class, \
                       error_message, next_retry_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8) \
                     ON CONFLICT (item_id, role) DO UPDATE SET state = excluded.state, \
                       source_rank = excluded.source_rank, error_class = excluded.error_class, \
                       error_message = excluded.error_message, next_retry_at = excluded.next_retry_at, \
                       path = NULL, sha256 = NULL, updated_at = excluded.updated_at",
                )
                .map_err(sql)?;
            for ev in &events {
                match ev {
                    Event::Started {
                        item_id,
                        role,
                        rank,
                    } => {
                        started
                            .execute(params![item_id, role.as_str(), rank, now])
                            .map_err(sql)?;
                    }
                    Event::Validators {
                        item_id,
                        role,
                        rank,
                        etag,
                        last_modified,
                        total,
                    } => {
                        validators
                            .execute(params![
                                item_id,
                                role.as_str(),
                                etag,
                                last_modified,
                                total.map(|t| t as i64),
                                rank,
                                now
                            ])
                            .map_err(sql)?;
                    }
                    Event::Verified(v) => {
                        let f = &v.fetched;
                        verified
                            .execute(params![
                                v.item_id,
                                v.role.as_str(),
                                f.final_rel,
                                f.digests.len as i64,
                                f.digests.sha256,
                                f.etag,
                                f.last_modified,
                                v.source_rank,
                                now
                            ])
                            .map_err(sql)?;
                    }
                    Event::Failed(x) => {
                        let f = &x.failure;
                        failed
                            .execute(params![
                                x.item_id,
                                x.role.as_str(),
                                f.state,
                                f.source_rank,
                                f.class.as_str(),
                                f.message,
                                f.next_retry_at,
                                now
                            ])
                            .map_err(sql)?;
                    }
                    Event::NeedJobs(_) | Event::Interrupted => {}
                }
            }
        }
        tx.commit().map_err(sql)?;
        report.commits += 1;

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
                    if f.state == "failed_permanent" {
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
                            state: f.state.to_owned(),
                            class: f.class.as_str().to_owned(),
                            message: f.message.clone(),
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(())
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
