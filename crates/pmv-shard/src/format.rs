//! The shard format: POSIX tar files in the WebDataset layout, with fixed-shape uint8 frame
//! tensors stored as NumPy `.npy` members whose data is 64-byte aligned in the file (raw
//! samples) or as one JPEG member per frame, `<key>.c{KK}f{TTT}.jpg` (JPEG samples).
//!
//! This module owns the bytes of a shard: sample keys, the tar and npy headers, the
//! per-sample metadata document and the writer that streams samples into any `Write`
//! (hashing as it goes). It never decodes video, never opens the catalog and never
//! decides where a shard lives; the shard stage does that. The reader is in
//! [`super::reader`]. DATA.md documents the format for users of other languages.

use std::io::Write;
use std::path::{Path, PathBuf};

use pmv_core::frame_recipe::Codec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Tar block size.
pub const BLOCK: u64 = 512;
/// Alignment of every frame array inside a shard file.
pub const ALIGN: u64 = 64;
/// Longest sample key: `<key>.frames.npy` and `<key>.c{KK}f{TTTT}.jpg` then fit a plain
/// ustar name (100 bytes).
pub const MAX_KEY_BYTES: usize = 80;
/// Member name suffixes, after `<key>.`.
pub const FRAMES_EXT: &str = "frames.npy";
pub const CLS_EXT: &str = "cls";
pub const JSON_EXT: &str = "json";
pub const JPG_EXT: &str = "jpg";
pub const TXT_EXT: &str = "txt";
/// `<key>.json` keys the writer adds to a JPEG sample's metadata: its codec and its
/// decoded `(clips, T, H, W, 3)`.
pub const META_CODEC: &str = "frame_codec";
pub const META_SHAPE: &str = "frame_shape";

/// The member name of frame `t` of clip `k` of a JPEG sample: `<key>.c{KK}f{TTT}.jpg`
/// (zero-padded; WebDataset decoders pick the frames up by the `.jpg` suffix).
pub fn frame_member_name(key: &str, k: usize, t: usize) -> String {
    format!("{key}.{}", frame_member_ext(k, t))
}

/// The extension part (after `<key>.`) of [`frame_member_name`].
pub fn frame_member_ext(k: usize, t: usize) -> String {
    format!("c{k:02}f{t:03}.{JPG_EXT}")
}

/// Parses the extension of a JPEG frame member (`c00f000.jpg`, also `.jpeg`) into
/// `(clip, frame)`; `None` for any other member.
pub fn parse_frame_member_ext(ext: &str) -> Option<(usize, usize)> {
    let stem = ext
        .strip_suffix(".jpg")
        .or_else(|| ext.strip_suffix(".jpeg"))?;
    let (k, t) = stem.strip_prefix('c')?.split_once('f')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 6 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(k) || !digits(t) {
        return None;
    }
    Some((k.parse().ok()?, t.parse().ok()?))
}

/// Length of the hash suffix of a shortened key.
const KEY_HASH_HEX: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("shard {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("shard {path}: at byte {offset}: {message}")]
    Format {
        path: PathBuf,
        offset: u64,
        message: String,
    },
    #[error("shard {path}: SHA-256 is {actual}, expected {expected}")]
    Hash {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("shard {path}: sample {key}: {message}")]
    Sample {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The WebDataset-safe sample key of an item key.
///
/// WebDataset groups tar members into samples by the part of the file name before its
/// first dot, so a key may not contain `.`; it may not contain `/` either. Bytes of
/// `[A-Za-z0-9_-]` are kept, every other byte is written `%XX` (upper-case hex), which
/// keeps distinct ids distinct. A key longer than [`MAX_KEY_BYTES`] is cut (never inside
/// an escape) and ends in `~` plus 16 hex digits of the SHA-256 of the whole item key;
/// `~` never appears in an uncut key, so a cut key cannot collide with an uncut one.
pub fn sample_key(item_key: &str) -> String {
    let mut out = String::with_capacity(item_key.len());
    let mut cuts = Vec::with_capacity(item_key.len());
    for &b in item_key.as_bytes() {
        cuts.push(out.len());
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[(b >> 4) as usize]));
            out.push(char::from(b"0123456789ABCDEF"[(b & 15) as usize]));
        }
    }
    if out.len() <= MAX_KEY_BYTES {
        return out;
    }
    let keep = MAX_KEY_BYTES - 1 - KEY_HASH_HEX;
    let cut = cuts.iter().copied().rfind(|&c| c <= keep).unwrap_or(0);
    out.truncate(cut);
    let digest = Sha256::digest(item_key.as_bytes());
    out.push('~');
    out.push_str(&hex::encode(&digest[..KEY_HASH_HEX / 2]));
    out
}

