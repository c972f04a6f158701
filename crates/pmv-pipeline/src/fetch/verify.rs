//! What makes a downloaded file acceptable: its first bytes are a video container (or
//! an image, for a cover), and its size and every hash we know match.
//!
//! Owns the container sniffing (ISO BMFF `ftyp`, Matroska/WebM EBML, FLV, AVI, MPEG
//! TS/PS, ASF, Ogg; JPEG, PNG, GIF, WebP, AVIF/HEIC, BMP for covers), the streaming
//! hashers (SHA-256 always; SHA-1 and quickXorHash when a source lists them) and the
//! comparison with the expected values. The file extension of a stored file comes from
//! the sniffed container, never from a URL or a server's header. A file that is
//! neither is described by what it looks like ("an HTML page", "a text file",
//! "unrecognised binary data"): no message ever holds a byte of it, since a local
//! source may be any file on the machine. No I/O here.

use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::quickxor::QuickXor;
use crate::net::failure::{ErrorClass, Failure};
pub use crate::source::Expected;
pub use pmv_core::Role;

/// Bytes kept from the start of a file for sniffing (MPEG-TS needs 189).
pub const HEAD_BYTES: usize = 256;

/// What the first bytes of a file are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    Video {
        ext: &'static str,
    },
    Image {
        ext: &'static str,
    },
    /// Not enough bytes yet to tell.
    NeedMore,
    /// Something else; the text says what it looks like ("an HTML page").
    Other(&'static str),
}

/// Identifies the container from the first bytes. `complete` says that `head` holds
/// the whole file (a short file cannot wait for more bytes).
pub fn sniff(head: &[u8], complete: bool) -> Sniffed {
    let need = |n: usize| head.len() < n && !complete;
    if need(12) {
        // Text answers are recognisable at once; everything else needs 12 bytes.
        return match text_kind(head) {
            Some(t) if head.len() >= 4 => Sniffed::Other(t),
            _ => Sniffed::NeedMore,
        };
    }
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    if at(4, b"ftyp") {
        let brand = head.get(8..12).unwrap_or(b"    ");
        return match brand {
            b"qt  " => Sniffed::Video { ext: "mov" },
            b"avif" | b"avis" => Sniffed::Image { ext: "avif" },
            b"heic" | b"heix" | b"mif1" | b"msf1" | b"heim" | b"heis" => {
                Sniffed::Image { ext: "heic" }
            }
            [b'3', b'g', ..] => Sniffed::Video { ext: "3gp" },
            _ => Sniffed::Video { ext: "mp4" },
        };
    }
    // QuickTime files written without an ftyp box start with one of these.
    if [b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"]
        .iter()
        .any(|m| at(4, *m))
    {
        return Sniffed::Video { ext: "mov" };
    }
    if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        if need(64) {
            return Sniffed::NeedMore;
        }
        let window = &head[..head.len().min(64)];
        let webm = window.windows(4).any(|w| w == b"webm");
        return Sniffed::Video {
            ext: if webm { "webm" } else { "mkv" },
        };
    }
    if at(0, b"FLV\x01") {
        return Sniffed::Video { ext: "flv" };
    }
    if at(0, b"RIFF") && at(8, b"AVI ") {
        return Sniffed::Video { ext: "avi" };
    }
    if at(0, b"RIFF") && at(8, b"WEBP") {
        return Sniffed::Image { ext: "webp" };
    }
    if at(0, &[0x30, 0x26, 0xB2, 0x75, 0x8E, 0x66, 0xCF, 0x11]) {
        return Sniffed::Video { ext: "wmv" };
    }
    if at(0, b"OggS") {
        return Sniffed::Video { ext: "ogv" };
    }
    if at(0, &[0x00, 0x00, 0x01, 0xBA]) {
        return Sniffed::Video { ext: "mpg" };
    }
    if head.first() == Some(&0x47) {
        if need(189) {
            return Sniffed::NeedMore;
        }
        if head.get(188) == Some(&0x47) {
            return Sniffed::Video { ext: "ts" };
        }
    }
    if at(0, &[0xFF, 0xD8, 0xFF]) {
        return Sniffed::Image { ext: "jpg" };
    }
    if at(0, b"\x89PNG\r\n\x1a\n") {
        return Sniffed::Image { ext: "png" };
    }
    if at(0, b"GIF87a") || at(0, b"GIF89a") {
        return Sniffed::Image { ext: "gif" };
    }
    if at(0, b"BM") && head.len() >= 14 && at(6, &[0, 0, 0, 0]) {
        return Sniffed::Image { ext: "bmp" };
    }
    Sniffed::Other(describe(head))
}

