//! The failure taxonomy: what went wrong with one attempt at one file, and whether
//! trying again can help.
//!
//! Owns the error classes stored in `files.error_class`, their split into transient
//! (network, timeouts, bodies that crawl, 5xx, 429, truncated bodies: retried with
//! back-off) and permanent (404, 410, 403, removed or private items, hostile URLs,
//! private hosts not opted in: the next candidate source is tried instead), the
//! mapping of HTTP statuses and client errors onto classes, and the back-off schedules
//! within a run and across runs. It never performs I/O.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// Why an attempt failed; the name is stored in `files.error_class` and shown by
/// `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Connection refused or reset, DNS failure, TLS failure.
    Network,
    /// No byte for longer than the idle timeout, or no connection in time.
    Timeout,
    /// The body came slower than the minimum throughput (`min_speed` over
    /// `min_speed_time`).
    TooSlow,
    /// 429 Too Many Requests (the host is slowed down).
    Throttled,
    /// A 5xx status (503 also slows the host down).
    #[serde(rename = "http_5xx")]
    Http5xx,
    /// The body ended before the announced length.
    Truncated,
    /// The file did not fit on the disk (with the space kept free): due again at the
    /// next run.
    NoSpace,
    /// A response that makes no sense (bad Content-Range, unparsable API answer).
    BadResponse,
    #[serde(rename = "http_404")]
    Http404,
    #[serde(rename = "http_410")]
    Http410,
    /// 401 or 403: the item is removed or not shared.
    #[serde(rename = "http_403")]
    Http403,
    /// Any other 4xx status.
    #[serde(rename = "http_4xx")]
    Http4xx,
    /// The bytes are not a video container (an HTML error page served with 200...).
    NotVideo,
    /// The bytes of a cover are not an image.
    NotImage,
    /// Larger than the maximum file size.
    TooLarge,
    /// A known hash (manifest sha256, OneDrive sha1 or quickXorHash) does not match.
    HashMismatch,
    /// The size differs from the expected one.
    SizeMismatch,
    /// The platform says the item is removed, private or blocked.
    Removed,
    /// Too many redirects, or a redirect loop.
    Redirect,
    /// A URL that is not allowed: another scheme, user info, too long, a link-local
    /// or cloud metadata address, or an internal address a public server led to.
    BadUrl,
    /// A host on this machine or a private network, named by a link, while fetching
    /// from such hosts was not asked for (`--allow-private-hosts`).
    PrivateHost,
    /// A link no resolver understands.
    Unsupported,
    /// A shared folder does not list the item's file.
    NotListed,
    /// A local source file does not exist or cannot be read.
    LocalMissing,
    /// Set by the shard stage: the stored file does not decode (never by fetch).
    Corrupt,
    /// Set by a re-hash: the stored bytes changed on disk.
    Changed,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 26] = [
        ErrorClass::Network,
        ErrorClass::Timeout,
        ErrorClass::TooSlow,
        ErrorClass::Throttled,
        ErrorClass::Http5xx,
        ErrorClass::Truncated,
        ErrorClass::NoSpace,
        ErrorClass::BadResponse,
        ErrorClass::Http404,
        ErrorClass::Http410,
        ErrorClass::Http403,
        ErrorClass::Http4xx,
        ErrorClass::NotVideo,
        ErrorClass::NotImage,
        ErrorClass::TooLarge,
        ErrorClass::HashMismatch,
        ErrorClass::SizeMismatch,
        ErrorClass::Removed,
        ErrorClass::Redirect,
        ErrorClass::BadUrl,
        ErrorClass::PrivateHost,
        ErrorClass::Unsupported,
        ErrorClass::NotListed,
        ErrorClass::LocalMissing,
        ErrorClass::Corrupt,
        ErrorClass::Changed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Network => "network",
            ErrorClass::Timeout => "timeout",
            ErrorClass::TooSlow => "too_slow",
            ErrorClass::Throttled => "throttled",
            ErrorClass::Http5xx => "http_5xx",
            ErrorClass::Truncated => "truncated",
            ErrorClass::NoSpace => "no_space",
            ErrorClass::BadResponse => "bad_response",
            ErrorClass::Http404 => "http_404",
            ErrorClass::Http410 => "http_410",
            ErrorClass::Http403 => "http_403",
            ErrorClass::Http4xx => "http_4xx",
            ErrorClass::NotVideo => "not_video",
            ErrorClass::NotImage => "not_image",
            ErrorClass::TooLarge => "too_large",
            ErrorClass::HashMismatch => "hash_mismatch",
            ErrorClass::SizeMismatch => "size_mismatch",
            ErrorClass::Removed => "removed",
            ErrorClass::Redirect => "redirect",
            ErrorClass::BadUrl => "bad_url",
            ErrorClass::PrivateHost => "private_host",
            ErrorClass::Unsupported => "unsupported",
            ErrorClass::NotListed => "not_listed",
            ErrorClass::LocalMissing => "local_missing",
            ErrorClass::Corrupt => "corrupt",
            ErrorClass::Changed => "changed",
        }
    }

    /// How trying the same source again can help.
    pub fn retry(self) -> Retry {
        match self {
            ErrorClass::Network
            | ErrorClass::Timeout
            | ErrorClass::TooSlow
            | ErrorClass::Throttled
            | ErrorClass::Http5xx
            | ErrorClass::Truncated
            | ErrorClass::NoSpace
            | ErrorClass::BadResponse => Retry::Transient,
            // Wrong bytes may be a bad moment of a CDN (a captcha page, a torn
            // cache entry); the same wrong bytes twice from one source are final.
            ErrorClass::NotVideo
            | ErrorClass::NotImage
            | ErrorClass::HashMismatch
            | ErrorClass::SizeMismatch => Retry::Once,
            ErrorClass::Http404
            | ErrorClass::Http410
            | ErrorClass::Http403
            | ErrorClass::Http4xx
            | ErrorClass::TooLarge
            | ErrorClass::Removed
            | ErrorClass::Redirect
            | ErrorClass::BadUrl
            | ErrorClass::PrivateHost
            | ErrorClass::Unsupported
            | ErrorClass::NotListed
            | ErrorClass::LocalMissing
            | ErrorClass::Corrupt
            | ErrorClass::Changed => Retry::Never,
        }
    }

    pub fn is_transient(self) -> bool {
        self.retry() == Retry::Transient
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ErrorClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown error class '{s}'"))
    }
}

