//! Room on the disk for downloads. Before a file is written, its remaining bytes,
//! plus the bytes other downloads in flight still expect, plus the reserve
//! (`fetch.min_free`: room for the catalog's journal and the other stages) must be
//! free on the disk that holds the data root; a file of unknown size is stopped when
//! its growth reaches the reserve; a write that finds the disk full (ENOSPC, EDQUOT)
//! ends the download. A file too large for the room left is skipped (smaller ones may
//! still fit); a disk whose reserve is reached, or that filled up, stops the run from
//! starting more downloads. Either way the run ends with an error that names the disk
//! and its free space.
//!
//! Owns the claims of the downloads in flight, the [`NoSpace`] error and a test hook;
//! it never deletes a file (the downloader removes a partial file that cannot
//! complete).
//!
//! The test hook exists in debug builds only (release builds ignore it): with
//! `PMV_DATA_TEST_DISK_SIZE=<bytes>`, the data root's disk is taken to be that large,
//! with the files under the root as its only contents, and a download's write past
//! its end fails with ENOSPC after writing what fits. The integration tests use it
//! where they cannot mount a small file system.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::net::settings::FetchSettings;
use pmv_core::disk::{self, Space};
use pmv_core::util::human_bytes;

/// A download that does not fit on the disk: the run stops starting downloads.
#[derive(Debug, Clone)]
pub struct NoSpace {
    /// The file being written.
    pub path: PathBuf,
    /// `dataset/item role`, when known.
    pub item: Option<String>,
    pub mount: PathBuf,
    pub free: u64,
    pub reserve: Option<u64>,
    /// The bytes the download still needed, when known.
    pub needed: Option<u64>,
    /// The disk filled up while writing (the partial file was removed), rather than
    /// being found too full before.
    pub filled: bool,
}

impl NoSpace {
    fn new(path: &Path, space: Option<Space>, reserve: Option<u64>, needed: Option<u64>) -> Self {
        NoSpace {
            path: path.to_owned(),
            item: None,
            mount: disk::mount_point(path.parent().unwrap_or(path)),
            free: space
                .or_else(|| disk::space(path.parent().unwrap_or(path)).ok())
                .map_or(0, |s| s.avail),
            reserve,
            needed,
            filled: false,
        }
    }

    /// The disk filled up while `path` was written.
    pub(crate) fn filled(path: &Path) -> Self {
        NoSpace {
            filled: true,
            ..NoSpace::new(path, None, None, None)
        }
    }

    /// Whether no download can go on (the disk filled up, or its reserve is reached),
    /// rather than this file being too large for the room left.
    pub fn stops_run(&self) -> bool {
        self.filled || self.needed.is_none()
    }

    /// What was being written: the item when known, else the file.
    fn what(&self) -> String {
        match &self.item {
            Some(i) => format!("{i} ({})", self.path.display()),
            None => self.path.display().to_string(),
        }
    }
}

impl std::fmt::Display for NoSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mount = self.mount.display();
        let free = human_bytes(self.free);
        let kept = |r: u64| {
            format!(
                "{} is kept free (--min-free, fetch.min_free)",
                human_bytes(r)
            )
        };
        if self.filled {
            write!(
                f,
                "the disk mounted at {mount} is full ({free} free): writing {} failed, and \
                 the partial file was removed; free some space on it and run again",
                self.what()
            )
        } else {
            match (self.needed, self.reserve) {
                (Some(n), Some(r)) => write!(
                    f,
                    "not enough space on the disk mounted at {mount}: {} needs {} more, {free} \
                     is free and {}; free some space on it and run again (partial files are \
                     resumed)",
                    self.what(),
                    human_bytes(n),
                    kept(r)
                ),
                (None, Some(r)) => write!(
                    f,
                    "not enough space on the disk mounted at {mount}: {free} is free and {}, \
                     reached before or while writing {} (of unknown length; a partial file \
                     was removed); free some space on it and run again",
                    kept(r),
                    self.what()
                ),
                _ => write!(
                    f,
                    "not enough space on the disk mounted at {mount} for {}: {free} free",
                    self.what()
                ),
            }
        }
    }
}

