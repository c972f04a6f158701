//! The `files` table's state machine: every write of a stored file's `state` is one
//! of the typed transitions here, and so are the reads of stored files that decide
//! them (the re-hash's list).
//!
//! A row is keyed by (item, role). The allowed transitions, and who asks for them:
//!
//! | from                                              | to                                     | transition                         | who asks                          |
//! |---------------------------------------------------|----------------------------------------|------------------------------------|-----------------------------------|
//! | no row, any state the planner finds due           | `downloading`                          | [`FileBatch::start_download`]      | fetch, when an attempt starts     |
//! | `downloading`                                     | `downloading` (validators, size)       | [`FileBatch::record_validators`]   | fetch, when headers arrive        |
//! | no row, any state the planner finds due           | `verified` (path, size, sha256, etag)  | [`FileBatch::mark_verified`]       | fetch, group commit               |
//! | no row, any state the planner finds due           | `failed_transient` / `failed_permanent`| [`FileBatch::record_failure`]      | fetch, when no source is left     |
//! | `verified`, `sharded`                             | `pending` (class `changed`)            | [`Catalog::reset_changed`]         | re-hash, bytes changed or missing |
//! | `verified`                                        | `sharded`                              | [`mark_sharded`]                   | shard, in the shard's transaction |
//! | `verified` (file gone from the root)              | `failed_transient` (class `missing`)   | [`Catalog::mark_missing`]          | shard                             |
//! | `verified` (bytes that do not decode)             | `corrupt` (path in `quarantine/`)      | [`Catalog::mark_corrupt`]          | shard's quarantine                |
//!
//! The planner's due rules (which states fetch takes up again: `pending`,
//! `downloading`, `downloaded`, `failed_transient` when its time has come, ...) live
//! with fetch; this module writes what it is asked to and never checks files on disk.
//! It never writes any other table.

use rusqlite::{Connection, TransactionBehavior, params};

use pmv_core::Role;
use pmv_core::util::now_unix;

use crate::{Catalog, CatalogError, Result, Tx};

/// Which failed state a file no source could provide is left in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedState {
    /// `failed_transient`: due again at its retry time.
    Transient,
    /// `failed_permanent`: fetched again only when asked to.
    Permanent,
}

impl FailedState {
    /// The state as the catalog spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailedState::Transient => "failed_transient",
            FailedState::Permanent => "failed_permanent",
        }
    }
}

/// A checked file under its final name, as [`FileBatch::mark_verified`] records it.
#[derive(Debug, Clone, Copy)]
pub struct StoredFile<'a> {
    /// Relative to the root (`videos/<dataset>/<stem>.<ext>`).
    pub path: &'a str,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: &'a str,
    /// Kept from the row when `None`.
    pub etag: Option<&'a str>,
    /// Kept from the row when `None`.
    pub last_modified: Option<&'a str>,
    /// The candidate source it came from (`None`: an import folder).
    pub source_rank: Option<i64>,
}

/// What resumes a download in progress after a crash.
#[derive(Debug, Clone, Copy)]
pub struct Validators<'a> {
    pub rank: i64,
    pub etag: Option<&'a str>,
    pub last_modified: Option<&'a str>,
    /// The length the server announced.
    pub total: Option<u64>,
}

/// Why a file could not be fetched, as [`FileBatch::record_failure`] records it.
#[derive(Debug, Clone, Copy)]
pub struct FileFailure<'a> {
    pub state: FailedState,
    /// The error class (`network`, `not_found`, ...).
    pub class: &'a str,
    pub message: &'a str,
    /// The source the next attempt starts from.
    pub source_rank: Option<i64>,
    /// Unix time the file is due again (`failed_transient`).
    pub next_retry_at: Option<i64>,
}

/// Fetch's group commit: file transitions written in one transaction, with one
/// time stamp. Nothing is recorded until [`FileBatch::commit`].
pub struct FileBatch<'c> {
    tx: Tx<'c>,
    now: i64,
}

