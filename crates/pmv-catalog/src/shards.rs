//! The shard tables: recipes, shards, the member index of their samples and the probes
//! of the videos they were decoded from, plus what there is left to shard.
//!
//! Owns every statement on `recipes`, `shards`, `samples` and `probes`, and the reads of
//! items, memberships and files that plan the shard stage's work. The shard stage and the
//! trainer both read the live shards through [`Catalog::live_shards`], which checks that
//! the samples recorded for a shard are as many as the shard says it holds. A shard's
//! member index is stored as JSON whose type (`pmv_shard::SampleIndex`) the caller names;
//! this module never parses a shard, never touches files and never decides what a sample
//! holds.

use std::collections::{BTreeSet, HashMap, HashSet};

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use pmv_core::frame_recipe::FrameRecipe;
use pmv_core::util::now_unix;

use crate::{Catalog, CatalogError, Result, Tx};

/// A recipe as the catalog records it.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameRecipeRow {
    pub id: String,
    /// The first name given to the id.
    pub name: String,
    /// The parameters as canonical JSON.
    pub params: String,
}

/// A live or replaced shard as the catalog records it.
#[derive(Debug, Clone)]
pub struct ShardRow {
    pub id: i64,
    pub dataset_id: i64,
    pub dataset: String,
    pub recipe_id: String,
    pub split: String,
    pub seq: i64,
    /// Relative to the data root.
    pub path: String,
    pub sha256: String,
    pub bytes: i64,
    pub samples: i64,
    pub state: String,
}

/// A shard with the member index of each of its samples, in sample order; as many as
/// [`ShardRow::samples`] (checked when read).
#[derive(Debug, Clone)]
pub struct IndexedShard<M> {
    pub row: ShardRow,
    pub index: Vec<M>,
}

/// An item's video (and cover) as the shard stage decodes it.
#[derive(Debug, Clone)]
pub struct ShardVideo {
    pub item_id: i64,
    pub key: String,
    /// Ascending class ids.
    pub labels: Vec<u32>,
    pub text: Option<String>,
    /// The item's video sources as JSON (the `video_sources` column).
    pub sources: Option<String>,
    /// The rank in [`ShardVideo::sources`] of the source the video came from.
    pub source_rank: Option<i64>,
    /// The video, relative to the data root.
    pub video: String,
    pub sha256: Option<String>,
    pub size: Option<i64>,
    /// The cover, relative to the data root.
    pub cover: Option<String>,
}

/// A video that still lacks a sample of a recipe, and the splits it needs one in.
#[derive(Debug, Clone)]
pub struct UnshardedVideo {
    pub video: ShardVideo,
    /// In name order.
    pub splits: Vec<String>,
}

/// The videos of a shard's samples, in sample order.
#[derive(Debug, Clone, Default)]
pub struct ShardVideos {
    /// Those whose video is verified or sharded.
    pub usable: Vec<ShardVideo>,
    /// (item key, video state; `None` when no video is stored) of the others.
    pub unavailable: Vec<(String, Option<String>)>,
}

/// A sealed shard to record.
#[derive(Debug, Clone)]
pub struct NewShard<'a> {
    pub dataset_id: i64,
    pub recipe_id: &'a str,
    pub split: &'a str,
    pub seq: i64,
    /// Relative to the data root.
    pub path: &'a str,
    pub sha256: &'a str,
    pub bytes: u64,
    pub samples: usize,
}

/// One sample of a shard to record, `ordinal` being its position in the shard.
#[derive(Debug, Clone)]
pub struct NewSample<'a, M> {
    pub item_id: i64,
    pub label: Option<u32>,
    pub frames_offset: u64,
    pub frames_bytes: u64,
    /// Where the sample's members lie (stored as JSON).
    pub members: &'a M,
}

/// What the media layer saw in a video, as the `probes` table records it.
#[derive(Debug, Clone)]
pub struct ProbeRecord<'a> {
    pub container: &'a str,
    pub codec: &'a str,
    pub width: u32,
    pub height: u32,
    pub rotation: u32,
    pub sar: &'a str,
    pub avg_fps: Option<f64>,
    pub real_fps: Option<f64>,
    pub duration_s: f64,
    pub frames: u64,
    pub vfr: bool,
}