/// The root's disk as downloads see it.
pub(crate) struct Disk {
    root: PathBuf,
    settings: FetchSettings,
    /// Bytes the downloads in flight still expect to write.
    claimed: Mutex<u64>,
    /// The test hook's disk size (debug builds).
    fake: Option<u64>,
}

impl Disk {
    pub fn new(root: &Path, settings: &FetchSettings) -> Arc<Disk> {
        #[cfg(debug_assertions)]
        let fake = std::env::var("PMV_DATA_TEST_DISK_SIZE")
            .ok()
            .and_then(|v| pmv_core::size::parse_size(&v).ok());
        #[cfg(not(debug_assertions))]
        let fake = None;
        Arc::new(Disk {
            root: root.to_owned(),
            settings: settings.clone(),
            claimed: Mutex::new(0),
            fake,
        })
    }

    /// The space of the disk (`None` when it cannot be told: downloads go on).
    fn space(&self) -> Option<Space> {
        let real = disk::space(&self.root)
            .map_err(|e| {
                tracing::debug!("cannot read the free space of {}: {e}", self.root.display())
            })
            .ok();
        match self.fake {
            Some(size) => {
                let free = size.saturating_sub(used_under(&self.root));
                Some(Space {
                    avail: real.map_or(free, |r| r.avail.min(free)),
                    total: size,
                })
            }
            None => real,
        }
    }

    /// The free space as downloads see it.
    pub fn free(&self) -> Option<u64> {
        self.space().map(|s| s.avail)
    }

    fn reserve(&self, space: &Space) -> u64 {
        self.settings.reserve(space.total)
    }

    /// Claims room for `needed` more bytes of `path` (0 when its length is unknown:
    /// the reserve must still be free); refused when the free space, less what the
    /// other downloads still expect, does not hold them and the reserve.
    pub fn claim(self: &Arc<Self>, path: &Path, needed: u64) -> Result<Claim, NoSpace> {
        let mut claimed = self.claimed.lock().expect("claims lock");
        if let Some(space) = self.space() {
            let reserve = self.reserve(&space);
            let wanted = claimed.saturating_add(needed).saturating_add(reserve);
            if space.avail < wanted {
                let mut e = NoSpace::new(path, Some(space), Some(reserve), Some(needed));
                // What others expect is not free for this one.
                e.free = space.avail.saturating_sub(*claimed);
                if needed == 0 {
                    e.needed = None;
                }
                return Err(e);
            }
        }
        *claimed += needed;
        Ok(Claim {
            disk: Arc::clone(self),
            left: needed,
            open_ended: needed == 0,
        })
    }

    /// For a file of unknown length: whether the reserve is still free once the
    /// others' claims are counted.
    pub fn room_left(&self, path: &Path) -> Result<(), NoSpace> {
        let claimed = *self.claimed.lock().expect("claims lock");
        if let Some(space) = self.space() {
            let reserve = self.reserve(&space);
            if space.avail < claimed.saturating_add(reserve) {
                let mut e = NoSpace::new(path, Some(space), Some(reserve), None);
                e.free = space.avail.saturating_sub(claimed);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Writes a download's bytes (through the test hook in debug builds).
    pub fn write_all(&self, file: &mut impl Write, buf: &[u8]) -> std::io::Result<()> {
        if let Some(size) = self.fake {
            let room = size.saturating_sub(used_under(&self.root));
            if (buf.len() as u64) > room {
                file.write_all(&buf[..room as usize])?;
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        file.write_all(buf)
    }
}

/// Room claimed by one download, given back as its bytes are written and when it
/// ends.
pub(crate) struct Claim {
    disk: Arc<Disk>,
    left: u64,
    open_ended: bool,
}

impl Claim {
    pub fn wrote(&mut self, n: u64) {
        let d = n.min(self.left);
        if d > 0 {
            self.left -= d;
            *self.disk.claimed.lock().expect("claims lock") -= d;
        }
    }

    /// Whether the file's length was unknown when the room was claimed.
    pub fn open_ended(&self) -> bool {
        self.open_ended
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.left > 0 {
            *self.disk.claimed.lock().expect("claims lock") -= self.left;
        }
    }
}

/// The bytes of the files under `dir` (the test hook's idea of a disk's use).
fn used_under(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
