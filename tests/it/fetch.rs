//! fetch against real HTTP servers on 127.0.0.1: downloads, records, reruns; and the
//! helpers the other fetch test modules share.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::httpd::{Reply, Server, fake_mp4, sha256};
use crate::util::{Env, Out, s};

/// Settings that keep tests fast: short back-off and timeouts.
pub const FAST: [(&str, &str); 5] = [
    ("PMV_FETCH_RETRY_BASE", "0.05"),
    ("PMV_FETCH_RETRIES", "3"),
    ("PMV_FETCH_TIMEOUT", "3"),
    ("PMV_FETCH_CONNECT_TIMEOUT", "2"),
    ("PMV_FETCH_CONCURRENCY", "4"),
];

/// `--json fetch ARGS` with [`FAST`] settings and `vars` on top, not yet run; no proxy
/// from the environment.
pub fn fetch_command(env: &Env, vars: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = env.command();
    for k in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(k);
    }
    cmd.envs(FAST).envs(vars.iter().copied());
    cmd.arg("--json").arg("fetch").args(args);
    cmd
}

/// Runs [`fetch_command`] to its end.
pub fn fetch(env: &Env, vars: &[(&str, String)], args: &[&str]) -> Out {
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Out::of(fetch_command(env, &vars, args))
}

/// Ingests JSON lines items into a dataset (split train).
pub fn ingest_items(env: &Env, dataset: &str, items: &[Value]) {
    let text: String = items.iter().map(|v| format!("{v}\n")).collect();
    let p = env.write(&format!("{dataset}-{}.jsonl", items.len()), text);
    let out = env.ingest(&[
        "--dataset",
        dataset,
        "--format",
        "jsonl",
        "--split",
        "train",
        s(&p),
    ]);
    assert_eq!(out.code, 0, "ingest failed: {}", out.stderr);
}

/// A file's catalog row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub state: String,
    pub path: Option<String>,
    pub size: Option<i64>,
    pub sha256: Option<String>,
    pub etag: Option<String>,
    pub source_rank: Option<i64>,
    pub attempts: i64,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub next_retry_at: Option<i64>,
}

pub fn row(env: &Env, key: &str, role: &str) -> Option<Row> {
    use rusqlite::OptionalExtension;
    env.catalog()
        .query_row(
            "SELECT f.state, f.path, f.size, f.sha256, f.etag, f.source_rank, f.attempts, \
             f.error_class, f.error_message, f.next_retry_at FROM files f JOIN items i ON i.id = f.item_id \
             WHERE i.key = ?1 AND f.role = ?2",
            [key, role],
            |r| {
                Ok(Row {
                    state: r.get(0)?,
                    path: r.get(1)?,
                    size: r.get(2)?,
                    sha256: r.get(3)?,
                    etag: r.get(4)?,
                    source_rank: r.get(5)?,
                    attempts: r.get(6)?,
                    error_class: r.get(7)?,
                    error_message: r.get(8)?,
                    next_retry_at: r.get(9)?,
                })
            },
        )
        .optional()
        .unwrap()
}

/// A row that must exist.
pub fn must(env: &Env, key: &str, role: &str) -> Row {
    row(env, key, role).unwrap_or_else(|| panic!("no {role} row for {key}"))
}

/// Checks that a file is verified and stored with these bytes.
pub fn assert_stored(env: &Env, key: &str, role: &str, data: &[u8]) -> Row {
    let r = must(env, key, role);
    assert_eq!(r.state, "verified", "{key} {role}: {r:?}");
    let path = env.root.join(r.path.as_deref().expect("a path"));
    let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(sha256(&stored), sha256(data), "{key} {role} bytes");
    assert_eq!(r.sha256.as_deref(), Some(sha256(data).as_str()));
    assert_eq!(r.size, Some(data.len() as i64));
    r
}

