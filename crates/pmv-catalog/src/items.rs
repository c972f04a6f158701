//! The ingest merge's rows: datasets, classes, manifests and the folders they may read
//! local files from, items and memberships.
//!
//! Owns every statement ingest runs: the reads it makes before it writes (a manifest's
//! stored signature and members), the one write transaction ([`IngestTx`]) with the
//! statements it prepares once ([`ItemWriter`]: new items go in multi-row inserts), and
//! the reads the merge makes of the catalog as it was ([`ItemLookups`], inside the
//! transaction or through a second read-only connection, [`ItemReader`]). It never
//! decides what an item becomes: ingest plans each item and hands this module rows.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Statement, TransactionBehavior, params};

use crate::{Catalog, CatalogError, Result, Tx, sql_at};
use pmv_core::Format;

/// A manifest as its last ingest recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    /// The signature of its content and the options it was read with.
    pub signature: String,
    /// SHA-256 of its content.
    pub sha256: String,
    pub bytes: u64,
    /// Rows seen, accepted or rejected.
    pub rows: u64,
    pub accepted: u64,
    pub rejected: u64,
}

/// What reading a manifest found, recorded when the ingest ends.
#[derive(Debug, Clone, Copy)]
pub struct ManifestTotals<'a> {
    /// SHA-256 of its content.
    pub sha256: &'a str,
    /// The signature of its content and the options it was read with.
    pub signature: &'a str,
    pub bytes: u64,
    pub rows: u64,
    pub accepted: u64,
    pub rejected: u64,
}

/// An item as the catalog holds it, as the merge compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemState {
    pub id: i64,
    /// Labels as `items.labels` keeps them (comma-separated ids).
    pub labels: String,
    pub fingerprint: String,
    /// `state = 'removed'`.
    pub removed: bool,
}

/// A member of a manifest, with its item's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The item's id in the manifest (`items.key`).
    pub key: String,
    pub item: ItemState,
}

/// A membership of an item in a manifest, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub split: String,
    pub line: u64,
    pub labels: String,
    /// The manifest's path.
    pub path: String,
}

/// The content columns of an item, as the merge writes them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemRow {
    /// The item's id in its manifests (`items.key`).
    pub key: String,
    pub labels: String,
    pub text: Option<String>,
    pub duration_s: Option<f64>,
    /// `items.video_sources` (JSON), `None` for no source.
    pub video_sources: Option<String>,
    /// `items.cover_sources` (JSON), `None` for no cover.
    pub cover_sources: Option<String>,
    pub expected_size: Option<u64>,
    pub expected_sha256: Option<String>,
    pub fingerprint: String,
}

/// One manifest's listing of an item, as the merge writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipRow {
    pub manifest_id: i64,
    pub split: String,
    /// The first line that lists the item.
    pub line: u64,
    pub labels: String,
}

