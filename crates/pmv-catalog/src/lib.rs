//! pmv-catalog: the SQLite catalog, the one record of what every stage has done, and
//! the only code that reads or writes it.
//!
//! Owns the connection (private: WAL on local disks, rollback journal on network file
//! systems, foreign keys, full sync), the schema and its append-only migrations
//! ([`MIGRATIONS`]), and every SQL statement, behind typed calls grouped by the stage
//! that asks: `items` (ingest's merge of finished rows: datasets, manifests, classes,
//! items, memberships, in one [`IngestTx`]), `fetch` (the fetch plan's reads), `files`
//! (the only writer of `files.state`: each transition is one function, see its table),
//! `shards` (frame recipes, shards, samples and probes; one [`Catalog::live_shards`] for
//! the shard stage and the trainer) and `status`; command runs and datasets are here.
//! Stages hand it finished rows and decide nothing in SQL of their own. It never touches files other than the catalog itself.

mod fetch;
mod files;
mod items;
mod migrations;
mod shards;
mod status;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use pmv_core::Format;
use pmv_core::util::now_unix;

pub use fetch::{FileRecord, PlanItem};
pub use files::{FailedState, FileBatch, FileFailure, StoredFile, StoredRow, Validators};
pub use items::{
    IngestTx, ItemLookups, ItemReader, ItemRow, ItemState, ItemWriter, ManifestTotals, Member,
    Membership, MembershipRow, StoredManifest,
};
pub use migrations::MIGRATIONS;
pub use shards::{
    FrameRecipeRow, IndexedShard, NewSample, NewShard, ProbeRecord, ShardCommit, ShardRow,
    ShardVideo, ShardVideos, UnshardedVideo, parse_labels,
};
pub use status::{DatasetStatus, ManifestStatus, RecipeStatus, RunSummary, Status};

/// The states a stored file moves through (DATA.md: catalog states).
pub const FILE_STATES: [&str; 8] = [
    "pending",
    "downloading",
    "downloaded",
    "verified",
    "sharded",
    "failed_transient",
    "failed_permanent",
    "corrupt",
];

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog {path}: {}", sqlite_message(path, source))]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "catalog {path} has schema version {found}, newer than this pmv-data knows ({known}): \
         upgrade pmv-data"
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        known: u32,
    },
    #[error("catalog {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// An SQLite error for people; a full disk is named with its free space (SQLite only
/// says "database or disk is full").
fn sqlite_message(path: &std::path::Path, e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => format!(
            "{e}: {} is full; free some space there (downloads keep fetch.min_free free \
             for the catalog)",
            pmv_core::disk::describe(path.parent().unwrap_or(path))
        ),
        _ => e.to_string(),
    }
}

/// An open catalog.
pub struct Catalog {
    conn: Connection,
    path: PathBuf,
    journal: &'static str,
}

/// A dataset as the catalog records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dataset {
    pub id: i64,
    pub name: String,
    pub format: Format,
    pub multi_label: bool,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Ok,
    /// Finished, but some input was rejected or some work failed.
    Partial,
    Failed,
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

impl Catalog {
    /// Opens (creating if needed) and migrates the catalog at `path`.
    pub fn open(path: &Path) -> Result<Catalog> {
        let conn = Connection::open(path).map_err(|source| CatalogError::Sqlite {
            path: path.to_owned(),
            source,
        })?;
        let mut cat = Catalog {
            conn,
            path: path.to_owned(),
            journal: "wal",
        };
        cat.configure(true)?;
        cat.migrate()?;
        Ok(cat)
    }

