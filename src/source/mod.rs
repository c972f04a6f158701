//! Source kinds: which resolver a link needs before it can be downloaded.
//!
//! This module owns the classification of a validated location (an http(s) URL or an
//! absolute local path) into `direct`, `douyin`, `onedrive` or `local`. It never opens
//! a connection and never touches the catalog; resolving a link is the fetch stage's job.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use url::Url;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(u: &str) -> SourceKind {
        SourceKind::classify_url(&Url::parse(u).unwrap())
    }

    #[test]
    fn hosts_are_classified_by_whole_labels() {
        assert_eq!(
            kind("https://www.douyin.com/video/7100000000000000000"),
            SourceKind::Douyin
        );
        assert_eq!(kind("https://v.douyin.com/iRNBho6u/"), SourceKind::Douyin);
        assert_eq!(
            kind(
                "https://aweme.snssdk.com/aweme/v1/play/?video_id=v0d00fg10000cc0bltrc77ud5sllkjug"
            ),
            SourceKind::Douyin
        );
        assert_eq!(
            kind("https://www.iesdouyin.com/share/video/7100/"),
            SourceKind::Douyin
        );
        assert_eq!(kind("https://notdouyin.com/x.mp4"), SourceKind::Direct);
        assert_eq!(
            kind("https://v26.douyinvod.com/abc/video.mp4"),
            SourceKind::Direct
        );
        assert_eq!(kind("https://1drv.ms/f/s!AbCdEf"), SourceKind::Onedrive);
        assert_eq!(
            kind("https://contoso-my.sharepoint.com/:f:/g/x"),
            SourceKind::Onedrive
        );
        assert_eq!(
            kind("https://p5-v1.xpccdn.com/099945958_main_xl.mp4"),
            SourceKind::Direct
        );
        assert_eq!(kind("http://127.0.0.1:8080/a.mp4"), SourceKind::Direct);
    }

    #[test]
    fn names_round_trip() {
        for k in SourceKind::ALL {
            assert_eq!(k.as_str().parse::<SourceKind>().unwrap(), k);
        }
        assert!("ftp".parse::<SourceKind>().is_err());
    }
}
