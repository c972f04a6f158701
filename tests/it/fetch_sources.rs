//! The resolvers against servers that answer as each source does: Douyin share links,
//! lookups and play links; a OneDrive shared folder with pages and hashes; local files
//! and import folders; PMV-400 with the OneDrive mirror as second source.

use serde_json::{Value, json};

use crate::fetch::{assert_stored, fetch, files_under, ingest_items, must};
use crate::httpd::{Reply, Server, fake_mp4};
use crate::onedrive::Drive;
use crate::util::{Env, s};

/// A server standing in for Douyin: share links, both lookups, play links, a CDN.
fn douyin_server() -> (Server, Vec<(String, String)>) {
    let srv = Server::start();
    srv.prefix("/short/", |r| {
        let code = r
            .path()
            .trim_start_matches("/short/")
            .trim_end_matches('/')
            .to_owned();
        match code.as_str() {
            "AbC111" => Reply::redirect(
                302,
                "https://www.iesdouyin.com/share/video/111/?region=CN&mid=7&u_code=x",
            ),
            "Gone" => Reply::redirect(302, "https://www.douyin.com/"),
            _ => Reply::status(404),
        }
    });
    srv.route("/dy/web/api/v2/aweme/slidesinfo/", |r| {
        assert_eq!(r.query("request_source").as_deref(), Some("200"));
        let ids = r.query("aweme_ids").unwrap_or_default();
        match ids.as_str() {
            "%5B111%5D" => Reply::json(&json!({
                "status_code": 0,
                "aweme_details": [{
                    "aweme_id": "111",
                    "desc": "a portrait video",
                    "video": {"play_addr": {
                        "uri": "v0111",
                        "url_list": ["https://aweme.snssdk.com/aweme/v1/playwm/?video_id=v0111&ratio=720p&line=0"]
                    }}
                }]
            })),
            "%5B222%5D" => Reply::json(&json!({
                "status_code": 0,
                "aweme_details": [],
                "filter_list": [{"aweme_id": "222", "filter_reason": "status_deleted", "detail_msg": "作品已删除"}]
            })),
            "%5B444%5D" => Reply::json(&json!({
                "status_code": 0,
                "aweme_details": [],
                "filter_list": [{"aweme_id": "444", "filter_reason": "status_self_see", "detail_msg": ""}]
            })),
            // The endpoint is down for this one: the share page must answer.
            _ => Reply::status(500),
        }
    });
    srv.prefix("/dy/share/video/", |r| {
        assert!(r.header("user-agent").unwrap_or("").contains("iPhone"), "a mobile User-Agent");
        let id = r.path().trim_start_matches("/dy/share/video/").trim_end_matches('/').to_owned();
        if id != "333" {
            return Reply::html("<html><body>nothing</body></html>");
        }
        let data = json!({"loaderData": {"video_(id)/page": {"videoInfoRes": {
            "status_code": 0,
            "item_list": [{"aweme_id": "333", "video": {"play_addr": {"uri": "v0333", "url_list": []}}}],
            "filter_list": []
        }}}});
        Reply::html(&format!(
            "<!DOCTYPE html><html><head><script>window._ROUTER_DATA = {data}</script>\
             <script>window.other = 1;</script></head><body></body></html>"
        ))
    });
    srv.route("/play/aweme/v1/play/", |r| match r.query("video_id") {
        Some(v) => Reply::redirect(302, &format!("/cdn/{v}.mp4?sign=abc")),
        None => Reply::status(400),
    });
    for (i, vid) in ["v0111", "v0333", "v0p1"].iter().enumerate() {
        srv.file(
            &format!("/cdn/{vid}.mp4"),
            fake_mp4(40_000 + i * 1000, 500 + i as u64),
        );
    }
    let vars = vec![
        ("PMV_SOURCES_DOUYIN_SHORT".to_owned(), srv.url("/short")),
        ("PMV_SOURCES_DOUYIN_WEB".to_owned(), srv.url("/dy")),
        ("PMV_SOURCES_DOUYIN_PLAY".to_owned(), srv.url("/play")),
    ];
    (srv, vars)
}

fn vars(v: &[(String, String)]) -> Vec<(&str, String)> {
    v.iter().map(|(k, x)| (k.as_str(), x.clone())).collect()
}