impl Catalog {
    /// The record of the manifest at `path` (its canonical path) in a dataset.
    pub fn stored_manifest(&self, dataset_id: i64, path: &str) -> Result<Option<StoredManifest>> {
        self.conn
            .query_row(
                "SELECT signature, sha256, bytes, rows, accepted, rejected FROM manifests \
                 WHERE dataset_id = ?1 AND path = ?2",
                params![dataset_id, path],
                |r| {
                    Ok(StoredManifest {
                        signature: r.get(0)?,
                        sha256: r.get(1)?,
                        bytes: r.get::<_, i64>(2)? as u64,
                        rows: r.get::<_, i64>(3)? as u64,
                        accepted: r.get::<_, i64>(4)? as u64,
                        rejected: r.get::<_, i64>(5)? as u64,
                    })
                },
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// Hands `each` every current member of the manifest at `path`, in no set order.
    pub fn for_each_member<E: From<CatalogError>>(
        &self,
        dataset_id: i64,
        path: &str,
        mut each: impl FnMut(Member) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT i.key, i.id, i.fingerprint, i.labels, i.state FROM manifests f \
                 JOIN memberships m ON m.manifest_id = f.id JOIN items i ON i.id = m.item_id \
                 WHERE f.dataset_id = ?1 AND f.path = ?2",
            )
            .map_err(|e| self.sql(e))?;
        let mut rows = stmt
            .query(params![dataset_id, path])
            .map_err(|e| self.sql(e))?;
        while let Some(r) = rows.next().map_err(|e| self.sql(e))? {
            let member = (|| -> rusqlite::Result<Member> {
                Ok(Member {
                    key: r.get(0)?,
                    item: ItemState {
                        id: r.get(1)?,
                        fingerprint: r.get(2)?,
                        labels: r.get(3)?,
                        removed: r.get::<_, String>(4)? == "removed",
                    },
                })
            })()
            .map_err(|e| self.sql(e))?;
            each(member)?;
        }
        Ok(())
    }

    /// Starts the one write transaction of an ingest: immediate (the writer lock is
    /// taken now), with a page cache large enough for the merge.
    pub fn begin_ingest(&mut self) -> Result<IngestTx<'_>> {
        let tx = self.begin(TransactionBehavior::Immediate)?;
        // 64 MiB of page cache instead of SQLite's 2 MiB: the merge writes hundreds of
        // thousands of rows in one transaction.
        tx.execute_batch("PRAGMA main.cache_size = -65536;")
            .map_err(|e| tx.sql(e))?;
        Ok(IngestTx { tx })
    }
}

/// The write transaction of one ingest; dropped without [`IngestTx::commit`], it
/// rolls back.
pub struct IngestTx<'c> {
    tx: Tx<'c>,
}

impl<'c> IngestTx<'c> {
    fn sql(&self, source: rusqlite::Error) -> CatalogError {
        self.tx.sql(source)
    }

    /// Marks an existing dataset as updated now.
    pub fn touch_dataset(&self, dataset_id: i64, now: i64) -> Result<()> {
        self.tx
            .execute(
                "UPDATE datasets SET updated_at = ?2 WHERE id = ?1",
                params![dataset_id, now],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// Creates a dataset; returns its id.
    pub fn create_dataset(
        &self,
        name: &str,
        format: Format,
        multi_label: bool,
        now: i64,
    ) -> Result<i64> {
        self.tx
            .execute(
                "INSERT INTO datasets (name, format, multi_label, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                params![name, format.as_str(), multi_label, now],
            )
            .map_err(|e| self.sql(e))?;
        Ok(self.tx.last_insert_rowid())
    }

    /// Records that the manifest at `path` is being ingested now; returns its id. Its
    /// totals stay as they were (zero for a new one) until [`IngestTx::finish_manifest`].
    pub fn upsert_manifest(&self, dataset_id: i64, path: &str, now: i64) -> Result<i64> {
        self.tx
            .query_row(
                "INSERT INTO manifests (dataset_id, path, sha256, signature, bytes, rows, accepted, \
                   rejected, ingested_at) VALUES (?1, ?2, '', '', 0, 0, 0, 0, ?3) \
                 ON CONFLICT (dataset_id, path) DO UPDATE SET ingested_at = excluded.ingested_at \
                 RETURNING id",
                params![dataset_id, path, now],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))
    }

    /// Records the folders a manifest may have local files read from (replacing those
    /// of its previous ingest).
    pub fn set_manifest_roots(&self, manifest_id: i64, dirs: &[PathBuf]) -> Result<()> {
        let run = || -> rusqlite::Result<()> {
            self.tx.execute(
                "DELETE FROM manifest_roots WHERE manifest_id = ?1",
                [manifest_id],
            )?;
            let mut insert = self
                .tx
                .prepare_cached("INSERT INTO manifest_roots (manifest_id, dir) VALUES (?1, ?2)")?;
            for dir in dirs {
                insert.execute(params![manifest_id, dir.to_string_lossy()])?;
            }
            Ok(())
        };
        run().map_err(|e| self.sql(e))
    }

    /// Records what reading the manifest found.
    pub fn finish_manifest(&self, id: i64, t: &ManifestTotals<'_>, now: i64) -> Result<()> {
        self.tx
            .execute(
                "UPDATE manifests SET sha256 = ?2, signature = ?3, bytes = ?4, rows = ?5, \
                   accepted = ?6, rejected = ?7, ingested_at = ?8 WHERE id = ?1",
                params![
                    id,
                    t.sha256,
                    t.signature,
                    t.bytes as i64,
                    t.rows as i64,
                    t.accepted as i64,
                    t.rejected as i64,
                    now
                ],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// Adds classes and renames others: `renamed` is `(id, old name, new name)`.
    pub fn write_classes(
        &self,
        dataset_id: i64,
        added: &[(u32, String)],
        renamed: &[(u32, String, String)],
    ) -> Result<()> {
        let run = || -> rusqlite::Result<()> {
            // Renames go through a delete so that two names may swap ids in one go.
            for (id, _, _) in renamed {
                self.tx.execute(
                    "DELETE FROM classes WHERE dataset_id = ?1 AND class_id = ?2",
                    params![dataset_id, id],
                )?;
            }
            let mut insert = self
                .tx
                .prepare("INSERT INTO classes (dataset_id, class_id, name) VALUES (?1, ?2, ?3)")?;
            let renamed = renamed.iter().map(|(id, _, name)| (*id, name));
            for (id, name) in added.iter().map(|(id, name)| (*id, name)).chain(renamed) {
                insert.execute(params![dataset_id, id, name])?;
            }
            Ok(())
        };
        run().map_err(|e| self.sql(e))
    }

    /// True when the dataset has no item at all.
    pub fn dataset_is_empty(&self, dataset_id: i64) -> Result<bool> {
        self.tx
            .query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM items WHERE dataset_id = ?1)",
                [dataset_id],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))
    }

