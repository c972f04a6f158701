//! `resolve --offline`: the real PMV-400 lists with play links built from a URL
//! template, hostile input, and Douyin links as people copy them (the app's share text,
//! user pages), in `resolve` and in manifests.

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

/// What the app's share button copies: free text around one share link.
const SHARE_TEXT: &str = "7.43 pda:/ 让你在几秒钟之内记住我 https://v.douyin.com/L5pbfdP/ \
                          复制此链接，打开Dou音搜索，直接观看视频！";
/// A user's page showing one of the user's videos.
const USER_PAGE: &str = "https://www.douyin.com/user/MS4wLjABAAAAx9Yl_kZ3ldSFXq4Q?\
                         from_tab_name=main&vid=7301234567890123456";

#[test]
fn resolve_reads_douyin_share_text_and_user_pages() {
    let env = Env::new();
    let two_links = format!("{SHARE_TEXT} https://v.douyin.com/Zx9kPq2/");
    let no_link = "7.43 pda:/ 让你在几秒钟之内记住我 复制此链接，打开Dou音搜索，直接观看视频！";
    let repeated = format!("{SHARE_TEXT} https://v.douyin.com/L5pbfdP/");
    let out = env.run(&[
        "--json",
        "resolve",
        "--offline",
        SHARE_TEXT,
        USER_PAGE,
        &two_links,
        no_link,
        &repeated,
    ]);
    assert_eq!(out.code, 3, "two inputs are refused: {}", out.stderr);
    let docs = out.json()["links"].clone();
    let share = &docs[0];
    assert_eq!(share["input"], SHARE_TEXT);
    assert_eq!(
        share["location"], "https://v.douyin.com/L5pbfdP/",
        "{share}"
    );
    assert_eq!(share["kind"], "douyin");
    assert!(share["error"].is_null(), "{share}");
    assert_eq!(share["lookup_url"], "https://v.douyin.com/L5pbfdP/");
    let user = &docs[1];
    assert_eq!(user["kind"], "douyin");
    assert!(user["error"].is_null(), "{user}");
    assert_eq!(user["canonical_id"], "7301234567890123456", "{user}");
    assert!(
        user["lookup_url"]
            .as_str()
            .unwrap()
            .contains("7301234567890123456"),
        "{user}"
    );
    assert_eq!(docs[2]["class"], "bad_url");
    let e = docs[2]["error"].as_str().unwrap();
    assert!(e.contains("2 different links"), "{e}");
    assert!(e.contains("Zx9kPq2") && e.contains("L5pbfdP"), "{e}");
    assert_eq!(docs[3]["class"], "bad_url");
    assert!(
        docs[3]["error"]
            .as_str()
            .unwrap()
            .contains("without a link"),
        "{}",
        docs[3]
    );
    // The same link twice is one link.
    assert_eq!(docs[4]["location"], "https://v.douyin.com/L5pbfdP/");
    assert!(docs[4]["error"].is_null(), "{}", docs[4]);

    // The text output names the link it found.
    let out = env.run(&["resolve", "--offline", SHARE_TEXT]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("location      https://v.douyin.com/L5pbfdP/"),
        "{}",
        out.stdout
    );
}

#[test]
fn manifests_store_the_link_of_douyin_share_text_and_user_pages() {
    let env = Env::new();
    let two_links = format!("{SHARE_TEXT} https://v.douyin.com/Zx9kPq2/");
    let rows = [
        serde_json::json!({ "id": "a", "urls": [SHARE_TEXT] }),
        serde_json::json!({ "id": "b", "urls": [USER_PAGE] }),
        serde_json::json!({ "id": "c", "urls": [two_links] }),
    ];
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    let f = env.write("douyin.jsonl", text);
    let out = env.ingest(&["--dataset", "dy", "--format", "jsonl", s(&f)]);
    assert_eq!(out.code, 3, "row 3 is refused: {}", out.stderr);
    let rejections = out.rejections();
    assert_eq!(rejections.len(), 1, "{}", out.stderr);
    assert!(
        rejections[0].starts_with(&format!("{}:3:", f.display()))
            && rejections[0].contains("2 different links"),
        "{}",
        rejections[0]
    );
    let stored = env.strings(
        "SELECT i.key || ' ' || s.kind || ' ' || s.location FROM sources s \
         JOIN items i ON i.id = s.item_id WHERE s.role = 'video' ORDER BY i.key",
    );
    assert_eq!(
        stored,
        [
            "a douyin https://v.douyin.com/L5pbfdP/".to_owned(),
            format!("b douyin {USER_PAGE}"),
        ]
    );

    // A links file (CSV, the URL first): the item id is the link's.
    let list = env.write("train.csv", "7301234567890123456.mp4,3\nL5pbfdP.mp4,4\n");
    let links = env.write(
        "links.csv",
        format!("url,note\n{USER_PAGE},user page\n\"{SHARE_TEXT}\",share text\n"),
    );
    let out = env.ingest(&[
        "--dataset",
        "pmv",
        "--format",
        "pmv400",
        "--links",
        s(&links),
        s(&list),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let stored = env.strings(
        "SELECT i.key || ' ' || s.location FROM sources s JOIN items i ON i.id = s.item_id \
         JOIN datasets d ON d.id = i.dataset_id WHERE d.name = 'pmv' ORDER BY i.key",
    );
    assert_eq!(
        stored,
        [
            format!("7301234567890123456 {USER_PAGE}"),
            "L5pbfdP https://v.douyin.com/L5pbfdP/".to_owned(),
        ]
    );
}
