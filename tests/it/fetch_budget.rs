//! Budgets bound the work in flight, against drip-feed servers on 127.0.0.1: a time
//! budget stops downloads that wait for a byte, for an answer or for a lookup, within
//! the documented grace, and the next run resumes them; the minimum throughput drops
//! transfers that crawl, and a later run resumes them.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fetch::{assert_stored, fetch_command, ingest_items, must};
use crate::httpd::{Delivery, Reply, Server, fake_mp4};
use crate::util::{Env, Out};

/// Runs `cmd` to its end and says how long it took; kills it and fails the test if
/// it runs longer than `limit` (a budget that does not bound the work in flight).
pub fn run_within(mut cmd: Command, limit: Duration) -> (Out, Duration) {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pmv-data");
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    let out = child.wait_with_output().unwrap();
    (
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        took,
    )
}

/// Serves `data` at `path` with an ETag: one byte a second while `slow` is set.
fn drip_file(srv: &Server, path: &str, data: Vec<u8>, slow: &Arc<AtomicBool>) {
    let slow = Arc::clone(slow);
    srv.route(path, move |r| {
        let reply = Reply::file(r, &data, Some("\"drip-1\""));
        if slow.load(Ordering::SeqCst) {
            reply.delivery(Delivery::Drip {
                chunk: 1,
                every: Duration::from_secs(1),
            })
        } else {
            reply
        }
    });
}

#[test]
fn a_time_budget_stops_downloads_waiting_for_bytes_answers_and_lookups() {
    let env = Env::new();
    let srv = Server::start();
    let slow = Arc::new(AtomicBool::new(true));
    let data = fake_mp4(4096, 41);
    drip_file(&srv, "/drip.mp4", data.clone(), &slow);
    // A server that takes the request and sends no answer, and a Douyin lookup that
    // never comes back.
    srv.route("/hang.mp4", |_| {
        std::thread::sleep(Duration::from_secs(30));
        Reply::status(503)
    });
    srv.route("/dy/web/api/v2/aweme/slidesinfo/", |_| {
        std::thread::sleep(Duration::from_secs(30));
        Reply::status(503)
    });
    ingest_items(
        &env,
        "drip",
        &[json!({"id": "d", "urls": [srv.url("/drip.mp4")]})],
    );
    ingest_items(
        &env,
        "hang",
        &[
            json!({"id": "h", "urls": [srv.url("/hang.mp4")]}),
            json!({"id": "l", "urls": ["https://www.douyin.com/video/555"]}),
        ],
    );
    let web = srv.url("/dy");
    // No idle timeout or minimum speed gets in first: only the budget ends them.
    let vars = [
        ("PMV_FETCH_TIMEOUT", "120"),
        ("PMV_FETCH_MIN_SPEED", "0"),
        ("PMV_SOURCES_DOUYIN_WEB", web.as_str()),
    ];
    let budget = Duration::from_secs(2);
    let limit = budget + pmv_pipeline::fetch::GRACE;
    let (out, took) = run_within(fetch_command(&env, &vars, &["--max-duration", "2s"]), limit);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(took >= budget, "ended before its budget: {took:?}");
    let rep = out.json();
    assert_eq!(rep["stopped"], "deadline", "{rep}");
    assert_eq!(rep["interrupted"], 3, "all three stop: {rep}");
    assert_eq!(
        rep["failed_transient"], 0,
        "none is put off as a failure: {rep}"
    );
    assert_eq!(rep["failed_permanent"], 0, "{rep}");
    for key in ["d", "h", "l"] {
        assert_eq!(must(&env, key, "video").state, "downloading", "{key}");
    }
    // The drip-fed file keeps its bytes and what resumes them.
    let partial = env.root.join("videos/drip/d.partial");
    let kept = partial.metadata().unwrap().len();
    assert!(kept > 0, "the partial file is kept");
    assert_eq!(must(&env, "d", "video").etag.as_deref(), Some("\"drip-1\""));

    // The next run resumes it where it stopped.
    slow.store(false, Ordering::SeqCst);
    let (out, _) = run_within(
        fetch_command(&env, &vars, &["--dataset", "drip"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rep = out.json();
    assert_eq!(rep["verified"], 1, "{rep}");
    assert_eq!(rep["resumed_bytes"], kept, "{rep}");
    assert_stored(&env, "d", "video", &data);
    let resumed = srv
        .requests("/drip.mp4")
        .iter()
        .any(|(r, s)| *s == 206 && r.range_from() == Some(kept));
    assert!(resumed, "{:?}", srv.requests("/drip.mp4"));
}

#[test]
fn transfers_slower_than_the_minimum_speed_are_dropped_and_resumed_later() {
    let env = Env::new();
    let srv = Server::start();
    let crawl = Arc::new(AtomicBool::new(true));
    let data = fake_mp4(64 << 10, 42);
    let d = data.clone();
    let c = Arc::clone(&crawl);
    // About 500 bytes a second, under a minimum of 1 KiB a second.
    srv.route("/crawl.mp4", move |r| {
        let reply = Reply::file(r, &d, Some("\"crawl-1\""));
        if c.load(Ordering::SeqCst) {
            reply.delivery(Delivery::Drip {
                chunk: 100,
                every: Duration::from_millis(200),
            })
        } else {
            reply
        }
    });
    // Slow but above the minimum: 4 KB a second.
    let fine = fake_mp4(8_000, 43);
    let f = fine.clone();
    srv.route("/slow.mp4", move |r| {
        Reply::file(r, &f, None).delivery(Delivery::Drip {
            chunk: 400,
            every: Duration::from_millis(100),
        })
    });
    ingest_items(
        &env,
        "t",
        &[
            json!({"id": "crawl", "urls": [srv.url("/crawl.mp4")]}),
            json!({"id": "slow", "urls": [srv.url("/slow.mp4")]}),
        ],
    );
    let vars = [("PMV_FETCH_RETRIES", "2")];
    let (out, _) = run_within(
        fetch_command(
            &env,
            &vars,
            &["--min-speed", "1KiB", "--min-speed-time", "1"],
        ),
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    let rep = out.json();
    assert_eq!(rep["failures"]["too_slow"], 1, "{rep}");
    assert_stored(&env, "slow", "video", &fine);
    let r = must(&env, "crawl", "video");
    assert_eq!(r.state, "failed_transient", "retried later: {r:?}");
    assert_eq!(r.error_class.as_deref(), Some("too_slow"));
    let msg = r.error_message.unwrap();
    assert!(msg.contains("below the minimum of 1024 bytes/s"), "{msg}");
    assert!(r.next_retry_at.is_some());
    assert_eq!(r.etag.as_deref(), Some("\"crawl-1\""), "what resumes it");
    // The second attempt resumed the first one's bytes.
    let reqs = srv.requests("/crawl.mp4");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(reqs[1].0.range_from().unwrap() > 0, "{reqs:?}");
    let kept = env
        .root
        .join("videos/t/crawl.partial")
        .metadata()
        .unwrap()
        .len();
    assert!(kept > 0);

    crawl.store(false, Ordering::SeqCst);
    let (out, _) = run_within(
        fetch_command(&env, &vars, &["--retry-failed"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["resumed_bytes"], kept);
    assert_stored(&env, "crawl", "video", &data);
}
