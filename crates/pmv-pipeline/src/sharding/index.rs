//! The shard index and class list of every split of a dataset and recipe, written
//! beside the split's shards (`<split>/index.json` and `<split>/classes.txt`) from what
//! the catalog records, so that a reader knows what a split holds without SQLite.
//!
//! [`write()`] lists exactly the live shards the catalog lists (a replaced shard never),
//! with their sample counts, and replaces both files atomically (temporary file, fsync,
//! rename, directory fsync). The shard stage calls it after every shard it commits and
//! at the end of every run and rebuild. The shapes of the files are
//! [`pmv_shard::index`]'s; the counts are read through `pmv_catalog`. This module never
//! writes a shard and never changes the catalog.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use pmv_catalog::{Catalog, CatalogError, ShardRow};
use pmv_core::frame_recipe::FrameRecipe;
use pmv_core::root::DataRoot;
use pmv_core::util::write_atomic;
use pmv_shard::index::{
    CLASSES_FILE, ClassesError, INDEX_FILE, INDEX_KIND, IndexRecipe, IndexedShard, ShardIndex,
    SplitTotals, WIDS_VERSION, class_count, classes_text,
};

/// Why a split's index or class list could not be written.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("classes.txt of dataset {dataset}: {source}")]
    Classes {
        dataset: String,
        #[source]
        source: ClassesError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("split {0:?} of a live shard is not a split name")]
    Split(String),
    #[error("shard {id} ({path}) is not in its split's folder {folder}")]
    Outside {
        id: i64,
        path: String,
        folder: String,
    },
}

/// The dataset and recipe whose splits [`write()`] describes.
#[derive(Debug, Clone)]
pub struct IndexTarget<'a> {
    pub dataset_id: i64,
    pub dataset: &'a str,
    pub multi_label: bool,
    /// The recipe as the catalog stores it (its name is the folder's).
    pub recipe: &'a FrameRecipe,
}

/// `shards/<dataset>/<recipe-name>-<recipe-id>/<split>`, relative to the data root.
pub fn split_dir(dataset: &str, recipe: &FrameRecipe, split: &str) -> String {
    format!("shards/{dataset}/{}/{split}", recipe.dir_name())
}

/// Rewrites `index.json` and `classes.txt` of every split that has live shards of
/// `target`; returns the index files written, relative to the data root.
pub fn write(
    root: &DataRoot,
    catalog: &Catalog,
    target: &IndexTarget<'_>,
) -> Result<Vec<String>, IndexError> {
    let recipe_id = target.recipe.id();
    let rows = catalog.live_shard_rows(target.dataset_id, &recipe_id)?;
    if rows.is_empty() {
        return Ok(vec![]);
    }
    let label_counts = catalog.live_label_counts(target.dataset_id, &recipe_id)?;
    let classes = catalog.classes(target.dataset_id)?;
    let num_classes = class_count(&classes, label_counts.iter().filter_map(|(_, l, _)| *l));
    let classes = classes_text(&classes, num_classes).map_err(|source| IndexError::Classes {
        dataset: target.dataset.to_owned(),
        source,
    })?;

    let mut by_split: BTreeMap<&str, Vec<&ShardRow>> = BTreeMap::new();
    for row in &rows {
        by_split.entry(row.split.as_str()).or_default().push(row);
    }
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let totals: BTreeMap<String, SplitTotals> = by_split
        .iter()
        .map(|(split, rows)| {
            let t = SplitTotals {
                shards: rows.len() as u64,
                nsamples: rows.iter().map(|r| count(r.samples)).sum(),
                bytes: rows.iter().map(|r| count(r.bytes)).sum(),
            };
            ((*split).to_owned(), t)
        })
        .collect();
    let mut per_label: HashMap<&str, (Vec<u64>, u64)> = HashMap::new();
    for (split, label, n) in &label_counts {
        let (cls, unlabelled) = per_label
            .entry(split.as_str())
            .or_insert_with(|| (vec![0; num_classes], 0));
        match label {
            Some(l) => cls[*l as usize] += count(*n),
            None => *unlabelled += count(*n),
        }
    }

    let params = &target.recipe.params;
    let mut written = vec![];
    for (split, rows) in &by_split {
        if !pmv_core::split::Split::parse(split).is_ok_and(|s| s.as_str() == *split) {
            return Err(IndexError::Split((*split).to_owned()));
        }
        let folder = split_dir(target.dataset, target.recipe, split);
        let shardlist = rows
            .iter()
            .map(|r| {
                let url = r
                    .path
                    .strip_prefix(&folder)
                    .and_then(|p| p.strip_prefix('/'))
                    .filter(|name| !name.is_empty() && !name.contains('/'))
                    .ok_or_else(|| IndexError::Outside {
                        id: r.id,
                        path: r.path.clone(),
                        folder: folder.clone(),
                    })?;
                Ok(IndexedShard {
                    url: url.to_owned(),
                    nsamples: count(r.samples),
                    filesize: count(r.bytes),
                    sha256: r.sha256.clone(),
                })
            })
            .collect::<Result<Vec<_>, IndexError>>()?;
        let (cls_samples, unlabelled) = per_label
            .remove(split)
            .unwrap_or_else(|| (vec![0; num_classes], 0));
        let t = totals[*split];
        let index = ShardIndex {
            kind: INDEX_KIND.to_owned(),
            wids_version: WIDS_VERSION,
            name: format!("{}/{}/{split}", target.dataset, target.recipe.dir_name()),
            shardlist,
            dataset: target.dataset.to_owned(),
            split: (*split).to_owned(),
            recipe: IndexRecipe {
                id: recipe_id.clone(),
                name: target.recipe.name.clone(),
                params: params.clone(),
            },
            codec: params.codec,
            clips: params.clips,
            frames: params.frames,
            height: params.height,
            width: params.width,
            num_classes,
            multi_label: target.multi_label,
            nsamples: t.nsamples,
            bytes: t.bytes,
            cls_samples,
            unlabelled,
            splits: totals.clone(),
        };
        let mut json = serde_json::to_vec_pretty(&index).expect("an index always serialises");
        json.push(b'\n');
        let dir = root.path().join(&folder);
        for (name, bytes) in [
            (INDEX_FILE, json.as_slice()),
            (CLASSES_FILE, classes.as_bytes()),
        ] {
            let path = dir.join(name);
            write_atomic(&path, bytes).map_err(|source| IndexError::Io { path, source })?;
        }
        written.push(format!("{folder}/{INDEX_FILE}"));
    }
    Ok(written)
}
