//! Which shards a run reads, and what their labels mean.
//!
//! Owns the two ways to name training data: a dataset and recipe in the catalog (live
//! shards of a split, with the member offsets the catalog recorded, so no tar is
//! scanned), or `--shards DIR_OR_GLOB` without any catalog. The catalog is read through
//! `pmv_catalog`'s read-only queries ([`Catalog::live_shards`], the same the shard stage
//! reads); there is no SQL here. It opens shards through the shard reader and reports
//! every shard that cannot be opened or fails its SHA-256; it never reads frames, never
//! writes to the catalog and never touches a shard's bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pmv_catalog::{Catalog, CatalogError, FrameRecipeRow, IndexedShard};
use pmv_shard::{SampleIndex, ShardError, ShardReader};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("no catalog at {0}: ingest and shard a dataset first, or train with --shards")]
    NoCatalog(PathBuf),
    #[error("no dataset {name:?} in the catalog (datasets: {known})")]
    NoDataset { name: String, known: String },
    #[error(
        "dataset {dataset:?} has no shard recipe {recipe:?} (recipes with live shards: {known})"
    )]
    NoRecipe {
        dataset: String,
        recipe: String,
        known: String,
    },
    #[error(
        "dataset {dataset:?} has shards of several recipes ({known}): choose one with --recipe"
    )]
    WhichRecipe { dataset: String, known: String },
    #[error("no live shards for dataset {dataset:?}, recipe {recipe:?}, split {split:?}")]
    NoShards {
        dataset: String,
        recipe: String,
        split: String,
    },
    #[error(
        "no shards match {0} (a directory of .tar files, one with <split>/ subdirectories, or a glob)"
    )]
    NoShardFiles(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("class list {path}: {message}")]
    Classes { path: PathBuf, message: String },
    #[error("shard index {path}: {message}")]
    Index { path: PathBuf, message: String },
}

/// Where a run's data comes from; recorded in the run so eval finds the same data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    Catalog {
        root: PathBuf,
        dataset: String,
        recipe_id: String,
        recipe_name: String,
        /// The recipe's parameters as the catalog records them.
        #[serde(default)]
        recipe_params: serde_json::Value,
    },
    Shards {
        /// The training shards: a directory or a glob.
        train: String,
        /// Other splits, by name: a directory or a glob each.
        #[serde(default)]
        splits: Vec<(String, String)>,
    },
}

/// One shard to read.
#[derive(Debug, Clone)]
pub struct ShardRef {
    pub path: PathBuf,
    /// From the catalog: checked with `--verify`.
    pub sha256: Option<String>,
    /// From the catalog: the samples the shard holds.
    pub samples: Option<usize>,
    /// From the catalog: where each sample's members lie (no tar scan needed).
    pub index: Option<Vec<SampleIndex>>,
}

/// The shards of one split, in a fixed order.
#[derive(Debug, Clone)]
pub struct SplitData {
    pub split: String,
    pub shards: Vec<ShardRef>,
}

/// What the catalog says about a dataset and recipe.
#[derive(Debug, Clone)]
pub struct CatalogData {
    pub dataset: String,
    pub multi_label: bool,
    pub classes: Vec<String>,
    pub recipe_id: String,
    pub recipe_name: String,
    pub recipe_params: serde_json::Value,
}

fn open_catalog(root: &Path) -> Result<Catalog, DataError> {
    let path = root.join("catalog.sqlite");
    Catalog::open_existing_readonly(&path)?.ok_or(DataError::NoCatalog(path))
}

/// Class names from the catalog's `classes` rows: index = class id; ids without a row
/// are named `class_<id>`.
fn class_table(rows: Vec<(u32, String)>) -> Vec<String> {
    let n = rows
        .iter()
        .map(|(id, _)| *id as usize + 1)
        .max()
        .unwrap_or(0);
    let mut names: Vec<String> = (0..n).map(|i| format!("class_{i}")).collect();
    for (id, name) in rows {
        names[id as usize] = name;
    }
    names
}

