//! The command line: exit codes, the root lock, configuration, completions, doctor.

use pmv_data::root::DataRoot;

use crate::util::{Env, s};

#[test]
fn a_second_writer_exits_75_and_names_the_holder() {
    let env = Env::new();
    let root = DataRoot::new(&env.root);
    root.ensure().unwrap();
    let held = root.lock("refresh").unwrap();
    let f = env.write("train.csv", "a.mp4,1\n");
    let out = env.run(&["ingest", "--dataset", "p", "--format", "pmv400", s(&f)]);
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("another pmv-data process holds the data root"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("pid {}", std::process::id())),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("refresh"), "{}", out.stderr);
    // status reads without the lock.
    assert_eq!(env.run(&["status"]).code, 0);
    drop(held);
    assert_eq!(
        env.run(&["ingest", "--dataset", "p", "--format", "pmv400", s(&f)])
            .code,
        0
    );
}

#[test]
fn a_lock_left_by_a_killed_process_is_taken_over() {
    let env = Env::new();
    std::fs::create_dir_all(&env.root).unwrap();
    // A stale lock file names a process that is gone; flock was released with it.
    std::fs::write(
        env.root.join(".lock"),
        "pid 999999 (ingest, started 2026-01-01T00:00:00Z)\n",
    )
    .unwrap();
    let f = env.write("train.csv", "a.mp4,1\n");
    let out = env.run(&["ingest", "--dataset", "p", "--format", "pmv400", s(&f)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    let f = env.write("train.csv", "a.mp4,1\n");
    for args in [
        vec!["ingest", "--dataset", "p", "--format", "nope", s(&f)],
        vec!["ingest", "--format", "pmv400", s(&f)],
        vec![
            "ingest",
            "--dataset",
            "p",
            "--format",
            "pmv400",
            "--url-template",
            "https://h/x.mp4",
            s(&f),
        ],
        vec![
            "ingest",
            "--dataset",
            "p",
            "--format",
            "pmv400",
            "--split",
            "tr ain",
            s(&f),
        ],
        vec![
            "ingest",
            "--dataset",
            "p",
            "--format",
            "pmv400",
            "--split-ratios",
            "train=0.5",
            s(&f),
        ],
        vec!["frobnicate"],
    ] {
        let out = env.run(&args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
    }
    let out = env.run(&[
        "ingest",
        "--dataset",
        "p",
        "--format",
        "pmv400",
        "--url-template",
        "https://h/x.mp4",
        s(&f),
    ]);
    assert!(
        out.stderr
            .contains("--url-template: URL template 'https://h/x.mp4' has no {id} placeholder"),
        "{}",
        out.stderr
    );
}

#[test]
fn errors_name_the_path_and_exit_1() {
    let env = Env::new();
    let missing = env.path("nowhere.csv");
    let out = env.run(&[
        "ingest",
        "--dataset",
        "p",
        "--format",
        "pmv400",
        "--split",
        "train",
        s(&missing),
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(&missing.display().to_string()),
        "{}",
        out.stderr
    );
    let unnamed = env.write("list.csv", "a.mp4,1\n");
    let out = env.run(&[
        "ingest",
        "--dataset",
        "p",
        "--format",
        "pmv400",
        s(&unnamed),
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("cannot tell the split of"),
        "{}",
        out.stderr
    );
    let out = env.run(&[
        "ingest",
        "--dataset",
        "../x",
        "--format",
        "pmv400",
        "--split",
        "train",
        s(&unnamed),
    ]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("dataset name '../x'"), "{}", out.stderr);
    // --json puts the error on stdout as JSON too.
    let out = env.run(&[
        "--json",
        "ingest",
        "--dataset",
        "p",
        "--format",
        "pmv400",
        s(&unnamed),
    ]);
    assert_eq!(out.code, 1);
    assert_eq!(out.json()["exit_code"], 1);
}

#[test]
fn a_dataset_keeps_its_format() {
    let env = Env::new();
    let f = env.write("train.csv", "a.mp4,1\n");
    assert_eq!(
        env.run(&["ingest", "--dataset", "p", "--format", "pmv400", s(&f)])
            .code,
        0
    );
    let g = env.write("train.txt", "a.mp4 1\n");
    let out = env.run(&["ingest", "--dataset", "p", "--format", "videomae", s(&g)]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("dataset 'p' holds pmv400 manifests"),
        "{}",
        out.stderr
    );
}

#[test]
fn config_files_set_the_root_and_ratios_and_report_errors_with_lines() {
    let env = Env::new();
    let cfg = env.write(
        "pmv.toml",
        "root = \"data\"\n[ingest]\nsplit_ratios = \"train=0.5,val=0.5\"\n",
    );
    let f = env.write(
        "items.jsonl",
        (0..50)
            .map(|i| format!("{{\"id\": \"i{i}\"}}\n"))
            .collect::<String>(),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pmv-data"))
        .env_remove("PMV_DATA_ROOT")
        .args([
            "--config",
            s(&cfg),
            "--json",
            "ingest",
            "--dataset",
            "g",
            "--format",
            "jsonl",
            s(&f),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The relative root is taken from the config file's directory.
    let root = env.path("data");
    assert!(root.join("catalog.sqlite").exists());
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_pmv-data"))
        .env_remove("PMV_DATA_ROOT")
        .args(["--root", s(&root), "--json", "status"])
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let val = st["datasets"][0]["splits"]["val"].as_u64().unwrap();
    assert!(
        (12..=38).contains(&val),
        "50/50 gives about 25 of 50 to val, got {val}"
    );

    let bad = env.write(
        "bad.toml",
        "root = \"x\"\n\n[ingest]\nsplit_ratio = \"train=1\"\n",
    );
    let out = env.run(&["--config", s(&bad), "status"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("line 4"), "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown field `split_ratio`"),
        "{}",
        out.stderr
    );
}

#[test]
fn status_of_an_empty_root_creates_nothing() {
    let env = Env::new();
    let out = env.run(&["status"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("no catalog yet"), "{}", out.stdout);
    assert!(!env.root.exists(), "status must not create the root");
    let j = env.run(&["--json", "status"]).json();
    assert_eq!(j["datasets"].as_array().unwrap().len(), 0);
    let out = env.run(&["status", "--dataset", "nope"]);
    assert_eq!(out.code, 1);
}

#[test]
fn status_reports_runs_and_human_text() {
    let env = Env::new();
    let f = env.write("train.csv", "a.mp4,1\nb.mp4,2\n");
    assert_eq!(
        env.run(&["ingest", "--dataset", "p", "--format", "pmv400", s(&f)])
            .code,
        0
    );
    let j = env.status();
    assert_eq!(j["schema_version"], 3);
    assert_eq!(j["runs"][0]["command"], "ingest");
    assert_eq!(j["runs"][0]["status"], "ok");
    let run_id = j["runs"][0]["id"].as_str().unwrap();
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.root.join("runs").join(format!("{run_id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(report["result"]["items"]["new"], 2);
    let text = env.run(&["status"]);
    assert!(
        text.stdout.contains("p (pmv400, single-label)"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("2 active, 0 removed; 400 classes"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("video      pending 2"),
        "{}",
        text.stdout
    );
}

#[test]
fn completions_are_printed() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = env.run(&["completions", shell]);
        assert_eq!(out.code, 0);
        assert!(out.stdout.contains("pmv-data"), "{shell}");
        assert!(out.stdout.contains("ingest"), "{shell}");
    }
}

#[test]
fn doctor_reports_ffmpeg_and_libtorch() {
    let env = Env::new();
    let out = env.run(&["--json", "doctor"]);
    let j = out.json();
    assert_eq!(j["schema_version"], 3);
    if cfg!(feature = "media") {
        assert!(j["media"]["libavcodec"].as_str().is_some(), "{j}");
    }
    if cfg!(feature = "train") {
        // The trainer binary is built next to pmv-data by `cargo test --all-features`.
        assert_eq!(j["train"]["tensor_ok"], true, "{j}");
        assert!(
            j["train"]["libtorch"].as_str().unwrap().starts_with("2.11"),
            "{j}"
        );
    }
    assert_eq!(out.code, 0, "{}", out.stdout);
}

#[test]
fn a_closed_stdout_ends_a_report_quietly() {
    use std::os::unix::process::ExitStatusExt;
    // The reader goes away before pmv-data writes (it reads nothing): the write fails
    // with EPIPE, which must end the process like any Unix filter, not panic.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec 3>&1; ( '{}' completions bash; echo \"rc=$?\" >&3 ) | true",
            env!("CARGO_BIN_EXE_pmv-data")
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // 141 = 128 + SIGPIPE: killed by the signal; 0: it wrote before the pipe closed.
    assert!(
        stdout.contains("rc=141") || stdout.contains("rc=0"),
        "{stdout} {stderr} {:?}",
        out.status.signal()
    );
}