impl Catalog {
    /// Opens a batch of file transitions (one transaction).
    pub fn file_batch(&mut self) -> Result<FileBatch<'_>> {
        Ok(FileBatch {
            tx: self.begin(TransactionBehavior::Deferred)?,
            now: now_unix(),
        })
    }

    /// `verified`/`sharded` → `pending`: the stored bytes changed or are gone, so the
    /// file is downloaded again from its first source. Every field of the old file
    /// is cleared; error class `changed` and `reason` say why. `role` is the row's
    /// as read (any role the table holds).
    pub fn reset_changed(&self, item_id: i64, role: &str, reason: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE files SET state = 'pending', path = NULL, sha256 = NULL, size = NULL, \
                 etag = NULL, last_modified = NULL, source_rank = NULL, error_class = 'changed', \
                 error_message = ?3, next_retry_at = NULL, updated_at = ?4 \
                 WHERE item_id = ?1 AND role = ?2",
                params![item_id, role, reason, now_unix()],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// A verified video that is gone (or changed) from the root →
    /// `failed_transient` with error class `missing`, due at once, so that fetch gets
    /// it again.
    pub fn mark_missing(&self, item_id: i64, reason: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE files SET state = 'failed_transient', error_class = 'missing', \
                   error_message = ?2, next_retry_at = ?3, updated_at = ?3 \
                 WHERE item_id = ?1 AND role = 'video'",
                params![item_id, reason, now_unix()],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// A stored file whose bytes do not decode → `corrupt` (error class `corrupt`),
    /// its path now the quarantined copy's (`quarantine/<dataset>/<name>`).
    pub fn mark_corrupt(
        &self,
        item_id: i64,
        role: Role,
        reason: &str,
        quarantined: &str,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE files SET state = 'corrupt', error_class = 'corrupt', error_message = ?3, \
                   path = ?4, next_retry_at = NULL, updated_at = ?5 \
                 WHERE item_id = ?1 AND role = ?2",
                params![item_id, role.as_str(), reason, quarantined, now_unix()],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// The `verified` and `sharded` files with a recorded path, size and SHA-256, of
    /// one dataset (or all), and only of the items whose id is `index` modulo
    /// `parts`; in item order.
    pub fn stored_files(
        &self,
        dataset_id: Option<i64>,
        parts: i64,
        index: i64,
    ) -> Result<Vec<StoredRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT f.item_id, f.role, d.name, i.key, f.path, f.size, f.sha256 FROM files f \
                 JOIN items i ON i.id = f.item_id JOIN datasets d ON d.id = i.dataset_id \
                 WHERE (f.state = 'verified' OR f.state = 'sharded') AND f.path IS NOT NULL \
                   AND f.sha256 IS NOT NULL AND f.size IS NOT NULL \
                   AND (?1 IS NULL OR i.dataset_id = ?1) AND f.item_id % ?2 = ?3 \
                 ORDER BY f.item_id, f.role",
            )
            .map_err(|e| self.sql(e))?;
        let mapped = stmt
            .query_map(params![dataset_id, parts, index], |r| {
                Ok(StoredRow {
                    item_id: r.get(0)?,
                    role: r.get(1)?,
                    dataset: r.get(2)?,
                    key: r.get(3)?,
                    path: r.get(4)?,
                    size: r.get(5)?,
                    sha256: r.get(6)?,
                })
            })
            .map_err(|e| self.sql(e))?;
        mapped
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sql(e))
    }
}

/// A stored file as [`Catalog::stored_files`] lists it.
#[derive(Debug, Clone)]
pub struct StoredRow {
    pub item_id: i64,
    /// As the table holds it (`video`, `cover`, `text`).
    pub role: String,
    pub dataset: String,
    pub key: String,
    /// Relative to the root.
    pub path: String,
    pub size: i64,
    pub sha256: String,
}

