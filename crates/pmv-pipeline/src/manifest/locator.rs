//! Locations of files: validated http(s) URLs and local paths.
//!
//! Owns the rules a URL or path from a manifest must pass (scheme, length, no
//! whitespace or control characters, no credentials) and turns each into a [`Locator`]
//! with its source kind. A local path is taken from a base directory when relative,
//! resolved to its real path and accepted only inside the allowed folders
//! ([`LocalRoots::check`], the same check the fetch stage makes when it reads the file);
//! the file need not exist yet. Nothing here reads a file's bytes.

use std::path::Path;

use url::Url;

use crate::source::local::LocalRoots;
use pmv_core::redact::show_url;
use pmv_core::{Locator, SourceKind};

/// Longest URL or path accepted, in bytes.
pub const MAX_LOCATION_BYTES: usize = 8192;

/// Whether a field may name a local file.
#[derive(Debug, Clone, Copy)]
pub enum Allow<'a> {
    /// Only http(s) URLs (links files, the xinpianchang CDN fields).
    Remote,
    /// http(s) URLs, `file://` URLs and paths; relative paths are taken from `base`
    /// (absolute), and a path must lie inside `roots`.
    RemoteOrLocal {
        base: &'a Path,
        roots: &'a LocalRoots,
    },
}

/// Validates one location as written in a manifest (already trimmed by the caller).
pub fn parse_location(raw: &str, allow: Allow<'_>) -> Result<Locator, String> {
    if raw.len() > MAX_LOCATION_BYTES {
        return Err(format!(
            "URL is {} bytes long (at most {MAX_LOCATION_BYTES})",
            raw.len()
        ));
    }
    // Nearly every URL in practice is already canonical: no need for the full parser.
    if let Some(host) = canonical_http(raw) {
        never_fetched(host, raw)?;
        return Ok(Locator {
            kind: SourceKind::classify_host(host),
            location: raw.to_owned(),
        });
    }
    // Text copied with the Douyin app's share button stands for the link inside it.
    let raw = crate::source::douyin::share_text_link(raw)?.unwrap_or(raw);
    if raw.is_empty() {
        return Err("empty URL".into());
    }
    if let Some(c) = raw.chars().find(|c| c.is_control()) {
        return Err(format!(
            "URL contains the control character U+{:04X}",
            c as u32
        ));
    }
    let scheme = scheme_of(raw);
    // Paths may hold spaces; URLs may not (a space is where a list's next column starts).
    if scheme.is_some() && raw.contains(char::is_whitespace) {
        return Err(format!("URL '{}' contains whitespace", show_url(raw)));
    }
    match scheme {
        Some(scheme)
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            let url =
                Url::parse(raw).map_err(|e| format!("invalid URL '{}': {e}", show_url(raw)))?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(format!("URL '{}' has no host", show_url(raw)));
            }
            // Credentials are never stored (the catalog and every report would hold
            // them), and `a.example@b.example` is how a link disguises its host.
            if !url.username().is_empty() || url.password().is_some() {
                return Err(format!(
                    "URL '{}' carries {} before its host '{}'; credentials in URLs are not accepted (nothing of it is stored)",
                    show_url(raw),
                    if url.password().is_some() {
                        "a user name and password"
                    } else {
                        "a user name"
                    },
                    url.host_str().unwrap_or("")
                ));
            }
            never_fetched(url.host_str().unwrap_or(""), raw)?;
            Ok(Locator {
                kind: SourceKind::classify_url(&url),
                location: url.into(),
            })
        }
        Some(scheme) if scheme.eq_ignore_ascii_case("file") => match allow {
            Allow::Remote => Err(format!(
                "'{}' is a local file; only http(s) URLs are allowed here",
                show_url(raw)
            )),
            Allow::RemoteOrLocal { roots, .. } => {
                let url = Url::parse(raw)
                    .map_err(|e| format!("invalid file URL '{}': {e}", show_url(raw)))?;
                let path = url.to_file_path().map_err(|()| {
                    format!("file URL '{}' does not name a local path", show_url(raw))
                })?;
                local(&path, roots)
            }
        },
        Some(scheme) => Err(format!(
            "URL scheme '{scheme}' is not allowed (http or https{})",
            if matches!(allow, Allow::RemoteOrLocal { .. }) {
                ", or a local path"
            } else {
                ""
            }
        )),
        None => match allow {
            Allow::Remote => Err(format!("'{}' is not an http(s) URL", show_url(raw))),
            Allow::RemoteOrLocal { base, roots } => {
                let p = Path::new(raw);
                if p.is_absolute() {
                    local(p, roots)
                } else {
                    local(&base.join(p), roots)
                }
            }
        },
    }
}

