//! The two files beside a split's shards that tell a reader what the split holds
//! without the catalog: `index.json`, a shard index in the format of webdataset's
//! `wids` (`"__kind__": "wids-shard-index-v1"`, `wids_version` 1, a `shardlist` of
//! `{url, nsamples}`) with pmv-data's own keys beside wids's, and `classes.txt`, one class
//! name per line in label order.
//!
//! Owns the files' names, the JSON shape of the index and the text of `classes.txt`.
//! It never reads the catalog and never writes a file: the shard stage gathers the
//! counts and writes both atomically.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use pmv_core::frame_recipe::{Codec, FrameParams};

/// The index's file name, in the split's folder.
pub const INDEX_FILE: &str = "index.json";
/// The class list's file name, in the split's folder.
pub const CLASSES_FILE: &str = "classes.txt";
/// The `__kind__` of a wids shard index.
pub const INDEX_KIND: &str = "wids-shard-index-v1";
/// The only `wids_version` wids reads.
pub const WIDS_VERSION: u32 = 1;
/// Most classes `classes.txt` lists (a class id above this is refused, not written
/// as millions of lines).
pub const MAX_CLASSES: usize = 1 << 20;

/// A split's shard index, as `index.json` holds it.
///
/// `__kind__`, `wids_version`, `name` and `shardlist` are wids's; wids ignores the
/// other keys.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ShardIndex {
    /// [`INDEX_KIND`].
    #[serde(rename = "__kind__")]
    pub kind: String,
    /// [`WIDS_VERSION`].
    pub wids_version: u32,
    /// `<dataset>/<recipe-name>-<recipe-id>/<split>`.
    pub name: String,
    /// The split's live shards in sequence order.
    pub shardlist: Vec<IndexedShard>,
    pub dataset: String,
    pub split: String,
    /// The frame recipe: its id, name and parameters.
    pub recipe: IndexRecipe,
    /// How the frames are stored (`{"kind":"raw"}` or `{"kind":"jpeg","quality":90}`).
    pub codec: Codec,
    /// K: clips per sample.
    pub clips: u32,
    /// T: frames per clip.
    pub frames: u32,
    /// H and W of a decoded frame.
    pub height: u32,
    pub width: u32,
    /// Lines of `classes.txt`: one more than the highest class id.
    pub num_classes: usize,
    /// Items may have several labels (all of them are in a sample's `.json`).
    pub multi_label: bool,
    /// Samples in this split (the sum of `shardlist`'s `nsamples`).
    pub nsamples: u64,
    /// Bytes of this split's shards.
    pub bytes: u64,
    /// Samples of this split per `.cls` value (an item's first label), by class id;
    /// as long as `num_classes`.
    pub cls_samples: Vec<u64>,
    /// Samples of this split without a label (no `.cls` member).
    pub unlabelled: u64,
    /// Every split of the dataset and recipe, this one included.
    pub splits: BTreeMap<String, SplitTotals>,
}

/// One shard of the index's `shardlist`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct IndexedShard {
    /// The shard's file, relative to the index's folder.
    pub url: String,
    pub nsamples: u64,
    /// Bytes of the file.
    pub filesize: u64,
    /// SHA-256 of the file, as the catalog recorded it.
    pub sha256: String,
}

/// The recipe of the shards an index lists.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct IndexRecipe {
    pub id: String,
    pub name: String,
    pub params: FrameParams,
}

/// What one split of a dataset and recipe holds.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SplitTotals {
    pub shards: u64,
    pub nsamples: u64,
    pub bytes: u64,
}

/// Why `classes.txt` cannot be written.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ClassesError {
    #[error("class {id}'s name {name:?} has a line break; classes.txt holds one name a line")]
    LineBreak { id: u32, name: String },
    #[error("class id {0} is over the {MAX_CLASSES} classes classes.txt lists")]
    TooMany(u64),
}

