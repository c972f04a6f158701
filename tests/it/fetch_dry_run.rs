//! `fetch --dry-run`: the files a fetch would start, in its order, with the source
//! each would try first and what a partial file would resume; honouring --dataset,
//! --split, --limit and --retry-failed; with no request to any server and the root
//! (catalog included) byte-for-byte as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::fetch::{fetch, files_under, ingest_items, must};
use crate::httpd::{Delivery, Reply, Server, fake_mp4};
use crate::util::Env;

/// Every file under the root with its bytes.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_under(root)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// `(item, role)` of each listed file, in order.
fn listed(doc: &Value) -> Vec<(String, String)> {
    doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["item"].as_str().unwrap().to_owned(),
                f["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn dry_run_lists_what_fetch_would_start_without_a_request_or_a_write() {
    let env = Env::new();
    let srv = Server::start();
    for id in ["a", "c", "d"] {
        srv.file(&format!("/v/{id}.mp4"), fake_mp4(4_000, 1));
    }
    // b's server always drops the connection after 3000 bytes: its fetch fails
    // transiently and keeps a partial file it can resume (the answer has an ETag).
    let big = fake_mp4(200_000, 2);
    srv.route("/v/b.mp4", move |r| {
        Reply::file(r, &big, Some("\"b1\"")).delivery(Delivery::CutAfter(3_000))
    });
    let item = |id: &str, cover: bool| {
        let mut v = json!({"id": id, "urls": [srv.url(&format!("/v/{id}.mp4"))]});
        if cover {
            v["cover_url"] = srv.url(&format!("/c/{id}.jpg")).into();
        }
        v
    };
    ingest_items(
        &env,
        "one",
        &[item("a", false), item("b", false), item("c", true)],
    );
    ingest_items(
        &env,
        "two",
        &[json!({"id": "d", "urls": [srv.url("/v/d.mp4"), srv.url("/v/d2.mp4")]})],
    );
    let out = fetch(&env, &[], &["--dataset", "one", "--limit", "2"]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(must(&env, "a", "video").state, "verified");
    assert_eq!(must(&env, "b", "video").state, "failed_transient");
    let partial = env.root.join("videos/one/b.partial");
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept >= 3_000, "{kept}");

    let before = snapshot(&env.root);
    let requests = srv.log().len();
    let dry = |args: &[&str]| {
        let mut all = vec!["--dry-run"];
        all.extend_from_slice(args);
        let out = fetch(&env, &[], &all);
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        out.json()
    };

    // Everything due, dataset by dataset in item order, video before cover; b waits
    // for its retry time.
    let all = dry(&[]);
    assert_eq!(all["dry_run"], true);
    assert_eq!(
        listed(&all),
        pairs(&[("c", "video"), ("c", "cover"), ("d", "video")])
    );
    assert_eq!(all["planned"], 3);
    let c = &all["files"][0];
    assert_eq!(c["dataset"], "one");
    assert_eq!(c["kind"], "direct");
    assert_eq!(c["rank"], 0);
    assert_eq!(c["download_url"], srv.url("/v/c.mp4"));
    assert_eq!(c["state"], Value::Null, "never tried");
    assert_eq!(c["partial_bytes"], Value::Null);
    assert_eq!(c["resume_bytes"], 0);
    // d has a second source, tried if the first fails.
    let d = &all["files"][2];
    assert_eq!(d["dataset"], "two");
    assert_eq!(d["rank"], 0);
    assert_eq!(d["fallbacks"], 1);
    assert_eq!(d["error"], Value::Null);

    // --retry-failed: b first (planning order), resuming what its partial file holds.
    let retry = dry(&["--retry-failed", "--dataset", "one"]);
    assert_eq!(
        listed(&retry),
        pairs(&[("b", "video"), ("c", "video"), ("c", "cover")])
    );
    let b = &retry["files"][0];
    assert_eq!(b["state"], "failed_transient");
    assert_eq!(b["partial_bytes"], kept);
    assert_eq!(b["resume_bytes"], kept);
    assert_eq!(retry["resume_bytes"], kept);

    // --limit counts items; --split selects (every item here is in train).
    let limited = dry(&["--retry-failed", "--limit", "1"]);
    assert_eq!(listed(&limited), pairs(&[("b", "video")]));
    assert!(listed(&dry(&["--split", "val"])).is_empty());
    assert_eq!(
        listed(&dry(&["--dataset", "two"])),
        pairs(&[("d", "video")])
    );

    // The text form: one line per file and a closing line.
    let out = env.run(&["fetch", "--dry-run", "--retry-failed", "--dataset", "one"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert!(
        lines[0].starts_with("one/b video direct #0 "),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(" resume "), "{}", lines[0]);
    assert!(
        lines[1].starts_with("one/c video direct #0 "),
        "{}",
        lines[1]
    );
    assert!(lines[3].starts_with("dry run: 3 file(s)"), "{}", lines[3]);

    // A dataset that is not there is an error, as for a fetch.
    let out = fetch(&env, &[], &["--dry-run", "--dataset", "nope"]);
    assert_ne!(out.code, 0);

    assert_eq!(srv.log().len(), requests, "a dry run sent a request");
    let after = snapshot(&env.root);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "a dry run added or removed files"
    );
    assert!(before == after, "a dry run changed a file");
}
