//! The HTTP client every remote request goes through: downloads, Douyin lookups,
//! OneDrive listings.
//!
//! Owns the reqwest client (rustls with the ring provider: no system OpenSSL; HTTP/1.1
//! with pooled keep-alive connections; no content decoding, so bytes arrive as stored),
//! URL rules (http and https only, no user info, at most 8 KiB), redirects (followed
//! here, one hop at a time, so that every hop is checked, paced by its own host and
//! bounded in number, with loops detected), connect and idle-read timeouts, and the
//! mapping of client errors onto the failure taxonomy. A 429 or 503 slows its host
//! down through [`Politeness`]. It never writes a file and never touches the catalog.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{self, HeaderMap};
use url::Url;

use super::failure::{ErrorClass, Failure, parse_retry_after};
use super::politeness::Politeness;
use super::settings::FetchSettings;

/// Longest URL accepted, in bytes (as for manifests).
pub const MAX_URL_BYTES: usize = 8192;

/// The part of a URL that politeness counts by: host and port.
pub fn host_key(url: &Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => String::new(),
    }
}

/// Checks that a URL may be requested: http(s), a host, no user info, not huge.
pub fn check_url(url: &Url) -> Result<(), Failure> {
    let shown = shorten(url.as_str());
    if url.as_str().len() > MAX_URL_BYTES {
        return Err(Failure::new(
            ErrorClass::BadUrl,
            format!(
                "URL of {} bytes is too long (at most {MAX_URL_BYTES}): {shown}",
                url.as_str().len()
            ),
        ));
    }
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(Failure::new(
            ErrorClass::BadUrl,
            format!(
                "URL scheme '{}' is not allowed (http or https only): {shown}",
                url.scheme()
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Failure::new(
            ErrorClass::BadUrl,
            format!("URL has no host: {shown}"),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Failure::new(
            ErrorClass::BadUrl,
            format!(
                "URL carries user info before its host '{}' (not sent anywhere): {}",
                url.host_str().unwrap_or(""),
                shorten(&redact_userinfo(url))
            ),
        ));
    }
    Ok(())
}

fn redact_userinfo(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// Cuts long text for messages.
pub fn shorten(s: &str) -> String {
    const MAX: usize = 160;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut cut = MAX;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

/// One request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub url: Url,
    /// Sends `Range: bytes=N-` (downloads always send one: some CDNs answer 403
    /// without).
    pub range_from: Option<u64>,
    /// `If-Range` with a stored validator (strong ETag or Last-Modified).
    pub if_range: Option<&'a str>,
    /// Extra headers (User-Agent overrides, Referer).
    pub headers: &'a [(String, String)],
    /// Follow redirects (each hop checked); else a 3xx is returned as it is.
    pub follow: bool,
}

impl<'a> Request<'a> {
    pub fn get(url: Url) -> Request<'a> {
        Request {
            url,
            range_from: None,
            if_range: None,
            headers: &[],
            follow: true,
        }
    }
}

/// A response whose headers have arrived; the body is read with [`Response::chunk`].
pub struct Response {
    pub status: u16,
    /// The URL that answered (after redirects).
    pub url: Url,
    /// Redirects followed.
    pub hops: usize,
    inner: reqwest::Response,
    idle: Duration,
}

impl Response {
    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }

    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.inner.headers().get(name).and_then(|v| v.to_str().ok())
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.header(header::RETRY_AFTER)
            .and_then(|v| parse_retry_after(v, SystemTime::now()))
    }

    /// The failure this status means, if it is one.
    pub fn failure(&self) -> Option<Failure> {
        Failure::from_status(self.status, &shorten(self.url.as_str()), self.retry_after())
    }

    /// The announced body length.
    pub fn content_length(&self) -> Option<u64> {
        self.header(header::CONTENT_LENGTH)
            .and_then(|v| v.trim().parse().ok())
    }

    /// The next piece of the body, `None` at its end. Fails with `timeout` when no
    /// byte arrives within the idle timeout, with `truncated` when the connection
    /// ends early.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Failure> {
        match tokio::time::timeout(self.idle, self.inner.chunk()).await {
            Err(_) => Err(Failure::new(
                ErrorClass::Timeout,
                format!(
                    "no data for {} s from {}",
                    self.idle.as_secs_f64(),
                    shorten(self.url.as_str())
                ),
            )),
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(classify(&e, &self.url)),
        }
    }

    /// The whole body as text, at most `max` bytes (API answers, share pages).
    pub async fn text(mut self, max: usize) -> Result<String, Failure> {
        let mut buf = Vec::new();
        while let Some(c) = self.chunk().await? {
            if buf.len() + c.len() > max {
                return Err(Failure::new(
                    ErrorClass::BadResponse,
                    format!(
                        "answer from {} is larger than {max} bytes",
                        shorten(self.url.as_str())
                    ),
                ));
            }
            buf.extend_from_slice(&c);
        }
        String::from_utf8(buf).map_err(|_| {
            Failure::new(
                ErrorClass::BadResponse,
                format!("answer from {} is not UTF-8", shorten(self.url.as_str())),
            )
        })
    }
}

