//! FLV files checked before FFmpeg reads them: the keyframe index their metadata
//! declares must fit in their bytes.
//!
//! libavformat's FLV demuxer allocates, and zeroes, 8 bytes per entry of the `times` and
//! `filepositions` arrays of an `onMetaData` `keyframes` object as soon as it reads their
//! declared length (up to 268 million), before reading a single entry. Every entry is an
//! AMF number of 9 bytes, so [`check`] refuses a file in which such an array declares
//! more entries than the bytes after it could hold. It looks for the arrays anywhere in
//! the file (the demuxer reads metadata tags wherever it meets them, resynchronising
//! over damage), streaming the file in blocks, never the whole of it into memory. It
//! never calls FFmpeg and never writes.

use super::isobmff::{Problem, ReadAt};

/// Bytes read at once.
const BLOCK: usize = 1 << 20;
/// One AMF0 number: a type byte and an 8-byte double.
const AMF_NUMBER: u64 = 9;

/// The two array keys libavformat allocates for, as AMF0 writes them (a 16-bit length,
/// the name) followed by the strict-array marker.
const KEYS: [&[u8]; 2] = [b"\x00\x05times\x0a", b"\x00\x0dfilepositions\x0a"];

/// Checks the FLV file of `len` bytes read through `src`.
pub fn check<R: ReadAt + ?Sized>(src: &R, len: u64) -> Result<(), Problem> {
    let longest = KEYS.iter().map(|k| k.len()).max().expect("keys") + 4;
    let mut buf = vec![0u8; BLOCK + longest];
    let mut pos = 0u64;
    while pos < len {
        let n = ((len - pos) as usize).min(buf.len());
        read_exact(src, pos, &mut buf[..n])?;
        for key in KEYS {
            for i in memchr::memmem::find_iter(&buf[..n], key) {
                let at = i + key.len();
                if at + 4 > n {
                    continue; // seen again, whole, at the start of the next block
                }
                let count = u64::from(u32::from_be_bytes(
                    buf[at..at + 4].try_into().expect("4 bytes"),
                ));
                let room = len - (pos + at as u64 + 4);
                if count.saturating_mul(AMF_NUMBER) > room {
                    let name = String::from_utf8_lossy(&key[2..key.len() - 1]).into_owned();
                    return Err(Problem::Forged(format!(
                        "its keyframe index ({name}) declares {count} entries of \
                         {AMF_NUMBER} bytes but {room} bytes follow"
                    )));
                }
            }
        }
        if pos + n as u64 >= len {
            break;
        }
        // The next block repeats the tail where a key and its count may straddle.
        pos += (n - longest) as u64;
    }
    Ok(())
}

fn read_exact<R: ReadAt + ?Sized>(src: &R, pos: u64, buf: &mut [u8]) -> Result<(), Problem> {
    let mut done = 0;
    while done < buf.len() {
        match src.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => {
                return Err(Problem::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the file ends before byte {}", pos + buf.len() as u64),
                )));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array(key: &[u8], count: u32, numbers: usize) -> Vec<u8> {
        let mut v = key.to_vec();
        v.extend_from_slice(&count.to_be_bytes());
        for _ in 0..numbers {
            v.push(0);
            v.extend_from_slice(&1.5f64.to_be_bytes());
        }
        v
    }

    #[test]
    fn keyframe_arrays_must_fit_in_the_file() {
        let mut ok = b"FLV\x01\x05\0\0\0\x09".to_vec();
        ok.extend(array(KEYS[0], 3, 3));
        ok.extend(array(KEYS[1], 3, 3));
        check(&ok[..], ok.len() as u64).unwrap();

        let mut forged = b"FLV\x01\x05\0\0\0\x09".to_vec();
        forged.extend(array(KEYS[0], 3, 3));
        forged.extend(array(KEYS[1], 200_000_000, 3));
        let e = check(&forged[..], forged.len() as u64).unwrap_err();
        assert!(matches!(e, Problem::Forged(_)), "{e}");
        assert!(e.to_string().contains("filepositions"), "{e}");
        assert!(e.to_string().contains("200000000 entries"), "{e}");
    }

    #[test]
    fn a_key_across_two_blocks_is_found() {
        // The first block is BLOCK + 20 bytes long and ends 6 bytes into the key.
        let mut v = vec![0u8; BLOCK + 14];
        v.extend(array(KEYS[0], 1_000_000, 1));
        v.extend([0u8; 100]);
        let e = check(&v[..], v.len() as u64).unwrap_err();
        assert!(e.to_string().contains("times"), "{e}");
        let mut v = vec![0u8; BLOCK + 14];
        v.extend(array(KEYS[0], 2, 2));
        v.extend([0u8; 100]);
        check(&v[..], v.len() as u64).unwrap();
    }
}
