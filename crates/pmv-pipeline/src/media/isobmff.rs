//! ISO base media files (MP4, MOV, 3GP) checked before FFmpeg reads them: what their
//! sample tables declare must fit in their bytes.
//!
//! libavformat's MP4 demuxer allocates from the counts a file declares, when it opens the
//! file and before any frame is read: about 24 bytes of index and 8 of composition
//! offsets per declared sample, so 1.5 kB declaring 80 million samples cost 2 GB.
//! [`check`] walks the boxes the way libavformat does (32- and 64-bit sizes, size 0 = to
//! the end of the parent, a child clamped to its parent, tables wherever a parsed box may
//! hold them, sample entries included), reading box and table headers at their offsets
//! and streaming the few tables whose entries it adds up in small blocks, never the whole
//! file into memory. It refuses a file whose tables are longer than their boxes, whose
//! samples would need more bytes than the file has, that declares more samples,
//! fragments or tracks than pmv-data reads, nests boxes too deep, hides its movie header
//! compressed (`cmov`) or is encrypted. It never calls FFmpeg and never writes.

use std::io;

use super::MAX_STREAMS;

/// Samples indexed in one file, all tracks and fragments together. libavformat keeps
/// about 40 bytes per indexed sample (index entry, composition offset, size), so this
/// bounds the index near 160 MB; it is four times the frames a video may have.
pub const MAX_SAMPLES: u64 = 4_000_000;
/// Movie fragments (each `moof` and each `sidx` reference becomes an index item of
/// about 50 bytes per stream inside libavformat).
pub const MAX_FRAGMENTS: u64 = 100_000;
/// Boxes visited, all levels together.
const MAX_BOXES: u64 = 2_000_000;
/// Nesting depth (libavformat refuses more than 10 levels).
const MAX_DEPTH: u32 = 12;
/// Sample entries per `stsd` that libavformat reads.
const MAX_SAMPLE_ENTRIES: u64 = 1024;
/// Bytes read at once while streaming a table or scanning a box.
const BLOCK: usize = 64 * 1024;

/// Reading at an offset without moving a shared file position.
pub trait ReadAt {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, pos)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let start = usize::try_from(pos).unwrap_or(usize::MAX).min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// Why a file is refused.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// Declarations that cannot be true of this file: damaged or forged tables.
    #[error("{0}")]
    Forged(String),
    /// Possibly true, but beyond what pmv-data reads (or FFmpeg decodes).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What a file that passed declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub tracks: usize,
    /// Samples libavformat will index, all tracks and fragments together.
    pub samples: u64,
    pub fragments: u64,
}

type FourCc = [u8; 4];

/// One `trak`, with what its tables declare (a later table replaces an earlier one of
/// the same kind, as in libavformat).
#[derive(Debug, Default)]
struct Track {
    handler: FourCc,
    /// `stsz`/`stz2`: sample count, constant size (0: sizes listed) and their sum.
    samples: u64,
    sample_size: u64,
    listed_bytes: u64,
    /// `stts`: entries, samples and the first entry's duration.
    stts_entries: u64,
    stts_samples: u64,
    stts_first_delta: u32,
    /// Samples `ctts` and `sbgp` cover.
    ctts_samples: u64,
    sbgp_samples: u64,
    /// `stsc`: the largest samples-per-chunk; `stco`/`co64`: chunks.
    stsc_max: u64,
    chunks: u64,
}

struct Walker<'a, R: ?Sized> {
    src: &'a R,
    len: u64,
    boxes: u64,
    tracks: Vec<Track>,
    /// Inside a `trak` (a handler names its track only there).
    in_trak: bool,
    fragments: u64,
    trun_samples: u64,
    /// `trex`: default sample size per track id; `tfhd` of the current `traf`.
    trex: Vec<(u32, u32)>,
    tfhd: Option<(u32, Option<u32>)>,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

fn name(t: &FourCc) -> String {
    t.iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '?'
            }
        })
        .collect()
}

