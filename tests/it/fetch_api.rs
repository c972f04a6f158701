//! The library API other stages call in-process (`refresh`, `demo`): deadlines,
//! cancellation, the re-hash of stored files, the hand-over with the shard stage
//! (`corrupt` files go to the next source) and files found complete under their
//! final name after a crash.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pmv_catalog::Catalog;
use pmv_core::report::Silent;
use pmv_core::root::DataRoot;
use pmv_pipeline::fetch::{self, FetchOptions, FetchSettings, RehashOptions, RehashSelect};
use serde_json::json;

use crate::fetch::{assert_stored, files_under, ingest_items, must};
use crate::httpd::{Delivery, Reply, Server, fake_mp4, sha256};
use crate::util::Env;

fn options() -> FetchOptions {
    FetchOptions {
        settings: FetchSettings {
            retries: 2,
            retry_base: Duration::from_millis(50),
            timeout: Duration::from_secs(3),
            // The test servers listen on 127.0.0.1.
            allow_private_hosts: true,
            ..FetchSettings::default()
        },
        ..FetchOptions::default()
    }
}

fn run(env: &Env, opts: &FetchOptions) -> fetch::FetchReport {
    let root = DataRoot::new(&env.root);
    let mut cat = Catalog::open(&root.catalog_path()).unwrap();
    fetch::run(&root, &mut cat, opts, &Silent).expect("fetch runs")
}

/// `n` files of `size` bytes each, sent 32 KiB every `every`.
fn slow_files(srv: &Server, n: usize, size: usize, every: Duration) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let id = format!("s{i}");
            let data = fake_mp4(size, 300 + i as u64);
            let d = data.clone();
            srv.route(&format!("/{id}.mp4"), move |r| {
                Reply::file(r, &d, Some("\"s\"")).delivery(Delivery::Drip {
                    chunk: 32 << 10,
                    every,
                })
            });
            (id, data)
        })
        .collect()
}

#[test]
fn a_deadline_stops_the_downloads_in_flight_and_the_next_run_resumes_them() {
    let env = Env::new();
    let srv = Server::start();
    // Each file takes 1.6 s and the deadline comes 0.6 s after the start, so it falls
    // in the first download (opening the catalog takes far less), never in a gap
    // between two as a deadline inside a 0.2 s download could.
    let files = slow_files(&srv, 6, 256 << 10, Duration::from_millis(200));
    let items: Vec<_> = files
        .iter()
        .map(|(id, _)| json!({"id": id, "urls": [srv.url(&format!("/{id}.mp4"))]}))
        .collect();
    ingest_items(&env, "t", &items);
    let mut opts = options();
    opts.settings.concurrency = 1;
    opts.deadline = Some(Instant::now() + Duration::from_millis(600));
    let rep = run(&env, &opts);
    assert_eq!(rep.stopped.as_deref(), Some("deadline"));
    assert!(rep.verified < 6, "{rep:?}");
    assert_eq!(rep.interrupted, 1, "the download in flight stops: {rep:?}");
    assert_eq!(rep.not_started, 5 - rep.verified);
    assert_eq!(rep.failed(), 0, "nothing is put off as a failure: {rep:?}");
    let cut = &files[rep.verified as usize].0;
    let r = must(&env, cut, "video");
    assert_eq!(r.state, "downloading");
    assert!(r.etag.is_some(), "what resumes it is recorded: {r:?}");
    let partial = env.root.join(format!("videos/t/{cut}.partial"));
    assert!(partial.metadata().unwrap().len() > 0);
    // The next run does the rest, and resumes the one cut short.
    let rep2 = run(&env, &options());
    assert_eq!(rep2.verified + rep.verified, 6);
    assert!(rep2.bytes_resumed > 0, "{rep2:?}");
    for (id, d) in &files {
        assert_stored(&env, id, "video", d);
    }
}

