//! Per-host politeness: how many files are fetched from one host at once, how often a
//! request may go to it, and how a host that answers 429 or 503 is slowed down without
//! stalling the others.
//!
//! Owns, per host: job slots (at most `per_host` files at once, a limit that halves
//! when the host throttles and grows back by one after as many successes as the
//! limit: additive increase, multiplicative decrease), a pause until the host's
//! `Retry-After` (or an exponential pause when it gives none), and a token bucket of
//! `rate` requests per second (also halved while the host throttles). The scheduler
//! reserves slots without waiting and parks work for busy or paused hosts; requests
//! wait here only for their token. It never opens a connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Longest pause a host gets from one `Retry-After`; longer wishes are honoured by
/// the file's next retry time instead.
pub const MAX_PAUSE: Duration = Duration::from_secs(300);

pub struct Politeness {
    per_host: usize,
    rate: Option<f64>,
    hosts: Mutex<HashMap<String, Host>>,
    /// Signalled whenever a slot frees or a host is resumed.
    changed: Notify,
    /// 429/503 answers seen.
    throttles: AtomicU64,
}

struct Host {
    active: usize,
    limit: usize,
    paused_until: Option<Instant>,
    /// The earliest time the next request may start (token bucket of depth 1).
    next_request: Instant,
    /// Multiplies the configured rate; halves on throttling, recovers on success.
    rate_factor: f64,
    throttles: u32,
    successes: usize,
}

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// All slots of the host are taken; one frees when a file finishes.
    Full,
    /// The host asked us to wait until then.
    Paused(Instant),
}

/// A reserved job slot on a host; freed on drop.
pub struct Slot {
    gate: Arc<Politeness>,
    host: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut hosts = self.gate.hosts.lock().unwrap();
            if let Some(h) = hosts.get_mut(&self.host) {
                h.active = h.active.saturating_sub(1);
            }
        }
        self.gate.changed.notify_waiters();
    }
}

