//! What there is to shard, and what has been: reading the catalog for the videos of a
//! dataset that still lack a sample of a recipe in some split, for the items of one
//! shard (rebuild), and for the live shards a reader opens from their recorded offsets.
//!
//! Owns the read-only queries of the shard stage and the order samples are written in:
//! a stable hash of the item key, so shards mix classes and the same inputs always give
//! the same order. It never writes the catalog and never touches files.

use std::collections::{BTreeSet, HashMap, HashSet};

use rusqlite::{OptionalExtension, params};

use pmv_catalog::{Catalog, CatalogError};

/// One video to decode, and the splits it still needs a sample in.
#[derive(Debug, Clone)]
pub struct Work {
    pub item_id: i64,
    pub key: String,
    /// Ascending class ids.
    pub labels: Vec<u32>,
    pub text: Option<String>,
    /// The video, relative to the data root.
    pub video: String,
    pub sha256: String,
    pub size: u64,
    /// Where the video came from, as a sample may tell it: its URL with secrets
    /// redacted, or `local:<file name>`; `None` when not known.
    pub source: Option<String>,
    /// The cover, relative to the data root.
    pub cover: Option<String>,
    /// Splits to write a sample to, in name order.
    pub splits: Vec<String>,
}

/// The sort key of an item: a stable hash of its key, then the key.
pub fn order_key(key: &str) -> (u64, &str) {
    (xxhash_rust::xxh3::xxh3_64(key.as_bytes()), key)
}

fn parse_labels(text: &str) -> Vec<u32> {
    text.split(',').filter_map(|s| s.parse().ok()).collect()
}

/// Where the video of source `rank` in an item's sources JSON came from, as a shard
/// sample records it: a URL with its secrets redacted, or for a local file `local:`
/// and its file name (a sample travels; the folders of the machine that made it are
/// nobody else's business). `None` when the rank is not known (a file imported from
/// an `--import-dir` folder, or found under its final name).
fn source_at(sources: Option<&str>, rank: Option<i64>) -> Option<String> {
    let list: serde_json::Value = serde_json::from_str(sources?).ok()?;
    let source = list.get(usize::try_from(rank?).ok()?)?;
    let location = source.get("location")?.as_str()?;
    if source.get("kind").and_then(|k| k.as_str()) == Some("local") {
        let name = std::path::Path::new(location).file_name()?.to_str()?;
        return Some(format!("local:{name}"));
    }
    Some(pmv_core::redact::redact_url(location).into_owned())
}

/// Every active item of `dataset_id` whose video is verified (or already sharded by
/// another recipe) and that lacks a sample of `recipe_id` in one of its splits (only
/// `splits`, when given), in write order.
pub fn pending(
    catalog: &Catalog,
    dataset_id: i64,
    recipe_id: &str,
    splits: &[String],
) -> Result<Vec<Work>, CatalogError> {
    let conn = catalog.conn();
    let sql = |e| catalog.sql(e);
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
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<i64>>(7)?,
                r.get::<_, Option<i64>>(8)?,
                r.get::<_, Option<String>>(9)?,
            ))
        })
        .map_err(sql)?;
    let mut out = Vec::new();
    for row in rows {
        let (item_id, key, labels, text, sources, video, sha, size, rank, cover) =
            row.map_err(sql)?;
        let Some(all) = item_splits.get(&item_id) else {
            continue;
        };
        let splits: Vec<String> = all
            .iter()
            .filter(|s| !done.contains(&(item_id, (*s).clone())))
            .cloned()
            .collect();
        if splits.is_empty() {
            continue;
        }
        out.push(Work {
            item_id,
            key,
            labels: parse_labels(&labels),
            text,
            source: source_at(sources.as_deref(), rank),
            video,
            sha256: sha.unwrap_or_default(),
            size: size.unwrap_or(0).max(0) as u64,
            cover,
            splits,
        });
    }
    out.sort_by(|a, b| order_key(&a.key).cmp(&order_key(&b.key)));
    Ok(out)
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
    pub path: String,
    pub sha256: String,
    pub samples: i64,
    pub state: String,
}

pub fn shard_row(catalog: &Catalog, shard_id: i64) -> Result<Option<ShardRow>, CatalogError> {
    catalog
        .conn()
        .query_row(
            "SELECT s.id, s.dataset_id, d.name, s.recipe_id, s.split, s.seq, s.path, s.sha256, \
               s.samples, s.state \
             FROM shards s JOIN datasets d ON d.id = s.dataset_id WHERE s.id = ?1",
            [shard_id],
            |r| {
                Ok(ShardRow {
                    id: r.get(0)?,
                    dataset_id: r.get(1)?,
                    dataset: r.get(2)?,
                    recipe_id: r.get(3)?,
                    split: r.get(4)?,
                    seq: r.get(5)?,
                    path: r.get(6)?,
                    sha256: r.get(7)?,
                    samples: r.get(8)?,
                    state: r.get(9)?,
                })
            },
        )
        .optional()
        .map_err(|e| catalog.sql(e))
}

