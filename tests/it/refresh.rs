//! `pmv-data refresh`: one run at a time, only new work, kill-safety, bit-rot repair,
//! time budgets, failure thresholds and configuration errors, against real videos
//! served over HTTP on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::httpd::{Delivery, Reply, Server, sha256};
use crate::shard_util::{Spec, make_video};
use crate::util::{Env, Out, s};

/// A dataset of small real videos served over HTTP, and a config that refreshes it.
struct Fixture {
    env: Env,
    srv: Server,
    /// (id, bytes) of every video the server has.
    videos: Vec<(String, Vec<u8>)>,
    config: PathBuf,
    /// While set, video bodies drip (when the fixture was made with a drip).
    slow: Arc<AtomicBool>,
}

const RECIPE: &str = r#"{ frames = 4, stride = 2, size = "32x32" }"#;

impl Fixture {
    /// `n` videos; the first `listed` are in the manifest. `drip` slows every video
    /// body down to about that many bytes per 10 ms.
    fn new(n: usize, listed: usize, drip: Option<usize>, refresh: &str) -> Fixture {
        Fixture::with_fetch(n, listed, drip, refresh, "")
    }

    /// As [`Fixture::new`], with more `[fetch]` settings.
    fn with_fetch(
        n: usize,
        listed: usize,
        drip: Option<usize>,
        refresh: &str,
        fetch: &str,
    ) -> Fixture {
        let env = Env::new();
        let srv = Server::start();
        let dir = env.path("src");
        std::fs::create_dir_all(&dir).unwrap();
        let mut videos = vec![];
        let slow = Arc::new(AtomicBool::new(true));
        for i in 0..n {
            let id = format!("clip{i:02}");
            let hue = format!("hue=h={}", i * 37);
            let file = format!("{id}.mp4");
            let mut spec = Spec::h264(&file, 64, 96, 1.0);
            spec.filter = Some(&hue);
            let bytes = std::fs::read(make_video(&dir, &spec)).unwrap();
            let data = bytes.clone();
            let etag = format!("\"{}\"", &sha256(&data)[..16]);
            let dripping = Arc::clone(&slow);
            srv.route(&format!("/v/{id}.mp4"), move |r| {
                let reply = Reply::file(r, &data, Some(&etag));
                match drip {
                    Some(chunk) if dripping.load(Ordering::SeqCst) => {
                        reply.delivery(Delivery::Drip {
                            chunk,
                            every: Duration::from_millis(10),
                        })
                    }
                    _ => reply,
                }
            });
            videos.push((id, bytes));
        }
        env.write("cfg/classes.txt", "even\nodd\n");
        let config = env.write(
            "cfg/pmv.toml",
            format!(
                "[refresh]\n{refresh}\n\n[fetch]\nretries = 1\nretry_base = 0.05\n{fetch}\n\n\
                 [[datasets]]\nname = \"d\"\nformat = \"jsonl\"\nmanifests = [\"items.jsonl\"]\n\
                 classes = \"classes.txt\"\nrecipes = [{RECIPE}]\n"
            ),
        );
        let f = Fixture {
            env,
            srv,
            videos,
            config,
            slow,
        };
        f.list(&(0..listed).collect::<Vec<_>>());
        f
    }

    /// Writes the manifest listing the videos with these indices.
    fn list(&self, which: &[usize]) {
        let mut text = String::new();
        for &i in which {
            let id = &self.videos[i].0;
            let split = if i % 4 == 3 { "val" } else { "train" };
            let label = if i % 2 == 0 { "even" } else { "odd" };
            text.push_str(&format!(
                "{{\"id\": \"{id}\", \"urls\": [\"{}\"], \"label\": \"{label}\", \"split\": \"{split}\"}}\n",
                self.srv.url(&format!("/v/{id}.mp4"))
            ));
        }
        self.env.write("cfg/items.jsonl", text);
    }

    fn refresh(&self, extra: &[&str]) -> Out {
        let mut args = vec!["--config", s(&self.config), "--json", "refresh"];
        args.extend_from_slice(extra);
        self.env.run(&args)
    }

