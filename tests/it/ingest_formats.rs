//! xinpianchang (JSON lines and the upstream tree), VideoMAE lists and generic JSON lines.

use serde_json::json;

use crate::util::{Env, repo, s};

fn sample(name: &str) -> std::path::PathBuf {
    repo().join("tests/data/xinpianchang/example").join(name)
}

/// The upstream download tree with the real sample listed under two labels.
fn upstream_tree(env: &Env) -> std::path::PathBuf {
    for label in ["Sea", "City"] {
        let dir = env.path(&format!("MP4_download/{label}/99945958"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["99945958.txt", "99945958.mp4", "99945958.jpeg"] {
            if label == "City" && f != "99945958.txt" {
                continue; // only the .txt under the second label, as when a download failed
            }
            std::fs::copy(sample(f), dir.join(f)).unwrap();
        }
    }
    env.path("MP4_download")
}

#[test]
fn the_upstream_tree_gives_one_multi_label_item_with_local_files_first() {
    let env = Env::new();
    let tree = upstream_tree(&env);
    let out = env.ingest(&["--dataset", "xpc", "--format", "xinpianchang", s(&tree)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r = out.json();
    assert_eq!(r["rows"], 2);
    assert_eq!(r["items"]["new"], 1);
    assert_eq!(r["repeated_rows"], 1);
    assert_eq!(r["multi_label"], true);

    let (labels, text, duration): (String, String, f64) = env
        .catalog()
        .query_row(
            "SELECT labels, text, duration_s FROM items WHERE key = '99945958'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    // Ids by the upstream rule, the 31 names sorted: City = 11, Sea = 23.
    assert_eq!(labels, "11,23");
    assert_eq!(text, "Hong Kong Circa 2017, City B-Roll");
    assert_eq!(duration, 15.0);
    let video = env
        .strings("SELECT kind || ' ' || location FROM sources WHERE role = 'video' ORDER BY rank");
    assert_eq!(video.len(), 2);
    assert!(
        video[0].starts_with("local /") && video[0].ends_with("Sea/99945958/99945958.mp4"),
        "{video:?}"
    );
    assert_eq!(
        video[1],
        "direct https://p5-v1.xpccdn.com/099945958_main_xl.mp4"
    );
    let cover = env.strings("SELECT kind FROM sources WHERE role = 'cover' ORDER BY rank");
    assert_eq!(cover, vec!["local", "direct"]);
    let d = env.dataset("xpc");
    assert_eq!(d["classes"], 31);
    assert_eq!(
        d["splits"]["train"], 1,
        "99945958 hashes into train under 90/10"
    );
    assert_eq!(d["roles"]["cover"]["pending"], 1);

    // The same tree again is unchanged; a new .txt makes it change.
    let again = env.ingest(&["--dataset", "xpc", "--format", "xinpianchang", s(&tree)]);
    assert_eq!(again.json()["unchanged"], true);
}

#[test]
fn python_dict_files_are_parsed_never_evaluated() {
    let env = Env::new();
    let hostile = env.write(
        "t/Sea/1/1.txt",
        "{'mp4_id': __import__('os').system('touch /tmp/pmv-pwned'), 'mp4_download_url': ''}",
    );
    let out = env.ingest(&["--dataset", "x", "--format", "xinpianchang", s(&hostile)]);
    assert_eq!(out.code, 3);
    assert!(
        out.stderr.contains("not a Python dict literal"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("is a name, not a literal"),
        "{}",
        out.stderr
    );
    assert!(!std::path::Path::new("/tmp/pmv-pwned").exists());
}

#[test]
fn json_lines_merge_labels_and_split_by_a_stable_hash() {
    let env = Env::new();
    let row = |id: &str, label: &str| {
        json!({
            "mp4_id": id,
            "mp4_download_url": format!("https://p5-v1.xpccdn.com/{:0>9}_main_xl.mp4", id),
            "mp4_time": "1:05",
            "mp4_background_image_url": format!("https://p5-i1.xpccdn.com/{:0>9}_iconl.jpeg", id),
            "mp4_txt_brief": " 城市 航拍",
            "video_label": label,
        })
        .to_string()
    };
    let mut text = String::new();
    for i in 0..200 {
        text.push_str(&row(&(10_000_000 + i).to_string(), "Aerial"));
        text.push('\n');
    }
    text.push_str(&row("10000000", "City"));
    text.push('\n');
    text.push_str(&row("10000000", "Aerial")); // the same pair twice: merged
    text.push('\n');
    let f = env.write("multimodal_data_info.json", &text);
    let out = env.ingest(&["--dataset", "x", "--format", "xinpianchang", s(&f)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r = out.json();
    assert_eq!(r["items"]["new"], 200);
    assert_eq!(r["repeated_rows"], 2);
    let labels: String = env.query("SELECT labels FROM items WHERE key = '10000000'");
    assert_eq!(labels, "3,11");
    let duration: f64 = env.query("SELECT duration_s FROM items WHERE key = '10000001'");
    assert_eq!(duration, 65.0);
    let d = env.dataset("x");
    let train = d["splits"]["train"].as_u64().unwrap();
    let val = d["splits"]["val"].as_u64().unwrap();
    assert_eq!(train + val, 200);
    assert!(
        (160..=195).contains(&train),
        "train {train} of 200 under 90/10"
    );

    // Another root with other ratios and the rows in another order gives the same
    // assignment for 90/10, and a different one for 50/50.
    let env2 = Env::new();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.reverse();
    let f2 = env2.write("reordered.jsonl", lines.join("\n"));
    assert_eq!(
        env2.ingest(&["--dataset", "x", "--format", "xinpianchang", s(&f2)])
            .code,
        0
    );
    let q = "SELECT group_concat(i.key || m.split, ',') FROM (SELECT * FROM items ORDER BY key) i JOIN memberships m ON m.item_id = i.id";
    assert_eq!(env.query::<String>(q), env2.query::<String>(q));
    let env3 = Env::new();
    let f3 = env3.write("x.jsonl", &text);
    assert_eq!(
        env3.ingest(&[
            "--dataset",
            "x",
            "--format",
            "xinpianchang",
            "--split-ratios",
            "val=0.5,train=0.5",
            s(&f3)
        ])
        .code,
        0
    );
    assert_ne!(env.query::<String>(q), env3.query::<String>(q));
}

#[test]
fn videomae_lists_tolerate_space_runs_and_resolve_local_paths() {
    let env = Env::new();
    // Absolute paths outside the list's folder are allowed by the configuration.
    let k400 = env.path("k400");
    std::fs::create_dir_all(&k400).unwrap();
    let config = env.write("pmv.toml", "local_roots = [\"k400\"]\n");
    let list = env.write(
        "lists/train.csv",
        format!(
            "videos/abseiling/-3B32lodo2M_000059_000069.mp4 0\n\
             {k}/air_drumming/--nQbRBEz2s_000104_000114.mp4\t\t1\n\
             https://cdn.example/k400/arm%20wrestling/5JzkrOVhPOw_000027_000037.mp4    2\n\
             file://{k}/x/clip3.mp4 3\n",
            k = k400.display()
        ),
    );
    let mut c = env.command();
    c.args(["--config", s(&config), "--json", "ingest", "--dataset", "k"])
        .args(["--format", "videomae", s(&list)]);
    let out = crate::util::Out::of(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = env.strings(
        "SELECT i.key || ' ' || s.kind || ' ' || s.location FROM items i JOIN sources s ON s.item_id = i.id ORDER BY i.key",
    );
    let base = env.path("lists");
    assert_eq!(
        rows,
        vec![
            format!("--nQbRBEz2s_000104_000114 local {}/air_drumming/--nQbRBEz2s_000104_000114.mp4", k400.display()),
            format!("-3B32lodo2M_000059_000069 local {}/videos/abseiling/-3B32lodo2M_000059_000069.mp4", base.display()),
            "5JzkrOVhPOw_000027_000037 direct https://cdn.example/k400/arm%20wrestling/5JzkrOVhPOw_000027_000037.mp4".to_string(),
            format!("clip3 local {}/x/clip3.mp4", k400.display()),
        ]
    );
    let d = env.dataset("k");
    assert_eq!(d["splits"]["train"], 4, "split from the file name");
    assert_eq!(d["classes"], 4, "classes appear as labels are seen");

    // --base-dir moves relative paths.
    let env2 = Env::new();
    let list2 = env2.write("l/val.txt", "a/b.mp4 0\n");
    let data = env2.path("data/k400");
    std::fs::create_dir_all(&data).unwrap();
    let out = env2.ingest(&[
        "--dataset",
        "k",
        "--format",
        "videomae",
        "--base-dir",
        s(&data),
        s(&list2),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        env2.strings("SELECT location FROM sources"),
        vec![format!("{}/a/b.mp4", data.display())]
    );
    // A base directory that is not there is an error before anything is read.
    let out = env2.ingest(&[
        "--dataset",
        "k",
        "--format",
        "videomae",
        "--base-dir",
        "/nonexistent/k400",
        s(&list2),
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("/nonexistent/k400"), "{}", out.stderr);
}

#[test]
fn videomae_rejects_rawframes_lists_and_foreign_schemes() {
    let env = Env::new();
    let list = env.write(
        "val.txt",
        "frames/a 300 0\n\
         ftp://h/x.mp4 1\n\
         ok.mp4 2\n\
         one-field-only\n",
    );
    let out = env.ingest(&["--dataset", "k", "--format", "videomae", s(&list)]);
    assert_eq!(out.code, 3);
    let rej = out.rejections();
    assert_eq!(rej.len(), 3, "{rej:?}");
    assert!(rej[0].ends_with("val.txt:1: 3 fields '<path> <frames> <label>': this is a rawframes list; pmv-data reads video lists '<path> <label>'"), "{}", rej[0]);
    assert!(
        rej[1].contains(
            "val.txt:2: URL scheme 'ftp' is not allowed (http or https, or a local path)"
        ),
        "{}",
        rej[1]
    );
    assert!(
        rej[2].contains("val.txt:4: expected 2 fields"),
        "{}",
        rej[2]
    );
    assert_eq!(env.dataset("k")["items"], 1);
}

#[test]
fn generic_json_lines_follow_the_schema() {
    let env = Env::new();
    let classes = env.write("classes.txt", "cat\ndog\nbird\n");
    let rows = [
        json!({"id": "a", "urls": ["https://h.example/a.mp4", "https://mirror.example/a.mp4"], "label": "dog", "split": "train", "text": "t", "cover_url": "https://h.example/a.jpg", "sha256": "AB".repeat(32), "size": 10, "duration": 3.5}).to_string(),
        json!({"id": "b", "urls": ["local/b.mp4"], "label": 2, "split": "validation"}).to_string(),
        json!({"id": "c", "urls": ["https://h.example/c.mp4"], "lable": "cat"}).to_string(),
        json!({"id": "d", "urls": ["https://h.example/d.mp4"], "label": "cat", "labels": ["dog"]}).to_string(),
        json!({"id": "e", "urls": ["https://h.example/e.mp4"], "labels": ["cat", "dog"]}).to_string(),
        json!({"id": "f", "urls": "https://h.example/f.mp4", "label": "cat"}).to_string(),
        json!({"id": "g", "label": "horse"}).to_string(),
        json!({"id": "h", "sha256": "xyz"}).to_string(),
        "[1, 2]".to_string(),
        json!({"id": "j"}).to_string(),
        "{\"id\": \"i\", ".to_string(),
    ];
    let f = env.write("items.jsonl", rows.join("\n"));
    let out = env.ingest(&[
        "--dataset",
        "g",
        "--format",
        "jsonl",
        "--classes",
        s(&classes),
        s(&f),
    ]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let rej = out.rejections();
    let expect = [
        ("items.jsonl:3:", "does not match the schema"),
        ("items.jsonl:4:", "does not match the schema"),
        (
            "items.jsonl:5:",
            "2 labels given, but the dataset is single-label",
        ),
        ("items.jsonl:6:", "at /urls"),
        ("items.jsonl:7:", "unknown class name 'horse'"),
        ("items.jsonl:8:", "at /sha256"),
        (
            "items.jsonl:9:",
            "a row must be a JSON object, not an array",
        ),
        ("items.jsonl:11:", "invalid JSON"),
    ];
    assert_eq!(rej.len(), expect.len(), "{rej:?}");
    for (line, (place, what)) in rej.iter().zip(expect) {
        assert!(
            line.contains(place) && line.contains(what),
            "{line} should name {place} and say {what}"
        );
    }
    assert!(rej[7].contains("is the file truncated?"), "{}", rej[7]);
    let a: (String, String, String, i64, f64) = env
        .catalog()
        .query_row(
            "SELECT labels, expected_sha256, text, expected_size, duration_s FROM items WHERE key = 'a'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(a, ("1".into(), "ab".repeat(32), "t".into(), 10, 3.5));
    assert_eq!(
        env.strings(
            "SELECT kind FROM sources WHERE item_id = (SELECT id FROM items WHERE key = 'b')"
        ),
        vec!["local"]
    );
    let d = env.dataset("g");
    assert_eq!(d["items"], 3, "a, b and j");
    assert!(d["splits"]["val"].as_u64().unwrap() >= 1);
    let j_labels: String = env.query("SELECT labels FROM items WHERE key = 'j'");
    assert_eq!(j_labels, "", "unlabeled items are allowed (pre-training)");
}

#[test]
fn json_lines_can_be_multi_label_when_asked() {
    let env = Env::new();
    let f = env.write(
        "m.jsonl",
        format!(
            "{}\n",
            json!({"id": "e", "urls": ["https://h.example/e.mp4"], "labels": ["cat", "dog"]})
        ),
    );
    let out = env.ingest(&[
        "--dataset",
        "m",
        "--format",
        "jsonl",
        "--multi-label",
        s(&f),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(env.query::<String>("SELECT labels FROM items"), "0,1");
    let names = env.strings("SELECT name FROM classes ORDER BY class_id");
    assert_eq!(names, vec!["cat", "dog"]);
    // The dataset stays multi-label; asking for single-label now is an error.
    let out = env.ingest(&[
        "--dataset",
        "m",
        "--format",
        "jsonl",
        "--single-label",
        s(&f),
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("dataset 'm' is multi-label"),
        "{}",
        out.stderr
    );
}
