//! The shard reader: maps a shard read-only and hands out each sample's members as
//! slices of the map, without copying; a JPEG sample's frames are decoded into the
//! caller's buffer ([`Sample::clip_pixels`]).
//!
//! A shard is opened either by scanning its tar headers (any tar in the WebDataset
//! layout, also one written by another tool: PAX and GNU long names, npy v1–v3 headers,
//! unaligned arrays, frame JPEGs) or from the member offsets the catalog recorded, which
//! are bounds-checked against the file. The reader never writes, never repairs, and
//! never substitutes one sample for another: a damaged sample (a frame that does not
//! decode, decodes to another size, or is missing) is an error naming it.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::format::{
    BLOCK, CLS_EXT, FRAMES_EXT, JPG_EXT, JSON_EXT, META_CODEC, Member, SampleIndex, SampleMeta,
    ShardError, TXT_EXT, frame_member_ext, parse_frame_member_ext, shape_len,
};
use pmv_core::frame_recipe::Codec;
use pmv_core::pydict::{self, PyValue};

/// A shard mapped into memory.
pub struct ShardReader {
    path: PathBuf,
    map: memmap2::Mmap,
    index: Vec<SampleIndex>,
}

/// One sample's members, borrowed from the map.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub key: &'a str,
    /// The decoded `(clips, T, H, W, 3)`, whatever the codec.
    pub shape: [usize; 5],
    /// How the frames are stored (a scanned JPEG shard whose `.json` does not say its
    /// quality reads as quality 0).
    pub codec: Codec,
    /// Raw samples: uint8 RGB, C order. Empty for JPEG samples.
    frames: &'a [u8],
    /// JPEG samples: each frame's JPEG, clip-major; checked to lie inside `map`.
    frame_members: &'a [Member],
    map: &'a [u8],
    /// The `.cls` label.
    pub label: Option<u32>,
    pub json: Option<&'a [u8]>,
    pub jpg: Option<&'a [u8]>,
    pub txt: Option<&'a str>,
    path: &'a Path,
}

impl<'a> Sample<'a> {
    /// The parsed `<key>.json`.
    pub fn meta(&self) -> Result<SampleMeta, ShardError> {
        let json = self.json.ok_or_else(|| self.error("has no .json member"))?;
        serde_json::from_slice(json).map_err(|e| self.error(format!("bad .json: {e}")))
    }

    /// A raw sample's whole frame array, `(clips, T, H, W, 3)`, straight from the map;
    /// `None` for a JPEG sample (use [`Self::clip_pixels`]).
    pub fn raw_frames(&self) -> Option<&'a [u8]> {
        self.codec.is_raw().then_some(self.frames)
    }

    /// The frames of clip `k` of a raw sample, `(T, H, W, 3)`, straight from the map.
    ///
    /// # Panics
    ///
    /// On a JPEG sample or a `k` past the clips: use [`Self::clip_pixels`], which
    /// serves both codecs.
    pub fn clip(&self, k: usize) -> &'a [u8] {
        assert!(
            self.codec.is_raw(),
            "Sample::clip serves raw samples only; {} is {}",
            self.key,
            self.codec.label()
        );
        let len = self.frames.len() / self.shape[0].max(1);
        &self.frames[k * len..(k + 1) * len]
    }

    /// Clip k as (T, H, W, 3) RGB uint8: the mapped bytes for raw samples (no copy),
    /// decoded into `buf` (libjpeg-turbo) for jpeg samples.
    ///
    /// `buf` is resized to one clip; keep it between calls to decode without
    /// allocating. A frame that does not decode, decodes to another size than the
    /// sample's, or lies outside the shard is an error naming the shard, the key and
    /// the frame member.
    pub fn clip_pixels<'s>(
        &'s self,
        k: usize,
        buf: &'s mut Vec<u8>,
    ) -> Result<&'s [u8], ShardError> {
        let [clips, t, h, w, _] = self.shape;
        if k >= clips {
            return Err(self.error(format!("no clip {k} (the sample has {clips})")));
        }
        if self.codec.is_raw() {
            return Ok(self.clip(k));
        }
        let frame = h * w * 3;
        buf.resize(t * frame, 0);
        for (i, out) in buf.chunks_exact_mut(frame).enumerate() {
            let name = || format!("{}.{}", self.key, frame_member_ext(k, i));
            let jpeg = self
                .frame_members
                .get(k * t + i)
                .and_then(|m| self.map.get(m.offset as usize..m.end() as usize))
                .ok_or_else(|| self.error(format!("{}: no such frame member", name())))?;
            crate::codec::decode_frame(jpeg, h, w, out)
                .map_err(|e| self.error(format!("{}: {e}", name())))?;
        }
        Ok(&buf[..])
    }

    /// Decodes every frame (raw samples: nothing to do); the first one that does not
    /// decode to the sample's shape is the error. What verifying a JPEG shard does.
    pub fn check_frames(&self) -> Result<(), ShardError> {
        if self.codec.is_raw() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for k in 0..self.shape[0] {
            self.clip_pixels(k, &mut buf)?;
        }
        Ok(())
    }

    fn error(&self, message: impl Into<String>) -> ShardError {
        ShardError::Sample {
            path: self.path.to_owned(),
            key: self.key.to_owned(),
            message: message.into(),
        }
    }
}

