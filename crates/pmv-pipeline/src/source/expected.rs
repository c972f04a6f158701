//! What is known about a file before it is fetched: its size and the hashes a
//! manifest or a source vouches for.
//!
//! It lives with the sources because they are what state it: a manifest gives the
//! size and SHA-256, a OneDrive share its SHA-1 and quickXorHash, and each resolver
//! hands its part back in [`super::Resolved`]. The fetch stage only reads it (it merges
//! the item's and the source's and checks the bytes against them in
//! `crate::fetch::verify`), so keeping it here lets fetch depend on sources and never
//! the other way round. It does no I/O.

/// What is known about a file before it is fetched. Every field that is `Some` must
/// match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub size: Option<u64>,
    /// Lower-case hex (manifest).
    pub sha256: Option<String>,
    /// Hex, any case (OneDrive `sha1Hash`).
    pub sha1: Option<String>,
    /// Base64 (OneDrive `quickXorHash`).
    pub quickxor: Option<String>,
}

impl Expected {
    /// Both sets of expectations; a conflict between them is reported by `check`
    /// because the first one wins here and the bytes cannot match both.
    pub fn merged(&self, other: &Expected) -> Expected {
        Expected {
            size: self.size.or(other.size),
            sha256: self.sha256.clone().or_else(|| other.sha256.clone()),
            sha1: self.sha1.clone().or_else(|| other.sha1.clone()),
            quickxor: self.quickxor.clone().or_else(|| other.quickxor.clone()),
        }
    }

    /// Which hashes are known, for messages (`sha256, size`).
    pub fn describe(&self) -> String {
        let mut parts = vec![];
        if self.size.is_some() {
            parts.push("size");
        }
        if self.sha256.is_some() {
            parts.push("sha256");
        }
        if self.sha1.is_some() {
            parts.push("sha1");
        }
        if self.quickxor.is_some() {
            parts.push("quickXorHash");
        }
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join(", ")
        }
    }
}
