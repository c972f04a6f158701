//! The catalog half of ingest: merge the sorted stream of rows and markers into items,
//! memberships and sources, one id at a time.
//!
//! Everything here runs inside the ingest transaction, except [`push_members`], which
//! reads the catalog before it starts. Memory holds one id's records, never the manifest.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Statement, Transaction, params};

use super::sort::{Dec, Enc, Kind, Record, Sorted, Sorter};
use super::{IngestError, ItemCounts, SpillError, fingerprint};
use crate::manifest::{
    ItemContent, ItemId, Links, Locator, ReadSummary, Rejection, Row, UrlTemplate,
};
use crate::source::SourceKind;
use pmv_catalog::Catalog;

type Sql<T> = rusqlite::Result<T>;

#[derive(Debug)]
pub(super) enum MergeError {
    Sql(rusqlite::Error),
    Io(std::io::Error),
    /// The writing thread stopped on an error of its own (reported by it).
    Stopped,
}

impl From<rusqlite::Error> for MergeError {
    fn from(e: rusqlite::Error) -> Self {
        MergeError::Sql(e)
    }
}

impl From<std::io::Error> for MergeError {
    fn from(e: std::io::Error) -> Self {
        MergeError::Io(e)
    }
}

pub(super) fn upsert_manifest(
    tx: &Transaction<'_>,
    dataset_id: i64,
    path: &str,
    now: i64,
) -> Sql<i64> {
    tx.query_row(
        "INSERT INTO manifests (dataset_id, path, sha256, signature, bytes, rows, accepted, \
           rejected, ingested_at) VALUES (?1, ?2, '', '', 0, 0, 0, 0, ?3) \
         ON CONFLICT (dataset_id, path) DO UPDATE SET ingested_at = excluded.ingested_at \
         RETURNING id",
        params![dataset_id, path, now],
        |r| r.get(0),
    )
}

/// Records the folders a manifest may have local files read from (replacing those
/// of its previous ingest).
pub(super) fn set_manifest_roots(
    tx: &Transaction<'_>,
    manifest_id: i64,
    roots: &crate::source::local::LocalRoots,
) -> Sql<()> {
    tx.execute(
        "DELETE FROM manifest_roots WHERE manifest_id = ?1",
        [manifest_id],
    )?;
    let mut insert =
        tx.prepare_cached("INSERT INTO manifest_roots (manifest_id, dir) VALUES (?1, ?2)")?;
    for dir in roots.dirs() {
        insert.execute(params![manifest_id, dir.to_string_lossy()])?;
    }
    Ok(())
}

pub(super) fn finish_manifest(
    tx: &Transaction<'_>,
    id: i64,
    s: &ReadSummary,
    signature: &str,
    now: i64,
) -> Sql<()> {
    tx.execute(
        "UPDATE manifests SET sha256 = ?2, signature = ?3, bytes = ?4, rows = ?5, accepted = ?6, \
           rejected = ?7, ingested_at = ?8 WHERE id = ?1",
        params![
            id,
            s.sha256,
            signature,
            s.bytes as i64,
            s.rows as i64,
            s.accepted as i64,
            s.rejected as i64,
            now
        ],
    )
    .map(drop)
}

pub(super) fn write_classes(
    tx: &Transaction<'_>,
    dataset_id: i64,
    added: &[(u32, String)],
    renamed: &[(u32, String, String)],
) -> Sql<()> {
    // Renames go through a delete so that two names may swap ids in one go.
    for (id, _, _) in renamed {
        tx.execute(
            "DELETE FROM classes WHERE dataset_id = ?1 AND class_id = ?2",
            params![dataset_id, id],
        )?;
    }
    let mut insert =
        tx.prepare("INSERT INTO classes (dataset_id, class_id, name) VALUES (?1, ?2, ?3)")?;
    let renamed = renamed.iter().map(|(id, _, name)| (*id, name));
    for (id, name) in added.iter().map(|(id, name)| (*id, name)).chain(renamed) {
        insert.execute(params![dataset_id, id, name])?;
    }
    Ok(())
}