    /// The number of manifests the dataset has.
    pub fn manifest_count(&self, dataset_id: i64) -> Result<u64> {
        self.tx
            .query_row(
                "SELECT count(*) FROM manifests WHERE dataset_id = ?1",
                [dataset_id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.sql(e))
    }

    /// The merge's reads, inside this transaction.
    pub fn lookups(&self) -> Result<ItemLookups<'_>> {
        ItemLookups::new(&self.tx, self.tx.path)
    }

    /// The merge's writes of items and memberships of `dataset_id`, stamped `now`.
    pub fn item_writer(&self, dataset_id: i64, now: i64) -> Result<ItemWriter<'_>> {
        ItemWriter::new(&self.tx, self.tx.path, dataset_id, now).map_err(|e| self.sql(e))
    }

    /// Commits everything the ingest wrote.
    pub fn commit(self) -> Result<()> {
        self.tx.commit()
    }

    /// Undoes everything the ingest wrote.
    pub fn rollback(self) -> Result<()> {
        self.tx.rollback()
    }
}

/// A second, read-only connection to a WAL catalog: it sees the catalog as it was
/// before the write transaction, while that transaction writes.
pub struct ItemReader {
    conn: Connection,
    path: PathBuf,
}

impl ItemReader {
    /// Opens the catalog at `path` read-only, waiting up to 30 s for a lock.
    pub fn open(path: &Path) -> Result<ItemReader> {
        let sql = sql_at(path);
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(&sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(&sql)?;
        Ok(ItemReader {
            conn,
            path: path.to_owned(),
        })
    }

    /// The merge's reads, through this connection.
    pub fn lookups(&self) -> Result<ItemLookups<'_>> {
        ItemLookups::new(&self.conn, &self.path)
    }
}

/// Reads of the catalog as it was before this ingest.
pub struct ItemLookups<'c> {
    item: Statement<'c>,
    memberships: Statement<'c>,
    path: &'c Path,
}

