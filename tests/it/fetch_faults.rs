//! fetch against servers that misbehave: cut and reset connections, ignored ranges,
//! changed files, throttling, error statuses, slow bodies, error pages served with
//! 200, oversized and lying bodies, redirect loops and hostile redirects.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::fetch::{assert_stored, fetch, files_under, ingest_items, must};
use crate::httpd::{Delivery, Reply, Server, fake_mp4, sha256};
use crate::util::Env;

fn one(env: &Env, srv: &Server, path: &str) {
    ingest_items(env, "t", &[json!({"id": "v", "urls": [srv.url(path)]})]);
}

#[test]
fn a_cut_body_is_resumed_with_range_and_if_range() {
    let env = Env::new();
    let srv = Server::start();
    let data = fake_mp4(300_000, 1);
    let d = data.clone();
    srv.route("/v.mp4", move |r| {
        let reply = Reply::file(r, &d, Some("\"abc\""));
        if r.hit == 0 {
            reply.delivery(Delivery::CutAfter(120_000))
        } else {
            reply
        }
    });
    one(&env, &srv, "/v.mp4");
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rep = out.json();
    assert_eq!(rep["verified"], 1);
    assert_eq!(rep["retries"], 1);
    assert_eq!(rep["resumed_bytes"], 120_000);
    assert_stored(&env, "v", "video", &data);
    let reqs = srv.requests("/v.mp4");
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].0.header("range"), Some("bytes=120000-"));
    assert_eq!(reqs[1].0.header("if-range"), Some("\"abc\""));
    assert_eq!(reqs[1].1, 206);
    assert_eq!(must(&env, "v", "video").attempts, 2);
}

#[test]
fn a_server_that_ignores_range_makes_the_download_start_over() {
    let env = Env::new();
    let srv = Server::start();
    let data = fake_mp4(200_000, 2);
    let d = data.clone();
    srv.route("/v.mp4", move |r| {
        // Never 206: the whole file every time; the first answer is cut.
        let reply = Reply::new(200, d.clone()).header("ETag", "\"e\"");
        if r.hit == 0 {
            reply.delivery(Delivery::CutAfter(50_000))
        } else {
            reply
        }
    });
    one(&env, &srv, "/v.mp4");
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["resumed_bytes"], 0);
    assert_stored(&env, "v", "video", &data);
    let reqs = srv.requests("/v.mp4");
    assert_eq!(reqs[1].0.header("range"), Some("bytes=50000-"));
}

#[test]
fn a_file_that_changed_between_attempts_is_fetched_whole_again() {
    let env = Env::new();
    let srv = Server::start();
    let old = fake_mp4(200_000, 3);
    let new = fake_mp4(180_000, 4);
    let (o, n) = (old.clone(), new.clone());
    srv.route("/v.mp4", move |r| {
        if r.hit == 0 {
            Reply::file(r, &o, Some("\"old\"")).delivery(Delivery::CutAfter(90_000))
        } else {
            // The file changed: If-Range "old" no longer matches, so 200 with all of it.
            Reply::file(r, &n, Some("\"new\""))
        }
    });
    one(&env, &srv, "/v.mp4");
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r = assert_stored(&env, "v", "video", &new);
    assert_eq!(r.etag.as_deref(), Some("\"new\""));
    let reqs = srv.requests("/v.mp4");
    assert_eq!(reqs[1].0.header("if-range"), Some("\"old\""));
    assert_eq!(reqs[1].1, 200);
}

#[test]
fn truncated_bodies_and_resets_are_retried() {
    let env = Env::new();
    let srv = Server::start();
    let data = fake_mp4(100_000, 5);
    let d = data.clone();
    srv.route("/v.mp4", move |r| {
        let reply = Reply::file(r, &d, Some("\"t\""));
        match r.hit {
            0 => reply.delivery(Delivery::ResetAfter(10_000)),
            1 => reply.delivery(Delivery::CutAfter(5_000)),
            _ => reply,
        }
    });
    one(&env, &srv, "/v.mp4");
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_stored(&env, "v", "video", &data);
    assert_eq!(srv.requests("/v.mp4").len(), 3);
}