impl ShardReader {
    /// Maps `path` and scans its tar headers.
    pub fn open(path: &Path) -> Result<ShardReader, ShardError> {
        let map = map_file(path)?;
        let index = scan(path, &map)?;
        Ok(ShardReader {
            path: path.to_owned(),
            map,
            index,
        })
    }

    /// Maps `path` and trusts `index` (the catalog's record of it) after checking that
    /// every member lies inside the file and every frame array fills its shape.
    pub fn open_indexed(path: &Path, index: Vec<SampleIndex>) -> Result<ShardReader, ShardError> {
        let map = map_file(path)?;
        let len = map.len() as u64;
        for s in &index {
            let members = [Some(s.frames), s.cls, s.json, s.jpg, s.txt];
            for m in members.iter().flatten().chain(&s.frame_members) {
                if m.end() > len || m.end() < m.offset {
                    return Err(ShardError::Sample {
                        path: path.to_owned(),
                        key: s.key.clone(),
                        message: format!(
                            "member at {}..{} lies outside the {len}-byte file",
                            m.offset,
                            m.end()
                        ),
                    });
                }
            }
            let fail = |message: String| ShardError::Sample {
                path: path.to_owned(),
                key: s.key.clone(),
                message,
            };
            let elements = shape_len(&s.shape).filter(|_| s.shape[4] == 3);
            match s.codec {
                Codec::Raw => {
                    if elements != Some(s.frames.size as usize) || !s.frame_members.is_empty() {
                        return Err(fail(format!(
                            "{} frame bytes do not fill the shape {:?}",
                            s.frames.size, s.shape
                        )));
                    }
                }
                Codec::Jpeg { .. } => {
                    if elements.is_none_or(|n| n == 0 || n > MAX_DECODED_BYTES)
                        || s.frame_members.len() != s.shape[0] * s.shape[1]
                    {
                        return Err(fail(format!(
                            "{} frame members for the shape {:?}",
                            s.frame_members.len(),
                            s.shape
                        )));
                    }
                }
            }
        }
        Ok(ShardReader {
            path: path.to_owned(),
            map,
            index,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn index(&self) -> &[SampleIndex] {
        &self.index
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Sample `i`, in file order.
    pub fn sample(&self, i: usize) -> Result<Sample<'_>, ShardError> {
        let s = self.index.get(i).ok_or_else(|| ShardError::Format {
            path: self.path.clone(),
            offset: 0,
            message: format!("no sample {i} (the shard has {})", self.index.len()),
        })?;
        let err = |message: String| ShardError::Sample {
            path: self.path.clone(),
            key: s.key.clone(),
            message,
        };
        let bytes = |m: &Member| &self.map[m.offset as usize..m.end() as usize];
        let label = match &s.cls {
            Some(m) => {
                let text = std::str::from_utf8(bytes(m))
                    .map_err(|_| err(".cls is not text".into()))?
                    .trim();
                Some(
                    text.parse::<u32>()
                        .map_err(|_| err(format!(".cls is not a label index: {text:?}")))?,
                )
            }
            None => None,
        };
        let txt = match &s.txt {
            Some(m) => {
                Some(std::str::from_utf8(bytes(m)).map_err(|_| err(".txt is not UTF-8".into()))?)
            }
            None => None,
        };
        Ok(Sample {
            key: &s.key,
            shape: s.shape,
            codec: s.codec,
            frames: if s.codec.is_raw() {
                bytes(&s.frames)
            } else {
                &[]
            },
            frame_members: &s.frame_members,
            map: &self.map,
            label,
            json: s.json.as_ref().map(bytes),
            jpg: s.jpg.as_ref().map(bytes),
            txt,
            path: &self.path,
        })
    }

    /// Decodes every frame of every JPEG sample (raw samples need nothing): the first
    /// one that does not decode to its sample's shape is the error, naming the sample.
    pub fn check_frames(&self) -> Result<(), ShardError> {
        for i in 0..self.len() {
            self.sample(i)?.check_frames()?;
        }
        Ok(())
    }

    /// Checks the file's SHA-256 against `expected_hex`.
    pub fn verify_sha256(&self, expected_hex: &str) -> Result<(), ShardError> {
        let actual = hex::encode(Sha256::digest(&self.map[..]));
        if actual.eq_ignore_ascii_case(expected_hex) {
            Ok(())
        } else {
            Err(ShardError::Hash {
                path: self.path.clone(),
                expected: expected_hex.to_owned(),
                actual,
            })
        }
    }

    /// Tells the kernel the shard will be read front to back.
    pub fn advise_sequential(&self) {
        let _ = self.map.advise(memmap2::Advice::Sequential);
    }
}

fn map_file(path: &Path) -> Result<memmap2::Mmap, ShardError> {
    let io = |source| ShardError::Io {
        path: path.to_owned(),
        source,
    };
    let file = fs_err::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len < 2 * BLOCK {
        return Err(ShardError::Format {
            path: path.to_owned(),
            offset: 0,
            message: format!("{len} bytes is too short for a tar file"),
        });
    }
    // SAFETY: shards are immutable once renamed into place (the shard stage never
    // rewrites one), so the mapping does not change under the reader.
    unsafe { memmap2::Mmap::map(file.file()) }.map_err(io)
}

/// Reads the tar headers of `map` and groups consecutive members by key.
fn scan(path: &Path, map: &[u8]) -> Result<Vec<SampleIndex>, ShardError> {
    let fail = |offset: u64, message: String| ShardError::Format {
        path: path.to_owned(),
        offset,
        message,
    };
    let len = map.len() as u64;
    let mut pos = 0u64;
    let mut long_name: Option<String> = None;
    let mut pax_size: Option<u64> = None;
    let mut out: Vec<SampleIndex> = vec![];
    let mut current: Option<Partial> = None;
    loop {
        if pos == len {
            break; // no end-of-archive blocks: some writers omit them
        }
        if pos + BLOCK > len {
            return Err(fail(pos, "truncated tar header".into()));
        }
        let h = &map[pos as usize..(pos + BLOCK) as usize];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        check_checksum(h).map_err(|m| fail(pos, m))?;
        let mut size = parse_number(&h[124..136]).map_err(|m| fail(pos, m))?;
        if let Some(s) = pax_size.take() {
            size = s;
        }
        let data = pos + BLOCK;
        let end = data
            .checked_add(size)
            .filter(|&e| e <= len)
            .ok_or_else(|| fail(pos, format!("member of {size} bytes runs past the end")))?;
        let typeflag = h[156];
        let name = match long_name.take() {
            Some(n) => n,
            None => header_name(h),
        };
        let bytes = &map[data as usize..end as usize];
        match typeflag {
            b'0' | 0 | b'7' => {
                let member = Member { offset: data, size };
                add_member(path, map, &mut out, &mut current, &name, member, bytes)
                    .map_err(|m| fail(pos, m))?;
            }
            b'L' => {
                let n = bytes.split(|&b| b == 0).next().unwrap_or_default();
                long_name = Some(
                    String::from_utf8(n.to_vec())
                        .map_err(|_| fail(pos, "long name is not UTF-8".into()))?,
                );
            }
            b'x' => {
                let (p, s) = parse_pax(bytes).map_err(|m| fail(pos, m))?;
                long_name = p;
                pax_size = s;
            }
            // Global PAX headers, directories, links and the rest carry no sample data.
            _ => {}
        }
        pos = end + (BLOCK - size % BLOCK) % BLOCK;
    }
    if let Some(p) = current.take() {
        out.push(p.finish(path, map)?);
    }
    Ok(out)
}

/// A sample whose members are still being read.
struct Partial {
    key: String,
    shape: Option<[usize; 5]>,
    frames: Option<Member>,
    cls: Option<Member>,
    json: Option<Member>,
    jpg: Option<Member>,
    txt: Option<Member>,
    /// Frame JPEGs as `(clip, frame, member)`, in file order.
    jpegs: Vec<(usize, usize, Member)>,
}

/// Most frame JPEGs one sample may have (the recipe limits: 64 clips × 1024 frames).
const MAX_FRAME_MEMBERS: usize = 64 * 1024;
/// Most bytes a JPEG sample may decode to (the recipe limit, 1 GiB): a hostile shape
/// or JPEG header cannot make a reader allocate more.
const MAX_DECODED_BYTES: usize = 1 << 30;

impl Partial {
    fn finish(self, path: &Path, map: &[u8]) -> Result<SampleIndex, ShardError> {
        let fail = |message: String| ShardError::Sample {
            path: path.to_owned(),
            key: self.key.clone(),
            message,
        };
        let (shape, frames, codec, frame_members) =
            match (self.frames, self.shape, self.jpegs.is_empty()) {
                (Some(frames), Some(shape), true) => (shape, frames, Codec::Raw, vec![]),
                (None, _, false) => {
                    let (shape, members) = self.jpeg_frames(map).map_err(fail)?;
                    let quality = self.json_quality(map);
                    let (first, last) = (members[0], members[members.len() - 1]);
                    let span = Member {
                        offset: first.offset.min(last.offset),
                        size: first.end().max(last.end()) - first.offset.min(last.offset),
                    };
                    (shape, span, Codec::Jpeg { quality }, members)
                }
                (Some(_), _, false) => {
                    return Err(fail(format!(
                        "has both a .{FRAMES_EXT} member and JPEG frame members"
                    )));
                }
                _ => {
                    return Err(fail(format!(
                        "has no .{FRAMES_EXT} member and no JPEG frame members (.c00f000.jpg)"
                    )));
                }
            };
        Ok(SampleIndex {
            key: self.key,
            shape,
            frames,
            codec,
            frame_members,
            cls: self.cls,
            json: self.json,
            jpg: self.jpg,
            txt: self.txt,
        })
    }

    /// The decoded shape and the clip-major members of a JPEG sample: every clip has
    /// the same frames, none is missing, and the first frame's JPEG header gives H×W.
    fn jpeg_frames(&self, map: &[u8]) -> Result<([usize; 5], Vec<Member>), String> {
        let clips = self.jpegs.iter().map(|j| j.0).max().unwrap_or(0) + 1;
        let t = self.jpegs.iter().map(|j| j.1).max().unwrap_or(0) + 1;
        let count = clips
            .checked_mul(t)
            .filter(|&n| n <= MAX_FRAME_MEMBERS)
            .ok_or_else(|| format!("{clips} clips × {t} frames is too many"))?;
        let mut grid: Vec<Option<Member>> = vec![None; count];
        for &(k, f, m) in &self.jpegs {
            if grid[k * t + f].replace(m).is_some() {
                return Err(format!("{}: the same frame twice", frame_member_ext(k, f)));
            }
        }
        let members = grid
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.ok_or_else(|| {
                    format!(
                        "frame member {} is missing ({clips} clips × {t} frames)",
                        frame_member_ext(i / t, i % t)
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let first = &map[members[0].offset as usize..members[0].end() as usize];
        let (h, w) = crate::codec::jpeg_size(first)
            .map_err(|e| format!("{}: {e}", frame_member_ext(0, 0)))?;
        let shape = [clips, t, h, w, 3];
        if shape_len(&shape).is_none_or(|n| n == 0 || n > MAX_DECODED_BYTES) {
            return Err(format!(
                "{clips} clips × {t} frames of {h}×{w} pixels: not a sample shape (at most 1 GiB)"
            ));
        }
        Ok((shape, members))
    }

    /// The JPEG quality the sample's `.json` records (`frame_codec`); 0 when it
    /// records none.
    fn json_quality(&self, map: &[u8]) -> u8 {
        self.json
            .and_then(|m| {
                let v: serde_json::Value =
                    serde_json::from_slice(&map[m.offset as usize..m.end() as usize]).ok()?;
                serde_json::from_value(v.get(META_CODEC)?.clone()).ok()
            })
            .and_then(|c| match c {
                Codec::Jpeg { quality } => Some(quality),
                Codec::Raw => None,
            })
            .unwrap_or(0)
    }
}

fn add_member(
    path: &Path,
    map: &[u8],
    out: &mut Vec<SampleIndex>,
    current: &mut Option<Partial>,
    name: &str,
    member: Member,
    bytes: &[u8],
) -> Result<(), String> {
    // WebDataset: the key is the path up to the first dot of the file name.
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    let Some(dot) = name[slash..].find('.') else {
        return Ok(()); // no extension: not part of any sample
    };
    let (key, ext) = (&name[..slash + dot], &name[slash + dot + 1..]);
    if current.as_ref().is_some_and(|p| p.key != key) {
        let done = current.take().expect("checked");
        out.push(done.finish(path, map).map_err(|e| e.to_string())?);
    }
    let p = current.get_or_insert_with(|| Partial {
        key: key.to_owned(),
        shape: None,
        frames: None,
        cls: None,
        json: None,
        jpg: None,
        txt: None,
        jpegs: vec![],
    });
    if let Some((k, t)) = parse_frame_member_ext(ext) {
        if p.jpegs.len() >= MAX_FRAME_MEMBERS {
            return Err(format!(
                "{name}: more than {MAX_FRAME_MEMBERS} frame members"
            ));
        }
        p.jpegs.push((k, t, member));
        return Ok(());
    }
    let slot = match ext {
        FRAMES_EXT => {
            let (header_len, shape) = parse_npy(bytes).map_err(|m| format!("{name}: {m}"))?;
            p.shape = Some(shape);
            let frames = Member {
                offset: member.offset + header_len as u64,
                size: member.size - header_len as u64,
            };
            if shape_len(&shape) != Some(frames.size as usize) {
                return Err(format!(
                    "{name}: {} data bytes do not fill the shape {shape:?}",
                    frames.size
                ));
            }
            if p.frames.replace(frames).is_some() {
                return Err(format!("{name}: a second frame array for one sample"));
            }
            return Ok(());
        }
        CLS_EXT => &mut p.cls,
        JSON_EXT => &mut p.json,
        JPG_EXT | "jpeg" => &mut p.jpg,
        TXT_EXT => &mut p.txt,
        _ => return Ok(()),
    };
    if slot.replace(member).is_some() {
        return Err(format!("{name}: the same member twice in one sample"));
    }
    Ok(())
}

fn check_checksum(h: &[u8]) -> Result<(), String> {
    let stored = parse_number(&h[148..156])?;
    let unsigned: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u64
            }
        })
        .sum();
    let signed: i64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as i8 as i64
            }
        })
        .sum();
    if stored == unsigned || stored as i64 == signed {
        Ok(())
    } else {
        Err(format!(
            "bad tar header checksum (stored {stored}, computed {unsigned}): not a tar file or a damaged one"
        ))
    }
}

