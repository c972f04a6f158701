//! OneDrive as it answers today, against a server replaying both lookup paths: the
//! anonymous token endpoint, the personal API (driveitem, children over two pages) and
//! the API of old; a short link redirecting to a new-format link with `redeem`; token
//! expiry and refusal; the fallback; the token never leaving memory; and what
//! `resolve --offline` says it would do. Also the stand-in the other fetch tests share.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::fetch::{assert_stored, fetch, files_under, ingest_items};
use crate::httpd::{Reply, Req, Server, fake_mp4};
use crate::util::{Env, Out};

/// Where the stand-in serves each API.
const OLD: &str = "/v1.0";
const PERSONAL: &str = "/personal/_api/v2.0";
const TOKEN: &str = "/badger/v1.0/token";

/// How the personal API treats a request: `None` answers it, `Some` refuses with
/// that reply.
pub type Gate = Arc<dyn Fn(&Req) -> Option<Reply> + Send + Sync>;

/// A OneDrive stand-in: one shared folder, listed over two pages by both APIs.
pub struct Drive {
    pub srv: Server,
    /// The short link users have (`https://1drv.ms/f/s!...`).
    pub share: String,
    pub files: Vec<(String, Vec<u8>)>,
    /// The share id the personal API knows the folder by (from `redeem`).
    pub personal_id: String,
}

impl Drive {
    /// The variables pointing every OneDrive base URL at the stand-in.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PMV_SOURCES_ONEDRIVE_API", self.srv.url(OLD)),
            ("PMV_SOURCES_ONEDRIVE_PERSONAL_API", self.srv.url(PERSONAL)),
            ("PMV_SOURCES_ONEDRIVE_BADGER_TOKEN", self.srv.url(TOKEN)),
            ("PMV_SOURCES_ONEDRIVE_SHORT", self.srv.url("/short")),
        ]
    }

    /// Requests under a path prefix.
    pub fn under(&self, prefix: &str) -> Vec<(Req, u16)> {
        self.srv
            .log()
            .into_iter()
            .filter(|(r, _)| r.path().starts_with(prefix))
            .collect()
    }

    /// Listing requests to the personal API.
    pub fn personal(&self) -> Vec<(Req, u16)> {
        self.under(PERSONAL)
    }

    /// Listing requests to the API of old.
    pub fn old(&self) -> Vec<(Req, u16)> {
        self.under(OLD)
    }

    /// Token requests.
    pub fn tokens(&self) -> Vec<(Req, u16)> {
        self.srv.requests(TOKEN)
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// A token answer expiring `secs` from now (negative: already expired).
pub fn token_reply(token: &str, secs: i64) -> Reply {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let when = pmv_core::util::rfc3339(now + secs);
    Reply::json(&json!({"token": token, "expiryTimeUtc": when}))
}

/// A gate accepting one token only.
pub fn only(token: &'static str) -> Gate {
    Arc::new(move |r: &Req| {
        let want = format!("Badger {token}");
        (r.header("authorization") != Some(want.as_str())).then(|| Reply::status(401))
    })
}

/// Starts the stand-in: `names` are the folder's files (with hostile entries and a
/// sub-folder beside them), `wrong_sha1` list a wrong sha1, `quickxor_only` no sha1;
/// the token endpoint answers with `token(hit)`, the personal API through `gate`.
pub fn onedrive_server(
    share: &str,
    names: &[&str],
    wrong_sha1: &[&str],
    quickxor_only: &[&str],
    token: impl Fn(usize) -> Reply + Send + Sync + 'static,
    gate: Gate,
) -> Drive {
    let srv = Server::start();
    let addr = srv.addr.to_string();
    let files: Vec<(String, Vec<u8>)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), fake_mp4(30_000 + i * 777, 900 + i as u64)))
        .collect();
    let mut entries: Vec<Value> = files
        .iter()
        .enumerate()
        .map(|(i, (name, data))| {
            let sha1 = if wrong_sha1.contains(&name.as_str()) {
                "0000000000000000000000000000000000000000".to_owned()
            } else {
                use sha1::Digest;
                hex::encode_upper(sha1::Sha1::digest(data))
            };
            let mut qx = pmv_pipeline::fetch::quickxor::QuickXor::new();
            qx.update(data);
            let mut hashes = json!({"quickXorHash": qx.base64()});
            if !quickxor_only.contains(&name.as_str()) {
                hashes["sha1Hash"] = json!(sha1);
            }
            json!({
                "id": format!("ITEM!{i}"),
                "name": name,
                "size": data.len(),
                "file": {"mimeType": "video/mp4", "hashes": hashes},
                "@content.downloadUrl": format!("http://{addr}/dl/{i}"),
            })
        })
        .collect();
    // Hostile names: only ever compared, never used as paths.
    for (j, hostile) in ["../../escape.mp4", "a/b.mp4", "..", "/etc/passwd"]
        .iter()
        .enumerate()
    {
        entries.push(json!({
            "id": format!("EVIL!{j}"), "name": hostile, "size": 10,
            "file": {"hashes": {}},
            "@content.downloadUrl": format!("http://{addr}/evil/{j}"),
        }));
    }
    entries.push(json!({"id": "SUB", "name": "sub", "folder": {"childCount": 0}}));
    let half = entries.len() / 2;
    let pages = (entries[..half].to_vec(), entries[half..].to_vec());

    // The short link redirects to a new-format link whose `redeem` names the share.
    let redeem = b64(&format!("{share}?redeemed"));
    let personal_id = format!("u!{redeem}");
    let code = share.trim_start_matches("https://1drv.ms");
    let target = format!("https://onedrive.live.com/x/c/ABC123/EQres?e=Zz9&redeem={redeem}=");
    srv.route(&format!("/short{code}"), move |_| {
        Reply::redirect(301, &target)
    });
    let token = Arc::new(token);
    srv.route(TOKEN, move |r| token(r.hit));
    serve_listing(
        &srv,
        PERSONAL,
        &personal_id,
        "driveitem",
        &pages,
        Some(gate),
    );
    let old_id = format!("u!{}", b64(share));
    serve_listing(&srv, OLD, &old_id, "driveItem", &pages, None);
    for (i, (_, d)) in files.iter().enumerate() {
        srv.file(&format!("/dl/{i}"), d.clone());
    }
    Drive {
        srv,
        share: share.to_owned(),
        files,
        personal_id,
    }
}