/// Class ids as the `labels` column of `items` stores them (`3,17`).
pub fn parse_labels(text: &str) -> Vec<u32> {
    text.split(',').filter_map(|s| s.parse().ok()).collect()
}

const SHARD_COLUMNS: &str = "s.id, s.dataset_id, d.name, s.recipe_id, s.split, s.seq, s.path, \
     s.sha256, s.bytes, s.samples, s.state";

fn shard_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ShardRow> {
    Ok(ShardRow {
        id: r.get(0)?,
        dataset_id: r.get(1)?,
        dataset: r.get(2)?,
        recipe_id: r.get(3)?,
        split: r.get(4)?,
        seq: r.get(5)?,
        path: r.get(6)?,
        sha256: r.get(7)?,
        bytes: r.get(8)?,
        samples: r.get(9)?,
        state: r.get(10)?,
    })
}

fn recipe_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FrameRecipeRow> {
    Ok(FrameRecipeRow {
        id: r.get(0)?,
        name: r.get(1)?,
        params: r.get(2)?,
    })
}

impl Catalog {
    /// Records the recipe (the first name given to an id stays its name) and returns it
    /// as stored.
    pub fn register_recipe(&self, recipe: &FrameRecipe) -> Result<FrameRecipe> {
        let id = recipe.id();
        self.conn
            .execute(
                "INSERT INTO recipes (id, name, params, created_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (id) DO NOTHING",
                params![id, recipe.name, recipe.params.canonical_json(), now_unix()],
            )
            .map_err(|e| self.sql(e))?;
        let name: String = self
            .conn
            .query_row("SELECT name FROM recipes WHERE id = ?1", [&id], |r| {
                r.get(0)
            })
            .map_err(|e| self.sql(e))?;
        Ok(FrameRecipe {
            name,
            params: recipe.params.clone(),
        })
    }

