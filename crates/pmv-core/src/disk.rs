//! The disk a path lives on: its free space and its mount point, for checks before
//! writing and for messages that name the disk when it is full.
//!
//! Owns the `statvfs` call and the description of a full disk. It never writes or
//! deletes anything.

use std::path::{Path, PathBuf};

use crate::util::human_bytes;

/// The space of one file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged writer may still use (`f_bavail`).
    pub avail: u64,
    /// The file system's size.
    pub total: u64,
}

/// The space of the file system holding `path`.
pub fn space(path: &Path) -> std::io::Result<Space> {
    let v = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
    let unit = if v.f_frsize > 0 {
        v.f_frsize
    } else {
        v.f_bsize
    };
    Ok(Space {
        avail: v.f_bavail.saturating_mul(unit),
        total: v.f_blocks.saturating_mul(unit),
    })
}

/// The mount point of the file system holding `path`: its highest ancestor on the
/// same device (the path itself when that cannot be told).
pub fn mount_point(path: &Path) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let Ok(start) = std::fs::canonicalize(path) else {
        return path.to_owned();
    };
    let Ok(dev) = std::fs::metadata(&start).map(|m| m.dev()) else {
        return start;
    };
    let mut top = start.clone();
    for a in start.ancestors().skip(1) {
        match std::fs::metadata(a) {
            Ok(m) if m.dev() == dev => top = a.to_owned(),
            _ => break,
        }
    }
    top
}

/// `the disk mounted at /data (12.0 MiB free of 100.0 GiB)`, for messages about the
/// disk holding `path` (whatever can be told of it).
pub fn describe(path: &Path) -> String {
    let mount = mount_point(path);
    match space(path) {
        Ok(s) => format!(
            "the disk mounted at {} ({} free of {})",
            mount.display(),
            human_bytes(s.avail),
            human_bytes(s.total)
        ),
        Err(_) => format!("the disk mounted at {}", mount.display()),
    }
}

/// Whether an I/O error says the disk (or the user's quota on it) is full.
pub fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == std::io::ErrorKind::StorageFull
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_of_a_temporary_folder_is_described() {
        let dir = tempfile::tempdir().unwrap();
        let s = space(dir.path()).unwrap();
        assert!(s.total > 0 && s.avail <= s.total);
        let m = mount_point(dir.path());
        assert!(dir.path().canonicalize().unwrap().starts_with(&m), "{m:?}");
        assert!(describe(dir.path()).starts_with("the disk mounted at /"));
        assert!(is_full(&std::io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(!is_full(&std::io::Error::from_raw_os_error(libc::EIO)));
    }
}
