//! The planning half of ingest's merge: the sorted stream of rows and markers becomes,
//! one id at a time, a plan for its item, memberships and sources, which the catalog's
//! item writer carries out.
//!
//! Everything here runs inside the ingest transaction, except [`push_members`], which
//! reads the catalog before it starts. Memory holds one id's records, never the manifest.
//! It writes no SQL: reads go through [`ItemLookups`], writes through [`ItemWriter`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::sort::{Dec, Enc, Kind, Record, Sorted, Sorter};
use super::{IngestError, ItemCounts, SpillError, fingerprint};
use crate::manifest::{ItemContent, ItemId, Links, Locator, Rejection, Row, UrlTemplate};
use crate::source::SourceKind;
use pmv_catalog::{
    Catalog, CatalogError, IngestTx, ItemLookups, ItemReader, ItemRow, ItemState, ItemWriter,
    Membership, MembershipRow,
};

#[derive(Debug)]
pub(super) enum MergeError {
    Catalog(CatalogError),
    Io(std::io::Error),
    /// The writing thread stopped on an error of its own (reported by it).
    Stopped,
}

impl From<CatalogError> for MergeError {
    fn from(e: CatalogError) -> Self {
        MergeError::Catalog(e)
    }
}

impl From<std::io::Error> for MergeError {
    fn from(e: std::io::Error) -> Self {
        MergeError::Io(e)
    }
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
    catalog.for_each_member(dataset_id, path, |m| -> Result<(), IngestError> {
        let mut enc = Enc::default();
        enc.i64(m.item.id)
            .str(&m.item.fingerprint)
            .str(&m.item.labels)
            .u8(m.item.removed as u8);
        sorter
            .push(&m.key, input, Kind::Existing, enc.0)
            .map_err(|source| SpillError {
                dir: spill_dir.to_owned(),
                source,
            })?;
        Ok(())
    })
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
type Existing = ItemState;

/// A membership this ingest does not replace: in a manifest not read now, or whose row
/// was rejected this time.
type Other = Membership;

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
    existing: Option<Existing>,
    /// The item's columns as they are to be.
    item: ItemRow,
    /// Each manifest that lists the item, with its split, first line and labels there.
    memberships: Vec<MembershipRow>,
    /// Manifests that no longer list it.
    drop: Vec<i64>,
    repeats: u64,
}

