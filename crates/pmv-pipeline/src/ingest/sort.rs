//! An external sort of ingest records by item id, in bounded memory.
//!
//! Records are kept in memory until they pass a byte budget; then the buffer is sorted
//! and written to a run file in the root's `tmp/` directory, and a k-way merge reads
//! the runs back in order. A manifest of any length is therefore ingested with the
//! same peak memory. Run files are deleted when the sorter is dropped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// What a record says about its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The catalog's view before this ingest: the item is a member of a read manifest.
    Existing = 0,
    /// An accepted row.
    Row = 1,
    /// A row rejected while reading, whose id was known.
    Rejected = 2,
}

impl Kind {
    fn from_u8(b: u8) -> io::Result<Kind> {
        match b {
            0 => Ok(Kind::Existing),
            1 => Ok(Kind::Row),
            2 => Ok(Kind::Rejected),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "corrupt sort run",
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Box<str>,
    /// Arrival order; ties between equal keys keep it.
    pub seq: u64,
    pub input: u32,
    pub kind: Kind,
    pub payload: Vec<u8>,
}

impl Record {
    fn cost(&self) -> usize {
        self.key.len() + self.payload.capacity() + std::mem::size_of::<Record>() + 32
    }

    fn order(&self) -> (&str, u64) {
        (&self.key, self.seq)
    }
}

impl Ord for Record {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

impl PartialOrd for Record {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

pub struct Sorter {
    dir: PathBuf,
    budget: usize,
    used: usize,
    buffer: Vec<Record>,
    runs: Vec<PathBuf>,
    seq: u64,
}

impl Sorter {
    /// `dir` receives run files (created on first spill); `budget` is in bytes.
    pub fn new(dir: &Path, budget: usize) -> Sorter {
        Sorter {
            dir: dir.to_owned(),
            budget,
            used: 0,
            buffer: Vec::new(),
            runs: Vec::new(),
            seq: 0,
        }
    }

    pub fn push(&mut self, key: &str, input: u32, kind: Kind, payload: Vec<u8>) -> io::Result<()> {
        let r = Record {
            key: key.into(),
            seq: self.seq,
            input,
            kind,
            payload,
        };
        self.seq += 1;
        self.used += r.cost();
        self.buffer.push(r);
        if self.used > self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Records pushed so far.
    pub fn len(&self) -> u64 {
        self.seq
    }

    /// Run files written so far (0 when everything fitted in memory).
    pub fn spills(&self) -> usize {
        self.runs.len()
    }

    fn spill(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.buffer.sort_unstable();
        fs_err::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("run-{:05}.bin", self.runs.len()));
        let mut w = BufWriter::with_capacity(1 << 20, fs_err::File::create(&path)?);
        for r in self.buffer.drain(..) {
            write_record(&mut w, &r)?;
        }
        w.flush()?;
        self.runs.push(path);
        self.used = 0;
        Ok(())
    }

    /// All records in (key, arrival) order.
    pub fn finish(mut self) -> io::Result<Sorted> {
        if self.runs.is_empty() {
            self.buffer.sort_unstable();
            let buffer = std::mem::take(&mut self.buffer);
            return Ok(Sorted {
                inner: Inner::Memory(buffer.into_iter()),
                _sorter: self,
            });
        }
        self.spill()?;
        let mut readers = Vec::with_capacity(self.runs.len());
        let mut heap = BinaryHeap::with_capacity(self.runs.len());
        for (i, path) in self.runs.iter().enumerate() {
            let mut r = BufReader::with_capacity(256 * 1024, fs_err::File::open(path)?);
            if let Some(rec) = read_record(&mut r)? {
                heap.push(Reverse((rec, i)));
            }
            readers.push(r);
        }
        Ok(Sorted {
            inner: Inner::Merge { readers, heap },
            _sorter: self,
        })
    }
}

impl Drop for Sorter {
    fn drop(&mut self) {
        for run in &self.runs {
            let _ = std::fs::remove_file(run);
        }
        if !self.runs.is_empty() {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// The sorted stream; owns the sorter so run files live as long as it.
pub struct Sorted {
    inner: Inner,
    _sorter: Sorter,
}

enum Inner {
    Memory(std::vec::IntoIter<Record>),
    Merge {
        readers: Vec<BufReader<fs_err::File>>,
        heap: BinaryHeap<Reverse<(Record, usize)>>,
    },
}

impl Sorted {
    pub fn next_record(&mut self) -> io::Result<Option<Record>> {
        match &mut self.inner {
            Inner::Memory(it) => Ok(it.next()),
            Inner::Merge { readers, heap } => {
                let Some(Reverse((rec, i))) = heap.pop() else {
                    return Ok(None);
                };
                if let Some(next) = read_record(&mut readers[i])? {
                    heap.push(Reverse((next, i)));
                }
                Ok(Some(rec))
            }
        }
    }
}

fn write_record(w: &mut impl Write, r: &Record) -> io::Result<()> {
    w.write_all(&(r.key.len() as u32).to_le_bytes())?;
    w.write_all(r.key.as_bytes())?;
    w.write_all(&r.seq.to_le_bytes())?;
    w.write_all(&r.input.to_le_bytes())?;
    w.write_all(&[r.kind as u8])?;
    w.write_all(&(r.payload.len() as u32).to_le_bytes())?;
    w.write_all(&r.payload)
}

fn read_record(r: &mut impl Read) -> io::Result<Option<Record>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut key = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut key)?;
    let key = String::from_utf8(key)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "corrupt sort run"))?;
    let mut seq = [0u8; 8];
    r.read_exact(&mut seq)?;
    let mut input = [0u8; 4];
    r.read_exact(&mut input)?;
    let mut kind = [0u8; 1];
    r.read_exact(&mut kind)?;
    r.read_exact(&mut len)?;
    let mut payload = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut payload)?;
    Ok(Some(Record {
        key: key.into_boxed_str(),
        seq: u64::from_le_bytes(seq),
        input: u32::from_le_bytes(input),
        kind: Kind::from_u8(kind[0])?,
        payload,
    }))
}

/// A compact binary encoding for payloads (little-endian, length-prefixed).
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn f64(&mut self, v: f64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v.as_bytes());
        self
    }
    pub fn opt_str(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(s) => self.u8(1).str(s),
            None => self.u8(0),
        }
    }
}

