//! The small types every stage names: the manifest formats, the kinds of source,
//! the roles a stored file plays and the place a file is fetched from.
//!
//! Owns their names as the catalog stores them and their parsing from those names;
//! never how a manifest is read, a source resolved or a file fetched.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use url::Url;

/// The input formats `ingest` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// PMV-400 lists: `<id>.mp4,<label>` per line, no header.
    Pmv400,
    /// xinpianchang metadata: JSON lines, or the upstream `<label>/<id>/<id>.txt` tree.
    Xinpianchang,
    /// VideoMAE / MMAction2 lists: `<path-or-url> <label>` per line.
    Videomae,
    /// Generic JSON lines, one object per item (schemas/manifest-item.schema.json).
    Jsonl,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Pmv400 => "pmv400",
            Format::Xinpianchang => "xinpianchang",
            Format::Videomae => "videomae",
            Format::Jsonl => "jsonl",
        }
    }

    /// Whether datasets of this format are multi-label unless told otherwise.
    pub fn multi_label_default(self) -> bool {
        matches!(self, Format::Xinpianchang)
    }

    /// Whether rows must get their split from `--split` or the file name.
    pub fn needs_file_split(self) -> bool {
        matches!(self, Format::Pmv400 | Format::Videomae)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <Format as clap::ValueEnum>::from_str(s, true)
    }
}

/// The resolver a candidate source needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Any http(s) URL that serves the file itself (xinpianchang CDN, mirrors).
    Direct,
    /// A Douyin play, share or video page link that must be resolved to its CDN URL.
    Douyin,
    /// A OneDrive or SharePoint share link (file or folder).
    Onedrive,
    /// A file on a local or mounted disk, imported by hard link or copy.
    Local,
}

impl SourceKind {
    pub const ALL: [SourceKind; 4] = [
        SourceKind::Direct,
        SourceKind::Douyin,
        SourceKind::Onedrive,
        SourceKind::Local,
    ];

    /// The name stored in the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Direct => "direct",
            SourceKind::Douyin => "douyin",
            SourceKind::Onedrive => "onedrive",
            SourceKind::Local => "local",
        }
    }

    /// Classifies an http(s) URL by its host. Hosts are compared as whole DNS labels,
    /// so `notdouyin.com` is `direct` while `www.douyin.com` is `douyin`.
    pub fn classify_url(url: &Url) -> SourceKind {
        match url.host_str() {
            Some(host) => SourceKind::classify_host(host),
            None => SourceKind::Direct,
        }
    }

    /// Classifies an http(s) URL by its host name.
    pub fn classify_host(host: &str) -> SourceKind {
        let host = host.trim_end_matches('.');
        // Play links (`aweme/v1/play/?video_id=`) answer with a redirect to the CDN,
        // and share or video pages need the platform's item lookup: both are `douyin`.
        // The CDN hosts themselves (douyinvod.com, ...) serve bytes and stay `direct`.
        const DOUYIN: [&str; 4] = ["douyin.com", "iesdouyin.com", "amemv.com", "snssdk.com"];
        const ONEDRIVE: [&str; 4] = [
            "1drv.ms",
            "onedrive.live.com",
            "api.onedrive.com",
            "sharepoint.com",
        ];
        if DOUYIN.iter().any(|d| host_is_within(host, d)) {
            SourceKind::Douyin
        } else if ONEDRIVE.iter().any(|d| host_is_within(host, d)) {
            SourceKind::Onedrive
        } else {
            SourceKind::Direct
        }
    }
}

/// True when `host` is `domain` or one of its subdomains (ASCII case-insensitive).
fn host_is_within(host: &str, domain: &str) -> bool {
    let (h, d) = (host.as_bytes(), domain.as_bytes());
    h.len() >= d.len()
        && h[h.len() - d.len()..].eq_ignore_ascii_case(d)
        && (h.len() == d.len() || h[h.len() - d.len() - 1] == b'.')
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SourceKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown source kind '{s}' (direct, douyin, onedrive, local)"))
    }
}

/// Which kind of file a stored file must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Video,
    Cover,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Video => "video",
            Role::Cover => "cover",
        }
    }

    /// Every extension a stored file of this role may have (to find a file whose
    /// extension is not recorded).
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            Role::Video => &[
                "mp4", "mov", "webm", "mkv", "3gp", "flv", "avi", "ts", "mpg", "wmv", "ogv",
            ],
            Role::Cover => &["jpg", "png", "webp", "gif", "avif", "heic", "bmp"],
        }
    }
}

/// One candidate place to get a file from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Locator {
    pub kind: SourceKind,
    /// A normalised http(s) URL, or for `local` the real path (absolute, symlinks
    /// and `..` resolved).
    pub location: String,
}