/// The items of a shard in sample order, each with the shard's split only. Items whose
/// video is no longer verified or sharded are returned in the second list.
pub fn shard_items(
    catalog: &Catalog,
    shard: &ShardRow,
) -> Result<(Vec<Work>, Vec<String>), CatalogError> {
    let conn = catalog.conn();
    let sql = |e| catalog.sql(e);
    let mut stmt = conn
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
        .query_map([shard.id], |r| {
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
    let mut items = Vec::new();
    let mut unavailable = Vec::new();
    for row in rows {
        let (item_id, key, labels, text, sources, video, sha, size, rank, cover, state) =
            row.map_err(sql)?;
        let usable = matches!(state.as_deref(), Some("verified") | Some("sharded"));
        let Some(video) = video.filter(|_| usable) else {
            unavailable.push(format!(
                "{key} (video {})",
                state.unwrap_or_else(|| "not stored".into())
            ));
            continue;
        };
        items.push(Work {
            item_id,
            key,
            labels: parse_labels(&labels),
            text,
            source: source_at(sources.as_deref(), rank),
            video,
            sha256: sha.unwrap_or_default(),
            size: size.unwrap_or(0).max(0) as u64,
            cover,
            splits: vec![shard.split.clone()],
        });
    }
    Ok((items, unavailable))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_labels_parse() {
        let s = r#"[{"kind":"local","location":"/home/me/clips/a.mp4","origin":"manifest"},{"kind":"direct","location":"https://h/b.mp4?token=t0p&x=1","origin":"links"}]"#;
        assert_eq!(
            source_at(Some(s), Some(1)).as_deref(),
            Some("https://h/b.mp4?token=REDACTED&x=1")
        );
        assert_eq!(source_at(Some(s), Some(0)).as_deref(), Some("local:a.mp4"));
        assert_eq!(
            source_at(Some(s), None),
            None,
            "imported: not a listed source"
        );
        assert_eq!(source_at(Some(s), Some(7)), None);
        assert_eq!(source_at(None, Some(0)), None);
        assert_eq!(parse_labels("3,17"), vec![3, 17]);
        assert!(parse_labels("").is_empty());
        assert!(order_key("a") != order_key("b"));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Shard(#[from] pmv_shard::format::ShardError),
    #[error("shard {0}: {1}")]
    Invalid(i64, String),
}

/// The live shards of a dataset and recipe (one split, or all), in split and sequence
/// order: what a reader of the dataset should read.
pub fn live_shards(
    catalog: &Catalog,
    dataset_id: i64,
    recipe_id: &str,
    split: Option<&str>,
) -> Result<Vec<ShardRow>, CatalogError> {
    let mut stmt = catalog
        .conn()
        .prepare(
            "SELECT s.id FROM shards s WHERE s.dataset_id = ?1 AND s.recipe_id = ?2 \
               AND s.state = 'live' AND (?3 IS NULL OR s.split = ?3) ORDER BY s.split, s.seq",
        )
        .map_err(|e| catalog.sql(e))?;
    let ids: Vec<i64> = stmt
        .query_map(params![dataset_id, recipe_id, split], |r| r.get(0))
        .map_err(|e| catalog.sql(e))?
        .collect::<rusqlite::Result<_>>()
        .map_err(|e| catalog.sql(e))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.extend(shard_row(catalog, id)?);
    }
    Ok(out)
}

/// Opens shard `shard_id` from the member offsets the catalog recorded (no scan of the
/// tar; every offset is checked against the file). Call
/// [`super::ShardReader::verify_sha256`] with [`ShardRow::sha256`] to check its bytes.
pub fn open_shard(
    root: &pmv_core::root::DataRoot,
    catalog: &Catalog,
    shard_id: i64,
) -> Result<(ShardRow, super::ShardReader), OpenError> {
    let row = shard_row(catalog, shard_id)?
        .ok_or_else(|| OpenError::Invalid(shard_id, "not in the catalog".into()))?;
    let mut stmt = catalog
        .conn()
        .prepare("SELECT members FROM samples WHERE shard_id = ?1 ORDER BY ordinal")
        .map_err(|e| catalog.sql(e))?;
    let members: Vec<String> = stmt
        .query_map([shard_id], |r| r.get(0))
        .map_err(|e| catalog.sql(e))?
        .collect::<rusqlite::Result<_>>()
        .map_err(|e| catalog.sql(e))?;
    let index = members
        .iter()
        .map(|m| serde_json::from_str(m))
        .collect::<Result<Vec<super::SampleIndex>, _>>()
        .map_err(|e| OpenError::Invalid(shard_id, format!("recorded sample offsets: {e}")))?;
    if index.len() as i64 != row.samples {
        return Err(OpenError::Invalid(
            shard_id,
            format!("{} samples recorded, {} expected", index.len(), row.samples),
        ));
    }
    let reader = super::ShardReader::open_indexed(&root.path().join(&row.path), index)?;
    Ok((row, reader))
}
