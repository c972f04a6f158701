//! The HTTP client every remote request goes through: downloads, Douyin lookups,
//! OneDrive listings.
//!
//! Owns the reqwest client (rustls with the ring provider: no system OpenSSL; HTTP/1.1
//! with pooled keep-alive connections; no content decoding, so bytes arrive as stored),
//! URL rules (http and https only, no user info, at most 8 KiB), where a request may
//! go (see [`crate::net::reach`]: never to link-local or cloud metadata addresses; to this
//! machine or a private network only when the user opted in, and never after a public
//! server, whether a URL names the address or a name resolves to it), redirects
//! (followed here, one hop at a time, so that every hop is checked, paced by its own
//! host and bounded in number, with loops detected), connect and idle-read timeouts,
//! the minimum throughput of a body, cookies (a request's cookies go to its own host
//! only, never across a redirect to another, as a header marked sensitive), and the
//! mapping of client errors onto the failure taxonomy. A 429 or 503 slows its host
//! down through [`Politeness`]. It never writes a file and never touches the catalog.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{self, HeaderMap};
use url::Url;

use super::failure::{ErrorClass, Failure, parse_retry_after};
use super::politeness::Politeness;
use super::settings::FetchSettings;
use crate::net::reach::{self, Reach};
use crate::source::cookies::CookieJar;
use pmv_core::redact::show_url;

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
    let shown = show_url(url.as_str());
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
                show_url(url.as_str())
            ),
        ));
    }
    Ok(())
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
    /// The URL came from a public server's answer (an API answer, a listing): it may
    /// not name, nor resolve to, an internal address.
    pub public: bool,
    /// Cookies for the request's own host: the matching ones go with it and with
    /// redirects to that same host, never to another.
    pub cookies: Option<&'a CookieJar>,
}

impl<'a> Request<'a> {
    pub fn get(url: Url) -> Request<'a> {
        Request {
            url,
            range_from: None,
            if_range: None,
            headers: &[],
            follow: true,
            public: false,
            cookies: None,
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
    /// The request or a server on its way was public, so what this answer names
    /// must not lead to internal addresses.
    pub public: bool,
    inner: reqwest::Response,
    idle: Duration,
    /// When the last bytes (or the headers) arrived.
    last_data: tokio::time::Instant,
    speed: Option<Speed>,
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
        Failure::from_status(
            self.status,
            &show_url(self.url.as_str()),
            self.retry_after(),
        )
    }

    /// The announced body length.
    pub fn content_length(&self) -> Option<u64> {
        self.header(header::CONTENT_LENGTH)
            .and_then(|v| v.trim().parse().ok())
    }

    /// The next piece of the body, `None` at its end. Fails with `timeout` when no
    /// byte arrives within the idle timeout, with `too_slow` when the body comes slower
    /// than the minimum throughput, with `truncated` when the connection ends early.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Failure> {
        loop {
            let idle_at = self.last_data + self.idle;
            let wake = match &self.speed {
                Some(s) => s.next_check(tokio::time::Instant::now()).min(idle_at),
                None => idle_at,
            };
            // Reading a body frame keeps no state of its own, so it may be dropped at
            // a check and started again.
            match tokio::time::timeout_at(wake, self.inner.chunk()).await {
                Ok(Ok(Some(c))) => {
                    let now = tokio::time::Instant::now();
                    self.last_data = now;
                    if let Some(s) = &mut self.speed {
                        s.add(now, c.len() as u64);
                        s.check(now, &self.url)?;
                    }
                    return Ok(Some(c));
                }
                Ok(Ok(None)) => return Ok(None),
                Ok(Err(e)) => return Err(classify(&e, &self.url)),
                Err(_) => {
                    let now = tokio::time::Instant::now();
                    if now >= idle_at {
                        return Err(Failure::new(
                            ErrorClass::Timeout,
                            format!(
                                "no data for {} s from {}",
                                self.idle.as_secs_f64(),
                                show_url(self.url.as_str())
                            ),
                        ));
                    }
                    if let Some(s) = &self.speed {
                        s.check(now, &self.url)?;
                    }
                }
            }
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
                        show_url(self.url.as_str())
                    ),
                ));
            }
            buf.extend_from_slice(&c);
        }
        String::from_utf8(buf).map_err(|_| {
            Failure::new(
                ErrorClass::BadResponse,
                format!("answer from {} is not UTF-8", show_url(self.url.as_str())),
            )
        })
    }
}

