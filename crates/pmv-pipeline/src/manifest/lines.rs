//! Streaming line reader for text manifests.
//!
//! Owns the byte-level rules every line format shares: LF or CRLF line ends, a UTF-8
//! byte-order mark on the first line, lines that are not UTF-8, a maximum line length,
//! and whether the last line was terminated. It hashes every byte it consumes so the
//! caller learns the file's SHA-256 in the same pass. It never holds more than one line
//! in memory, however large the file.

use std::io::{self, BufRead, BufReader, Read};

use sha2::{Digest, Sha256};

/// Longest line kept, in bytes. Longer lines are reported, not buffered.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// What one line holds once its line end (and a leading BOM) is removed.
#[derive(Debug, PartialEq, Eq)]
pub enum LineText<'a> {
    Text(&'a str),
    /// Invalid UTF-8 at this byte offset (0-based) of the line.
    NotUtf8 {
        column: usize,
        byte: u8,
    },
    /// The line was longer than the limit; its bytes were skipped.
    TooLong {
        bytes: u64,
    },
}

#[derive(Debug)]
pub struct Line<'a> {
    /// 1-based line number.
    pub number: u64,
    pub text: LineText<'a>,
    /// False only for a last line that ends without a line feed.
    pub terminated: bool,
    /// Bytes of the input consumed up to the end of this line.
    pub end_offset: u64,
}

pub struct LineReader<R: Read> {
    reader: BufReader<R>,
    buf: Vec<u8>,
    number: u64,
    hasher: Option<Sha256>,
    bytes: u64,
    max_len: usize,
    done: bool,
}

impl<R: Read> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, MAX_LINE_BYTES)
    }

    /// A reader that does not hash (the caller hashes the file some other way).
    pub fn unhashed(inner: R) -> Self {
        let mut r = Self::new(inner);
        r.hasher = None;
        r
    }

    pub fn with_limit(inner: R, max_len: usize) -> Self {
        LineReader {
            reader: BufReader::with_capacity(256 * 1024, inner),
            buf: Vec::with_capacity(256),
            number: 0,
            hasher: Some(Sha256::new()),
            bytes: 0,
            max_len,
            done: false,
        }
    }

    /// Bytes consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// SHA-256 (hex, empty for an unhashed reader) of every byte consumed, and their
    /// count; call after the last line.
    pub fn finish(self) -> (String, u64) {
        let hash = self
            .hasher
            .map(|h| hex::encode(h.finalize()))
            .unwrap_or_default();
        (hash, self.bytes)
    }

    /// The next line, or `None` at the end of the input.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        if self.done {
            return Ok(None);
        }
        self.buf.clear();
        let mut skipped: u64 = 0;
        let mut terminated = false;
        let mut any = false;
        loop {
            let avail = match self.reader.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                break;
            }
            any = true;
            let (chunk_len, consumed, found) = match memchr::memchr(b'\n', avail) {
                Some(i) => (i, i + 1, true),
                None => (avail.len(), avail.len(), false),
            };
            if let Some(h) = self.hasher.as_mut() {
                h.update(&avail[..consumed]);
            }
            if skipped > 0 || self.buf.len() + chunk_len > self.max_len {
                skipped += (self.buf.len() + chunk_len) as u64;
                self.buf.clear();
            } else {
                self.buf.extend_from_slice(&avail[..chunk_len]);
            }
            self.reader.consume(consumed);
            self.bytes += consumed as u64;
            if found {
                terminated = true;
                break;
            }
        }
        if !terminated {
            self.done = true;
            if !any {
                return Ok(None);
            }
        }
        self.number += 1;
        if skipped > 0 {
            return Ok(Some(Line {
                number: self.number,
                text: LineText::TooLong { bytes: skipped },
                terminated,
                end_offset: self.bytes,
            }));
        }
        let mut start = 0;
        if self.number == 1 && self.buf.starts_with(b"\xEF\xBB\xBF") {
            start = 3;
        }
        let mut end = self.buf.len();
        if end > start && self.buf[end - 1] == b'\r' {
            end -= 1;
        }
        let raw = &self.buf[start..end];
        let text = match std::str::from_utf8(raw) {
            Ok(s) => LineText::Text(s),
            Err(e) => LineText::NotUtf8 {
                column: e.valid_up_to(),
                byte: raw[e.valid_up_to()],
            },
        };
        Ok(Some(Line {
            number: self.number,
            text,
            terminated,
            end_offset: self.bytes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(input: &[u8], limit: usize) -> Vec<(u64, String, bool)> {
        let mut r = LineReader::with_limit(input, limit);
        let mut out = vec![];
        while let Some(l) = r.next_line().unwrap() {
            let t = match l.text {
                LineText::Text(s) => s.to_owned(),
                LineText::NotUtf8 { column, byte } => format!("<bad {column} {byte:#x}>"),
                LineText::TooLong { bytes } => format!("<long {bytes}>"),
            };
            out.push((l.number, t, l.terminated));
        }
        out
    }

    #[test]
    fn crlf_bom_and_missing_final_newline() {
        let got = collect(b"\xEF\xBB\xBFa,1\r\nb,2\nc,3", 100);
        assert_eq!(
            got,
            vec![
                (1, "a,1".into(), true),
                (2, "b,2".into(), true),
                (3, "c,3".into(), false)
            ]
        );
    }

    #[test]
    fn bom_only_counts_on_first_line() {
        let got = collect(b"x\n\xEF\xBB\xBFy\n", 100);
        assert_eq!(got[1].1, "\u{feff}y");
    }

    #[test]
    fn invalid_utf8_is_located() {
        let got = collect(b"ok\nab\xffcd\n", 100);
        assert_eq!(got[1].1, "<bad 2 0xff>");
    }

    #[test]
    fn long_lines_are_skipped_not_buffered() {
        let mut input = vec![b'x'; 50];
        input.extend_from_slice(b"\nshort\n");
        let got = collect(&input, 10);
        assert_eq!(got[0].1, "<long 50>");
        assert_eq!(got[1].1, "short");
    }

    #[test]
    fn empty_input_has_no_lines_and_hash_covers_all_bytes() {
        assert!(collect(b"", 10).is_empty());
        let mut r = LineReader::new(&b"a\nb"[..]);
        while r.next_line().unwrap().is_some() {}
        let (hash, n) = r.finish();
        assert_eq!(n, 3);
        assert_eq!(hash, pmv_core::util::sha256_hex(b"a\nb"));
    }

    #[test]
    fn trailing_newline_gives_no_extra_line() {
        assert_eq!(collect(b"a\n", 10).len(), 1);
        assert_eq!(collect(b"a\n\n", 10).len(), 2);
    }
}
