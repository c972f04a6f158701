//! What there is to shard, and what has been, as the shard stage sees what the catalog
//! records: the videos of a dataset that still lack a sample of a recipe in some split
//! ([`Catalog::unsharded_videos`]), the items of one shard (rebuild,
//! [`Catalog::shard_videos`]), and a recorded shard opened from its member offsets.
//!
//! Owns what a sample is told about its video (its source, redacted) and the order
//! samples are written in: a stable hash of the item key, so shards mix classes and the
//! same inputs always give the same order. It holds no SQL, never writes the catalog and
//! never touches files other than the shard it opens.

use pmv_catalog::{Catalog, CatalogError, IndexedShard, ShardRow, ShardVideo};

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

/// The work of a catalog video for `splits`.
fn work_of(v: ShardVideo, splits: Vec<String>) -> Work {
    Work {
        item_id: v.item_id,
        key: v.key,
        labels: v.labels,
        text: v.text,
        source: source_at(v.sources.as_deref(), v.source_rank),
        video: v.video,
        sha256: v.sha256.unwrap_or_default(),
        size: v.size.unwrap_or(0).max(0) as u64,
        cover: v.cover,
        splits,
    }
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
    let mut out: Vec<Work> = catalog
        .unsharded_videos(dataset_id, recipe_id, splits)?
        .into_iter()
        .map(|u| work_of(u.video, u.splits))
        .collect();
    out.sort_by(|a, b| order_key(&a.key).cmp(&order_key(&b.key)));
    Ok(out)
}

/// The items of a shard in sample order, each with the shard's split only. Items whose
/// video is no longer verified or sharded are returned in the second list.
pub fn shard_items(
    catalog: &Catalog,
    shard: &ShardRow,
) -> Result<(Vec<Work>, Vec<String>), CatalogError> {
    let videos = catalog.shard_videos(shard.id)?;
    let items = videos
        .usable
        .into_iter()
        .map(|v| work_of(v, vec![shard.split.clone()]))
        .collect();
    let unavailable = videos
        .unavailable
        .into_iter()
        .map(|(key, state)| {
            format!(
                "{key} (video {})",
                state.unwrap_or_else(|| "not stored".into())
            )
        })
        .collect();
    Ok((items, unavailable))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
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

/// Opens shard `shard_id` from the member offsets the catalog recorded (no scan of the
/// tar; every offset is checked against the file). Call
/// [`super::ShardReader::verify_sha256`] with [`ShardRow::sha256`] to check its bytes.
pub fn open_shard(
    root: &pmv_core::root::DataRoot,
    catalog: &Catalog,
    shard_id: i64,
) -> Result<(ShardRow, super::ShardReader), OpenError> {
    let IndexedShard { row, index } = catalog
        .indexed_shard::<super::SampleIndex>(shard_id)?
        .ok_or_else(|| OpenError::Invalid(shard_id, "not in the catalog".into()))?;
    let reader = super::ShardReader::open_indexed(&root.path().join(&row.path), index)?;
    Ok((row, reader))
}