/// Looks up a dataset and one of its recipes (by id or name; the only one with live
/// shards when `recipe` is `None`).
pub fn catalog_data(
    root: &Path,
    dataset: &str,
    recipe: Option<&str>,
) -> Result<CatalogData, DataError> {
    let cat = open_catalog(root)?;
    let Some(ds) = cat.dataset(dataset)? else {
        let known: Vec<String> = cat.datasets()?.into_iter().map(|d| d.name).collect();
        return Err(DataError::NoDataset {
            name: dataset.to_owned(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        });
    };
    let classes = class_table(cat.classes(ds.id)?);
    let recipes = cat.recipes_with_live_shards(ds.id)?;
    let listing = || {
        if recipes.is_empty() {
            "none".to_owned()
        } else {
            recipes
                .iter()
                .map(|r| format!("{} ({})", r.name, r.id))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let chosen = match recipe {
        Some(r) => {
            let hits: Vec<&FrameRecipeRow> = recipes
                .iter()
                .filter(|row| row.id == r || row.name == r)
                .collect();
            match hits.as_slice() {
                [one] => (*one).clone(),
                [] => {
                    // A recipe without live shards still exists: say so precisely.
                    return Err(match cat.recipe_by_id_or_name(r)? {
                        Some(_) => DataError::NoShards {
                            dataset: dataset.to_owned(),
                            recipe: r.to_owned(),
                            split: "any".into(),
                        },
                        None => DataError::NoRecipe {
                            dataset: dataset.to_owned(),
                            recipe: r.to_owned(),
                            known: listing(),
                        },
                    });
                }
                _ => {
                    return Err(DataError::WhichRecipe {
                        dataset: dataset.to_owned(),
                        known: listing(),
                    });
                }
            }
        }
        None => match recipes.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(DataError::NoRecipe {
                    dataset: dataset.to_owned(),
                    recipe: "(any)".into(),
                    known: listing(),
                });
            }
            _ => {
                return Err(DataError::WhichRecipe {
                    dataset: dataset.to_owned(),
                    known: listing(),
                });
            }
        },
    };
    Ok(CatalogData {
        dataset: ds.name,
        multi_label: ds.multi_label,
        classes,
        recipe_id: chosen.id,
        recipe_name: chosen.name,
        recipe_params: serde_json::from_str(&chosen.params).unwrap_or(serde_json::Value::Null),
    })
}

/// The live shards of one split of a dataset and recipe, in sequence order, with the
/// member offsets the catalog recorded. Paths are taken relative to `root`.
pub fn catalog_split(
    root: &Path,
    dataset: &str,
    recipe_id: &str,
    split: &str,
) -> Result<SplitData, DataError> {
    let cat = open_catalog(root)?;
    let shards = match cat.dataset(dataset)? {
        Some(ds) => cat.live_shards::<SampleIndex>(ds.id, recipe_id, Some(split))?,
        None => vec![],
    };
    if shards.is_empty() {
        return Err(DataError::NoShards {
            dataset: dataset.to_owned(),
            recipe: recipe_id.to_owned(),
            split: split.to_owned(),
        });
    }
    Ok(SplitData {
        split: split.to_owned(),
        shards: shards
            .into_iter()
            .map(|s| {
                let rel = s.row.path.clone();
                shard_ref(root, &rel, Some(s))
            })
            .collect(),
    })
}

/// The shards at `paths` (relative to `root`, in that order, whatever their state now),
/// with their member offsets: what a resumed run reads.
pub fn catalog_shards_by_path(
    root: &Path,
    split: &str,
    paths: &[PathBuf],
) -> Result<SplitData, DataError> {
    let cat = open_catalog(root)?;
    let mut shards = Vec::with_capacity(paths.len());
    for p in paths {
        let rel = p.to_string_lossy();
        let known = cat.indexed_shard_at::<SampleIndex>(&rel)?;
        shards.push(shard_ref(root, &rel, known));
    }
    Ok(SplitData {
        split: split.to_owned(),
        shards,
    })
}

/// A shard at `rel` (relative to `root`) as the catalog records it; `None` for a shard
/// the catalog no longer knows (it is then read by scanning, and its hash is not
/// checked).
fn shard_ref(root: &Path, rel: &str, known: Option<IndexedShard<SampleIndex>>) -> ShardRef {
    let path = root.join(rel);
    match known {
        Some(IndexedShard { row, index }) => ShardRef {
            path,
            sha256: Some(row.sha256),
            samples: usize::try_from(row.samples).ok(),
            // A shard without sample rows is scanned instead.
            index: (!index.is_empty()).then_some(index),
        },
        None => ShardRef {
            path,
            sha256: None,
            samples: None,
            index: None,
        },
    }
}

/// Whether `name` matches a glob pattern of `*`, `?` and literal characters.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], name) || (!name.is_empty() && glob_match(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob_match(&pattern[1..], &name[1..]),
        _ => false,
    }
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io = |source| DataError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut out = vec![];
    for entry in fs_err::read_dir(dir).map_err(io)? {
        out.push(entry.map_err(io)?.path());
    }
    out.sort();
    Ok(out)
}

