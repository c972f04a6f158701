//! Where a manifest can send a fetch: never to link-local or cloud metadata
//! addresses, and to this machine or a private network only when the user opts in.

use serde_json::json;

use crate::fetch::{assert_stored, fetch, ingest_items, must};
use crate::httpd::{Reply, Server, fake_mp4};
use crate::util::{Env, Out, s};

/// `--json fetch ARGS` as a user without the opt-in runs it.
fn fetch_closed(env: &Env, args: &[&str]) -> Out {
    let mut cmd = env.command();
    cmd.env_remove("PMV_FETCH_ALLOW_PRIVATE_HOSTS")
        .envs(crate::fetch::FAST)
        .arg("--json")
        .arg("fetch")
        .args(args);
    Out::of(cmd)
}

#[test]
fn a_private_host_named_by_a_manifest_is_fetched_only_with_the_opt_in() {
    let env = Env::new();
    let srv = Server::start();
    let data = fake_mp4(20_000, 61);
    srv.file("/v.mp4", data.clone());
    let port = srv.addr.port();
    ingest_items(
        &env,
        "t",
        &[
            json!({"id": "ip", "urls": [srv.url("/v.mp4")]}),
            json!({"id": "name", "urls": [format!("http://localhost:{port}/v.mp4")]}),
            json!({"id": "mapped", "urls": [format!("http://[::ffff:127.0.0.1]:{port}/v.mp4")]}),
        ],
    );
    let out = fetch_closed(&env, &[]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["failures"]["private_host"], 3, "{}", out.stdout);
    assert!(
        srv.log().is_empty(),
        "nothing was asked of it: {:?}",
        srv.log()
    );
    for key in ["ip", "name", "mapped"] {
        let r = must(&env, key, "video");
        assert_eq!(r.state, "failed_permanent", "{key}: {r:?}");
        assert_eq!(r.error_class.as_deref(), Some("private_host"));
        let msg = r.error_message.unwrap();
        assert!(
            msg.contains("on this machine or a private network")
                && msg.contains("--allow-private-hosts")
                && msg.contains("fetch.allow_private_hosts"),
            "{key}: {msg}"
        );
    }
    // The flag brings them back, without asking for failed files to be retried.
    let out = fetch_closed(&env, &["--allow-private-hosts"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["verified"], 3);
    for key in ["ip", "name", "mapped"] {
        assert_stored(&env, key, "video", &data);
    }

    // So does the configuration file.
    let env = Env::new();
    ingest_items(
        &env,
        "t",
        &[json!({"id": "ip", "urls": [srv.url("/v.mp4")]})],
    );
    let config = env.write("pmv.toml", "[fetch]\nallow_private_hosts = true\n");
    let out = fetch_closed(&env, &["--config", s(&config)]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_stored(&env, "ip", "video", &data);
}

#[test]
fn link_local_and_metadata_addresses_are_never_fetched() {
    let env = Env::new();
    // Named directly: refused at ingest, with the line.
    let manifest = env.write(
        "m.jsonl",
        [
            json!({"id": "a", "urls": ["http://169.254.169.254/latest/meta-data/"]}),
            json!({"id": "b", "urls": ["http://metadata.google.internal/computeMetadata/v1/"]}),
            json!({"id": "c", "urls": ["http://[fd00:ec2::254]/latest/"]}),
            json!({"id": "d", "urls": ["http://0xa9fea9fe/latest/"]}),
            json!({"id": "ok", "urls": ["https://cdn.example/ok.mp4"]}),
        ]
        .iter()
        .map(|v| format!("{v}\n"))
        .collect::<String>(),
    );
    let out = env.ingest(&[
        "--dataset",
        "t",
        "--format",
        "jsonl",
        "--split",
        "train",
        s(&manifest),
    ]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    let rejected = out.rejections();
    assert_eq!(rejected.len(), 4, "{}", out.stderr);
    for (line, r) in rejected.iter().enumerate() {
        assert!(
            r.starts_with(&format!("{}:{}:", manifest.display(), line + 1)),
            "{r}"
        );
        assert!(r.contains("never fetched"), "{r}");
    }

    // Led to by a server the user opted in to: refused at that hop.
    let env = Env::new();
    let srv = Server::start();
    srv.route("/meta", |_| {
        Reply::redirect(302, "http://169.254.169.254/latest/meta-data/")
    });
    srv.route("/ll", |_| Reply::redirect(302, "http://[fe80::1]/x.mp4"));
    ingest_items(
        &env,
        "t",
        &[
            json!({"id": "meta", "urls": [srv.url("/meta")]}),
            json!({"id": "ll", "urls": [srv.url("/ll")]}),
        ],
    );
    let out = fetch(&env, &[], &["--allow-private-hosts"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    for key in ["meta", "ll"] {
        let r = must(&env, key, "video");
        assert_eq!(r.state, "failed_permanent", "{key}: {r:?}");
        assert_eq!(r.error_class.as_deref(), Some("bad_url"));
        assert!(
            r.error_message
                .as_deref()
                .unwrap()
                .contains("never fetched"),
            "{key}: {r:?}"
        );
    }
}