#[test]
fn cancellation_keeps_partial_files_and_the_next_run_resumes_them() {
    let env = Env::new();
    let srv = Server::start();
    let files = slow_files(&srv, 2, 2 << 20, Duration::from_millis(20));
    let items: Vec<_> = files
        .iter()
        .map(|(id, _)| json!({"id": id, "urls": [srv.url(&format!("/{id}.mp4"))]}))
        .collect();
    ingest_items(&env, "t", &items);
    let flag = Arc::new(AtomicBool::new(false));
    let mut opts = options();
    opts.cancel = Some(Arc::clone(&flag));
    let f = Arc::clone(&flag);
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(600));
        f.store(true, Ordering::SeqCst);
    });
    let started = Instant::now();
    let rep = run(&env, &opts);
    stopper.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped promptly"
    );
    assert_eq!(rep.stopped.as_deref(), Some("cancelled"));
    assert_eq!(rep.interrupted, 2, "{rep:?}");
    for (id, _) in &files {
        let r = must(&env, id, "video");
        assert_eq!(r.state, "downloading");
        assert!(r.etag.is_some(), "validators recorded for the resume");
        let partial = env.root.join(format!("videos/t/{id}.partial"));
        assert!(partial.metadata().unwrap().len() > 0);
    }
    assert_eq!(env.dataset("t")["states"]["downloading"], 2);
    let rep = run(&env, &options());
    assert_eq!(rep.verified, 2);
    assert!(rep.bytes_resumed > 0);
    for (id, d) in &files {
        assert_stored(&env, id, "video", d);
        let resumed = srv
            .requests(&format!("/{id}.mp4"))
            .iter()
            .any(|(r, s)| *s == 206 && r.range_from().unwrap() > 0);
        assert!(resumed, "{id} was resumed");
    }
}

#[test]
fn rehash_sends_changed_and_missing_files_back_to_be_fetched() {
    let env = Env::new();
    let srv = Server::start();
    let mut items = vec![];
    let mut datas = vec![];
    for i in 0..3 {
        let d = fake_mp4(20_000, 800 + i);
        srv.file(&format!("/r{i}.mp4"), d.clone());
        items.push(json!({"id": format!("r{i}"), "urls": [srv.url(&format!("/r{i}.mp4"))]}));
        datas.push(d);
    }
    ingest_items(&env, "t", &items);
    assert_eq!(run(&env, &options()).verified, 3);

    // A flipped byte in r0, r1 gone, r2 untouched.
    let p0 = env.root.join("videos/t/r0.mp4");
    let mut b = std::fs::read(&p0).unwrap();
    b[10_000] ^= 0x40;
    std::fs::write(&p0, &b).unwrap();
    std::fs::remove_file(env.root.join("videos/t/r1.mp4")).unwrap();

    let root = DataRoot::new(&env.root);
    let mut cat = Catalog::open(&root.catalog_path()).unwrap();
    let rep = fetch::rehash(
        &root,
        &mut cat,
        &RehashOptions {
            dataset: Some("t".into()),
            select: RehashSelect::All,
            deadline: None,
        },
        &Silent,
    )
    .unwrap();
    drop(cat);
    assert_eq!(
        (rep.checked, rep.changed, rep.missing),
        (3, 1, 1),
        "{rep:?}"
    );
    let r0 = must(&env, "r0", "video");
    assert_eq!(r0.state, "pending");
    assert_eq!(r0.error_class.as_deref(), Some("changed"));
    assert!(r0.error_message.unwrap().contains(&sha256(&datas[0])));
    assert!(!p0.exists());
    let q = files_under(&env.root.join("quarantine/t"));
    assert_eq!(q.len(), 1);
    assert!(
        q[0].file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("r0.mp4.changed-")
    );
    assert_eq!(must(&env, "r1", "video").state, "pending");
    assert_eq!(must(&env, "r2", "video").state, "verified");

    let rep = run(&env, &options());
    assert_eq!(rep.verified, 2);
    for (i, d) in datas.iter().enumerate() {
        assert_stored(&env, &format!("r{i}"), "video", d);
    }
    // A slice selects part of the files; all slices together select all of them.
    let mut cat = Catalog::open(&root.catalog_path()).unwrap();
    let mut checked = 0;
    for index in 0..3 {
        let select = RehashSelect::Slice { parts: 3, index };
        let opts = RehashOptions {
            dataset: None,
            select,
            deadline: None,
        };
        checked += fetch::rehash(&root, &mut cat, &opts, &Silent)
            .unwrap()
            .checked;
    }
    assert_eq!(checked, 3);
}

