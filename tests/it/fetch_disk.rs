//! A disk too full for the downloads: a file that does not fit with the space kept
//! free is skipped before a byte is written, a disk that fills up while a file of
//! unknown length is written stops the run and its partial file is removed, the error
//! names the disk and its free space (not the catalog), and later runs go on: the
//! catalog stays writable and, once space is freed, everything is fetched.
//!
//! On a real small file system where the test can mount one (a tmpfs in a user and
//! mount namespace), and always through the fetch's test hook (debug builds), which
//! takes the data root's files as the whole contents of a disk of a given size.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::fetch::{FAST, ingest_items};
use crate::httpd::{Reply, Server, fake_mp4};
use crate::util::{Env, Out, s};

/// The disk's size, and what fills most of it before the runs.
const DISK: u64 = 8 << 20;
const FILLER: usize = 5_000_000;

/// Items in fetch order: `a`, `c`, `e` small; `b` too large for the room left while
/// the filler is there (its length announced); `d` larger than the room left, its
/// length not announced, so that writing it fills the disk.
fn serve(srv: &Server) -> Vec<(&'static str, Vec<u8>)> {
    let files = vec![
        ("a", fake_mp4(100_000, 71)),
        ("b", fake_mp4(2_800_000, 72)),
        ("c", fake_mp4(100_000, 73)),
        ("d", fake_mp4(3_200_000, 74)),
        ("e", fake_mp4(100_000, 75)),
    ];
    for (id, data) in &files {
        let path = format!("/{id}.mp4");
        if *id == "d" {
            let d = data.clone();
            srv.route(&path, move |_| {
                let mut r = Reply::new(200, d.clone());
                r.no_length = true;
                r
            });
        } else {
            srv.file(&path, data.clone());
        }
    }
    files
}

fn manifest(srv: &Server) -> String {
    ["a", "b", "c", "d", "e"]
        .iter()
        .map(|id| {
            format!(
                "{}\n",
                json!({"id": id, "urls": [srv.url(&format!("/{id}.mp4"))]})
            )
        })
        .collect()
}

/// What the runs printed: a fetch with the filler there, `status`, the same fetch
/// again, and a fetch once the filler is deleted, with `status` after it; and the
/// files in `videos/t` after the first fetch.
struct Runs {
    fetch1: Out,
    listing1: Vec<String>,
    status1: Out,
    fetch2: Out,
    fetch3: Out,
    status3: Out,
}

fn states(status: &Out) -> Value {
    assert_eq!(status.code, 0, "status: {}", status.stderr);
    let j = status.json();
    j["datasets"][0].clone()
}

fn check(r: &Runs, mount: &str) {
    // 1. b is skipped before a byte is written, d fills the disk and stops the run;
    //    what was done is recorded.
    assert_eq!(r.fetch1.code, 1, "{}\n{}", r.fetch1.stdout, r.fetch1.stderr);
    let err = &r.fetch1.stderr;
    assert!(
        err.contains(&format!("the disk mounted at {mount} is full")),
        "{err}"
    );
    assert!(err.contains("t/d video"), "{err}");
    assert!(err.contains("the partial file was removed"), "{err}");
    assert!(!err.contains("database or disk is full"), "{err}");
    assert!(
        !r.listing1.iter().any(|n| n == "d.partial"),
        "{:?}",
        r.listing1
    );
    for name in ["a.mp4", "c.mp4"] {
        assert!(r.listing1.iter().any(|n| n == name), "{:?}", r.listing1);
    }
    let d = states(&r.status1);
    assert_eq!(d["states"]["verified"], 2, "{d}");
    assert_eq!(d["states"]["failed_transient"], 2, "b and d: {d}");
    assert_eq!(d["failures"]["no_space"], 2, "{d}");

    // 2. The same disk: the catalog is writable, the run says the same.
    assert_eq!(r.fetch2.code, 1, "{}", r.fetch2.stderr);
    assert!(
        r.fetch2
            .stderr
            .contains(&format!("the disk mounted at {mount}"))
    );
    assert!(!r.fetch2.stderr.contains("database or disk is full"));

    // 3. Space freed: everything is fetched, nothing had to be cleaned by hand.
    assert_eq!(r.fetch3.code, 0, "{}\n{}", r.fetch3.stdout, r.fetch3.stderr);
    assert_eq!(r.fetch3.json()["verified"], 3, "{}", r.fetch3.stdout);
    let d = states(&r.status3);
    assert_eq!(d["states"]["verified"], 5, "{d}");
}

fn fetch_args(cmd: &mut Command) {
    cmd.envs(FAST)
        .env("PMV_FETCH_CONCURRENCY", "1")
        .env_remove("PMV_FETCH_MIN_FREE");
}