#[test]
fn douyin_links_resolve_through_share_links_lookups_and_play_redirects() {
    let env = Env::new();
    let (srv, v) = douyin_server();
    ingest_items(
        &env,
        "dy",
        &[
            json!({"id": "s1", "urls": ["https://v.douyin.com/AbC111/"]}),
            json!({"id": "p1", "urls": ["https://aweme.snssdk.com/aweme/v1/play/?video_id=v0p1&ratio=720p"]}),
            json!({"id": "d2", "urls": ["https://www.douyin.com/video/222"]}),
            json!({"id": "d3", "urls": ["https://www.iesdouyin.com/share/video/333/"]}),
            json!({"id": "m4", "urls": ["https://www.douyin.com/discover?modal_id=444"]}),
            json!({"id": "g5", "urls": ["https://v.douyin.com/Gone/"]}),
        ],
    );
    let out = fetch(&env, &vars(&v), &[]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    let rep = out.json();
    assert_eq!(rep["verified"], 3, "{rep}");
    assert_eq!(rep["via"]["slidesinfo"], 1);
    assert_eq!(rep["via"]["share-page"], 1);
    assert_eq!(rep["via"]["play-link"], 1);
    assert_eq!(rep["sources"]["douyin"], 3);

    let cdn = |vid: &str| -> Vec<u8> {
        let (req, _) = srv
            .requests(&format!("/cdn/{vid}.mp4"))
            .pop()
            .expect("the CDN was asked");
        assert_eq!(req.header("range"), Some("bytes=0-"));
        let i = ["v0111", "v0333", "v0p1"]
            .iter()
            .position(|x| *x == vid)
            .unwrap();
        fake_mp4(40_000 + i * 1000, 500 + i as u64)
    };
    assert_stored(&env, "s1", "video", &cdn("v0111"));
    assert_stored(&env, "d3", "video", &cdn("v0333"));
    assert_stored(&env, "p1", "video", &cdn("v0p1"));
    // The watermarked address was turned into the plain one.
    assert!(srv.log().iter().all(|(r, _)| !r.target.contains("playwm")));

    let r = must(&env, "d2", "video");
    assert_eq!(r.state, "failed_permanent");
    assert_eq!(r.error_class.as_deref(), Some("removed"));
    let msg = r.error_message.unwrap();
    assert!(
        msg.contains("status_deleted") && msg.contains("作品已删除"),
        "{msg}"
    );
    let r = must(&env, "m4", "video");
    assert_eq!(r.error_class.as_deref(), Some("removed"));
    assert!(r.error_message.unwrap().contains("status_self_see"));
    let r = must(&env, "g5", "video");
    assert_eq!(r.error_class.as_deref(), Some("removed"), "{r:?}");
    // Removed items are asked once: permanent failures are not retried.
    assert_eq!(
        srv.log()
            .iter()
            .filter(|(r, _)| r.target.contains("%5B222%5D"))
            .count(),
        1
    );
    assert_eq!(env.dataset("dy")["failures"]["removed"], 3);
}

#[test]
fn resolve_shows_where_douyin_links_lead() {
    let env = Env::new();
    let (_srv, v) = douyin_server();
    let mut cmd = env.command();
    for (k, x) in &v {
        cmd.env(k, x);
    }
    let out = cmd
        .args([
            "--json",
            "resolve",
            "https://v.douyin.com/AbC111/",
            "https://www.douyin.com/video/222",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    crate::json_output::check(&doc);
    let docs = &doc["links"];
    let first = &docs[0];
    assert_eq!(first["kind"], "douyin");
    assert_eq!(first["canonical_id"], "111");
    assert_eq!(first["via"], "slidesinfo");
    let url = first["download_url"].as_str().unwrap();
    // A signed CDN address is shown with its signature redacted.
    assert!(url.contains("/cdn/v0111.mp4?sign=REDACTED"), "{url}");
    assert!(
        first["trail"][0]
            .as_str()
            .unwrap()
            .contains("share link redirects to")
    );
    assert_eq!(docs[1]["class"], "removed");
    assert!(!env.root.exists(), "resolve writes nothing");
}

/// The OneDrive stand-in with a token it accepts for a week.
fn onedrive_server(
    share: &str,
    names: &[&str],
    wrong_sha1: &[&str],
    quickxor_only: &[&str],
) -> Drive {
    crate::onedrive::onedrive_server(
        share,
        names,
        wrong_sha1,
        quickxor_only,
        |_| crate::onedrive::token_reply("tok-week", 7 * 86_400),
        crate::onedrive::only("tok-week"),
    )
}

#[test]
fn a_onedrive_folder_is_listed_across_pages_and_files_are_checked_against_its_hashes() {
    let env = Env::new();
    let share = "https://1drv.ms/f/s!AkMirrorFolder";
    let drive = onedrive_server(
        share,
        &["a.mp4", "b.mp4", "c.mp4", "named.mp4"],
        &["b.mp4"],
        &["c.mp4"],
    );
    ingest_items(
        &env,
        "od",
        &[
            json!({"id": "a", "urls": [share]}),
            json!({"id": "b", "urls": [share]}),
            json!({"id": "c", "urls": [share]}),
            json!({"id": "other", "urls": [format!("{share}#named.mp4")]}),
            json!({"id": "missing", "urls": [share]}),
        ],
    );
    let out = fetch(&env, &drive.vars(), &[]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    let rep = out.json();
    assert_eq!(rep["verified"], 3, "{rep}");
    assert_eq!(rep["via"]["folder-listing"], 3);
    assert_stored(&env, "a", "video", &drive.files[0].1);
    assert_stored(&env, "c", "video", &drive.files[2].1);
    assert_stored(&env, "other", "video", &drive.files[3].1);

    let b = must(&env, "b", "video");
    assert_eq!(b.state, "failed_permanent");
    assert_eq!(b.error_class.as_deref(), Some("hash_mismatch"));
    assert!(
        b.error_message
            .unwrap()
            .contains("sha1 mismatch: the source lists 0000")
    );
    assert_eq!(drive.srv.requests("/dl/1").len(), 2);
    let m = must(&env, "missing", "video");
    assert_eq!(m.error_class.as_deref(), Some("not_listed"));
    assert!(m.error_message.unwrap().contains("'missing.mp4'"));

    // The folder was listed once for the whole run, both pages, through the personal
    // API with one anonymous token.
    let listing = drive.personal();
    assert_eq!(
        listing.len(),
        3,
        "{:?}",
        listing.iter().map(|(r, _)| &r.target).collect::<Vec<_>>()
    );
    assert_eq!(drive.tokens().len(), 1);
    assert!(drive.old().is_empty());
    // Hostile names were never downloaded nor written anywhere.
    assert!(
        drive
            .srv
            .log()
            .iter()
            .all(|(r, _)| !r.path().starts_with("/evil"))
    );
    let all = files_under(env.dir.path());
    assert!(
        all.iter().all(|p| !p.to_string_lossy().contains("escape")),
        "{all:?}"
    );
    let _ = drive.share;
}

#[test]
fn pmv400_takes_the_onedrive_mirror_when_douyin_links_are_dead() {
    let env = Env::new();
    let share = "https://1drv.ms/f/s!PmvMirror";
    let ids = [
        "v0d00fg10000cc0bltrc77ud5sllkjug",
        "v0200fg10000c9eqmejc77u5ahl3r6g0",
        "v0300fg10000abcdefgh77u5ahl3r6g0",
    ];
    let names: Vec<String> = ids.iter().map(|i| format!("{i}.mp4")).collect();
    let drive = onedrive_server(
        share,
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
        &[],
    );
    // Douyin's play links are dead (502), as most of PMV-400's are.
    drive
        .srv
        .route("/play/aweme/v1/play/", |_| Reply::status(502));
    let list = env.write(
        "lists/train_pmv400.csv",
        ids.iter()
            .enumerate()
            .map(|(i, id)| format!("{id}.mp4,{i}\n"))
            .collect::<String>(),
    );
    let links = env.write(
        "lists/video_links.csv",
        ids.iter()
            .map(|id| format!("https://aweme.snssdk.com/aweme/v1/play/?video_id={id}\n"))
            .collect::<String>(),
    );
    let out = env.ingest(&[
        "--dataset",
        "pmv400",
        "--format",
        "pmv400",
        "--links",
        s(&links),
        "--url-template",
        &format!("{share}#{{id}}.mp4"),
        s(&list),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut vars = drive.vars();
    vars.push(("PMV_SOURCES_DOUYIN_PLAY", drive.srv.url("/play")));
    let out = fetch(&env, &vars, &["--dataset", "pmv400"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let rep = out.json();
    assert_eq!(rep["verified"], 3);
    assert_eq!(rep["sources"]["onedrive"], 3);
    for (i, id) in ids.iter().enumerate() {
        let r = assert_stored(&env, id, "video", &drive.files[i].1);
        assert_eq!(r.source_rank, Some(1), "the mirror is the second source");
        assert_eq!(
            r.path.as_deref(),
            Some(format!("videos/pmv400/{id}.mp4").as_str())
        );
    }
    // Each dead link was tried (with retries) before the mirror.
    assert_eq!(drive.srv.requests("/play/aweme/v1/play/").len(), 9);
    let d = env.dataset("pmv400");
    assert_eq!(d["sources"]["douyin"], 3);
    assert_eq!(d["states"]["verified"], 3);
}

#[test]
fn local_files_are_imported_by_hard_link_and_checked() {
    let env = Env::new();
    let real =
        std::fs::read(crate::util::repo().join("tests/data/xinpianchang/example/99945958.mp4"))
            .unwrap();
    let good = env.write("clips/good.mp4", &real);
    let text = env.write("clips/notes.mp4", "these are notes, not a video\n");
    let list = env.write(
        "train.csv",
        format!(
            "{} 1\n{} 2\n{} 3\n",
            good.display(),
            text.display(),
            env.path("clips/missing.mp4").display()
        ),
    );
    let out = env.ingest(&["--dataset", "k", "--format", "videomae", s(&list)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let rep = out.json();
    assert_eq!(rep["verified"], 1);
    assert_eq!(rep["imported"], 1);
    let r = assert_stored(&env, "good", "video", &real);
    assert_eq!(r.path.as_deref(), Some("videos/k/good.mp4"));
    use std::os::unix::fs::MetadataExt;
    let stored = std::fs::metadata(env.root.join("videos/k/good.mp4")).unwrap();
    assert_eq!(
        stored.ino(),
        std::fs::metadata(&good).unwrap().ino(),
        "a hard link"
    );
    assert_eq!(
        must(&env, "notes", "video").error_class.as_deref(),
        Some("not_video")
    );
    assert_eq!(
        must(&env, "missing", "video").error_class.as_deref(),
        Some("local_missing")
    );
    assert!(std::fs::read(&text).is_ok(), "sources are never touched");
}

#[test]
fn an_import_folder_is_used_before_any_remote_source() {
    let env = Env::new();
    let srv = Server::start();
    srv.prefix("/", |_| Reply::status(500));
    let mut items = vec![];
    let mut datas = vec![];
    for i in 0..4 {
        let d = fake_mp4(8_000 + i * 10, 700 + i as u64);
        env.write(&format!("mirror/class{}/v{i}.mp4", i % 2), &d);
        items.push(
            json!({"id": format!("v{i}"), "urls": [srv.url(&format!("/v{i}.mp4"))],
                          "cover_url": srv.url(&format!("/v{i}.jpg"))}),
        );
        datas.push(d);
    }
    let cover =
        std::fs::read(crate::util::repo().join("tests/data/xinpianchang/example/99945958.jpeg"))
            .unwrap();
    env.write("mirror/class0/v0.jpeg", &cover);
    ingest_items(&env, "m", &items);
    let mirror = env.path("mirror");
    let out = fetch(
        &env,
        &[("PMV_FETCH_RETRIES", "1".into())],
        &["--import-dir", s(&mirror)],
    );
    let rep = out.json();
    assert_eq!(rep["imported"], 5, "{rep}");
    for (i, d) in datas.iter().enumerate() {
        let r = assert_stored(&env, &format!("v{i}"), "video", d);
        assert_eq!(
            r.source_rank, None,
            "imported from a folder, not from a listed source"
        );
    }
    assert_stored(&env, "v0", "cover", &cover);
    // Only the covers without a file in the folder went to the (failing) server.
    assert!(srv.log().iter().all(|(r, _)| r.path().ends_with(".jpg")));
    assert_eq!(must(&env, "v1", "cover").state, "failed_transient");
}
