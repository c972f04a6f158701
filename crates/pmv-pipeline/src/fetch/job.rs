//! One file to fetch (an item's video or cover) and its walk through the item's
//! candidate sources within a run.
//!
//! Owns the per-file decisions: where to start (the catalog row says which source
//! failed or was corrupt), when to retry the same source (transient failures, with
//! back-off; wrong bytes once), when to move on to the next source (permanent
//! failures, exhausted retries), and the final state when no source is left
//! (`failed_transient` if any source failed transiently, else `failed_permanent`,
//! with every source's reason). It performs no I/O.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::verify::{Expected, Role};
use crate::manifest::Locator;
use crate::net::failure::{ErrorClass, Failure, Retry, backoff, next_retry_delay};
use crate::net::politeness::MAX_PAUSE;
use crate::net::settings::FetchSettings;
use pmv_catalog::{FailedState, FileRecord};
use pmv_core::util::now_unix;

/// Longest error message stored in the catalog.
const MAX_MESSAGE: usize = 2000;

/// The file's row in the catalog when the run planned it.
pub type Prior = FileRecord;

/// Which source an attempt uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A file from `--import-dir`.
    Import,
    /// The item's candidate source of this rank.
    Source(usize),
}

/// What resuming a partial file needs: the source it came from and a validator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeFrom {
    pub rank: usize,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub total: Option<u64>,
}