/// One API's answers for a folder: the item, then its children over two pages.
fn serve_listing(
    srv: &Server,
    base: &str,
    id: &str,
    item: &str,
    pages: &(Vec<Value>, Vec<Value>),
    gate: Option<Gate>,
) {
    let guarded = |f: Box<dyn Fn(&Req) -> Reply + Send + Sync>| {
        let gate = gate.clone();
        move |r: &Req| match gate.as_ref().and_then(|g| g(r)) {
            Some(refusal) => refusal,
            None => f(r),
        }
    };
    srv.route(
        &format!("{base}/shares/{id}/{item}"),
        guarded(Box::new(|_| {
            Reply::json(
                &json!({"id": "ROOT", "name": "PMV-400 mirror", "folder": {"childCount": 9}}),
            )
        })),
    );
    let next = srv.url(&format!("{base}/page2"));
    let first = pages.0.clone();
    srv.route(
        &format!("{base}/shares/{id}/{item}/children"),
        guarded(Box::new(move |_| {
            Reply::json(&json!({"value": first, "@odata.nextLink": next}))
        })),
    );
    let second = pages.1.clone();
    srv.route(
        &format!("{base}/page2"),
        guarded(Box::new(move |_| Reply::json(&json!({"value": second})))),
    );
}

/// `--json resolve LINKS` with the stand-in's variables (and debug logging on).
fn resolve(env: &Env, drive: &Drive, links: &[&str]) -> Out {
    let mut cmd = env.command();
    cmd.envs(crate::fetch::FAST)
        .envs(drive.vars())
        .env("RUST_LOG", "debug")
        .args(["--json", "resolve"])
        .args(links);
    Out::of(cmd)
}

const SHARE: &str = "https://1drv.ms/f/s!AkMirrorFolder";

fn week_token(_: usize) -> Reply {
    token_reply("tok-A-0001", 7 * 86_400)
}

#[test]
fn the_personal_api_lists_a_folder_with_an_anonymous_token_that_never_leaves_memory() {
    let env = Env::new();
    let drive = onedrive_server(
        SHARE,
        &["a.mp4", "b.mp4"],
        &[],
        &[],
        week_token,
        only("tok-A-0001"),
    );
    ingest_items(
        &env,
        "od",
        &[
            json!({"id": "a", "urls": [SHARE]}),
            json!({"id": "x", "urls": [format!("{SHARE}#b.mp4")]}),
        ],
    );
    let mut vars = drive.vars();
    vars.push(("RUST_LOG", "debug".into()));
    let out = fetch(&env, &vars, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["verified"], 2);
    assert_stored(&env, "a", "video", &drive.files[0].1);
    assert_stored(&env, "x", "video", &drive.files[1].1);

    // One token, asked as OneDrive's web app asks.
    let tokens = drive.tokens();
    assert_eq!(tokens.len(), 1);
    let t = &tokens[0].0;
    assert_eq!(t.method, "POST");
    assert_eq!(t.header("appid"), Some("1141147648"));
    let body: Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(
        body,
        json!({"appId": "5cbed6ac-a083-4e14-b191-b4ba07653de2"})
    );
    // The folder was listed once, both pages, with the token; the API of old is not
    // asked; the share id is the redeem value of where the short link leads.
    let personal = drive.personal();
    assert_eq!(personal.len(), 3, "{personal:?}");
    for (r, status) in &personal {
        assert_eq!(*status, 200);
        assert_eq!(r.header("authorization"), Some("Badger tok-A-0001"));
        assert_eq!(r.header("prefer"), Some("autoredeem"));
    }
    assert!(
        personal[0]
            .0
            .path()
            .ends_with(&format!("/shares/{}/driveitem", drive.personal_id))
    );
    assert!(drive.old().is_empty());
    // Downloads never carry it.
    assert!(
        drive
            .under("/dl/")
            .iter()
            .all(|(r, _)| r.header("authorization").is_none())
    );
    // Never printed, logged, reported or stored.
    assert!(!out.stdout.contains("tok-A") && !out.stderr.contains("tok-A"));
    for f in files_under(env.dir.path()) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !bytes.windows(5).any(|w| w == b"tok-A"),
            "{} holds the token",
            f.display()
        );
    }
}

