//! Bad input: every rejected row is reported as `file:line: reason`, nothing from it is
//! stored, and the rest is ingested (exit 3); `--strict` stores nothing at all.

use crate::util::{Env, s};

/// Ingests `text` as a PMV-400 train list and returns the run's output.
fn ingest_pmv(env: &Env, name: &str, text: &[u8]) -> crate::util::Out {
    let f = env.write(name, text);
    env.ingest(&["--dataset", "p", "--format", "pmv400", s(&f)])
}

#[test]
fn every_bad_row_is_named_and_the_rest_is_kept() {
    let env = Env::new();
    let mut text: Vec<u8> = vec![];
    let long = "x".repeat(129);
    for line in [
        "good1.mp4,1".to_string(),         // 1
        "a.mp4,1,2".to_string(),           // 2 column count
        "b.mp4,x".to_string(),             // 3 not an integer
        "c.mp4,400".to_string(),           // 4 out of range
        "c2.mp4,-1".to_string(),           // 5 negative
        "dir/evil.mp4,1".to_string(),      // 6 slash
        "dir\\evil.mp4,1".to_string(),     // 7 backslash
        "a..b.mp4,1".to_string(),          // 8 dot dot
        ".hidden.mp4,1".to_string(),       // 9 leading dot
        "nul\0id.mp4,1".to_string(),       // 10 NUL
        "esc\u{1b}[31m.mp4,1".to_string(), // 11 control character
        format!("{long}.mp4,1"),           // 12 too long
        "good2.mp4,2".to_string(),         // 13
    ] {
        text.extend_from_slice(line.as_bytes());
        text.push(b'\n');
    }
    text.extend_from_slice(b"caf\xe9.mp4,1\n"); // 14 not UTF-8
    text.extend_from_slice(b"good3.mp4,3\n"); // 15
    text.extend_from_slice(b"trunc.mp"); // 16 truncated last line

    let out = ingest_pmv(&env, "train_bad.csv", &text);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let rej = out.rejections();
    let f = env.path("train_bad.csv");
    let expected = [
        (
            2,
            "expected 2 comma-separated fields '<id>.mp4,<label>', found 3",
        ),
        (3, "label 'x' is not an integer"),
        (4, "label 400 is out of range: classes are 0..399"),
        (5, "label -1 is not a valid class id"),
        (6, "id contains '/'"),
        (7, "id contains '\\'"),
        (8, "id contains '..'"),
        (9, "id starts with '.'"),
        (10, "id contains a NUL byte"),
        (11, "id contains the control character U+001B"),
        (12, "id is 129 bytes long (at most 128)"),
        (14, "not valid UTF-8 (byte 0xe9 at byte 3 of the line)"),
        (
            16,
            "expected 2 comma-separated fields '<id>.mp4,<label>', found 1 (the last line has no line end: is the file truncated?)",
        ),
    ];
    assert_eq!(rej.len(), expected.len(), "{rej:#?}");
    for (got, (line, reason)) in rej.iter().zip(expected) {
        assert_eq!(*got, format!("{}:{line}: {reason}", f.display()));
    }
    let r = out.json();
    assert_eq!(r["rows"], 16);
    assert_eq!(r["accepted"], 3);
    assert_eq!(r["rejected"], 13);
    assert_eq!(r["rejections"].as_array().unwrap().len(), 13);
    let keys = env.strings("SELECT key FROM items ORDER BY key");
    assert_eq!(keys, vec!["good1", "good2", "good3"]);
    // The full list is kept beside the run report.
    let listed = std::fs::read_dir(env.root.join("reports"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-rejected.txt"))
        .expect("rejected rows file");
    assert_eq!(std::fs::read_to_string(listed).unwrap().lines().count(), 13);
    // Nothing is ever created from an id: no file or directory appeared in the root.
    for dir in ["videos", "covers", "shards", "quarantine"] {
        assert_eq!(std::fs::read_dir(env.root.join(dir)).unwrap().count(), 0);
    }
}

#[test]
fn crlf_and_a_byte_order_mark_are_accepted() {
    let env = Env::new();
    let out = ingest_pmv(
        &env,
        "train_crlf.csv",
        b"\xEF\xBB\xBFa.mp4,1\r\nb.mp4,2\r\n\r\nc.mp4,3",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        env.strings("SELECT key FROM items ORDER BY key"),
        vec!["a", "b", "c"]
    );
    assert_eq!(
        env.query::<String>("SELECT labels FROM items WHERE key = 'c'"),
        "3"
    );
}

#[test]
fn an_empty_manifest_is_rejected_and_removes_nothing() {
    let env = Env::new();
    assert_eq!(ingest_pmv(&env, "train.csv", b"a.mp4,1\nb.mp4,2\n").code, 0);
    // The same file, emptied (a failed download, a full disk): nothing may vanish.
    let out = ingest_pmv(&env, "train.csv", b"");
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("train.csv: the manifest is empty"),
        "{}",
        out.stderr
    );
    let r = out.json();
    assert_eq!(r["written"], false);
    assert_eq!(r["manifests"][0]["status"], "rejected");
    assert_eq!(env.dataset("p")["items"], 2);
    assert_eq!(env.dataset("p")["removed"], 0);
    let blank = ingest_pmv(&env, "train.csv", b"\n\n  \n");
    assert_eq!(blank.code, 3);
    assert!(
        blank.stderr.contains("no rows (only blank lines)"),
        "{}",
        blank.stderr
    );
    assert_eq!(env.dataset("p")["items"], 2);
}

#[test]
fn one_id_with_two_labels_rejects_both_lines() {
    let env = Env::new();
    let out = ingest_pmv(
        &env,
        "train_dup.csv",
        b"e.mp4,1\nok.mp4,1\ne.mp4,2\nsame.mp4,4\nsame.mp4,4\n",
    );
    assert_eq!(out.code, 3, "{}", out.stderr);
    let rej = out.rejections();
    assert_eq!(rej.len(), 2, "{rej:?}");
    let f = env.path("train_dup.csv");
    for (r, line) in rej.iter().zip([1, 3]) {
        assert!(
            r.starts_with(&format!(
                "{}:{line}: id 'e' has conflicting labels: ",
                f.display()
            )),
            "{r}"
        );
        assert!(
            r.contains("train_dup.csv:1") && r.contains("train_dup.csv:3"),
            "both lines named: {r}"
        );
    }
    assert_eq!(
        env.strings("SELECT key FROM items ORDER BY key"),
        vec!["ok", "same"]
    );
    let r = out.json();
    assert_eq!(
        r["repeated_rows"], 1,
        "the same id with the same label is merged, not rejected"
    );
    assert_eq!(r["accepted"], 3);
    assert_eq!(r["rejected"], 2);
}

#[test]
fn train_and_val_may_not_share_an_item() {
    let env = Env::new();
    let train = env.write("train_x.csv", "shared.mp4,1\nt.mp4,1\n");
    let val = env.write("val_x.csv", "v.mp4,2\nshared.mp4,1\n");
    let out = env.ingest(&["--dataset", "p", "--format", "pmv400", s(&train), s(&val)]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let rej = out.rejections();
    assert_eq!(rej.len(), 2, "{rej:?}");
    assert!(
        rej.iter()
            .all(|r| r.contains("id 'shared' is in the train split and an evaluation split"))
    );
    assert!(
        rej.iter()
            .all(|r| r.contains("train_x.csv:1") && r.contains("val_x.csv:2"))
    );
    assert_eq!(
        env.strings("SELECT key FROM items ORDER BY key"),
        vec!["t", "v"]
    );

    // Across runs: train is in the catalog; a val list that leaks one item is refused
    // for that row only, and the train membership is untouched.
    let env = Env::new();
    assert_eq!(
        env.ingest(&["--dataset", "p", "--format", "pmv400", s(&train)])
            .code,
        0
    );
    let out = env.ingest(&["--dataset", "p", "--format", "pmv400", s(&val)]);
    assert_eq!(out.code, 3);
    let rej = out.rejections();
    assert_eq!(rej.len(), 1, "{rej:?}");
    assert!(
        rej[0].starts_with(&format!("{}:2: id 'shared'", val.display())),
        "{}",
        rej[0]
    );
    assert!(
        rej[0].contains("train_x.csv:1"),
        "names the stored line: {}",
        rej[0]
    );
    let d = env.dataset("p");
    assert_eq!(d["splits"]["train"], 2);
    assert_eq!(d["splits"]["val"], 1);
}

#[test]
fn xinpianchang_rows_that_are_not_objects_or_name_unknown_labels() {
    let env = Env::new();
    let f = env.write(
        "info.json",
        "[1]\n\
         \"text\"\n\
         {\"mp4_id\": \"1\", \"video_label\": \"Cats\", \"mp4_download_url\": \"https://h.example/1.mp4\"}\n\
         {\"mp4_id\": \"2\", \"video_label\": \"Sea\", \"mp4_download_url\": \"gopher://h/2\"}\n\
         {\"mp4_id\": \"3\", \"video_label\": \"Sea\", \"mp4_time\": \"soon\"}\n\
         {\"mp4_id\": \"4\", \"video_label\": \"Sea\", \"mp4_download_url\": \"https://h.example/4.mp4\"}\n",
    );
    let out = env.ingest(&["--dataset", "x", "--format", "xinpianchang", s(&f)]);
    assert_eq!(out.code, 3);
    let rej = out.rejections();
    assert_eq!(rej.len(), 5, "{rej:?}");
    assert!(
        rej[0].ends_with(":1: a row must be a JSON object"),
        "{}",
        rej[0]
    );
    assert!(
        rej[1].ends_with(":2: a row must be a JSON object"),
        "{}",
        rej[1]
    );
    assert!(
        rej[2].ends_with(":3: unknown class name 'Cats'"),
        "{}",
        rej[2]
    );
    assert!(
        rej[3]
            .ends_with(":4: mp4_download_url: URL scheme 'gopher' is not allowed (http or https)"),
        "{}",
        rej[3]
    );
    assert!(
        rej[4].ends_with(":5: mp4_time 'soon' is not M:SS, H:MM:SS or seconds"),
        "{}",
        rej[4]
    );
    assert_eq!(env.strings("SELECT key FROM items"), vec!["4"]);
}

#[test]
fn strict_writes_nothing_when_any_row_is_rejected() {
    let env = Env::new();
    let f = env.write("train_s.csv", "a.mp4,1\nb.mp4,oops\n");
    let out = env.ingest(&["--dataset", "p", "--format", "pmv400", "--strict", s(&f)]);
    assert_eq!(out.code, 3);
    assert_eq!(out.json()["written"], false);
    assert!(
        out.stderr
            .contains("train_s.csv:2: label 'oops' is not an integer")
    );
    let st = env.status();
    assert_eq!(
        st["datasets"].as_array().unwrap().len(),
        0,
        "no dataset was created"
    );

    // An existing dataset is left exactly as it was.
    let good = env.write("train_s.csv", "a.mp4,1\nb.mp4,2\n");
    assert_eq!(
        env.ingest(&["--dataset", "p", "--format", "pmv400", s(&good)])
            .code,
        0
    );
    let f = env.write("train_s.csv", "a.mp4,5\nc.mp4,1\nb.mp4,2\nd.mp4,\n");
    let out = env.ingest(&["--dataset", "p", "--format", "pmv400", "--strict", s(&f)]);
    assert_eq!(out.code, 3);
    assert_eq!(
        env.strings("SELECT key || ':' || labels FROM items ORDER BY key"),
        vec!["a:1", "b:2"]
    );
    // Without --strict the same file is ingested, bad row aside.
    let out = env.ingest(&["--dataset", "p", "--format", "pmv400", s(&f)]);
    assert_eq!(out.code, 3);
    assert_eq!(
        env.strings("SELECT key || ':' || labels FROM items ORDER BY key"),
        vec!["a:5", "b:2", "c:1"]
    );
}

#[test]
fn links_files_reject_other_schemes_and_bad_ids() {
    let env = Env::new();
    let list = env.write("val_l.csv", "a.mp4,1\n");
    let links = env.write(
        "links.csv",
        "ftp://h/x?video_id=a\njavascript:alert(1)\nhttps://h.example/p?video_id=a%2F..%2Fb\nhttps://h.example/p?video_id=a\n",
    );
    let out = env.ingest(&[
        "--dataset",
        "p",
        "--format",
        "pmv400",
        "--links",
        s(&links),
        s(&list),
    ]);
    assert_eq!(out.code, 3);
    let rej = out.rejections();
    assert_eq!(rej.len(), 3, "{rej:?}");
    assert!(
        rej[0].contains("links.csv:1: URL scheme 'ftp' is not allowed"),
        "{}",
        rej[0]
    );
    assert!(
        rej[1].contains("links.csv:2: URL scheme 'javascript' is not allowed"),
        "{}",
        rej[1]
    );
    // An id is never percent-decoded into a path; this one is refused for its '..'.
    assert!(
        rej[2].contains("links.csv:3: id contains '..' (id taken from the URL)"),
        "{}",
        rej[2]
    );
    assert_eq!(
        env.strings("SELECT location FROM sources"),
        vec!["https://h.example/p?video_id=a"]
    );
}