    /// The recipe stored under `id`.
    pub fn recipe(&self, id: &str) -> Result<Option<FrameRecipeRow>> {
        self.conn
            .query_row(
                "SELECT id, name, params FROM recipes WHERE id = ?1",
                [id],
                recipe_from_row,
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// A recipe named `id_or_name` by its id or its name (the first such when several
    /// recipes share a name).
    pub fn recipe_by_id_or_name(&self, id_or_name: &str) -> Result<Option<FrameRecipeRow>> {
        self.conn
            .query_row(
                "SELECT id, name, params FROM recipes WHERE id = ?1 OR name = ?1",
                [id_or_name],
                recipe_from_row,
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// The recipes a dataset has live shards of, by name then id.
    pub fn recipes_with_live_shards(&self, dataset_id: i64) -> Result<Vec<FrameRecipeRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT DISTINCT r.id, r.name, r.params FROM recipes r JOIN shards s ON s.recipe_id = r.id \
                 WHERE s.dataset_id = ?1 AND s.state = 'live' ORDER BY r.name, r.id",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([dataset_id], recipe_from_row)
            .map_err(|e| self.sql(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sql(e))
    }

    /// Shard `shard_id`, live or replaced.
    pub fn shard(&self, shard_id: i64) -> Result<Option<ShardRow>> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {SHARD_COLUMNS} FROM shards s JOIN datasets d ON d.id = s.dataset_id \
                     WHERE s.id = ?1"
                ),
                [shard_id],
                shard_from_row,
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// Shard `shard_id` with its member index (checked against its sample count).
    pub fn indexed_shard<M: DeserializeOwned>(
        &self,
        shard_id: i64,
    ) -> Result<Option<IndexedShard<M>>> {
        match self.shard(shard_id)? {
            Some(row) => self.with_index(row).map(Some),
            None => Ok(None),
        }
    }

    /// The shard recorded at `path` (relative to the data root, whatever its state),
    /// with its member index (checked against its sample count).
    pub fn indexed_shard_at<M: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<IndexedShard<M>>> {
        let row = self
            .conn
            .query_row(
                &format!(
                    "SELECT {SHARD_COLUMNS} FROM shards s JOIN datasets d ON d.id = s.dataset_id \
                     WHERE s.path = ?1"
                ),
                [path],
                shard_from_row,
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        match row {
            Some(row) => self.with_index(row).map(Some),
            None => Ok(None),
        }
    }

    /// The id of the latest recipe stored under `name`, if any.
    pub fn recipe_id_named(&self, name: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT id FROM recipes WHERE name = ?1 ORDER BY created_at DESC LIMIT 1",
                [name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// The live shards of a dataset, of every recipe, whose id is `index` modulo
    /// `parts`, by id: the slice a refresh re-hashes.
    pub fn live_shards_slice(
        &self,
        dataset_id: i64,
        parts: i64,
        index: i64,
    ) -> Result<Vec<ShardRow>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {SHARD_COLUMNS} FROM shards s JOIN datasets d ON d.id = s.dataset_id \
                 WHERE s.dataset_id = ?1 AND s.state = 'live' AND s.id % ?2 = ?3 ORDER BY s.id"
            ))
            .map_err(|e| self.sql(e))?;
        stmt.query_map(params![dataset_id, parts, index], shard_from_row)
            .map_err(|e| self.sql(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.sql(e))
    }

    /// The live shards of a dataset and recipe (one split, or all), in split and
    /// sequence order, each with its member index: what a reader of the dataset should
    /// read. A shard whose recorded samples are not as many as it holds is an error.
    pub fn live_shards<M: DeserializeOwned>(
        &self,
        dataset_id: i64,
        recipe_id: &str,
        split: Option<&str>,
    ) -> Result<Vec<IndexedShard<M>>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {SHARD_COLUMNS} FROM shards s JOIN datasets d ON d.id = s.dataset_id \
                 WHERE s.dataset_id = ?1 AND s.recipe_id = ?2 AND s.state = 'live' \
                   AND (?3 IS NULL OR s.split = ?3) ORDER BY s.split, s.seq"
            ))
            .map_err(|e| self.sql(e))?;
        let rows: Vec<ShardRow> = stmt
            .query_map(params![dataset_id, recipe_id, split], shard_from_row)
            .map_err(|e| self.sql(e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sql(e))?;
        rows.into_iter().map(|row| self.with_index(row)).collect()
    }

    /// The live shards of a dataset and recipe, in split and sequence order, without
    /// their member index: what a split's shard index lists. A shard whose sample rows
    /// are not as many as it says it holds is an error naming it.
    pub fn live_shard_rows(&self, dataset_id: i64, recipe_id: &str) -> Result<Vec<ShardRow>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {SHARD_COLUMNS}, \
                   (SELECT count(*) FROM samples x WHERE x.shard_id = s.id) \
                 FROM shards s JOIN datasets d ON d.id = s.dataset_id \
                 WHERE s.dataset_id = ?1 AND s.recipe_id = ?2 AND s.state = 'live' \
                 ORDER BY s.split, s.seq"
            ))
            .map_err(|e| self.sql(e))?;
        let rows: Vec<(ShardRow, i64)> = stmt
            .query_map(params![dataset_id, recipe_id], |r| {
                Ok((shard_from_row(r)?, r.get(11)?))
            })
            .map_err(|e| self.sql(e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sql(e))?;
        rows.into_iter()
            .map(|(row, recorded)| {
                if recorded == row.samples {
                    Ok(row)
                } else {
                    Err(self.invalid(format!(
                        "shard {} ({}): {recorded} samples recorded, {} expected",
                        row.id, row.path, row.samples
                    )))
                }
            })
            .collect()
    }

