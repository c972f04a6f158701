//! Re-hashing stored files: the bit-rot check of the nightly refresh.
//!
//! Owns reading back `verified` and `sharded` files and comparing their size and
//! SHA-256 with the catalog. A file whose bytes changed, or that is missing, is moved
//! to `quarantine/<dataset>/` (when it exists) and its row goes back to `pending` with
//! error class `changed` and the reason, so the next fetch downloads it again from its
//! first source. The move happens before the row changes: a run killed in between
//! leaves a row that claims a missing file, which the next re-hash finds again,
//! never a changed file adopted as good. Files are selected whole, or one slice of
//! the items at a time so that a rotating fraction covers everything over several
//! runs. It never downloads anything.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::FetchError;
use pmv_catalog::{Catalog, StoredRow};
use pmv_core::report::{Reporter, Unit};
use pmv_core::root::DataRoot;
use pmv_core::util::{now_unix, sha256_regular_file};

/// Which stored files to read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RehashSelect {
    All,
    /// Items whose id is `index` modulo `parts`: with `index` moving on by one each
    /// run, `parts` runs read every file once.
    Slice {
        parts: u32,
        index: u32,
    },
}

impl RehashSelect {
    /// A slice covering about `fraction` of the files, turning with `turn` (for
    /// example the day number): `1/fraction` turns cover everything.
    pub fn fraction(fraction: f64, turn: u64) -> RehashSelect {
        if fraction.is_nan() || fraction <= 0.0 || fraction >= 1.0 {
            return RehashSelect::All;
        }
        let parts = (1.0 / fraction).round().clamp(1.0, 1e6) as u32;
        RehashSelect::Slice {
            parts,
            index: (turn % parts as u64) as u32,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RehashOptions {
    /// Only this dataset (default: all).
    pub dataset: Option<String>,
    pub select: RehashSelect,
    /// Read no further file after this instant (the refresh's time budget): the
    /// files left are read by a later turn.
    pub deadline: Option<Instant>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RehashReport {
    pub checked: u64,
    #[serde(rename = "checked_bytes")]
    pub bytes: u64,
    /// Files whose bytes changed (moved to quarantine, back to pending).
    pub changed: u64,
    /// Files that were gone (back to pending).
    pub missing: u64,
    pub duration_s: f64,
    /// `dataset/item role: reason` for each changed or missing file (at most 100).
    pub details: Vec<String>,
    /// Files selected but not read because the deadline came first.
    pub not_checked: u64,
}

/// Re-hashes the selected stored files; changed or missing ones go back to
/// `pending`.
pub fn rehash(
    root: &DataRoot,
    catalog: &mut Catalog,
    opts: &RehashOptions,
    reporter: &dyn Reporter,
) -> Result<RehashReport, FetchError> {
    let started = Instant::now();
    let dataset_id = match &opts.dataset {
        Some(name) => Some(
            catalog
                .dataset(name)?
                .ok_or_else(|| FetchError::NoDataset(name.clone()))?
                .id,
        ),
        None => None,
    };
    let (parts, index) = match opts.select {
        RehashSelect::All => (1i64, 0i64),
        RehashSelect::Slice { parts, index } => (parts.max(1) as i64, index as i64),
    };
    // The list first (small rows), then the reading, so no statement stays open while
    // rows change.
    let rows = catalog.stored_files(dataset_id, parts, index)?;
    let total_bytes: i64 = rows.iter().map(|r| r.size).sum();
    reporter.begin("re-hash", Some(total_bytes.max(0) as u64), Unit::Bytes);
    let mut report = RehashReport::default();
    let selected = rows.len() as u64;
    for row in rows {
        let StoredRow {
            item_id,
            role,
            dataset,
            key,
            path: rel,
            size,
            sha256,
        } = row;
        if opts.deadline.is_some_and(|d| Instant::now() >= d) {
            report.not_checked = selected - report.checked;
            break;
        }
        let path = root.path().join(&rel);
        let outcome = match sha256_regular_file(&path) {
            Ok((got, len)) => {
                report.bytes += len;
                reporter.advance(len);
                if len == size as u64 && got == sha256 {
                    None
                } else {
                    let to = move_to_quarantine(root, &dataset, &path, "changed")?;
                    report.changed += 1;
                    Some(format!(
                        "{rel} changed on disk: recorded {size} bytes sha256 {sha256}, found {len} bytes \
                         sha256 {got} (moved to {})",
                        to.strip_prefix(root.path()).unwrap_or(&to).display()
                    ))
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                report.missing += 1;
                Some(format!("{rel} is missing"))
            }
            // A symlink (or anything but a regular file) under a final name: its bytes
            // could change behind the record, so it is never trusted.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                let to = move_to_quarantine(root, &dataset, &path, "changed")?;
                report.changed += 1;
                Some(format!(
                    "{rel} is not a regular file (moved to {})",
                    to.strip_prefix(root.path()).unwrap_or(&to).display()
                ))
            }
            Err(e) => {
                return Err(FetchError::Io { path, source: e });
            }
        };
        report.checked += 1;
        if let Some(reason) = outcome {
            tracing::warn!(dataset = %dataset, item = %key, role = %role, "{reason}");
            if report.details.len() < 100 {
                report
                    .details
                    .push(format!("{dataset}/{key} {role}: {reason}"));
            }
            catalog.reset_changed(item_id, &role, &reason)?;
        }
    }
    reporter.end();
    report.duration_s = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    Ok(report)
}

/// Moves `path` to `quarantine/<dataset>/<name>.<why>-<unix time>` (a free name) and
/// makes the move durable. Returns the new path.
pub fn move_to_quarantine(
    root: &DataRoot,
    dataset: &str,
    path: &Path,
    why: &str,
) -> Result<PathBuf, FetchError> {
    let dir = root.quarantine_dir().join(dataset);
    let io = |p: &Path, source| FetchError::Io {
        path: p.to_owned(),
        source,
    };
    fs_err::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let stamp = now_unix();
    let mut to = dir.join(format!("{name}.{why}-{stamp}"));
    let mut n = 1;
    while to.exists() {
        to = dir.join(format!("{name}.{why}-{stamp}-{n}"));
        n += 1;
    }
    fs_err::rename(path, &to).map_err(|e| io(path, e))?;
    pmv_core::util::sync_dir(&dir).map_err(|e| io(&dir, e))?;
    if let Some(parent) = path.parent() {
        pmv_core::util::sync_dir(parent).map_err(|e| io(parent, e))?;
    }
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_become_rotating_slices() {
        assert_eq!(RehashSelect::fraction(1.0, 3), RehashSelect::All);
        assert_eq!(RehashSelect::fraction(0.0, 3), RehashSelect::All);
        assert_eq!(
            RehashSelect::fraction(0.1, 23),
            RehashSelect::Slice {
                parts: 10,
                index: 3
            }
        );
        let covered: std::collections::BTreeSet<u32> = (0..7)
            .map(|t| match RehashSelect::fraction(1.0 / 7.0, t) {
                RehashSelect::Slice { index, .. } => index,
                RehashSelect::All => unreachable!(),
            })
            .collect();
        assert_eq!(covered.len(), 7);
    }
}