/// The shared client.
pub struct Client {
    http: reqwest::Client,
    gate: Arc<Politeness>,
    user_agent: String,
    idle: Duration,
    max_redirects: usize,
}

impl Client {
    pub fn new(settings: &FetchSettings, gate: Arc<Politeness>) -> Result<Client, reqwest::Error> {
        // rustls with ring; installing twice (a second client) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.connect_timeout)
            .pool_max_idle_per_host(settings.per_host.max(settings.concurrency))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(settings.user_agent.clone())
            .build()?;
        Ok(Client {
            http,
            gate,
            user_agent: settings.user_agent.clone(),
            idle: settings.timeout,
            max_redirects: settings.max_redirects,
        })
    }

    pub fn politeness(&self) -> &Arc<Politeness> {
        &self.gate
    }

    /// Sends a GET, following redirects if asked. Any status comes back as a
    /// response (the caller decides what it means), except that redirects that may
    /// not be followed are failures.
    pub async fn send(&self, req: &Request<'_>) -> Result<Response, Failure> {
        let mut url = req.url.clone();
        check_url(&url)?;
        let mut seen: Vec<Url> = vec![];
        for hop in 0..=self.max_redirects {
            let host = host_key(&url);
            self.gate.pace(&host).await;
            let mut rb = self.http.get(url.clone());
            if let Some(from) = req.range_from {
                rb = rb.header(header::RANGE, format!("bytes={from}-"));
                if let Some(v) = req.if_range {
                    rb = rb.header(header::IF_RANGE, v);
                }
            }
            let mut ua_set = false;
            for (k, v) in req.headers {
                ua_set |= k.eq_ignore_ascii_case("user-agent");
                rb = rb.header(k.as_str(), v.as_str());
            }
            if !ua_set {
                rb = rb.header(header::USER_AGENT, self.user_agent.as_str());
            }
            let resp = match tokio::time::timeout(self.idle, rb.send()).await {
                Err(_) => {
                    return Err(Failure::new(
                        ErrorClass::Timeout,
                        format!(
                            "no answer within {} s from {}",
                            self.idle.as_secs_f64(),
                            shorten(url.as_str())
                        ),
                    ));
                }
                Ok(Err(e)) => return Err(classify(&e, &url)),
                Ok(Ok(r)) => r,
            };
            let status = resp.status().as_u16();
            if status == 429 || status == 503 {
                let after = resp
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                self.gate.throttled(&host, after);
            }
            let redirect = matches!(status, 301 | 302 | 303 | 307 | 308);
            if !(redirect && req.follow) {
                return Ok(Response {
                    status,
                    url,
                    hops: hop,
                    inner: resp,
                    idle: self.idle,
                });
            }
            let next = redirect_target(&url, resp.headers())?;
            seen.push(url);
            if seen.contains(&next) {
                return Err(Failure::new(
                    ErrorClass::Redirect,
                    format!(
                        "redirect loop: {} leads back to {}",
                        shorten(seen[seen.len() - 1].as_str()),
                        shorten(next.as_str())
                    ),
                ));
            }
            url = next;
        }
        Err(Failure::new(
            ErrorClass::Redirect,
            format!(
                "more than {} redirects from {}",
                self.max_redirects,
                shorten(req.url.as_str())
            ),
        ))
    }