#[test]
fn throttled_hosts_wait_for_retry_after() {
    let env = Env::new();
    let srv = Server::start();
    let a = fake_mp4(20_000, 6);
    let b = fake_mp4(20_000, 7);
    let (da, db) = (a.clone(), b.clone());
    srv.route("/a.mp4", move |r| {
        if r.hit == 0 {
            Reply::status(429).header("Retry-After", "1")
        } else {
            Reply::file(r, &da, None)
        }
    });
    srv.route("/b.mp4", move |r| {
        if r.hit == 0 {
            Reply::status(503).header("Retry-After", "1")
        } else {
            Reply::file(r, &db, None)
        }
    });
    ingest_items(
        &env,
        "t",
        &[
            json!({"id": "a", "urls": [srv.url("/a.mp4")]}),
            json!({"id": "b", "urls": [srv.url("/b.mp4")]}),
        ],
    );
    let started = Instant::now();
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
    let rep = out.json();
    assert_eq!(rep["verified"], 2);
    assert!(rep["throttled"].as_u64().unwrap() >= 2, "{rep}");
    assert_stored(&env, "a", "video", &a);
    assert_stored(&env, "b", "video", &b);
}

#[test]
fn a_throttled_host_does_not_stall_the_others() {
    let env = Env::new();
    let slow = Server::start();
    let fast = Server::start();
    let mut items = vec![];
    // Host A answers 429 with a long Retry-After to every first request of a file.
    for i in 0..3 {
        let d = fake_mp4(5_000, 100 + i);
        slow.route(&format!("/a{i}.mp4"), move |r| {
            if r.hit == 0 {
                Reply::status(429).header("Retry-After", "2")
            } else {
                Reply::file(r, &d, None)
            }
        });
        items.push(json!({"id": format!("a{i}"), "urls": [slow.url(&format!("/a{i}.mp4"))]}));
    }
    for i in 0..20 {
        fast.file(&format!("/b{i}.mp4"), fake_mp4(5_000, 200 + i));
        items.push(json!({"id": format!("b{i}"), "urls": [fast.url(&format!("/b{i}.mp4"))]}));
    }
    ingest_items(&env, "t", &items);
    let out = fetch(&env, &[("PMV_FETCH_CONCURRENCY", "2".into())], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["verified"], 23);
    // Every file of host B was fetched before host A was asked again.
    let a_served: Vec<_> = slow.log().into_iter().filter(|(_, s)| *s != 429).collect();
    assert_eq!(a_served.len(), 3);
    let last_b = fast.log().iter().map(|(r, _)| r.at).max().unwrap();
    let first_a_again = a_served.iter().map(|(r, _)| r.at).min().unwrap();
    assert!(last_b < first_a_again, "host B waited for host A's pause");
    assert_eq!(fast.log().len(), 20, "host B needed no retry");
    // The paused host got at most its first 429 before the pause (the limit halves).
    assert!(slow.log().iter().filter(|(_, s)| *s == 429).count() <= 3);
}

#[test]
fn not_found_and_gone_are_permanent_and_left_alone_until_asked() {
    let env = Env::new();
    let srv = Server::start();
    srv.route("/404.mp4", |_| Reply::status(404));
    srv.route("/410.mp4", |_| Reply::status(410));
    ingest_items(
        &env,
        "t",
        &[
            json!({"id": "nf", "urls": [srv.url("/404.mp4")]}),
            json!({"id": "gone", "urls": [srv.url("/410.mp4")]}),
        ],
    );
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let rep = out.json();
    assert_eq!(rep["failed_permanent"], 2);
    assert_eq!(rep["failures"]["http_404"], 1);
    assert_eq!(rep["failures"]["http_410"], 1);
    let r = must(&env, "nf", "video");
    assert_eq!(r.state, "failed_permanent");
    assert_eq!(r.error_class.as_deref(), Some("http_404"));
    assert!(r.error_message.unwrap().contains("HTTP 404 Not Found"));
    assert!(r.next_retry_at.is_none());
    assert_eq!(srv.requests("/404.mp4").len(), 1, "a 404 is not retried");
    // status shows the failure classes.
    let d = env.dataset("t");
    assert_eq!(d["failures"]["http_404"], 1);
    assert_eq!(d["states"]["failed_permanent"], 2);

    assert_eq!(fetch(&env, &[], &[]).json()["planned"], 0);
    assert_eq!(fetch(&env, &[], &["--retry-failed"]).json()["planned"], 0);
    let again = fetch(&env, &[], &["--include-permanent"]);
    assert_eq!(again.json()["planned"], 2);
    assert_eq!(srv.requests("/404.mp4").len(), 2);
}