impl FileBatch<'_> {
    /// Any due state → `downloading` from source `rank`: an attempt starts. The
    /// validators and announced size are kept only when the source is the one they
    /// came from (the size only from a `downloading` or `failed_transient` row);
    /// path and hash are cleared and `attempts` counts up.
    pub fn start_download(&self, item_id: i64, role: Role, rank: Option<i64>) -> Result<()> {
        self.tx
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
            .and_then(|mut s| s.execute(params![item_id, role.as_str(), rank, self.now]))
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// `downloading` stays `downloading`, with what resumes it after a crash (a row
    /// in any other state is left alone).
    pub fn record_validators(&self, item_id: i64, role: Role, v: &Validators<'_>) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE files SET etag = ?3, last_modified = ?4, size = ?5, source_rank = ?6, \
                 updated_at = ?7 WHERE item_id = ?1 AND role = ?2 AND state = 'downloading'",
            )
            .and_then(|mut s| {
                s.execute(params![
                    item_id,
                    role.as_str(),
                    v.etag,
                    v.last_modified,
                    v.total.map(|t| t as i64),
                    v.rank,
                    self.now
                ])
            })
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// → `verified`: the file is durable under its final name. Validators missing
    /// from `file` are kept from the row; the error fields are cleared.
    pub fn mark_verified(&self, item_id: i64, role: Role, file: &StoredFile<'_>) -> Result<()> {
        self.tx
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
            .and_then(|mut s| {
                s.execute(params![
                    item_id,
                    role.as_str(),
                    file.path,
                    file.size as i64,
                    file.sha256,
                    file.etag,
                    file.last_modified,
                    file.source_rank,
                    self.now
                ])
            })
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// → `failed_transient` or `failed_permanent`, with the error class, message,
    /// source to start from and retry time; path and hash are cleared.
    pub fn record_failure(&self, item_id: i64, role: Role, f: &FileFailure<'_>) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO files (item_id, role, state, source_rank, attempts, error_class, \
                   error_message, next_retry_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (item_id, role) DO UPDATE SET state = excluded.state, \
                   source_rank = excluded.source_rank, error_class = excluded.error_class, \
                   error_message = excluded.error_message, next_retry_at = excluded.next_retry_at, \
                   path = NULL, sha256 = NULL, updated_at = excluded.updated_at",
            )
            .and_then(|mut s| {
                s.execute(params![
                    item_id,
                    role.as_str(),
                    f.state.as_str(),
                    f.source_rank,
                    f.class,
                    f.message,
                    f.next_retry_at,
                    self.now
                ])
            })
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// Records the whole batch.
    pub fn commit(self) -> Result<()> {
        self.tx.commit()
    }

    fn sql(&self, source: rusqlite::Error) -> CatalogError {
        self.tx.sql(source)
    }
}

/// `verified` → `sharded`: the item's video has a sample in a sealed shard. Runs in
/// the caller's transaction (`conn`, the one that records the shard), so the state
/// changes with the shard's rows or not at all; a row in any other state is left
/// alone.
pub(crate) fn mark_sharded(conn: &Connection, item_id: i64, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE files SET state = 'sharded', updated_at = ?2 \
         WHERE item_id = ?1 AND role = 'video' AND state = 'verified'",
    )?
    .execute(params![item_id, now])
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A catalog with one dataset and one item (id 1).
    fn one_item() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("catalog.sqlite")).unwrap();
        c.conn
            .execute_batch(
                "INSERT INTO datasets (id, name, format, multi_label, created_at, updated_at) \
                 VALUES (1, 'd', 'pmv400', 0, 0, 0); \
                 INSERT INTO items (id, dataset_id, key, labels, fingerprint, created_at, updated_at) \
                 VALUES (1, 1, 'a', '[]', 'f', 0, 0);",
            )
            .unwrap();
        (dir, c)
    }

    /// (state, path, size, etag, source_rank, error_class) of item 1's file.
    type Row = (
        String,
        Option<String>,
        Option<i64>,
        Option<String>,
        Option<i64>,
        Option<String>,
    );

    fn row(c: &Catalog, role: &str) -> Row {
        c.conn
            .query_row(
                "SELECT state, path, size, etag, source_rank, error_class FROM files \
                 WHERE item_id = 1 AND role = ?1",
                [role],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .unwrap()
    }

    #[test]
    fn a_download_goes_from_downloading_to_verified_and_sharded() {
        let (_dir, mut c) = one_item();
        let b = c.file_batch().unwrap();
        b.start_download(1, Role::Video, Some(0)).unwrap();
        let v = Validators {
            rank: 0,
            etag: Some("\"e\""),
            last_modified: None,
            total: Some(10),
        };
        b.record_validators(1, Role::Video, &v).unwrap();
        b.commit().unwrap();
        assert_eq!(
            row(&c, "video"),
            (
                "downloading".into(),
                None,
                Some(10),
                Some("\"e\"".into()),
                Some(0),
                None
            )
        );

        let b = c.file_batch().unwrap();
        let stored = StoredFile {
            path: "videos/d/a.mp4",
            size: 10,
            sha256: "00",
            etag: None,
            last_modified: None,
            source_rank: Some(0),
        };
        b.mark_verified(1, Role::Video, &stored).unwrap();
        b.commit().unwrap();
        let (state, path, size, etag, ..) = row(&c, "video");
        assert_eq!(state, "verified");
        assert_eq!(path.as_deref(), Some("videos/d/a.mp4"));
        assert_eq!(size, Some(10));
        assert_eq!(etag.as_deref(), Some("\"e\""), "kept from the row");

        // Only a verified video becomes sharded.
        mark_sharded(&c.conn, 1, 5).unwrap();
        assert_eq!(row(&c, "video").0, "sharded");
        c.mark_missing(1, "gone").unwrap();
        mark_sharded(&c.conn, 1, 6).unwrap();
        let (state, .., class) = row(&c, "video");
        assert_eq!(
            (state.as_str(), class.as_deref()),
            ("failed_transient", Some("missing"))
        );
    }

    #[test]
    fn an_uncommitted_batch_records_nothing() {
        let (_dir, mut c) = one_item();
        let b = c.file_batch().unwrap();
        b.start_download(1, Role::Cover, None).unwrap();
        drop(b);
        let n: i64 = c
            .conn
            .query_row("SELECT count(*) FROM files", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn failures_changes_and_corruption_clear_the_stored_file() {
        let (_dir, mut c) = one_item();
        let b = c.file_batch().unwrap();
        let stored = StoredFile {
            path: "videos/d/a.mp4",
            size: 10,
            sha256: "00",
            etag: Some("\"e\""),
            last_modified: None,
            source_rank: Some(1),
        };
        b.mark_verified(1, Role::Video, &stored).unwrap();
        b.commit().unwrap();
        c.reset_changed(1, "video", "changed on disk").unwrap();
        assert_eq!(
            row(&c, "video"),
            (
                "pending".into(),
                None,
                None,
                None,
                None,
                Some("changed".into())
            )
        );

        let b = c.file_batch().unwrap();
        let f = FileFailure {
            state: FailedState::Permanent,
            class: "not_found",
            message: "404",
            source_rank: Some(2),
            next_retry_at: None,
        };
        b.record_failure(1, Role::Video, &f).unwrap();
        b.commit().unwrap();
        let (state, path, .., rank, class) = row(&c, "video");
        assert_eq!(
            (state.as_str(), path, rank, class.as_deref()),
            ("failed_permanent", None, Some(2), Some("not_found"))
        );

        c.mark_corrupt(1, Role::Video, "does not decode", "quarantine/d/a.mp4")
            .unwrap();
        let (state, path, .., class) = row(&c, "video");
        assert_eq!(
            (state.as_str(), path.as_deref(), class.as_deref()),
            ("corrupt", Some("quarantine/d/a.mp4"), Some("corrupt"))
        );
    }
}
