//! Changed manifests: new, updated, removed and restored items; nothing is deleted.

use std::path::PathBuf;

use pmv_catalog::Catalog;
use pmv_core::report::Silent;
use pmv_pipeline::ingest::{IngestOptions, ingest};
use pmv_pipeline::manifest::{Format, SplitRatios};

use crate::util::{Env, s};

fn ingest_list(env: &Env, f: &std::path::Path) -> serde_json::Value {
    let out = env.ingest(&["--dataset", "p", "--format", "pmv400", s(f)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.json()
}

#[test]
fn a_changed_manifest_adds_updates_and_removes() {
    let env = Env::new();
    let f = env.write("train_c.csv", "a.mp4,1\nb.mp4,2\nc.mp4,3\n");
    let r = ingest_list(&env, &f);
    assert_eq!(r["items"]["new"], 3);

    // b changes label, c vanishes, d is new; a stays.
    env.write("train_c.csv", "a.mp4,1\nb.mp4,7\nd.mp4,4\n");
    let r = ingest_list(&env, &f);
    let items = &r["items"];
    assert_eq!(
        (
            items["new"].as_u64(),
            items["updated"].as_u64(),
            items["removed"].as_u64(),
            items["unchanged"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(
        env.strings("SELECT key || ':' || labels || ':' || state FROM items ORDER BY key"),
        vec!["a:1:active", "b:7:active", "c:3:removed", "d:4:active"]
    );
    let d = env.dataset("p");
    assert_eq!(d["items"], 3);
    assert_eq!(d["removed"], 1);

    // c comes back: restored with its old id, so anything recorded about it survives.
    let c_id: i64 = env.query("SELECT id FROM items WHERE key = 'c'");
    env.write("train_c.csv", "a.mp4,1\nb.mp4,7\nd.mp4,4\nc.mp4,3\n");
    let r = ingest_list(&env, &f);
    assert_eq!(r["items"]["restored"], 1);
    assert_eq!(
        env.query::<i64>("SELECT id FROM items WHERE key = 'c'"),
        c_id
    );
    assert_eq!(env.dataset("p")["removed"], 0);
}

#[test]
fn an_item_stays_while_any_manifest_lists_it() {
    let env = Env::new();
    let val = env.write("val_m.csv", "a.mp4,1\nb.mp4,2\n");
    let test = env.write("test_m.csv", "a.mp4,1\n");
    let out = env.ingest(&["--dataset", "p", "--format", "pmv400", s(&val), s(&test)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // a leaves val but is still in test; b leaves val and nothing lists it.
    env.write("val_m.csv", "c.mp4,3\n");
    let out = env.ingest(&["--dataset", "p", "--format", "pmv400", s(&val)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["items"]["removed"], 1);
    assert_eq!(
        env.strings("SELECT key || ':' || state FROM items ORDER BY key"),
        vec!["a:active", "b:removed", "c:active"]
    );
    let d = env.dataset("p");
    assert_eq!(d["splits"]["test"], 1);
    assert_eq!(d["splits"]["val"], 1);
}

#[test]
fn multi_label_items_lose_only_the_labels_of_the_manifest_that_dropped_them() {
    let env = Env::new();
    let one = env.write(
        "one.jsonl",
        "{\"mp4_id\": \"9\", \"video_label\": \"Sea\"}\n",
    );
    let two = env.write(
        "two.jsonl",
        "{\"mp4_id\": \"9\", \"video_label\": \"City\"}\n",
    );
    let out = env.ingest(&[
        "--dataset",
        "x",
        "--format",
        "xinpianchang",
        s(&one),
        s(&two),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(env.query::<String>("SELECT labels FROM items"), "11,23");
    env.write(
        "two.jsonl",
        "{\"mp4_id\": \"8\", \"video_label\": \"City\"}\n",
    );
    let out = env.ingest(&["--dataset", "x", "--format", "xinpianchang", s(&two)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        env.query::<String>("SELECT labels FROM items WHERE key = '9'"),
        "23"
    );
    assert_eq!(
        env.query::<String>("SELECT state FROM items WHERE key = '9'"),
        "active"
    );
}

#[test]
fn a_rejected_row_does_not_make_its_item_vanish() {
    let env = Env::new();
    let f = env.write("train_r.csv", "a.mp4,1\nb.mp4,2\n");
    ingest_list(&env, &f);
    env.write("train_r.csv", "a.mp4,1\nb.mp4,two\n");
    let out = env.ingest(&["--dataset", "p", "--format", "pmv400", s(&f)]);
    assert_eq!(out.code, 3);
    assert_eq!(out.json()["items"]["removed"], 0);
    assert_eq!(
        env.strings("SELECT key || ':' || labels || ':' || state FROM items ORDER BY key"),
        vec!["a:1:active", "b:2:active"]
    );
}

/// The library with a tiny sort budget spills to disk many times and must give the
/// catalog the in-memory run gives.
#[test]
fn spilling_to_disk_gives_the_same_catalog() {
    let env = Env::new();
    let mut text = String::new();
    for i in 0..20_000u32 {
        // Ids out of order, some listed twice.
        let id = (i * 7919) % 17_000;
        text.push_str(&format!("{{\"mp4_id\": \"{id}\", \"video_label\": \"{}\", \"mp4_download_url\": \"https://h.example/{id}.mp4\", \"mp4_txt_brief\": \"item {id}\"}}\n", ["Sea", "City", "Beach"][(i % 3) as usize]));
    }
    let f = env.write("big.jsonl", &text);
    let dump = |budget: usize| -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let mut cat = Catalog::open(&dir.path().join("catalog.sqlite")).unwrap();
        let opts = IngestOptions {
            dataset: "x".into(),
            format: Format::Xinpianchang,
            inputs: vec![f.clone()],
            split: None,
            classes_file: None,
            links_file: None,
            url_template: None,
            ratios: SplitRatios::default(),
            multi_label: None,
            base_dir: None,
            local_roots: vec![],
            strict: false,
            force: false,
            tmp_dir: dir.path().join("tmp"),
            memory_budget: budget,
        };
        let report = ingest(&mut cat, &opts, &Silent, &mut |_| {}).unwrap();
        assert_eq!(report.items.new, 17_000);
        assert!(!dir.path().join("tmp").exists(), "run files are removed");
        let conn = rusqlite::Connection::open(cat.path()).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT i.key || '|' || i.labels || '|' || i.fingerprint || '|' || m.split || '|' || m.line
                 FROM items i JOIN memberships m ON m.item_id = i.id ORDER BY i.key",
            )
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let small = dump(16 * 1024);
    let large = dump(1 << 30);
    assert_eq!(small.len(), 17_000);
    assert_eq!(small, large);
}

/// An id's file stem never escapes the root, whatever the manifest says.
#[test]
fn hostile_ids_never_name_files() {
    let stems: Vec<PathBuf> = ["../../etc/passwd", "a/b", "..", "ok"]
        .iter()
        .filter_map(|id| pmv_pipeline::manifest::ItemId::parse(id).ok())
        .map(|id| PathBuf::from(id.file_stem().into_owned()))
        .collect();
    assert_eq!(stems, vec![PathBuf::from("ok")]);
}

/// SIGKILL at any moment of an ingest leaves the catalog as it was before it; the next
/// run finds no trace of the killed one but an `interrupted` run record.
#[test]
fn a_killed_ingest_leaves_the_catalog_as_it_was() {
    let env = Env::new();
    let mut text = String::new();
    for i in 0..60_000u32 {
        text.push_str(&format!(
            "{{\"mp4_id\": \"{i}\", \"video_label\": \"Sea\", \"mp4_download_url\": \"https://h.example/{i}.mp4\"}}\n"
        ));
    }
    let f = env.write("big.jsonl", &text);
    let small = env.write(
        "small.jsonl",
        "{\"mp4_id\": \"x\", \"video_label\": \"Sea\"}\n",
    );
    assert_eq!(
        env.ingest(&["--dataset", "x", "--format", "xinpianchang", s(&small)])
            .code,
        0
    );

    let runs = || env.query::<i64>("SELECT count(*) FROM runs");
    let mut killed_after_start = 0;
    for delay_ms in [30u64, 120, 400] {
        let runs_before = runs();
        let mut child = env
            .command()
            .args([
                "ingest",
                "--dataset",
                "x",
                "--format",
                "xinpianchang",
                s(&f),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        let items: i64 = env.query("SELECT count(*) FROM items");
        if status.success() {
            assert_eq!(items, 60_001, "a finished ingest is complete");
            break;
        }
        assert_eq!(
            items, 1,
            "a killed ingest wrote nothing (killed after {delay_ms} ms)"
        );
        if runs() > runs_before {
            killed_after_start += 1;
        }
    }
    let out = env.ingest(&["--dataset", "x", "--format", "xinpianchang", s(&f)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(env.query::<i64>("SELECT count(*) FROM items"), 60_001);
    let interrupted: i64 = env.query("SELECT count(*) FROM runs WHERE status = 'interrupted'");
    let running: i64 = env.query("SELECT count(*) FROM runs WHERE status = 'running'");
    assert_eq!(running, 0);
    assert_eq!(
        interrupted, killed_after_start,
        "killed runs are recorded as interrupted"
    );
    assert!(
        !env.root.join("tmp").join("ingest").exists(),
        "sort runs of killed ingests are cleared"
    );
}