    /// Opens an existing catalog for reading; `None` if there is none. Nothing is
    /// written and nothing is created, but the file is opened read-write when the
    /// permissions allow: a writer killed mid-transaction can leave a hot journal,
    /// which SQLite must roll back before anyone may read, and a read-only connection
    /// cannot. On a read-only file or file system it falls back to read-only.
    pub fn open_existing_readonly(path: &Path) -> Result<Option<Catalog>> {
        if !path.exists() {
            return Ok(None);
        }
        let flags = OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_READ_WRITE)
            .or_else(|_| {
                Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_READ_ONLY)
            })
            .map_err(|source| CatalogError::Sqlite {
                path: path.to_owned(),
                source,
            })?;
        let mut cat = Catalog {
            conn,
            path: path.to_owned(),
            journal: "wal",
        };
        cat.configure(false)?;
        let version = cat.schema_version()?;
        if version > MIGRATIONS.len() as u32 {
            return Err(CatalogError::TooNew {
                path: path.to_owned(),
                found: version,
                known: MIGRATIONS.len() as u32,
            });
        }
        if version == 0 {
            // Created by a command killed before its first migration committed: the
            // database is empty, and the next writer sets it up.
            return Ok(None);
        }
        if version < MIGRATIONS.len() as u32 {
            return Err(cat.invalid(format!(
                "schema version {version} is older than this pmv-data's ({}); \
                 run any command that writes (e.g. ingest) to upgrade it",
                MIGRATIONS.len()
            )));
        }
        Ok(Some(cat))
    }

    fn configure(&mut self, writable: bool) -> Result<()> {
        let c = &self.conn;
        c.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| self.sql(e))?;
        c.pragma_update(None, "foreign_keys", true)
            .map_err(|e| self.sql(e))?;
        if writable {
            // WAL needs shared memory that network file systems do not provide reliably.
            let network = self.path.parent().is_some_and(is_network_fs);
            let mode = if network { "DELETE" } else { "WAL" };
            let got: String = c
                .pragma_update_and_check(None, "journal_mode", mode, |r| r.get(0))
                .map_err(|e| self.sql(e))?;
            self.journal = if got.eq_ignore_ascii_case("wal") {
                "wal"
            } else {
                "delete"
            };
            if network {
                tracing::info!(catalog = %self.path.display(), "network file system: using a rollback journal, not WAL");
            }
            // FULL: a commit is on disk when it returns (WAL: the log is synced).
            self.conn
                .pragma_update(None, "synchronous", "FULL")
                .map_err(|e| self.sql(e))?;
        }
        Ok(())
    }

    fn migrate(&mut self) -> Result<()> {
        let path = self.path.clone();
        let sql = |source| CatalogError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(sql)?;
        let version: u32 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql)?;
        let known = MIGRATIONS.len() as u32;
        if version > known {
            return Err(CatalogError::TooNew {
                path: path.clone(),
                found: version,
                known,
            });
        }
        if version == known {
            return Ok(());
        }
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(migration).map_err(sql)?;
            tracing::debug!(to = i + 1, "catalog migrated");
        }
        tx.pragma_update(None, "user_version", known).map_err(sql)?;
        tx.commit().map_err(sql)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `wal` or `delete`.
    pub fn journal_mode(&self) -> &'static str {
        self.journal
    }

    /// Wraps a SQLite error with the catalog's path.
    pub fn sql(&self, source: rusqlite::Error) -> CatalogError {
        sql_at(&self.path)(source)
    }

    /// Opens a write transaction (`Immediate` takes the writer lock now).
    fn begin(&mut self, behavior: TransactionBehavior) -> Result<Tx<'_>> {
        let tx = self
            .conn
            .transaction_with_behavior(behavior)
            .map_err(sql_at(&self.path))?;
        Ok(Tx {
            tx,
            path: &self.path,
        })
    }

    pub fn invalid(&self, message: impl Into<String>) -> CatalogError {
        CatalogError::Invalid {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    pub fn schema_version(&self) -> Result<u32> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.sql(e))
    }

    /// The schema as `schemas/catalog.sql` records it: every table and index in
    /// creation order.
    pub fn schema_sql(&self) -> Result<String> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' \
                 ORDER BY rowid",
            )
            .map_err(|e| self.sql(e))?;
        let mut out = format!(
            "-- pmv-data catalog schema, version {}.\n\
             -- Generated from crates/pmv-catalog/src/migrations.rs by the test `schema_file_matches_migrations`;\n\
             -- regenerate with PMV_BLESS=1 cargo test schema_file. Do not edit by hand.\n\n",
            self.schema_version()?
        );
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.sql(e))?;
        for sql in rows {
            out.push_str(sql.map_err(|e| self.sql(e))?.trim());
            out.push_str(";\n\n");
        }
        Ok(out.trim_end().to_owned() + "\n")
    }

    pub fn dataset(&self, name: &str) -> Result<Option<Dataset>> {
        self.conn
            .query_row(
                "SELECT id, name, format, multi_label FROM datasets WHERE name = ?1",
                [name],
                dataset_from_row,
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    pub fn datasets(&self) -> Result<Vec<Dataset>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, name, format, multi_label FROM datasets ORDER BY name")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], dataset_from_row)
            .map_err(|e| self.sql(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sql(e))
    }

    pub fn classes(&self, dataset_id: i64) -> Result<Vec<(u32, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT class_id, name FROM classes WHERE dataset_id = ?1 ORDER BY class_id")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([dataset_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.sql(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sql(e))
    }

    /// Every manifest of a dataset with the folders it may have local files read
    /// from, as recorded by its last ingest (empty for a manifest ingested before
    /// they were recorded).
    pub fn manifest_roots(&self, dataset_id: i64) -> Result<Vec<(PathBuf, Vec<PathBuf>)>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT m.path, r.dir FROM manifests m \
                 LEFT JOIN manifest_roots r ON r.manifest_id = m.id \
                 WHERE m.dataset_id = ?1 ORDER BY m.id, r.dir",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([dataset_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })
            .map_err(|e| self.sql(e))?;
        let mut out: Vec<(PathBuf, Vec<PathBuf>)> = vec![];
        for row in rows {
            let (path, dir) = row.map_err(|e| self.sql(e))?;
            let path = PathBuf::from(path);
            if out.last().is_none_or(|(p, _)| *p != path) {
                out.push((path, vec![]));
            }
            if let (Some(d), Some(last)) = (dir, out.last_mut()) {
                last.1.push(PathBuf::from(d));
            }
        }
        Ok(out)
    }

    /// (active items, removed items, active items without a video source) of a
    /// dataset, from indexes only.
    pub fn item_counts(&self, dataset_id: i64) -> Result<(u64, u64, u64)> {
        let count = |sql: &str| -> Result<u64> {
            self.conn
                .query_row(sql, [dataset_id], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(|e| self.sql(e))
        };
        let total = count("SELECT count(*) FROM items WHERE dataset_id = ?1")?;
        let removed =
            count("SELECT count(*) FROM items WHERE dataset_id = ?1 AND state = 'removed'")?;
        let no_source = count(
            "SELECT count(*) FROM items WHERE dataset_id = ?1 AND state = 'active' \
             AND video_sources IS NULL",
        )?;
        Ok((total - removed, removed, no_source))
    }

    /// Records the start of a command that changes the root.
    pub fn start_run(&self, run_id: &str, command: &str, args: &serde_json::Value) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO runs (id, command, args, pid, started_at, status) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'running')",
                params![
                    run_id,
                    command,
                    args.to_string(),
                    std::process::id(),
                    now_unix()
                ],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    pub fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
        summary: &serde_json::Value,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?2, status = ?3, summary = ?4 WHERE id = ?1",
                params![run_id, now_unix(), status.as_str(), summary.to_string()],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// The number of refreshes recorded that are no longer running.
    pub fn finished_refreshes(&self) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT count(*) FROM runs WHERE command = 'refresh' AND status <> 'running'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.sql(e))
    }

    /// Marks runs left `running` by a process that no longer holds the root lock.
    /// Only call with the root lock held.
    pub fn close_abandoned_runs(&self) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE runs SET status = 'interrupted', finished_at = coalesce(finished_at, ?1) \
                 WHERE status = 'running'",
                [now_unix()],
            )
            .map_err(|e| self.sql(e))
    }
}