/// Per input that lists an item: its split, first line and labels there.
type PerInput = BTreeMap<u32, (String, u64, BTreeSet<u32>)>;

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
        tx: &IngestTx<'_>,
        reader: Option<&std::path::Path>,
        sorted: Sorted,
        on_reject: &mut dyn FnMut(Rejection),
    ) -> Result<Outcome, MergeError> {
        let mut writes = tx.item_writer(self.dataset_id, self.now)?;
        let mut outcome = Outcome {
            counts: ItemCounts::default(),
            repeated_rows: 0,
            rejected_per_manifest: BTreeMap::new(),
        };
        let Some(path) = reader else {
            let mut lookups = tx.lookups()?;
            self.plan_all(sorted, &mut lookups, &mut |plan| {
                self.apply(&mut writes, plan, &mut outcome, on_reject)
            })?;
            writes.flush()?;
            return Ok(outcome);
        };
        self.run_beside(path, sorted, &mut writes, &mut outcome, on_reject)?;
        writes.flush()?;
        Ok(outcome)
    }

    /// Plans on a second thread, which reads the catalog at `path` through a
    /// connection of its own, while this thread applies the plans.
    fn run_beside(
        &self,
        path: &std::path::Path,
        sorted: Sorted,
        writes: &mut ItemWriter<'_>,
        outcome: &mut Outcome,
        on_reject: &mut dyn FnMut(Rejection),
    ) -> Result<(), MergeError> {
        std::thread::scope(|scope| {
            let (send, receive) = std::sync::mpsc::sync_channel::<Planned>(8);
            let planner = scope.spawn(move || {
                let result = (|| {
                    let conn = ItemReader::open(path)?;
                    let mut lookups = conn.lookups()?;
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
                            result = self.apply(writes, plan, outcome, on_reject);
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
        })
    }

    /// Groups the stream by id and hands each id's plan to `each`.
    fn plan_all(
        &self,
        mut sorted: Sorted,
        lookups: &mut ItemLookups<'_>,
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
        lookups: &mut ItemLookups<'_>,
        item_id: i64,
        replaced: &BTreeSet<u32>,
    ) -> Result<Vec<Other>, CatalogError> {
        let replaced: Vec<i64> = replaced
            .iter()
            .filter_map(|i| self.manifest_ids.get(i).copied())
            .collect();
        lookups.memberships(item_id, &replaced)
    }

    /// Decides what one id needs, reading the catalog only through `lookups`.
    fn plan(
        &self,
        lookups: &mut ItemLookups<'_>,
        key: &str,
        mut g: Group,
    ) -> Result<Plan, MergeError> {
        if g.existing.is_none() && !self.fresh && !g.rows.is_empty() {
            g.existing = lookups.item(self.dataset_id, key)?;
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
            return Ok(plan_vanished(g, &vanished, drop, &others));
        }

        let (per_input, repeats, mut conflict) = self.per_input(&g.rows, &others);
        let (content, origins) = self.content(key, &g.rows, &mut conflict);
        if let Some(reason) = conflict {
            // The item stays as it was: its memberships, including vanished ones, too.
            return Ok(Plan::Rejected(self.rejections(key, &g.rows, &reason)));
        }

        let mut labels: BTreeSet<u32> = BTreeSet::new();
        for (_, _, l) in per_input.values() {
            labels.extend(l);
        }
        for o in &others {
            labels.extend(parse_labels(&o.labels));
        }
        Ok(Plan::Write(Box::new(WritePlan {
            existing: g.existing,
            item: ItemRow {
                key: key.to_owned(),
                labels: labels_text(labels),
                fingerprint: fingerprint(&content, &origins),
                video_sources: sources_json(&content.video, &origins),
                cover_sources: sources_json(&content.cover, &[]),
                text: content.text,
                duration_s: content.duration_s,
                expected_size: content.size,
                expected_sha256: content.sha256,
            },
            memberships: per_input
                .into_iter()
                .map(|(input, (split, line, labels))| MembershipRow {
                    manifest_id: self.manifest_ids[&input],
                    split,
                    line,
                    labels: labels_text(labels),
                })
                .collect(),
            drop,
            repeats,
        })))
    }

    /// Per input: (split, first line, labels); the number of repeated rows; and the
    /// first conflict between the rows and the other memberships (split or labels).
    fn per_input(&self, rows: &[Staged], others: &[Other]) -> (PerInput, u64, Option<String>) {
        let mut per_input = PerInput::new();
        let mut conflict: Option<String> = None;
        let mut repeats = 0;
        for s in rows {
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
                rows,
                others,
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
                .places_by(rows, others, |s| s.split.clone(), |o| o.split.clone())
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
        (per_input, repeats, conflict)
    }

    /// The item's content and the origin of each video source: the first row,
    /// completed by later rows (unless there is a conflict already); sources in order
    /// of appearance, local ones first, then those of links and the URL template. A
    /// conflict found on the way is left in `conflict`.
    fn content(
        &self,
        key: &str,
        rows: &[Staged],
        conflict: &mut Option<String>,
    ) -> (ItemContent, Vec<&'static str>) {
        let mut rows = rows.iter();
        let first = rows.next().expect("rows are not empty");
        let mut content = first.content.clone();
        let mut origins: Vec<&'static str> = vec!["manifest"; content.video.len()];
        if conflict.is_none() {
            for s in rows {
                let c = &s.content;
                if let (Some(a), Some(b)) = (&content.sha256, &c.sha256)
                    && a != b
                {
                    *conflict = Some(format!(
                        "has two expected sha256 values: {a} ({}) vs {b} ({})",
                        self.place(first),
                        self.place(s)
                    ));
                    break;
                }
                if let (Some(a), Some(b)) = (content.size, c.size)
                    && a != b
                {
                    *conflict = Some(format!(
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
                Err(e) => *conflict = Some(e),
            }
        }
        (content, origins)
    }

    /// Every row of an item in conflict, rejected for `reason`, with its input.
    fn rejections(&self, key: &str, rows: &[Staged], reason: &str) -> Vec<(u32, Rejection)> {
        rows.iter()
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
            .collect()
    }

    /// Carries out one plan inside the write transaction.
    fn apply(
        &self,
        w: &mut ItemWriter<'_>,
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
                    w.delete_membership(item_id, manifest_id)?;
                }
                match then {
                    After::Remove => {
                        outcome.counts.removed += w.mark_removed(item_id)? as u64;
                    }
                    After::Relabel(labels) => {
                        w.relabel(item_id, &labels)?;
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
            Plan::Write(p) => apply_write(w, *p, outcome)?,
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

/// The plan for an item that has no new row: only rejected rows or vanished
/// memberships.
fn plan_vanished(g: Group, vanished: &[u32], drop: Vec<i64>, others: &[Other]) -> Plan {
    let Some(e) = g.existing.filter(|_| !vanished.is_empty()) else {
        return Plan::Nothing;
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
    Plan::Vanished {
        item_id: e.id,
        drop,
        then,
    }
}

/// Writes a new item or updates an existing one, and its memberships.
fn apply_write(
    w: &mut ItemWriter<'_>,
    p: WritePlan,
    outcome: &mut Outcome,
) -> Result<(), MergeError> {
    outcome.repeated_rows += p.repeats;
    let Some(e) = &p.existing else {
        outcome.counts.new += 1;
        w.insert(p.item, p.memberships)?;
        return Ok(());
    };
    let content_changed = e.fingerprint != p.item.fingerprint;
    let labels_changed = e.labels != p.item.labels;
    if content_changed {
        w.update(e.id, &p.item)?;
    } else if labels_changed || e.removed {
        w.relabel(e.id, &p.item.labels)?;
    }
    if e.removed {
        outcome.counts.restored += 1;
    } else if content_changed || labels_changed {
        outcome.counts.updated += 1;
    } else {
        outcome.counts.unchanged += 1;
    }
    for manifest_id in &p.drop {
        w.delete_membership(e.id, *manifest_id)?;
    }
    for m in &p.memberships {
        w.upsert_membership(e.id, m)?;
    }
    Ok(())
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