/// Puts a marker in the sort for every current member of the manifest at `path`.
pub(super) fn push_members(
    catalog: &Catalog,
    dataset_id: i64,
    path: &str,
    input: u32,
    sorter: &mut Sorter,
    spill_dir: &std::path::Path,
) -> Result<(), IngestError> {
    let mut stmt = catalog
        .conn()
        .prepare(
            "SELECT i.key, i.id, i.fingerprint, i.labels, i.state FROM manifests f \
             JOIN memberships m ON m.manifest_id = f.id JOIN items i ON i.id = m.item_id \
             WHERE f.dataset_id = ?1 AND f.path = ?2",
        )
        .map_err(|e| catalog.sql(e))?;
    let mut rows = stmt
        .query(params![dataset_id, path])
        .map_err(|e| catalog.sql(e))?;
    while let Some(r) = rows.next().map_err(|e| catalog.sql(e))? {
        let get =
            |i| -> Result<String, IngestError> { r.get(i).map_err(|e| catalog.sql(e).into()) };
        let key = get(0)?;
        let id: i64 = r.get(1).map_err(|e| catalog.sql(e))?;
        let mut enc = Enc::default();
        enc.i64(id)
            .str(&get(2)?)
            .str(&get(3)?)
            .u8((get(4)? == "removed") as u8);
        sorter
            .push(&key, input, Kind::Existing, enc.0)
            .map_err(|source| SpillError {
                dir: spill_dir.to_owned(),
                source,
            })?;
    }
    Ok(())
}

/// Encodes the parts of a row the merge needs (the id is the record's key).
pub(super) fn encode_row(row: &Row) -> Vec<u8> {
    let mut e = Enc::default();
    e.u64(row.line)
        .opt_str(row.file.as_ref().map(|f| f.to_string_lossy()).as_deref())
        .str(row.split.as_str())
        .u32(row.labels.len() as u32);
    for l in &row.labels {
        e.u32(*l);
    }
    let c = &row.content;
    e.opt_str(c.text.as_deref());
    match c.duration_s {
        Some(d) => e.u8(1).f64(d),
        None => e.u8(0),
    };
    for list in [&c.video, &c.cover] {
        e.u32(list.len() as u32);
        for l in list {
            e.u8(kind_code(l.kind)).str(&l.location);
        }
    }
    e.opt_str(c.sha256.as_deref());
    match c.size {
        Some(s) => e.u8(1).u64(s),
        None => e.u8(0),
    };
    e.0
}

fn kind_code(k: SourceKind) -> u8 {
    SourceKind::ALL
        .iter()
        .position(|x| *x == k)
        .expect("known kind") as u8
}

fn decode_row(input: u32, payload: &[u8]) -> std::io::Result<Staged> {
    let mut d = Dec(payload);
    let line = d.u64()?;
    let file = d.opt_str()?.map(str::to_owned);
    let split = d.str()?.to_owned();
    let n = d.u32()? as usize;
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        labels.push(d.u32()?);
    }
    let mut content = ItemContent {
        text: d.opt_str()?.map(str::to_owned),
        duration_s: if d.u8()? == 1 { Some(d.f64()?) } else { None },
        ..ItemContent::default()
    };
    for role in 0..2 {
        let n = d.u32()? as usize;
        let mut list = Vec::with_capacity(n);
        for _ in 0..n {
            let kind = *SourceKind::ALL.get(d.u8()? as usize).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "bad source kind")
            })?;
            list.push(Locator {
                kind,
                location: d.str()?.to_owned(),
            });
        }
        if role == 0 {
            content.video = list;
        } else {
            content.cover = list;
        }
    }
    content.sha256 = d.opt_str()?.map(str::to_owned);
    content.size = if d.u8()? == 1 { Some(d.u64()?) } else { None };
    Ok(Staged {
        input,
        line,
        file,
        split,
        labels,
        content,
    })
}

pub(super) fn labels_text(labels: impl IntoIterator<Item = u32>) -> String {
    let mut s = String::new();
    for (i, l) in labels.into_iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&l.to_string());
    }
    s
}

fn parse_labels(text: &str) -> impl Iterator<Item = u32> + '_ {
    text.split(',')
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
}

/// An accepted row, decoded.
struct Staged {
    input: u32,
    line: u64,
    file: Option<String>,
    split: String,
    labels: Vec<u32>,
    content: ItemContent,
}

/// The item as the catalog held it before this ingest.
#[derive(Debug, Clone)]
struct Existing {
    id: i64,
    labels: String,
    fingerprint: String,
    removed: bool,
}

/// A membership this ingest does not replace: in a manifest not read now, or whose row
/// was rejected this time.
struct Other {
    split: String,
    line: u64,
    labels: String,
    path: String,
}

/// Reads of the catalog as it was before this ingest.
struct Lookups<'c> {
    item: Statement<'c>,
    memberships: Statement<'c>,
}