fn dataset_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Dataset> {
    let format: String = r.get(2)?;
    Ok(Dataset {
        id: r.get(0)?,
        name: r.get(1)?,
        format: format.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into())
        })?,
        multi_label: r.get(3)?,
    })
}

/// True for file systems where SQLite's WAL is unsafe (NFS, SMB/CIFS, FUSE, ...).
fn is_network_fs(dir: &Path) -> bool {
    const NETWORK: [i64; 11] = [
        0x6969,                // NFS
        0x517B,                // SMB
        0xFF53_4D42u32 as i64, // CIFS
        0xFE53_4D42u32 as i64, // SMB2
        0x6573_5546,           // FUSE (sshfs, ...)
        0x00C3_6400,           // Ceph
        0x6B41_4653,           // AFS
        0x0102_1997,           // 9p
        0x0BD0_0BD0,           // Lustre
        0x0116_1970,           // GFS2
        0x4750_4653,           // GPFS
    ];
    match rustix::fs::statfs(dir) {
        Ok(st) => NETWORK.contains(&{ st.f_type }),
        Err(_) => false,
    }
}

/// Wraps a SQLite error with the path of the catalog it came from.
fn sql_at(path: &Path) -> impl Fn(rusqlite::Error) -> CatalogError + '_ {
    move |source| CatalogError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