/// Refuses a link to a link-local or cloud metadata address (see [`crate::net::reach`]),
/// which is never fetched: decided here when the host says so without DNS.
fn never_fetched(host: &str, raw: &str) -> Result<(), String> {
    use crate::net::reach::{self, Reach};
    // A host whose last label is a number is an IPv4 address in another notation
    // (`0xa9fea9fe`): the URL parser says which.
    let last = host.trim_end_matches('.').rsplit('.').next().unwrap_or("");
    let numeric = !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit())
            || last
                .strip_prefix("0x")
                .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())));
    let reach = match reach::host(host) {
        Reach::Public if numeric => Url::parse(raw).map_or(Reach::Public, |u| reach::url(&u)),
        r => r,
    };
    if reach == Reach::Never {
        return Err(format!(
            "URL '{}' names {host}, a link-local or cloud metadata address: never fetched",
            show_url(raw)
        ));
    }
    Ok(())
}

/// The host of an http(s) URL that is already written exactly as the WHATWG parser
/// would write it, for a conservative subset (lower-case scheme and host with a letter,
/// no user info, no default port, a path of plain characters, no dot segments). Such
/// URLs, nearly all of them in practice, skip the full parser; any other text returns
/// `None` and goes through it.
fn canonical_http(raw: &str) -> Option<&str> {
    let (rest, default_port) = if let Some(r) = raw.strip_prefix("https://") {
        (r, "443")
    } else if let Some(r) = raw.strip_prefix("http://") {
        (r, "80")
    } else {
        return None;
    };
    let slash = rest.find('/')?;
    let (authority, path) = rest.split_at(slash);
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && host.bytes().any(|b| b.is_ascii_lowercase())
        && !host.starts_with(['.', '-'])
        && !host.ends_with(['.', '-'])
        && !host.contains("..");
    if !host_ok {
        return None;
    }
    if let Some(p) = port {
        let valid = !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && !p.starts_with('0')
            && p != default_port
            && p.parse::<u32>().is_ok_and(|n| n <= 65535);
        if !valid {
            return None;
        }
    }
    if path.contains("/.") {
        return None;
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => {}
            b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'(' | b')' | b'*' | b'+' | b','
            | b';' | b'=' | b':' | b'@' | b'/' | b'?' => {}
            b'%' if bytes.len() > i + 2
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit() => {}
            _ => return None,
        }
        i += 1;
    }
    Some(host)
}

fn local(path: &Path, roots: &LocalRoots) -> Result<Locator, String> {
    let real = roots.check(path).map_err(|e| e.to_string())?;
    let location = real
        .to_str()
        .ok_or_else(|| format!("path {} is not UTF-8", real.display()))?
        .to_owned();
    Ok(Locator {
        kind: SourceKind::Local,
        location,
    })
}

