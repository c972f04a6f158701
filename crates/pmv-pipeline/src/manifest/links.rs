//! Extra video sources given beside a manifest: a links file and a URL template.
//!
//! Owns the upstream PMV-400 links file (`video_links.csv`: the first column is a URL
//! that ends in `=<video_id>`) and `--url-template` (`{id}` replaced by the
//! percent-encoded item id). Both map an item id to candidate sources; the caller
//! appends them after the sources the manifest row itself names.

use std::collections::HashMap;
use std::path::Path;

use super::lines::{LineReader, LineText};
use super::locator::{Allow, parse_location};
use super::{ItemId, ReadError, Rejection, id_from_location};
use pmv_core::Locator;
use pmv_core::redact::show_url;

/// Sources per item id from a links file.
#[derive(Debug, Default, Clone)]
pub struct Links {
    pub by_id: HashMap<String, Vec<Locator>>,
    pub sha256: String,
    pub rows: u64,
    pub rejected: Vec<Rejection>,
}

/// Reads a links file: CSV whose first column is a URL; the item id is the text after
/// the URL's last `=` (`...play/?video_id=<id>`), or else its last path segment without
/// the extension. A first line that holds no URL is a header and skipped.
pub fn read_links_file(path: &Path) -> Result<Links, ReadError<std::convert::Infallible>> {
    let io = |source| ReadError::Io {
        path: path.to_owned(),
        source,
    };
    let mut reader = LineReader::new(fs_err::File::open(path).map_err(io)?);
    let mut links = Links::default();
    while let Some(line) = reader.next_line().map_err(io)? {
        let reject = |reason: String| Rejection {
            file: path.to_owned(),
            line: line.number,
            id: None,
            reason,
        };
        let text = match line.text {
            LineText::Text(t) if t.trim().is_empty() => continue,
            LineText::Text(t) => t,
            LineText::NotUtf8 { column, .. } => {
                links
                    .rejected
                    .push(reject(format!("not valid UTF-8 (at byte {column})")));
                continue;
            }
            LineText::TooLong { bytes } => {
                links
                    .rejected
                    .push(reject(format!("line of {bytes} bytes is too long")));
                continue;
            }
        };
        let first = text.split(',').next().unwrap_or("").trim();
        let first = first
            .strip_prefix('"')
            .and_then(|f| f.strip_suffix('"'))
            .unwrap_or(first);
        if line.number == 1 && !first.contains("://") {
            continue;
        }
        links.rows += 1;
        let locator = match parse_location(first, Allow::Remote) {
            Ok(l) => l,
            Err(e) => {
                links.rejected.push(reject(e));
                continue;
            }
        };
        // Share text pasted from the Douyin app: the id is its link's (the share code).
        let first = if first.contains(char::is_whitespace) {
            locator.location.trim_end_matches('/')
        } else {
            first
        };
        let raw_id = match first.rsplit_once('=') {
            Some((_, id)) if !id.is_empty() => id,
            _ => id_from_location(first),
        };
        match ItemId::parse(raw_id) {
            Ok(id) => {
                let list = links.by_id.entry(id.into_string()).or_default();
                if !list.contains(&locator) {
                    list.push(locator);
                }
            }
            Err(e) => links
                .rejected
                .push(reject(format!("{e} (id taken from the URL)"))),
        }
    }
    let (sha256, bytes) = reader.finish();
    if bytes == 0 || links.rows == 0 {
        return Err(ReadError::Unusable {
            path: path.to_owned(),
            reason: "the links file has no rows".into(),
        });
    }
    links.sha256 = sha256;
    Ok(links)
}

/// A URL pattern with `{id}` where the item id goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate(String);

impl UrlTemplate {
    pub fn parse(template: &str) -> Result<UrlTemplate, String> {
        let t = template.trim();
        let shown = show_url(t);
        if !t.contains("{id}") {
            return Err(format!("URL template '{shown}' has no {{id}} placeholder"));
        }
        let sample = t.replace("{id}", "id");
        parse_location(&sample, Allow::Remote)
            .map_err(|e| format!("URL template '{shown}': {e}"))?;
        Ok(UrlTemplate(t.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL for one item; the id is percent-encoded (all but `A-Za-z0-9-._~`).
    pub fn expand(&self, id: &ItemId) -> Result<Locator, String> {
        let mut enc = String::with_capacity(id.as_str().len());
        for b in id.as_str().bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                enc.push(b as char);
            } else {
                enc.push_str(&format!("%{b:02X}"));
            }
        }
        parse_location(&self.0.replace("{id}", &enc), Allow::Remote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceKind;

    #[test]
    fn links_file_maps_ids_and_skips_a_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("video_links.csv");
        std::fs::write(
            &p,
            "url,label\n\
             https://aweme.snssdk.com/aweme/v1/play/?video_id=v0d00fg10000cc0bltrc77ud5sllkjug,0\n\
             ftp://bad/x=abc\n\
             https://h/p?video_id=..\n\
             \"https://cdn.example/x/v0300abc.mp4\",3\n",
        )
        .unwrap();
        let links = read_links_file(&p).unwrap();
        assert_eq!(links.rows, 4);
        let l = &links.by_id["v0d00fg10000cc0bltrc77ud5sllkjug"][0];
        assert_eq!(l.kind, SourceKind::Douyin);
        assert_eq!(links.by_id["v0300abc"][0].kind, SourceKind::Direct);
        let reasons: Vec<_> = links
            .rejected
            .iter()
            .map(|r| (r.line, r.reason.clone()))
            .collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert_eq!(reasons[0].0, 3);
        assert!(reasons[1].1.contains("'.'"), "{reasons:?}");
    }

    #[test]
    fn templates_encode_ids() {
        assert!(UrlTemplate::parse("https://h/x.mp4").is_err());
        assert!(UrlTemplate::parse("ftp://h/{id}").is_err());
        let t = UrlTemplate::parse("https://www.douyin.com/aweme/v1/play/?video_id={id}").unwrap();
        let id = ItemId::parse("v0d00fg10000cc0bltrc77ud5sllkjug").unwrap();
        let l = t.expand(&id).unwrap();
        assert_eq!(l.kind, SourceKind::Douyin);
        assert!(
            l.location
                .ends_with("video_id=v0d00fg10000cc0bltrc77ud5sllkjug")
        );
        let odd = ItemId::parse("a b?c#d").unwrap();
        let l = UrlTemplate::parse("https://m.example/{id}.mp4")
            .unwrap()
            .expand(&odd)
            .unwrap();
        assert_eq!(l.location, "https://m.example/a%20b%3Fc%23d.mp4");
    }
}