/// The minimum-throughput rule over one body: once `window` has passed since the
/// headers, the bytes of the last `window` must average at least `min` per second.
#[derive(Debug)]
struct Speed {
    min: u64,
    window: Duration,
    start: tokio::time::Instant,
    /// Bytes received, in buckets of at most [`Speed::STEP`]: (first byte, last byte,
    /// bytes), oldest first; those wholly before the window are dropped.
    buckets: VecDeque<(tokio::time::Instant, tokio::time::Instant, u64)>,
}

impl Speed {
    /// The resolution of the rule, and how often it is checked while no byte comes.
    const STEP: Duration = Duration::from_millis(500);

    fn new(min: u64, window: Duration, now: tokio::time::Instant) -> Speed {
        Speed {
            min,
            window,
            start: now,
            buckets: VecDeque::new(),
        }
    }

    fn add(&mut self, now: tokio::time::Instant, n: u64) {
        match self.buckets.back_mut() {
            Some((first, last, bytes)) if now < *first + Self::STEP => {
                *last = now;
                *bytes += n;
            }
            _ => self.buckets.push_back((now, now, n)),
        }
        let from = now.checked_sub(self.window).unwrap_or(self.start);
        while self
            .buckets
            .front()
            .is_some_and(|(_, last, _)| *last <= from)
        {
            self.buckets.pop_front();
        }
    }

    /// When the rule is next worth checking if no byte comes before.
    fn next_check(&self, now: tokio::time::Instant) -> tokio::time::Instant {
        (self.start + self.window).max(now + Self::STEP)
    }

    /// Bytes received in the last `window` (a bucket that straddles its start counts
    /// whole: at most [`Speed::STEP`] too generous, never too strict).
    fn recent(&self, now: tokio::time::Instant) -> u64 {
        let from = now.checked_sub(self.window).unwrap_or(self.start);
        self.buckets
            .iter()
            .filter(|(_, last, _)| *last > from)
            .map(|(_, _, n)| n)
            .sum()
    }

    fn check(&self, now: tokio::time::Instant, url: &Url) -> Result<(), Failure> {
        if now.duration_since(self.start) < self.window {
            return Ok(());
        }
        let recent = self.recent(now);
        let secs = self.window.as_secs_f64();
        if (recent as f64) < self.min as f64 * secs {
            return Err(Failure::new(
                ErrorClass::TooSlow,
                format!(
                    "{} sent {recent} bytes in the last {secs} s, below the minimum of {} bytes/s \
                     (--min-speed over --min-speed-time)",
                    show_url(url.as_str()),
                    self.min
                ),
            ));
        }
        Ok(())
    }
}

/// The shared client.
pub struct Client {
    /// Connects to the addresses a link the user gave may lead to ([`Guard`]: public
    /// ones, and internal ones with the opt-in).
    http: reqwest::Client,
    /// Connects to public addresses only ([`Guard`]): every hop after a public
    /// server goes through it.
    public_http: reqwest::Client,
    /// Requests go through a proxy (from the environment), so the address a response
    /// came from is the proxy's and says nothing about the server.
    proxied: bool,
    gate: Arc<Politeness>,
    user_agent: String,
    idle: Duration,
    max_redirects: usize,
    /// Internal hosts that a link names may be fetched (`--allow-private-hosts`).
    allow_private: bool,
    /// Internal hosts (`host:port`) fetched even so: a server the program runs itself.
    private_hosts: Vec<String>,
    /// The minimum throughput of a body (bytes per second over a window); `None`: off.
    min_speed: Option<(u64, Duration)>,
}