/// The URL scheme, if the text starts with one (`[A-Za-z][A-Za-z0-9+.-]*:`).
fn scheme_of(raw: &str) -> Option<&str> {
    let end = raw.find(':')?;
    let scheme = &raw[..end];
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_are_normalised_and_classified() {
        let l = parse_location(
            "HTTPS://P5-V1.xpccdn.com/099945958_main_xl.mp4",
            Allow::Remote,
        )
        .unwrap();
        assert_eq!(l.kind, SourceKind::Direct);
        assert_eq!(l.location, "https://p5-v1.xpccdn.com/099945958_main_xl.mp4");
        let d = parse_location("https://v.douyin.com/abc/", Allow::Remote).unwrap();
        assert_eq!(d.kind, SourceKind::Douyin);
    }

    #[test]
    fn link_local_and_metadata_hosts_are_refused() {
        for raw in [
            "http://169.254.169.254/latest/meta-data/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://[fd00:ec2::254]/latest/",
            "http://[fe80::1]/v.mp4",
            "http://0xa9fea9fe/latest",
            "http://0xa9.0xfe.0xa9.0xfe/latest",
            "http://2852039166/latest",
        ] {
            let e = parse_location(raw, Allow::Remote).unwrap_err();
            assert!(e.contains("never fetched"), "{raw}: {e}");
        }
        // Private hosts are the fetch's decision (an opt-in), not the manifest's.
        for raw in ["http://127.0.0.1:8080/a.mp4", "http://10.0.0.5/a.mp4"] {
            parse_location(raw, Allow::Remote).unwrap();
        }
    }

    #[test]
    fn other_schemes_are_rejected() {
        for bad in [
            "ftp://h/x.mp4",
            "javascript:alert(1)",
            "data:text/html,x",
            "gopher://h/",
        ] {
            let e = parse_location(bad, Allow::Remote).unwrap_err();
            assert!(e.contains("not allowed"), "{bad}: {e}");
        }
        assert!(
            parse_location("file:///x.mp4", Allow::Remote)
                .unwrap_err()
                .contains("local")
        );
        assert!(
            parse_location("/abs/x.mp4", Allow::Remote)
                .unwrap_err()
                .contains("not an http")
        );
        assert!(parse_location("http://", Allow::Remote).is_err());
        assert!(parse_location("https://:80/x", Allow::Remote).is_err());
        assert!(
            parse_location("http://h/a b", Allow::Remote)
                .unwrap_err()
                .contains("whitespace")
        );
        assert!(
            parse_location("http://h/a\u{7}", Allow::Remote)
                .unwrap_err()
                .contains("control")
        );
    }

    #[test]
    fn the_fast_path_agrees_with_the_parser() {
        let samples = [
            "https://p5-v1.xpccdn.com/099945958_main_xl.mp4",
            "https://aweme.snssdk.com/aweme/v1/play/?video_id=v0d00fg10000cc0bltrc77ud5sllkjug&ratio=720p",
            "http://127.0.0.1:8080/a.mp4",
            "http://localhost:80/a.mp4",
            "https://h.example:443/a",
            "https://h.example:0443/a",
            "https://h.example:99999/a",
            "https://H.example/a",
            "https://h.example",
            "https://h.example/a/./b",
            "https://h.example/a/../b",
            "https://h.example/%7e%41",
            "https://h.example/a b",
            "https://h.example/a'b?c'd",
            "https://user:pw@h.example/a",
            "https://h.example/a#frag",
            "https://xn--fsq.example/%E4%B8%AD",
            "https://h.example/a?x=1&y=%2",
            "https://h.example./a",
            "https://-h.example/a",
        ];
        for raw in samples {
            if let Some(host) = canonical_http(raw) {
                let url = Url::parse(raw).unwrap();
                assert_eq!(url.as_str(), raw, "fast path accepted a non-canonical URL");
                assert_eq!(url.host_str(), Some(host));
            }
            let fast = parse_location(raw, Allow::Remote);
            let slow = Url::parse(raw).map(|u| u.to_string());
            if let (Ok(f), Ok(s)) = (&fast, &slow) {
                assert_eq!(&f.location, s, "{raw}");
            }
        }
        assert!(canonical_http("https://p5-v1.xpccdn.com/099945958_main_xl.mp4").is_some());
        assert!(canonical_http("https://H.example/a").is_none());
    }

    #[test]
    fn local_paths_resolve_to_real_paths_inside_the_roots() {
        let t = tempfile::tempdir().unwrap();
        let top = std::fs::canonicalize(t.path()).unwrap();
        let base = top.join("data/lists");
        std::fs::create_dir_all(&base).unwrap();
        let roots = LocalRoots::new([top.join("data")]);
        let allow = Allow::RemoteOrLocal {
            base: &base,
            roots: &roots,
        };
        let l = parse_location("../videos/./a.mp4", allow).unwrap();
        assert_eq!(l.kind, SourceKind::Local);
        assert_eq!(l.location, top.join("data/videos/a.mp4").to_str().unwrap());
        let abs = top.join("data/y.mp4");
        assert_eq!(
            parse_location(abs.to_str().unwrap(), allow)
                .unwrap()
                .location,
            abs.to_str().unwrap()
        );
        let url = format!("file://{}/z%20.mp4", top.join("data").display());
        assert_eq!(
            parse_location(&url, allow).unwrap().location,
            top.join("data/z .mp4").to_str().unwrap()
        );
        for outside in ["/etc/passwd", "file:///etc/shadow", "../../outside/x.mp4"] {
            let e = parse_location(outside, allow).unwrap_err();
            assert!(e.contains("outside the folders"), "{outside}: {e}");
        }
    }

    #[test]
    fn credentials_in_urls_are_refused_without_being_echoed() {
        for raw in [
            "https://user:hunter2@h.example/a.mp4",
            "https://user@h.example/a.mp4",
            "https://good.example@evil.example/x.mp4",
        ] {
            let e = parse_location(raw, Allow::Remote).unwrap_err();
            assert!(e.contains("credentials in URLs are not accepted"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let e =
            parse_location("https://good.example@evil.example/x.mp4", Allow::Remote).unwrap_err();
        assert!(e.contains("'evil.example'"), "{e}");
    }
}