/// What a file that is neither a video nor an image looks like, in words.
fn describe(head: &[u8]) -> &'static str {
    if head.is_empty() {
        "an empty file"
    } else if let Some(t) = text_kind(head) {
        t
    } else if looks_like_text(head) {
        "a text file"
    } else if head.len() < 12 {
        "too short to be a video or an image"
    } else {
        "unrecognised binary data"
    }
}

/// UTF-8 without control characters other than tabs, line and page breaks (the last
/// character may be cut off by the end of `head`).
fn looks_like_text(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(t) => t,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    !valid.is_empty()
        && valid
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\x0c'))
}

/// Names answers that are text: HTML/XML pages, JSON, plain text.
fn text_kind(head: &[u8]) -> Option<&'static str> {
    let start = head
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(head)
        .iter()
        .position(|b| !b.is_ascii_whitespace())?;
    let rest = &head[start..];
    let lower: Vec<u8> = rest.iter().take(16).map(u8::to_ascii_lowercase).collect();
    if lower.starts_with(b"<!doctype html") || lower.starts_with(b"<html") {
        Some("an HTML page")
    } else if rest.starts_with(b"<") {
        Some("an HTML or XML document")
    } else if rest.starts_with(b"{") || rest.starts_with(b"[") {
        Some("a JSON document")
    } else {
        None
    }
}

/// Checks a sniff result against the role; `Ok(ext)` names the stored extension. The
/// message of a refusal says what the bytes look like, never what they are.
pub fn accept(role: Role, sniffed: Sniffed) -> Result<&'static str, Failure> {
    match (role, sniffed) {
        (Role::Video, Sniffed::Video { ext }) | (Role::Cover, Sniffed::Image { ext }) => Ok(ext),
        (Role::Video, Sniffed::Image { ext }) => Err(Failure::new(
            ErrorClass::NotVideo,
            format!("expected a video, got a {ext} image"),
        )),
        (Role::Cover, Sniffed::Video { ext }) => Err(Failure::new(
            ErrorClass::NotImage,
            format!("expected a cover image, got a {ext} video"),
        )),
        (role, Sniffed::Other(what)) => Err(Failure::new(
            match role {
                Role::Video => ErrorClass::NotVideo,
                Role::Cover => ErrorClass::NotImage,
            },
            format!(
                "expected {}, got {what}",
                match role {
                    Role::Video => "a video",
                    Role::Cover => "an image",
                }
            ),
        )),
        (role, Sniffed::NeedMore) => Err(Failure::new(
            match role {
                Role::Video => ErrorClass::NotVideo,
                Role::Cover => ErrorClass::NotImage,
            },
            format!("too short to be a {}", role.as_str()),
        )),
    }
}

/// Hashes computed while the bytes stream in.
#[derive(Clone)]
pub struct Hashers {
    sha256: Sha256,
    sha1: Option<Sha1>,
    quickxor: Option<QuickXor>,
    len: u64,
    head: Vec<u8>,
}

/// The result of [`Hashers::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub len: u64,
    pub sha256: String,
    pub sha1: Option<String>,
    pub quickxor: Option<String>,
    pub head: Vec<u8>,
}

