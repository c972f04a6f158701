//! Item ids: the one piece of manifest text that names things on disk.
//!
//! Owns the rules an id must pass before it enters the catalog and the mapping from an
//! id to a file name stem. A hostile id (path separators, `..`, NUL, control
//! characters, a leading dot, over 128 bytes) is rejected here; everything that reaches
//! the file system goes through [`ItemId::file_stem`], never through raw manifest text.

use std::borrow::Cow;
use std::fmt;

use sha2::{Digest, Sha256};

/// Longest id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// A validated item id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("id is {0} bytes long (at most {MAX_ID_BYTES})")]
    TooLong(usize),
    #[error("id contains '/'")]
    Slash,
    #[error("id contains '\\'")]
    Backslash,
    #[error("id contains '..'")]
    DotDot,
    #[error("id starts with '.'")]
    LeadingDot,
    #[error("id contains a NUL byte")]
    Nul,
    #[error("id contains the control character U+{0:04X}")]
    Control(u32),
    #[error("id starts or ends with whitespace")]
    Whitespace,
}

impl ItemId {
    pub fn parse(raw: &str) -> Result<ItemId, IdError> {
        if raw.is_empty() {
            return Err(IdError::Empty);
        }
        if raw.len() > MAX_ID_BYTES {
            return Err(IdError::TooLong(raw.len()));
        }
        for c in raw.chars() {
            match c {
                '/' => return Err(IdError::Slash),
                '\\' => return Err(IdError::Backslash),
                '\0' => return Err(IdError::Nul),
                c if c.is_control() => return Err(IdError::Control(c as u32)),
                _ => {}
            }
        }
        if raw.starts_with('.') {
            return Err(IdError::LeadingDot);
        }
        if raw.contains("..") {
            return Err(IdError::DotDot);
        }
        if raw.starts_with(char::is_whitespace) || raw.ends_with(char::is_whitespace) {
            return Err(IdError::Whitespace);
        }
        Ok(ItemId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The file name stem for this id. Ids made only of `[A-Za-z0-9_.-]` are used as
    /// they are (every PMV-400 and xinpianchang id); any other byte is written as
    /// `%XX`, which keeps distinct ids distinct. A stem that would exceed 160 bytes is
    /// cut and suffixed with a hash of the whole id, well inside NAME_MAX (255) even
    /// with an extension and a `.partial` suffix.
    pub fn file_stem(&self) -> Cow<'_, str> {
        file_stem(&self.0)
    }
}

/// See [`ItemId::file_stem`]; exposed for ids already validated and stored.
pub fn file_stem(id: &str) -> Cow<'_, str> {
    const MAX_STEM: usize = 160;
    let safe = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
    if id.bytes().all(safe) && id.len() <= MAX_STEM {
        return Cow::Borrowed(id);
    }
    let mut out = String::with_capacity(id.len() * 3);
    for b in id.bytes() {
        if safe(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > MAX_STEM {
        let digest = hex::encode(Sha256::digest(id.as_bytes()));
        let mut cut = MAX_STEM - 17;
        // Never cut inside a %XX escape (the escaped string is ASCII, so any cut is
        // a char boundary).
        if let Some(pos) = out[..cut].rfind('%').filter(|&p| p + 3 > cut) {
            cut = pos;
        }
        out.truncate(cut);
        out.push('~');
        out.push_str(&digest[..16]);
    }
    Cow::Owned(out)
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_ids_pass_unchanged() {
        for id in [
            "v0d00fg10000cc0bltrc77ud5sllkjug",
            "99945958",
            "-abc_000010_000020",
            "a.b",
        ] {
            let parsed = ItemId::parse(id).unwrap();
            assert_eq!(parsed.file_stem(), id);
        }
    }

    #[test]
    fn hostile_ids_are_rejected() {
        assert_eq!(ItemId::parse(""), Err(IdError::Empty));
        assert_eq!(ItemId::parse("a/b"), Err(IdError::Slash));
        assert_eq!(ItemId::parse("a\\b"), Err(IdError::Backslash));
        assert_eq!(ItemId::parse("a..b"), Err(IdError::DotDot));
        assert_eq!(ItemId::parse(".."), Err(IdError::LeadingDot));
        assert_eq!(ItemId::parse(".hidden"), Err(IdError::LeadingDot));
        assert_eq!(ItemId::parse("a\0b"), Err(IdError::Nul));
        assert_eq!(ItemId::parse("a\u{1b}[31m"), Err(IdError::Control(0x1b)));
        assert_eq!(ItemId::parse("a\u{85}"), Err(IdError::Control(0x85)));
        assert_eq!(ItemId::parse(" a"), Err(IdError::Whitespace));
        assert_eq!(ItemId::parse(&"x".repeat(129)), Err(IdError::TooLong(129)));
        assert!(ItemId::parse(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn unusual_ids_get_escaped_injective_stems() {
        let a = ItemId::parse("a b").unwrap();
        let b = ItemId::parse("a%20b").unwrap();
        assert_eq!(a.file_stem(), "a%20b");
        assert_eq!(b.file_stem(), "a%2520b");
        assert_ne!(a.file_stem(), b.file_stem());
        let cjk = ItemId::parse("视频一").unwrap();
        assert!(cjk.file_stem().bytes().all(|b| b.is_ascii()));
    }

    #[test]
    fn long_escaped_stems_are_bounded_and_distinct() {
        let x = ItemId::parse(&"视".repeat(42)).unwrap();
        let y = ItemId::parse(&format!("{}频", "视".repeat(41))).unwrap();
        let (sx, sy) = (x.file_stem(), y.file_stem());
        assert!(sx.len() <= 160, "{}", sx.len());
        assert_ne!(sx, sy);
        assert!(!sx.contains('/'));
        // The cut never leaves a partial %XX escape before the hash marker.
        let head = sx.split('~').next().unwrap();
        let last_pct = head.rfind('%').unwrap();
        assert_eq!(head.len() - last_pct, 3);
    }
}