impl ResumeFrom {
    /// The `If-Range` value: a strong ETag, else Last-Modified (weak ETags may not
    /// be used).
    pub fn validator(&self) -> Option<&str> {
        match &self.etag {
            Some(e) if !e.starts_with("W/") => Some(e),
            _ => self.last_modified.as_deref(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Job {
    pub item_id: i64,
    pub key: String,
    pub dataset: Arc<str>,
    pub role: Role,
    pub sources: Arc<[Locator]>,
    /// From the manifest (videos only).
    pub expected: Expected,
    pub prior: Prior,
    pub import: Option<PathBuf>,
    pub stage: Stage,
    /// The host politeness counts the current stage under.
    pub host: String,
    /// Attempts on the current stage.
    pub tries: u32,
    /// Wrong-bytes failures on the current stage.
    pub content_failures: u32,
    /// The first source rank that failed transiently (the next run starts there).
    pub first_transient: Option<usize>,
    /// The last failure of each stage tried, in order.
    pub failures: Vec<(Stage, Failure)>,
    /// Attempts in this run.
    pub attempts: u32,
    pub resume: Option<ResumeFrom>,
    /// Whether the final-name check for a lost record is still to be done.
    pub check_adopt: bool,
}

/// What to do after a failed attempt.
#[derive(Debug)]
pub enum Next {
    /// Try the same source again after this long.
    Retry(Duration),
    /// Go on with the next source at once.
    Advance,
    /// No source left: record this.
    Give(FinalFailure),
}

/// The row written for a file no source could provide.
#[derive(Debug, Clone)]
pub struct FinalFailure {
    pub state: FailedState,
    pub class: ErrorClass,
    pub message: String,
    pub source_rank: Option<i64>,
    pub next_retry_at: Option<i64>,
}

impl Job {
    /// The rank of the current stage (`None` for an import).
    pub fn rank(&self) -> Option<usize> {
        match self.stage {
            Stage::Import => None,
            Stage::Source(r) => Some(r),
        }
    }

    /// Moves to the next stage; false when none is left.
    fn advance(&mut self) -> bool {
        let next = match self.stage {
            Stage::Import => self.first_rank(),
            Stage::Source(r) => Some(r + 1),
        };
        match next {
            Some(r) if r < self.sources.len() => {
                self.stage = Stage::Source(r);
                self.tries = 0;
                self.content_failures = 0;
                true
            }
            _ => false,
        }
    }

    /// The rank a run starts with (after an import, if any).
    pub fn first_rank(&self) -> Option<usize> {
        let corrupt = self.prior.state.as_deref() == Some("corrupt");
        let rank = match (self.prior.state.as_deref(), self.prior.source_rank) {
            (Some("failed_permanent"), _) => 0,
            (Some("corrupt"), Some(r)) => r as usize + 1,
            (_, Some(r)) if r >= 0 => r as usize,
            _ => 0,
        };
        if rank < self.sources.len() {
            Some(rank)
        } else if corrupt {
            None
        } else {
            // The sources changed since (a re-ingest): start again at the top.
            (!self.sources.is_empty()).then_some(0)
        }
    }

    /// Decides what follows a failed attempt.
    pub fn after_failure(&mut self, f: Failure, settings: &FetchSettings) -> Next {
        self.tries += 1;
        let long_wait = f.retry_after.is_some_and(|d| d > MAX_PAUSE);
        let again = match f.class.retry() {
            Retry::Transient => self.tries < settings.retries && !long_wait,
            Retry::Once => {
                self.content_failures += 1;
                self.content_failures < 2
            }
            Retry::Never => false,
        };
        if again {
            let wait = match f.class.retry() {
                Retry::Once => Duration::ZERO,
                _ => backoff(
                    settings.retry_base,
                    settings.retry_cap,
                    self.tries,
                    f.retry_after,
                ),
            };
            self.failures.retain(|(s, _)| *s != self.stage);
            self.failures.push((self.stage, f));
            return Next::Retry(wait);
        }
        if f.class.is_transient()
            && let Stage::Source(r) = self.stage
        {
            self.first_transient.get_or_insert(r);
        }
        self.failures.retain(|(s, _)| *s != self.stage);
        self.failures.push((self.stage, f));
        if self.advance() {
            Next::Advance
        } else {
            Next::Give(self.final_failure())
        }
    }

    /// The record of a file whose retries this run are cut short (deadline or
    /// interruption): failed transiently, due again at once.
    pub fn cut_short(&self, why: &str) -> FinalFailure {
        let mut f = self.final_failure();
        f.state = FailedState::Transient;
        f.next_retry_at = Some(now_unix());
        // The next run starts at the first source that may still work.
        f.source_rank = self
            .first_transient
            .or(self.rank())
            .map(|r| r as i64)
            .or(f.source_rank);
        f.message = format!("{why}; {}", f.message);
        truncate(&mut f.message);
        f
    }

    /// The record of a file that did not fit on the disk: failed transiently (class
    /// `no_space`), due again at the next run, since the disk, not the file, is at
    /// fault.
    pub fn no_room(&self, message: &str) -> FinalFailure {
        let mut message = message.to_owned();
        truncate(&mut message);
        FinalFailure {
            state: FailedState::Transient,
            class: ErrorClass::NoSpace,
            message,
            source_rank: self.rank().map(|r| r as i64).or(self.prior.source_rank),
            next_retry_at: Some(now_unix()),
        }
    }

    fn final_failure(&self) -> FinalFailure {
        let describe = |stage: &Stage, f: &Failure| match stage {
            Stage::Import => format!("[import] {f}"),
            Stage::Source(r) => format!(
                "[source {r} {}] {f}",
                self.sources.get(*r).map_or("?", |l| l.kind.as_str())
            ),
        };
        let mut message = self
            .failures
            .iter()
            .map(|(s, f)| describe(s, f))
            .collect::<Vec<_>>()
            .join("; ");
        truncate(&mut message);
        let now = now_unix();
        match self.first_transient {
            Some(rank) => {
                let (class, retry_after) = self
                    .failures
                    .iter()
                    .find(|(s, _)| *s == Stage::Source(rank))
                    .map(|(_, f)| (f.class, f.retry_after))
                    .unwrap_or((ErrorClass::Network, None));
                let previous = match (
                    self.prior.state.as_deref(),
                    self.prior.next_retry_at,
                    self.prior.updated_at,
                ) {
                    (Some("failed_transient"), Some(next), Some(at)) => Some(next - at),
                    _ => None,
                };
                FinalFailure {
                    state: FailedState::Transient,
                    class,
                    message,
                    source_rank: Some(rank as i64),
                    next_retry_at: Some(now + next_retry_delay(previous, retry_after)),
                }
            }
            None => {
                // A private host refused for want of the opt-in is named first, so the
                // opt-in brings the file back (see the planner).
                let (stage, class) = self
                    .failures
                    .iter()
                    .find(|(_, f)| f.class == ErrorClass::PrivateHost)
                    .or(self.failures.last())
                    .map(|(s, f)| (*s, f.class))
                    .unwrap_or((self.stage, ErrorClass::Network));
                FinalFailure {
                    state: FailedState::Permanent,
                    class,
                    message,
                    source_rank: match stage {
                        Stage::Source(r) => Some(r as i64),
                        Stage::Import => None,
                    },
                    next_retry_at: None,
                }
            }
        }
    }
}

fn truncate(s: &mut String) {
    if s.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceKind;

    fn job(n: usize, prior: Prior) -> Job {
        let sources: Vec<Locator> = (0..n)
            .map(|i| Locator {
                kind: if i == 0 {
                    SourceKind::Douyin
                } else {
                    SourceKind::Onedrive
                },
                location: format!("https://h{i}.example/x"),
            })
            .collect();
        let mut j = Job {
            item_id: 1,
            key: "k".into(),
            dataset: "d".into(),
            role: Role::Video,
            sources: sources.into(),
            expected: Expected::default(),
            prior,
            import: None,
            stage: Stage::Source(0),
            host: String::new(),
            tries: 0,
            content_failures: 0,
            first_transient: None,
            failures: vec![],
            attempts: 0,
            resume: None,
            check_adopt: false,
        };
        j.stage = Stage::Source(j.first_rank().unwrap_or(0));
        j
    }

    fn settings() -> FetchSettings {
        FetchSettings {
            retries: 3,
            retry_base: Duration::from_millis(10),
            ..FetchSettings::default()
        }
    }

    #[test]
    fn transient_failures_retry_then_move_on_and_end_transient() {
        let s = settings();
        let mut j = job(2, Prior::default());
        let net = || Failure::new(ErrorClass::Network, "reset");
        assert!(matches!(j.after_failure(net(), &s), Next::Retry(_)));
        assert!(matches!(j.after_failure(net(), &s), Next::Retry(_)));
        assert!(matches!(j.after_failure(net(), &s), Next::Advance));
        assert_eq!(j.stage, Stage::Source(1));
        match j.after_failure(Failure::new(ErrorClass::NotListed, "not there"), &s) {
            Next::Give(f) => {
                assert_eq!(f.state, FailedState::Transient);
                assert_eq!(f.class, ErrorClass::Network);
                assert_eq!(f.source_rank, Some(0));
                assert!(f.next_retry_at.unwrap() > now_unix() + 1000);
                assert!(
                    f.message.contains("[source 0 douyin] network: reset"),
                    "{}",
                    f.message
                );
                assert!(
                    f.message.contains("[source 1 onedrive] not_listed"),
                    "{}",
                    f.message
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn permanent_failures_try_the_mirror_then_end_permanent() {
        let s = settings();
        let mut j = job(2, Prior::default());
        assert!(matches!(
            j.after_failure(Failure::new(ErrorClass::Removed, "status_deleted"), &s),
            Next::Advance
        ));
        match j.after_failure(Failure::new(ErrorClass::Http404, "gone"), &s) {
            Next::Give(f) => {
                assert_eq!(
                    (f.state, f.class, f.source_rank),
                    (FailedState::Permanent, ErrorClass::Http404, Some(1))
                );
                assert!(f.next_retry_at.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_private_host_refused_is_named_so_that_the_opt_in_brings_it_back() {
        let s = settings();
        let mut j = job(2, Prior::default());
        let private = Failure::new(ErrorClass::PrivateHost, "names 10.0.0.5");
        assert!(matches!(j.after_failure(private, &s), Next::Advance));
        match j.after_failure(Failure::new(ErrorClass::Http404, "gone"), &s) {
            Next::Give(f) => assert_eq!(
                (f.state, f.class, f.source_rank),
                (FailedState::Permanent, ErrorClass::PrivateHost, Some(0))
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_bytes_twice_from_one_source_are_final() {
        let s = settings();
        let mut j = job(1, Prior::default());
        let bad = || Failure::new(ErrorClass::HashMismatch, "sha256 mismatch");
        assert!(matches!(j.after_failure(bad(), &s), Next::Retry(d) if d.is_zero()));
        match j.after_failure(bad(), &s) {
            Next::Give(f) => assert_eq!(
                (f.state, f.class),
                (FailedState::Permanent, ErrorClass::HashMismatch)
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn starting_points_follow_the_catalog() {
        let at = |state: &str, rank: Option<i64>, n: usize| {
            job(
                n,
                Prior {
                    state: Some(state.into()),
                    source_rank: rank,
                    ..Prior::default()
                },
            )
            .first_rank()
        };
        assert_eq!(at("corrupt", Some(0), 2), Some(1));
        assert_eq!(
            at("corrupt", Some(1), 2),
            None,
            "no further source: stays corrupt"
        );
        assert_eq!(at("failed_transient", Some(1), 2), Some(1));
        assert_eq!(at("failed_permanent", Some(1), 2), Some(0));
        assert_eq!(at("downloading", Some(1), 2), Some(1));
        assert_eq!(at("downloading", Some(5), 2), Some(0), "sources shrank");
    }

    #[test]
    fn long_retry_after_ends_the_run_for_that_source() {
        let s = settings();
        let mut j = job(1, Prior::default());
        let f = Failure::new(ErrorClass::Throttled, "429")
            .with_retry_after(Some(Duration::from_secs(3600)));
        match j.after_failure(f, &s) {
            Next::Give(f) => {
                assert_eq!(f.state, FailedState::Transient);
                assert!(f.next_retry_at.unwrap() >= now_unix() + 3600);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn weak_etags_are_not_validators() {
        let r = ResumeFrom {
            rank: 0,
            etag: Some("W/\"x\"".into()),
            last_modified: Some("Sun, 06 Nov 1994 08:49:37 GMT".into()),
            total: None,
        };
        assert_eq!(r.validator(), Some("Sun, 06 Nov 1994 08:49:37 GMT"));
        let r = ResumeFrom {
            etag: Some("\"x\"".into()),
            ..r
        };
        assert_eq!(r.validator(), Some("\"x\""));
    }
}
