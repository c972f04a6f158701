//! What a manifest may make pmv-data show: no byte of a file in any message,
//! credentials refused and secrets redacted wherever a URL is shown.

use serde_json::json;

use crate::fetch::{fetch, files_under, must};
use crate::httpd::{Reply, Server};
use crate::util::{Env, Out, s};

/// One JSON lines row with a label.
fn row(id: &str, urls: &[&str]) -> String {
    format!("{}\n", json!({"id": id, "urls": urls, "label": "cat"}))
}

/// Every byte the root holds (catalog, its WAL, reports, rejected rows), to look for
/// what must never be stored.
fn root_bytes(env: &Env) -> Vec<u8> {
    let mut all = vec![];
    for f in files_under(&env.root) {
        if f.extension().is_some_and(|e| e == "mp4" || e == "jpg") {
            continue;
        }
        all.extend(std::fs::read(&f).unwrap_or_default());
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn refusals_never_show_a_file_s_bytes() {
    let env = Env::new();
    env.write(
        "clips/passwd.mp4",
        "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n",
    );
    let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0\x3e\0".to_vec();
    elf.extend([0x55u8; 64]);
    env.write("clips/elf.mp4", &elf);
    env.write("clips/empty.mp4", "");
    let srv = Server::start();
    srv.route("/notes.mp4", |_| {
        Reply::new(200, "internal notes: the password is swordfish\n")
    });
    let list = env.write(
        "items.jsonl",
        [
            row("passwd", &["clips/passwd.mp4"]),
            row("elf", &["clips/elf.mp4"]),
            row("empty", &["clips/empty.mp4"]),
            row("notes", &[&srv.url("/notes.mp4")]),
        ]
        .concat(),
    );
    assert_eq!(
        env.ingest(&["--dataset", "d", "--format", "jsonl", s(&list)])
            .code,
        0
    );
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    for (k, what) in [
        ("passwd", "got a text file"),
        ("elf", "got unrecognised binary data"),
        ("empty", "got an empty file"),
        ("notes", "got a text file"),
    ] {
        let r = must(&env, k, "video");
        assert_eq!(r.error_class.as_deref(), Some("not_video"), "{k}");
        assert!(r.error_message.unwrap().contains(what), "{k}");
    }
    let mut everything = root_bytes(&env);
    everything.extend(out.stdout.as_bytes());
    everything.extend(out.stderr.as_bytes());
    for shown in [
        "root:x",
        "726f6f74",
        "daemon",
        "7f454c46",
        "swordfish",
        "696e7465",
    ] {
        assert!(!contains(&everything, shown), "'{shown}' was shown");
    }
}

#[test]
fn credentials_in_urls_are_rejected_at_ingest_and_never_stored() {
    let env = Env::new();
    let list = env.write(
        "items.jsonl",
        [
            row("ok", &["https://h.example/ok.mp4"]),
            row("pw", &["https://alice:hunter2@h.example/a.mp4"]),
            row("disguised", &["https://h.example@evil.example/b.mp4"]),
        ]
        .concat(),
    );
    let out = env.ingest(&["--dataset", "d", "--format", "jsonl", s(&list)]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let rej = out.rejections();
    assert_eq!(rej.len(), 2, "{rej:?}");
    assert!(rej[0].contains("items.jsonl:2: "), "{}", rej[0]);
    assert!(
        rej[0].contains("carries a user name and password before its host 'h.example'"),
        "{}",
        rej[0]
    );
    assert!(rej[1].contains("items.jsonl:3: "), "{}", rej[1]);
    assert!(rej[1].contains("'evil.example'"), "{}", rej[1]);
    assert_eq!(env.strings("SELECT key FROM items"), vec!["ok"]);
    let mut everything = root_bytes(&env);
    everything.extend(out.stdout.as_bytes());
    everything.extend(out.stderr.as_bytes());
    for secret in ["hunter2", "alice"] {
        assert!(
            !contains(&everything, secret),
            "'{secret}' was stored or shown"
        );
    }
    // A URL template with credentials is refused before anything is written.
    let out = env.ingest(&[
        "--dataset",
        "d",
        "--format",
        "jsonl",
        "--url-template",
        "https://bob:letmein@h.example/{id}.mp4",
        s(&list),
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(!out.stderr.contains("letmein"), "{}", out.stderr);
}

#[test]
fn secret_query_parameters_are_redacted_wherever_a_url_is_shown() {
    let env = Env::new();
    let srv = Server::start();
    srv.prefix("/gone.mp4", |_| Reply::status(404));
    srv.prefix("/page.mp4", |_| Reply::html("<html>sign in</html>"));
    let secret_urls = [
        srv.url("/gone.mp4?token=TOKSECRET&X-Amz-Signature=AMZSECRET&id=7"),
        srv.url("/page.mp4?md5=0123456789abcdefMD5SECRET&expires=1700000000"),
    ];
    let list = env.write(
        "items.jsonl",
        [
            row("gone", &[&secret_urls[0]]),
            row("page", &[&secret_urls[1]]),
        ]
        .concat(),
    );
    assert_eq!(
        env.ingest(&["--dataset", "d", "--format", "jsonl", s(&list)])
            .code,
        0
    );
    let mut c = env.command();
    c.env("PMV_FETCH_RETRIES", "1")
        .env("RUST_LOG", "pmv_data=debug")
        .args(["--json", "fetch"]);
    let out = Out::of(c);
    assert_eq!(out.code, 3, "{}", out.stderr);
    // The server got the real URLs; the catalog keeps them to fetch again.
    assert!(
        srv.log()
            .iter()
            .any(|(r, _)| r.query("token").as_deref() == Some("TOKSECRET"))
    );
    let gone = must(&env, "gone", "video").error_message.unwrap();
    assert!(gone.contains("token=REDACTED"), "{gone}");
    assert!(gone.contains("id=7"), "the rest of the URL stays: {gone}");
    let page = must(&env, "page", "video").error_message.unwrap();
    assert!(page.contains("md5=REDACTED&expires=1700000000"), "{page}");

    let status = env.run(&["--json", "status"]);
    let resolve = env.run(&["--json", "resolve", "--offline", &secret_urls[0]]);
    assert_eq!(resolve.code, 0, "{}", resolve.stderr);
    assert!(
        resolve.json()[0]["download_url"]
            .as_str()
            .unwrap()
            .contains("token=REDACTED")
    );
    let reports: Vec<u8> = files_under(&env.root.join("runs"))
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap())
        .collect();
    let messages: Vec<String> = env.strings(
        "SELECT coalesce(error_message, '') FROM files UNION ALL SELECT coalesce(summary, '') FROM runs",
    );
    for shown in [
        out.stdout.as_bytes(),
        out.stderr.as_bytes(),
        status.stdout.as_bytes(),
        resolve.stdout.as_bytes(),
        &reports,
        messages.concat().as_bytes(),
    ] {
        for secret in ["TOKSECRET", "AMZSECRET", "MD5SECRET"] {
            assert!(!contains(shown, secret), "'{secret}' was shown");
        }
    }
}