#[test]
fn transient_failures_back_off_across_runs() {
    let env = Env::new();
    let srv = Server::start();
    srv.route("/v.mp4", |_| Reply::status(502));
    one(&env, &srv, "/v.mp4");
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 3);
    let r = must(&env, "v", "video");
    assert_eq!(r.state, "failed_transient");
    assert_eq!(r.error_class.as_deref(), Some("http_5xx"));
    assert_eq!(r.attempts, 3, "PMV_FETCH_RETRIES=3 attempts within the run");
    let now = pmv_core::util::now_unix();
    let first = r.next_retry_at.unwrap() - now;
    assert!((1500..=2000).contains(&first), "{first}");
    // Not due yet: nothing happens.
    assert_eq!(fetch(&env, &[], &[]).json()["planned"], 0);
    // Asked to: tried again, and the next wait is longer.
    let out = fetch(&env, &[], &["--retry-failed"]);
    assert_eq!(out.json()["failed_transient"], 1);
    let second = must(&env, "v", "video").next_retry_at.unwrap() - pmv_core::util::now_unix();
    assert!(second > first + 1000, "{first} then {second}");
}

#[test]
fn slow_bodies_pass_under_the_idle_timeout_and_fail_over_it() {
    let env = Env::new();
    let srv = Server::start();
    let ok = fake_mp4(20_000, 8);
    let d = ok.clone();
    srv.route("/drip.mp4", move |r| {
        Reply::file(r, &d, None).delivery(Delivery::Drip {
            chunk: 2_000,
            every: Duration::from_millis(150),
        })
    });
    let stall = fake_mp4(20_000, 9);
    srv.route("/stall.mp4", move |r| {
        Reply::file(r, &stall, None).delivery(Delivery::StallAfter(5_000, Duration::from_secs(3)))
    });
    ingest_items(
        &env,
        "t",
        &[
            json!({"id": "drip", "urls": [srv.url("/drip.mp4")]}),
            json!({"id": "stall", "urls": [srv.url("/stall.mp4")]}),
        ],
    );
    let vars = [
        ("PMV_FETCH_TIMEOUT", "1".to_string()),
        ("PMV_FETCH_RETRIES", "2".to_string()),
    ];
    let out = fetch(&env, &vars, &[]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_stored(&env, "drip", "video", &ok);
    let r = must(&env, "stall", "video");
    assert_eq!(r.state, "failed_transient");
    assert_eq!(r.error_class.as_deref(), Some("timeout"));
    assert!(r.error_message.unwrap().contains("no data for 1 s"));
    // The partial file is kept for the next run to resume.
    assert!(env.root.join("videos/t/stall.partial").exists());
}

#[test]
fn an_html_page_served_with_200_is_not_a_video() {
    let env = Env::new();
    let srv = Server::start();
    srv.route("/v.mp4", |_| {
        Reply::html("<!DOCTYPE html><html><body>This video has been removed</body></html>")
    });
    one(&env, &srv, "/v.mp4");
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 3);
    let r = must(&env, "v", "video");
    assert_eq!(r.state, "failed_permanent", "{r:?}");
    assert_eq!(r.error_class.as_deref(), Some("not_video"));
    assert!(
        r.error_message.as_deref().unwrap().contains("an HTML page"),
        "{r:?}"
    );
    assert_eq!(
        srv.requests("/v.mp4").len(),
        2,
        "wrong bytes are retried once"
    );
    assert!(
        files_under(&env.root.join("videos")).is_empty(),
        "nothing kept"
    );
}