impl<'c> ItemLookups<'c> {
    fn new(conn: &'c Connection, path: &'c Path) -> Result<ItemLookups<'c>> {
        let sql = sql_at(path);
        Ok(ItemLookups {
            item: conn.prepare(
                "SELECT id, labels, fingerprint, state FROM items WHERE dataset_id = ?1 AND key = ?2",
            ).map_err(&sql)?,
            memberships: conn.prepare(
                "SELECT m.manifest_id, m.split, m.line, m.labels, f.path FROM memberships m \
                 JOIN manifests f ON f.id = m.manifest_id WHERE m.item_id = ?1",
            ).map_err(&sql)?,
            path,
        })
    }

    /// The item `key` of a dataset, if the catalog has it.
    pub fn item(&mut self, dataset_id: i64, key: &str) -> Result<Option<ItemState>> {
        self.item
            .query_row(params![dataset_id, key], |r| {
                Ok(ItemState {
                    id: r.get(0)?,
                    labels: r.get(1)?,
                    fingerprint: r.get(2)?,
                    removed: r.get::<_, String>(3)? == "removed",
                })
            })
            .optional()
            .map_err(sql_at(self.path))
    }

    /// The item's memberships, except those in the manifests `except`.
    pub fn memberships(&mut self, item_id: i64, except: &[i64]) -> Result<Vec<Membership>> {
        let run = |stmt: &mut Statement<'_>| -> rusqlite::Result<Vec<Membership>> {
            let rows = stmt.query_map([item_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    Membership {
                        split: r.get(1)?,
                        line: r.get::<_, i64>(2)? as u64,
                        labels: r.get(3)?,
                        path: r.get(4)?,
                    },
                ))
            })?;
            let mut out = vec![];
            for row in rows {
                let (manifest_id, m) = row?;
                if !except.contains(&manifest_id) {
                    out.push(m);
                }
            }
            Ok(out)
        };
        run(&mut self.memberships).map_err(sql_at(self.path))
    }
}

/// Rows per multi-row insert: fewer statements, each with 13 x 64 parameters at most.
const ROWS: usize = 64;

fn insert_items_sql(rows: usize) -> String {
    let one = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    format!(
        "INSERT INTO items (id, dataset_id, key, labels, text, duration_s, video_sources, \
           cover_sources, expected_size, expected_sha256, fingerprint, created_at, updated_at) \
         VALUES {}",
        vec![one; rows].join(", ")
    )
}

fn insert_memberships_sql(rows: usize) -> String {
    format!(
        "INSERT INTO memberships (item_id, manifest_id, split, line, labels) VALUES {}",
        vec!["(?, ?, ?, ?, ?)"; rows].join(", ")
    )
}

/// The writes the merge makes, prepared once.
pub struct ItemWriter<'t> {
    conn: &'t Connection,
    path: &'t Path,
    dataset_id: i64,
    now: i64,
    /// New items wait here and go in multi-row inserts of `ROWS` (ids are given
    /// explicitly: this transaction is the only writer).
    new_items: Vec<(i64, ItemRow)>,
    new_memberships: Vec<(i64, i64, String, i64, String)>,
    next_id: i64,
    insert_items: Statement<'t>,
    insert_memberships: Statement<'t>,
    update_item: Statement<'t>,
    update_labels: Statement<'t>,
    mark_removed: Statement<'t>,
    upsert_membership: Statement<'t>,
    delete_membership: Statement<'t>,
}