impl<'c> Lookups<'c> {
    fn new(conn: &'c Connection) -> Sql<Lookups<'c>> {
        Ok(Lookups {
            item: conn.prepare(
                "SELECT id, labels, fingerprint, state FROM items WHERE dataset_id = ?1 AND key = ?2",
            )?,
            memberships: conn.prepare(
                "SELECT m.manifest_id, m.split, m.line, m.labels, f.path FROM memberships m \
                 JOIN manifests f ON f.id = m.manifest_id WHERE m.item_id = ?1",
            )?,
        })
    }
}

/// The writes the merge makes, prepared once.
struct Writes<'t> {
    conn: &'t Connection,
    /// New items wait here and go in multi-row inserts of `ROWS` (ids are given
    /// explicitly: this transaction is the only writer).
    new_items: Vec<(i64, Box<WritePlan>)>,
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

impl<'t> Writes<'t> {
    fn new(tx: &'t Transaction<'_>) -> Sql<Writes<'t>> {
        Ok(Writes {
            conn: tx,
            new_items: Vec::with_capacity(ROWS),
            new_memberships: Vec::with_capacity(ROWS),
            next_id: tx.query_row("SELECT coalesce(max(id), 0) + 1 FROM items", [], |r| {
                r.get(0)
            })?,
            insert_items: tx.prepare(&insert_items_sql(ROWS))?,
            insert_memberships: tx.prepare(&insert_memberships_sql(ROWS))?,
            update_item: tx.prepare(
                "UPDATE items SET labels = ?2, text = ?3, duration_s = ?4, video_sources = ?5, \
                   cover_sources = ?6, expected_size = ?7, expected_sha256 = ?8, fingerprint = ?9, \
                   state = 'active', removed_at = NULL, updated_at = ?10 WHERE id = ?1",
            )?,
            update_labels: tx.prepare(
                "UPDATE items SET labels = ?2, state = 'active', removed_at = NULL, \
                   updated_at = ?3 WHERE id = ?1",
            )?,
            mark_removed: tx.prepare(
                "UPDATE items SET state = 'removed', removed_at = ?2, updated_at = ?2 \
                 WHERE id = ?1 AND state = 'active'",
            )?,
            upsert_membership: tx.prepare(
                "INSERT INTO memberships (item_id, manifest_id, split, line, labels) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (item_id, manifest_id) DO UPDATE SET split = excluded.split, \
                   line = excluded.line, labels = excluded.labels \
                 WHERE split IS NOT excluded.split OR line IS NOT excluded.line \
                   OR labels IS NOT excluded.labels",
            )?,
            delete_membership: tx
                .prepare("DELETE FROM memberships WHERE item_id = ?1 AND manifest_id = ?2")?,
        })
    }
}

/// Rows per multi-row insert: fewer statements, each with 12 x 64 parameters at most.
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

