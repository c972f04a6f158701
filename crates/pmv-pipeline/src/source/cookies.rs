//! Netscape cookie files (the `cookies.txt` that curl's `-b`/`-c`, yt-dlp's
//! `--cookies` and browser export extensions read and write), and which of their
//! cookies go with a request.
//!
//! Owns the file format: one cookie a line, seven tab-separated fields (domain,
//! include-subdomains `TRUE`/`FALSE`, path, secure `TRUE`/`FALSE`, expiry in unix
//! seconds with `0` for a session cookie, name, value; a line of six fields has an
//! empty value, as curl reads it), `#` comments and blank lines skipped, the
//! `#HttpOnly_` prefix of the domain marking an HttpOnly cookie (kept), CRLF endings and
//! a byte-order mark accepted. Cookies expired at load time are dropped. A malformed
//! line is an error naming the file and line, never the cookie's value. It also owns
//! the matching of a cookie to a URL (RFC 6265: domain, path, secure). It never decides
//! which hosts may receive cookies at all (the Douyin resolver does), never sends a
//! request, and never shows a value: the jar's `Debug` prints names and domains only.

use std::path::{Path, PathBuf};

use url::Url;

/// A cookie file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CookieError {
    /// The file cannot be read.
    #[error("cannot read cookie file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line is not a Netscape cookie line (the message never holds its value).
    #[error("cookie file {path}:{line}: {why}")]
    Line {
        path: PathBuf,
        line: usize,
        why: String,
    },
}

/// One cookie of a file.
#[derive(Clone, PartialEq, Eq)]
pub struct Cookie {
    /// The domain, lower case, without a leading dot.
    pub domain: String,
    /// Also sent to the domain's subdomains (`TRUE`, or a leading dot).
    pub subdomains: bool,
    /// The path prefix the cookie is sent under.
    pub path: String,
    /// Only sent over https.
    pub secure: bool,
    /// Unix seconds it expires at; `None` for a session cookie.
    pub expires: Option<i64>,
    /// HttpOnly (`#HttpOnly_` prefix); such cookies are sent like any other.
    pub http_only: bool,
    /// The cookie's name.
    pub name: String,
    value: String,
}

impl std::fmt::Debug for Cookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cookie")
            .field("domain", &self.domain)
            .field("subdomains", &self.subdomains)
            .field("path", &self.path)
            .field("secure", &self.secure)
            .field("expires", &self.expires)
            .field("http_only", &self.http_only)
            .field("name", &self.name)
            .field("value", &pmv_core::redact::REDACTED)
            .finish()
    }
}

/// The usable cookies of a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CookieJar {
    cookies: Vec<Cookie>,
    /// Cookies of the file dropped because they had expired.
    pub expired: usize,
}

