//! The `local` source: files on a local or mounted disk (a videomae or jsonl list's
//! paths, the files beside the upstream xinpianchang tree, a folder given with
//! `fetch --import-dir`), and the rules for reading them.
//!
//! Owns the folders local files may be read from ([`LocalRoots`]: a manifest's own
//! folder tree, `--base-dir`, `--import-dir`, the configuration's `local_roots`), the
//! one check every local path passes, at ingest and again when it is read
//! ([`LocalRoots::check`]: real paths, symlinks and `..` resolved), and the opening of a
//! source through one descriptor ([`LocalRoots::open`]: no symlink at the last step, a
//! regular file, no blocking on a FIFO, still inside the allowed folders once open), so
//! that the bytes the fetch stage hashes and stores are those of that one file. It never
//! writes, and never puts a byte of a file into a message.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::{Offline, Resolved, SourceKind, Target};
use crate::net::{ErrorClass, Failure};
use pmv_core::util::{OpenRegularError, file_kind, open_regular};

/// Folders named in a message before the rest are only counted.
const NAMED_ROOTS: usize = 4;

/// The folders local files may be read from, as real paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalRoots {
    dirs: Vec<PathBuf>,
}

/// Why a local path may not be read.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("local path '{}' is not absolute", .0.display())]
    NotAbsolute(PathBuf),
    #[error("{} is outside the folders local files may be read from ({allowed}); name its folder with --base-dir, --import-dir or local_roots in the configuration", shown(.path, .real))]
    Outside {
        path: PathBuf,
        real: PathBuf,
        allowed: String,
    },
    #[error("{} is a symbolic link; local files are read only from regular files (name the file it points to)", .0.display())]
    Symlink(PathBuf),
    #[error("{} is not a regular file (a {kind})", .path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("cannot read local file {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `path`, and where it really leads when that differs.
fn shown(path: &Path, real: &Path) -> String {
    if path == real {
        path.display().to_string()
    } else {
        format!("{} (really {})", path.display(), real.display())
    }
}

impl LocalError {
    /// The failure a fetch records: refusals are permanent `bad_url`, a file that is
    /// not there or not a file `local_missing`.
    pub fn into_failure(self) -> Failure {
        let class = match &self {
            LocalError::NotAbsolute(_) | LocalError::Outside { .. } | LocalError::Symlink(_) => {
                ErrorClass::BadUrl
            }
            LocalError::NotRegular { .. } | LocalError::Io { .. } => ErrorClass::LocalMissing,
        };
        Failure::new(class, self.to_string())
    }
}

/// A local source, opened for reading.
#[derive(Debug)]
pub struct LocalFile {
    pub file: std::fs::File,
    /// Where the opened file really is.
    pub path: PathBuf,
    /// Its metadata when it was opened.
    pub meta: std::fs::Metadata,
}

impl LocalFile {
    pub fn len(&self) -> u64 {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.len() == 0
    }

    /// The permission bits a copy may have: the source's read and write bits, never
    /// more (a copy is no wider than its source).
    pub fn copy_mode(&self) -> u32 {
        self.meta.mode() & 0o666
    }

    /// Whether the file changed since it was opened (its length or modification time).
    pub fn changed(&self) -> std::io::Result<bool> {
        let now = self.file.metadata()?;
        Ok(now.len() != self.meta.len()
            || now.mtime() != self.meta.mtime()
            || now.mtime_nsec() != self.meta.mtime_nsec())
    }
}

impl LocalRoots {
    /// The folders, each resolved to its real path (one that does not exist is kept as
    /// written, made absolute); folders inside another are dropped.
    pub fn new<P: AsRef<Path>>(dirs: impl IntoIterator<Item = P>) -> LocalRoots {
        let mut roots = LocalRoots::default();
        for d in dirs {
            roots.add(d.as_ref());
        }
        roots
    }

    /// Adds a folder (see [`LocalRoots::new`]).
    pub fn add(&mut self, dir: &Path) {
        let dir = match std::path::absolute(dir) {
            Ok(abs) => real_path(&abs).unwrap_or_else(|_| normalize(&abs)),
            Err(_) => return,
        };
        if self.contains(&dir) {
            return;
        }
        self.dirs.retain(|d| !d.starts_with(&dir));
        self.dirs.push(dir);
        self.dirs.sort();
    }

    /// Every folder of both.
    pub fn union(&self, other: &LocalRoots) -> LocalRoots {
        let mut out = self.clone();
        for d in &other.dirs {
            if !out.contains(d) {
                out.dirs.retain(|x| !x.starts_with(d));
                out.dirs.push(d.clone());
            }
        }
        out.dirs.sort();
        out
    }