impl Writes<'_> {
    /// Queues a new item (and its memberships); returns its id.
    fn queue_new(&mut self, dataset_id: i64, now: i64, p: Box<WritePlan>) -> Sql<i64> {
        let id = self.next_id;
        self.next_id += 1;
        for (manifest_id, split, line, labels) in &p.memberships {
            self.new_memberships.push((
                id,
                *manifest_id,
                split.clone(),
                *line as i64,
                labels.clone(),
            ));
        }
        self.new_items.push((id, p));
        if self.new_items.len() == ROWS {
            self.flush_items(dataset_id, now)?;
        }
        if self.new_memberships.len() >= ROWS {
            self.flush_memberships(false)?;
        }
        Ok(id)
    }

    fn flush_items(&mut self, dataset_id: i64, now: i64) -> Sql<()> {
        if self.new_items.is_empty() {
            return Ok(());
        }
        let sizes: Vec<Option<i64>> = self
            .new_items
            .iter()
            .map(|(_, p)| p.content.size.map(|s| s as i64))
            .collect();
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(self.new_items.len() * 13);
        for ((id, p), size) in self.new_items.iter().zip(&sizes) {
            values.extend([
                id as &dyn rusqlite::ToSql,
                &dataset_id,
                &p.key,
                &p.labels,
                &p.content.text,
                &p.content.duration_s,
                &p.video_sources,
                &p.cover_sources,
                size,
                &p.content.sha256,
                &p.fingerprint,
                &now,
                &now,
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
    fn flush_memberships(&mut self, all: bool) -> Sql<()> {
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
    fn flush(&mut self, dataset_id: i64, now: i64) -> Sql<()> {
        self.flush_items(dataset_id, now)?;
        self.flush_memberships(true)
    }
}

pub(super) struct Outcome {
    pub counts: ItemCounts,
    pub repeated_rows: u64,
    /// Rows rejected while merging (conflicts), per input.
    pub rejected_per_manifest: BTreeMap<u32, u64>,
}

/// What the merge needs to know besides the records; shared by its two threads.
pub(super) struct Merger<'a> {
    pub dataset_id: i64,
    pub multi_label: bool,
    /// Input index -> manifests.id, for the inputs read in this ingest.
    pub manifest_ids: &'a HashMap<u32, i64>,
    /// Input index -> the manifest path, for messages.
    pub paths: &'a HashMap<u32, String>,
    pub links: Option<&'a Links>,
    pub template: Option<&'a UrlTemplate>,
    pub now: i64,
    /// The dataset had no items before this ingest: nothing to look up.
    pub fresh: bool,
    /// Some manifest of the dataset is not read now, so an item may be listed there.
    pub has_unread_manifests: bool,
}

/// One id's records.
#[derive(Default)]
struct Group {
    rows: Vec<Staged>,
    /// Inputs whose row for this id was rejected while reading.
    rejected: BTreeSet<u32>,
    /// Read inputs the item was a member of before this ingest.
    member_of: BTreeSet<u32>,
    existing: Option<Existing>,
}

/// What to do for one id: decided from its records and the catalog as it was, then
/// carried out by the thread that holds the write transaction.
enum Plan {
    Nothing,
    /// The item has no new row and left some read manifests.
    Vanished {
        item_id: i64,
        drop: Vec<i64>,
        then: After,
    },
    /// Rows that conflict: the item stays as it was.
    Rejected(Vec<(u32, Rejection)>),
    Write(Box<WritePlan>),
}

enum After {
    /// No manifest lists the item any more.
    Remove,
    /// Its labels are now these.
    Relabel(String),
    Keep,
}

struct WritePlan {
    key: String,
    existing: Option<Existing>,
    labels: String,
    content: ItemContent,
    video_sources: Option<String>,
    cover_sources: Option<String>,
    fingerprint: String,
    /// (manifest id, split, first line, labels) for each manifest that lists the item.
    memberships: Vec<(i64, String, u64, String)>,
    /// Manifests that no longer list it.
    drop: Vec<i64>,
    repeats: u64,
}

/// A batch of plans or the error that stopped planning, sent from the planning thread.
type Planned = Result<Vec<Plan>, MergeError>;

/// Plans sent to the writer at a time (one channel message per item costs more in
/// thread wake-ups than the item's own work).
const BATCH: usize = 512;

impl Merger<'_> {
    /// Merges every id of the sorted stream into the catalog. With `reader` (a WAL
    /// catalog), one thread reads the stream and the catalog's earlier state and plans
    /// each item while this one writes; without, both happen here.
    pub(super) fn run(
        &self,
        tx: &Transaction<'_>,
        reader: Option<&std::path::Path>,
        sorted: Sorted,
        on_reject: &mut dyn FnMut(Rejection),
    ) -> Result<Outcome, MergeError> {
        let mut writes = Writes::new(tx)?;
        let mut outcome = Outcome {
            counts: ItemCounts::default(),
            repeated_rows: 0,
            rejected_per_manifest: BTreeMap::new(),
        };
        let Some(path) = reader else {
            let mut lookups = Lookups::new(tx)?;
            self.plan_all(sorted, &mut lookups, &mut |plan| {
                self.apply(&mut writes, plan, &mut outcome, on_reject)
            })?;
            writes.flush(self.dataset_id, self.now)?;
            return Ok(outcome);
        };
        std::thread::scope(|scope| {
            let (send, receive) = std::sync::mpsc::sync_channel::<Planned>(8);
            let planner = scope.spawn(move || {
                let result = (|| {
                    let conn = Connection::open_with_flags(
                        path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    conn.busy_timeout(std::time::Duration::from_secs(30))?;
                    let mut lookups = Lookups::new(&conn)?;
                    let mut batch = Vec::with_capacity(BATCH);
                    self.plan_all(sorted, &mut lookups, &mut |plan| {
                        batch.push(plan);
                        if batch.len() == BATCH {
                            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                            // The writer stopped (an error): stop planning.
                            send.send(Ok(full)).map_err(|_| MergeError::Stopped)?;
                        }
                        Ok(())
                    })?;
                    if !batch.is_empty() {
                        send.send(Ok(batch)).map_err(|_| MergeError::Stopped)?;
                    }
                    Ok(())
                })();
                if let Err(e) = result {
                    let _ = send.send(Err(e));
                }
            });
            let mut result = Ok(());
            'receive: for planned in receive.iter() {
                match planned {
                    Ok(plans) => {
                        for plan in plans {
                            result = self.apply(&mut writes, plan, &mut outcome, on_reject);
                            if result.is_err() {
                                break 'receive;
                            }
                        }
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            drop(receive);
            planner.join().expect("the planning thread does not panic");
            result
        })?;
        writes.flush(self.dataset_id, self.now)?;
        Ok(outcome)
    }

    /// Groups the stream by id and hands each id's plan to `each`.
    fn plan_all(
        &self,
        mut sorted: Sorted,
        lookups: &mut Lookups<'_>,
        each: &mut dyn FnMut(Plan) -> Result<(), MergeError>,
    ) -> Result<(), MergeError> {
        let mut key: Option<Box<str>> = None;
        let mut group = Group::default();
        while let Some(rec) = sorted.next_record()? {
            if key.as_deref() != Some(&*rec.key) {
                if let Some(done) = key.take() {
                    each(self.plan(lookups, &done, std::mem::take(&mut group))?)?;
                }
                key = Some(rec.key.clone());
            }
            self.add(&mut group, rec)?;
        }
        if let Some(done) = key {
            each(self.plan(lookups, &done, group)?)?;
        }
        Ok(())
    }

    fn add(&self, group: &mut Group, rec: Record) -> std::io::Result<()> {
        // Records of an input found unchanged after reading are ignored.
        if !self.manifest_ids.contains_key(&rec.input) {
            return Ok(());
        }
        match rec.kind {
            Kind::Row => group.rows.push(decode_row(rec.input, &rec.payload)?),
            Kind::Rejected => {
                group.rejected.insert(rec.input);
            }
            Kind::Existing => {
                group.member_of.insert(rec.input);
                if group.existing.is_none() {
                    let mut d = Dec(&rec.payload);
                    group.existing = Some(Existing {
                        id: d.i64()?,
                        fingerprint: d.str()?.to_owned(),
                        labels: d.str()?.to_owned(),
                        removed: d.u8()? == 1,
                    });
                }
            }
        }
        Ok(())
    }

    fn place(&self, s: &Staged) -> String {
        match &s.file {
            Some(f) => f.clone(),
            None => format!(
                "{}:{}",
                self.paths.get(&s.input).map(String::as_str).unwrap_or("?"),
                s.line
            ),
        }
    }

    /// Where the rows and other memberships of an item are, grouped by one field, when
    /// that field does not have the same value everywhere (places are only formatted
    /// then).
    fn places_by<'r>(
        &self,
        rows: &'r [Staged],
        others: &'r [Other],
        of_row: impl Fn(&'r Staged) -> String,
        of_other: impl Fn(&'r Other) -> String,
    ) -> Option<BTreeMap<String, Vec<String>>> {
        let first = rows.first().map(&of_row)?;
        if rows.iter().all(|r| of_row(r) == first) && others.iter().all(|o| of_other(o) == first) {
            return None;
        }
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in rows {
            map.entry(of_row(r)).or_default().push(self.place(r));
        }
        for o in others {
            map.entry(of_other(o))
                .or_default()
                .push(format!("{}:{}", o.path, o.line));
        }
        Some(map)
    }

    /// The item's memberships that this ingest keeps as they are.
    fn others(
        &self,
        lookups: &mut Lookups<'_>,
        item_id: i64,
        replaced: &BTreeSet<u32>,
    ) -> Sql<Vec<Other>> {
        let replaced: Vec<i64> = replaced
            .iter()
            .filter_map(|i| self.manifest_ids.get(i).copied())
            .collect();
        let rows = lookups.memberships.query_map([item_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                Other {
                    split: r.get(1)?,
                    line: r.get::<_, i64>(2)? as u64,
                    labels: r.get(3)?,
                    path: r.get(4)?,
                },
            ))
        })?;
        let mut out = vec![];
        for row in rows {
            let (manifest_id, other) = row?;
            if !replaced.contains(&manifest_id) {
                out.push(other);
            }
        }
        Ok(out)
    }

    /// Decides what one id needs, reading the catalog only through `lookups`.
    fn plan(&self, lookups: &mut Lookups<'_>, key: &str, mut g: Group) -> Result<Plan, MergeError> {
        if g.existing.is_none() && !self.fresh && !g.rows.is_empty() {
            g.existing = lookups
                .item
                .query_row(params![self.dataset_id, key], |r| {
                    Ok(Existing {
                        id: r.get(0)?,
                        labels: r.get(1)?,
                        fingerprint: r.get(2)?,
                        removed: r.get::<_, String>(3)? == "removed",
                    })
                })
                .optional()?;
        }
        let listed: BTreeSet<u32> = g.rows.iter().map(|r| r.input).collect();
        // Read manifests that listed the item before and no longer do.
        let vanished: Vec<u32> = g
            .member_of
            .iter()
            .filter(|i| !listed.contains(i) && !g.rejected.contains(i))
            .copied()
            .collect();
        let drop: Vec<i64> = vanished.iter().map(|i| self.manifest_ids[i]).collect();
        // Memberships replaced by this ingest: those with a new row, and vanished ones.
        let replaced: BTreeSet<u32> = listed.iter().chain(&vanished).copied().collect();
        let others = match &g.existing {
            Some(e) if self.has_unread_manifests || !g.rejected.is_empty() => {
                self.others(lookups, e.id, &replaced)?
            }
            _ => vec![],
        };

        if g.rows.is_empty() {
            // Only rejected rows or vanished memberships.
            let Some(e) = g.existing.filter(|_| !vanished.is_empty()) else {
                return Ok(Plan::Nothing);
            };
            let then = if others.is_empty() && g.rejected.is_empty() {
                After::Remove
            } else {
                let labels = labels_text(
                    others
                        .iter()
                        .flat_map(|o| parse_labels(&o.labels))
                        .collect::<BTreeSet<_>>(),
                );
                if labels != e.labels && g.rejected.is_empty() {
                    After::Relabel(labels)
                } else {
                    After::Keep
                }
            };
            return Ok(Plan::Vanished {
                item_id: e.id,
                drop,
                then,
            });
        }

        // Per input: (split, first line, labels).
        let mut per_input: BTreeMap<u32, (String, u64, BTreeSet<u32>)> = BTreeMap::new();
        let mut conflict: Option<String> = None;
        let mut repeats = 0;
        for s in &g.rows {
            match per_input.get_mut(&s.input) {
                None => {
                    per_input.insert(
                        s.input,
                        (s.split.clone(), s.line, s.labels.iter().copied().collect()),
                    );
                }
                Some((split, _, labels)) => {
                    repeats += 1;
                    if *split != s.split && conflict.is_none() {
                        conflict = Some(format!(
                            "is listed twice in one manifest with splits {split} and {}",
                            s.split
                        ));
                    }
                    labels.extend(s.labels.iter().copied());
                }
            }
        }
        if conflict.is_none()
            && !self.multi_label
            && let Some(by_label) = self.places_by(
                &g.rows,
                &others,
                |s| labels_text(s.labels.iter().copied()),
                |o| o.labels.clone(),
            )
        {
            let parts: Vec<String> = by_label
                .iter()
                .map(|(l, places)| format!("{} ({})", display_labels(l), places.join(", ")))
                .collect();
            conflict = Some(format!("has conflicting labels: {}", parts.join(" vs ")));
        }
        if conflict.is_none()
            && let Some(by_split) = self
                .places_by(&g.rows, &others, |s| s.split.clone(), |o| o.split.clone())
                .filter(|m| m.contains_key("train"))
        {
            let parts: Vec<String> = by_split
                .iter()
                .map(|(s, places)| format!("{s} ({})", places.join(", ")))
                .collect();
            conflict = Some(format!(
                "is in the train split and an evaluation split: {}",
                parts.join(" vs ")
            ));
        }

        // Content: the first row, completed by later rows; sources in order of appearance.
        let mut rows = g.rows.iter();
        let first = rows.next().expect("rows are not empty");
        let mut content = first.content.clone();
        let mut origins: Vec<&'static str> = vec!["manifest"; content.video.len()];
        if conflict.is_none() {
            for s in rows {
                let c = &s.content;
                if let (Some(a), Some(b)) = (&content.sha256, &c.sha256)
                    && a != b
                {
                    conflict = Some(format!(
                        "has two expected sha256 values: {a} ({}) vs {b} ({})",
                        self.place(first),
                        self.place(s)
                    ));
                    break;
                }
                if let (Some(a), Some(b)) = (content.size, c.size)
                    && a != b
                {
                    conflict = Some(format!(
                        "has two expected sizes: {a} ({}) vs {b} ({})",
                        self.place(first),
                        self.place(s)
                    ));
                    break;
                }
                for v in &c.video {
                    if !content.video.contains(v) {
                        content.video.push(v.clone());
                        origins.push("manifest");
                    }
                }
                for v in &c.cover {
                    if !content.cover.contains(v) {
                        content.cover.push(v.clone());
                    }
                }
                content.text = content.text.or_else(|| c.text.clone());
                content.duration_s = content.duration_s.or(c.duration_s);
                content.sha256 = content.sha256.or_else(|| c.sha256.clone());
                content.size = content.size.or(c.size);
            }
        }
        // Files already on a local disk are always tried first.
        if content.video.iter().any(|l| l.kind == SourceKind::Local) {
            let mut pairs: Vec<(Locator, &'static str)> =
                content.video.drain(..).zip(origins.drain(..)).collect();
            pairs.sort_by_key(|(l, _)| l.kind != SourceKind::Local);
            (content.video, origins) = pairs.into_iter().unzip();
        }
        content.cover.sort_by_key(|l| l.kind != SourceKind::Local);
        if conflict.is_none() {
            match self.extra_sources(key) {
                Ok(extra) => {
                    for (loc, origin) in extra {
                        if !content.video.contains(&loc) {
                            content.video.push(loc);
                            origins.push(origin);
                        }
                    }
                }
                Err(e) => conflict = Some(e),
            }
        }
        if let Some(reason) = conflict {
            // The item stays as it was: its memberships, including vanished ones, too.
            let rejections = g
                .rows
                .iter()
                .map(|s| {
                    (
                        s.input,
                        Rejection {
                            file: std::path::PathBuf::from(match &s.file {
                                Some(f) => f.clone(),
                                None => self.paths.get(&s.input).cloned().unwrap_or_default(),
                            }),
                            line: if s.file.is_some() { 1 } else { s.line },
                            id: Some(key.to_owned()),
                            reason: format!("id '{key}' {reason}"),
                        },
                    )
                })
                .collect();
            return Ok(Plan::Rejected(rejections));
        }

        let mut labels: BTreeSet<u32> = BTreeSet::new();
        for (_, _, l) in per_input.values() {
            labels.extend(l);
        }
        for o in &others {
            labels.extend(parse_labels(&o.labels));
        }
        Ok(Plan::Write(Box::new(WritePlan {
            key: key.to_owned(),
            existing: g.existing,
            labels: labels_text(labels),
            fingerprint: fingerprint(&content, &origins),
            video_sources: sources_json(&content.video, &origins),
            cover_sources: sources_json(&content.cover, &[]),
            content,
            memberships: per_input
                .into_iter()
                .map(|(input, (split, line, labels))| {
                    (self.manifest_ids[&input], split, line, labels_text(labels))
                })
                .collect(),
            drop,
            repeats,
        })))
    }

    /// Carries out one plan inside the write transaction.
    fn apply(
        &self,
        w: &mut Writes<'_>,
        plan: Plan,
        outcome: &mut Outcome,
        on_reject: &mut dyn FnMut(Rejection),
    ) -> Result<(), MergeError> {
        match plan {
            Plan::Nothing => {}
            Plan::Vanished {
                item_id,
                drop,
                then,
            } => {
                for manifest_id in drop {
                    w.delete_membership.execute(params![item_id, manifest_id])?;
                }
                match then {
                    After::Remove => {
                        outcome.counts.removed +=
                            w.mark_removed.execute(params![item_id, self.now])? as u64;
                    }
                    After::Relabel(labels) => {
                        w.update_labels
                            .execute(params![item_id, labels, self.now])?;
                        outcome.counts.updated += 1;
                    }
                    After::Keep => {}
                }
            }
            Plan::Rejected(rejections) => {
                for (input, r) in rejections {
                    *outcome.rejected_per_manifest.entry(input).or_default() += 1;
                    on_reject(r);
                }
            }
            Plan::Write(p) => {
                outcome.repeated_rows += p.repeats;
                let Some(e) = &p.existing else {
                    outcome.counts.new += 1;
                    w.queue_new(self.dataset_id, self.now, p)?;
                    return Ok(());
                };
                let c = &p.content;
                let content_changed = e.fingerprint != p.fingerprint;
                let labels_changed = e.labels != p.labels;
                if content_changed {
                    w.update_item.execute(params![
                        e.id,
                        p.labels,
                        c.text,
                        c.duration_s,
                        p.video_sources,
                        p.cover_sources,
                        c.size.map(|s| s as i64),
                        c.sha256,
                        p.fingerprint,
                        self.now
                    ])?;
                } else if labels_changed || e.removed {
                    w.update_labels.execute(params![e.id, p.labels, self.now])?;
                }
                if e.removed {
                    outcome.counts.restored += 1;
                } else if content_changed || labels_changed {
                    outcome.counts.updated += 1;
                } else {
                    outcome.counts.unchanged += 1;
                }
                for manifest_id in &p.drop {
                    w.delete_membership.execute(params![e.id, manifest_id])?;
                }
                for (manifest_id, split, line, labels) in &p.memberships {
                    w.upsert_membership.execute(params![
                        e.id,
                        manifest_id,
                        split,
                        *line as i64,
                        labels
                    ])?;
                }
            }
        }
        Ok(())
    }

    fn extra_sources(&self, key: &str) -> Result<Vec<(Locator, &'static str)>, String> {
        let mut out = vec![];
        if let Some(list) = self.links.and_then(|l| l.by_id.get(key)) {
            out.extend(list.iter().cloned().map(|l| (l, "links")));
        }
        if let Some(t) = self.template {
            let id = ItemId::parse(key).map_err(|e| e.to_string())?;
            let loc = t
                .expand(&id)
                .map_err(|e| format!("gives an invalid URL with --url-template: {e}"))?;
            out.push((loc, "template"));
        }
        Ok(out)
    }
}

/// The JSON kept in `items.video_sources` / `cover_sources`; `None` for no source.
/// Origins default to `manifest` where `origins` is shorter than the list. Written by
/// hand: this runs once per item and serde_json's `Value` cost more than the insert.
fn sources_json(list: &[Locator], origins: &[&'static str]) -> Option<String> {
    if list.is_empty() {
        return None;
    }
    let mut out =
        String::with_capacity(64 + list.iter().map(|l| l.location.len() + 48).sum::<usize>());
    out.push('[');
    for (i, l) in list.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"kind\":\"");
        out.push_str(l.kind.as_str());
        out.push_str("\",\"location\":");
        json_string(&mut out, &l.location);
        out.push_str(",\"origin\":\"");
        out.push_str(origins.get(i).copied().unwrap_or("manifest"));
        out.push_str("\"}");
    }
    out.push(']');
    Some(out)
}

/// Appends `s` as a JSON string literal.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(s); // URLs and ordinary paths: nothing to escape
    } else {
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
    }
    out.push('"');
}

fn display_labels(l: &str) -> String {
    if l.is_empty() {
        "no label".into()
    } else {
        format!("label {l}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Split;

    #[test]
    fn sources_json_is_valid_json() {
        let list = vec![
            Locator {
                kind: SourceKind::Local,
                location: "/data/a \"quoted\" \\ path\u{1}.mp4".into(),
            },
            Locator {
                kind: SourceKind::Douyin,
                location: "https://v.douyin.com/x/".into(),
            },
        ];
        let text = sources_json(&list, &["manifest", "links"]).unwrap();
        // status reads the first kind by this prefix without parsing the JSON.
        assert!(text.starts_with("[{\"kind\":\"local\""), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v[0]["location"], "/data/a \"quoted\" \\ path\u{1}.mp4");
        assert_eq!(v[1]["kind"], "douyin");
        assert_eq!(v[1]["origin"], "links");
        assert_eq!(sources_json(&[], &[]), None);
    }

    #[test]
    fn rows_round_trip_through_the_sort_encoding() {
        let row = Row {
            line: 42,
            file: Some("/t/Sea/1/1.txt".into()),
            id: ItemId::parse("1").unwrap(),
            split: Split::parse("val").unwrap(),
            labels: vec![3, 17],
            content: ItemContent {
                text: Some("城市 航拍".into()),
                duration_s: Some(15.5),
                video: vec![
                    Locator {
                        kind: SourceKind::Local,
                        location: "/t/Sea/1/1.mp4".into(),
                    },
                    Locator {
                        kind: SourceKind::Direct,
                        location: "https://p5-v1.xpccdn.com/000000001_main_xl.mp4".into(),
                    },
                ],
                cover: vec![Locator {
                    kind: SourceKind::Direct,
                    location: "https://p5-i1.xpccdn.com/000000001_iconl.jpeg".into(),
                }],
                sha256: Some("ab".repeat(32)),
                size: Some(1234),
            },
        };
        let s = decode_row(5, &encode_row(&row)).unwrap();
        assert_eq!(s.input, 5);
        assert_eq!(s.line, 42);
        assert_eq!(s.file.as_deref(), Some("/t/Sea/1/1.txt"));
        assert_eq!(s.split, "val");
        assert_eq!(s.labels, vec![3, 17]);
        assert_eq!(s.content, row.content);
        assert!(decode_row(0, &encode_row(&row)[..10]).is_err());
    }
}