impl Client {
    pub fn new(settings: &FetchSettings, gate: Arc<Politeness>) -> Result<Client, reqwest::Error> {
        // rustls with ring; installing twice (a second client) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(settings.connect_timeout)
                .pool_max_idle_per_host(settings.per_host.max(settings.concurrency))
                .pool_idle_timeout(Duration::from_secs(60))
                .tcp_nodelay(true)
                .user_agent(settings.user_agent.clone())
        };
        let proxied = [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
        ]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
        let names: Arc<[String]> = settings
            .private_hosts
            .iter()
            .map(|h| host_of_key(h).to_owned())
            .collect();
        // Through a proxy, the proxy resolves the names it is asked for and this
        // resolver would only judge the proxy's own name (often on the local network).
        let http = if proxied {
            builder().build()?
        } else {
            builder()
                .dns_resolver(Guard {
                    internal: settings.allow_private_hosts,
                    names: Arc::clone(&names),
                    refusal: ErrorClass::PrivateHost,
                })
                .build()?
        };
        Ok(Client {
            http,
            public_http: builder()
                .dns_resolver(Guard {
                    internal: false,
                    names: Arc::from([]),
                    refusal: ErrorClass::BadUrl,
                })
                .build()?,
            proxied,
            gate,
            user_agent: settings.user_agent.clone(),
            idle: settings.timeout,
            max_redirects: settings.max_redirects,
            allow_private: settings.allow_private_hosts,
            private_hosts: settings.private_hosts.clone(),
            min_speed: (settings.min_speed > 0)
                .then_some((settings.min_speed, settings.min_speed_time)),
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
        let mut public = req.public;
        let how = if public {
            format!("{} came from a public server", show_url(url.as_str()))
        } else {
            show_url(url.as_str())
        };
        self.may_reach(&url, public, &how)?;
        let mut seen: Vec<Url> = vec![];
        for hop in 0..=self.max_redirects {
            let host = host_key(&url);
            self.gate.pace(&host).await;
            let http = if public {
                &self.public_http
            } else {
                &self.http
            };
            let mut rb = http.get(url.clone());
            if let Some(from) = req.range_from {
                rb = rb.header(header::RANGE, format!("bytes={from}-"));
                if let Some(v) = req.if_range {
                    rb = rb.header(header::IF_RANGE, v);
                }
            }
            rb = self.with_headers(rb, req.headers);
            if let Some(jar) = req.cookies
                && host_key(&url) == host_key(&req.url)
                && let Some(cookie) = jar.header_for(&url)
                && let Ok(mut v) = header::HeaderValue::from_str(&cookie)
            {
                v.set_sensitive(true);
                rb = rb.header(header::COOKIE, v);
            }
            let resp = self.answer(rb, &url, &host).await?;
            let status = resp.status().as_u16();
            public |= public_peer(&url, resp.remote_addr(), self.proxied);
            let redirect = matches!(status, 301 | 302 | 303 | 307 | 308);
            if !(redirect && req.follow) {
                return Ok(Response {
                    status,
                    url,
                    hops: hop,
                    public,
                    inner: resp,
                    idle: self.idle,
                    last_data: tokio::time::Instant::now(),
                    speed: self
                        .min_speed
                        .map(|(min, window)| Speed::new(min, window, tokio::time::Instant::now())),
                });
            }
            let next = redirect_target(&url, resp.headers(), public)?;
            self.may_reach(
                &next,
                public,
                &format!("the redirect from {}", show_url(url.as_str())),
            )?;
            seen.push(url);
            if seen.contains(&next) {
                return Err(Failure::new(
                    ErrorClass::Redirect,
                    format!(
                        "redirect loop: {} leads back to {}",
                        show_url(seen[seen.len() - 1].as_str()),
                        show_url(next.as_str())
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
                show_url(req.url.as_str())
            ),
        ))
    }

    /// Whether a request may go to `url` (`how` says where the URL came from):
    /// never to link-local or metadata addresses; to internal ones only from a chain
    /// that has not passed a public server, and only when the user opted in or the
    /// program runs the server itself.
    fn may_reach(&self, url: &Url, public: bool, how: &str) -> Result<(), Failure> {
        match reach::url(url) {
            Reach::Public => Ok(()),
            Reach::Never => Err(never_fetched(how, url)),
            Reach::Internal if public => Err(led_inside(how, url)),
            Reach::Internal
                if self.allow_private || self.private_hosts.contains(&host_key(url)) =>
            {
                Ok(())
            }
            Reach::Internal => Err(private_host(how, url)),
        }
    }

    /// Where one non-following request to `url` is sent (`None` if it is not a
    /// redirect): the CDN address behind a play link.
    pub async fn location(
        &self,
        url: &Url,
        headers: &[(String, String)],
    ) -> Result<Option<Url>, Failure> {
        self.location_with(url, headers, None).await
    }

    /// [`Client::location`], with `cookies` for the URL's host.
    pub async fn location_with(
        &self,
        url: &Url,
        headers: &[(String, String)],
        cookies: Option<&CookieJar>,
    ) -> Result<Option<Url>, Failure> {
        let req = Request {
            url: url.clone(),
            range_from: Some(0),
            if_range: None,
            headers,
            follow: false,
            public: false,
            cookies,
        };
        let resp = self.send(&req).await?;
        if matches!(resp.status, 301 | 302 | 303 | 307 | 308) {
            return redirect_target(&resp.url, resp.headers(), resp.public).map(Some);
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
    ) -> Result<Document, Failure> {
        self.get_text_with(url, headers, None, max).await
    }

    /// [`Client::get_text`], with `cookies` for the URL's host (and redirects to it).
    pub async fn get_text_with(
        &self,
        url: &Url,
        headers: &[(String, String)],
        cookies: Option<&CookieJar>,
        max: usize,
    ) -> Result<Document, Failure> {
        let req = Request {
            url: url.clone(),
            range_from: None,
            if_range: None,
            headers,
            follow: true,
            public: false,
            cookies,
        };
        let resp = self.send(&req).await?;
        if let Some(f) = resp.failure() {
            return Err(f);
        }
        let public = resp.public;
        Ok(Document {
            text: resp.text(max).await?,
            public,
        })
    }

    /// `rb` with `headers`, and this client's User-Agent unless they give one.
    fn with_headers(
        &self,
        mut rb: reqwest::RequestBuilder,
        headers: &[(String, String)],
    ) -> reqwest::RequestBuilder {
        let mut ua_set = false;
        for (k, v) in headers {
            ua_set |= k.eq_ignore_ascii_case("user-agent");
            rb = rb.header(k.as_str(), v.as_str());
        }
        if !ua_set {
            rb = rb.header(header::USER_AGENT, self.user_agent.as_str());
        }
        rb
    }

    /// Sends `rb` and waits at most the idle timeout for the answer's head; a 429 or
    /// 503 slows `host` down for as long as its `Retry-After` asks.
    async fn answer(
        &self,
        rb: reqwest::RequestBuilder,
        url: &Url,
        host: &str,
    ) -> Result<reqwest::Response, Failure> {
        let resp = match tokio::time::timeout(self.idle, rb.send()).await {
            Err(_) => {
                return Err(Failure::new(
                    ErrorClass::Timeout,
                    format!(
                        "no answer within {} s from {}",
                        self.idle.as_secs_f64(),
                        show_url(url.as_str())
                    ),
                ));
            }
            Ok(Err(e)) => return Err(classify(&e, url)),
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        if status == 429 || status == 503 {
            let after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            self.gate.throttled(host, after);
        }
        Ok(resp)
    }

    /// POSTs a JSON `body` to a URL the configuration names (a token endpoint) and
    /// reads the answer, at most `max` bytes. A redirect is not followed and, like an
    /// error status, is a failure.
    pub async fn post_json(
        &self,
        url: &Url,
        headers: &[(String, String)],
        body: String,
        max: usize,
    ) -> Result<Document, Failure> {
        check_url(url)?;
        self.may_reach(url, false, &show_url(url.as_str()))?;
        let host = host_key(url);
        self.gate.pace(&host).await;
        let rb = self
            .http
            .post(url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
        let rb = self.with_headers(rb, headers);
        let resp = self.answer(rb, url, &host).await?;
        let status = resp.status().as_u16();
        let public = public_peer(url, resp.remote_addr(), self.proxied);
        let resp = Response {
            status,
            url: url.clone(),
            hops: 0,
            public,
            inner: resp,
            idle: self.idle,
            last_data: tokio::time::Instant::now(),
            speed: None,
        };
        if (300..400).contains(&status) {
            return Err(Failure::new(
                ErrorClass::Redirect,
                format!(
                    "HTTP {status} from {}: a POST is not redirected",
                    show_url(url.as_str())
                ),
            ));
        }
        if let Some(f) = resp.failure() {
            return Err(f);
        }
        Ok(Document {
            text: resp.text(max).await?,
            public,
        })
    }
}

/// A document [`Client::get_text`] or [`Client::post_json`] read.
#[derive(Debug)]
pub struct Document {
    pub text: String,
    /// A public server answered (or one on the way): addresses the document names
    /// are fetched with [`Request::public`].
    pub public: bool,
}

/// The checked absolute target of a redirect; `public`: the chain has passed a public
/// server, so the target may not name an internal address.
fn redirect_target(from: &Url, headers: &HeaderMap, public: bool) -> Result<Url, Failure> {
    let loc = headers
        .get(header::LOCATION)
        .ok_or_else(|| {
            Failure::new(
                ErrorClass::BadResponse,
                format!(
                    "redirect without a Location from {}",
                    show_url(from.as_str())
                ),
            )
        })?
        .to_str()
        .map_err(|_| {
            Failure::new(
                ErrorClass::BadResponse,
                format!(
                    "redirect Location from {} is not ASCII",
                    show_url(from.as_str())
                ),
            )
        })?;
    let next = from.join(loc.trim()).map_err(|e| {
        Failure::new(
            ErrorClass::BadUrl,
            format!(
                "redirect from {} to an invalid URL '{}': {e}",
                show_url(from.as_str()),
                show_url(loc)
            ),
        )
    })?;
    check_url(&next).map_err(|f| {
        Failure::new(
            f.class,
            format!("redirect from {}: {}", show_url(from.as_str()), f.message),
        )
    })?;
    match reach::url(&next) {
        Reach::Never => Err(never_fetched(
            &format!("the redirect from {}", show_url(from.as_str())),
            &next,
        )),
        Reach::Internal if public => Err(led_inside(
            &format!(
                "a public server's redirect from {}",
                show_url(from.as_str())
            ),
            &next,
        )),
        _ => Ok(next),
    }
}

/// The refusal of an internal address that a public server led to (`how`).
fn led_inside(how: &str, to: &Url) -> Failure {
    Failure::new(
        ErrorClass::BadUrl,
        format!(
            "{how} names the internal address {}; refused",
            to.host_str().unwrap_or("")
        ),
    )
}

/// The refusal of a link-local or metadata address (`how`: where the URL came from).
fn never_fetched(how: &str, to: &Url) -> Failure {
    Failure::new(
        ErrorClass::BadUrl,
        format!(
            "{how} names {}, a link-local or cloud metadata address: never fetched",
            to.host_str().unwrap_or("")
        ),
    )
}

/// How to opt in to private hosts, for messages.
pub const PRIVATE_OPT_IN: &str = "fetched only with --allow-private-hosts \
     (or fetch.allow_private_hosts = true, or PMV_FETCH_ALLOW_PRIVATE_HOSTS=1)";

/// The refusal of an internal host named without the opt-in.
fn private_host(how: &str, to: &Url) -> Failure {
    Failure::new(
        ErrorClass::PrivateHost,
        format!(
            "{how} names {}, on this machine or a private network: {PRIVATE_OPT_IN}",
            to.host_str().unwrap_or("")
        ),
    )
}

/// The host part of a `host:port` key (IPv6 keep their brackets).
fn host_of_key(key: &str) -> &str {
    match key.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => key,
    }
}

/// Whether the server that answered `url` is a public one: its address when known
/// (not through a proxy), else what the URL names. A mirror on the local network named
/// by a DNS name is not public, so it may redirect to its neighbours.
fn public_peer(url: &Url, remote: Option<SocketAddr>, proxied: bool) -> bool {
    if reach::url(url) != Reach::Public {
        return false;
    }
    match remote {
        Some(a) if !proxied => reach::ip(a.ip()) == Reach::Public,
        _ => true,
    }
}

/// The DNS of both clients: the system's resolver, keeping only the addresses a
/// request may go to. Link-local and metadata addresses are always dropped; internal
/// ones unless `internal` (the user opted in) or the name is one the program serves
/// itself. Otherwise a name could lead where a URL may not name directly. The check
/// sits in the resolver itself, not in a lookup of its own before the request, so the
/// name cannot resolve one way for the check and another for the connection.
struct Guard {
    internal: bool,
    /// Names whose internal addresses are kept.
    names: Arc<[String]>,
    /// The class of a refusal of internal addresses: `private_host` for links the user
    /// gave, `bad_url` after a public server.
    refusal: ErrorClass,
}

/// A name that resolved to refused addresses only.
#[derive(Debug)]
struct InternalName {
    class: ErrorClass,
    message: String,
}

impl std::fmt::Display for InternalName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InternalName {}

impl Guard {
    /// The addresses `host` resolved to (`all`) that a request may go to; the refusal
    /// when none is left.
    fn keep(&self, host: &str, all: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, InternalName> {
        let internal = self.internal || self.names.iter().any(|n| n.eq_ignore_ascii_case(host));
        let kept: Vec<SocketAddr> = all
            .iter()
            .copied()
            .filter(|a| match reach::ip(a.ip()) {
                Reach::Public => true,
                Reach::Internal => internal,
                Reach::Never => false,
            })
            .collect();
        if !kept.is_empty() || all.is_empty() {
            return Ok(kept);
        }
        let ips: Vec<String> = all.iter().map(|a| a.ip().to_string()).collect();
        let ips = ips.join(", ");
        let never = all.iter().all(|a| reach::ip(a.ip()) == Reach::Never);
        let (class, message) = if never || internal {
            (
                ErrorClass::BadUrl,
                format!(
                    "{host} resolves only to link-local or cloud metadata addresses ({ips}): never fetched"
                ),
            )
        } else if self.refusal == ErrorClass::BadUrl {
            (
                ErrorClass::BadUrl,
                format!(
                    "{host} resolves only to internal addresses ({ips}), where a public server's redirect or answer may not lead; refused"
                ),
            )
        } else {
            (
                ErrorClass::PrivateHost,
                format!(
                    "{host} resolves only to addresses on this machine or a private network ({ips}): {PRIVATE_OPT_IN}"
                ),
            )
        };
        Err(InternalName { class, message })
    }
}

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let guard = Guard {
            internal: self.internal,
            names: Arc::clone(&self.names),
            refusal: self.refusal,
        };
        Box::pin(async move {
            if reach::host(&host) == Reach::Never {
                return Err(Box::new(InternalName {
                    class: ErrorClass::BadUrl,
                    message: format!("{host} is a cloud metadata service: never fetched"),
                }) as _);
            }
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            match guard.keep(&host, all) {
                Ok(kept) => Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs),
                Err(refused) => Err(Box::new(refused) as _),
            }
        })
    }
}

/// Maps a client error onto the taxonomy, with the whole chain of causes.
fn classify(e: &reqwest::Error, url: &Url) -> Failure {
    let mut text = String::new();
    let mut refused = None;
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        if let Some(n) = c.downcast_ref::<InternalName>() {
            refused.get_or_insert(n.class);
        }
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
    let class = if let Some(class) = refused {
        class
    } else if e.is_timeout() {
        ErrorClass::Timeout
    } else if e.is_body() || e.is_decode() {
        ErrorClass::Truncated
    } else {
        ErrorClass::Network
    };
    // Any URL left in a cause's text (another hop's) is shown like every other.
    let text = pmv_core::redact::redact_text(&text);
    Failure::new(class, format!("{text} ({})", show_url(url.as_str())))
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
            redirect_target(&from, &h, true).unwrap().as_str(),
            "https://a.example/z"
        );
        h.insert(header::LOCATION, "file:///etc/passwd".parse().unwrap());
        let f = redirect_target(&from, &h, true).unwrap_err();
        assert_eq!(f.class, ErrorClass::BadUrl);
        assert!(f.message.contains("'file'"), "{}", f.message);
        let f = redirect_target(&from, &HeaderMap::new(), true).unwrap_err();
        assert_eq!(f.class, ErrorClass::BadResponse);
    }

    #[test]
    fn public_servers_cannot_redirect_to_internal_addresses() {
        let to = |from: &str, loc: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::LOCATION, loc.parse().unwrap());
            let public = public_peer(&u(from), None, false);
            redirect_target(&u(from), &h, public)
        };
        for loc in [
            "http://127.0.0.1:8080/admin",
            "http://10.1.2.3/x",
            "http://192.168.0.1/x",
            "http://172.16.0.1/x",
            "http://100.64.0.1/x",
            "http://0.0.0.0/x",
            "http://240.0.0.1/x",
            "http://[::1]/x",
            "http://[fd00::1]/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://[::127.0.0.1]/x",
            "http://[64:ff9b::7f00:1]/x",
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
        // Public to public, and anything but link-local from a server the user named
        // by its address.
        assert!(to("https://cdn.example/v.mp4", "http://8.8.8.8/v.mp4").is_ok());
        assert!(
            to(
                "https://cdn.example/v.mp4",
                "https://[2606:4700::1111]/v.mp4"
            )
            .is_ok()
        );
        assert!(
            to(
                "https://cdn.example/v.mp4",
                "http://[64:ff9b::808:808]/v.mp4"
            )
            .is_ok()
        );
        assert!(to("http://127.0.0.1:9/v.mp4", "http://127.0.0.1:10/w.mp4").is_ok());
        assert!(to("http://10.0.0.5/v.mp4", "http://10.0.0.6/v.mp4").is_ok());
    }