/// Reads what [`Enc`] wrote; a short or malformed payload is an `InvalidData` error.
pub struct Dec<'a>(pub &'a [u8]);

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated payload",
            ));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    pub fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub fn i64(&mut self) -> io::Result<i64> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub fn f64(&mut self) -> io::Result<f64> {
        Ok(f64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub fn str(&mut self) -> io::Result<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "payload text is not UTF-8"))
    }
    pub fn opt_str(&mut self) -> io::Result<Option<&'a str>> {
        match self.u8()? {
            0 => Ok(None),
            _ => self.str().map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: Sorter) -> Vec<(String, u64, u32)> {
        let mut sorted = s.finish().unwrap();
        let mut out = vec![];
        while let Some(r) = sorted.next_record().unwrap() {
            out.push((r.key.to_string(), r.seq, r.input));
        }
        out
    }

    #[test]
    fn spilled_and_in_memory_sorts_agree() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<String> = (0..5000)
            .map(|i| format!("k{:05}", (i * 7919) % 3001))
            .collect();
        let mut small = Sorter::new(&dir.path().join("a"), 4096);
        let mut large = Sorter::new(&dir.path().join("b"), 1 << 30);
        for (i, k) in keys.iter().enumerate() {
            small
                .push(k, (i % 3) as u32, Kind::Row, vec![1, 2, 3])
                .unwrap();
            large
                .push(k, (i % 3) as u32, Kind::Row, vec![1, 2, 3])
                .unwrap();
        }
        assert!(small.spills() > 10, "{}", small.spills());
        assert_eq!(large.spills(), 0);
        let a = drain(small);
        let b = drain(large);
        assert_eq!(a, b);
        assert!(a.windows(2).all(|w| (&w[0].0, w[0].1) < (&w[1].0, w[1].1)));
        assert_eq!(a.len(), 5000);
        // Run files are gone once the stream is dropped.
        assert!(!dir.path().join("a").exists());
    }

    #[test]
    fn payloads_round_trip() {
        let mut e = Enc::default();
        e.u8(7)
            .u32(9)
            .u64(u64::MAX)
            .i64(-3)
            .f64(1.5)
            .str("视频")
            .opt_str(None)
            .opt_str(Some("x"));
        let mut d = Dec(&e.0);
        assert_eq!(d.u8().unwrap(), 7);
        assert_eq!(d.u32().unwrap(), 9);
        assert_eq!(d.u64().unwrap(), u64::MAX);
        assert_eq!(d.i64().unwrap(), -3);
        assert_eq!(d.f64().unwrap(), 1.5);
        assert_eq!(d.str().unwrap(), "视频");
        assert_eq!(d.opt_str().unwrap(), None);
        assert_eq!(d.opt_str().unwrap(), Some("x"));
        assert!(d.u8().is_err());
    }
}