    /// How many samples of each label the live shards of a dataset and recipe hold,
    /// per split: `(split, label, samples)` by split then label (`None`, samples of
    /// items without a label, first). A sample's label is its item's first class id
    /// (the one its `.cls` member holds).
    pub fn live_label_counts(
        &self,
        dataset_id: i64,
        recipe_id: &str,
    ) -> Result<Vec<(String, Option<u32>, i64)>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT s.split, x.label, count(*) FROM samples x \
                 JOIN shards s ON s.id = x.shard_id \
                 WHERE s.dataset_id = ?1 AND s.recipe_id = ?2 AND s.state = 'live' \
                 GROUP BY s.split, x.label ORDER BY s.split, x.label",
            )
            .map_err(|e| self.sql(e))?;
        stmt.query_map(params![dataset_id, recipe_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .map_err(|e| self.sql(e))?
        .collect::<rusqlite::Result<_>>()
        .map_err(|e| self.sql(e))
    }

    /// Reads the member index of `row`'s samples in sample order and checks that there
    /// are as many as the shard holds.
    fn with_index<M: DeserializeOwned>(&self, row: ShardRow) -> Result<IndexedShard<M>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT ordinal, members FROM samples WHERE shard_id = ?1 ORDER BY ordinal",
            )
            .map_err(|e| self.sql(e))?;
        let members: Vec<(i64, String)> = stmt
            .query_map([row.id], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.sql(e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sql(e))?;
        let index = members
            .into_iter()
            .map(|(ordinal, json)| {
                serde_json::from_str(&json).map_err(|e| {
                    self.invalid(format!(
                        "shard {} ({}): sample {ordinal}: bad member index: {e}",
                        row.id, row.path
                    ))
                })
            })
            .collect::<Result<Vec<M>>>()?;
        if index.len() as i64 != row.samples {
            return Err(self.invalid(format!(
                "shard {} ({}): {} samples recorded, {} expected",
                row.id,
                row.path,
                index.len(),
                row.samples
            )));
        }
        Ok(IndexedShard { row, index })
    }

    /// The paths of every shard recorded under the directory `dir` (relative to the
    /// data root), live or replaced.
    pub fn shard_paths_under(&self, dir: &str) -> Result<HashSet<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT path FROM shards WHERE path LIKE ?1 ESCAPE '\\'")
            .map_err(|e| self.sql(e))?;
        let pattern = format!(
            "{}/%",
            dir.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let rows = stmt
            .query_map([pattern], |r| r.get::<_, String>(0))
            .map_err(|e| self.sql(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sql(e))
    }

    /// The sequence number the next shard of a dataset, recipe and split takes.
    pub fn next_shard_seq(&self, dataset_id: i64, recipe_id: &str, split: &str) -> Result<i64> {
        self.conn
            .query_row(
                "SELECT coalesce(max(seq) + 1, 0) FROM shards \
                 WHERE dataset_id = ?1 AND recipe_id = ?2 AND split = ?3",
                params![dataset_id, recipe_id, split],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))
    }

    /// Every active item of `dataset_id` whose video is verified (or already sharded by
    /// another recipe) and that lacks a sample of `recipe_id` in one of its splits (only
    /// `splits`, when given), in no particular order.
    pub fn unsharded_videos(
        &self,
        dataset_id: i64,
        recipe_id: &str,
        splits: &[String],
    ) -> Result<Vec<UnshardedVideo>> {
        let conn = &self.conn;
        let sql = |e| self.sql(e);
        let mut item_splits: HashMap<i64, BTreeSet<String>> = HashMap::new();
        {
            let mut stmt = conn
                .prepare(
                    "SELECT m.item_id, m.split FROM memberships m JOIN items i ON i.id = m.item_id \
                     WHERE i.dataset_id = ?1 AND i.state = 'active'",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map([dataset_id], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(sql)?;
            for row in rows {
                let (item, split) = row.map_err(sql)?;
                if splits.is_empty() || splits.contains(&split) {
                    item_splits.entry(item).or_default().insert(split);
                }
            }
        }
        let mut done: HashSet<(i64, String)> = HashSet::new();
        {
            let mut stmt = conn
                .prepare(
                    "SELECT s.item_id, sh.split FROM samples s JOIN shards sh ON sh.id = s.shard_id \
                     WHERE sh.dataset_id = ?1 AND sh.recipe_id = ?2 AND sh.state = 'live'",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![dataset_id, recipe_id], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(sql)?;
            for row in rows {
                done.insert(row.map_err(sql)?);
            }
        }
        let mut stmt = conn
            .prepare(
                "SELECT i.id, i.key, i.labels, i.text, i.video_sources, f.path, f.sha256, f.size, \
                   f.source_rank, c.path \
                 FROM items i \
                 JOIN files f ON f.item_id = i.id AND f.role = 'video' \
                   AND (f.state = 'verified' OR f.state = 'sharded') \
                 LEFT JOIN files c ON c.item_id = i.id AND c.role = 'cover' \
                   AND (c.state = 'verified' OR c.state = 'sharded') \
                 WHERE i.dataset_id = ?1 AND i.state = 'active' AND f.path IS NOT NULL",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map([dataset_id], |r| {
                Ok(ShardVideo {
                    item_id: r.get(0)?,
                    key: r.get(1)?,
                    labels: parse_labels(&r.get::<_, String>(2)?),
                    text: r.get(3)?,
                    sources: r.get(4)?,
                    video: r.get(5)?,
                    sha256: r.get(6)?,
                    size: r.get(7)?,
                    source_rank: r.get(8)?,
                    cover: r.get(9)?,
                })
            })
            .map_err(sql)?;
        let mut out = Vec::new();
        for row in rows {
            let video = row.map_err(sql)?;
            let Some(all) = item_splits.get(&video.item_id) else {
                continue;
            };
            let splits: Vec<String> = all
                .iter()
                .filter(|s| !done.contains(&(video.item_id, (*s).clone())))
                .cloned()
                .collect();
            if splits.is_empty() {
                continue;
            }
            out.push(UnshardedVideo { video, splits });
        }
        Ok(out)
    }

    /// The items of a shard in sample order, with their videos; items whose video is no
    /// longer verified or sharded are listed apart.
    pub fn shard_videos(&self, shard_id: i64) -> Result<ShardVideos> {
        let sql = |e| self.sql(e);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT i.id, i.key, i.labels, i.text, i.video_sources, f.path, f.sha256, f.size, \
                   f.source_rank, c.path, f.state \
                 FROM samples s JOIN items i ON i.id = s.item_id \
                 LEFT JOIN files f ON f.item_id = i.id AND f.role = 'video' \
                 LEFT JOIN files c ON c.item_id = i.id AND c.role = 'cover' \
                   AND (c.state = 'verified' OR c.state = 'sharded') \
                 WHERE s.shard_id = ?1 ORDER BY s.ordinal",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map([shard_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                    r.get::<_, Option<String>>(9)?,
                    r.get::<_, Option<String>>(10)?,
                ))
            })
            .map_err(sql)?;
        let mut out = ShardVideos::default();
        for row in rows {
            let (item_id, key, labels, text, sources, video, sha, size, rank, cover, state) =
                row.map_err(sql)?;
            let usable = matches!(state.as_deref(), Some("verified") | Some("sharded"));
            let Some(video) = video.filter(|_| usable) else {
                out.unavailable.push((key, state));
                continue;
            };
            out.usable.push(ShardVideo {
                item_id,
                key,
                labels: parse_labels(&labels),
                text,
                sources,
                source_rank: rank,
                video,
                sha256: sha,
                size,
                cover,
            });
        }
        Ok(out)
    }

    /// Starts the transaction that records a sealed shard; nothing is recorded unless
    /// [`ShardCommit::commit`] is called.
    pub fn begin_shard_commit(&mut self) -> Result<ShardCommit<'_>> {
        Ok(ShardCommit {
            tx: self.begin(TransactionBehavior::Deferred)?,
        })
    }
}