/// An open write transaction with the catalog's path for its errors: what each batch
/// of writes (an ingest, a shard, fetch's file transitions) holds until it commits.
/// Dropped without [`Tx::commit`], it rolls back.
struct Tx<'c> {
    tx: rusqlite::Transaction<'c>,
    path: &'c Path,
}

impl<'c> Tx<'c> {
    fn sql(&self, source: rusqlite::Error) -> CatalogError {
        sql_at(self.path)(source)
    }

    fn commit(self) -> Result<()> {
        self.tx.commit().map_err(sql_at(self.path))
    }

    fn rollback(self) -> Result<()> {
        self.tx.rollback().map_err(sql_at(self.path))
    }
}

impl<'c> std::ops::Deref for Tx<'c> {
    type Target = rusqlite::Transaction<'c>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_named_with_its_free_space() {
        let dir = tempfile::tempdir().unwrap();
        let full = CatalogError::Sqlite {
            path: dir.path().join("catalog.sqlite"),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                None,
            ),
        }
        .to_string();
        let mount = pmv_core::disk::mount_point(dir.path());
        assert!(
            full.contains(&format!("the disk mounted at {} (", mount.display()))
                && full.contains(" free of ")
                && full.contains("fetch.min_free"),
            "{full}"
        );
        let other = CatalogError::Sqlite {
            path: dir.path().join("catalog.sqlite"),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                None,
            ),
        }
        .to_string();
        assert!(!other.contains("disk mounted"), "{other}");
    }

    #[test]
    fn migrate_twice_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("catalog.sqlite");
        let first = Catalog::open(&p).unwrap();
        let schema = first.schema_sql().unwrap();
        assert_eq!(first.schema_version().unwrap(), MIGRATIONS.len() as u32);
        drop(first);
        let second = Catalog::open(&p).unwrap();
        assert_eq!(second.schema_sql().unwrap(), schema);
        assert_eq!(second.journal_mode(), "wal");
        let fk: bool = second
            .conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert!(fk);
    }

    #[test]
    fn older_catalogs_upgrade_and_keep_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("catalog.sqlite");
        let c = Catalog::open(&p).unwrap();
        // A catalog as version 1 left it, with a dataset in it.
        c.conn
            .execute_batch(
                "DROP INDEX items_dataset_state; DROP TABLE manifest_roots; \
                 PRAGMA user_version = 1; \
                 INSERT INTO datasets (name, format, multi_label, created_at, updated_at) \
                 VALUES ('d', 'pmv400', 0, 0, 0);",
            )
            .unwrap();
        drop(c);
        let e = Catalog::open_existing_readonly(&p).err().unwrap();
        assert!(e.to_string().contains("to upgrade it"), "{e}");
        let c = Catalog::open(&p).unwrap();
        assert_eq!(c.schema_version().unwrap(), MIGRATIONS.len() as u32);
        assert!(c.schema_sql().unwrap().contains("items_dataset_state"));
        assert!(c.schema_sql().unwrap().contains("manifest_roots"));
        let n: i64 = c
            .conn
            .query_row("SELECT count(*) FROM datasets WHERE name = 'd'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn newer_catalogs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("catalog.sqlite");
        let c = Catalog::open(&p).unwrap();
        c.conn.pragma_update(None, "user_version", 999).unwrap();
        drop(c);
        let e = Catalog::open(&p).err().unwrap();
        assert!(matches!(e, CatalogError::TooNew { found: 999, .. }), "{e}");
        let e = Catalog::open_existing_readonly(&p).err().unwrap();
        assert!(e.to_string().contains("upgrade pmv-data"), "{e}");
    }

    #[test]
    fn schema_file_matches_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("catalog.sqlite")).unwrap();
        let live = c.schema_sql().unwrap();
        let file =
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("schemas/catalog.sql");
        if std::env::var_os("PMV_BLESS").is_some() {
            std::fs::write(&file, &live).unwrap();
        }
        let recorded = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            recorded == live,
            "schemas/catalog.sql differs from what the migrations create; \
             regenerate with PMV_BLESS=1 cargo test schema_file"
        );
    }

    #[test]
    fn states_in_code_match_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("catalog.sqlite")).unwrap();
        let sql = c.schema_sql().unwrap();
        for s in FILE_STATES {
            assert!(sql.contains(&format!("'{s}'")), "{s}");
        }
    }
}
