//! The command line: exit codes, the root lock, configuration, completions (run in
//! bash), doctor, and output to readers that went away.

use pmv_core::root::DataRoot;

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
    let run_id = j["runs"][0]["run_id"].as_str().unwrap();
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.root.join("reports").join(format!("{run_id}.json"))).unwrap(),
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
        // The trainer's options, which pmv-data hands on without parsing them.
        for option in ["epochs", "mask-ratio", "views"] {
            assert!(out.stdout.contains(option), "{shell}: {option}");
        }
    }
}

/// Real bash completion: the script `completions bash` prints is sourced, the function
/// it registers for `pmv-data` is called as bash calls it on TAB, and what it offers
/// is compared.
#[test]
fn bash_completes_subcommands_and_the_options_of_each() {
    let env = Env::new();
    let out = env.run(&["completions", "bash"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let script = env.write("pmv-data.bash", &out.stdout);
    // (words typed, the last being completed; what must be offered)
    let cases: &[(&[&str], &[&str])] = &[
        (&["tr"], &["train"]),
        (&["st"], &["status"]),
        (&["ingest", "--for"], &["--format"]),
        (
            &["ingest", "--format", ""],
            &["pmv400", "jsonl", "videomae", "xinpianchang"],
        ),
        (&["--json", "status", "--da"], &["--dataset"]),
        (&["fetch", "--import"], &["--import-dir"]),
        (&["shard", "--list"], &["--list-recipes"]),
        (&["shard", "--fit", ""], &["cover", "contain", "short-side"]),
        (&["train", "--ep"], &["--epochs"]),
        (&["train", "--model", ""], &["tiny3d", "vit-s", "x3d-m"]),
        (&["pretrain", "--mask"], &["--mask-ratio"]),
        (&["eval", "--vi"], &["--views"]),
        (&["completions", ""], &["bash", "zsh", "fish"]),
    ];
    let mut program = format!(
        "set -u\nsource {}\n\
         spec=$(complete -p pmv-data) || exit 9\n\
         fn=$(printf '%s' \"$spec\" | sed -n 's/.*-F \\([^ ]*\\).*/\\1/p')\n\
         offer() {{\n\
           COMP_WORDS=(pmv-data \"$@\"); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\n\
           COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; COMPREPLY=()\n\
           \"$fn\" pmv-data \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
           echo \"${{COMPREPLY[*]}}\"\n\
         }}\n",
        s(&script)
    );
    for (words, _) in cases {
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        program.push_str(&format!("offer {}\n", quoted.join(" ")));
    }
    let run = std::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&run.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), cases.len(), "{stdout}");
    for ((words, expected), line) in cases.iter().zip(lines) {
        let offered: Vec<&str> = line.split_whitespace().collect();
        for e in *expected {
            assert!(
                offered.contains(e),
                "pmv-data {} <TAB> offers {offered:?}, not {e}",
                words.join(" ")
            );
        }
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
        assert_eq!(j["trainer"]["status"], "ok", "{j}");
        assert_eq!(j["trainer"]["info"]["tensor_ok"], true, "{j}");
        assert!(
            j["trainer"]["info"]["libtorch"]
                .as_str()
                .unwrap()
                .starts_with("2.11"),
            "{j}"
        );
        let text = env.run(&["doctor"]);
        assert!(
            text.stdout.contains("trainer   ") && text.stdout.contains("libtorch 2.11"),
            "{}",
            text.stdout
        );
    }
    assert_eq!(out.code, 0, "{}", out.stdout);
}