/// The number of lines of `classes.txt`: one more than the highest of the class ids
/// and the labels, 0 when there are neither.
pub fn class_count(classes: &[(u32, String)], labels: impl IntoIterator<Item = u32>) -> usize {
    classes
        .iter()
        .map(|(id, _)| *id)
        .chain(labels)
        .map(|id| id as usize + 1)
        .max()
        .unwrap_or(0)
}

/// The text of `classes.txt` for `count` classes: line `i` (from 0) is the name of
/// class id `i`, `class_<i>` for an id without a name (as the trainer names it), each
/// line ending in `\n`.
pub fn classes_text(classes: &[(u32, String)], count: usize) -> Result<String, ClassesError> {
    if count > MAX_CLASSES {
        return Err(ClassesError::TooMany(count as u64 - 1));
    }
    let mut names: Vec<Option<&str>> = vec![None; count];
    for (id, name) in classes {
        if name.contains(['\n', '\r']) {
            return Err(ClassesError::LineBreak {
                id: *id,
                name: name.clone(),
            });
        }
        if let Some(slot) = names.get_mut(*id as usize) {
            *slot = Some(name);
        }
    }
    let mut text = String::new();
    for (i, name) in names.into_iter().enumerate() {
        match name {
            Some(n) => text.push_str(n),
            None => text.push_str(&format!("class_{i}")),
        }
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_listed_in_id_order_with_gaps_named() {
        let classes = vec![(2, "cat".to_owned()), (0, "dog".to_owned())];
        let n = class_count(&classes, [4]);
        assert_eq!(n, 5);
        assert_eq!(
            classes_text(&classes, n).unwrap(),
            "dog\nclass_1\ncat\nclass_3\nclass_4\n"
        );
        assert_eq!(class_count(&[], []), 0);
        assert_eq!(classes_text(&[], 0).unwrap(), "");
    }

    #[test]
    fn names_that_would_break_the_lines_are_refused() {
        let classes = vec![(0, "a\nb".to_owned())];
        assert_eq!(
            classes_text(&classes, 1),
            Err(ClassesError::LineBreak {
                id: 0,
                name: "a\nb".into()
            })
        );
        let huge = vec![(u32::MAX, "x".to_owned())];
        let n = class_count(&huge, []);
        assert!(matches!(
            classes_text(&huge, n),
            Err(ClassesError::TooMany(_))
        ));
    }

    #[test]
    fn the_index_has_the_wids_keys() {
        let params = pmv_core::frame_recipe::builtins().remove(0).params;
        let index = ShardIndex {
            kind: INDEX_KIND.into(),
            wids_version: WIDS_VERSION,
            name: "d/r/train".into(),
            shardlist: vec![IndexedShard {
                url: "train-000000.tar".into(),
                nsamples: 3,
                filesize: 10240,
                sha256: "00".into(),
            }],
            dataset: "d".into(),
            split: "train".into(),
            recipe: IndexRecipe {
                id: params.id(),
                name: "r".into(),
                params: params.clone(),
            },
            codec: params.codec,
            clips: params.clips,
            frames: params.frames,
            height: params.height,
            width: params.width,
            num_classes: 2,
            multi_label: false,
            nsamples: 3,
            bytes: 10240,
            cls_samples: vec![2, 1],
            unlabelled: 0,
            splits: BTreeMap::from([(
                "train".to_owned(),
                SplitTotals {
                    shards: 1,
                    nsamples: 3,
                    bytes: 10240,
                },
            )]),
        };
        let v = serde_json::to_value(&index).unwrap();
        assert_eq!(v["__kind__"], "wids-shard-index-v1");
        assert_eq!(v["wids_version"], 1);
        assert_eq!(v["shardlist"][0]["url"], "train-000000.tar");
        assert_eq!(v["shardlist"][0]["nsamples"], 3);
        assert_eq!(v["codec"]["kind"], "raw");
        let back: ShardIndex = serde_json::from_value(v).unwrap();
        assert_eq!(back, index);
    }
}