/// An octal field (NUL or space terminated) or a GNU base-256 one.
fn parse_number(field: &[u8]) -> Result<u64, String> {
    if field[0] & 0x80 != 0 {
        if field[0] != 0x80 || field[1..field.len() - 8].iter().any(|&b| b != 0) {
            return Err("negative or oversized base-256 number in a tar header".into());
        }
        let mut v = 0u64;
        for &b in &field[field.len() - 8..] {
            v = (v << 8) | b as u64;
        }
        return Ok(v);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    let s = std::str::from_utf8(&text).map_err(|_| "bad number in a tar header".to_string())?;
    u64::from_str_radix(s, 8).map_err(|_| format!("bad octal number {s:?} in a tar header"))
}

fn header_name(h: &[u8]) -> String {
    let field = |r: std::ops::Range<usize>| {
        let f = &h[r];
        let n = f.iter().position(|&b| b == 0).unwrap_or(f.len());
        String::from_utf8_lossy(&f[..n]).into_owned()
    };
    let name = field(0..100);
    if &h[257..262] == b"ustar" {
        let prefix = field(345..500);
        if !prefix.is_empty() {
            return format!("{prefix}/{name}");
        }
    }
    name
}

/// PAX records `"<len> <key>=<value>\n"`: the `path` and `size` of the next member.
fn parse_pax(mut data: &[u8]) -> Result<(Option<String>, Option<u64>), String> {
    let (mut path, mut size) = (None, None);
    while !data.is_empty() {
        let sp = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or("bad PAX record")?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad PAX record length")?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("bad PAX record length".into());
        }
        let record = &data[sp + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("bad PAX record")?;
        let value = std::str::from_utf8(&record[eq + 1..]).map_err(|_| "PAX value not UTF-8")?;
        match &record[..eq] {
            b"path" => path = Some(value.to_owned()),
            b"size" => size = Some(value.parse().map_err(|_| "bad PAX size")?),
            _ => {}
        }
        data = &data[len..];
    }
    Ok((path, size))
}

/// Parses an npy header of a C-order uint8 array of 4 or 5 dimensions ending in 3;
/// returns the header length and the shape as `(clips, T, H, W, 3)`.
pub(crate) fn parse_npy(bytes: &[u8]) -> Result<(usize, [usize; 5]), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not an npy array".into());
    }
    let (dict_start, dict_len) = match bytes[6] {
        1 => (10, u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
        2 | 3 if bytes.len() >= 12 => (
            12,
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
        ),
        v => return Err(format!("unsupported npy version {v}")),
    };
    let header_len = dict_start + dict_len;
    if header_len > bytes.len() {
        return Err("npy header runs past the member".into());
    }
    let text = std::str::from_utf8(&bytes[dict_start..header_len])
        .map_err(|_| "npy header is not text")?;
    let dict = match pydict::parse(text).map_err(|e| format!("npy header: {e}"))? {
        PyValue::Dict(d) => d,
        other => return Err(format!("npy header is a {}, not a dict", other.type_name())),
    };
    let get = |k: &str| {
        dict.iter()
            .find(|(key, _)| matches!(key, PyValue::Str(s) if s == k))
            .map(|(_, v)| v)
    };
    match get("descr") {
        Some(PyValue::Str(d)) if matches!(d.as_str(), "|u1" | "u1" | "<u1" | ">u1" | "=u1") => {}
        Some(d) => return Err(format!("dtype {d:?} is not uint8")),
        None => return Err("npy header has no descr".into()),
    }
    if !matches!(get("fortran_order"), Some(PyValue::Bool(false))) {
        return Err("array is not in C order".into());
    }
    let dims: Vec<usize> = match get("shape") {
        Some(PyValue::Tuple(t)) => t
            .iter()
            .map(|v| match v {
                PyValue::Int(i) if *i >= 0 && *i <= usize::MAX as i128 => Ok(*i as usize),
                _ => Err(format!("bad dimension {v:?}")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("npy header has no shape tuple".into()),
    };
    let shape = match dims[..] {
        [k, t, h, w, 3] => [k, t, h, w, 3],
        [t, h, w, 3] => [1, t, h, w, 3],
        _ => {
            return Err(format!(
                "shape {dims:?} is not (clips, T, H, W, 3) or (T, H, W, 3)"
            ));
        }
    };
    Ok((header_len, shape))
}

#[cfg(test)]
mod tests {
    use super::super::format::{FrameData, SampleInput, ShardWriter, npy_header, sample_key};
    use super::*;
    use crate::codec::tests::picture;

    fn meta(id: &str) -> SampleMeta {
        SampleMeta {
            id: id.into(),
            dataset: "d".into(),
            labels: vec![3],
            split: "train".into(),
            recipe: "r".into(),
            source: None,
            sha256: "00".repeat(32),
            size: 10,
            duration_s: Some(1.0),
            fps: Some(30.0),
            width: 4,
            height: 2,
            frame_indices: vec![vec![0, 1]],
            extra: Default::default(),
        }
    }

    fn write(dir: &Path, n: usize) -> (PathBuf, Vec<Vec<u8>>, String) {
        let path = dir.join("s.tar");
        let file = std::fs::File::create(&path).unwrap();
        let mut w = ShardWriter::new(std::io::BufWriter::new(file)).with_path(&path);
        let shape = [2, 2, 2, 4, 3];
        let mut all = vec![];
        for i in 0..n {
            let frames: Vec<u8> = (0..96).map(|b| (b * 7 + i) as u8).collect();
            let key = sample_key(&format!("item.{i}"));
            let m = meta(&format!("item.{i}"));
            let idx = w
                .append(&SampleInput {
                    key: &key,
                    shape,
                    frames: FrameData::Raw(&frames),
                    label: Some(i as u32),
                    meta: &m,
                    jpg: (i == 1).then_some(&b"\xff\xd8jpeg"[..]),
                    txt: Some("文本"),
                })
                .unwrap();
            assert_eq!(idx.frames.offset % 64, 0);
            all.push(frames);
        }
        let (_, summary) = w.finish().unwrap();
        assert_eq!(summary.samples, n);
        assert_eq!(summary.bytes, std::fs::metadata(&path).unwrap().len());
        (path, all, summary.sha256)
    }

    #[test]
    fn written_shards_read_back_without_copies() {
        let dir = tempfile::tempdir().unwrap();
        let (path, frames, sha) = write(dir.path(), 3);
        let r = ShardReader::open(&path).unwrap();
        assert_eq!(r.len(), 3);
        r.verify_sha256(&sha).unwrap();
        for (i, f) in frames.iter().enumerate() {
            let s = r.sample(i).unwrap();
            assert_eq!(s.key, format!("item%2E{i}"));
            let raw = s.raw_frames().unwrap();
            assert_eq!(raw, &f[..]);
            assert_eq!(raw.as_ptr() as usize % 64, 0, "aligned in the map");
            assert_eq!(s.label, Some(i as u32));
            assert_eq!(s.txt, Some("文本"));
            assert_eq!(s.jpg.is_some(), i == 1);
            assert_eq!(s.meta().unwrap().id, format!("item.{i}"));
            assert_eq!(s.clip(1), &f[48..]);
            let mut buf = vec![];
            let clip = s.clip_pixels(1, &mut buf).unwrap();
            assert_eq!(clip, &f[48..]);
            assert_eq!(
                clip.as_ptr(),
                s.clip(1).as_ptr(),
                "raw clips are not copied"
            );
            assert!(buf.is_empty());
            assert!(s.clip_pixels(2, &mut buf).is_err());
        }
        // The catalog's record of the offsets opens the same samples without a scan.
        let again = ShardReader::open_indexed(&path, r.index().to_vec()).unwrap();
        assert_eq!(
            again.sample(2).unwrap().raw_frames().unwrap(),
            &frames[2][..]
        );
        // Same input, same bytes.
        let dir2 = tempfile::tempdir().unwrap();
        let (_, _, sha2) = write(dir2.path(), 3);
        assert_eq!(sha, sha2);
    }

    #[test]
    fn damage_is_reported_not_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, sha) = write(dir.path(), 2);
        let mut bytes = std::fs::read(&path).unwrap();
        // A flipped byte in frame data: the scan still works, the hash does not.
        let r = ShardReader::open(&path).unwrap();
        let off = r.index()[1].frames.offset as usize;
        drop(r);
        bytes[off] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let r = ShardReader::open(&path).unwrap();
        assert!(matches!(
            r.verify_sha256(&sha),
            Err(ShardError::Hash { .. })
        ));
        // A damaged header is a format error naming the offset.
        bytes[0] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let e = ShardReader::open(&path).err().unwrap().to_string();
        assert!(e.contains("checksum"), "{e}");
        // A truncated shard.
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(ShardReader::open(&path).is_err());
        // Offsets that lie outside the file.
        let (path, _, _) = write(dir.path(), 1);
        let mut idx = ShardReader::open(&path).unwrap().index().to_vec();
        idx[0].frames.offset = 1 << 40;
        assert!(ShardReader::open_indexed(&path, idx).is_err());
    }

    const JSHAPE: [usize; 5] = [2, 3, 16, 24, 3];

    /// A shard of two JPEG samples; returns its path and their pixels.
    fn write_jpeg(
        dir: &Path,
        frames_of: impl Fn(usize, Vec<Vec<u8>>) -> Vec<Vec<u8>>,
    ) -> (PathBuf, Vec<u8>) {
        let path = dir.join("j.tar");
        let file = std::fs::File::create(&path).unwrap();
        let mut w = ShardWriter::new(std::io::BufWriter::new(file)).with_path(&path);
        let pixels = picture(JSHAPE);
        let jpegs = crate::codec::encode_frames(&pixels, JSHAPE, 90).unwrap();
        for i in 0..2 {
            let m = meta(&format!("j{i}"));
            w.append(&SampleInput {
                key: &format!("j{i}"),
                shape: JSHAPE,
                frames: FrameData::Jpeg {
                    quality: 90,
                    frames: &frames_of(i, jpegs.clone()),
                },
                label: Some(1),
                meta: &m,
                jpg: None,
                txt: None,
            })
            .unwrap();
        }
        w.finish().unwrap();
        (path, pixels)
    }

    #[test]
    fn jpeg_samples_decode_per_clip() {
        let dir = tempfile::tempdir().unwrap();
        let (path, pixels) = write_jpeg(dir.path(), |_, j| j);
        let r = ShardReader::open(&path).unwrap();
        assert_eq!(r.len(), 2);
        let idx = &r.index()[1];
        assert_eq!(idx.codec, Codec::Jpeg { quality: 90 });
        assert_eq!(idx.shape, JSHAPE);
        assert_eq!(idx.frame_members.len(), 6);
        // The catalog's JSON of the index round-trips; a raw one has no codec fields.
        let json = serde_json::to_string(idx).unwrap();
        assert!(
            json.contains(r#""codec":{"kind":"jpeg","quality":90}"#),
            "{json}"
        );
        let back: SampleIndex = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, idx);
        let indexed = ShardReader::open_indexed(&path, r.index().to_vec()).unwrap();
        let clip = JSHAPE[1] * JSHAPE[2] * JSHAPE[3] * 3;
        for reader in [&r, &indexed] {
            let s = reader.sample(1).unwrap();
            assert_eq!(s.shape, JSHAPE);
            assert!(s.raw_frames().is_none());
            let meta = s.meta().unwrap();
            assert_eq!(meta.extra["frame_shape"], serde_json::json!(JSHAPE));
            assert_eq!(meta.extra["frame_codec"]["quality"], 90);
            s.check_frames().unwrap();
            let mut buf = vec![];
            for k in 0..2 {
                let got = s.clip_pixels(k, &mut buf).unwrap();
                let want = &pixels[k * clip..(k + 1) * clip];
                assert_eq!(got.len(), clip);
                let worst = got.iter().zip(want).map(|(&a, &b)| a.abs_diff(b)).max();
                assert!(worst.unwrap() <= 24, "clip {k}: worst {worst:?}");
                assert!(crate::codec::tests::psnr(got, want) >= 35.0);
            }
            assert!(s.clip_pixels(2, &mut buf).is_err());
        }
    }

    #[test]
    #[should_panic(expected = "raw samples only")]
    fn raw_clip_refuses_jpeg_samples() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write_jpeg(dir.path(), |_, j| j);
        let r = ShardReader::open(&path).unwrap();
        r.sample(0).unwrap().clip(0);
    }

    fn clip_error(r: &ShardReader, i: usize) -> String {
        let s = r.sample(i).unwrap();
        let mut buf = vec![];
        let e = (0..2)
            .map(|k| s.clip_pixels(k, &mut buf).map(|_| ()))
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert!(matches!(e, ShardError::Sample { .. }));
        assert!(s.check_frames().is_err());
        e.to_string()
    }

    #[test]
    fn hostile_jpeg_samples_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        // A truncated JPEG (sample j1, clip 1, frame 2).
        let (path, _) = write_jpeg(dir.path(), |i, mut j| {
            if i == 1 {
                let n = j[5].len() - 20;
                j[5].truncate(n);
            }
            j
        });
        let r = ShardReader::open(&path).unwrap();
        assert!(r.sample(0).unwrap().check_frames().is_ok());
        let e = clip_error(&r, 1);
        assert!(
            e.contains("j.tar") && e.contains("sample j1") && e.contains("j1.c01f002.jpg"),
            "{e}"
        );
        assert!(e.contains("does not decode"), "{e}");

        // A JPEG of another size than the sample's: the writer refuses it, a shard
        // whose member was swapped after writing fails on reading.
        let other = crate::codec::encode_frames(&picture([1, 1, 16, 16, 3]), [1, 1, 16, 16, 3], 90)
            .unwrap()
            .remove(0);
        let path = dir.path().join("w.tar");
        let mut w = ShardWriter::new(std::fs::File::create(&path).unwrap()).with_path(&path);
        let mut frames = crate::codec::encode_frames(&picture(JSHAPE), JSHAPE, 90).unwrap();
        frames[4] = other.clone();
        let e = w
            .append(&SampleInput {
                key: "w0",
                shape: JSHAPE,
                frames: FrameData::Jpeg {
                    quality: 90,
                    frames: &frames,
                },
                label: None,
                meta: &meta("w0"),
                jpg: None,
                txt: None,
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("w0") && e.contains("16×16"), "{e}");
        let (path, _) = write_jpeg(dir.path(), |_, j| j);
        let mut idx = ShardReader::open(&path).unwrap().index().to_vec();
        let target = idx[0].frame_members[4];
        let mut bytes = std::fs::read(&path).unwrap();
        // Put the 16×16 JPEG where frame c01f001 was (it is smaller) and shorten the
        // member in the catalog's record.
        bytes[target.offset as usize..target.offset as usize + other.len()].copy_from_slice(&other);
        std::fs::write(&path, &bytes).unwrap();
        idx[0].frame_members[4].size = other.len() as u64;
        let r = ShardReader::open_indexed(&path, idx.clone()).unwrap();
        let e = clip_error(&r, 0);
        assert!(
            e.contains("sample j0") && e.contains("j0.c01f001.jpg"),
            "{e}"
        );
        assert!(e.contains("16×16") && e.contains("16×24"), "{e}");

        // A member range past the end of the file.
        let mut past = idx.clone();
        past[1].frame_members[3].offset = bytes.len() as u64 - 10;
        let e = ShardReader::open_indexed(&path, past)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sample j1") && e.contains("outside"), "{e}");
        // A recorded shape far larger than any sample: refused before anything is
        // allocated for it.
        let mut huge = idx.clone();
        huge[1].shape = [2, 3, 40_000, 40_000, 3];
        let e = ShardReader::open_indexed(&path, huge)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sample j1"), "{e}");
        // Fewer frame members than the shape needs.
        idx[1].frame_members.pop();
        let e = ShardReader::open_indexed(&path, idx)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("sample j1") && e.contains("5 frame members"),
            "{e}"
        );
    }

    #[test]
    fn scanned_jpeg_samples_need_every_frame() {
        use super::super::format::tar_header;
        let dir = tempfile::tempdir().unwrap();
        let shape = [1, 2, 8, 8, 3];
        let jpegs = crate::codec::encode_frames(&picture(shape), shape, 90).unwrap();
        let tar = |names: &[(&str, &[u8])]| {
            let mut out = vec![];
            for (name, data) in names {
                out.extend_from_slice(&tar_header(name, data.len() as u64));
                out.extend_from_slice(data);
                out.resize(out.len().div_ceil(512) * 512, 0);
            }
            out.resize(out.len() + 1024, 0);
            let path = dir.path().join("t.tar");
            std::fs::write(&path, out).unwrap();
            path
        };
        // Another tool's shard (no .json): the shape comes from the members and the
        // first JPEG; the quality is unknown.
        let path = tar(&[
            ("a.c00f000.jpg", &jpegs[0]),
            ("a.c00f001.jpeg", &jpegs[1]),
            ("a.cls", b"2"),
        ]);
        let r = ShardReader::open(&path).unwrap();
        let s = r.sample(0).unwrap();
        assert_eq!(
            (s.shape, s.codec, s.label),
            (shape, Codec::Jpeg { quality: 0 }, Some(2))
        );
        s.check_frames().unwrap();
        // Frame 1 of clip 1 is missing.
        let path = tar(&[
            ("a.c00f000.jpg", &jpegs[0]),
            ("a.c00f001.jpg", &jpegs[1]),
            ("a.c01f000.jpg", &jpegs[0]),
        ]);
        let e = ShardReader::open(&path).err().unwrap().to_string();
        assert!(
            e.contains("sample a") && e.contains("c01f001.jpg is missing"),
            "{e}"
        );
        // Frames and a frame array in one sample; a frame twice.
        let npy = [npy_header(&shape), vec![0; 384]].concat();
        let path = tar(&[("b.frames.npy", &npy), ("b.c00f000.jpg", &jpegs[0])]);
        let e = ShardReader::open(&path).err().unwrap().to_string();
        assert!(e.contains("sample b") && e.contains("both"), "{e}");
        let path = tar(&[("b.c00f000.jpg", &jpegs[0]), ("b.c00f000.jpeg", &jpegs[0])]);
        let e = ShardReader::open(&path).err().unwrap().to_string();
        assert!(e.contains("twice"), "{e}");
        // A first frame that is no JPEG.
        let path = tar(&[("c.c00f000.jpg", b"nope")]);
        let e = ShardReader::open(&path).err().unwrap().to_string();
        assert!(e.contains("sample c") && e.contains("not a JPEG"), "{e}");
    }

    #[test]
    fn npy_headers_parse() {
        let h = npy_header(&[5, 16, 288, 192, 3]);
        assert_eq!(parse_npy(&h).unwrap(), (h.len(), [5, 16, 288, 192, 3]));
        let h = npy_header(&[16, 8, 8, 3]);
        assert_eq!(parse_npy(&h).unwrap().1, [1, 16, 8, 8, 3]);
        let dict = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }\n";
        let mut bad = b"\x93NUMPY\x01\x00".to_vec();
        bad.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        bad.extend_from_slice(dict);
        let e = parse_npy(&bad).unwrap_err();
        assert!(e.contains("not uint8"), "{e}");
        let mut fortran = npy_header(&[1, 2, 2, 2, 3]);
        let at = fortran.windows(5).position(|w| w == b"False").unwrap();
        fortran[at..at + 5].copy_from_slice(b"True ");
        assert_eq!(parse_npy(&fortran).unwrap_err(), "array is not in C order");
        assert!(parse_npy(b"PK\x03\x04").is_err());
    }
}