/// doctor tells the features this pmv-data was built with apart from whether the
/// trainer it runs for train, pretrain and eval is there and works, and never says
/// one thing in one place and the opposite in another.
#[test]
fn doctor_asks_the_trainer_itself_whatever_the_features_say() {
    let env = Env::new();
    let features: Vec<String> = env.run(&["--json", "doctor"]).json()["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect();
    let missing = env.path("nowhere/pmv-data-train");
    let broken = env.write(
        "bin/pmv-data-train",
        "#!/bin/sh\necho 'libtorch_cpu.so: cannot open shared object file' >&2\nexit 127\n",
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for (trainer, status, says) in [
        (&missing, "missing", "not found"),
        (&broken, "failed", "does not work"),
    ] {
        let run = |args: &[&str]| {
            let mut c = env.command();
            c.env("PMV_DATA_TRAIN", trainer).args(args);
            crate::util::Out::of(c)
        };
        let out = run(&["--json", "doctor"]);
        assert_eq!(
            out.code, 1,
            "a named trainer that does not work is a problem"
        );
        let j = out.json();
        assert_eq!(j["trainer"]["status"], status, "{j}");
        assert_eq!(j["trainer"]["path"], s(trainer), "{j}");
        assert!(j["trainer"]["info"].is_null(), "{j}");
        let problems = j["problems"].to_string();
        assert!(problems.contains(s(trainer)), "{j}");
        if status == "failed" {
            assert!(problems.contains("cannot open shared object file"), "{j}");
        }
        let text = run(&["doctor"]);
        assert_eq!(text.code, 1);
        let line = text
            .stdout
            .lines()
            .find(|l| l.starts_with("trainer "))
            .unwrap_or_else(|| panic!("no trainer line: {}", text.stdout));
        assert!(line.contains(s(trainer)) && line.contains(says), "{line}");
        // The features line says what was compiled; nothing contradicts it.
        assert!(
            text.stdout
                .lines()
                .next()
                .unwrap()
                .ends_with(&format!("(features: {})", features.join(", "))),
            "{}",
            text.stdout
        );
        if features.iter().any(|f| f == "train") {
            assert!(
                !text.stdout.contains("not built (feature `train` off)"),
                "{}",
                text.stdout
            );
        }
    }
}

/// How a test takes the reader away from the binary's output.
#[derive(Debug, Clone, Copy)]
enum Closed {
    /// stdout is a pipe nobody reads: closed before the binary starts.
    StdoutBefore,
    /// stdout is read for one byte, then closed: the binary is writing.
    StdoutDuring,
    /// stderr is a pipe nobody reads (stdout is read).
    Stderr,
}

/// Runs the binary with one output closed as `closed` says; returns the exit code
/// (-1 when a signal killed it) and the output that still had a reader.
fn run_closed(env: &Env, args: &[&str], closed: Closed) -> crate::util::Out {
    use std::io::Read;
    use std::process::Stdio;
    let (reader, writer) = std::io::pipe().unwrap();
    {
        // The smallest pipe (a page), so that a few KiB of output is "during".
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on a pipe descriptor this function owns.
        let r = unsafe { libc::fcntl(writer.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
        assert!(r >= 4096, "F_SETPIPE_SZ");
    }
    let mut cmd = env.command();
    cmd.args(args).stdin(Stdio::null());
    match closed {
        Closed::StdoutBefore | Closed::StdoutDuring => cmd.stdout(writer).stderr(Stdio::piped()),
        Closed::Stderr => cmd.stderr(writer).stdout(Stdio::piped()),
    };
    let mut reader = Some(reader);
    if matches!(closed, Closed::StdoutBefore | Closed::Stderr) {
        reader = None;
    }
    let mut child = cmd.spawn().unwrap();
    // The parent's copy of the write end goes with `cmd`.
    drop(cmd);
    if let Some(mut r) = reader.take() {
        let mut one = [0u8; 1];
        r.read_exact(&mut one).unwrap();
    }
    let mut text = String::new();
    match closed {
        Closed::Stderr => child.stdout.take().unwrap().read_to_string(&mut text),
        _ => child.stderr.take().unwrap().read_to_string(&mut text),
    }
    .unwrap();
    let status = child.wait().unwrap();
    let (stdout, stderr) = match closed {
        Closed::Stderr => (text, String::new()),
        _ => (String::new(), text),
    };
    crate::util::Out {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

fn assert_quiet(what: &str, out: &crate::util::Out) {
    for bad in ["panicked", "Broken pipe", "error"] {
        assert!(!out.stderr.contains(bad), "{what}: {}", out.stderr);
    }
}

#[test]
fn reports_end_quietly_when_their_reader_has_gone() {
    let env = Env::new();
    let f = env.write("items.jsonl", "{\"id\": \"a\"}\n");
    assert_eq!(
        env.run(&["ingest", "--dataset", "d", "--format", "jsonl", s(&f)])
            .code,
        0
    );
    let mut cases: Vec<Vec<&str>> = vec![
        vec!["status"],
        vec!["--json", "status"],
        vec!["resolve", "--offline", "https://v.douyin.com/L5pbfdP/"],
        vec!["completions", "bash"],
        vec!["--help"],
    ];
    if cfg!(feature = "media") {
        cases.push(vec!["shard", "--list-recipes"]);
        cases.push(vec!["--json", "shard", "--list-recipes"]);
    }
    for args in &cases {
        let out = run_closed(&env, args, Closed::StdoutBefore);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        assert_quiet(&format!("{args:?}"), &out);
    }
    // The completion script is larger than the pipe holds: the reader goes away while
    // it is being written.
    let out = run_closed(&env, &["completions", "bash"], Closed::StdoutDuring);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_quiet("completions bash", &out);
}

/// A command that changes the root does all its work and records it when nobody
/// reads its output any more, and ends with its own status.
#[test]
fn an_ingest_whose_reader_has_gone_does_its_work_and_keeps_its_status() {
    let rows = "{\"id\": \"a\"}\n{\"id\": \"b\"}\nnot json\n";
    for (closed, json) in [
        (Closed::StdoutBefore, false),
        (Closed::StdoutBefore, true),
        (Closed::Stderr, false),
    ] {
        let env = Env::new();
        let f = env.write("items.jsonl", rows);
        let mut args = vec!["-v", "ingest", "--dataset", "d", "--format", "jsonl", s(&f)];
        if json {
            args.insert(0, "--json");
        }
        let out = run_closed(&env, &args, closed);
        let what = format!("{closed:?} json={json}");
        assert_eq!(out.code, 3, "{what}: one row rejected\n{}", out.stderr);
        match closed {
            Closed::Stderr => assert!(
                out.stdout.contains("items: 2 new"),
                "{what}: {}",
                out.stdout
            ),
            _ => {
                assert!(!out.stderr.contains("panicked"), "{what}: {}", out.stderr);
                assert!(
                    !out.stderr.contains("Broken pipe"),
                    "{what}: {}",
                    out.stderr
                );
                assert!(out.stderr.contains(":3: "), "{what}: {}", out.stderr);
            }
        }
        assert_eq!(env.query::<i64>("SELECT count(*) FROM items"), 2, "{what}");
        assert_eq!(
            env.strings("SELECT status FROM runs"),
            ["partial"],
            "{what}: the run is recorded"
        );
        let reports = std::fs::read_dir(env.root.join("reports")).unwrap().count();
        assert_eq!(reports, 2, "{what}: the report and the rejected rows");
    }
}