/// The transaction recording one shard: its row, its samples, the probes of its videos
/// and (for a rebuild) the shard it replaces.
pub struct ShardCommit<'c> {
    tx: Tx<'c>,
}

impl ShardCommit<'_> {
    fn sql(&self, source: rusqlite::Error) -> CatalogError {
        self.tx.sql(source)
    }

    /// Marks the verified video of `item_id` sharded, in this transaction (the files
    /// table's `verified → sharded` transition, see `files`).
    pub fn mark_sharded(&self, item_id: i64, now: i64) -> Result<()> {
        crate::files::mark_sharded(&self.tx, item_id, now).map_err(|e| self.sql(e))
    }

    /// Records the shard `live`, created at `now`; returns its id.
    pub fn insert_shard(&self, shard: &NewShard<'_>, now: i64) -> Result<i64> {
        self.tx
            .query_row(
                "INSERT INTO shards (dataset_id, recipe_id, split, seq, path, sha256, bytes, samples, \
                   state, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'live', ?9) RETURNING id",
                params![
                    shard.dataset_id,
                    shard.recipe_id,
                    shard.split,
                    shard.seq,
                    shard.path,
                    shard.sha256,
                    shard.bytes as i64,
                    shard.samples as i64,
                    now
                ],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))
    }

    /// Records the samples of shard `shard_id`, in shard order.
    pub fn insert_samples<M: Serialize>(
        &self,
        shard_id: i64,
        samples: &[NewSample<'_, M>],
    ) -> Result<()> {
        let mut insert = self
            .tx
            .prepare(
                "INSERT INTO samples (shard_id, item_id, ordinal, label, frames_offset, \
                   frames_bytes, members) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(|e| self.sql(e))?;
        for (ordinal, s) in samples.iter().enumerate() {
            let members = serde_json::to_string(s.members).map_err(|e| CatalogError::Invalid {
                path: self.tx.path.to_owned(),
                message: format!("sample {ordinal} of shard {shard_id}: member index: {e}"),
            })?;
            insert
                .execute(params![
                    shard_id,
                    s.item_id,
                    ordinal as i64,
                    s.label.map(i64::from),
                    s.frames_offset as i64,
                    s.frames_bytes as i64,
                    members
                ])
                .map_err(|e| self.sql(e))?;
        }
        Ok(())
    }

    /// Records (or replaces) what the media layer saw in the video of `item_id`.
    pub fn record_probe(
        &self,
        item_id: i64,
        sha256: &str,
        p: &ProbeRecord<'_>,
        now: i64,
    ) -> Result<()> {
        let mut probe = self
            .tx
            .prepare_cached(
                "INSERT OR REPLACE INTO probes (item_id, sha256, container, codec, width, height, \
                   rotation, sar, avg_fps, real_fps, duration_s, frames, vfr, probed_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )
            .map_err(|e| self.sql(e))?;
        probe
            .execute(params![
                item_id,
                sha256,
                p.container,
                p.codec,
                p.width,
                p.height,
                p.rotation,
                p.sar,
                p.avg_fps,
                p.real_fps,
                p.duration_s,
                p.frames as i64,
                p.vfr,
                now
            ])
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// Marks shard `shard_id` `replaced`.
    pub fn mark_replaced(&self, shard_id: i64) -> Result<()> {
        self.tx
            .execute(
                "UPDATE shards SET state = 'replaced' WHERE id = ?1",
                [shard_id],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// Commits everything recorded.
    pub fn commit(self) -> Result<()> {
        self.tx.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A catalog with dataset `d`, items `a` and `b`, and a recipe.
    fn catalog_with_items() -> (tempfile::TempDir, Catalog, i64, String) {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("catalog.sqlite")).unwrap();
        c.conn
            .execute_batch(
                "INSERT INTO datasets (id, name, format, multi_label, created_at, updated_at) \
                 VALUES (1, 'd', 'jsonl', 0, 0, 0); \
                 INSERT INTO items (id, dataset_id, key, labels, fingerprint, created_at, updated_at) \
                 VALUES (1, 1, 'a', '0', '', 0, 0), (2, 1, 'b', '1', '', 0, 0);",
            )
            .unwrap();
        let mut recipe = pmv_core::frame_recipe::builtins().remove(0);
        recipe.name = "tiny".into();
        let recipe = c.register_recipe(&recipe).unwrap();
        let id = recipe.id();
        (dir, c, 1, id)
    }

    #[test]
    fn recorded_shards_read_back_with_their_index() {
        let (_dir, mut c, dataset_id, recipe_id) = catalog_with_items();
        assert_eq!(c.recipe(&recipe_id).unwrap().unwrap().name, "tiny");
        for split in ["train", "val"] {
            let seq = c.next_shard_seq(dataset_id, &recipe_id, split).unwrap();
            assert_eq!(seq, 0);
            let path = format!("shards/d/tiny/{split}/{split}-000000.tar");
            let commit = c.begin_shard_commit().unwrap();
            let id = commit
                .insert_shard(
                    &NewShard {
                        dataset_id,
                        recipe_id: &recipe_id,
                        split,
                        seq,
                        path: &path,
                        sha256: "00",
                        bytes: 10,
                        samples: 2,
                    },
                    0,
                )
                .unwrap();
            let members = ["first".to_owned(), "second".to_owned()];
            let samples: Vec<NewSample<'_, String>> = (0..2)
                .map(|i| NewSample {
                    item_id: i as i64 + 1,
                    label: Some(i),
                    frames_offset: 512,
                    frames_bytes: 64,
                    members: &members[i as usize],
                })
                .collect();
            commit.insert_samples(id, &samples).unwrap();
            commit.commit().unwrap();
        }
        let live = c
            .live_shards::<String>(dataset_id, &recipe_id, None)
            .unwrap();
        assert_eq!(
            live.iter()
                .map(|s| s.row.split.as_str())
                .collect::<Vec<_>>(),
            ["train", "val"]
        );
        assert_eq!(live[0].index, ["first", "second"]);
        assert_eq!(live[0].row.dataset, "d");
        let val = c
            .live_shards::<String>(dataset_id, &recipe_id, Some("val"))
            .unwrap();
        assert_eq!(val.len(), 1);
        assert_eq!(c.next_shard_seq(dataset_id, &recipe_id, "val").unwrap(), 1);
        let at = c
            .indexed_shard_at::<String>(&val[0].row.path)
            .unwrap()
            .unwrap();
        assert_eq!(at.row.id, val[0].row.id);
        assert_eq!(
            c.shard_paths_under("shards/d/tiny").unwrap().len(),
            2,
            "both splits"
        );
        assert!(c.shard_paths_under("shards/d/t_ny").unwrap().is_empty());
        let videos = c.shard_videos(val[0].row.id).unwrap();
        assert!(videos.usable.is_empty());
        assert_eq!(
            videos.unavailable,
            [("a".to_owned(), None), ("b".to_owned(), None)]
        );

        let rows = c.live_shard_rows(dataset_id, &recipe_id).unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| (r.split.as_str(), r.samples))
                .collect::<Vec<_>>(),
            [("train", 2), ("val", 2)]
        );
        assert_eq!(
            c.live_label_counts(dataset_id, &recipe_id).unwrap(),
            [
                ("train".to_owned(), Some(0), 1),
                ("train".to_owned(), Some(1), 1),
                ("val".to_owned(), Some(0), 1),
                ("val".to_owned(), Some(1), 1)
            ]
        );
        assert!(c.live_shard_rows(dataset_id, "other").unwrap().is_empty());

        // A shard that says it holds more samples than are recorded is refused.
        c.conn
            .execute("UPDATE shards SET samples = 3 WHERE split = 'val'", [])
            .unwrap();
        let e = c
            .live_shards::<String>(dataset_id, &recipe_id, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 samples recorded, 3 expected"), "{e}");
        let e = c
            .live_shard_rows(dataset_id, &recipe_id)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 samples recorded, 3 expected"), "{e}");
        assert!(c.indexed_shard::<String>(val[0].row.id).is_err());
        assert!(c.indexed_shard::<u32>(live[0].row.id).is_err(), "bad index");
    }

    #[test]
    fn labels_parse() {
        assert_eq!(parse_labels("3,17"), vec![3, 17]);
        assert!(parse_labels("").is_empty());
    }
}