#[test]
fn an_expired_token_is_renewed_before_it_is_sent_again() {
    let env = Env::new();
    // The first token is past its expiry when it arrives: it serves the request it was
    // taken for, then a new one is taken before the next.
    let drive = onedrive_server(
        SHARE,
        &["a.mp4"],
        &[],
        &[],
        |hit| match hit {
            0 => token_reply("tok-old", -3600),
            _ => token_reply("tok-new", 7 * 86_400),
        },
        Arc::new(|r: &Req| {
            let ok = match r.header("authorization") {
                Some("Badger tok-old") => r.path().ends_with("/driveitem"),
                Some("Badger tok-new") => true,
                _ => false,
            };
            (!ok).then(|| Reply::status(401))
        }),
    );
    let out = resolve(&env, &drive, &[&format!("{SHARE}#a.mp4")]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let d = &out.json()["links"][0];
    assert_eq!(d["expected"]["size_bytes"], drive.files[0].1.len());
    assert!(d["trail"][0].as_str().unwrap().contains("(badger)"), "{d}");
    assert_eq!(drive.tokens().len(), 2, "exactly one new token");
    let personal = drive.personal();
    assert!(personal.iter().all(|(_, s)| *s == 200), "{personal:?}");
    assert_eq!(
        personal
            .iter()
            .filter(|(r, _)| r.header("authorization") == Some("Badger tok-new"))
            .count(),
        2,
        "both pages went with the new token"
    );
    assert!(!out.stderr.contains("tok-") && !out.stdout.contains("tok-"));
}

#[test]
fn a_refused_token_is_renewed_once_and_the_listing_goes_on() {
    let env = Env::new();
    // The token claims a week but the API stops taking it after the first page.
    let drive = onedrive_server(
        SHARE,
        &["a.mp4", "b.mp4"],
        &[],
        &[],
        |hit| token_reply(&format!("tok-{hit}"), 7 * 86_400),
        Arc::new(|r: &Req| {
            let ok = match r.header("authorization") {
                Some("Badger tok-0") => !r.path().ends_with("/page2"),
                Some("Badger tok-1") => true,
                _ => false,
            };
            (!ok).then(|| Reply::status(401))
        }),
    );
    let out = resolve(&env, &drive, &[&format!("{SHARE}#b.mp4")]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let d = &out.json()["links"][0];
    assert_eq!(d["via"], "folder-listing");
    assert!(d["trail"][0].as_str().unwrap().contains("(badger)"), "{d}");
    assert_eq!(drive.tokens().len(), 2, "exactly one new token");
    let statuses: Vec<u16> = drive.personal().iter().map(|(_, s)| *s).collect();
    assert_eq!(statuses, [200, 200, 401, 200]);
    assert!(drive.old().is_empty());
}

#[test]
fn a_token_refused_twice_gives_way_to_the_api_of_old_and_files_are_still_checked() {
    let env = Env::new();
    let drive = onedrive_server(
        SHARE,
        &["a.mp4", "b.mp4"],
        &["b.mp4"],
        &[],
        |hit| token_reply(&format!("tok-{hit}"), 7 * 86_400),
        Arc::new(|_: &Req| Some(Reply::status(401))),
    );
    ingest_items(
        &env,
        "od",
        &[
            json!({"id": "a", "urls": [SHARE]}),
            json!({"id": "b", "urls": [SHARE]}),
        ],
    );
    let out = fetch(&env, &drive.vars(), &[]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["verified"], 1);
    assert_stored(&env, "a", "video", &drive.files[0].1);
    let b = crate::fetch::must(&env, "b", "video");
    assert_eq!(b.error_class.as_deref(), Some("hash_mismatch"));
    // The first token, a second one, then the API of old (both pages, no token).
    assert_eq!(drive.tokens().len(), 2);
    let statuses: Vec<u16> = drive.personal().iter().map(|(_, s)| *s).collect();
    assert_eq!(statuses, [401, 401]);
    let old = drive.old();
    assert_eq!(old.len(), 3, "{old:?}");
    assert!(old.iter().all(|(r, _)| r.header("authorization").is_none()));

    // resolve says which path answered and why.
    let out = resolve(&env, &drive, &[&format!("{SHARE}#a.mp4")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let trail = out.json()["links"][0]["trail"][0].clone();
    let trail = trail.as_str().unwrap();
    assert!(trail.contains("(api)"), "{trail}");
    assert!(
        trail.contains("refused a renewed anonymous token"),
        "{trail}"
    );
}

#[test]
fn a_failing_token_endpoint_gives_way_to_the_api_of_old() {
    let env = Env::new();
    let drive = onedrive_server(
        SHARE,
        &["a.mp4"],
        &[],
        &[],
        |_| Reply::status(500),
        only("never"),
    );
    let out = resolve(&env, &drive, &[&format!("{SHARE}#a.mp4")]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let d = &out.json()["links"][0];
    let trail = d["trail"][0].as_str().unwrap();
    assert!(
        trail.contains("(api)") && trail.contains("no anonymous token"),
        "{trail}"
    );
    assert!(drive.personal().is_empty());
    assert_eq!(drive.old().len(), 3);
}

#[test]
fn a_next_page_on_another_host_is_refused() {
    let env = Env::new();
    let drive = onedrive_server(SHARE, &["a.mp4"], &[], &[], week_token, only("tok-A-0001"));
    // A share whose listing names a next page on another host (the same server under
    // another name: it would answer if asked).
    let id = "u!SG9zdGlsZQ";
    drive
        .srv
        .route(&format!("{PERSONAL}/shares/{id}/driveitem"), |_| {
            Reply::json(&json!({"id": "ROOT", "name": "x", "folder": {}}))
        });
    let elsewhere = format!("http://localhost:{}/elsewhere", drive.srv.addr.port());
    drive.srv.route(
        &format!("{PERSONAL}/shares/{id}/driveitem/children"),
        move |_| Reply::json(&json!({"value": [], "@odata.nextLink": elsewhere})),
    );
    let link = "https://onedrive.live.com/x/c/ABC/EQ?redeem=SG9zdGlsZQ#a.mp4";
    let out = resolve(&env, &drive, &[link]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let d = &out.json()["links"][0];
    assert_eq!(d["class"], "bad_response");
    assert!(
        d["error"].as_str().unwrap().contains("leaves the API host"),
        "{d}"
    );
    assert!(drive.srv.requests("/elsewhere").is_empty(), "never asked");
    assert!(
        drive.old().is_empty(),
        "a hostile listing is no reason to fall back"
    );
}

#[test]
fn resolve_offline_names_both_paths_in_order() {
    let env = Env::new();
    let redeemed = "https://onedrive.live.com/x/c/ABC123/EQres?e=Zz9&redeem=UmVkZWVt";
    let out = env.run(&[
        "--json",
        "resolve",
        "--offline",
        &format!("{SHARE}#a.mp4"),
        redeemed,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc = out.json();
    crate::json_output::check(&doc);
    let short = &doc["links"][0];
    assert_eq!(short["kind"], "onedrive");
    assert_eq!(short["paths"][0]["name"], "badger");
    assert_eq!(short["paths"][1]["name"], "api");
    assert!(
        short["paths"][0]["lookup_url"]
            .as_str()
            .unwrap()
            .starts_with("https://my.microsoftpersonalcontent.com/_api/v2.0/shares/u!")
    );
    assert!(
        short["paths"][1]["lookup_url"]
            .as_str()
            .unwrap()
            .starts_with("https://api.onedrive.com/v1.0/shares/u!")
    );
    assert_eq!(short["host"], "my.microsoftpersonalcontent.com:443");
    assert!(
        doc["links"][1]["paths"][0]["lookup_url"]
            .as_str()
            .unwrap()
            .ends_with("/shares/u!UmVkZWVt/driveitem")
    );
    // Other kinds have no paths.
    let out = env.run(&["--json", "resolve", "--offline", "https://h.example/a.mp4"]);
    assert_eq!(out.json()["links"][0]["paths"], json!([]));

    let out = env.run(&["resolve", "--offline", &format!("{SHARE}#a.mp4")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("path          badger: https://my.microsoftpersonalcontent.com/"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("then path     api: https://api.onedrive.com/v1.0/"),
        "{}",
        out.stdout
    );
}
