//! The `local` resolver: a file on a local or mounted disk (a videomae list's paths,
//! the upstream xinpianchang tree, a folder given with `fetch --import-dir`).
//!
//! Owns the checks on the path (absolute, an existing regular file); the fetch stage
//! imports it by hard link or copy and hashes and checks it like any download. It
//! never writes.

use std::path::{Path, PathBuf};

use super::{Offline, Resolved, SourceKind, Target};
use crate::fetch::{ErrorClass, Failure};

pub fn resolve(location: &str) -> Result<Resolved, Failure> {
    let path = check(location)?;
    let meta = std::fs::metadata(&path).map_err(|e| {
        Failure::new(
            ErrorClass::LocalMissing,
            format!("cannot read local file {}: {e}", path.display()),
        )
    })?;
    if !meta.is_file() {
        return Err(Failure::new(
            ErrorClass::LocalMissing,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(Resolved {
        kind: SourceKind::Local,
        canonical_id: None,
        target: Target::Local { path },
        via: "path",
        expected: Default::default(),
        trail: vec![],
    })
}

pub fn offline(location: &str) -> Result<Offline, Failure> {
    let path = check(location)?;
    let note = match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => format!("imported by hard link or copy ({} bytes)", m.len()),
        Ok(_) => "not a regular file".into(),
        Err(e) => format!("cannot be read: {e}"),
    };
    Ok(Offline {
        kind: SourceKind::Local,
        canonical_id: None,
        download_url: None,
        lookup_url: None,
        host: "local".into(),
        note,
    })
}

fn check(location: &str) -> Result<PathBuf, Failure> {
    let path = Path::new(location);
    if !path.is_absolute() {
        return Err(Failure::new(
            ErrorClass::BadUrl,
            format!("local source '{location}' is not an absolute path"),
        ));
    }
    Ok(path.to_owned())
}

/// Files found in folders given with `fetch --import-dir`: `<id>.<ext>` by item id
/// and role (a video extension or an image extension).
#[derive(Debug, Default)]
pub struct ImportIndex {
    videos: std::collections::HashMap<String, PathBuf>,
    covers: std::collections::HashMap<String, PathBuf>,
    /// Files seen.
    pub files: usize,
}

/// How deep folders given with `--import-dir` are searched (`<class>/<id>/<id>.mp4`).
const IMPORT_DEPTH: usize = 3;

impl ImportIndex {
    /// Indexes the folders (a few levels deep; symlinked folders are not followed).
    /// Unreadable entries are skipped with a warning.
    pub fn build(dirs: &[PathBuf]) -> Option<ImportIndex> {
        if dirs.is_empty() {
            return None;
        }
        let video: &[&str] = crate::fetch::Role::Video.extensions();
        let mut index = ImportIndex::default();
        let mut stack: Vec<(PathBuf, usize)> = dirs.iter().map(|d| (d.clone(), 0)).collect();
        while let Some((dir, depth)) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "cannot read import folder: {e}");
                    continue;
                }
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    if depth < IMPORT_DEPTH {
                        stack.push((path, depth + 1));
                    }
                    continue;
                }
                if !kind.is_file() {
                    continue;
                }
                let (Some(stem), Some(ext)) = (
                    path.file_stem().and_then(|s| s.to_str()),
                    path.extension().and_then(|s| s.to_str()),
                ) else {
                    continue;
                };
                let ext = ext.to_ascii_lowercase();
                let map = if video.contains(&ext.as_str()) {
                    &mut index.videos
                } else if ["jpg", "jpeg", "png", "webp", "gif", "avif", "heic", "bmp"]
                    .contains(&ext.as_str())
                {
                    &mut index.covers
                } else {
                    continue;
                };
                index.files += 1;
                map.entry(stem.to_owned()).or_insert(path);
            }
        }
        tracing::info!(files = index.files, "import folders indexed");
        Some(index)
    }

    /// The file for an item's role: named by the item id or by its file stem.
    pub fn find(&self, key: &str, role: crate::fetch::Role) -> Option<&Path> {
        let map = match role {
            crate::fetch::Role::Video => &self.videos,
            crate::fetch::Role::Cover => &self.covers,
        };
        map.get(key)
            .or_else(|| map.get(crate::manifest::file_stem(key).as_ref()))
            .map(PathBuf::as_path)
    }
}