    #[test]
    fn no_redirect_leads_to_link_local_or_metadata_addresses() {
        let to = |from: &str, loc: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::LOCATION, loc.parse().unwrap());
            redirect_target(&u(from), &h, public_peer(&u(from), None, false))
        };
        for from in ["https://cdn.example/v.mp4", "http://10.0.0.5/v.mp4"] {
            for loc in [
                "http://169.254.169.254/latest/meta-data/",
                "http://[fd00:ec2::254]/latest/",
                "http://[fe80::1]/x",
                "http://metadata.google.internal/computeMetadata/v1/",
                "http://100.100.100.200/latest/",
            ] {
                let f = to(from, loc).unwrap_err();
                assert_eq!(f.class, ErrorClass::BadUrl, "{loc}");
                assert!(f.message.contains("never fetched"), "{loc}: {}", f.message);
            }
        }
    }

    #[test]
    fn a_server_is_public_by_the_address_that_answered() {
        let lan: SocketAddr = "10.0.0.5:80".parse().unwrap();
        let wan: SocketAddr = "93.184.215.14:443".parse().unwrap();
        // A mirror on the local network named by a DNS name is not public.
        assert!(!public_peer(
            &u("http://mirror.lan/v.mp4"),
            Some(lan),
            false
        ));
        assert!(public_peer(
            &u("https://cdn.example/v.mp4"),
            Some(wan),
            false
        ));
        // Through a proxy the address is the proxy's: the name decides.
        assert!(public_peer(&u("http://mirror.lan/v.mp4"), Some(lan), true));
        assert!(!public_peer(&u("http://localhost/v.mp4"), Some(wan), false));
        assert!(!public_peer(&u("http://127.0.0.1/v.mp4"), None, true));
    }

    /// A server on loopback that answers every request with `status` and `location`.
    fn redirector(status: u16, location: String) -> SocketAddr {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        addr
    }

    /// A client that may fetch from private hosts (the servers here are on loopback).
    fn client() -> Client {
        let settings = FetchSettings {
            allow_private_hosts: true,
            ..FetchSettings::default()
        };
        Client::new(&settings, Politeness::new(4, None)).unwrap()
    }

    #[tokio::test]
    async fn private_hosts_need_the_opt_in_and_metadata_hosts_are_never_fetched() {
        let end = redirector(404, String::new());
        let closed = Client::new(&FetchSettings::default(), Politeness::new(4, None)).unwrap();
        for url in [
            format!("http://{end}/v.mp4"),
            format!("http://localhost:{}/v.mp4", end.port()),
            format!("http://[::ffff:127.0.0.1]:{}/v.mp4", end.port()),
        ] {
            let Err(f) = closed.send(&Request::get(u(&url))).await else {
                panic!("{url} was fetched without the opt-in")
            };
            assert_eq!(f.class, ErrorClass::PrivateHost, "{url}: {}", f.message);
            assert!(
                f.message.contains("--allow-private-hosts"),
                "{url}: {}",
                f.message
            );
        }
        // The program's own server.
        let own = Client::new(
            &FetchSettings {
                private_hosts: vec![end.to_string()],
                ..FetchSettings::default()
            },
            Politeness::new(4, None),
        )
        .unwrap();
        let resp = own
            .send(&Request::get(u(&format!("http://{end}/v.mp4"))))
            .await
            .unwrap();
        assert_eq!(resp.status, 404);
        let other = redirector(404, String::new());
        let Err(f) = own
            .send(&Request::get(u(&format!("http://{other}/v.mp4"))))
            .await
        else {
            panic!("another loopback server was fetched")
        };
        assert_eq!(f.class, ErrorClass::PrivateHost);
        // A name that resolves to loopback, through the resolver itself.
        let url = u(&format!("http://localhost:{}/v.mp4", end.port()));
        let e = closed.http.get(url.clone()).send().await.unwrap_err();
        let f = classify(&e, &url);
        assert_eq!(f.class, ErrorClass::PrivateHost, "{}", f.message);
        assert!(f.message.contains("--allow-private-hosts"), "{}", f.message);
        // With the opt-in, still never to link-local or metadata addresses, nor to
        // a server that redirects there.
        let open = client();
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/x",
            "http://metadata.google.internal/computeMetadata/v1/",
        ] {
            let Err(f) = open.send(&Request::get(u(url))).await else {
                panic!("{url} was fetched")
            };
            assert_eq!(f.class, ErrorClass::BadUrl, "{url}: {}", f.message);
            assert!(f.message.contains("never fetched"), "{url}: {}", f.message);
        }
        let bounce = redirector(302, "http://169.254.169.254/latest/".into());
        let Err(f) = open
            .send(&Request::get(u(&format!("http://{bounce}/v.mp4"))))
            .await
        else {
            panic!("the redirect to the metadata service was followed")
        };
        assert!(f.message.contains("never fetched"), "{}", f.message);
    }

    #[tokio::test]
    async fn internal_servers_may_redirect_to_internal_names() {
        let end = redirector(404, String::new());
        let start = redirector(302, format!("http://localhost:{}/v.mp4", end.port()));
        let c = client();
        let resp = c
            .send(&Request::get(u(&format!("http://{start}/v.mp4"))))
            .await
            .unwrap();
        assert_eq!((resp.status, resp.hops, resp.public), (404, 1, false));
    }

    #[tokio::test]
    async fn addresses_from_public_answers_may_not_lead_inside() {
        let c = client();
        let end = redirector(404, String::new());
        // Named directly.
        let mut req = Request::get(u(&format!("http://{end}/v.mp4")));
        req.public = true;
        let Err(f) = c.send(&req).await else {
            panic!("a public answer's loopback address was fetched")
        };
        assert_eq!(f.class, ErrorClass::BadUrl, "{}", f.message);
        assert!(f.message.contains("internal address"), "{}", f.message);
        // A name that resolves inside, after a public server: refused by the resolver
        // that every such hop goes through, and the refusal is permanent, not a
        // network error to retry.
        let url = u(&format!("http://localhost:{}/v.mp4", end.port()));
        let e = c.public_http.get(url.clone()).send().await.unwrap_err();
        let f = classify(&e, &url);
        assert_eq!(f.class, ErrorClass::BadUrl, "{}", f.message);
        assert!(
            f.message
                .contains("localhost resolves only to internal addresses"),
            "{}",
            f.message
        );
        // The same name through the ordinary client connects.
        let resp = c.http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 404);
    }

    #[test]
    fn the_minimum_speed_is_averaged_over_its_window() {
        let t0 = tokio::time::Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let url = u("http://h.example/v.mp4");
        // 1 KiB/s over 2 s.
        let mut s = Speed::new(1024, Duration::from_secs(2), t0);
        s.add(at(100), 100);
        assert!(
            s.check(at(1900), &url).is_ok(),
            "before the window has passed"
        );
        let f = s.check(at(2000), &url).unwrap_err();
        assert_eq!(f.class, ErrorClass::TooSlow);
        assert!(
            f.message.contains("sent 100 bytes in the last 2 s"),
            "{}",
            f.message
        );
        assert_eq!(s.next_check(at(100)), at(2000));
        assert_eq!(s.next_check(at(3000)), at(3500));

        // Steady and just fast enough, then a burst followed by a drip: the burst
        // leaves the window and the drip alone is too slow.
        let mut s = Speed::new(1024, Duration::from_secs(2), t0);
        for i in 0..16 {
            s.add(at(250 * i), 300);
            assert!(s.check(at(250 * i), &url).is_ok(), "{i}");
        }
        s.add(at(3900), 64 << 10);
        for ms in [5000, 5500] {
            s.add(at(ms), 1);
            assert!(s.check(at(ms), &url).is_ok(), "the burst is recent");
        }
        s.add(at(6000), 1);
        assert!(s.check(at(6000), &url).is_err(), "only the drip is left");
        assert!(s.buckets.len() <= 6, "{:?}", s.buckets);
    }

    #[test]
    fn resolved_addresses_are_kept_by_their_class() {
        let a = |s: &str| -> SocketAddr { format!("{s}:0").parse().unwrap() };
        let guard = |internal, refusal| Guard {
            internal,
            names: Arc::from(["mirror.lan".to_owned()]),
            refusal,
        };
        let mixed = vec![a("10.0.0.5"), a("93.184.215.14"), a("169.254.169.254")];
        // Public addresses are kept, link-local ones never, internal ones with the
        // opt-in or for a name the program serves itself.
        let closed = guard(false, ErrorClass::PrivateHost);
        assert_eq!(
            closed.keep("x.example", mixed.clone()).unwrap(),
            vec![a("93.184.215.14")]
        );
        let open = guard(true, ErrorClass::PrivateHost);
        assert_eq!(
            open.keep("x.example", mixed).unwrap(),
            vec![a("10.0.0.5"), a("93.184.215.14")]
        );
        assert_eq!(
            closed
                .keep("mirror.lan", vec![a("10.0.0.5")])
                .unwrap()
                .len(),
            1
        );
        // A name that leads to the metadata service only is refused, opt-in or not.
        for g in [&closed, &open] {
            let e = g
                .keep(
                    "evil.example",
                    vec![a("169.254.169.254"), a("[fd00:ec2::254]")],
                )
                .unwrap_err();
            assert_eq!(e.class, ErrorClass::BadUrl);
            assert!(e.message.contains("never fetched"), "{}", e.message);
        }
        let e = closed
            .keep("evil.example", vec![a("127.0.0.1")])
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::PrivateHost, "{}", e.message);
        let after_public = guard(false, ErrorClass::BadUrl);
        let e = after_public
            .keep("evil.example", vec![a("127.0.0.1")])
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::BadUrl);
        assert!(e.message.contains("refused"), "{}", e.message);
    }

    #[test]
    fn hosts_are_counted_with_their_port() {
        assert_eq!(host_key(&u("https://h.example/x")), "h.example:443");
        assert_eq!(host_key(&u("http://127.0.0.1:9/x")), "127.0.0.1:9");
    }
}