fn is_tar(p: &Path) -> bool {
    p.is_file() && p.extension().is_some_and(|e| e == "tar")
}

/// The shards `spec` names for `split`: `spec/<split>/*.tar` when that directory exists,
/// else (for the split `primary` only) `spec/*.tar`, or the files matching a glob whose
/// `*` and `?` are in the file name part.
pub fn shards_split(spec: &str, split: &str, primary: bool) -> Result<SplitData, DataError> {
    let path = Path::new(spec);
    let files: Vec<PathBuf> = if spec.contains(['*', '?']) {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = dir.unwrap_or(Path::new("."));
        let pattern = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        list_dir(dir)?
            .into_iter()
            .filter(|p| {
                p.is_file()
                    && p.file_name()
                        .is_some_and(|n| glob_match(pattern.as_bytes(), n.as_encoded_bytes()))
            })
            .collect()
    } else if path.is_dir() && path.join(split).is_dir() {
        if let Some(indexed) = indexed_split(&path.join(split), split)? {
            return Ok(indexed);
        }
        list_dir(&path.join(split))?
            .into_iter()
            .filter(|p| is_tar(p))
            .collect()
    } else if path.is_dir() && primary {
        if let Some(indexed) = indexed_split(path, split)? {
            return Ok(indexed);
        }
        list_dir(path)?.into_iter().filter(|p| is_tar(p)).collect()
    } else if is_tar(path) && primary {
        vec![path.to_owned()]
    } else {
        vec![]
    };
    if files.is_empty() {
        return Err(DataError::NoShardFiles(if primary {
            spec.to_owned()
        } else {
            format!("{spec} for the split {split:?}")
        }));
    }
    Ok(SplitData {
        split: split.to_owned(),
        shards: files
            .into_iter()
            .map(|path| ShardRef {
                path,
                sha256: None,
                samples: None,
                index: None,
            })
            .collect(),
    })
}