/// Whether `key` could have come from [`sample_key`].
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_BYTES
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'%' | b'~'))
}

/// The `<key>.json` member: what a sample is and where its frames came from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SampleMeta {
    /// The item id (the catalog's `items.key`).
    pub id: String,
    pub dataset: String,
    /// Every label of the item, ascending (multi-label sets may have several, unlabeled
    /// items none).
    pub labels: Vec<u32>,
    pub split: String,
    /// The recipe id.
    pub recipe: String,
    /// Where the video came from (URL or path), when known.
    pub source: Option<String>,
    /// SHA-256 of the source video file.
    pub sha256: String,
    /// Size of the source video file in bytes.
    pub size: u64,
    pub duration_s: Option<f64>,
    pub fps: Option<f64>,
    /// Upright display size of the source video.
    pub width: u32,
    pub height: u32,
    /// Per clip, the source frame numbers taken (after padding short videos with their
    /// last frame).
    pub frame_indices: Vec<Vec<i64>>,
    /// Anything else the shard stage records.
    #[serde(flatten, default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A sample's frames as they go into a shard.
#[derive(Debug, Clone, Copy)]
pub enum FrameData<'a> {
    /// uint8 RGB, C order; `shape`'s product bytes. Written as `<key>.frames.npy`.
    Raw(&'a [u8]),
    /// One JPEG per frame, clip-major (`clips × T` of them, each H×W), from
    /// [`crate::codec::encode_frames`] at `quality`. Written as `<key>.c{KK}f{TTT}.jpg`.
    Jpeg { quality: u8, frames: &'a [Vec<u8>] },
}

/// One sample to write.
pub struct SampleInput<'a> {
    /// A key from [`sample_key`].
    pub key: &'a str,
    /// The decoded `(clips, T, H, W, 3)`.
    pub shape: [usize; 5],
    /// The frames, raw or encoded.
    pub frames: FrameData<'a>,
    /// Written as `<key>.cls` (ASCII decimal) when present.
    pub label: Option<u32>,
    /// Written as `<key>.json`.
    pub meta: &'a SampleMeta,
    /// The cover image, written as `<key>.jpg`.
    pub jpg: Option<&'a [u8]>,
    /// The item's text, written as `<key>.txt`.
    pub txt: Option<&'a str>,
}

/// The byte range of a member's data inside a shard file.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub offset: u64,
    pub size: u64,
}

impl Member {
    pub fn end(&self) -> u64 {
        self.offset + self.size
    }
}

/// Where one sample's members lie inside a shard; the catalog keeps it as JSON
/// (`samples.members`) so a reader needs no scan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SampleIndex {
    pub key: String,
    /// The decoded `(clips, T, H, W, 3)`, whatever the codec.
    pub shape: [usize; 5],
    /// Raw samples: the frame array's data (after the npy header). JPEG samples: the
    /// span from the first frame member's data to the last one's end (the members
    /// themselves are in `frame_members`).
    pub frames: Member,
    /// How the frames are stored; absent from the JSON for raw samples.
    #[serde(default, skip_serializing_if = "Codec::is_raw")]
    pub codec: Codec,
    /// JPEG samples: each frame's JPEG, clip-major (`clips × T`); empty (and absent
    /// from the JSON) for raw samples.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frame_members: Vec<Member>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cls: Option<Member>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Member>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jpg: Option<Member>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txt: Option<Member>,
}

