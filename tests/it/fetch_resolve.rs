//! `resolve --offline`: the real PMV-400 lists with play links built from a URL
//! template, and hostile input.

use serde_json::Value;

use crate::util::{Env, pmv_list, s};

#[test]
fn every_pmv400_play_link_resolves_offline_to_its_own_id() {
    let env = Env::new();
    let out = env.ingest(&[
        "--dataset",
        "pmv400",
        "--format",
        "pmv400",
        "--url-template",
        "https://aweme.snssdk.com/aweme/v1/play/?video_id={id}&ratio=720p&line=0",
        s(&pmv_list("train_pmv400.csv")),
        s(&pmv_list("val_pmv400.csv")),
        s(&pmv_list("test_pmv400.csv")),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = env.run(&["--json", "resolve", "--offline", "--dataset", "pmv400"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc = out.json();
    assert_eq!(doc["items"], 76_447);
    assert_eq!(doc["sources"], 76_447);
    assert_eq!(doc["resolved"], 76_447);
    assert_eq!(doc["kinds"]["douyin"], 76_447);
    assert_eq!(doc["canonical_id_differs_from_item"], 0);

    // One of them, as a user would debug it.
    let out = env.run(&[
        "--json",
        "resolve",
        "--offline",
        "https://aweme.snssdk.com/aweme/v1/play/?video_id=v0d00fg10000cc0bltrc77ud5sllkjug&ratio=720p&line=0",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let d = &out.json()["links"][0];
    assert_eq!(d["kind"], "douyin");
    assert_eq!(d["canonical_id"], "v0d00fg10000cc0bltrc77ud5sllkjug");
    assert!(
        d["download_url"]
            .as_str()
            .unwrap()
            .starts_with("https://aweme.snssdk.com/aweme/v1/play/")
    );
    assert_eq!(d["host"], "aweme.snssdk.com:443");
}

#[test]
fn hostile_links_are_refused_with_a_reason() {
    let env = Env::new();
    let local = env.write("clip.mp4", b"\0\0\0\x18ftypisom");
    let huge = format!("https://h.example/{}", "x".repeat(9000));
    let inputs = [
        "ftp://h.example/x.mp4",
        "javascript:alert(1)",
        "https://good.example@evil.example/x.mp4",
        "https://user:secret@h.example/x.mp4",
        huge.as_str(),
        "https://www.douyin.com/user/MS4wLjABAAAA",
        "https://aweme.snssdk.com/aweme/v1/play/?video_id=../../x",
        s(&local),
    ];
    let mut args = vec!["--json", "resolve", "--offline"];
    args.extend(inputs.iter().copied());
    let out = env.run(&args);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let docs = out.json()["links"].clone();
    let class = |i: usize| docs[i]["class"].as_str().unwrap_or("").to_owned();
    assert_eq!(class(0), "bad_url");
    assert_eq!(class(1), "bad_url");
    assert_eq!(class(2), "bad_url");
    assert!(docs[2]["error"].as_str().unwrap().contains("evil.example"));
    assert_eq!(class(3), "bad_url");
    assert!(!docs[3]["error"].as_str().unwrap().contains("secret"));
    assert_eq!(class(4), "bad_url");
    assert_eq!(class(5), "unsupported");
    assert_eq!(class(6), "unsupported");
    let l: &Value = &docs[7];
    assert_eq!(l["kind"], "local");
    assert!(l["error"].is_null(), "{l}");
    assert!(!env.root.exists(), "resolve writes nothing");
}