#[test]
fn a_full_disk_is_named_and_later_runs_go_on_through_the_test_hook() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the fetch's disk hook exists in debug builds only");
        return;
    }
    let env = Env::new();
    let srv = Server::start();
    let files = serve(&srv);
    let items: Vec<Value> = files
        .iter()
        .map(|(id, _)| json!({"id": id, "urls": [srv.url(&format!("/{id}.mp4"))]}))
        .collect();
    ingest_items(&env, "t", &items);
    let filler = env.root.join("filler.bin");
    std::fs::write(&filler, vec![0u8; FILLER]).unwrap();
    let run = |args: &[&str]| {
        let mut cmd = env.command();
        fetch_args(&mut cmd);
        cmd.env("PMV_DATA_TEST_DISK_SIZE", DISK.to_string())
            .arg("--json")
            .args(args);
        Out::of(cmd)
    };
    let fetch1 = run(&["fetch"]);
    let listing1 = names(&env.root.join("videos/t"));
    let status1 = run(&["status"]);
    let fetch2 = run(&["fetch"]);
    std::fs::remove_file(&filler).unwrap();
    let fetch3 = run(&["fetch"]);
    let status3 = run(&["status"]);
    let mount = pmv_core::disk::mount_point(&env.root);
    check(
        &Runs {
            fetch1,
            listing1,
            status1,
            fetch2,
            fetch3,
            status3,
        },
        &mount.display().to_string(),
    );
    for (id, data) in &files {
        crate::fetch::assert_stored(&env, id, "video", data);
    }
}

/// A prefix that runs a command in new user and mount namespaces, if this machine
/// allows one (as an unprivileged user, or as root).
fn namespace() -> Option<Vec<&'static str>> {
    let tries: [&[&str]; 2] = [
        &["unshare", "--user", "--map-root-user", "--mount"],
        &["unshare", "--mount"],
    ];
    tries.into_iter().find_map(|p| {
        let ok = Command::new(p[0])
            .args(&p[1..])
            .args([
                "sh",
                "-c",
                "d=$(mktemp -d) && mount -t tmpfs -o size=1m t \"$d\" && umount \"$d\" && rmdir \"$d\"",
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| p.to_vec())
    })
}

fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_full_disk_is_named_and_later_runs_go_on_on_a_small_file_system() {
    let Some(prefix) = namespace() else {
        eprintln!(
            "skipped: no mount namespace here (unshare --user --mount, or root's \
             unshare --mount, was refused); the test-hook variant covers this"
        );
        return;
    };
    let env = Env::new();
    let srv = Server::start();
    let files = serve(&srv);
    let list = env.write("m.jsonl", manifest(&srv));
    let disk = env.path("disk");
    let out = env.path("out");
    std::fs::create_dir_all(&disk).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    // Every step in one namespace: the file system lives as long as the script.
    let script = r#"
        set -u
        mount -t tmpfs -o size="$SIZE" pmv-test "$DISK" || exit 90
        head -c "$FILLER" /dev/zero > "$DISK/filler.bin"
        step() { name=$1; shift; "$BIN" --root "$DISK/root" --json "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"; echo $? > "$OUT/$name.code"; }
        step ingest ingest --dataset t --format jsonl --split train "$LIST"
        step fetch1 fetch
        ls "$DISK/root/videos/t" > "$OUT/listing1"
        step status1 status
        step fetch2 fetch
        rm "$DISK/filler.bin"
        step fetch3 fetch
        step status3 status
        for f in "$DISK"/root/videos/t/*.mp4; do sha256sum "$f"; done > "$OUT/sums"
    "#;
    let mut cmd = Command::new(prefix[0]);
    cmd.args(&prefix[1..]).args(["sh", "-c", script]);
    cmd.env_remove("PMV_DATA_ROOT")
        .env_remove("PMV_DATA_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("PMV_DATA_TEST_DISK_SIZE")
        .env("PMV_FETCH_ALLOW_PRIVATE_HOSTS", "1")
        .env("BIN", env!("CARGO_BIN_EXE_pmv-data"))
        .env("DISK", &disk)
        .env("OUT", &out)
        .env("LIST", &list)
        .env("SIZE", DISK.to_string())
        .env("FILLER", FILLER.to_string());
    fetch_args(&mut cmd);
    let ran = Out::of(cmd);
    assert_eq!(ran.code, 0, "{}\n{}", ran.stdout, ran.stderr);
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let step = |name: &str| Out {
        code: read(&format!("{name}.code")).trim().parse().unwrap_or(-1),
        stdout: read(&format!("{name}.out")),
        stderr: read(&format!("{name}.err")),
    };
    assert_eq!(step("ingest").code, 0, "{}", step("ingest").stderr);
    check(
        &Runs {
            fetch1: step("fetch1"),
            listing1: read("listing1").lines().map(str::to_owned).collect(),
            status1: step("status1"),
            fetch2: step("fetch2"),
            fetch3: step("fetch3"),
            status3: step("status3"),
        },
        s(&disk.canonicalize().unwrap()),
    );
    let sums = read("sums");
    for (id, data) in &files {
        let line = format!(
            "{}  {}/root/videos/t/{id}.mp4",
            crate::httpd::sha256(data),
            disk.display()
        );
        assert!(sums.contains(&line), "{id}: {sums}");
    }
}
