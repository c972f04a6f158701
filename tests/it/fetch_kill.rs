//! A fetch killed with SIGKILL mid-transfer, several times, then run to the end:
//! nothing is lost, partial files are resumed (not restarted), and no file ever sits
//! under its final name with bytes that are not the right ones.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::fetch::{FAST, files_under, ingest_items, row};
use crate::httpd::{Delivery, Reply, Server, fake_mp4, sha256};
use crate::util::Env;

/// Checks the invariants a kill at any instant must keep.
fn consistent(env: &Env, expected: &HashMap<String, String>) {
    for path in files_under(&env.root.join("videos/t")) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".partial") {
            continue;
        }
        let id = name
            .strip_suffix(".mp4")
            .unwrap_or_else(|| panic!("unexpected file {name}"));
        let got = sha256(&std::fs::read(&path).unwrap());
        assert_eq!(
            &got, &expected[id],
            "{name} sits under its final name with wrong bytes"
        );
    }
    for (id, sha) in expected {
        if let Some(r) = row(env, id, "video") {
            assert!(
                ["downloading", "verified"].contains(&r.state.as_str()),
                "{id}: {r:?}"
            );
            if r.state == "verified" {
                let p = env.root.join(r.path.unwrap());
                assert_eq!(&sha256(&std::fs::read(&p).unwrap()), sha, "{id}");
                assert_eq!(r.sha256.as_deref(), Some(sha.as_str()));
            }
        }
    }
    let check: String = env.query("PRAGMA integrity_check");
    assert_eq!(check, "ok");
}

#[test]
fn sigkill_mid_transfer_loses_nothing_and_partials_are_resumed() {
    let env = Env::new();
    let srv = Server::start();
    let mut items = vec![];
    let mut expected = HashMap::new();
    for i in 0..6 {
        let data = fake_mp4(4 << 20, 40 + i);
        expected.insert(format!("k{i}"), sha256(&data));
        srv.route(&format!("/k{i}.mp4"), move |r| {
            Reply::file(r, &data, Some("\"v1\"")).delivery(Delivery::Drip {
                chunk: 64 << 10,
                every: Duration::from_millis(20),
            })
        });
        items.push(json!({"id": format!("k{i}"), "urls": [srv.url(&format!("/k{i}.mp4"))]}));
    }
    ingest_items(&env, "t", &items);

    let spawn = || {
        let mut cmd = env.command();
        for (k, v) in FAST {
            cmd.env(k, v);
        }
        cmd.env("PMV_FETCH_CONCURRENCY", "3")
            .args(["--json", "fetch"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn pmv-data fetch")
    };
    for round in 0..4 {
        let mut child = spawn();
        std::thread::sleep(Duration::from_millis(450 + round * 170));
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        consistent(&env, &expected);
    }
    let out = crate::fetch::fetch(&env, &[("PMV_FETCH_CONCURRENCY", "3".into())], &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    consistent(&env, &expected);
    for (id, sha) in &expected {
        let r = row(&env, id, "video").unwrap();
        assert_eq!(r.state, "verified", "{id}");
        assert_eq!(r.sha256.as_deref(), Some(sha.as_str()));
    }
    let left: Vec<_> = files_under(&env.root.join("videos"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // Later runs continued partial files where the killed ones stopped.
    let resumed = srv
        .log()
        .iter()
        .filter(|(r, status)| {
            r.range_from().unwrap_or(0) > 0
                && *status == 206
                && r.header("if-range") == Some("\"v1\"")
        })
        .count();
    assert!(resumed > 0, "no partial file was resumed");
    // The killed runs that had started are recorded as interrupted (a run killed before
    // it took the lock left no record), and none is left `running`.
    let interrupted: i64 =
        env.query("SELECT count(*) FROM runs WHERE command = 'fetch' AND status = 'interrupted'");
    assert!((1..=4).contains(&interrupted), "{interrupted}");
    let running: i64 = env.query("SELECT count(*) FROM runs WHERE status = 'running'");
    assert_eq!(running, 0);
}