/// Whether and how often one source is tried again within a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// With back-off, up to the configured number of attempts; across runs too.
    Transient,
    /// One more attempt; the same failure twice makes the source permanently failed.
    Once,
    /// Never from this source (the next candidate source is tried).
    Never,
}

/// One failed attempt: its class, a message for people, and the server's wish about
/// when to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub class: ErrorClass,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Failure {
        Failure {
            class,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, after: Option<Duration>) -> Failure {
        self.retry_after = after;
        self
    }

    /// The failure an HTTP error status means; `None` for statuses that are not
    /// failures (2xx, 3xx, 416 which the downloader handles itself).
    pub fn from_status(status: u16, url: &str, retry_after: Option<Duration>) -> Option<Failure> {
        let class = match status {
            200..=399 | 416 => return None,
            404 => ErrorClass::Http404,
            410 => ErrorClass::Http410,
            401 | 403 | 451 => ErrorClass::Http403,
            408 => ErrorClass::Timeout,
            429 => ErrorClass::Throttled,
            500..=599 => ErrorClass::Http5xx,
            _ => ErrorClass::Http4xx,
        };
        let reason = http_reason(status);
        Some(
            Failure::new(class, format!("HTTP {status}{reason} from {url}"))
                .with_retry_after(retry_after),
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.message)
    }
}

fn http_reason(status: u16) -> &'static str {
    match status {
        401 => " Unauthorized",
        403 => " Forbidden",
        404 => " Not Found",
        408 => " Request Timeout",
        410 => " Gone",
        429 => " Too Many Requests",
        451 => " Unavailable For Legal Reasons",
        500 => " Internal Server Error",
        502 => " Bad Gateway",
        503 => " Service Unavailable",
        504 => " Gateway Timeout",
        _ => "",
    }
}

/// Parses `Retry-After`: delta seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate_parse(v)?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only date form servers send today.
fn httpdate_parse(v: &str) -> Option<std::time::SystemTime> {
    let rest = v.split_once(", ")?.1;
    let mut parts = rest.split(' ');
    let day: u32 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let m: i64 = hms.next()?.parse().ok()?;
    let s: i64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || day == 0 || day > 31 || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo as i64 + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + m * 60 + s;
    (secs >= 0).then(|| std::time::UNIX_EPOCH + Duration::from_secs(secs as u64))
}