/// `1 byte`, `2 bytes`; `1 entry`, `2 entries`.
fn plural(n: u64, one: &str) -> String {
    match (n, one.strip_suffix('y')) {
        (1, _) => format!("1 {one}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        _ => format!("{n} {one}s"),
    }
}

/// Checks the boxes of a file of `len` bytes read through `src`.
pub fn check<R: ReadAt + ?Sized>(src: &R, len: u64) -> Result<Summary, Problem> {
    let mut w = Walker {
        src,
        len,
        boxes: 0,
        tracks: vec![],
        in_trak: false,
        fragments: 0,
        trun_samples: 0,
        trex: vec![],
        tfhd: None,
    };
    w.children(0, len, 0)?;
    w.finish()
}

impl<R: ReadAt + ?Sized> Walker<'_, R> {
    fn read_exact(&self, pos: u64, buf: &mut [u8]) -> Result<(), Problem> {
        let mut done = 0;
        while done < buf.len() {
            match self.src.read_at(&mut buf[done..], pos + done as u64) {
                Ok(0) => {
                    return Err(Problem::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the file ends before byte {}", pos + buf.len() as u64),
                    )));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Calls `f` with each of `count` entries of `size` bytes from `pos`.
    fn entries(
        &self,
        pos: u64,
        count: u64,
        size: usize,
        mut f: impl FnMut(&[u8]),
    ) -> Result<(), Problem> {
        let per_block = (BLOCK / size).max(1);
        let mut buf = vec![0u8; per_block.min(count as usize) * size];
        let mut done = 0u64;
        while done < count {
            let n = (count - done).min(per_block as u64) as usize;
            let block = &mut buf[..n * size];
            self.read_exact(pos + done * size as u64, block)?;
            block.chunks_exact(size).for_each(&mut f);
            done += n as u64;
        }
        Ok(())
    }

    /// Walks the boxes in `[start, end)`.
    fn children(&mut self, start: u64, end: u64, depth: u32) -> Result<(), Problem> {
        let mut pos = start;
        while end.saturating_sub(pos) >= 8 {
            let Some((typ, payload, box_end)) = self.header(pos, end)? else {
                break;
            };
            self.visit(typ, payload, box_end, depth)?;
            pos = box_end;
        }
        Ok(())
    }

    /// The box at `pos` inside a parent ending at `end`: its type, where its payload
    /// starts and where it ends (clamped to the parent, as libavformat does). `None`
    /// where libavformat stops reading the parent (a size smaller than the header).
    fn header(&mut self, pos: u64, end: u64) -> Result<Option<(FourCc, u64, u64)>, Problem> {
        let mut h = [0u8; 16];
        let n = if end - pos >= 16 { 16 } else { 8 };
        self.read_exact(pos, &mut h[..n])?;
        let typ: FourCc = h[4..8].try_into().expect("4 bytes");
        let (size, header) = match be32(&h) {
            1 if n == 16 => (be64(&h[8..]), 16),
            0 => (end - pos, 8),
            s => (u64::from(s), 8),
        };
        if size < header {
            return Ok(None);
        }
        self.boxes += 1;
        if self.boxes > MAX_BOXES {
            return Err(Problem::Refused(format!(
                "it has more than {MAX_BOXES} boxes"
            )));
        }
        Ok(Some((typ, pos + header, pos.saturating_add(size).min(end))))
    }

    fn visit(&mut self, typ: FourCc, start: u64, end: u64, depth: u32) -> Result<(), Problem> {
        let inner = |w: &mut Self, from: u64| -> Result<(), Problem> {
            if depth + 1 > MAX_DEPTH {
                return Err(Problem::Refused(format!(
                    "its boxes nest more than {MAX_DEPTH} levels deep"
                )));
            }
            w.children(from, end, depth + 1)
        };
        match &typ {
            b"trak" => {
                if self.tracks.len() as u64 >= u64::from(MAX_STREAMS) {
                    return Err(Problem::Refused(format!(
                        "it has more than {MAX_STREAMS} tracks"
                    )));
                }
                self.tracks.push(Track::default());
                let was = std::mem::replace(&mut self.in_trak, true);
                let r = inner(self, start);
                self.in_trak = was;
                r
            }
            b"moof" => {
                self.fragments += 1;
                inner(self, start)
            }
            b"traf" => {
                self.tfhd = None;
                inner(self, start)
            }
            b"moov" | b"mdia" | b"minf" | b"stbl" | b"dinf" | b"edts" | b"mvex" | b"tref"
            | b"udta" | b"ilst" | b"wave" | b"sinf" | b"schi" => inner(self, start),
            // A movie header kept in a `hoov` or `free` box is read as `moov`.
            b"hoov" | b"free" => {
                let mut t = [0u8; 4];
                if end - start >= 8 {
                    self.read_exact(start + 4, &mut t)?;
                    if &t == b"mvhd" || &t == b"cmov" {
                        return inner(self, start);
                    }
                }
                Ok(())
            }
            b"meta" => match self.meta_children(start, end)? {
                Some(from) => inner(self, from),
                None => Ok(()),
            },
            b"stsd" => self.stsd(start, end, depth),
            b"hdlr" => self.hdlr(start, end),
            b"stsz" => self.stsz(start, end),
            b"stz2" => self.stz2(start, end),
            b"stts" => self.stts(start, end),
            b"ctts" => self.ctts(start, end),
            b"stsc" => self.stsc(start, end),
            b"stco" | b"co64" => self.stco(&typ, start, end),
            b"stss" | b"stps" => self.table(&typ, start, end, 8, 4).map(drop),
            b"sgpd" => self.sgpd(start, end),
            b"sbgp" => self.sbgp(start, end),
            b"keys" => self.table(&typ, start, end, 8, 8).map(drop),
            b"sidx" => self.sidx(start, end),
            b"trex" => self.trex(start, end),
            b"tfhd" => self.tfhd(start, end),
            b"trun" => self.trun(start, end),
            b"cmov" => Err(Problem::Refused(
                "its movie header is compressed (cmov): its tables cannot be checked before \
                 FFmpeg inflates them"
                    .into(),
            )),
            b"senc" | b"saiz" | b"saio" | b"pssh" | b"tenc" => Err(Problem::Refused(format!(
                "it is encrypted ({} box): encrypted media cannot be decoded",
                name(&typ)
            ))),
            _ => Ok(()),
        }
    }

    /// The entry count of a table box whose fixed header (version and flags included)
    /// is `fixed` bytes and ends with the count; `count` entries of `entry` bytes must fit
    /// in what follows the header.
    fn table(
        &mut self,
        typ: &FourCc,
        start: u64,
        end: u64,
        fixed: u64,
        entry: u64,
    ) -> Result<u64, Problem> {
        let payload = end - start;
        if payload < fixed {
            return Err(Problem::Forged(format!(
                "its {} box holds {} but its header needs {fixed}",
                name(typ),
                plural(payload, "byte")
            )));
        }
        let mut c = [0u8; 4];
        self.read_exact(start + fixed - 4, &mut c)?;
        let count = u64::from(be32(&c));
        self.fits(typ, count, entry, payload - fixed)?;
        Ok(count)
    }

    /// A table of `count` entries of `entry` bytes must fit in `room` bytes.
    fn fits(&self, typ: &FourCc, count: u64, entry: u64, room: u64) -> Result<(), Problem> {
        let need = count.saturating_mul(entry);
        if need > room {
            return Err(Problem::Forged(format!(
                "its {} box declares {} of {} but holds {}",
                name(typ),
                plural(count, "entry"),
                plural(entry, "byte"),
                plural(room, "byte")
            )));
        }
        Ok(())
    }

    fn track(&mut self) -> Option<&mut Track> {
        self.tracks.last_mut()
    }

    /// Where libavformat starts reading a `meta` box's children: 4 bytes before the
    /// first `hdlr` word (ISO `meta` has version and flags first, QuickTime's has not).
    fn meta_children(&mut self, start: u64, end: u64) -> Result<Option<u64>, Problem> {
        let mut pos = start;
        let mut buf = vec![0u8; BLOCK];
        while end.saturating_sub(pos) > 8 {
            // Words are read while more than 8 bytes are left before them.
            let n = (((end - pos - 8).div_ceil(4) * 4) as usize).min(BLOCK);
            self.read_exact(pos, &mut buf[..n])?;
            if let Some(i) = buf[..n].chunks_exact(4).position(|w| w == b"hdlr") {
                let at = pos + i as u64 * 4;
                return Ok((at >= start + 4).then(|| at - 4));
            }
            pos += n as u64;
        }
        Ok(None)
    }

    /// Sample descriptions: libavformat reads the boxes after each entry's fixed fields
    /// (whose length depends on the codec type and version), so every box that starts
    /// anywhere inside an entry is checked.
    fn stsd(&mut self, start: u64, end: u64, depth: u32) -> Result<(), Problem> {
        if end - start < 8 {
            return Ok(());
        }
        let mut h = [0u8; 8];
        self.read_exact(start, &mut h)?;
        let count = u64::from(be32(&h[4..])).min(MAX_SAMPLE_ENTRIES);
        let mut pos = start + 8;
        for _ in 0..count {
            if end.saturating_sub(pos) < 8 {
                break;
            }
            let mut e = [0u8; 4];
            self.read_exact(pos, &mut e)?;
            let size = u64::from(be32(&e));
            if size < 8 {
                break;
            }
            let entry_end = pos.saturating_add(size).min(end);
            self.scan(pos + 16, entry_end, depth + 1)?;
            pos = entry_end;
        }
        Ok(())
    }

    /// Visits every box of interest that starts at any byte of `[start, end)`.
    fn scan(&mut self, start: u64, end: u64, depth: u32) -> Result<(), Problem> {
        if depth > MAX_DEPTH {
            return Err(Problem::Refused(format!(
                "its boxes nest more than {MAX_DEPTH} levels deep"
            )));
        }
        let mut pos = start;
        let mut buf = vec![0u8; BLOCK];
        while end.saturating_sub(pos) >= 8 {
            let n = ((end - pos) as usize).min(BLOCK);
            self.read_exact(pos, &mut buf[..n])?;
            let mut i = 0;
            let mut jumped = false;
            while i + 8 <= n {
                let typ: FourCc = buf[i + 4..i + 8].try_into().expect("4 bytes");
                if interesting(&typ) {
                    let at = pos + i as u64;
                    if let Some((typ, payload, box_end)) = self.header(at, end)? {
                        self.visit(typ, payload, box_end, depth)?;
                        pos = box_end;
                        jumped = true;
                        break;
                    }
                }
                i += 1;
            }
            if !jumped {
                // The last 7 bytes of this block start the next one.
                pos += (n - 7).max(1) as u64;
            }
        }
        Ok(())
    }

    fn hdlr(&mut self, start: u64, end: u64) -> Result<(), Problem> {
        if !self.in_trak || end - start < 12 {
            return Ok(());
        }
        let mut h = [0u8; 12];
        self.read_exact(start, &mut h)?;
        let handler: FourCc = h[8..12].try_into().expect("4 bytes");
        if matches!(&handler, b"vide" | b"soun" | b"m1a " | b"subp" | b"clcp")
            && let Some(t) = self.track()
        {
            t.handler = handler;
        }
        Ok(())
    }

    fn stsz(&mut self, start: u64, end: u64) -> Result<(), Problem> {
        let payload = end - start;
        if payload < 12 {
            return Err(Problem::Forged(format!(
                "its stsz box holds {} but its header needs 12",
                plural(payload, "byte")
            )));
        }
        let mut h = [0u8; 12];
        self.read_exact(start, &mut h)?;
        let size = u64::from(be32(&h[4..]));
        let count = u64::from(be32(&h[8..]));
        let mut listed = 0u64;
        if size == 0 {
            self.fits(b"stsz", count, 4, payload - 12)?;
            self.entries(start + 12, count, 4, |e| {
                listed = listed.saturating_add(u64::from(be32(e)))
            })?;
        }
        if let Some(t) = self.track() {
            t.samples = count;
            t.sample_size = size;
            t.listed_bytes = listed;
        }
        Ok(())
    }

    fn stz2(&mut self, start: u64, end: u64) -> Result<(), Problem> {
        let payload = end - start;
        if payload < 12 {
            return Err(Problem::Forged(format!(
                "its stz2 box holds {} but its header needs 12",
                plural(payload, "byte")
            )));
        }
        let mut h = [0u8; 12];
        self.read_exact(start, &mut h)?;
        let field = u64::from(h[7]);
        let count = u64::from(be32(&h[8..]));
        if !matches!(field, 4 | 8 | 16) {
            return Err(Problem::Forged(format!(
                "its stz2 box has fields of {field} bits"
            )));
        }
        let bytes = count.saturating_mul(field).div_ceil(8);
        if bytes > payload - 12 {
            return Err(Problem::Forged(format!(
                "its stz2 box declares {count} sizes of {field} bits but holds {}",
                plural(payload - 12, "byte")
            )));
        }
        let mut listed = 0u64;
        match field {
            16 => self.entries(start + 12, count, 2, |e| {
                listed += u64::from(u16::from_be_bytes([e[0], e[1]]))
            })?,
            8 => self.entries(start + 12, count, 1, |e| listed += u64::from(e[0]))?,
            _ => {
                // Two sizes a byte, high nibble first; an odd count leaves one unused.
                let mut left = count;
                self.entries(start + 12, bytes, 1, |e| {
                    for v in [e[0] >> 4, e[0] & 15] {
                        if left > 0 {
                            listed += u64::from(v);
                            left -= 1;
                        }
                    }
                })?;
            }
        }
        if let Some(t) = self.track() {
            t.samples = count;
            t.sample_size = 0;
            t.listed_bytes = listed;
        }
        Ok(())
    }

    fn stts(&mut self, start: u64, end: u64) -> Result<(), Problem> {
        let count = self.table(b"stts", start, end, 8, 8)?;
        let (mut samples, mut first) = (0u64, None);
        self.entries(start + 8, count, 8, |e| {
            samples = samples.saturating_add(u64::from(be32(e)));
            first.get_or_insert(be32(&e[4..]));
        })?;
        if let Some(t) = self.track() {
            t.stts_entries = count;
            t.stts_samples = samples;
            t.stts_first_delta = first.unwrap_or(0);
        }
        Ok(())
    }

    fn ctts(&mut self, start: u64, end: u64) -> Result<(), Problem> {
        let count = self.table(b"ctts", start, end, 8, 8)?;
        let mut samples = 0u64;
        self.entries(start + 8, count, 8, |e| {
            // libavformat skips entries whose (signed) count is not positive.
            let n = be32(e) as i32;
            if n > 0 {
                samples += n as u64;
            }
        })?;
        if let Some(t) = self.track() {
            t.ctts_samples = samples;
        }
        Ok(())
    }

    fn stsc(&mut self, start: u64, end: u64) -> Result<(), Problem> {
        let count = self.table(b"stsc", start, end, 8, 12)?;
        let mut max = 0u64;
        self.entries(start + 8, count, 12, |e| {
            max = max.max(u64::from(be32(&e[4..])))
        })?;
        if let Some(t) = self.track() {
            t.stsc_max = max;
        }
        Ok(())
    }

    fn stco(&mut self, typ: &FourCc, start: u64, end: u64) -> Result<(), Problem> {
        let entry = if typ == b"co64" { 8 } else { 4 };
        let count = self.table(typ, start, end, 8, entry)?;
        if self.in_trak
            && let Some(t) = self.track()
        {
            t.chunks = count;
        }
        Ok(())
    }

    fn sgpd(&mut self, start: u64, end: u64) -> Result<(), Problem> {
        let payload = end - start;
        let mut h = [0u8; 16];
        let n = payload.min(16) as usize;
        self.read_exact(start, &mut h[..n])?;
        // version 0: count at 8; 1: default length at 8, count at 12; 2+: count at 16.
        let fixed = match h[0] {
            0 => 12,
            1 => 16,
            _ => 20,
        };
        // Every entry takes at least a byte.
        self.table(b"sgpd", start, end, fixed, 1).map(drop)
    }

    fn sbgp(&mut self, start: u64, end: u64) -> Result<(), Problem> {
        let mut v = [0u8; 1];
        if end > start {
            self.read_exact(start, &mut v)?;
        }
        let fixed = if v[0] == 1 { 16 } else { 12 };
        let count = self.table(b"sbgp", start, end, fixed, 8)?;
        let mut samples = 0u64;
        self.entries(start + fixed, count, 8, |e| {
            samples = samples.saturating_add(u64::from(be32(e)))
        })?;
        if let Some(t) = self.track() {
            // A group of another type replaces nothing, but covers the same samples.
            t.sbgp_samples = t.sbgp_samples.max(samples);
        }
        Ok(())
    }

    fn sidx(&mut self, start: u64, end: u64) -> Result<(), Problem> {
        let mut v = [0u8; 1];
        if end > start {
            self.read_exact(start, &mut v)?;
        }
        // version, flags, reference id, timescale, two times (32 or 64 bits), reserved.
        let fixed = if v[0] == 0 { 24 } else { 32 };
        let payload = end - start;
        if payload < fixed {
            return Err(Problem::Forged(format!(
                "its sidx box holds {} but its header needs {fixed}",
                plural(payload, "byte")
            )));
        }
        let mut h = [0u8; 32];
        self.read_exact(start, &mut h[..fixed as usize])?;
        let f = fixed as usize;
        let count = u64::from(u16::from_be_bytes([h[f - 2], h[f - 1]]));
        self.fits(b"sidx", count, 12, payload - fixed)?;
        self.fragments += count;
        Ok(())
    }

    fn trex(&mut self, start: u64, end: u64) -> Result<(), Problem> {
        if end - start < 24 {
            return Ok(());
        }
        let mut h = [0u8; 24];
        self.read_exact(start, &mut h)?;
        self.trex.push((be32(&h[4..]), be32(&h[16..])));
        Ok(())
    }

    fn tfhd(&mut self, start: u64, end: u64) -> Result<(), Problem> {
        let payload = end - start;
        if payload < 8 {
            return Ok(());
        }
        let mut h = [0u8; 8];
        self.read_exact(start, &mut h)?;
        let flags = be32(&h) & 0xFF_FFFF;
        let track = be32(&h[4..]);
        let mut at = 8u64;
        for (bit, len) in [(0x1, 8), (0x2, 4), (0x8, 4)] {
            if flags & bit != 0 {
                at += len;
            }
        }
        let mut size = None;
        if flags & 0x10 != 0 && at + 4 <= payload {
            let mut s = [0u8; 4];
            self.read_exact(start + at, &mut s)?;
            size = Some(be32(&s));
        }
        self.tfhd = Some((track, size));
        Ok(())
    }

    fn trun(&mut self, start: u64, end: u64) -> Result<(), Problem> {
        let payload = end - start;
        if payload < 8 {
            return Err(Problem::Forged(format!(
                "its trun box holds {} but its header needs 8",
                plural(payload, "byte")
            )));
        }
        let mut h = [0u8; 8];
        self.read_exact(start, &mut h)?;
        let flags = be32(&h) & 0xFF_FFFF;
        let count = u64::from(be32(&h[4..]));
        let fixed = 8 + 4 * u64::from((flags & 0x1 != 0) as u8 + (flags & 0x4 != 0) as u8);
        // Per sample: duration, size, flags, composition offset, 4 bytes each if present.
        let fields = [0x100, 0x200, 0x400, 0x800];
        let per = 4 * fields.iter().filter(|&&f| flags & f != 0).count() as u64;
        if payload < fixed {
            return Err(Problem::Forged(format!(
                "its trun box holds {} but its header needs {fixed}",
                plural(payload, "byte")
            )));
        }
        self.fits(b"trun", count, per, payload - fixed)?;
        let bytes = if flags & 0x200 != 0 {
            let at = 4 * u64::from(flags & 0x100 != 0) as usize;
            let mut sum = 0u64;
            self.entries(start + fixed, count, per as usize, |e| {
                sum = sum.saturating_add(u64::from(be32(&e[at..])))
            })?;
            sum
        } else {
            let default = self
                .tfhd
                .and_then(|(track, size)| {
                    size.or_else(|| {
                        self.trex
                            .iter()
                            .rev()
                            .find(|(id, _)| *id == track)
                            .map(|t| t.1)
                    })
                })
                .unwrap_or(0)
                .max(1);
            count.saturating_mul(u64::from(default))
        };
        if bytes > self.len {
            return Err(Problem::Forged(format!(
                "a movie fragment (trun) declares {} taking {} in a file of {}",
                plural(count, "sample"),
                plural(bytes, "byte"),
                plural(self.len, "byte")
            )));
        }
        self.trun_samples = self.trun_samples.saturating_add(count);
        Ok(())
    }

    /// What the tables add up to, track by track, against the file and the limits.
    fn finish(self) -> Result<Summary, Problem> {
        let len = self.len;
        let mut samples = self.trun_samples;
        for (i, t) in self.tracks.iter().enumerate() {
            let n = i + 1;
            let audio = matches!(&t.handler, b"soun" | b"m1a ");
            // libavformat indexes uncompressed audio by chunks of up to 1024 samples
            // (fewer for some codecs, at least 160 a chunk entry), not by sample.
            if audio && t.stts_entries == 1 && t.stts_first_delta == 1 {
                samples = samples.saturating_add(
                    t.chunks
                        .saturating_mul(t.stsc_max / 160 + 1)
                        .min(u64::MAX / 2),
                );
            } else {
                if t.sample_size > 0 && !audio {
                    let bytes = t.samples.saturating_mul(t.sample_size);
                    if bytes > len {
                        return Err(Problem::Forged(format!(
                            "track {n} declares {} of {} each, {} in all, in a file of {}",
                            plural(t.samples, "sample"),
                            plural(t.sample_size, "byte"),
                            plural(bytes, "byte"),
                            plural(len, "byte")
                        )));
                    }
                }
                if t.listed_bytes > len {
                    return Err(Problem::Forged(format!(
                        "track {n} lists {} of samples in a file of {}",
                        plural(t.listed_bytes, "byte"),
                        plural(len, "byte")
                    )));
                }
                let declared = t
                    .samples
                    .max(t.stts_samples)
                    .max(t.ctts_samples)
                    .max(t.sbgp_samples);
                if declared > len {
                    return Err(Problem::Forged(format!(
                        "track {n} declares {}, more than a file of {} can hold",
                        plural(declared, "sample"),
                        plural(len, "byte")
                    )));
                }
                samples = samples.saturating_add(t.samples);
            }
            let offsets = t.ctts_samples.max(t.sbgp_samples);
            if offsets > MAX_SAMPLES {
                return Err(Problem::Refused(format!(
                    "track {n} declares {offsets} samples; at most {MAX_SAMPLES} are read"
                )));
            }
        }
        if samples > MAX_SAMPLES {
            return Err(Problem::Refused(format!(
                "it declares {samples} samples to index; at most {MAX_SAMPLES} are read"
            )));
        }
        if self.fragments > MAX_FRAGMENTS {
            return Err(Problem::Refused(format!(
                "it declares {} movie fragments; at most {MAX_FRAGMENTS} are read",
                self.fragments
            )));
        }
        Ok(Summary {
            tracks: self.tracks.len(),
            samples,
            fragments: self.fragments,
        })
    }
}

/// Box types [`Walker::visit`] acts on (the byte scan of sample entries looks for them).
fn interesting(t: &FourCc) -> bool {
    matches!(
        t,
        b"trak"
            | b"moof"
            | b"traf"
            | b"moov"
            | b"mdia"
            | b"minf"
            | b"stbl"
            | b"dinf"
            | b"edts"
            | b"mvex"
            | b"tref"
            | b"udta"
            | b"ilst"
            | b"wave"
            | b"sinf"
            | b"schi"
            | b"hoov"
            | b"meta"
            | b"stsd"
            | b"stsz"
            | b"stz2"
            | b"stts"
            | b"ctts"
            | b"stsc"
            | b"stco"
            | b"co64"
            | b"stss"
            | b"stps"
            | b"sgpd"
            | b"sbgp"
            | b"keys"
            | b"sidx"
            | b"trex"
            | b"tfhd"
            | b"trun"
            | b"cmov"
            | b"senc"
            | b"saiz"
            | b"saio"
            | b"pssh"
            | b"tenc"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(t: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut v = (8 + payload.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(t);
        v.extend_from_slice(payload);
        v
    }

    /// A full box: version and flags, then the fields, 32-bit each.
    fn full(t: &[u8; 4], version: u8, flags: u32, fields: &[u32]) -> Vec<u8> {
        let mut p = ((u32::from(version) << 24) | flags).to_be_bytes().to_vec();
        for f in fields {
            p.extend_from_slice(&f.to_be_bytes());
        }
        bx(t, &p)
    }

    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    fn hdlr(kind: &[u8; 4]) -> Vec<u8> {
        full(b"hdlr", 0, 0, &[0, u32::from_be_bytes(*kind), 0, 0, 0])
    }

    /// ftyp, a moov with one track of `handler` whose `stbl` holds `tables`, and an
    /// mdat of `data` bytes.
    fn movie(handler: &[u8; 4], tables: &[Vec<u8>], data: usize) -> Vec<u8> {
        let stbl = bx(b"stbl", &cat(tables));
        let minf = bx(b"minf", &stbl);
        let mdia = bx(b"mdia", &cat(&[hdlr(handler), minf]));
        let trak = bx(b"trak", &mdia);
        let moov = bx(b"moov", &trak);
        cat(&[
            bx(b"ftyp", b"isom\0\0\x02\0isom"),
            moov,
            bx(b"mdat", &vec![0u8; data]),
        ])
    }

    fn check_bytes(v: &[u8]) -> Result<Summary, Problem> {
        check(v, v.len() as u64)
    }

    /// Tables of a plain video track: `n` samples of 10 bytes, one chunk.
    fn plain(n: u32) -> Vec<Vec<u8>> {
        vec![
            full(b"stts", 0, 0, &[1, n, 512]),
            full(b"stsc", 0, 0, &[1, 1, n, 1]),
            full(b"stsz", 0, 0, &[10, n]),
            full(b"stco", 0, 0, &[1, 40]),
        ]
    }

    #[test]
    fn honest_files_pass() {
        let v = movie(b"vide", &plain(30), 300);
        let s = check_bytes(&v).unwrap();
        assert_eq!(
            s,
            Summary {
                tracks: 1,
                samples: 30,
                fragments: 0
            }
        );
        // Listed sizes, composition offsets, sync samples.
        let mut sizes = vec![0, 30];
        sizes.extend([10u32; 30]);
        let v = movie(
            b"vide",
            &[
                full(b"stts", 0, 0, &[1, 30, 512]),
                full(b"ctts", 0, 0, &[2, 15, 1024, 15, 0]),
                full(b"stss", 0, 0, &[2, 1, 16]),
                full(b"stsz", 0, 0, &sizes),
            ],
            300,
        );
        assert_eq!(check_bytes(&v).unwrap().samples, 30);
        let real = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/xinpianchang/example/99945958.mp4"
        );
        let file = std::fs::File::open(real).unwrap();
        let s = check(&file, file.metadata().unwrap().len()).unwrap();
        assert_eq!((s.tracks, s.samples), (1, 369), "{s:?}");
    }

    #[test]
    fn constant_size_samples_must_fit_in_the_file() {
        let v = movie(b"vide", &plain(80_000_000), 600);
        let e = check_bytes(&v).unwrap_err();
        assert!(matches!(e, Problem::Forged(_)), "{e:?}");
        let m = e.to_string();
        assert!(
            m.contains("track 1 declares 80000000 samples of 10 bytes"),
            "{m}"
        );
        assert!(
            m.contains(&format!("in a file of {} bytes", v.len())),
            "{m}"
        );
    }

    #[test]
    fn tables_longer_than_their_box_are_forged() {
        for (table, entry) in [
            (full(b"stts", 0, 0, &[1_000_000, 1, 1]), "8 bytes"),
            (full(b"ctts", 0, 0, &[1_000_000, 1, 1]), "8 bytes"),
            (full(b"stsc", 0, 0, &[5_000, 1, 1, 1]), "12 bytes"),
            (full(b"stco", 0, 0, &[7, 1]), "4 bytes"),
            (full(b"co64", 0, 0, &[2, 1, 1]), "8 bytes"),
            (full(b"stss", 0, 0, &[u32::MAX, 1]), "4 bytes"),
            (full(b"stsz", 0, 0, &[0, 3, 1, 1]), "4 bytes"),
            (full(b"sbgp", 0, 0, &[0x7379_6e63, 9, 1, 1]), "8 bytes"),
            (full(b"sgpd", 0, 0, &[0x7379_6e63, 100, 0]), "1 byte"),
        ] {
            let v = movie(b"vide", &[table], 100);
            let e = check_bytes(&v).unwrap_err();
            assert!(matches!(e, Problem::Forged(_)), "{e:?}");
            assert!(e.to_string().contains(entry), "{e}");
        }
        // A table box too short for its own header.
        let v = movie(b"vide", &[bx(b"stsz", &[0, 0, 0, 0])], 100);
        assert!(
            check_bytes(&v)
                .unwrap_err()
                .to_string()
                .contains("header needs 12")
        );
        // Compact sizes: 4-bit fields, two a byte.
        let mut stz2 = vec![0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 5];
        stz2.extend([0x12, 0x34, 0x50]);
        let v = movie(b"vide", &[bx(b"stz2", &stz2)], 100);
        assert_eq!(check_bytes(&v).unwrap().samples, 5);
        stz2[11] = 7;
        let v = movie(b"vide", &[bx(b"stz2", &stz2)], 100);
        assert!(matches!(check_bytes(&v), Err(Problem::Forged(_))));
    }

    #[test]
    fn declared_samples_the_file_cannot_hold_are_forged() {
        // stts alone says 80 million samples.
        let v = movie(b"vide", &[full(b"stts", 0, 0, &[1, 80_000_000, 1])], 100);
        let e = check_bytes(&v).unwrap_err();
        assert!(e.to_string().contains("declares 80000000 samples"), "{e}");
        // Listed sizes adding up to more than the file.
        let v = movie(
            b"vide",
            &[full(b"stsz", 0, 0, &[0, 2, 1 << 30, 1 << 30])],
            100,
        );
        let e = check_bytes(&v).unwrap_err();
        assert!(e.to_string().contains("lists 2147483648 bytes"), "{e}");
    }

    /// A source of `len` bytes: `head`, then zeros.
    struct Sparse {
        head: Vec<u8>,
        len: u64,
    }

    impl ReadAt for Sparse {
        fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
            let n = buf.len().min(self.len.saturating_sub(pos) as usize);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = self.head.get(pos as usize + i).copied().unwrap_or(0);
            }
            Ok(n)
        }
    }

    #[test]
    fn more_samples_than_are_indexed_are_refused_however_large_the_file() {
        // 5 million samples of 1 byte in a 10 GB file: possible, but beyond the index.
        let mut head = movie(b"vide", &plain(5_000_000), 0);
        // The mdat reaches to the end of the file (size 0).
        let n = head.len();
        head[n - 8..n - 4].copy_from_slice(&0u32.to_be_bytes());
        let src = Sparse {
            head,
            len: 10 << 30,
        };
        let e = check(&src, src.len).unwrap_err();
        assert!(matches!(e, Problem::Refused(_)), "{e:?}");
        assert!(e.to_string().contains("5000000 samples"), "{e}");
        // Uncompressed audio is indexed by chunk: 48 million samples in 100 chunks.
        let tables = [
            full(b"stts", 0, 0, &[1, 48_000_000, 1]),
            full(b"stsc", 0, 0, &[1, 1, 480_000, 1]),
            full(b"stsz", 0, 0, &[4, 48_000_000]),
            full(b"stco", 0, 0, &[100; 101]),
        ];
        let mut head = movie(b"soun", &tables, 0);
        let n = head.len();
        head[n - 8..n - 4].copy_from_slice(&0u32.to_be_bytes());
        let src = Sparse {
            head,
            len: 200 << 20,
        };
        let s = check(&src, src.len).unwrap();
        assert!(s.samples < 400_000, "{s:?}");
    }

    #[test]
    fn fragments_declare_what_fits() {
        let moov = bx(
            b"moov",
            &cat(&[
                bx(b"trak", &bx(b"mdia", &hdlr(b"vide"))),
                bx(b"mvex", &full(b"trex", 0, 0, &[1, 1, 1, 100, 0])),
            ]),
        );
        let frag = |count: u32, flags: u32, per_sample: &[u32]| {
            let mut fields = vec![count, 0];
            fields.extend_from_slice(per_sample);
            bx(
                b"moof",
                &bx(
                    b"traf",
                    &cat(&[
                        full(b"tfhd", 0, 0x2_0000, &[1]),
                        full(b"trun", 0, flags, &fields),
                    ]),
                ),
            )
        };
        let ok = cat(&[moov.clone(), frag(3, 1, &[]), bx(b"mdat", &[0; 300])]);
        let s = check_bytes(&ok).unwrap();
        assert_eq!((s.samples, s.fragments), (3, 1));
        // 80 million samples of the track's default 100 bytes.
        let v = cat(&[
            moov.clone(),
            frag(80_000_000, 1, &[]),
            bx(b"mdat", &[0; 300]),
        ]);
        let e = check_bytes(&v).unwrap_err();
        assert!(
            e.to_string()
                .contains("80000000 samples taking 8000000000 bytes"),
            "{e}"
        );
        // Per-sample sizes that the box does not hold.
        let v = cat(&[
            moov.clone(),
            frag(1000, 0x201, &[5, 5]),
            bx(b"mdat", &[0; 300]),
        ]);
        assert!(
            check_bytes(&v)
                .unwrap_err()
                .to_string()
                .contains("trun box declares 1000 entries")
        );
        // Too many fragments.
        let mut v = moov.clone();
        for _ in 0..=MAX_FRAGMENTS {
            v.extend(bx(b"moof", &[]));
        }
        assert!(matches!(check_bytes(&v), Err(Problem::Refused(_))));
    }

    #[test]
    fn box_sizes_are_read_as_libavformat_reads_them() {
        // A 64-bit size, and a last box of size 0 (to the end of the file).
        let stbl = bx(b"stbl", &cat(&plain(80_000_000)));
        let inner = bx(
            b"trak",
            &bx(b"mdia", &cat(&[hdlr(b"vide"), bx(b"minf", &stbl)])),
        );
        let mut moov = 1u32.to_be_bytes().to_vec();
        moov.extend_from_slice(b"moov");
        moov.extend_from_slice(&(16 + inner.len() as u64).to_be_bytes());
        moov.extend(inner);
        let mut v = cat(&[bx(b"ftyp", b"isom\0\0\x02\0"), moov]);
        v.extend(0u32.to_be_bytes());
        v.extend_from_slice(b"mdat");
        v.extend([0u8; 500]);
        let e = check_bytes(&v).unwrap_err();
        assert!(e.to_string().contains("80000000 samples"), "{e}");
        // A size past the end is clamped; a size under 8 ends the parent quietly.
        let mut v = movie(b"vide", &plain(10), 200);
        let at = v.len() - 208;
        v[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        check_bytes(&v).unwrap();
        let mut v = cat(&[
            bx(b"ftyp", b"isom"),
            3u32.to_be_bytes().to_vec(),
            b"moov".to_vec(),
        ]);
        v.extend(movie(b"vide", &plain(80_000_000), 0));
        check_bytes(&v).unwrap();
    }

    #[test]
    fn tables_hidden_in_sample_entries_or_metadata_are_checked() {
        // A 'stsz' inside the avc1 entry's extension boxes (libavformat reads it there).
        let mut avc1 = vec![0u8; 78];
        avc1.extend(bx(b"avcC", &[1, 2, 3]));
        avc1.extend(full(b"stsz", 0, 0, &[1, 80_000_000]));
        let stsd = bx(
            b"stsd",
            &cat(&[vec![0; 4], 1u32.to_be_bytes().to_vec(), bx(b"avc1", &avc1)]),
        );
        let v = movie(b"vide", &[stsd], 100);
        let e = check_bytes(&v).unwrap_err();
        assert!(e.to_string().contains("80000000 samples"), "{e}");
        // A 'keys' table in a metadata box (children start 4 bytes before 'hdlr').
        let meta = bx(
            b"meta",
            &cat(&[vec![0; 4], hdlr(b"mdta"), full(b"keys", 0, 0, &[1_000_000])]),
        );
        let v = cat(&[bx(b"ftyp", b"isom"), bx(b"moov", &bx(b"udta", &meta))]);
        let e = check_bytes(&v).unwrap_err();
        assert!(
            e.to_string().contains("keys box declares 1000000 entries"),
            "{e}"
        );
    }

    #[test]
    fn what_cannot_be_checked_or_decoded_is_refused() {
        let v = cat(&[bx(b"ftyp", b"isom"), bx(b"moov", &bx(b"cmov", &[0; 16]))]);
        let e = check_bytes(&v).unwrap_err();
        assert!(
            matches!(e, Problem::Refused(_)) && e.to_string().contains("cmov"),
            "{e}"
        );
        let v = movie(b"vide", &[full(b"senc", 0, 0, &[0])], 10);
        assert!(
            check_bytes(&v)
                .unwrap_err()
                .to_string()
                .contains("encrypted")
        );
        let traks = vec![bx(b"trak", &[]); MAX_STREAMS as usize + 1];
        let v = cat(&[bx(b"ftyp", b"isom"), bx(b"moov", &cat(&traks))]);
        let e = check_bytes(&v).unwrap_err();
        assert!(e.to_string().contains("more than 16 tracks"), "{e}");
        let mut deep = full(b"stts", 0, 0, &[0]);
        for _ in 0..MAX_DEPTH + 1 {
            deep = bx(b"udta", &deep);
        }
        let e = check_bytes(&deep).unwrap_err();
        assert!(e.to_string().contains("levels deep"), "{e}");
    }
}