impl<'t> ItemWriter<'t> {
    fn new(
        conn: &'t Connection,
        path: &'t Path,
        dataset_id: i64,
        now: i64,
    ) -> rusqlite::Result<ItemWriter<'t>> {
        Ok(ItemWriter {
            conn,
            path,
            dataset_id,
            now,
            new_items: Vec::with_capacity(ROWS),
            new_memberships: Vec::with_capacity(ROWS),
            next_id: conn.query_row("SELECT coalesce(max(id), 0) + 1 FROM items", [], |r| {
                r.get(0)
            })?,
            insert_items: conn.prepare(&insert_items_sql(ROWS))?,
            insert_memberships: conn.prepare(&insert_memberships_sql(ROWS))?,
            update_item: conn.prepare(
                "UPDATE items SET labels = ?2, text = ?3, duration_s = ?4, video_sources = ?5, \
                   cover_sources = ?6, expected_size = ?7, expected_sha256 = ?8, fingerprint = ?9, \
                   state = 'active', removed_at = NULL, updated_at = ?10 WHERE id = ?1",
            )?,
            update_labels: conn.prepare(
                "UPDATE items SET labels = ?2, state = 'active', removed_at = NULL, \
                   updated_at = ?3 WHERE id = ?1",
            )?,
            mark_removed: conn.prepare(
                "UPDATE items SET state = 'removed', removed_at = ?2, updated_at = ?2 \
                 WHERE id = ?1 AND state = 'active'",
            )?,
            upsert_membership: conn.prepare(
                "INSERT INTO memberships (item_id, manifest_id, split, line, labels) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (item_id, manifest_id) DO UPDATE SET split = excluded.split, \
                   line = excluded.line, labels = excluded.labels \
                 WHERE split IS NOT excluded.split OR line IS NOT excluded.line \
                   OR labels IS NOT excluded.labels",
            )?,
            delete_membership: conn
                .prepare("DELETE FROM memberships WHERE item_id = ?1 AND manifest_id = ?2")?,
        })
    }

    fn sql(&self, source: rusqlite::Error) -> CatalogError {
        sql_at(self.path)(source)
    }

    /// Queues a new item and its memberships; returns its id. Queued rows are written
    /// in batches, the rest by [`ItemWriter::flush`].
    pub fn insert(&mut self, item: ItemRow, memberships: Vec<MembershipRow>) -> Result<i64> {
        let id = self.next_id;
        self.next_id += 1;
        for m in memberships {
            self.new_memberships
                .push((id, m.manifest_id, m.split, m.line as i64, m.labels));
        }
        self.new_items.push((id, item));
        if self.new_items.len() == ROWS {
            self.flush_items().map_err(|e| self.sql(e))?;
        }
        if self.new_memberships.len() >= ROWS {
            self.flush_memberships(false).map_err(|e| self.sql(e))?;
        }
        Ok(id)
    }

    /// Replaces the content and labels of item `id`, which becomes active.
    pub fn update(&mut self, id: i64, item: &ItemRow) -> Result<()> {
        self.update_item
            .execute(params![
                id,
                item.labels,
                item.text,
                item.duration_s,
                item.video_sources,
                item.cover_sources,
                item.expected_size.map(|s| s as i64),
                item.expected_sha256,
                item.fingerprint,
                self.now
            ])
            .map(drop)
            .map_err(sql_at(self.path))
    }

    /// Sets the labels of item `id`, which becomes active.
    pub fn relabel(&mut self, id: i64, labels: &str) -> Result<()> {
        self.update_labels
            .execute(params![id, labels, self.now])
            .map(drop)
            .map_err(sql_at(self.path))
    }

    /// Marks item `id` removed; false when it was not active.
    pub fn mark_removed(&mut self, id: i64) -> Result<bool> {
        self.mark_removed
            .execute(params![id, self.now])
            .map(|n| n > 0)
            .map_err(sql_at(self.path))
    }

    /// Writes a membership of item `item_id` (a no-op when it is stored as it is).
    pub fn upsert_membership(&mut self, item_id: i64, m: &MembershipRow) -> Result<()> {
        self.upsert_membership
            .execute(params![
                item_id,
                m.manifest_id,
                m.split,
                m.line as i64,
                m.labels
            ])
            .map(drop)
            .map_err(sql_at(self.path))
    }

    /// Deletes the membership of item `item_id` in a manifest.
    pub fn delete_membership(&mut self, item_id: i64, manifest_id: i64) -> Result<()> {
        self.delete_membership
            .execute(params![item_id, manifest_id])
            .map(drop)
            .map_err(sql_at(self.path))
    }

    fn flush_items(&mut self) -> rusqlite::Result<()> {
        if self.new_items.is_empty() {
            return Ok(());
        }
        let sizes: Vec<Option<i64>> = self
            .new_items
            .iter()
            .map(|(_, p)| p.expected_size.map(|s| s as i64))
            .collect();
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(self.new_items.len() * 13);
        for ((id, p), size) in self.new_items.iter().zip(&sizes) {
            values.extend([
                id as &dyn rusqlite::ToSql,
                &self.dataset_id,
                &p.key,
                &p.labels,
                &p.text,
                &p.duration_s,
                &p.video_sources,
                &p.cover_sources,
                size,
                &p.expected_sha256,
                &p.fingerprint,
                &self.now,
                &self.now,
            ]);
        }
        if self.new_items.len() == ROWS {
            self.insert_items.execute(values.as_slice())?;
        } else {
            self.conn
                .prepare(&insert_items_sql(self.new_items.len()))?
                .execute(values.as_slice())?;
        }
        drop(values);
        self.new_items.clear();
        Ok(())
    }

    /// Inserts queued memberships: whole batches, or all of them with `all`. Their items
    /// must have been inserted first (foreign keys).
    fn flush_memberships(&mut self, all: bool) -> rusqlite::Result<()> {
        let whole = self.new_memberships.len() / ROWS * ROWS;
        let upto = if all {
            self.new_memberships.len()
        } else {
            whole
        };
        if upto == 0 {
            return Ok(());
        }
        // Items of these memberships may still be queued.
        let pending_from = self.new_items.first().map(|(id, _)| *id);
        if let Some(first_pending) = pending_from
            && self.new_memberships[..upto]
                .iter()
                .any(|m| m.0 >= first_pending)
        {
            return Ok(()); // they go after the next item flush
        }
        for chunk in self.new_memberships[..upto].chunks(ROWS) {
            let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * 5);
            for (item, manifest, split, line, labels) in chunk {
                values.extend([item as &dyn rusqlite::ToSql, manifest, split, line, labels]);
            }
            if chunk.len() == ROWS {
                self.insert_memberships.execute(values.as_slice())?;
            } else {
                self.conn
                    .prepare(&insert_memberships_sql(chunk.len()))?
                    .execute(values.as_slice())?;
            }
        }
        self.new_memberships.drain(..upto);
        Ok(())
    }

    /// Writes everything still queued.
    pub fn flush(&mut self) -> Result<()> {
        self.flush_items()
            .and_then(|()| self.flush_memberships(true))
            .map_err(|e| self.sql(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_rows_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let mut c = Catalog::open(&path).unwrap();
        let tx = c.begin_ingest().unwrap();
        let ds = tx.create_dataset("d", Format::Jsonl, false, 7).unwrap();
        let m = tx.upsert_manifest(ds, "/m.jsonl", 7).unwrap();
        tx.set_manifest_roots(m, &[PathBuf::from("/")]).unwrap();
        assert!(tx.dataset_is_empty(ds).unwrap());
        {
            let mut w = tx.item_writer(ds, 7).unwrap();
            // More than one multi-row insert, and a partial one.
            for i in 0..(ROWS as u64 + 6) {
                let item = ItemRow {
                    key: i.to_string(),
                    labels: "1".into(),
                    expected_size: Some(i),
                    fingerprint: format!("f{i}"),
                    ..ItemRow::default()
                };
                let member = MembershipRow {
                    manifest_id: m,
                    split: "train".into(),
                    line: i + 1,
                    labels: "1".into(),
                };
                assert_eq!(w.insert(item, vec![member]).unwrap(), i as i64 + 1);
            }
            w.flush().unwrap();
            assert!(w.mark_removed(1).unwrap());
            assert!(!w.mark_removed(1).unwrap());
        }
        let totals = ManifestTotals {
            sha256: "ab",
            signature: "sig",
            bytes: 3,
            rows: 70,
            accepted: 70,
            rejected: 0,
        };
        tx.finish_manifest(m, &totals, 8).unwrap();
        tx.commit().unwrap();

        let stored = c.stored_manifest(ds, "/m.jsonl").unwrap().unwrap();
        assert_eq!((stored.signature.as_str(), stored.rows), ("sig", 70));
        let mut members = 0;
        c.for_each_member(ds, "/m.jsonl", |_| -> Result<()> {
            members += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(members, ROWS + 6);
        let reader = ItemReader::open(&path).unwrap();
        let mut look = reader.lookups().unwrap();
        let first = look.item(ds, "0").unwrap().unwrap();
        assert!(first.removed && first.fingerprint == "f0");
        assert_eq!(look.memberships(first.id, &[]).unwrap()[0].line, 1);
        assert!(look.memberships(first.id, &[m]).unwrap().is_empty());
        assert!(look.item(ds, "nope").unwrap().is_none());
    }
}