#[test]
fn a_corrupt_video_is_fetched_from_the_next_source_and_stays_corrupt_without_one() {
    let env = Env::new();
    let srv = Server::start();
    let first = fake_mp4(15_000, 1);
    let second = fake_mp4(16_000, 2);
    srv.file("/first.mp4", first.clone());
    srv.file("/second.mp4", second.clone());
    ingest_items(
        &env,
        "t",
        &[json!({"id": "c", "urls": [srv.url("/first.mp4"), srv.url("/second.mp4")]})],
    );
    run(&env, &options());
    assert_eq!(must(&env, "c", "video").source_rank, Some(0));

    // What the shard stage does with a video it cannot decode.
    let mark_corrupt = |env: &Env| {
        let r = must(env, "c", "video");
        let from = env.root.join(r.path.as_deref().unwrap());
        std::fs::create_dir_all(env.root.join("quarantine/t")).unwrap();
        std::fs::rename(&from, env.root.join("quarantine/t/c.mp4")).unwrap();
        let c = rusqlite::Connection::open(env.root.join("catalog.sqlite")).unwrap();
        c.execute(
            "UPDATE files SET state = 'corrupt', error_class = 'corrupt', \
             error_message = 'no video stream decodes' WHERE role = 'video'",
            [],
        )
        .unwrap();
    };
    mark_corrupt(&env);
    let rep = run(&env, &options());
    assert_eq!(rep.verified, 1);
    let r = assert_stored(&env, "c", "video", &second);
    assert_eq!(r.source_rank, Some(1));
    assert_eq!(
        srv.requests("/first.mp4").len(),
        1,
        "the corrupt source is not asked again"
    );

    std::fs::remove_file(env.root.join("quarantine/t/c.mp4")).unwrap();
    mark_corrupt(&env);
    let rep = run(&env, &options());
    assert_eq!(rep.planned, 0);
    let r = must(&env, "c", "video");
    assert_eq!(r.state, "corrupt");
    assert_eq!(r.error_message.as_deref(), Some("no video stream decodes"));
}

#[test]
fn a_complete_file_left_by_a_crash_is_adopted_and_a_wrong_one_quarantined() {
    let env = Env::new();
    let srv = Server::start();
    let good = fake_mp4(12_000, 5);
    let other = fake_mp4(12_000, 6);
    srv.file("/a.mp4", good.clone());
    srv.file("/b.mp4", other.clone());
    ingest_items(
        &env,
        "t",
        &[
            json!({"id": "a", "urls": [srv.url("/a.mp4")]}),
            json!({"id": "b", "urls": [srv.url("/b.mp4")], "sha256": sha256(&other)}),
        ],
    );
    // As if a run had renamed them and died before recording them: `a` is right,
    // `b` holds bytes that do not match its known hash.
    std::fs::create_dir_all(env.root.join("videos/t")).unwrap();
    std::fs::write(env.root.join("videos/t/a.mp4"), &good).unwrap();
    std::fs::write(env.root.join("videos/t/b.mp4"), fake_mp4(12_000, 7)).unwrap();
    let rep = run(&env, &options());
    assert_eq!(rep.verified, 2);
    assert_eq!(rep.adopted, 1);
    assert!(
        srv.requests("/a.mp4").is_empty(),
        "adopted without downloading"
    );
    assert_stored(&env, "a", "video", &good);
    assert_stored(&env, "b", "video", &other);
    assert_eq!(files_under(&env.root.join("quarantine/t")).len(), 1);
}