    /// The folders, sorted.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// Whether a real path lies in one of the folders (whole components compared).
    pub fn contains(&self, real: &Path) -> bool {
        self.dirs.iter().any(|d| real.starts_with(d))
    }

    /// The folders for a message: the first few, then how many more.
    pub fn describe(&self) -> String {
        if self.dirs.is_empty() {
            return "none".into();
        }
        let mut s = self
            .dirs
            .iter()
            .take(NAMED_ROOTS)
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if self.dirs.len() > NAMED_ROOTS {
            s.push_str(&format!(" and {} more", self.dirs.len() - NAMED_ROOTS));
        }
        s
    }

    /// The one check every local path passes, at ingest and when it is read: its
    /// real path (symlinks and `..` resolved by the file system; for a file that does
    /// not exist yet, its nearest existing folder resolved) must lie inside one of the
    /// folders. Returns that real path, which is what the catalog stores.
    pub fn check(&self, path: &Path) -> Result<PathBuf, LocalError> {
        if !path.is_absolute() {
            return Err(LocalError::NotAbsolute(path.to_owned()));
        }
        let real = real_path(path).map_err(|source| LocalError::Io {
            path: path.to_owned(),
            source,
        })?;
        if self.contains(&real) {
            Ok(real)
        } else {
            Err(LocalError::Outside {
                path: path.to_owned(),
                real,
                allowed: self.describe(),
            })
        }
    }

    /// Opens a local source for reading through one descriptor: the path passes
    /// [`check`](Self::check); its last component may not be a symlink
    /// (`O_NOFOLLOW`); opening does not wait on a FIFO (`O_NONBLOCK`); it must be a
    /// regular file; and where the descriptor really is must still be inside the
    /// folders (a folder on the way may have been swapped for a symlink meanwhile).
    /// Everything read from [`LocalFile::file`] is that file's bytes.
    pub fn open(&self, path: &Path) -> Result<LocalFile, LocalError> {
        let real = self.check(path)?;
        let (file, meta) = open_regular(path).map_err(|e| match e {
            OpenRegularError::Symlink => LocalError::Symlink(path.to_owned()),
            OpenRegularError::NotRegular(kind) => LocalError::NotRegular {
                path: path.to_owned(),
                kind,
            },
            OpenRegularError::Io(source) => LocalError::Io {
                path: path.to_owned(),
                source,
            },
        })?;
        let opened = opened_path(&file, &meta, &real);
        if !self.contains(&opened) {
            return Err(LocalError::Outside {
                path: path.to_owned(),
                real: opened,
                allowed: self.describe(),
            });
        }
        Ok(LocalFile {
            file,
            path: opened,
            meta,
        })
    }
}

impl fmt::Display for LocalRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Where an open descriptor's file really is: `/proc/self/fd/N` on Linux; elsewhere
/// (or without `/proc`) `real` when the file found there is the one opened, else a
/// path that lies in no folder.
fn opened_path(file: &std::fs::File, meta: &std::fs::Metadata, real: &Path) -> PathBuf {
    use std::os::fd::AsRawFd;
    if let Ok(p) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        && p.is_absolute()
    {
        return p;
    }
    match std::fs::metadata(real) {
        Ok(m) if m.dev() == meta.dev() && m.ino() == meta.ino() => real.to_owned(),
        _ => PathBuf::from("(a file that moved while it was opened)"),
    }
}

