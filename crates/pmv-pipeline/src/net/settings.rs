//! Fetch settings with their defaults, built from the `[fetch]` section of the
//! configuration (itself overridden by `PMV_FETCH_*` variables); the command line
//! overrides single fields. Owns the defaults and nothing else.

use std::time::Duration;

use serde::Deserialize;

use pmv_core::size::ByteSize;

/// The free space downloads leave on a disk unless configured...
pub const DEFAULT_MIN_FREE: u64 = 1 << 30;
/// ...or this share of the disk's size, when that is smaller.
pub const DEFAULT_MIN_FREE_SHARE: f64 = 0.05;

/// `[fetch]`: how downloads run. Unset values take the defaults documented in the
/// README (and in `pmv_data::fetch::FetchSettings`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchConfig {
    /// Files downloaded at once, over all hosts.
    pub concurrency: Option<usize>,
    /// Files downloaded at once from one host.
    pub per_host: Option<usize>,
    /// Requests per second to one host; 0 for no limit.
    pub rate: Option<f64>,
    /// Seconds without a byte (or without an answer) before an attempt fails.
    pub timeout: Option<f64>,
    /// Seconds to open a connection.
    pub connect_timeout: Option<f64>,
    /// Largest file accepted: bytes, or text such as `"4 GiB"` or `"500MB"`.
    pub max_size: Option<ByteSize>,
    /// The User-Agent of every request (Douyin pages use `sources.douyin_user_agent`).
    pub user_agent: Option<String>,
    /// Attempts per source within one run for transient failures.
    pub retries: Option<u32>,
    /// Seconds before the first retry; doubled for each further one.
    pub retry_base: Option<f64>,
    /// Redirects followed per request.
    pub max_redirects: Option<usize>,
    /// Minimum throughput in bytes per second (a number or `"1 KiB"`); 0: no minimum.
    pub min_speed: Option<ByteSize>,
    /// Seconds over which `min_speed` is averaged.
    pub min_speed_time: Option<f64>,
    /// Free space a download must leave on its disk (a number or `"1 GiB"`).
    pub min_free: Option<ByteSize>,
    /// Fetch from private and loopback hosts that a manifest names.
    pub allow_private_hosts: Option<bool>,
}

/// How downloads run.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchSettings {
    /// Files fetched at once over all hosts.
    pub concurrency: usize,
    /// Files fetched at once from one host (lowered while the host throttles).
    pub per_host: usize,
    /// Requests per second to one host; `None` for no limit.
    pub rate: Option<f64>,
    /// Idle timeout: the longest wait for an answer or for the next byte of a body.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Largest file accepted, enforced while streaming.
    pub max_size: u64,
    pub user_agent: String,
    /// Attempts per source within one run for transient failures.
    pub retries: u32,
    /// Wait before the first retry within a run; doubles each time, up to
    /// `retry_cap`, with jitter.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    pub max_redirects: usize,
    /// Group commit: verified files wait at most this long to be made durable and
    /// recorded together...
    pub commit_interval: Duration,
    /// ...or until this many are waiting.
    pub commit_files: usize,
    /// Minimum throughput: a transfer whose bytes over the last `min_speed_time`
    /// average less than this many per second fails as `too_slow` (like curl's
    /// `--speed-limit`/`--speed-time`); 0 turns the rule off.
    pub min_speed: u64,
    pub min_speed_time: Duration,
    /// Free space a download must leave on the disk that receives it, for the
    /// catalog's journal and the other stages; `None`: [`DEFAULT_MIN_FREE`] or
    /// [`DEFAULT_MIN_FREE_SHARE`] of the disk's size, whichever is smaller.
    pub min_free: Option<u64>,
    /// Fetch from hosts on this machine or a private network that a manifest names
    /// (never from link-local or cloud metadata addresses).
    pub allow_private_hosts: bool,
    /// Hosts (`host:port`) fetched from even without `allow_private_hosts`: a server
    /// the program runs itself (the demo's).
    pub private_hosts: Vec<String>,
}

impl Default for FetchSettings {
    fn default() -> FetchSettings {
        FetchSettings {
            concurrency: 32,
            per_host: 8,
            rate: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_size: 4 << 30,
            user_agent: format!("pmv-data/{}", pmv_core::VERSION),
            retries: 4,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(60),
            max_redirects: 10,
            commit_interval: Duration::from_millis(250),
            commit_files: 512,
            min_speed: 1024,
            min_speed_time: Duration::from_secs(30),
            min_free: None,
            allow_private_hosts: false,
            private_hosts: vec![],
        }
    }
}

impl FetchSettings {
    /// The free space to keep on a disk of `disk_bytes`.
    pub fn reserve(&self, disk_bytes: u64) -> u64 {
        self.min_free.unwrap_or_else(|| {
            DEFAULT_MIN_FREE.min((disk_bytes as f64 * DEFAULT_MIN_FREE_SHARE) as u64)
        })
    }

    /// The defaults, overridden by what the configuration sets.
    pub fn from_config(c: &FetchConfig) -> FetchSettings {
        let d = FetchSettings::default();
        let secs = |v: Option<f64>, default: Duration| v.map_or(default, Duration::from_secs_f64);
        FetchSettings {
            concurrency: c.concurrency.unwrap_or(d.concurrency),
            per_host: c.per_host.unwrap_or(d.per_host),
            rate: match c.rate {
                Some(r) if r > 0.0 => Some(r),
                Some(_) => None,
                None => d.rate,
            },
            timeout: secs(c.timeout, d.timeout),
            connect_timeout: secs(c.connect_timeout, d.connect_timeout),
            max_size: c.max_size.map_or(d.max_size, |s| s.0),
            user_agent: c.user_agent.clone().unwrap_or(d.user_agent),
            retries: c.retries.unwrap_or(d.retries),
            retry_base: secs(c.retry_base, d.retry_base),
            max_redirects: c.max_redirects.unwrap_or(d.max_redirects),
            min_speed: c.min_speed.map_or(d.min_speed, |s| s.0),
            min_speed_time: secs(c.min_speed_time, d.min_speed_time),
            min_free: c.min_free.map(|s| s.0).or(d.min_free),
            allow_private_hosts: c.allow_private_hosts.unwrap_or(d.allow_private_hosts),
            ..d
        }
    }
}