/// Back-off before attempt `n` (1-based: the wait before the second attempt is n=1)
/// within a run: `base * 2^(n-1)`, capped at `cap`, with ±25% jitter, and never less
/// than the server's Retry-After.
pub fn backoff(base: Duration, cap: Duration, n: u32, retry_after: Option<Duration>) -> Duration {
    let exp = base.saturating_mul(1u32 << n.saturating_sub(1).min(20));
    let d = exp.min(cap);
    let jittered = d.mul_f64(0.75 + 0.5 * jitter());
    jittered.max(retry_after.unwrap_or(Duration::ZERO))
}

/// Seconds until a file that failed transiently is tried again by a later run: twice
/// the previous wait (30 minutes at first, at most 7 days), ±10% jitter, and never
/// before the server's Retry-After.
pub fn next_retry_delay(previous: Option<i64>, retry_after: Option<Duration>) -> i64 {
    const FIRST: i64 = 30 * 60;
    const MAX: i64 = 7 * 24 * 3600;
    let base = match previous {
        Some(p) if p > 0 => (p.saturating_mul(2)).clamp(FIRST, MAX),
        _ => FIRST,
    };
    let jittered = (base as f64 * (0.9 + 0.2 * jitter())) as i64;
    jittered.max(retry_after.map(|d| d.as_secs() as i64).unwrap_or(0))
}

/// A number in [0, 1) that differs between calls and processes (not for security).
pub fn jitter() -> f64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(std::process::id() as u64);
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_trip_and_split() {
        for c in ErrorClass::ALL {
            assert_eq!(c.as_str().parse::<ErrorClass>().unwrap(), c);
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
        assert!(ErrorClass::Throttled.is_transient());
        assert!(ErrorClass::Truncated.is_transient());
        assert!(!ErrorClass::Http404.is_transient());
        assert_eq!(ErrorClass::HashMismatch.retry(), Retry::Once);
    }

    #[test]
    fn statuses_map_to_classes() {
        let class = |s| Failure::from_status(s, "http://h/x", None).map(|f| f.class);
        assert_eq!(class(200), None);
        assert_eq!(class(206), None);
        assert_eq!(class(416), None);
        assert_eq!(class(404), Some(ErrorClass::Http404));
        assert_eq!(class(410), Some(ErrorClass::Http410));
        assert_eq!(class(403), Some(ErrorClass::Http403));
        assert_eq!(class(429), Some(ErrorClass::Throttled));
        assert_eq!(class(503), Some(ErrorClass::Http5xx));
        assert_eq!(class(418), Some(ErrorClass::Http4xx));
        let f = Failure::from_status(404, "http://h/x", None).unwrap();
        assert_eq!(f.message, "HTTP 404 Not Found from http://h/x");
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777); // 06 Nov 1994 08:49:37
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("Sun, 06 Foo 1994 08:49:47 GMT", now),
            None
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        for _ in 0..100 {
            let b1 = backoff(base, cap, 1, None);
            assert!(b1 >= Duration::from_millis(75) && b1 <= Duration::from_millis(125));
            let b3 = backoff(base, cap, 3, None);
            assert!(b3 >= Duration::from_millis(300) && b3 <= Duration::from_millis(500));
            assert!(backoff(base, cap, 30, None) <= Duration::from_millis(2500));
        }
        let r = Some(Duration::from_secs(9));
        assert_eq!(backoff(base, cap, 1, r), Duration::from_secs(9));
    }

    #[test]
    fn retries_across_runs_back_off_more_each_time() {
        let first = next_retry_delay(None, None);
        assert!((1620..=1980).contains(&first), "{first}");
        let second = next_retry_delay(Some(1800), None);
        assert!((3240..=3960).contains(&second), "{second}");
        let capped = next_retry_delay(Some(30 * 24 * 3600), None);
        assert!(capped <= 7 * 24 * 3600 * 11 / 10, "{capped}");
        assert_eq!(
            next_retry_delay(None, Some(Duration::from_secs(86_400))),
            86_400
        );
    }

    #[test]
    fn jitter_is_in_range_and_varies() {
        let xs: Vec<f64> = (0..1000).map(|_| jitter()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }
}
