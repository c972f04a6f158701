//! The report of one fetch run: counts per outcome, failures by class, bytes,
//! throughput, and a few example failures. Serialised into `runs/<run-id>.json` and
//! the catalog's `runs` table. Only counting happens here.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use pmv_core::util::{group_digits, human_bytes};

/// Failures kept as examples in the report (all are in the catalog).
pub const MAX_EXAMPLES: usize = 20;

#[derive(Debug, Clone, Default, Serialize)]
pub struct FetchReport {
    /// Files due at the start (videos and covers).
    pub planned: u64,
    /// Files now verified: downloaded, imported or adopted in this run.
    pub verified: u64,
    /// Of those, imported from local files.
    pub imported: u64,
    /// Of those, found complete under their final name (a run killed after renaming
    /// them and before recording them).
    pub adopted: u64,
    /// Left `failed_transient` (retried by a later run).
    pub failed_transient: u64,
    /// Left `failed_permanent`.
    pub failed_permanent: u64,
    /// Interrupted downloads, left `downloading` with their partial files.
    pub interrupted: u64,
    /// Due files never started (deadline or interruption).
    pub not_started: u64,
    /// Active items with no candidate source (nothing to fetch).
    pub no_source: u64,
    /// Bytes received over the network or copied from local files.
    #[serde(rename = "received_bytes")]
    pub bytes: u64,
    /// Bytes already present in partial files that were resumed.
    #[serde(rename = "resumed_bytes")]
    pub bytes_resumed: u64,
    /// Attempts started (each source try, retries included).
    pub attempts: u64,
    /// Retries within this run.
    pub retries: u64,
    /// 429/503 answers.
    pub throttled: u64,
    /// Final failures of this run by class.
    pub failures: BTreeMap<String, u64>,
    /// Verified files by the kind of the source they came from.
    pub sources: BTreeMap<String, u64>,
    /// Verified files by the resolver path that answered.
    pub via: BTreeMap<String, u64>,
    /// Group commits, and the files they made durable.
    pub commits: u64,
    pub duration_s: f64,
    pub files_per_s: f64,
    pub mb_per_s: f64,
    /// `deadline`, `byte budget` or `cancelled` when the run stopped early.
    pub stopped: Option<String>,
    pub examples: Vec<FailureExample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailureExample {
    pub dataset: String,
    pub item: String,
    pub role: String,
    pub state: String,
    pub class: String,
    pub message: String,
}

impl FetchReport {
    pub(crate) fn finish(&mut self, took: Duration) {
        let s = took.as_secs_f64();
        self.duration_s = (s * 1000.0).round() / 1000.0;
        if s > 0.0 {
            self.files_per_s = ((self.verified as f64 / s) * 10.0).round() / 10.0;
            self.mb_per_s = ((self.bytes as f64 / 1e6 / s) * 10.0).round() / 10.0;
        }
    }

    /// Failed files of this run.
    pub fn failed(&self) -> u64 {
        self.failed_transient + self.failed_permanent
    }

    /// One short line for the progress display.
    pub fn progress_note(&self) -> String {
        let mut s = format!("{} verified", group_digits(self.verified));
        if self.failed() > 0 {
            s.push_str(&format!(", {} failed", group_digits(self.failed())));
            if let Some((class, n)) = self.failures.iter().max_by_key(|(_, n)| **n) {
                s.push_str(&format!(" ({class}: {n})"));
            }
        }
        s
    }

    /// The classes with most failures, most first.
    pub fn top_failures(&self, n: usize) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self
            .failures
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.truncate(n);
        v
    }

    /// A one-paragraph summary for people.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "fetch: {} verified of {} due ({} imported, {} adopted), {} failed ({} to retry, {} permanent)",
            group_digits(self.verified),
            group_digits(self.planned),
            group_digits(self.imported),
            group_digits(self.adopted),
            group_digits(self.failed()),
            group_digits(self.failed_transient),
            group_digits(self.failed_permanent),
        );
        if self.interrupted + self.not_started > 0 {
            out.push_str(&format!(
                ", {} interrupted, {} not started",
                group_digits(self.interrupted),
                group_digits(self.not_started)
            ));
        }
        out.push_str(&format!(
            "; {} in {:.1} s ({:.1} files/s, {:.1} MB/s)",
            human_bytes(self.bytes),
            self.duration_s,
            self.files_per_s,
            self.mb_per_s
        ));
        if self.bytes_resumed > 0 {
            out.push_str(&format!(", {} resumed", human_bytes(self.bytes_resumed)));
        }
        if !self.failures.is_empty() {
            let top: Vec<String> = self
                .top_failures(5)
                .into_iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect();
            out.push_str(&format!("\nfailures: {}", top.join(", ")));
        }
        if let Some(why) = &self.stopped {
            out.push_str(&format!("\nstopped early: {why}"));
        }
        out
    }
}
