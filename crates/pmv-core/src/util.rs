//! Small helpers shared by every stage: clocks, hashing, atomic file replacement.
//!
//! Nothing here knows about datasets or the catalog; it must stay free of policy.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// Seconds since the Unix epoch, as stored in every catalog timestamp column.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 3339 (UTC, seconds) rendering of a catalog timestamp.
pub fn rfc3339(unix: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Lower-case hex SHA-256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lower-case hex SHA-256 and length of a whole file, streamed in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    sha256_read(fs_err::File::open(path)?)
}

fn sha256_read(mut file: impl Read) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), len))
}

/// Why [`open_regular`] did not open a path.
#[derive(Debug)]
pub enum OpenRegularError {
    /// The last component is a symbolic link.
    Symlink,
    /// It is not a regular file: a directory, a FIFO, a device ... ([`file_kind`]).
    NotRegular(&'static str),
    /// The open or the `fstat` failed.
    Io(std::io::Error),
}

/// Opens a regular file for reading through one descriptor: no symlink is followed at
/// the last component (`O_NOFOLLOW`), opening waits on no FIFO (`O_NONBLOCK`) and takes
/// no terminal (`O_NOCTTY`), and what was opened must be a regular file. Everything
/// read from the descriptor is that one file's bytes, whatever the path names later.
pub fn open_regular(path: &Path) -> Result<(std::fs::File, std::fs::Metadata), OpenRegularError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                OpenRegularError::Symlink
            } else {
                OpenRegularError::Io(e)
            }
        })?;
    let meta = file.metadata().map_err(OpenRegularError::Io)?;
    if !meta.file_type().is_file() {
        return Err(OpenRegularError::NotRegular(file_kind(&meta)));
    }
    Ok((file, meta))
}

/// What a file that is not a regular file is, in a word or two.
pub fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_file() {
        "regular file"
    } else if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else if t.is_symlink() {
        "symbolic link"
    } else {
        "special file"
    }
}

/// [`open_regular`] with its refusals as I/O errors that name the path (kind
/// `InvalidInput` for a symlink or anything else that is not a regular file). For files
/// under a final name in the root, where a symlink would let the bytes change behind a
/// verified record.
pub fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    open_regular(path)
        .map(|(file, _)| file)
        .map_err(|e| match e {
            OpenRegularError::Symlink => std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is a symbolic link", path.display()),
            ),
            OpenRegularError::NotRegular(_) => std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", path.display()),
            ),
            OpenRegularError::Io(e) => {
                std::io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
            }
        })
}

/// [`sha256_file`] through [`open_no_follow`].
pub fn sha256_regular_file(path: &Path) -> std::io::Result<(String, u64)> {
    sha256_read(open_no_follow(path)?)
}

/// Replaces `path` with `bytes` so that a reader sees either the old or the new file,
/// never a torn one: write a sibling temp file, fsync it, rename it over `path`, then
/// fsync the directory so the rename itself survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut f = fs_err::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    if let Err(e) = fs_err::rename(&tmp, path) {
        let _ = fs_err::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// fsyncs a directory so that entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs_err::File::open(dir)?.sync_all()
}

/// Formats an integer with thin thousands separators for people (`76,447`).
pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Formats a byte count in binary units for people (`1.4 GiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_grouped() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1,000");
        assert_eq!(group_digits(76447), "76,447");
        assert_eq!(group_digits(1234567), "1,234,567");
    }

    #[test]
    fn bytes_are_humane() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file may remain");
    }
}