/// The real path of `path` (absolute): symlinks and `..` resolved by the file system.
/// For a path that does not exist (yet), its nearest existing ancestor is resolved and
/// the rest appended as written, with `..` folded lexically.
pub fn real_path(path: &Path) -> std::io::Result<PathBuf> {
    match std::fs::canonicalize(path) {
        Ok(p) => return Ok(p),
        Err(e) if missing(&e) => {}
        Err(e) => return Err(e),
    }
    let comps: Vec<Component<'_>> = path.components().collect();
    for n in (1..comps.len()).rev() {
        let prefix: PathBuf = comps[..n].iter().collect();
        match std::fs::canonicalize(&prefix) {
            Ok(mut base) => {
                for c in &comps[n..] {
                    match c {
                        Component::ParentDir => {
                            base.pop();
                        }
                        Component::Normal(x) => base.push(x),
                        _ => {}
                    }
                }
                return Ok(base);
            }
            Err(e) if missing(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(normalize(path))
}

fn missing(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

/// Lexical normalisation: drops `.` and folds `..` into the parent, without reading
/// symlinks.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Resolving a local source: the path must be absolute and name a regular file (not
/// a symlink). The allowed folders are checked where the file is read, with
/// [`LocalRoots::open`].
pub fn resolve(location: &str) -> Result<Resolved, Failure> {
    let path = absolute(location)?;
    let meta = std::fs::symlink_metadata(&path).map_err(|e| {
        LocalError::Io {
            path: path.clone(),
            source: e,
        }
        .into_failure()
    })?;
    if meta.file_type().is_symlink() {
        return Err(LocalError::Symlink(path).into_failure());
    }
    if !meta.is_file() {
        return Err(LocalError::NotRegular {
            kind: file_kind(&meta),
            path,
        }
        .into_failure());
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
    let path = absolute(location)?;
    let note = match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => {
            "a symbolic link: refused (local files are read only from regular files)".into()
        }
        Ok(m) if m.is_file() => format!(
            "read through one opened file if inside the allowed folders, imported by hard link or copy ({} bytes)",
            m.len()
        ),
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
        paths: vec![],
    })
}

fn absolute(location: &str) -> Result<PathBuf, Failure> {
    let path = Path::new(location);
    if !path.is_absolute() {
        return Err(LocalError::NotAbsolute(path.to_owned()).into_failure());
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
    /// Indexes the folders (a few levels deep; symlinks, to folders or files, are not
    /// followed). Unreadable entries are skipped with a warning.
    pub fn build(dirs: &[PathBuf]) -> Option<ImportIndex> {
        if dirs.is_empty() {
            return None;
        }
        let video: &[&str] = pmv_core::Role::Video.extensions();
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
    pub fn find(&self, key: &str, role: pmv_core::Role) -> Option<&Path> {
        let map = match role {
            pmv_core::Role::Video => &self.videos,
            pmv_core::Role::Cover => &self.covers,
        };
        map.get(key)
            .or_else(|| map.get(pmv_core::ids::file_stem(key).as_ref()))
            .map(PathBuf::as_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_paths_resolve_symlinks_and_dots_even_for_missing_files() {
        let t = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(t.path()).unwrap();
        std::fs::create_dir_all(base.join("tree/sub")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::os::unix::fs::symlink(base.join("outside"), base.join("tree/out")).unwrap();
        let real = |p: &str| real_path(&base.join(p)).unwrap();
        assert_eq!(real("tree/sub/../a.mp4"), base.join("tree/a.mp4"));
        assert_eq!(real("tree/out/x.mp4"), base.join("outside/x.mp4"));
        assert_eq!(real("tree/out/../y.mp4"), base.join("y.mp4"));
        assert_eq!(
            real("tree/missing/../../outside/z.mp4"),
            base.join("outside/z.mp4")
        );

        let roots = LocalRoots::new([base.join("tree")]);
        assert!(roots.check(&base.join("tree/sub/a.mp4")).is_ok());
        for bad in ["tree/out/x.mp4", "tree/../outside/x.mp4", "tree2/x.mp4"] {
            let e = roots.check(&base.join(bad)).unwrap_err();
            assert!(matches!(e, LocalError::Outside { .. }), "{bad}: {e}");
        }
        assert!(matches!(
            roots.check(Path::new("rel/a.mp4")),
            Err(LocalError::NotAbsolute(_))
        ));
    }

    #[test]
    fn roots_keep_the_outermost_folders() {
        let t = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(t.path()).unwrap();
        let roots = LocalRoots::new([base.join("a/b"), base.join("a"), base.join("c")]);
        assert_eq!(roots.dirs(), &[base.join("a"), base.join("c")]);
        assert!(roots.contains(&base.join("a/b/x")));
        assert!(!roots.contains(&base.join("ab/x")), "whole components");
        let more = roots.union(&LocalRoots::new([base.join("d"), base.join("c/e")]));
        assert_eq!(more.dirs().len(), 3);
    }

    #[test]
    fn opening_refuses_symlinks_fifos_and_folders() {
        let t = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(t.path()).unwrap();
        let roots = LocalRoots::new([&base]);
        std::fs::write(base.join("a.mp4"), b"bytes").unwrap();
        std::os::unix::fs::symlink(base.join("a.mp4"), base.join("link.mp4")).unwrap();
        let f = roots.open(&base.join("a.mp4")).unwrap();
        assert_eq!((f.len(), f.path.clone()), (5, base.join("a.mp4")));
        assert!(matches!(
            roots.open(&base.join("link.mp4")),
            Err(LocalError::Symlink(_))
        ));
        let fifo = base.join("fifo.mp4");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        match roots.open(&fifo) {
            Err(LocalError::NotRegular { kind, .. }) => assert_eq!(kind, "FIFO"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            roots.open(&base),
            Err(LocalError::NotRegular { .. })
        ));
        let e = roots.open(&base.join("missing.mp4")).unwrap_err();
        assert_eq!(e.into_failure().class, ErrorClass::LocalMissing);
    }
}