    fn spawn(&self, extra: &[&str]) -> Child {
        self.env
            .command()
            .args(["--config", s(&self.config), "refresh"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Requests for video bodies so far.
    fn video_requests(&self) -> usize {
        self.srv
            .log()
            .iter()
            .filter(|(r, _)| r.path().starts_with("/v/"))
            .count()
    }

    /// Whether a catalog with its schema exists (a run killed while creating it leaves
    /// an empty database, which the next run migrates).
    fn has_catalog(&self) -> bool {
        self.env.root.join("catalog.sqlite").exists()
            && self
                .env
                .query::<i64>("SELECT count(*) FROM sqlite_schema WHERE name = 'files'")
                == 1
    }

    /// (item, state, path, sha256) of every video file in the catalog.
    fn files(&self) -> Vec<(String, String, Option<String>, Option<String>)> {
        if !self.has_catalog() {
            return vec![]; // killed before the catalog was made
        }
        let c = self.env.catalog();
        let mut stmt = c
            .prepare(
                "SELECT i.key, f.state, f.path, f.sha256 FROM files f JOIN items i ON i.id = \
                 f.item_id WHERE f.role = 'video' ORDER BY i.key",
            )
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Checks that every stored video is what the server has, that nothing but checked
    /// bytes sits under a final name, and that every live shard matches its hash.
    fn assert_consistent(&self) {
        let root = &self.env.root;
        if !self.has_catalog() {
            assert!(!root.join("videos/d").exists(), "files but no catalog");
            return;
        }
        for (id, state, path, sha) in self.files() {
            if state == "verified" || state == "sharded" {
                let path = root.join(path.unwrap());
                let bytes = std::fs::read(&path).unwrap();
                let want = &self.videos.iter().find(|(v, _)| *v == id).unwrap().1;
                assert_eq!(&bytes, want, "{id}: stored bytes differ from the source");
                assert_eq!(sha.unwrap(), sha256(want));
            }
        }
        let recorded: Vec<String> = self
            .env
            .strings("SELECT path FROM files WHERE path IS NOT NULL");
        if let Ok(dir) = std::fs::read_dir(root.join("videos/d")) {
            for e in dir {
                let name = e.unwrap().file_name().into_string().unwrap();
                if name.ends_with(".partial") {
                    continue; // resumed by the next run
                }
                let rel = format!("videos/d/{name}");
                if !recorded.contains(&rel) {
                    // Renamed after its checks, killed before the catalog recorded it:
                    // the next run adopts it. Its bytes must be the right ones.
                    let id = name.trim_end_matches(".mp4");
                    let want = &self.videos.iter().find(|(v, _)| v == id).unwrap().1;
                    assert_eq!(&std::fs::read(root.join(&rel)).unwrap(), want, "{rel}");
                }
            }
        }
        for (path, sha) in self
            .env
            .strings("SELECT path || ' ' || sha256 FROM shards WHERE state = 'live'")
            .iter()
            .map(|l| l.split_once(' ').unwrap())
        {
            let bytes = std::fs::read(root.join(path)).unwrap();
            assert_eq!(sha256(&bytes), sha, "{path}");
        }
    }

    fn samples(&self) -> i64 {
        self.env.query(
            "SELECT count(*) FROM samples sa JOIN shards sh ON sh.id = sa.shard_id \
             WHERE sh.state = 'live'",
        )
    }
}

fn ok_json(out: &Out) -> serde_json::Value {
    assert_eq!(
        out.code, 0,
        "refresh failed: {}\n{}",
        out.stdout, out.stderr
    );
    out.json()
}

#[test]
fn the_example_configuration_is_valid() {
    let env = Env::new();
    let example = crate::util::repo().join("manifests/pmv.example.toml");
    // `status` loads (and so validates) the configuration; the example names a root
    // that does not exist here, so --root wins.
    let out = env.run(&["--config", s(&example), "status"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let cfg = pmv_pipeline::config::Config::load(&example).unwrap();
    let plan = cfg.plan.unwrap();
    assert_eq!(plan.datasets[0].name, "pmv400");
    for m in &plan.datasets[0].manifests {
        assert!(m.is_file(), "{}", m.display());
    }
    assert_eq!(plan.failure_exit_code, 4);
}

#[test]
fn a_first_run_does_everything_and_a_second_does_nothing() {
    let f = Fixture::new(6, 6, None, "verify_fraction = 0");
    let j = ok_json(&f.refresh(&[]));
    assert_eq!(j["items_new"], 6, "{j}");
    assert_eq!(j["files_verified"], 6, "{j}");
    assert_eq!(j["samples_written"], 6, "{j}");
    assert!(
        j["shards_written"].as_u64().unwrap() >= 2,
        "train and val: {j}"
    );
    assert_eq!(j["datasets"][0]["ingest"], "ingested");
    let d = f.env.dataset("d");
    assert_eq!(d["due"], 0, "{d}");
    assert_eq!(d["shards"][0]["samples"], 6, "{d}");
    assert_eq!(d["shards"][0]["backlog"], 0, "{d}");
    assert!(Path::new(j["report"].as_str().unwrap()).is_file(), "{j}");
    f.assert_consistent();
    let before = f.video_requests();
    let shards: i64 = f.env.query("SELECT count(*) FROM shards");

    let started = Instant::now();
    let j = ok_json(&f.refresh(&[]));
    let took = started.elapsed();
    assert_eq!(j["datasets"][0]["ingest"], "unchanged", "{j}");
    assert_eq!(j["files_verified"], 0, "{j}");
    assert_eq!(j["shards_written"], 0, "{j}");
    assert_eq!(
        f.video_requests(),
        before,
        "a no-change run downloads nothing"
    );
    assert_eq!(f.env.query::<i64>("SELECT count(*) FROM shards"), shards);
    assert!(j["stopped"].is_null(), "{j}");
    // Reported, not asserted: how long a run with nothing to do takes.
    eprintln!("no-change refresh took {took:?}");
    let runs: i64 = f
        .env
        .query("SELECT count(*) FROM runs WHERE command = 'refresh' AND status = 'ok'");
    assert_eq!(runs, 2);
}

#[test]
fn cron_output_is_one_line() {
    let f = Fixture::new(2, 2, None, "verify_fraction = 0");
    let out = f.env.run(&["--config", s(&f.config), "refresh"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    assert!(
        out.stdout.starts_with("refresh: 1 datasets"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.is_empty(), "stderr under cron: {}", out.stderr);
}

#[test]
fn two_refreshes_at_once_the_second_exits_75() {
    // Slow bodies keep the first run busy for a while.
    let f = Fixture::new(3, 3, Some(256), "verify_fraction = 0");
    let first = f.spawn(&[]);
    // Wait until the first holds the lock and is downloading.
    let deadline = Instant::now() + Duration::from_secs(30);
    while f.video_requests() == 0 {
        assert!(Instant::now() < deadline, "the first refresh never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = f.refresh(&[]);
    assert_eq!(second.code, 75, "{}", second.stderr);
    assert!(second.stderr.contains("refresh"), "{}", second.stderr);
    assert!(
        second.stderr.contains("pid"),
        "names the holder: {}",
        second.stderr
    );
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    f.assert_consistent();
    assert_eq!(f.samples(), 3);
}

#[test]
fn killed_at_any_point_a_rerun_finishes_and_fetches_nothing_twice() {
    let f = Fixture::new(8, 8, Some(1024), "verify_fraction = 0");
    // Kill the run at growing delays: during ingest, fetch and shard.
    for (round, delay_ms) in [40u64, 150, 400, 900, 1500].into_iter().enumerate() {
        let verified_before: Vec<String> = f
            .files()
            .into_iter()
            .filter(|(_, st, _, _)| st == "verified" || st == "sharded")
            .map(|(id, ..)| id)
            .collect();
        let log_before = f.srv.log().len();
        let mut child = f.spawn(&[]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // status reads the catalog whatever instant the writer died at.
        let status = f.env.run(&["status"]);
        assert_eq!(status.code, 0, "round {round}: {}", status.stderr);
        // Nothing already verified was asked for again.
        for (req, _) in &f.srv.log()[log_before..] {
            for id in &verified_before {
                assert_ne!(
                    req.path(),
                    format!("/v/{id}.mp4"),
                    "round {round}: {id} fetched again"
                );
            }
        }
        f.assert_consistent();
    }
    let j = ok_json(&f.refresh(&[]));
    assert!(j["stopped"].is_null(), "{j}");
    f.assert_consistent();
    assert!(
        f.files().iter().all(|(_, st, _, _)| st == "sharded"),
        "{:?}",
        f.files()
    );
    assert_eq!(f.samples(), 8);
    // No item has two live samples of the recipe.
    let dup: i64 = f.env.query(
        "SELECT count(*) FROM (SELECT sa.item_id FROM samples sa JOIN shards sh ON \
         sh.id = sa.shard_id WHERE sh.state = 'live' GROUP BY sa.item_id HAVING count(*) > 1)",
    );
    assert_eq!(dup, 0);
    let before = f.video_requests();
    ok_json(&f.refresh(&[]));
    assert_eq!(f.video_requests(), before);
}

#[test]
fn a_manifest_that_grows_and_shrinks() {
    let f = Fixture::new(7, 5, None, "verify_fraction = 0");
    ok_json(&f.refresh(&[]));
    assert_eq!(f.samples(), 5);
    // Two items come, one goes.
    f.list(&[0, 1, 2, 3, 5, 6]);
    let j = ok_json(&f.refresh(&[]));
    assert_eq!(j["items_new"], 2, "{j}");
    assert_eq!(j["items_removed"], 1, "{j}");
    assert_eq!(j["files_verified"], 2, "{j}");
    assert_eq!(j["samples_written"], 2, "{j}");
    let state: String = f.env.query("SELECT state FROM items WHERE key = 'clip04'");
    assert_eq!(state, "removed");
    // The removed item's video and samples are kept.
    let path: String = f.env.query(
        "SELECT f.path FROM files f JOIN items i ON i.id = f.item_id WHERE i.key = 'clip04'",
    );
    assert!(f.env.root.join(path).is_file());
    assert_eq!(f.samples(), 7);
    f.assert_consistent();
}

#[test]
fn flipped_bytes_in_a_video_and_a_shard_are_found_and_repaired() {
    let f = Fixture::new(4, 4, None, "verify_fraction = 0");
    ok_json(&f.refresh(&[]));
    let root = &f.env.root;
    // One byte of a stored video, one byte of a shard.
    let video: String = f.env.query(
        "SELECT f.path FROM files f JOIN items i ON i.id = f.item_id WHERE i.key = 'clip01'",
    );
    let flip = |p: &Path, at: usize| {
        let mut b = std::fs::read(p).unwrap();
        b[at] ^= 0x40;
        std::fs::write(p, b).unwrap();
    };
    flip(&root.join(&video), 2000);
    let (shard_id, shard_path): (i64, String) = f
        .env
        .catalog()
        .query_row(
            "SELECT id, path FROM shards WHERE state = 'live' ORDER BY id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let samples_before: i64 = f.env.query(&format!(
        "SELECT count(*) FROM samples WHERE shard_id = {shard_id}"
    ));
    flip(&root.join(&shard_path), 3000);
    let requests = f.video_requests();

    let j = ok_json(&f.refresh(&["--verify-all"]));
    assert_eq!(j["rehash"]["changed"], 1, "{j}");
    assert_eq!(
        j["files_verified"], 1,
        "the changed video is fetched again: {j}"
    );
    assert!(f.video_requests() > requests);
    assert_eq!(j["shard_check"]["damaged"], 1, "{j}");
    assert_eq!(j["shard_check"]["rebuilt"], 1, "{j}");
    // The damaged shard is replaced, under a new name, by one with the same samples.
    let old_state: String = f
        .env
        .query(&format!("SELECT state FROM shards WHERE id = {shard_id}"));
    assert_eq!(old_state, "replaced");
    let (new_path, new_samples): (String, i64) = f
        .env
        .catalog()
        .query_row(
            "SELECT sh.path, (SELECT count(*) FROM samples sa WHERE sa.shard_id = sh.id) \
             FROM shards sh WHERE sh.state = 'live' ORDER BY sh.id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_ne!(new_path, shard_path);
    assert_eq!(new_samples, samples_before);
    // The quarantined video is kept for inspection.
    assert!(std::fs::read_dir(root.join("quarantine")).unwrap().count() > 0);
    f.assert_consistent();
    // The next run finds nothing wrong.
    let j = ok_json(&f.refresh(&["--verify-all"]));
    assert_eq!(j["rehash"]["changed"], 0, "{j}");
    assert_eq!(j["shard_check"]["damaged"], 0, "{j}");
    assert_eq!(j["samples_written"], 0, "nothing sharded twice: {j}");
}

#[test]
fn a_time_budget_ends_the_run_cleanly_and_the_next_one_goes_on() {
    // About 13 KB/s per video (each takes most of a second), two at a time.
    let f = Fixture::with_fetch(6, 6, Some(128), "verify_fraction = 0", "concurrency = 2");
    let out = f.refresh(&["--max-duration", "1s"]);
    let j = ok_json(&out);
    assert_eq!(j["stopped"], "time budget", "{j}");
    assert!(j["duration_s"].as_f64().unwrap() < 60.0);
    let fetch = &j["fetch"][0];
    assert_eq!(fetch["dataset"], "d");
    assert!(fetch["not_started"].as_u64().unwrap() > 0, "{j}");
    assert!(
        j["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "shard"),
        "{j}"
    );
    f.assert_consistent();
    let status: String = f
        .env
        .query("SELECT status FROM runs WHERE command = 'refresh'");
    assert_eq!(status, "ok");
    let j = ok_json(&f.refresh(&[]));
    assert!(j["stopped"].is_null(), "{j}");
    assert_eq!(f.samples(), 6);
    f.assert_consistent();
}

#[test]
fn a_time_budget_stops_the_downloads_in_flight_and_the_next_run_resumes_them() {
    // 100 bytes a second per video: each would take most of a minute.
    let f = Fixture::with_fetch(
        3,
        3,
        Some(1),
        "verify_fraction = 0",
        "concurrency = 3\ntimeout = 120",
    );
    let mut cmd = f.env.command();
    cmd.args([
        "--config",
        s(&f.config),
        "--json",
        "refresh",
        "--max-duration",
        "2s",
    ]);
    let budget = Duration::from_secs(2);
    let (out, took) = crate::fetch_budget::run_within(cmd, budget + pmv_pipeline::fetch::GRACE);
    assert!(took >= budget, "{took:?}");
    let j = ok_json(&out);
    assert_eq!(j["stopped"], "time budget", "{j}");
    let fetch = &j["fetch"][0];
    assert_eq!(fetch["dataset"], "d");
    assert_eq!(fetch["interrupted"], 3, "{j}");
    assert_eq!(fetch["failed_transient"], 0, "{j}");
    assert!(
        j["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "shard"),
        "{j}"
    );
    f.assert_consistent();
    let partials = (0..3)
        .filter(|i| {
            f.env
                .root
                .join(format!("videos/d/clip{i:02}.partial"))
                .metadata()
                .is_ok_and(|m| m.len() > 0)
        })
        .count();
    assert_eq!(partials, 3, "the partial files are kept");

    f.slow.store(false, Ordering::SeqCst);
    let j = ok_json(&f.refresh(&[]));
    assert!(j["stopped"].is_null(), "{j}");
    assert_eq!(j["fetch"][0]["dataset"], "d");
    assert_eq!(j["fetch"][0]["verified"], 3, "{j}");
    assert!(
        j["fetch"][0]["resumed_bytes"].as_u64().unwrap() > 0,
        "resumed: {j}"
    );
    assert_eq!(f.samples(), 3);
    f.assert_consistent();
}

#[test]
fn the_minimum_speed_of_the_config_file_drops_crawling_servers() {
    let f = Fixture::with_fetch(
        2,
        2,
        Some(1),
        "verify_fraction = 0",
        "min_speed = \"1 KiB\"\nmin_speed_time = 1",
    );
    let j = ok_json(&f.refresh(&[]));
    assert_eq!(j["files_failed"], 2, "{j}");
    assert_eq!(j["failures"]["too_slow"], 2, "{j}");
    f.assert_consistent();
}

#[test]
fn private_hosts_are_fetched_by_a_refresh_only_when_asked() {
    let f = Fixture::new(2, 2, None, "verify_fraction = 0");
    let refresh = |extra: &[&str]| {
        let mut cmd = f.env.command();
        cmd.env_remove("PMV_FETCH_ALLOW_PRIVATE_HOSTS")
            .args(["--config", s(&f.config), "--json", "refresh"])
            .args(extra);
        crate::util::Out::of(cmd)
    };
    let j = ok_json(&refresh(&[]));
    assert_eq!(j["failures"]["private_host"], 2, "{j}");
    assert_eq!(
        f.video_requests(),
        0,
        "nothing was asked of the private host"
    );
    let j = ok_json(&refresh(&["--allow-private-hosts"]));
    assert_eq!(j["files_verified"], 2, "the opt-in brings them back: {j}");
    assert_eq!(f.samples(), 2);
}

#[test]
fn failures_past_the_threshold_give_the_configured_status() {
    let f = Fixture::new(
        3,
        3,
        None,
        "verify_fraction = 0\nmax_failures = 0\nfailure_exit_code = 9",
    );
    // A fourth item whose link is dead.
    let mut text = std::fs::read_to_string(f.env.path("cfg/items.jsonl")).unwrap();
    text.push_str(&format!(
        "{{\"id\": \"gone\", \"urls\": [\"{}\"], \"label\": \"odd\", \"split\": \"train\"}}\n",
        f.srv.url("/v/gone.mp4")
    ));
    f.env.write("cfg/items.jsonl", text);
    f.srv.route("/v/gone.mp4", |_| Reply::status(404));
    let out = f.refresh(&[]);
    assert_eq!(out.code, 9, "{}\n{}", out.stdout, out.stderr);
    let j = out.json();
    assert_eq!(j["files_failed"], 1, "{j}");
    assert_eq!(j["failures"]["http_404"], 1, "{j}");
    assert_eq!(j["failed_threshold"], true);
    // The good items are done all the same.
    assert_eq!(f.samples(), 3);
}

#[test]
fn a_config_with_errors_does_nothing_and_names_the_line() {
    let env = Env::new();
    let cfg = env.write(
        "pmv.toml",
        "[refresh]\nmax_duration = \"5h\"\nverify_fraction = 2\n\n[[datasets]]\nname = \"d\"\n\
         format = \"jsonl\"\nmanifests = [\"items.jsonl\"]\n",
    );
    let out = env.run(&["--config", s(&cfg), "refresh"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("line 3"), "{}", out.stderr);
    assert!(out.stderr.contains("verify_fraction"), "{}", out.stderr);
    assert!(!env.root.exists(), "nothing may be created");

    let cfg = env.write(
        "pmv.toml",
        "[[datasets]]\nname = \"d\"\nformat = \"jsonl\"\nmanifests = [\"items.jsonl\"]\n\
         recipes = [\"no-such-recipe\"]\n",
    );
    env.write(
        "items.jsonl",
        "{\"id\": \"a\", \"urls\": [\"http://127.0.0.1:9/a.mp4\"]}\n",
    );
    let out = env.run(&["--config", s(&cfg), "refresh"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("no-such-recipe"), "{}", out.stderr);
    // The run is recorded as failed and nothing was ingested.
    let items: i64 = env.query("SELECT count(*) FROM items");
    assert_eq!(items, 0);

    let out = env.run(&["refresh"]);
    assert_eq!(out.code, 2, "no configuration: {}", out.stderr);
    assert!(out.stderr.contains("[[datasets]]"), "{}", out.stderr);
}