    /// Where one non-following request to `url` is sent (`None` if it is not a
    /// redirect): the CDN address behind a play link.
    pub async fn location(
        &self,
        url: &Url,
        headers: &[(String, String)],
    ) -> Result<Option<Url>, Failure> {
        let req = Request {
            url: url.clone(),
            range_from: Some(0),
            if_range: None,
            headers,
            follow: false,
        };
        let resp = self.send(&req).await?;
        if matches!(resp.status, 301 | 302 | 303 | 307 | 308) {
            return redirect_target(&resp.url, resp.headers()).map(Some);
        }
        if let Some(f) = resp.failure() {
            return Err(f);
        }
        Ok(None)
    }

    /// GETs a document (JSON or a page) of at most `max` bytes; an error status is a
    /// failure.
    pub async fn get_text(
        &self,
        url: &Url,
        headers: &[(String, String)],
        max: usize,
    ) -> Result<(Url, String), Failure> {
        let req = Request {
            url: url.clone(),
            range_from: None,
            if_range: None,
            headers,
            follow: true,
        };
        let resp = self.send(&req).await?;
        if let Some(f) = resp.failure() {
            return Err(f);
        }
        let at = resp.url.clone();
        Ok((at, resp.text(max).await?))
    }
}

/// The checked absolute target of a redirect.
fn redirect_target(from: &Url, headers: &HeaderMap) -> Result<Url, Failure> {
    let loc = headers
        .get(header::LOCATION)
        .ok_or_else(|| {
            Failure::new(
                ErrorClass::BadResponse,
                format!(
                    "redirect without a Location from {}",
                    shorten(from.as_str())
                ),
            )
        })?
        .to_str()
        .map_err(|_| {
            Failure::new(
                ErrorClass::BadResponse,
                format!(
                    "redirect Location from {} is not ASCII",
                    shorten(from.as_str())
                ),
            )
        })?;
    let next = from.join(loc.trim()).map_err(|e| {
        Failure::new(
            ErrorClass::BadUrl,
            format!(
                "redirect from {} to an invalid URL '{}': {e}",
                shorten(from.as_str()),
                shorten(loc)
            ),
        )
    })?;
    check_url(&next).map_err(|f| {
        Failure::new(
            f.class,
            format!("redirect from {}: {}", shorten(from.as_str()), f.message),
        )
    })?;
    if internal_host(&next) && !internal_host(from) {
        return Err(Failure::new(
            ErrorClass::BadUrl,
            format!(
                "redirect from {} to the internal address {} refused",
                shorten(from.as_str()),
                next.host_str().unwrap_or("")
            ),
        ));
    }
    Ok(next)
}

/// Whether a URL names this machine or a private network by address (loopback,
/// private, link-local such as the cloud metadata service, unique-local, unspecified)
/// or as `localhost`. A public server's redirect may not lead there: that would let any
/// link in a manifest reach services that are not meant to be reachable from outside.
/// Links that name such an address themselves are the user's choice and are followed.
fn internal_host(url: &Url) -> bool {
    use std::net::{IpAddr, Ipv4Addr};
    let v4 = |a: Ipv4Addr| {
        a.is_loopback()
            || a.is_private()
            || a.is_link_local()
            || a.is_unspecified()
            || a.is_broadcast()
            // 100.64.0.0/10, carrier-grade NAT
            || (a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64)
    };
    let ip = match url.host() {
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a),
        Some(url::Host::Ipv6(a)) => IpAddr::V6(a),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            return d == "localhost" || d.ends_with(".localhost");
        }
        None => return false,
    };
    match ip {
        IpAddr::V4(a) => v4(a),
        IpAddr::V6(a) => {
            a.is_loopback()
                || a.is_unspecified()
                || (a.segments()[0] & 0xfe00) == 0xfc00 // fc00::/7, unique local
                || (a.segments()[0] & 0xffc0) == 0xfe80 // fe80::/10, link-local
                || a.to_ipv4_mapped().is_some_and(v4)
        }
    }
}