#[test]
fn bodies_over_the_size_limit_are_refused() {
    let env = Env::new();
    let srv = Server::start();
    let big = fake_mp4(300_000, 10);
    let b = big.clone();
    srv.route("/announced.mp4", move |r| Reply::file(r, &b, None));
    let b = big.clone();
    srv.route("/unannounced.mp4", move |_| {
        let mut reply = Reply::new(200, b.clone());
        reply.no_length = true;
        reply
    });
    srv.file("/small.mp4", fake_mp4(50_000, 11));
    ingest_items(
        &env,
        "t",
        &[
            json!({"id": "announced", "urls": [srv.url("/announced.mp4")]}),
            json!({"id": "unannounced", "urls": [srv.url("/unannounced.mp4")]}),
            json!({"id": "small", "urls": [srv.url("/small.mp4")]}),
        ],
    );
    let out = fetch(&env, &[], &["--max-size", "100KiB"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    for id in ["announced", "unannounced"] {
        let r = must(&env, id, "video");
        assert_eq!(r.state, "failed_permanent", "{id}");
        assert_eq!(r.error_class.as_deref(), Some("too_large"), "{id}");
    }
    assert!(
        must(&env, "announced", "video")
            .error_message
            .unwrap()
            .contains("announces 300000 bytes")
    );
    assert_eq!(must(&env, "small", "video").state, "verified");
    assert!(!env.root.join("videos/t/unannounced.partial").exists());
}

#[test]
fn a_lying_content_length_is_a_truncated_body() {
    let env = Env::new();
    let srv = Server::start();
    let data = fake_mp4(40_000, 12);
    srv.route("/v.mp4", move |_| {
        let mut reply = Reply::new(200, data.clone());
        reply.claim_length = Some(80_000);
        reply
    });
    one(&env, &srv, "/v.mp4");
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 3);
    let r = must(&env, "v", "video");
    assert_eq!(r.state, "failed_transient");
    assert_eq!(r.error_class.as_deref(), Some("truncated"), "{r:?}");
    assert!(
        !env.root.join("videos/t/v.mp4").exists(),
        "never under the final name"
    );
}

#[test]
fn redirects_are_bounded_and_only_to_http() {
    let env = Env::new();
    let srv = Server::start();
    srv.route("/loop1", |_| Reply::redirect(302, "/loop2"));
    srv.route("/loop2", |_| Reply::redirect(302, "/loop1"));
    let mut n = 0;
    while n < 30 {
        let next = format!("/chain{}", n + 1);
        srv.route(&format!("/chain{n}"), move |_| Reply::redirect(307, &next));
        n += 1;
    }
    srv.route("/to-file", |_| Reply::redirect(302, "file:///etc/passwd"));
    srv.route("/to-ftp", |_| Reply::redirect(301, "ftp://127.0.0.1/x.mp4"));
    srv.route("/to-userinfo", |_| {
        Reply::redirect(302, "http://good.example@127.0.0.1:9/x")
    });
    let huge = format!("/{}", "a".repeat(9000));
    srv.route("/to-huge", move |_| Reply::redirect(302, &huge));
    let data = fake_mp4(4_000, 13);
    srv.file("/real.mp4", data.clone());
    srv.route("/ok", |_| Reply::redirect(302, "/real.mp4"));
    let ids = [
        "loop1",
        "chain0",
        "to-file",
        "to-ftp",
        "to-userinfo",
        "to-huge",
        "ok",
    ];
    let items: Vec<_> = ids
        .iter()
        .map(|id| json!({"id": id, "urls": [srv.url(&format!("/{id}"))]}))
        .collect();
    ingest_items(&env, "t", &items);
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let class = |id: &str| must(&env, id, "video").error_class.unwrap_or_default();
    assert_eq!(class("loop1"), "redirect");
    assert!(
        must(&env, "loop1", "video")
            .error_message
            .unwrap()
            .contains("redirect loop")
    );
    assert_eq!(class("chain0"), "redirect");
    assert!(
        must(&env, "chain0", "video")
            .error_message
            .unwrap()
            .contains("more than 10 redirects")
    );
    for id in ["to-file", "to-ftp", "to-userinfo", "to-huge"] {
        let r = must(&env, id, "video");
        assert_eq!(r.state, "failed_permanent", "{id}");
        assert_eq!(r.error_class.as_deref(), Some("bad_url"), "{id}: {r:?}");
    }
    assert!(
        must(&env, "to-file", "video")
            .error_message
            .unwrap()
            .contains("'file'")
    );
    assert_stored(&env, "ok", "video", &data);
    assert!(srv.log().iter().all(|(r, _)| !r.target.contains("passwd")));
}

#[test]
fn hostile_urls_and_names_never_become_paths() {
    let env = Env::new();
    let srv = Server::start();
    let data = fake_mp4(6_000, 14);
    let d = data.clone();
    srv.route("/v.mp4", move |r| {
        Reply::file(r, &d, None)
            .header(
                "Content-Disposition",
                "attachment; filename=\"../../../escape.mp4\"",
            )
            .header("Content-Type", "video/mp4; name=../../x")
    });
    ingest_items(
        &env,
        "t",
        &[
            json!({"id": "v", "urls": [srv.url("/v.mp4")]}),
            json!({"id": "creds", "urls": ["https://h.example/creds.mp4"]}),
            json!({"id": "trick", "urls": ["https://h.example/trick.mp4"]}),
        ],
    );
    // URLs with user info are rejected at ingest; a catalog written by an older version
    // may still hold some, and fetch refuses them too.
    for (id, url) in [
        ("creds", format!("http://user:secret@{}/v.mp4", srv.addr)),
        ("trick", format!("http://127.0.0.1:1@{}/v.mp4", srv.addr)),
    ] {
        let sources = json!([{"kind": "direct", "location": url, "origin": "manifest"}]);
        env.catalog()
            .execute(
                "UPDATE items SET video_sources = ?1 WHERE key = ?2",
                [sources.to_string(), id.to_string()],
            )
            .unwrap();
    }
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let r = assert_stored(&env, "v", "video", &data);
    assert_eq!(r.path.as_deref(), Some("videos/t/v.mp4"));
    for id in ["creds", "trick"] {
        let r = must(&env, id, "video");
        assert_eq!(r.error_class.as_deref(), Some("bad_url"), "{id}");
        assert!(!r.error_message.unwrap().contains("secret"));
    }
    assert_eq!(
        srv.requests("/v.mp4").len(),
        1,
        "URLs with user info are never requested"
    );
    // Nothing outside the root's file areas.
    let all = files_under(env.dir.path());
    assert!(
        all.iter().all(|p| !p.to_string_lossy().contains("escape")),
        "{all:?}"
    );
}

#[test]
fn a_hash_mismatch_twice_fails_the_source_and_the_next_one_is_used() {
    let env = Env::new();
    let srv = Server::start();
    let good = fake_mp4(30_000, 15);
    let bad = fake_mp4(30_000, 16);
    srv.file("/bad.mp4", bad.clone());
    srv.file("/good.mp4", good.clone());
    ingest_items(
        &env,
        "t",
        &[json!({
            "id": "v",
            "urls": [srv.url("/bad.mp4"), srv.url("/good.mp4")],
            "sha256": sha256(&good),
        })],
    );
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r = assert_stored(&env, "v", "video", &good);
    assert_eq!(r.source_rank, Some(1));
    assert_eq!(
        srv.requests("/bad.mp4").len(),
        2,
        "mismatch retried once, then the mirror"
    );
    assert_eq!(r.attempts, 3);
    assert!(r.error_class.is_none());

    // With only bad sources the failure is permanent and names both hashes.
    let env2 = Env::new();
    ingest_items(
        &env2,
        "t",
        &[json!({"id": "w", "urls": [srv.url("/bad.mp4")], "sha256": sha256(&good)})],
    );
    let out = fetch(&env2, &[], &[]);
    assert_eq!(out.code, 3);
    let r = must(&env2, "w", "video");
    assert_eq!(r.state, "failed_permanent");
    assert_eq!(r.error_class.as_deref(), Some("hash_mismatch"));
    let msg = r.error_message.unwrap();
    assert!(
        msg.contains(&sha256(&good)) && msg.contains(&sha256(&bad)),
        "{msg}"
    );
    assert!(files_under(&env2.root.join("videos")).is_empty());
}

#[test]
fn per_host_slots_and_rate_are_kept() {
    let env = Env::new();
    let srv = Server::start();
    let mut items = vec![];
    let mut datas = vec![];
    for i in 0..6 {
        datas.push(fake_mp4(16_000, 60 + i));
        items.push(json!({"id": format!("p{i}"), "urls": [srv.url(&format!("/p/{i}.mp4"))]}));
    }
    let served = datas.clone();
    srv.prefix("/p/", move |r| {
        let i: usize = r.path()["/p/".len()..]
            .trim_end_matches(".mp4")
            .parse()
            .unwrap();
        Reply::file(r, &served[i], None).delivery(Delivery::Drip {
            chunk: 4_000,
            every: Duration::from_millis(60),
        })
    });
    ingest_items(&env, "t", &items);
    let out = fetch(
        &env,
        &[("PMV_FETCH_CONCURRENCY", "8".into())],
        &["--per-host", "2"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(srv.max_concurrent("/p/"), 2, "two at a time from one host");
    for (i, d) in datas.iter().enumerate() {
        assert_stored(&env, &format!("p{i}"), "video", d);
    }

    // --rate 4: requests to one host start at least 250 ms apart, so five of them span
    // at least a second. Measured where they arrive, a request sent on time may arrive
    // late on a loaded machine (the gap before it grows, the one after it shrinks):
    // what no delay can shrink is the span from the first request, less that one's own
    // delay, for which one interval is allowed. Without pacing, all five arrive at once.
    let env = Env::new();
    let srv = Server::start();
    let mut items = vec![];
    for i in 0..5 {
        srv.file(&format!("/r{i}.mp4"), fake_mp4(3_000, 70 + i));
        items.push(json!({"id": format!("r{i}"), "urls": [srv.url(&format!("/r{i}.mp4"))]}));
    }
    ingest_items(&env, "t", &items);
    let out = fetch(&env, &[], &["--rate", "4"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut at: Vec<Instant> = srv.log().iter().map(|(r, _)| r.at).collect();
    at.sort();
    assert_eq!(at.len(), 5);
    let span = at[4] - at[0];
    assert!(span >= Duration::from_millis(3 * 250), "{span:?}: {at:?}");
}

#[test]
fn partial_files_that_are_links_are_never_written_through() {
    let env = Env::new();
    let srv = Server::start();
    let a = fake_mp4(9_000, 80);
    let b = fake_mp4(9_000, 81);
    srv.file("/a.mp4", a.clone());
    srv.file("/b.mp4", b.clone());
    ingest_items(
        &env,
        "t",
        &[
            json!({"id": "a", "urls": [srv.url("/a.mp4")]}),
            json!({"id": "b", "urls": [srv.url("/b.mp4")]}),
        ],
    );
    let precious = env.write("precious.bin", "someone's own file\n");
    std::fs::create_dir_all(env.root.join("videos/t")).unwrap();
    std::fs::hard_link(&precious, env.root.join("videos/t/a.partial")).unwrap();
    std::os::unix::fs::symlink(&precious, env.root.join("videos/t/b.partial")).unwrap();
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_stored(&env, "a", "video", &a);
    assert_stored(&env, "b", "video", &b);
    assert_eq!(
        std::fs::read_to_string(&precious).unwrap(),
        "someone's own file\n"
    );
}