/// Every file under `dir` (recursively).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn videos_and_covers_are_downloaded_verified_and_recorded() {
    let env = Env::new();
    let srv = Server::start();
    let cover =
        std::fs::read(crate::util::repo().join("tests/data/xinpianchang/example/99945958.jpeg"))
            .unwrap();
    let real =
        std::fs::read(crate::util::repo().join("tests/data/xinpianchang/example/99945958.mp4"))
            .unwrap();
    srv.file("/v/99945958.mp4", real.clone());
    srv.file("/c/99945958.jpg", cover.clone());
    let mut items = vec![json!({
        "id": "99945958",
        "urls": [srv.url("/v/99945958.mp4")],
        "cover_url": srv.url("/c/99945958.jpg"),
        "sha256": sha256(&real),
        "size": real.len(),
    })];
    let mut videos = vec![];
    for i in 0..12 {
        let data = fake_mp4(10_000 + i * 3_001, i as u64);
        srv.file(&format!("/v/f{i}.mp4"), data.clone());
        items.push(json!({"id": format!("f{i}"), "urls": [srv.url(&format!("/v/f{i}.mp4"))]}));
        videos.push(data);
    }
    ingest_items(&env, "xpc", &items);

    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let rep = out.json();
    assert_eq!(rep["planned"], 14);
    assert_eq!(rep["verified"], 14);
    assert_eq!(rep["failed_transient"], 0);
    assert_eq!(rep["sources"]["direct"], 14);
    assert!(rep["commits"].as_u64().unwrap() >= 1);

    let r = assert_stored(&env, "99945958", "video", &real);
    assert_eq!(r.path.as_deref(), Some("videos/xpc/99945958.mp4"));
    assert_eq!(r.source_rank, Some(0));
    assert!(r.etag.is_some());
    assert_eq!(r.attempts, 1);
    let c = assert_stored(&env, "99945958", "cover", &cover);
    assert_eq!(c.path.as_deref(), Some("covers/xpc/99945958.jpg"));
    for (i, data) in videos.iter().enumerate() {
        assert_stored(&env, &format!("f{i}"), "video", data);
    }
    // Nothing else in the root's file areas: no partial files, nothing stray.
    let stored: Vec<PathBuf> = files_under(&env.root.join("videos"))
        .into_iter()
        .chain(files_under(&env.root.join("covers")))
        .collect();
    assert_eq!(stored.len(), 14, "{stored:?}");
    // Every request asked for a range (a CDN may answer 403 without one).
    assert!(
        srv.log()
            .iter()
            .all(|(r, _)| r.header("range") == Some("bytes=0-"))
    );

    // status sees the files.
    let d = env.dataset("xpc");
    assert_eq!(d["states"]["verified"], 14);
    assert_eq!(d["roles"]["cover"]["verified"], 1);
    assert_eq!(d["states"]["pending"], 0);
    assert_eq!(
        d["stored_bytes"].as_u64().unwrap(),
        (real.len() + cover.len() + videos.iter().map(Vec::len).sum::<usize>()) as u64
    );

    // A run record in the catalog and in reports/.
    let run_id = rep["run_id"].as_str().unwrap().to_owned();
    let doc: Value = serde_json::from_slice(
        &std::fs::read(env.root.join(format!("reports/{run_id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(doc["command"], "fetch");
    assert_eq!(doc["result"]["verified"], 14);
    let status: String = env.query(&format!("SELECT status FROM runs WHERE id = '{run_id}'"));
    assert_eq!(status, "ok");

    // Again: nothing is due, nothing is asked.
    let before = srv.log().len();
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["planned"], 0);
    assert_eq!(srv.log().len(), before);
}

#[test]
fn a_cdn_that_refuses_requests_without_range_is_served() {
    let env = Env::new();
    let srv = Server::start();
    let data = fake_mp4(50_000, 7);
    let d = data.clone();
    srv.route("/xpc.mp4", move |r| {
        if r.header("range").is_none() {
            Reply::status(403)
        } else {
            Reply::file(r, &d, Some("\"x1\""))
        }
    });
    ingest_items(
        &env,
        "x",
        &[json!({"id": "v1", "urls": [srv.url("/xpc.mp4")]})],
    );
    let out = fetch(&env, &[], &["--dataset", "x"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_stored(&env, "v1", "video", &data);
}

#[test]
fn limits_splits_and_datasets_select_the_work() {
    let env = Env::new();
    let srv = Server::start();
    let mut a = vec![];
    for i in 0..6 {
        srv.file(&format!("/a{i}.mp4"), fake_mp4(2000, i));
        a.push(json!({"id": format!("a{i}"), "urls": [srv.url(&format!("/a{i}.mp4"))]}));
    }
    ingest_items(&env, "one", &a);
    srv.file("/b.mp4", fake_mp4(2000, 99));
    ingest_items(
        &env,
        "two",
        &[json!({"id": "b", "urls": [srv.url("/b.mp4")]})],
    );

    let out = fetch(&env, &[], &["--dataset", "one", "--limit", "2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["verified"], 2);
    let out = fetch(&env, &[], &["--dataset", "one", "--split", "val"]);
    assert_eq!(out.json()["planned"], 0);
    let out = fetch(&env, &[], &["--dataset", "two"]);
    assert_eq!(out.json()["verified"], 1);
    assert_eq!(env.dataset("one")["states"]["verified"], 2);
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.json()["verified"], 4);
    let out = fetch(&env, &[], &["--dataset", "nope"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("no dataset named 'nope'"),
        "{}",
        out.stderr
    );
}

#[test]
fn items_without_sources_are_counted_not_fetched() {
    let env = Env::new();
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("ingest a manifest first"),
        "{}",
        out.stderr
    );
    let list = env.write("train_pmv400.csv", "v0aaa.mp4,1\nv0bbb.mp4,2\n");
    let out = env.ingest(&["--dataset", "p", "--format", "pmv400", s(&list)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rep = out.json();
    assert_eq!(rep["planned"], 0);
    assert_eq!(rep["no_source"], 2);
    assert_eq!(rep["datasets"][0]["name"], "p");
    assert_eq!(rep["datasets"][0]["states"]["pending"], 2);
    let human = env.run(&["fetch"]);
    assert_eq!(human.code, 0);
    assert!(
        human.stdout.contains("2 item(s) have no source yet"),
        "{}",
        human.stdout
    );
}