impl CookieJar {
    /// Reads a cookie file, dropping the cookies expired now.
    pub fn load(path: &Path) -> Result<CookieJar, CookieError> {
        let bytes = std::fs::read(path).map_err(|source| CookieError::Io {
            path: path.to_owned(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| CookieError::Line {
            path: path.to_owned(),
            line: e.as_bytes()[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1,
            why: "not UTF-8 text".into(),
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        CookieJar::parse(&text, path, now)
    }

    /// Reads cookie-file text (`path` names it in errors), dropping the cookies
    /// expired at `now` (unix seconds).
    pub fn parse(text: &str, path: &Path, now: i64) -> Result<CookieJar, CookieError> {
        let mut jar = CookieJar::default();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, raw) in text.split('\n').enumerate() {
            let bad = |why: &str| CookieError::Line {
                path: path.to_owned(),
                line: i + 1,
                why: why.to_owned(),
            };
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            let (line, http_only) = match line.strip_prefix("#HttpOnly_") {
                Some(rest) => (rest, true),
                None => (line, false),
            };
            if (!http_only && line.starts_with('#')) || line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            let (domain, flag, cpath, secure, expires, name, value) = match fields[..] {
                [d, f, p, s, e, n, v] => (d, f, p, s, e, n, v),
                [d, f, p, s, e, n] => (d, f, p, s, e, n, ""),
                _ => {
                    return Err(bad(&format!(
                        "{} tab-separated fields, not 7 (domain, include-subdomains, path, \
                         secure, expiry, name, value)",
                        fields.len()
                    )));
                }
            };
            let boolean = |what: &str, v: &str| match v.trim() {
                t if t.eq_ignore_ascii_case("TRUE") => Ok(true),
                t if t.eq_ignore_ascii_case("FALSE") => Ok(false),
                _ => Err(bad(&format!("the {what} field is not TRUE or FALSE"))),
            };
            let subdomains = boolean("include-subdomains", flag)?;
            let secure = boolean("secure", secure)?;
            let domain = domain.trim().to_ascii_lowercase();
            let leading_dot = domain.starts_with('.');
            let domain = domain.trim_start_matches('.').to_owned();
            if domain.is_empty()
                || !domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
            {
                return Err(bad("the domain is empty or not a host name"));
            }
            let cpath = cpath.trim();
            let cpath = if cpath.is_empty() { "/" } else { cpath };
            if !cpath.starts_with('/') || cpath.bytes().any(|b| b.is_ascii_control()) {
                return Err(bad("the path does not start with '/'"));
            }
            let expires: i64 = match expires.trim().parse::<i64>() {
                Ok(e) => e,
                // Some exporters write fractional seconds.
                Err(_) => match expires.trim().parse::<f64>() {
                    Ok(e) if e.is_finite() => e as i64,
                    _ => return Err(bad("the expiry is not a number of seconds")),
                },
            };
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"=;,\"\\".contains(&b))
            {
                return Err(bad(
                    "the cookie name is empty or holds a character a Cookie header cannot carry",
                ));
            }
            if !value
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b';')
            {
                return Err(bad(&format!(
                    "the value of cookie '{name}' holds a character a Cookie header cannot carry"
                )));
            }
            let expires = (expires != 0).then_some(expires);
            if expires.is_some_and(|e| e <= now) {
                jar.expired += 1;
                continue;
            }
            let cookie = Cookie {
                domain,
                subdomains: subdomains || leading_dot,
                path: cpath.to_owned(),
                secure,
                expires,
                http_only,
                name: name.to_owned(),
                value: value.to_owned(),
            };
            // A later line for the same cookie replaces the earlier one.
            jar.cookies.retain(|c| {
                !(c.domain == cookie.domain && c.path == cookie.path && c.name == cookie.name)
            });
            jar.cookies.push(cookie);
        }
        Ok(jar)
    }

    /// The cookies kept.
    pub fn cookies(&self) -> &[Cookie] {
        &self.cookies
    }

    /// Whether no cookie was kept.
    pub fn is_empty(&self) -> bool {
        self.cookies.is_empty()
    }

    /// The `Cookie` header value for a request to `url`: the cookies whose domain,
    /// path and secure flag match it, longer paths first; `None` when none does.
    pub fn header_for(&self, url: &Url) -> Option<String> {
        let host = url.host_str()?.trim_end_matches('.').to_ascii_lowercase();
        let https = url.scheme() == "https";
        let mut matching: Vec<&Cookie> = self
            .cookies
            .iter()
            .filter(|c| {
                domain_matches(&host, &c.domain, c.subdomains)
                    && path_matches(url.path(), &c.path)
                    && (https || !c.secure)
            })
            .collect();
        // Stable: cookies of equal path length keep the file's order.
        matching.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        (!matching.is_empty()).then(|| {
            matching
                .iter()
                .map(|c| format!("{}={}", c.name, c.value))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// Whether `host` is `domain`, or (when subdomains are included) under it by whole
/// labels. An IP address matches only itself.
pub fn domain_matches(host: &str, domain: &str, subdomains: bool) -> bool {
    let host = host.trim_end_matches('.');
    if host.eq_ignore_ascii_case(domain) {
        return true;
    }
    let is_ip = host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[');
    subdomains
        && !is_ip
        && host.len() > domain.len()
        && host[..host.len() - domain.len()].ends_with('.')
        && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
}

/// RFC 6265 path matching: the same path, or a prefix of it that ends at a `/`.
fn path_matches(request: &str, cookie: &str) -> bool {
    request == cookie
        || (request.starts_with(cookie)
            && (cookie.ends_with('/') || request[cookie.len()..].starts_with('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_000_000;

    /// As `curl -c` writes a file: its header comment, `#HttpOnly_` lines, session
    /// cookies with expiry 0, plain domains with FALSE.
    const CURL: &str = "# Netscape HTTP Cookie File\n\
        # https://curl.se/docs/http-cookies.html\n\
        # This file was generated by libcurl! Edit at your own risk.\n\
        \n\
        #HttpOnly_.douyin.com\tTRUE\t/\tTRUE\t1790000000\tsessionid\tabc123secret\n\
        .douyin.com\tTRUE\t/\tFALSE\t0\tttwid\t1%7Cxyz\n\
        www.iesdouyin.com\tFALSE\t/share/\tFALSE\t1790000000\tshare_only\tv1\n\
        .douyin.com\tTRUE\t/\tFALSE\t1700000000\told\tgone\n";

    /// As a browser export extension ("Get cookies.txt") writes one: CRLF endings, a
    /// different header, a cookie for another site, a six-field line.
    const BROWSER: &str = "# Netscape HTTP Cookie File\r\n\
        # http://curl.haxx.se/rfc/cookie_spec.html\r\n\
        # This is a generated file!  Do not edit.\r\n\
        \r\n\
        .douyin.com\tTRUE\t/\tFALSE\t1790000000.5\ts_v_web_id\tverify_abc\r\n\
        .onedrive.live.com\tTRUE\t/\tTRUE\t1790000000\tMSPAuth\tms-secret\r\n\
        www.douyin.com\tFALSE\t/\tFALSE\t1790000000\tempty\r\n";

    fn jar(text: &str) -> CookieJar {
        CookieJar::parse(text, Path::new("c.txt"), NOW).unwrap()
    }

    fn header(j: &CookieJar, url: &str) -> Option<String> {
        j.header_for(&Url::parse(url).unwrap())
    }

    #[test]
    fn a_curl_file_is_read_with_http_only_and_session_cookies() {
        let j = jar(CURL);
        assert_eq!(j.cookies().len(), 3);
        assert_eq!(j.expired, 1);
        let s = &j.cookies()[0];
        assert_eq!(
            (s.domain.as_str(), s.subdomains, s.secure, s.http_only),
            ("douyin.com", true, true, true)
        );
        assert_eq!(s.expires, Some(1_790_000_000));
        assert_eq!(j.cookies()[1].expires, None, "0 is a session cookie");
        assert_eq!(
            header(&j, "https://www.douyin.com/video/1").as_deref(),
            Some("sessionid=abc123secret; ttwid=1%7Cxyz")
        );
        // Secure cookies only over https.
        assert_eq!(
            header(&j, "http://douyin.com/").as_deref(),
            Some("ttwid=1%7Cxyz")
        );
        // Host-only and path-bound: longer paths first.
        assert_eq!(
            header(&j, "http://www.iesdouyin.com/share/video/7/").as_deref(),
            Some("share_only=v1")
        );
        assert_eq!(header(&j, "http://www.iesdouyin.com/sharex"), None);
        assert_eq!(header(&j, "http://m.www.iesdouyin.com/share/"), None);
        // Whole labels only.
        assert_eq!(header(&j, "https://notdouyin.com/"), None);
        assert_eq!(header(&j, "https://douyin.com.evil.net/"), None);
    }

    #[test]
    fn a_browser_export_is_read_with_crlf_and_six_field_lines() {
        let j = jar(&format!("\u{feff}{BROWSER}"));
        assert_eq!(j.cookies().len(), 3);
        assert_eq!(j.expired, 0);
        assert_eq!(
            header(&j, "https://www.douyin.com/").as_deref(),
            Some("s_v_web_id=verify_abc; empty=")
        );
        assert_eq!(
            header(&j, "https://onedrive.live.com/x").as_deref(),
            Some("MSPAuth=ms-secret"),
            "the jar matches by domain alone; which hosts get cookies is decided elsewhere"
        );
    }

    #[test]
    fn expiry_is_judged_against_the_given_time() {
        let line = ".douyin.com\tTRUE\t/\tFALSE\t1780000000\tedge\tx\n";
        assert_eq!(
            CookieJar::parse(line, Path::new("c"), NOW).unwrap().expired,
            1
        );
        let j = CookieJar::parse(line, Path::new("c"), NOW - 1).unwrap();
        assert_eq!((j.expired, j.cookies().len()), (0, 1));
    }

    #[test]
    fn ip_address_domains_match_only_themselves() {
        let j = jar("127.0.0.1\tFALSE\t/\tFALSE\t0\ta\t1\n.0.0.1\tTRUE\t/\tFALSE\t0\tb\t2\n");
        assert_eq!(
            header(&j, "http://127.0.0.1:8080/x").as_deref(),
            Some("a=1")
        );
        assert!(domain_matches("www.douyin.com", "douyin.com", true));
        assert!(!domain_matches("www.douyin.com", "douyin.com", false));
    }

    #[test]
    fn malformed_lines_name_file_and_line_but_never_the_value() {
        for (text, line, says) in [
            (
                "# ok\n.douyin.com TRUE / FALSE 0 a topsecret\n",
                2,
                "fields",
            ),
            (
                ".douyin.com\tYES\t/\tFALSE\t0\ta\ttopsecret\n",
                1,
                "include-subdomains",
            ),
            (
                "\n\n.douyin.com\tTRUE\t/\tFALSE\tsoon\ta\ttopsecret\n",
                3,
                "expiry",
            ),
            (".douyin.com\tTRUE\tx\tFALSE\t0\ta\ttopsecret\n", 1, "path"),
            ("\tTRUE\t/\tFALSE\t0\ta\ttopsecret\n", 1, "domain"),
            (
                ".douyin.com\tTRUE\t/\tFALSE\t0\ta\ttop;secret\n",
                1,
                "value of cookie 'a'",
            ),
            (
                ".douyin.com\tTRUE\t/\tMAYBE\t0\ta\ttopsecret\n",
                1,
                "secure",
            ),
            ("{\"cookies\": [\"topsecret\"]}\n", 1, "fields"),
        ] {
            let e = CookieJar::parse(text, Path::new("/home/u/c.txt"), NOW)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("cookie file /home/u/c.txt:{line}: ")),
                "{e}"
            );
            assert!(e.contains(says), "{e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn debug_output_hides_values() {
        let shown = format!("{:?}", jar(CURL));
        assert!(shown.contains("sessionid"), "{shown}");
        assert!(
            !shown.contains("abc123secret") && !shown.contains("xyz"),
            "{shown}"
        );
    }
}
