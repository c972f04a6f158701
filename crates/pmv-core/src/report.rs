//! Progress events and run reports, without coupling library code to a terminal.
//!
//! Library code reports progress through the small [`Reporter`] trait; the binary
//! decides whether that becomes a progress bar (a TTY), a log line every few seconds
//! (cron) or nothing. Every command that changes the root also leaves a JSON report
//! in `reports/<run-id>.json`; this module names runs and writes those files atomically.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::root::DataRoot;

/// What a count measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Items,
}

/// Receives progress from long-running library calls. Every method has a no-op default.
pub trait Reporter: Sync {
    /// A phase starts; `total` is known for files of known size.
    fn begin(&self, _label: &str, _total: Option<u64>, _unit: Unit) {}
    /// `n` more units of the current phase are done.
    fn advance(&self, _n: u64) {}
    /// The current phase is done.
    fn end(&self) {}
    /// A second count shown beside the current phase (bytes moved while files are
    /// counted); `total` when known.
    fn begin_sub(&self, _label: &str, _total: Option<u64>, _unit: Unit) {}
    /// `n` more units of the second count.
    fn advance_sub(&self, _n: u64) {}
    /// A short note about the current phase (failures so far, ...).
    fn message(&self, _text: &str) {}
}

/// Reports nothing.
pub struct Silent;

impl Reporter for Silent {}

/// A new run id: UTC time, command and a per-process discriminator, e.g.
/// `20261122T031502Z-ingest-3f9a`. Sorting run ids sorts runs by start time.
pub fn new_run_id(command: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let stamp = humantime::format_rfc3339_seconds(
        UNIX_EPOCH + std::time::Duration::from_secs(now.as_secs()),
    )
    .to_string()
    .replace(['-', ':'], "");
    let salt = (now.subsec_nanos() ^ std::process::id().rotate_left(16)) & 0xffff;
    format!("{stamp}-{command}-{salt:04x}")
}

/// Writes `reports/<run-id>.json` atomically; returns its path.
pub fn write_run_report(
    root: &DataRoot,
    run_id: &str,
    report: &serde_json::Value,
) -> std::io::Result<PathBuf> {
    let dir = root.reports_dir();
    fs_err::create_dir_all(&dir)?;
    let path = dir.join(format!("{run_id}.json"));
    let mut bytes = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    crate::util::write_atomic(&path, &bytes)?;
    Ok(path)
}

/// Serialises a map from dataset name to a report as an array of the reports, each
/// with its `dataset` (JSON output keeps collections as arrays of objects).
pub fn keyed_list<S, V>(map: &BTreeMap<String, V>, s: S) -> Result<S::Ok, S::Error>
where
    S: serde::Serializer,
    V: serde::Serialize,
{
    use serde::ser::Error;
    let mut list = Vec::with_capacity(map.len());
    for (name, value) in map {
        let mut v = serde_json::to_value(value).map_err(S::Error::custom)?;
        match v.as_object_mut() {
            Some(o) => {
                o.insert("dataset".into(), name.clone().into());
            }
            None => v = serde_json::json!({ "dataset": name, "value": v }),
        }
        list.push(v);
    }
    s.collect_seq(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_by_time_and_name_the_command() {
        let id = new_run_id("ingest");
        let (stamp, rest) = id.split_once('-').unwrap();
        assert_eq!(stamp.len(), "20261122T031502Z".len(), "{id}");
        assert!(stamp.ends_with('Z'));
        assert!(rest.starts_with("ingest-"));
    }
}