/// The shards a split folder's `index.json` lists (the live ones, in order, with the
/// checksums and sample counts the shard stage recorded), or `None` when the folder has
/// no index. A folder may also hold shards a rebuild replaced; only the index knows.
/// Every listed name must be a `.tar` file in the folder itself.
fn indexed_split(dir: &Path, split: &str) -> Result<Option<SplitData>, DataError> {
    let path = dir.join(pmv_shard::index::INDEX_FILE);
    let text = match fs_err::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(DataError::Io { path, source }),
    };
    let bad = |message: String| DataError::Index {
        path: path.clone(),
        message,
    };
    // Only wids's keys are read, so an index another tool wrote works too.
    #[derive(Deserialize)]
    struct Index {
        #[serde(rename = "__kind__")]
        kind: String,
        shardlist: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        url: String,
        nsamples: u64,
        sha256: Option<String>,
    }
    let index: Index = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if index.kind != pmv_shard::index::INDEX_KIND {
        return Err(bad(format!(
            "__kind__ {:?} is not a shard index",
            index.kind
        )));
    }
    let mut shards = Vec::with_capacity(index.shardlist.len());
    for entry in &index.shardlist {
        let name = Path::new(&entry.url);
        let plain = name.components().count() == 1
            && matches!(
                name.components().next(),
                Some(std::path::Component::Normal(_))
            );
        if !plain || name.extension().is_none_or(|e| e != "tar") {
            return Err(bad(format!(
                "{:?} is not the name of a .tar file beside the index",
                entry.url
            )));
        }
        shards.push(ShardRef {
            path: dir.join(name),
            sha256: entry.sha256.clone(),
            samples: usize::try_from(entry.nsamples).ok(),
            index: None,
        });
    }
    if shards.is_empty() {
        return Err(bad("it lists no shards".into()));
    }
    Ok(Some(SplitData {
        split: split.to_owned(),
        shards,
    }))
}

/// A class list file: one name per line, or `id,name` / `name,id` CSV lines.
pub fn read_class_file(path: &Path) -> Result<Vec<String>, DataError> {
    let text = fs_err::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_owned(),
        source,
    })?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let pairs: Option<Vec<(u32, String)>> = lines
        .iter()
        .map(|l| {
            let (a, b) = l.split_once(',')?;
            let (a, b) = (a.trim(), b.trim());
            match (a.parse::<u32>(), b.parse::<u32>()) {
                (Ok(id), _) => Some((id, b.to_owned())),
                (_, Ok(id)) => Some((id, a.to_owned())),
                _ => None,
            }
        })
        .collect();
    let names = match pairs {
        Some(p) if !p.is_empty() => class_table(p),
        _ => lines.iter().map(|l| (*l).to_owned()).collect(),
    };
    if names.is_empty() {
        return Err(DataError::Classes {
            path: path.to_owned(),
            message: "no class names".into(),
        });
    }
    Ok(names)
}

/// `classes.txt` beside shards named by `spec`: in the directory (or a glob's), in its
/// `split` folder (where the shard stage writes it), or in the directory's parent.
pub fn find_class_file(spec: &str, split: &str) -> Option<PathBuf> {
    let path = Path::new(spec);
    let dir = if path.is_dir() {
        path.to_owned()
    } else {
        path.parent()?.to_owned()
    };
    let mut candidates = vec![dir.join("classes.txt"), dir.join(split).join("classes.txt")];
    candidates.extend(dir.parent().map(|p| p.join("classes.txt")));
    candidates.into_iter().find(|p| p.is_file())
}

/// A shard that could not be used, and how many samples that cost (when known).
#[derive(Debug, Clone, Serialize)]
pub struct ShardProblem {
    pub path: PathBuf,
    pub samples: Option<usize>,
    pub error: String,
}