/// What a finished shard is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ShardSummary {
    pub bytes: u64,
    pub sha256: String,
    pub samples: usize,
}

/// The number of elements a shape holds, or `None` on overflow.
pub fn shape_len(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// An npy v1.0 header for a C-order uint8 array, padded with spaces so that the data
/// after it starts on a multiple of [`ALIGN`] bytes from the header's start.
pub fn npy_header(shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let dict = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': {tuple}, }}");
    // magic (6) + version (2) + header length (2) + dict + padding + '\n'
    let unpadded = 10 + dict.len() + 1;
    let pad = (ALIGN as usize - unpadded % ALIGN as usize) % ALIGN as usize;
    let header_len = (dict.len() + pad + 1) as u16;
    let mut out = Vec::with_capacity(unpadded + pad);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(out.len() + pad, b' ');
    out.push(b'\n');
    out
}

/// A ustar header for a regular file of `size` bytes named `name` (at most 100 bytes).
/// Every field that could vary between runs is fixed: mode 0644, uid/gid 0, mtime 0,
/// empty user and group names.
pub(crate) fn tar_header(name: &str, size: u64) -> [u8; BLOCK as usize] {
    let mut h = [0u8; BLOCK as usize];
    debug_assert!(name.len() <= 100);
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    write_size(&mut h[124..136], size);
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as eight spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// The size field: 11 octal digits when it fits (under 8 GiB), else GNU base-256.
fn write_size(field: &mut [u8], size: u64) {
    if size < 0o77777777777 {
        field.copy_from_slice(format!("{size:011o}\0").as_bytes());
    } else {
        field.fill(0);
        field[0] = 0x80;
        field[4..12].copy_from_slice(&size.to_be_bytes());
    }
}

fn padding(len: u64) -> u64 {
    (BLOCK - len % BLOCK) % BLOCK
}

/// Streams samples into a tar shard, hashing every byte written.
///
/// The output is the same for the same samples in the same order. Members of a sample
/// come in the order `frames.npy` (or the frame JPEGs, clip-major), `cls`, `json`, `jpg`,
/// `txt`. Give the writer a buffered
/// or large-write-friendly `W` (a `File` is fine: frames go out in one write each).
pub struct ShardWriter<W: Write> {
    out: W,
    path: PathBuf,
    pos: u64,
    samples: usize,
    hasher: Sha256,
}

impl<W: Write> ShardWriter<W> {
    pub fn new(out: W) -> Self {
        ShardWriter {
            out,
            path: PathBuf::new(),
            pos: 0,
            samples: 0,
            hasher: Sha256::new(),
        }
    }

    /// Names the shard in error messages.
    pub fn with_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = path.into();
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Samples appended so far.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.pos
    }

    fn sample_error(&self, key: &str, message: impl Into<String>) -> ShardError {
        ShardError::Sample {
            path: self.path.clone(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), ShardError> {
        self.out.write_all(bytes).map_err(|source| ShardError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.hasher.update(bytes);
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Writes one member made of `parts`; returns where its data lies.
    fn member(&mut self, name: &str, parts: &[&[u8]]) -> Result<Member, ShardError> {
        let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
        self.put(&tar_header(name, size))?;
        let offset = self.pos;
        for p in parts {
            self.put(p)?;
        }
        const ZEROS: [u8; BLOCK as usize] = [0; BLOCK as usize];
        self.put(&ZEROS[..padding(size) as usize])?;
        Ok(Member { offset, size })
    }

    /// Appends one sample; returns where its members lie.
    pub fn append(&mut self, s: &SampleInput<'_>) -> Result<SampleIndex, ShardError> {
        if !is_valid_key(s.key) {
            return Err(self.sample_error(
                s.key,
                "not a sample key (use format::sample_key on the item id)",
            ));
        }
        if s.shape[4] != 3 {
            return Err(self.sample_error(
                s.key,
                format!("frames must be RGB (last dimension 3), not {:?}", s.shape),
            ));
        }
        let Some(n) = shape_len(&s.shape).filter(|&n| n > 0) else {
            return Err(self.sample_error(s.key, format!("empty shape {:?}", s.shape)));
        };
        let [clips, t, h, w, _] = s.shape;
        let (codec, json) = match s.frames {
            FrameData::Raw(bytes) => {
                if bytes.len() != n {
                    return Err(self.sample_error(
                        s.key,
                        format!(
                            "{} frame bytes do not fill the shape {:?}",
                            bytes.len(),
                            s.shape
                        ),
                    ));
                }
                let json = serde_json::to_vec(s.meta)
                    .map_err(|e| self.sample_error(s.key, format!("metadata: {e}")))?;
                (Codec::Raw, json)
            }
            FrameData::Jpeg { quality, frames } => {
                let codec = Codec::Jpeg { quality };
                if frames.len() != clips * t {
                    return Err(self.sample_error(
                        s.key,
                        format!(
                            "{} JPEG frames for the shape {:?} ({} expected)",
                            frames.len(),
                            s.shape,
                            clips * t
                        ),
                    ));
                }
                for (i, f) in frames.iter().enumerate() {
                    let size = crate::codec::jpeg_size(f)
                        .map_err(|e| self.sample_error(s.key, format!("frame {i}: {e}")))?;
                    if size != (h, w) {
                        return Err(self.sample_error(
                            s.key,
                            format!(
                                "frame {i} is a {}×{} JPEG, the shape says {h}×{w}",
                                size.0, size.1
                            ),
                        ));
                    }
                }
                let mut meta = serde_json::to_value(s.meta)
                    .map_err(|e| self.sample_error(s.key, format!("metadata: {e}")))?;
                if let Some(map) = meta.as_object_mut() {
                    map.insert(META_CODEC.into(), serde_json::json!(codec));
                    map.insert(META_SHAPE.into(), serde_json::json!(s.shape));
                }
                let json = serde_json::to_vec(&meta)
                    .map_err(|e| self.sample_error(s.key, format!("metadata: {e}")))?;
                (codec, json)
            }
        };
        let (frames, frame_members) = match s.frames {
            FrameData::Raw(bytes) => {
                let header = npy_header(&s.shape);
                let npy = self.member(&format!("{}.{FRAMES_EXT}", s.key), &[&header, bytes])?;
                let frames = Member {
                    offset: npy.offset + header.len() as u64,
                    size: bytes.len() as u64,
                };
                debug_assert_eq!(frames.offset % ALIGN, 0);
                (frames, vec![])
            }
            FrameData::Jpeg { frames, .. } => {
                let mut members = Vec::with_capacity(frames.len());
                for (i, f) in frames.iter().enumerate() {
                    let name = frame_member_name(s.key, i / t, i % t);
                    members.push(self.member(&name, &[f])?);
                }
                let (first, last) = (members[0], members[members.len() - 1]);
                let span = Member {
                    offset: first.offset,
                    size: last.end() - first.offset,
                };
                (span, members)
            }
        };
        let cls = match s.label {
            Some(l) => {
                Some(self.member(&format!("{}.{CLS_EXT}", s.key), &[l.to_string().as_bytes()])?)
            }
            None => None,
        };
        let json = Some(self.member(&format!("{}.{JSON_EXT}", s.key), &[&json])?);
        let jpg = match s.jpg {
            Some(b) => Some(self.member(&format!("{}.{JPG_EXT}", s.key), &[b])?),
            None => None,
        };
        let txt = match s.txt {
            Some(t) => Some(self.member(&format!("{}.{TXT_EXT}", s.key), &[t.as_bytes()])?),
            None => None,
        };
        self.samples += 1;
        Ok(SampleIndex {
            key: s.key.to_owned(),
            shape: s.shape,
            frames,
            codec,
            frame_members,
            cls,
            json,
            jpg,
            txt,
        })
    }

    /// Ends the archive (two zero blocks), flushes and returns the output and what was
    /// written.
    pub fn finish(mut self) -> Result<(W, ShardSummary), ShardError> {
        self.put(&[0u8; 2 * BLOCK as usize])?;
        self.out.flush().map_err(|source| ShardError::Io {
            path: self.path.clone(),
            source,
        })?;
        let summary = ShardSummary {
            bytes: self.pos,
            sha256: hex::encode(self.hasher.finalize()),
            samples: self.samples,
        };
        Ok((self.out, summary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_dot_free_injective_and_bounded() {
        assert_eq!(
            sample_key("v0d00fg10000cc0bltrc77ud5sllkjug"),
            "v0d00fg10000cc0bltrc77ud5sllkjug"
        );
        assert_eq!(sample_key("a.b"), "a%2Eb");
        assert_eq!(sample_key("a%2Eb"), "a%252Eb");
        assert_eq!(sample_key("日"), "%E6%97%A5");
        let long = "x".repeat(200);
        let k = sample_key(&long);
        assert_eq!(k.len(), MAX_KEY_BYTES);
        assert!(k.contains('~'));
        assert_ne!(k, sample_key(&"x".repeat(201)));
        // A cut never splits an escape.
        let k = sample_key(&".".repeat(100));
        assert!(k.len() <= MAX_KEY_BYTES);
        let body = k.split('~').next().unwrap();
        assert_eq!(body.len() % 3, 0, "{k}");
        assert!(is_valid_key(&k));
        assert!(!is_valid_key("a.b"));
        assert!(!is_valid_key(""));
    }

    #[test]
    fn frame_member_names_parse_back() {
        assert_eq!(frame_member_name("abc", 3, 15), "abc.c03f015.jpg");
        assert_eq!(parse_frame_member_ext("c03f015.jpg"), Some((3, 15)));
        assert_eq!(parse_frame_member_ext("c3f1015.jpeg"), Some((3, 1015)));
        for bad in [
            "jpg",
            "c03f015.png",
            "cf1.jpg",
            "c1f.jpg",
            "x03f015.jpg",
            "c-1f0.jpg",
        ] {
            assert_eq!(parse_frame_member_ext(bad), None, "{bad}");
        }
        // The longest key with a four-digit frame number still fits a ustar name.
        let longest = frame_member_name(&"k".repeat(MAX_KEY_BYTES), 63, 1023);
        assert!(longest.len() <= 100, "{longest}");
    }

    #[test]
    fn npy_headers_align_data() {
        for shape in [[1, 16, 224, 224, 3], [5, 16, 288, 192, 3], [1, 1, 1, 1, 3]] {
            let h = npy_header(&shape);
            assert_eq!(h.len() % ALIGN as usize, 0);
            assert!(h.starts_with(b"\x93NUMPY\x01\x00"));
            assert_eq!(*h.last().unwrap(), b'\n');
            let text = std::str::from_utf8(&h[10..]).unwrap();
            assert!(text.contains(&format!(
                "'shape': ({}, {}, {}, {}, {})",
                shape[0], shape[1], shape[2], shape[3], shape[4]
            )));
        }
    }

    #[test]
    fn tar_headers_checksum() {
        let h = tar_header("abc.frames.npy", 1234);
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut copy = h;
        copy[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, copy.iter().map(|&b| b as u32).sum::<u32>());
        let mut f = [0u8; 12];
        write_size(&mut f, 10 << 30);
        assert_eq!(f[0], 0x80);
    }
}