impl Slot {
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl Politeness {
    /// `per_host` files at once per host (at least 1); `rate` requests per second per
    /// host, `None` for no limit.
    pub fn new(per_host: usize, rate: Option<f64>) -> Arc<Politeness> {
        Arc::new(Politeness {
            per_host: per_host.max(1),
            rate: rate.filter(|r| *r > 0.0),
            hosts: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            throttles: AtomicU64::new(0),
        })
    }

    fn host<'a>(&self, hosts: &'a mut HashMap<String, Host>, name: &str) -> &'a mut Host {
        hosts.entry(name.to_owned()).or_insert_with(|| Host {
            active: 0,
            limit: self.per_host,
            paused_until: None,
            next_request: Instant::now(),
            rate_factor: 1.0,
            throttles: 0,
            successes: 0,
        })
    }

    /// Takes a job slot on `host` if one is free and the host is not paused.
    pub fn try_reserve(self: &Arc<Self>, host: &str, now: Instant) -> Result<Slot, Busy> {
        let mut hosts = self.hosts.lock().unwrap();
        let h = self.host(&mut hosts, host);
        if let Some(until) = h.paused_until {
            if until > now {
                return Err(Busy::Paused(until));
            }
            h.paused_until = None;
        }
        if h.active >= h.limit {
            return Err(Busy::Full);
        }
        h.active += 1;
        Ok(Slot {
            gate: Arc::clone(self),
            host: host.to_owned(),
        })
    }

    /// Whether a slot could be taken now (without taking it).
    pub fn available(&self, host: &str, now: Instant) -> Result<(), Busy> {
        let mut hosts = self.hosts.lock().unwrap();
        let h = self.host(&mut hosts, host);
        match h.paused_until {
            Some(until) if until > now => Err(Busy::Paused(until)),
            _ if h.active >= h.limit => Err(Busy::Full),
            _ => Ok(()),
        }
    }

    /// Waits until a request to `host` may start: after the host's pause, and one
    /// token interval after the previous request.
    pub async fn pace(&self, host: &str) {
        loop {
            let wait_until = {
                let mut hosts = self.hosts.lock().unwrap();
                let rate = self.rate;
                let h = self.host(&mut hosts, host);
                let now = Instant::now();
                match h.paused_until {
                    Some(until) if until > now => Some(until),
                    _ => {
                        let effective = rate.map(|r| r * h.rate_factor);
                        let start = h.next_request.max(now);
                        if let Some(r) = effective {
                            h.next_request = start + Duration::from_secs_f64(1.0 / r);
                        }
                        (start > now).then_some(start)
                    }
                }
            };
            match wait_until {
                None => return,
                Some(t) => {
                    tokio::time::sleep_until(t).await;
                    // After a pause, take a token like everyone else; after a token
                    // wait, the token is ours.
                    let paused = {
                        let hosts = self.hosts.lock().unwrap();
                        hosts
                            .get(host)
                            .and_then(|h| h.paused_until)
                            .is_some_and(|u| u > Instant::now())
                    };
                    if !paused {
                        return;
                    }
                }
            }
        }
    }

    /// The host answered 429 or 503: pause it (for `retry_after`, capped at
    /// [`MAX_PAUSE`], else 1, 2, 4 … 60 s) and halve its slots and rate.
    pub fn throttled(&self, host: &str, retry_after: Option<Duration>) -> Duration {
        self.throttles.fetch_add(1, Ordering::Relaxed);
        let mut hosts = self.hosts.lock().unwrap();
        let h = self.host(&mut hosts, host);
        h.throttles = h.throttles.saturating_add(1);
        h.successes = 0;
        h.limit = (h.limit / 2).max(1);
        h.rate_factor = (h.rate_factor / 2.0).max(1.0 / 64.0);
        let pause = retry_after
            .unwrap_or_else(|| {
                Duration::from_secs(1 << (h.throttles - 1).min(6)).min(Duration::from_secs(60))
            })
            .min(MAX_PAUSE);
        let until = Instant::now() + pause;
        h.paused_until = Some(h.paused_until.map_or(until, |u| u.max(until)));
        tracing::info!(
            host,
            pause_ms = pause.as_millis() as u64,
            limit = h.limit,
            "host throttled: slowing down"
        );
        pause
    }

    /// A file came from `host` without trouble: grow its slots back towards `per_host`
    /// and its rate back to the configured one.
    pub fn succeeded(&self, host: &str) {
        let mut hosts = self.hosts.lock().unwrap();
        let per_host = self.per_host;
        let h = self.host(&mut hosts, host);
        h.successes += 1;
        if h.successes >= h.limit {
            h.successes = 0;
            h.throttles = h.throttles.saturating_sub(1);
            if h.limit < per_host {
                h.limit += 1;
            }
            h.rate_factor = (h.rate_factor * 1.25).min(1.0);
        }
        drop(hosts);
        self.changed.notify_waiters();
    }

    /// A future that completes at the next slot release or resume signal. Create it
    /// before checking, so that no signal is missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// 429/503 answers seen so far.
    pub fn throttles(&self) -> u64 {
        self.throttles.load(Ordering::Relaxed)
    }

    /// The current slot limit of a host (for reports and tests).
    pub fn limit(&self, host: &str) -> usize {
        let hosts = self.hosts.lock().unwrap();
        hosts.get(host).map_or(self.per_host, |h| h.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_per_host_and_freed_on_drop() {
        let p = Politeness::new(2, None);
        let now = Instant::now();
        let a = p.try_reserve("a", now).unwrap();
        let _b = p.try_reserve("a", now).unwrap();
        assert_eq!(p.try_reserve("a", now).err(), Some(Busy::Full));
        let _c = p.try_reserve("other", now).unwrap();
        drop(a);
        assert!(p.try_reserve("a", now).is_ok());
    }

    #[test]
    fn throttling_pauses_halves_and_recovers() {
        let p = Politeness::new(8, None);
        let pause = p.throttled("h", Some(Duration::from_secs(2)));
        assert_eq!(pause, Duration::from_secs(2));
        assert_eq!(p.limit("h"), 4);
        match p.try_reserve("h", Instant::now()) {
            Err(Busy::Paused(until)) => assert!(until > Instant::now()),
            other => panic!("{:?}", other.err()),
        }
        assert!(
            p.try_reserve("other", Instant::now()).is_ok(),
            "other hosts go on"
        );
        let later = Instant::now() + Duration::from_secs(3);
        assert!(p.try_reserve("h", later).is_ok());
        for _ in 0..4 {
            p.succeeded("h");
        }
        assert_eq!(p.limit("h"), 5);
        assert_eq!(
            p.throttled("h", Some(Duration::from_secs(86_400))),
            MAX_PAUSE
        );
        // No Retry-After: 1, 2, 4 ... seconds.
        let q = Politeness::new(8, None);
        assert_eq!(q.throttled("h", None), Duration::from_secs(1));
        assert_eq!(q.throttled("h", None), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_paced_by_rate() {
        let p = Politeness::new(4, Some(10.0));
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            p.pace("h").await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(400), "{took:?}");
        assert!(took < Duration::from_millis(500), "{took:?}");
        // Another host has its own bucket.
        let t = tokio::time::Instant::now();
        p.pace("other").await;
        assert!(t.elapsed() < Duration::from_millis(1));
    }
}