/// Maps a client error onto the taxonomy, with the whole chain of causes.
fn classify(e: &reqwest::Error, url: &Url) -> Failure {
    let mut text = String::new();
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        let s = c.to_string();
        // reqwest repeats the URL in its own message; say it once at the end.
        let s = s
            .replace(&format!(" for url ({})", url.as_str()), "")
            .replace(&format!(" ({})", url.as_str()), "");
        if !text.contains(&s) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&s);
        }
        cause = c.source();
    }
    let class = if e.is_timeout() {
        ErrorClass::Timeout
    } else if e.is_body() || e.is_decode() {
        ErrorClass::Truncated
    } else {
        ErrorClass::Network
    };
    Failure::new(class, format!("{text} ({})", shorten(url.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn only_plain_http_urls_pass() {
        check_url(&u("https://h.example/a.mp4")).unwrap();
        check_url(&u("http://127.0.0.1:8080/a")).unwrap();
        for bad in [
            "file:///etc/passwd",
            "ftp://h/x",
            "data:text/plain,hi",
            "javascript:alert(1)",
        ] {
            let f = check_url(&u(bad)).unwrap_err();
            assert_eq!(f.class, ErrorClass::BadUrl, "{bad}");
            assert!(f.message.contains("not allowed"), "{}", f.message);
        }
        let f = check_url(&u("https://good.example@evil.example/x")).unwrap_err();
        assert!(f.message.contains("user info"), "{}", f.message);
        assert!(f.message.contains("evil.example"), "{}", f.message);
        let f = check_url(&u("https://user:secret@h.example/x")).unwrap_err();
        assert!(!f.message.contains("secret"), "{}", f.message);
        let long = format!("https://h.example/{}", "a".repeat(9000));
        assert!(
            check_url(&u(&long))
                .unwrap_err()
                .message
                .contains("too long")
        );
    }

    #[test]
    fn redirects_are_resolved_and_checked() {
        let from = u("https://a.example/x/y?q=1");
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, "../z".parse().unwrap());
        assert_eq!(
            redirect_target(&from, &h).unwrap().as_str(),
            "https://a.example/z"
        );
        h.insert(header::LOCATION, "file:///etc/passwd".parse().unwrap());
        let f = redirect_target(&from, &h).unwrap_err();
        assert_eq!(f.class, ErrorClass::BadUrl);
        assert!(f.message.contains("'file'"), "{}", f.message);
        let f = redirect_target(&from, &HeaderMap::new()).unwrap_err();
        assert_eq!(f.class, ErrorClass::BadResponse);
    }

    #[test]
    fn public_servers_cannot_redirect_to_internal_addresses() {
        let to = |from: &str, loc: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::LOCATION, loc.parse().unwrap());
            redirect_target(&u(from), &h)
        };
        for loc in [
            "http://127.0.0.1:8080/admin",
            "http://10.1.2.3/x",
            "http://192.168.0.1/x",
            "http://172.16.0.1/x",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/x",
            "http://0.0.0.0/x",
            "http://[::1]/x",
            "http://[fd00::1]/x",
            "http://[fe80::1]/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://localhost:9200/x",
            "http://api.localhost/x",
            "http://0x7f000001/x",
        ] {
            let f = to("https://cdn.example/v.mp4", loc).unwrap_err();
            assert_eq!(f.class, ErrorClass::BadUrl, "{loc}");
            assert!(
                f.message.contains("internal address"),
                "{loc}: {}",
                f.message
            );
        }
        // Public to public, and anything from a server the user named by its address.
        assert!(to("https://cdn.example/v.mp4", "http://8.8.8.8/v.mp4").is_ok());
        assert!(to("https://cdn.example/v.mp4", "https://[2001:db8::1]/v.mp4").is_ok());
        assert!(to("http://127.0.0.1:9/v.mp4", "http://127.0.0.1:10/w.mp4").is_ok());
        assert!(to("http://10.0.0.5/v.mp4", "http://10.0.0.6/v.mp4").is_ok());
    }

    #[test]
    fn hosts_are_counted_with_their_port() {
        assert_eq!(host_key(&u("https://h.example/x")), "h.example:443");
        assert_eq!(host_key(&u("http://127.0.0.1:9/x")), "127.0.0.1:9");
    }
}