impl Hashers {
    /// SHA-256 always; SHA-1 and quickXorHash only when `expected` lists them.
    pub fn new(expected: &Expected) -> Hashers {
        Hashers {
            sha256: Sha256::new(),
            sha1: expected.sha1.as_ref().map(|_| Sha1::new()),
            quickxor: expected.quickxor.as_ref().map(|_| QuickXor::new()),
            len: 0,
            head: Vec::with_capacity(HEAD_BYTES),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        if let Some(h) = &mut self.sha1 {
            h.update(data);
        }
        if let Some(h) = &mut self.quickxor {
            h.update(data);
        }
        if self.head.len() < HEAD_BYTES {
            let n = (HEAD_BYTES - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
        }
        self.len += data.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first bytes seen so far (at most [`HEAD_BYTES`]).
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    pub fn finish(self) -> Digests {
        Digests {
            len: self.len,
            sha256: hex::encode(self.sha256.finalize()),
            sha1: self.sha1.map(|h| hex::encode(h.finalize())),
            quickxor: self.quickxor.map(|h| h.base64()),
            head: self.head,
        }
    }
}

/// Compares what was received with what was expected.
pub fn check(expected: &Expected, got: &Digests) -> Result<(), Failure> {
    if let Some(size) = expected.size
        && size != got.len
    {
        return Err(Failure::new(
            ErrorClass::SizeMismatch,
            format!("expected {size} bytes, got {}", got.len),
        ));
    }
    if let Some(want) = &expected.sha256
        && !want.eq_ignore_ascii_case(&got.sha256)
    {
        return Err(Failure::new(
            ErrorClass::HashMismatch,
            format!("sha256 mismatch: expected {want}, got {}", got.sha256),
        ));
    }
    if let (Some(want), Some(have)) = (&expected.sha1, &got.sha1)
        && !want.eq_ignore_ascii_case(have)
    {
        return Err(Failure::new(
            ErrorClass::HashMismatch,
            format!(
                "sha1 mismatch: the source lists {}, got {have}",
                want.to_ascii_lowercase()
            ),
        ));
    }
    if let (Some(want), Some(have)) = (&expected.quickxor, &got.quickxor)
        && want.trim() != have
    {
        return Err(Failure::new(
            ErrorClass::HashMismatch,
            format!("quickXorHash mismatch: the source lists {want}, got {have}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(head: &[u8]) -> Option<&'static str> {
        match sniff(head, true) {
            Sniffed::Video { ext } => Some(ext),
            _ => None,
        }
    }

    #[test]
    fn the_real_example_is_an_mp4_and_its_cover_a_jpeg() {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("tests/data/xinpianchang/example");
        let mp4 = std::fs::read(dir.join("99945958.mp4")).unwrap();
        assert_eq!(
            sniff(&mp4[..HEAD_BYTES], false),
            Sniffed::Video { ext: "mp4" }
        );
        let jpg = std::fs::read(dir.join("99945958.jpeg")).unwrap();
        assert_eq!(
            sniff(&jpg[..HEAD_BYTES], false),
            Sniffed::Image { ext: "jpg" }
        );
        assert_eq!(accept(Role::Cover, sniff(&jpg, true)), Ok("jpg"));
        assert!(accept(Role::Video, sniff(&jpg, true)).is_err());
    }

    #[test]
    fn containers_are_recognised() {
        assert_eq!(video(b"\0\0\0\x20ftypisom\0\0\x02\0"), Some("mp4"));
        assert_eq!(video(b"\0\0\0\x14ftypqt  \0\0\0\0"), Some("mov"));
        assert_eq!(video(b"\0\0\0\x14ftyp3gp5\0\0\0\0"), Some("3gp"));
        assert_eq!(video(b"\0\0\x01\x00moov\0\0\0\0"), Some("mov"));
        let mut webm = vec![0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x86, 0x81, 0x01];
        webm.extend_from_slice(b"\x42\x82\x84webm");
        assert_eq!(video(&webm), Some("webm"));
        assert_eq!(
            video(&[0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x82, 0x88]),
            Some("mkv")
        );
        assert_eq!(video(b"FLV\x01\x05\0\0\0\x09\0\0\0"), Some("flv"));
        assert_eq!(video(b"RIFF\0\0\0\0AVI LIST"), Some("avi"));
        let mut ts = vec![0u8; 189];
        ts[0] = 0x47;
        ts[188] = 0x47;
        assert_eq!(video(&ts), Some("ts"));
        assert_eq!(sniff(&ts[..100], false), Sniffed::NeedMore);
        assert_eq!(video(b"\0\0\x01\xBA\x44\0\x04\0\x04\x01\0\0"), Some("mpg"));
        assert_eq!(video(b"OggS\0\x02\0\0\0\0\0\0"), Some("ogv"));
        assert_eq!(
            sniff(b"\0\0\0\x1cftypavif\0\0\0\0", true),
            Sniffed::Image { ext: "avif" }
        );
        assert_eq!(
            sniff(b"RIFF\0\0\0\0WEBPVP8 ", true),
            Sniffed::Image { ext: "webp" }
        );
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", true),
            Sniffed::Image { ext: "png" }
        );
        assert_eq!(
            sniff(b"GIF89a\x01\0\x01\0\0\0", true),
            Sniffed::Image { ext: "gif" }
        );
    }

    #[test]
    fn error_pages_are_named_early() {
        assert_eq!(
            sniff(b"<!DOCTYPE html>", false),
            Sniffed::Other("an HTML page")
        );
        assert_eq!(sniff(b"  <html>", false), Sniffed::Other("an HTML page"));
        assert_eq!(sniff(b"{\"a\"", false), Sniffed::Other("a JSON document"));
        assert_eq!(sniff(b"\0\0", false), Sniffed::NeedMore);
        let e = accept(Role::Video, sniff(b"<html><body>removed", true)).unwrap_err();
        assert_eq!(e.class, ErrorClass::NotVideo);
        assert!(e.message.contains("an HTML page"), "{}", e.message);
        let e = accept(Role::Video, sniff(b"\x01\x02", true)).unwrap_err();
        assert!(e.message.contains("too short"), "{}", e.message);
        let e = accept(Role::Cover, sniff(b"plain words here", true)).unwrap_err();
        assert_eq!(e.class, ErrorClass::NotImage);
    }

    #[test]
    fn refusals_describe_the_bytes_without_showing_them() {
        let passwd = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon";
        let bin = [
            0x7fu8, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0,
        ];
        for (head, what) in [
            (&passwd[..], "a text file"),
            (&bin[..], "unrecognised binary data"),
            (&b""[..], "an empty file"),
            (&b"{\"error\": \"gone\"}"[..], "a JSON document"),
        ] {
            let e = accept(Role::Video, sniff(head, true)).unwrap_err();
            assert_eq!(e.message, format!("expected a video, got {what}"));
            for shown in ["root", "726f6f74", "ELF", "7f454c46", "gone"] {
                assert!(!e.message.contains(shown), "{}", e.message);
            }
        }
    }

    #[test]
    fn digests_are_checked() {
        let data = b"hello world";
        let expected = Expected {
            size: Some(11),
            sha256: Some("B94D27B9934D3E08A52E52D7DA7DABFAC484EFE37A5380EE9088F7ACE2EFCDE9".into()),
            sha1: Some("2AAE6C35C94FCFB415DBE95F408B9CE91EE846ED".into()),
            quickxor: None,
        };
        let mut h = Hashers::new(&expected);
        h.update(&data[..5]);
        h.update(&data[5..]);
        let d = h.finish();
        assert_eq!(d.head, data);
        assert!(d.quickxor.is_none());
        check(&expected, &d).unwrap();
        let wrong = Expected {
            size: Some(12),
            ..expected.clone()
        };
        assert_eq!(
            check(&wrong, &d).unwrap_err().class,
            ErrorClass::SizeMismatch
        );
        let wrong = Expected {
            sha1: Some("00".repeat(20)),
            ..expected
        };
        let e = check(&wrong, &d).unwrap_err();
        assert_eq!(e.class, ErrorClass::HashMismatch);
        assert!(e.message.contains("sha1 mismatch"), "{}", e.message);
    }
}