#[test]
fn a_byte_budget_stops_the_downloads_in_flight() {
    let env = Env::new();
    let srv = Server::start();
    let mut items = vec![];
    for i in 0..8 {
        // In pieces, so that the budget is spent in the middle of the third file.
        let data = fake_mp4(100_000, 900 + i);
        srv.route(&format!("/b{i}.mp4"), move |r| {
            Reply::file(r, &data, Some("\"b\"")).delivery(Delivery::Drip {
                chunk: 10_000,
                every: Duration::from_millis(20),
            })
        });
        items.push(json!({"id": format!("b{i}"), "urls": [srv.url(&format!("/b{i}.mp4"))]}));
    }
    ingest_items(&env, "t", &items);
    let mut opts = options();
    opts.settings.concurrency = 1;
    opts.max_bytes = Some(250_000);
    let rep = run(&env, &opts);
    assert_eq!(rep.stopped.as_deref(), Some("byte budget"));
    assert_eq!((rep.verified, rep.interrupted), (2, 1), "{rep:?}");
    assert!(
        rep.bytes >= 250_000 && rep.bytes < 300_000,
        "the third file stops at the budget: {rep:?}"
    );
    assert_eq!(rep.not_started, 5);
    let rep2 = run(&env, &options());
    assert_eq!(rep2.verified, 6);
    assert_eq!(rep2.bytes_resumed, rep.bytes - 200_000, "{rep2:?}");
}

#[test]
fn the_demo_file_server_is_fetched_from_with_resume() {
    let env = Env::new();
    let dir = env.path("served");
    std::fs::create_dir_all(&dir).unwrap();
    let data = fake_mp4(3 << 20, 77);
    std::fs::write(dir.join("d0.mp4"), &data).unwrap();
    let server = pmv_pipeline::demo::serve::FileServer::start(&dir).unwrap();
    let url = format!("{}d0.mp4", server.base_url());
    ingest_items(&env, "demo", &[json!({"id": "d0", "urls": [url]})]);
    assert_eq!(run(&env, &options()).verified, 1);
    let r = assert_stored(&env, "d0", "video", &data);
    let etag = r.etag.expect("the demo server sends an ETag");

    // As if a run had been killed a third of the way: a partial file holding `kept`,
    // and its record.
    let partial = env.root.join("videos/demo/d0.partial");
    let cut_short = |kept: &[u8]| {
        std::fs::remove_file(env.root.join("videos/demo/d0.mp4")).unwrap();
        std::fs::write(&partial, kept).unwrap();
        let c = rusqlite::Connection::open(env.root.join("catalog.sqlite")).unwrap();
        c.execute(
            "UPDATE files SET state = 'downloading', path = NULL, sha256 = NULL, size = ?1, etag = ?2",
            rusqlite::params![data.len() as i64, etag],
        )
        .unwrap();
    };
    cut_short(&data[..1 << 20]);
    let rep = run(&env, &options());
    assert_eq!(rep.verified, 1, "{rep:?}");
    assert_eq!(rep.bytes_resumed, 1 << 20);
    assert_eq!(rep.bytes, (data.len() - (1 << 20)) as u64);
    assert_stored(&env, "d0", "video", &data);

    // The same, but the partial file was last written before the machine started
    // (as after a power cut): its bytes may not be the ones written, and only the
    // ETag would vouch for them, so it is fetched from the start.
    let mut garbled = data[..1 << 20].to_vec();
    garbled[(1 << 20) - 4096..].fill(0);
    cut_short(&garbled);
    std::fs::File::options()
        .write(true)
        .open(&partial)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(86_400))
        .unwrap();
    let rep = run(&env, &options());
    assert_eq!(rep.verified, 1, "{rep:?}");
    assert_eq!(rep.bytes_resumed, 0);
    assert_eq!(rep.bytes, data.len() as u64);
    assert_stored(&env, "d0", "video", &data);
}
