//! What an attempt hands on: the checked file it produced ([`Fetched`]) and the
//! events the scheduler sends to the calling thread ([`Event`]), which the group
//! commit applies.
//!
//! These types sit below the scheduler, the attempts and the group commit, so that
//! each of those reaches them without reaching the others (the order is
//! `sched` → `download` → `event` ← `commit`). It does nothing itself.

use std::path::PathBuf;
use std::sync::Arc;

use super::job::{FinalFailure, Job};
use super::verify::{Digests, Role};
use crate::source::SourceKind;

/// A checked file, ready for the group commit.
#[derive(Debug)]
pub(crate) struct Fetched {
    /// The checked partial file; `None` when the file already sits under its final
    /// name (adopted).
    pub partial: Option<PathBuf>,
    pub final_path: PathBuf,
    pub final_rel: String,
    pub digests: Digests,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Bytes reused from a partial file.
    pub resumed: u64,
}

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