/// Opens (and with `verify` hashes, and decodes every JPEG frame of) every shard of a
/// split. Shards that fail are left
/// out and returned as problems, never replaced by others.
pub fn open_split(data: &SplitData, verify: bool) -> (Vec<Arc<ShardReader>>, Vec<ShardProblem>) {
    let mut open = vec![];
    let mut problems = vec![];
    for s in &data.shards {
        let reader = match &s.index {
            Some(index) => ShardReader::open_indexed(&s.path, index.clone()),
            None => ShardReader::open(&s.path),
        };
        let checked = reader.and_then(|r| {
            if let (true, Some(sha)) = (verify, &s.sha256) {
                r.verify_sha256(sha)?;
            }
            if verify {
                r.check_frames()?;
            }
            if let Some(n) = s.samples
                && n != r.len()
            {
                return Err(ShardError::Format {
                    path: s.path.clone(),
                    offset: 0,
                    message: format!("the catalog records {n} samples, the shard has {}", r.len()),
                });
            }
            Ok(r)
        });
        match checked {
            Ok(r) => open.push(Arc::new(r)),
            Err(e) => {
                tracing::error!("{e}");
                problems.push(ShardProblem {
                    path: s.path.clone(),
                    samples: s.samples,
                    error: e.to_string(),
                });
            }
        }
    }
    (open, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_file_names() {
        assert!(glob_match(b"train-*.tar", b"train-000001.tar"));
        assert!(glob_match(b"*.tar", b"x.tar"));
        assert!(!glob_match(b"*.tar", b"x.tar.tmp"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"a?c", b"ac"));
    }

    #[test]
    fn class_files_in_every_layout() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.txt");
        std::fs::write(&p, "walk\nrun\n\n").unwrap();
        assert_eq!(read_class_file(&p).unwrap(), vec!["walk", "run"]);
        std::fs::write(&p, "1,run\n0,walk\n").unwrap();
        assert_eq!(read_class_file(&p).unwrap(), vec!["walk", "run"]);
        std::fs::write(&p, "walk,0\nskip,2\n").unwrap();
        assert_eq!(
            read_class_file(&p).unwrap(),
            vec!["walk", "class_1", "skip"]
        );
        std::fs::write(&p, "\n").unwrap();
        assert!(read_class_file(&p).is_err());
    }

    /// A split folder with an index is read through it: the shard a rebuild replaced
    /// is left out, the recorded checksums come along, and a listed name that leaves
    /// the folder is refused.
    #[test]
    fn split_folders_are_read_through_their_index() {
        let dir = tempfile::tempdir().unwrap();
        let split = dir.path().join("train");
        std::fs::create_dir(&split).unwrap();
        for f in ["train-000001.tar", "train-000002.tar", "train-000003.tar"] {
            std::fs::write(split.join(f), b"").unwrap();
        }
        std::fs::write(split.join("classes.txt"), "walk\nrun\n").unwrap();
        let spec = dir.path().to_str().unwrap();
        let names = |d: &SplitData| -> Vec<String> {
            d.shards
                .iter()
                .map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        // Without an index, every .tar file.
        assert_eq!(names(&shards_split(spec, "train", true).unwrap()).len(), 3);
        let index = |url: &str| {
            serde_json::json!({
                "__kind__": "wids-shard-index-v1", "wids_version": 1, "name": "d/r/train",
                "shardlist": [
                    {"url": "train-000001.tar", "nsamples": 7, "sha256": "ab"},
                    {"url": url, "nsamples": 2},
                ],
            })
            .to_string()
        };
        std::fs::write(split.join("index.json"), index("train-000003.tar")).unwrap();
        for spec in [spec.to_owned(), split.to_str().unwrap().to_owned()] {
            let d = shards_split(&spec, "train", true).unwrap();
            assert_eq!(names(&d), ["train-000001.tar", "train-000003.tar"]);
            assert_eq!(d.shards[0].sha256.as_deref(), Some("ab"));
            assert_eq!(d.shards[0].samples, Some(7));
            assert_eq!(d.shards[1].sha256, None);
        }
        for hostile in ["../x.tar", "/etc/x.tar", "sub/x.tar", "index.json"] {
            std::fs::write(split.join("index.json"), index(hostile)).unwrap();
            let e = shards_split(spec, "train", true).unwrap_err().to_string();
            assert!(e.contains("index.json") && e.contains(hostile), "{e}");
        }
        // classes.txt in the split folder is found from the folder above it.
        assert_eq!(
            find_class_file(spec, "train").unwrap(),
            split.join("classes.txt")
        );
    }
}
