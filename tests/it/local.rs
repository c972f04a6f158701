//! Local sources and what a manifest may name: the allowed folders (checked at ingest
//! and again when a file is read), one opened regular file per import, copies no wider
//! than their source, no symlink under a final name, no byte of a file in any message,
//! credentials refused and secrets redacted, relative paths, the xinpianchang example.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::fetch::{fetch, files_under, must};
use crate::httpd::{Reply, Server, fake_mp4, sha256};
use crate::util::{Env, Out, repo, s};

/// One JSON lines row with a label.
fn row(id: &str, urls: &[&str]) -> String {
    format!("{}\n", json!({"id": id, "urls": urls, "label": "cat"}))
}

/// `pmv-data --json ARGS` run from `dir`.
fn run_in(env: &Env, dir: &Path, args: &[&str]) -> Out {
    let mut c = env.command();
    c.current_dir(dir).arg("--json").args(args);
    Out::of(c)
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
fn local_paths_outside_the_named_folders_are_rejected_at_ingest() {
    let env = Env::new();
    let good = fake_mp4(4_000, 1);
    env.write("lists/clips/a.mp4", &good);
    env.write("outside/x.mp4", fake_mp4(4_000, 2));
    std::fs::create_dir_all(env.path("lists/clips")).unwrap();
    symlink("/etc/passwd", env.path("lists/clips/link.mp4")).unwrap();
    symlink(env.path("outside"), env.path("lists/clips/up")).unwrap();
    let manifest = [
        row("a", &["clips/a.mp4"]),
        row("passwd", &["file:///etc/passwd"]),
        row("shadow", &["/etc/shadow"]),
        row("x", &["../outside/x.mp4"]),
        row("link", &["clips/link.mp4"]),
        row("up", &["clips/up/x.mp4"]),
        row("dots", &["clips/../../outside/x.mp4"]),
    ]
    .concat();
    env.write("lists/items.jsonl", manifest);
    let out = run_in(
        &env,
        env.dir.path(),
        &[
            "ingest",
            "--dataset",
            "d",
            "--format",
            "jsonl",
            "lists/items.jsonl",
        ],
    );
    assert_eq!(out.code, 3, "{}", out.stderr);
    let rej = out.rejections();
    assert_eq!(rej.len(), 6, "{rej:?}");
    for (r, line) in rej.iter().zip(2..) {
        assert!(r.contains(&format!("items.jsonl:{line}: ")), "{r}");
        assert!(
            r.contains("is outside the folders local files may be read from"),
            "{r}"
        );
    }
    assert!(rej[3].contains("(really /etc/passwd)"), "{}", rej[3]);
    assert_eq!(env.strings("SELECT key FROM items"), vec!["a"]);
    let stored = env.strings("SELECT location FROM sources");
    assert_eq!(
        stored,
        vec![
            std::fs::canonicalize(env.path("lists/clips/a.mp4"))
                .unwrap()
                .display()
                .to_string()
        ]
    );
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["imported"], 1);
    assert_eq!(files_under(&env.root.join("videos")).len(), 1);

    // Naming the folder lets its files in: --base-dir, or the configuration.
    let env2 = Env::new();
    env2.write("outside/x.mp4", fake_mp4(4_000, 2));
    let list = env2.write("lists/items.jsonl", row("x", &["x.mp4"]));
    let out = env2.ingest(&[
        "--dataset",
        "d",
        "--format",
        "jsonl",
        "--base-dir",
        s(&env2.path("outside")),
        s(&list),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = fetch(&env2, &[], &[]);
    assert_eq!(out.json()["imported"], 1, "{}", out.stderr);

    let env3 = Env::new();
    let x = env3.write("outside/x.mp4", fake_mp4(4_000, 2));
    let config = env3.write("pmv.toml", "local_roots = [\"outside\"]\n");
    let list = env3.write("lists/items.jsonl", row("x", &[s(&x)]));
    let mut c = env3.command();
    c.args(["--config", s(&config), "--json", "ingest", "--dataset", "d"])
        .args(["--format", "jsonl", s(&list)]);
    assert_eq!(Out::of(c).code, 0);
    // A fetch without that configuration reads nothing outside the manifest's tree.
    let out = fetch(&env3, &[], &[]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let r = must(&env3, "x", "video");
    assert_eq!(r.error_class.as_deref(), Some("bad_url"));
    assert!(
        r.error_message.unwrap().contains("is outside the folders"),
        "checked again when read"
    );
    let out = fetch(&env3, &[], &["--include-permanent", "--dataset", "d"]);
    assert_eq!(out.code, 3, "still refused: {}", out.stderr);
    let mut c = env3.command();
    c.args([
        "--config",
        s(&config),
        "--json",
        "fetch",
        "--include-permanent",
    ]);
    let out = Out::of(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(must(&env3, "x", "video").state, "verified");
}

#[test]
fn a_local_file_is_checked_again_when_it_is_read() {
    let env = Env::new();
    for name in ["a", "b", "c", "d"] {
        env.write(&format!("lists/clips/{name}.mp4"), fake_mp4(3_000, 7));
    }
    env.write("lists/sub/e.mp4", fake_mp4(3_000, 8));
    env.write("outside/a.mp4", fake_mp4(3_000, 9));
    env.write("outside/e.mp4", fake_mp4(3_000, 10));
    let fifo = env.path("lists/clips/fifo.mp4");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let list = env.write(
        "lists/items.jsonl",
        [
            row("a", &["clips/a.mp4"]),
            row("b", &["clips/b.mp4"]),
            row("e", &["sub/e.mp4"]),
            row("fifo", &["clips/fifo.mp4"]),
            row("d", &["clips/d.mp4"]),
        ]
        .concat(),
    );
    let out = env.ingest(&["--dataset", "d", "--format", "jsonl", s(&list)]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // After the ingest: a file becomes a symlink, a folder on the way becomes a
    // symlink to another place, and a row is what an older version stored.
    std::fs::remove_file(env.path("lists/clips/a.mp4")).unwrap();
    symlink(env.path("outside/a.mp4"), env.path("lists/clips/a.mp4")).unwrap();
    std::fs::remove_dir_all(env.path("lists/sub")).unwrap();
    symlink(env.path("outside"), env.path("lists/sub")).unwrap();
    env.catalog()
        .execute(
            "UPDATE items SET video_sources = '[{\"kind\":\"local\",\"location\":\"/etc/passwd\",\"origin\":\"manifest\"}]' \
             WHERE key = 'b'",
            [],
        )
        .unwrap();

    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let msg = |k: &str| {
        let r = must(&env, k, "video");
        (
            r.error_class.unwrap_or_default(),
            r.error_message.unwrap_or_default(),
        )
    };
    let (class, m) = msg("a");
    assert_eq!(class, "bad_url");
    assert!(m.contains("is a symbolic link"), "{m}");
    for k in ["b", "e"] {
        let (class, m) = msg(k);
        assert_eq!(class, "bad_url", "{k}");
        assert!(m.contains("is outside the folders"), "{k}: {m}");
    }
    let (class, m) = msg("fifo");
    assert_eq!(class, "local_missing");
    assert!(m.contains("not a regular file (a FIFO)"), "{m}");
    assert_eq!(must(&env, "d", "video").state, "verified");
    assert_eq!(
        files_under(&env.root.join("videos")),
        vec![env.root.join("videos/d/d.mp4")]
    );
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
fn stored_copies_are_no_wider_than_their_source() {
    let env = Env::new();
    // A copy happens across file systems: the source on a tmpfs, the root elsewhere.
    let Ok(other) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("skipped: no /dev/shm to copy across file systems from");
        return;
    };
    std::fs::create_dir_all(&env.root).unwrap();
    let root_dev = std::fs::metadata(&env.root).unwrap().dev();
    if std::fs::metadata(other.path()).unwrap().dev() == root_dev {
        eprintln!("skipped: /dev/shm is on the same file system as the test root");
        return;
    }
    let data = fake_mp4(5_000, 3);
    let src = other.path().join("private.mp4");
    std::fs::write(&src, &data).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o600)).unwrap();
    let list = other.path().join("items.jsonl");
    std::fs::write(&list, row("p", &["private.mp4"])).unwrap();
    assert_eq!(
        env.ingest(&["--dataset", "d", "--format", "jsonl", s(&list)])
            .code,
        0
    );
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let stored = env.root.join("videos/d/p.mp4");
    let meta = std::fs::symlink_metadata(&stored).unwrap();
    assert!(meta.file_type().is_file());
    assert_ne!(meta.dev(), std::fs::metadata(&src).unwrap().dev(), "a copy");
    assert_eq!(meta.mode() & 0o777, 0o600, "no wider than the source");
    assert_eq!(sha256(&std::fs::read(&stored).unwrap()), sha256(&data));
}

#[test]
fn a_symlink_under_a_final_name_is_never_kept() {
    let env = Env::new();
    let data = fake_mp4(4_000, 4);
    let list = env.write("items.jsonl", row("a", &["clips/a.mp4"]));
    env.write("clips/a.mp4", &data);
    // Something else already sits under the final name, as a symlink to other bytes
    // (what an older version left for an imported symlink).
    let elsewhere = tempfile::tempdir().unwrap();
    let evil = elsewhere.path().join("evil.mp4");
    std::fs::write(&evil, fake_mp4(4_000, 5)).unwrap();
    assert_eq!(
        env.ingest(&["--dataset", "d", "--format", "jsonl", s(&list)])
            .code,
        0
    );
    std::fs::create_dir_all(env.root.join("videos/d")).unwrap();
    symlink(&evil, env.root.join("videos/d/a.mp4")).unwrap();
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rep = out.json();
    assert_eq!(rep["adopted"], 0, "the symlink was not adopted: {rep}");
    let stored = env.root.join("videos/d/a.mp4");
    assert!(
        std::fs::symlink_metadata(&stored)
            .unwrap()
            .file_type()
            .is_file()
    );
    assert_eq!(sha256(&std::fs::read(&stored).unwrap()), sha256(&data));
    let moved = files_under(&env.root.join("quarantine/d"));
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(
        std::fs::symlink_metadata(&moved[0])
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(evil.exists(), "what the link pointed to is untouched");
}

/// A stored file that became a symlink since it was verified (as an older version
/// stored imported symlinks), to a copy of the very same bytes: the hash still
/// matches, but the bytes could change behind the record at any time.
#[cfg(feature = "media")]
#[test]
fn a_symlink_that_replaced_a_stored_file_is_never_trusted() {
    use pmv_catalog::Catalog;
    use pmv_core::report::Silent;
    use pmv_core::root::DataRoot;
    use pmv_pipeline::fetch::{RehashOptions, RehashSelect, rehash};

    let env = Env::new();
    let (_, data) = example_video(&env, "clips/a.mp4");
    let list = env.write("items.jsonl", row("a", &["clips/a.mp4"]));
    assert_eq!(
        env.ingest(&["--dataset", "d", "--format", "jsonl", s(&list)])
            .code,
        0
    );
    assert_eq!(fetch(&env, &[], &[]).code, 0);
    let stored = env.root.join("videos/d/a.mp4");
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("a.mp4");
    std::fs::write(&copy, &data).unwrap();
    let swap = || {
        std::fs::remove_file(&stored).unwrap();
        symlink(&copy, &stored).unwrap();
    };

    // The re-hash does not follow it: the file is changed, and fetched again.
    swap();
    let root = DataRoot::new(&env.root);
    let mut cat = Catalog::open(&root.catalog_path()).unwrap();
    let all = RehashOptions {
        dataset: None,
        select: RehashSelect::All,
        deadline: None,
    };
    let r = rehash(&root, &mut cat, &all, &Silent).unwrap();
    drop(cat);
    assert_eq!(r.changed, 1, "{:?}", r.details);
    assert!(
        r.details[0].contains("is not a regular file"),
        "{:?}",
        r.details
    );
    assert_eq!(must(&env, "a", "video").state, "pending");
    assert_eq!(fetch(&env, &[], &[]).code, 0);
    assert!(
        std::fs::symlink_metadata(&stored)
            .unwrap()
            .file_type()
            .is_file()
    );

    // The shard stage does not decode one either.
    swap();
    let out = env.run(&[
        "--json",
        "shard",
        "--dataset",
        "d",
        "--frames",
        "2",
        "--segments",
        "--size",
        "32x32",
    ]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(out.json()["samples"], 0);
    let r = must(&env, "a", "video");
    assert_eq!(r.state, "failed_transient");
    assert!(
        r.error_message.unwrap().contains("not a regular file"),
        "fetched again by the next run"
    );
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
        .env("RUST_LOG", "pmv_pipeline=debug")
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
        resolve.json()["links"][0]["download_url"]
            .as_str()
            .unwrap()
            .contains("token=REDACTED")
    );
    let reports: Vec<u8> = files_under(&env.root.join("reports"))
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

#[test]
fn a_missing_manifest_is_reported_before_a_data_root_exists() {
    let env = Env::new();
    let out = env.run(&[
        "ingest",
        "--dataset",
        "d",
        "--format",
        "jsonl",
        s(&env.path("nowhere.jsonl")),
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("nowhere.jsonl"), "{}", out.stderr);
    assert!(!env.root.exists(), "nothing was created");
    let list = env.write("items.jsonl", row("a", &["https://h.example/a.mp4"]));
    let out = env.run(&[
        "ingest",
        "--dataset",
        "d",
        "--format",
        "jsonl",
        "--classes",
        s(&env.path("classes.txt")),
        s(&list),
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("classes.txt"), "{}", out.stderr);
    assert!(!env.root.exists(), "nothing was created");
}

/// The real example video, copied into `dir`.
fn example_video(env: &Env, rel: &str) -> (PathBuf, Vec<u8>) {
    let data = std::fs::read(repo().join("tests/data/xinpianchang/example/99945958.mp4")).unwrap();
    (env.write(rel, &data), data)
}

#[test]
fn relative_manifests_and_rows_work_from_any_directory() {
    let env = Env::new();
    let (_, data) = example_video(&env, "work/lists/clips/a.mp4");
    env.write("work/lists/items.jsonl", row("a", &["clips/a.mp4"]));
    env.write("work/lists/train.txt", "./clips/../clips/a.mp4 0\n");
    let work = env.path("work");
    let out = run_in(
        &env,
        &work,
        &[
            "ingest",
            "--dataset",
            "j",
            "--format",
            "jsonl",
            "lists/items.jsonl",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run_in(
        &env,
        &work,
        &[
            "ingest",
            "--dataset",
            "v",
            "--format",
            "videomae",
            "lists/train.txt",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let real = std::fs::canonicalize(env.path("work/lists/clips/a.mp4")).unwrap();
    assert_eq!(
        env.strings("SELECT DISTINCT location FROM sources"),
        vec![real.display().to_string()]
    );
    // Fetch from another directory: the stored paths are absolute.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut c = env.command();
    c.current_dir(elsewhere.path()).args(["--json", "fetch"]);
    let out = Out::of(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["verified"], 2);
    assert_eq!(
        sha256(&std::fs::read(env.root.join("videos/j/a.mp4")).unwrap()),
        sha256(&data)
    );
    #[cfg(feature = "media")]
    {
        let mut c = env.command();
        c.current_dir(elsewhere.path()).args([
            "--json",
            "shard",
            "--dataset",
            "j",
            "--frames",
            "2",
            "--segments",
            "--size",
            "32x32",
        ]);
        let out = Out::of(c);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(out.json()["samples"], 1, "{}", out.stdout);
    }
}

#[cfg(feature = "media")]
#[test]
fn shard_samples_name_their_source_without_secrets_or_folders() {
    use pmv_pipeline::sharding::ShardReader;

    let env = Env::new();
    let (_, data) = example_video(&env, "private/folders/clips/a.mp4");
    let srv = Server::start();
    srv.file("/b.mp4", data);
    let list = env.write(
        "private/folders/items.jsonl",
        [
            row("a", &["clips/a.mp4"]),
            row("b", &[&srv.url("/b.mp4?token=TOKSECRET&id=2")]),
        ]
        .concat(),
    );
    assert_eq!(
        env.ingest(&["--dataset", "d", "--format", "jsonl", s(&list)])
            .code,
        0
    );
    assert_eq!(fetch(&env, &[], &[]).code, 0);
    let out = env.run(&[
        "--json",
        "shard",
        "--dataset",
        "d",
        "--frames",
        "2",
        "--segments",
        "--size",
        "32x32",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut sources = vec![];
    for shard in out.json()["shards"].as_array().unwrap() {
        let reader = ShardReader::open(&env.root.join(shard["path"].as_str().unwrap())).unwrap();
        for i in 0..reader.len() {
            let meta = reader.sample(i).unwrap().meta().unwrap();
            sources.push((meta.id, meta.source.unwrap_or_default()));
        }
    }
    sources.sort();
    assert_eq!(
        sources,
        vec![
            ("a".to_string(), "local:a.mp4".to_string()),
            ("b".to_string(), srv.url("/b.mp4?token=REDACTED&id=2")),
        ]
    );
}

#[test]
fn an_import_folder_given_by_a_relative_path_is_read() {
    let env = Env::new();
    let data = fake_mp4(3_000, 11);
    env.write("work/mirror/v.mp4", &data);
    let list = env.write("items.jsonl", row("v", &["https://h.invalid/v.mp4"]));
    assert_eq!(
        env.ingest(&["--dataset", "d", "--format", "jsonl", s(&list)])
            .code,
        0
    );
    let out = run_in(
        &env,
        &env.path("work"),
        &["fetch", "--import-dir", "mirror"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["imported"], 1);
    assert_eq!(
        sha256(&std::fs::read(env.root.join("videos/d/v.mp4")).unwrap()),
        sha256(&data)
    );
}

#[test]
fn a_relative_xinpianchang_tree_stores_real_paths() {
    let env = Env::new();
    let example = repo().join("tests/data/xinpianchang/example");
    let dir = env.path("MP4_download/Sea/99945958");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["99945958.txt", "99945958.mp4", "99945958.jpeg"] {
        std::fs::copy(example.join(f), dir.join(f)).unwrap();
    }
    let out = run_in(
        &env,
        env.dir.path(),
        &[
            "ingest",
            "--dataset",
            "x",
            "--format",
            "xinpianchang",
            "MP4_download",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let real = std::fs::canonicalize(&dir).unwrap();
    assert_eq!(
        env.strings("SELECT location FROM sources WHERE kind = 'local' ORDER BY role DESC"),
        vec![
            real.join("99945958.mp4").display().to_string(),
            real.join("99945958.jpeg").display().to_string()
        ]
    );
    let out = fetch(&env, &[], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["imported"], 2);
}

#[test]
fn the_shipped_example_folder_ingests_as_it_stands() {
    let env = Env::new();
    let example = repo().join("tests/data/xinpianchang/example");
    let out = env.ingest(&["--dataset", "x", "--format", "xinpianchang", s(&example)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r = out.json();
    assert_eq!(r["items"]["new"], 1);
    let (labels, text): (String, String) = env
        .catalog()
        .query_row(
            "SELECT labels, text FROM items WHERE key = '99945958'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(labels, "", "its .txt names no label: unlabeled");
    assert_eq!(text, "Hong Kong Circa 2017, City B-Roll");
    let real = std::fs::canonicalize(&example).unwrap();
    assert_eq!(
        env.strings(
            "SELECT kind || ' ' || location FROM sources WHERE role = 'video' ORDER BY rank"
        ),
        vec![
            format!("local {}", real.join("99945958.mp4").display()),
            "direct https://p5-v1.xpccdn.com/099945958_main_xl.mp4".to_string()
        ]
    );
    // The .txt alone is the same one-item folder; a video_label in it is the label.
    let env = Env::new();
    let text = std::fs::read_to_string(example.join("99945958.txt")).unwrap();
    let labeled = text.replace("'mp4_time'", "'video_label': 'City', 'mp4_time'");
    let txt = env.write("one/99945958.txt", labeled);
    let out = env.ingest(&["--dataset", "x", "--format", "xinpianchang", s(&txt)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(env.query::<String>("SELECT labels FROM items"), "11");
}

#[test]
fn a_folder_that_fits_no_layout_says_what_is_missing() {
    let env = Env::new();
    env.write("videos/Sea/1/1.mp4", fake_mp4(1_000, 1));
    env.write("videos/Sea/2/2.mp4", fake_mp4(1_000, 2));
    let out = env.ingest(&[
        "--dataset",
        "x",
        "--format",
        "xinpianchang",
        s(&env.path("videos")),
    ]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let rej = out.rejections();
    assert_eq!(rej.len(), 1, "{rej:?}");
    assert!(
        rej[0].contains("2 video file(s) but no <id>.txt beside any of them"),
        "{}",
        rej[0]
    );
    assert!(
        rej[0].contains("<label>/<id>/<id>.{txt,mp4,jpeg}"),
        "{}",
        rej[0]
    );
    // The upstream tree with a label folder that is no class names it.
    env.write(
        "tree/Nowhere/3/3.txt",
        "{'mp4_id': '3', 'mp4_download_url': 'https://h.example/3.mp4'}",
    );
    let out = env.ingest(&[
        "--dataset",
        "x",
        "--format",
        "xinpianchang",
        s(&env.path("tree")),
    ]);
    assert_eq!(out.code, 3);
    assert!(
        out.stderr
            .contains("unknown class name 'Nowhere' (taken from the directory name)"),
        "{}",
        out.stderr
    );
}
