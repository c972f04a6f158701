//! Every command in the README's `sh` blocks, run as written, in order, in a folder that
//! holds the files they name: the real PMV-400 lists (a copy of `manifests/`), a links
//! file and the xinpianchang JSON lines whose URLs a local server answers, the upstream
//! xinpianchang tree made from the shipped example, local video lists, a configuration
//! for `refresh`, and a randomly initialised VideoMAE ViT-S checkpoint as `--init`.
//!
//! The binaries are found on `PATH` as a user's shell finds them; `HOME` is the folder,
//! so `~` means it. The links name 127.0.0.1, which a fetch refuses unless private hosts
//! are allowed: the environment allows them, as a user with a LAN mirror would.
//! Commands that train run until their first checkpoint and are then stopped as Ctrl-C
//! stops them (SIGINT to their process group): they must save it and exit 130.
//! Everything else must exit 0. `bash scripts/demo.sh` and `bash scripts/test.sh` are
//! the only lines not run: the first sets up and runs `pmv-data demo` (run here), the
//! second is the suite this test belongs to.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::httpd::{Reply, Server};
use crate::shard_util::ffmpeg;
use crate::util::{Out, repo};

/// One command of a README `sh` block: its first line number and its text, with
/// continuation lines joined and the comment after it removed.
#[derive(Debug)]
struct Line {
    number: usize,
    text: String,
}

/// The commands of every ```sh block of `readme`.
fn sh_commands(readme: &str) -> Vec<Line> {
    let mut out = vec![];
    let mut in_sh = false;
    let mut pending: Option<Line> = None;
    for (i, raw) in readme.lines().enumerate() {
        let number = i + 1;
        if raw.starts_with("```") {
            assert!(
                pending.is_none(),
                "README.md:{number}: a block ends in '\\'"
            );
            in_sh = !in_sh && raw.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = strip_comment(raw);
        let (code, continued) = match code.trim_end().strip_suffix('\\') {
            Some(c) => (c.to_owned(), true),
            None => (code.trim_end().to_owned(), false),
        };
        let line = match pending.take() {
            Some(mut l) => {
                l.text.push(' ');
                l.text.push_str(code.trim());
                l
            }
            None => Line {
                number,
                text: code.trim().to_owned(),
            },
        };
        if continued {
            pending = Some(line);
        } else if !line.text.is_empty() {
            out.push(line);
        }
    }
    out
}

/// A line without its shell comment (`#` at the start of a word, outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && prev.is_whitespace() => return &line[..i],
            None => {}
        }
        prev = c;
    }
    line
}

#[test]
fn readme_blocks_are_read_as_a_shell_reads_them() {
    let text = "x\n```sh\na --b \\\n    c   # note\n# only a comment\n\nd 'e # f'\n```\n```text\nnot run\n```\n";
    let lines = sh_commands(text);
    let got: Vec<(usize, &str)> = lines.iter().map(|l| (l.number, l.text.as_str())).collect();
    assert_eq!(got, vec![(3, "a --b c"), (7, "d 'e # f'")]);
}

/// Whether a command trains (runs until stopped, in this test).
fn trains(cmd: &str) -> bool {
    [
        "pmv-data train ",
        "pmv-data pretrain ",
        "pmv-data-train train ",
    ]
    .iter()
    .any(|p| cmd.starts_with(p))
}

/// The folder every command runs in, with what they name.
struct Sandbox {
    _dir: tempfile::TempDir,
    path: PathBuf,
    _server: Server,
}

fn video(dir: &Path, name: &str, source: &str, size: &str) -> PathBuf {
    let path = dir.join(name);
    let src = format!("{source}=size={size}:rate=30:duration=2.4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &src,
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "30",
        "-pix_fmt",
        "yuv420p",
        path.to_str().unwrap(),
    ]);
    path
}

/// The hash split of DATA.md ("The hash split"), with the default ratios.
fn hash_split(id: &str) -> &'static str {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("pmv-data/split/v1\0{id}").as_bytes());
    let x = u64::from_be_bytes(d[..8].try_into().unwrap()) as f64 / 2f64.powi(64);
    if x < 0.9 { "train" } else { "val" }
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().canonicalize().unwrap();
        let media = path.join(".media");
        std::fs::create_dir_all(&media).unwrap();
        let portrait = video(&media, "portrait.mp4", "testsrc2", "96x128");
        let landscape = video(&media, "landscape.mp4", "testsrc", "128x96");
        let cover = media.join("cover.jpg");
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x90",
            "-frames:v",
            "1",
            cover.to_str().unwrap(),
        ]);
        let videos = [
            std::fs::read(&portrait).unwrap(),
            std::fs::read(&landscape).unwrap(),
        ];
        let cover = std::fs::read(&cover).unwrap();

        // What a user keeps beside the lists: a copy of the shipped manifests.
        copy_tree(&repo().join("manifests"), &path.join("manifests"));

        let server = Server::start();
        let (v0, v1) = (videos[0].clone(), videos[1].clone());
        server.prefix("/play", move |req| {
            let id = req.query("video_id").unwrap_or_default();
            let data = if id.bytes().map(u32::from).sum::<u32>() % 2 == 0 {
                &v0
            } else {
                &v1
            };
            Reply::file(req, data, None)
        });
        let (v0, c0) = (videos[0].clone(), cover.clone());
        server.prefix("/xpc/", move |req| {
            if req.path().ends_with(".jpeg") {
                Reply::file(req, &c0, None)
            } else {
                Reply::file(req, &v0, None)
            }
        });

        // PMV-400: links for a batch of train items (the trainer's default batch, 8) and
        // one val (= test) item of the real lists.
        let lists = repo().join("manifests/pmv400");
        let first = |file: &str, n: usize| -> Vec<String> {
            std::fs::read_to_string(lists.join(file))
                .unwrap()
                .lines()
                .take(n)
                .map(|l| {
                    l.split(',')
                        .next()
                        .unwrap()
                        .trim_end_matches(".mp4")
                        .to_owned()
                })
                .collect()
        };
        let mut ids = first("train_pmv400.csv", 8);
        ids.extend(first("val_pmv400.csv", 1));
        ids.extend(first("test_pmv400.csv", 1));
        let links: String = ids
            .iter()
            .map(|id| format!("{},{id}\n", server.url(&format!("/play/?video_id={id}"))))
            .collect();
        std::fs::write(path.join("video_links.csv"), links).unwrap();

        // xinpianchang: JSON lines in the upstream shape, a batch of train items and one
        // val item.
        let mut rows = String::new();
        let (mut train, mut val) = (0, 0);
        for n in 100_000_000u64.. {
            let id = n.to_string();
            let split = hash_split(&id);
            let take = match split {
                "train" if train < 8 => {
                    train += 1;
                    true
                }
                "val" if val < 1 => {
                    val += 1;
                    true
                }
                _ => false,
            };
            if take {
                let label = if train % 2 == 0 { "Aerial" } else { "City" };
                rows.push_str(
                    &serde_json::json!({
                        "mp4_id": id,
                        "mp4_download_url": server.url(&format!("/xpc/{n:09}_main_xl.mp4")),
                        "mp4_time": "0:02",
                        "mp4_background_image_url": server.url(&format!("/xpc/{n:09}_iconl.jpeg")),
                        "mp4_txt_brief": format!(" 城市航拍 aerial city view {n}"),
                        "video_label": label,
                    })
                    .to_string(),
                );
                rows.push('\n');
            }
            if train == 8 && val == 1 {
                break;
            }
        }
        std::fs::write(path.join("multimodal_data_info.json"), rows).unwrap();
        // The upstream tree: <label>/<id>/<id>.{mp4,jpeg,txt}, from the shipped example.
        let example = repo().join("tests/data/xinpianchang/example");
        let item = path.join("MP4_download/City/99945958");
        copy_tree(&example, &item);

        // Local lists: VideoMAE-style under ~/data/k400, JSON lines relative to the list.
        let k400 = path.join("data/k400");
        std::fs::create_dir_all(k400.join("videos")).unwrap();
        let mut train_csv = String::new();
        let mut val_csv = String::new();
        for i in 0..5 {
            let name = format!("videos/clip{i}.mp4");
            std::fs::write(k400.join(&name), &videos[i % 2]).unwrap();
            let list = if i < 4 { &mut train_csv } else { &mut val_csv };
            list.push_str(&format!("{name} {}\n", i % 2));
        }
        std::fs::write(path.join("train.csv"), train_csv).unwrap();
        std::fs::write(path.join("val.csv"), val_csv).unwrap();
        std::fs::create_dir_all(path.join("clips")).unwrap();
        let mut items = String::new();
        for i in 0..4 {
            std::fs::write(path.join(format!("clips/{i}.mp4")), &videos[i % 2]).unwrap();
            let split = if i < 3 { "train" } else { "val" };
            let label = ["left", "right"][i % 2];
            items.push_str(&format!(
                "{{\"id\": \"c{i}\", \"urls\": [\"clips/{i}.mp4\"], \"label\": \"{label}\", \"split\": \"{split}\"}}\n"
            ));
        }
        std::fs::write(path.join("items.jsonl"), items).unwrap();
        std::fs::write(path.join("classes.txt"), "left\nright\n").unwrap();
        std::fs::write(path.join("video.mp4"), &videos[0]).unwrap();
        std::fs::write(
            path.join("pmv.toml"),
            "[[datasets]]\nname = \"mine\"\nformat = \"jsonl\"\nmanifests = [\"items.jsonl\"]\n\
             classes = \"classes.txt\"\nrecipes = [\"videomae-16x4-224\"]\n",
        )
        .unwrap();

        // A ViT-S checkpoint as the Hub gives it, with random weights.
        let out = Command::new(repo().join(".venv/bin/python"))
            .arg("-c")
            .arg(
                "import sys, torch\n\
                 from transformers import VideoMAEConfig, VideoMAEForVideoClassification\n\
                 torch.manual_seed(0)\n\
                 cfg = VideoMAEConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,\n\
                     intermediate_size=1536, num_labels=400, use_mean_pooling=True)\n\
                 VideoMAEForVideoClassification(cfg).save_pretrained(sys.argv[1])\n",
            )
            .arg(path.join("videomae-s"))
            .output()
            .expect("run the venv python (scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Sandbox {
            _dir: dir,
            path,
            _server: server,
        }
    }

    /// `bash -c CMD` in the folder, with the binaries on PATH.
    fn shell(&self, cmd: &str) -> Command {
        let bin = Path::new(env!("CARGO_BIN_EXE_pmv-data")).parent().unwrap();
        let path = std::env::join_paths(std::iter::once(bin.to_owned()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .unwrap();
        let mut c = Command::new("bash");
        c.args(["-c", &format!("set -euo pipefail\n{cmd}")])
            .current_dir(&self.path)
            .env("PATH", path)
            .env("HOME", &self.path)
            .env("PMV_FETCH_ALLOW_PRIVATE_HOSTS", "true")
            .env_remove("PMV_DATA_ROOT")
            .env_remove("PMV_DATA_CONFIG")
            .env_remove("PMV_DATA_TRAIN")
            .env_remove("RUST_LOG");
        c
    }

    /// The `state.json` of every run, with when it was last written: a run writes it
    /// at each checkpoint.
    fn checkpoints(&self) -> Vec<(PathBuf, SystemTime)> {
        let mut found = vec![];
        for runs in [self.path.join("pmv-data-root/runs"), self.path.join("runs")] {
            let Ok(entries) = std::fs::read_dir(&runs) else {
                continue;
            };
            for e in entries.flatten() {
                let state = e.path().join("state.json");
                if let Ok(t) = std::fs::metadata(&state).and_then(|m| m.modified()) {
                    found.push((state, t));
                }
            }
        }
        found
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Runs a training command until its first checkpoint, then stops it as Ctrl-C does.
fn train_until_checkpoint(sb: &Sandbox, line: &Line) -> Out {
    use std::os::unix::process::CommandExt;
    let before = sb.checkpoints();
    let mut cmd = sb.shell(&line.text);
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().unwrap();
    let t0 = Instant::now();
    while sb.checkpoints().iter().all(|c| before.contains(c)) {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "README.md:{}: `{}` ended ({status}) before its first checkpoint:\n{}",
                line.number,
                line.text,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "README.md:{}: no checkpoint in 10 minutes",
            line.number
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill() of the process group this test started.
    let pgid = child.id() as libc::pid_t;
    assert_eq!(unsafe { libc::kill(-pgid, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn every_readme_command_runs_as_written() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let lines = sh_commands(&readme);
    assert!(lines.len() > 20, "{lines:?}");
    let sb = Sandbox::new();
    for line in &lines {
        if line.text.starts_with("bash scripts/") {
            continue;
        }
        let t0 = Instant::now();
        let out = if trains(&line.text) {
            let out = train_until_checkpoint(&sb, line);
            assert_eq!(
                out.code, 130,
                "README.md:{}: `{}` stopped by Ctrl-C:\n{}",
                line.number, line.text, out.stderr
            );
            assert!(
                out.stderr.contains("interrupted at step"),
                "README.md:{}: {}",
                line.number,
                out.stderr
            );
            out
        } else {
            let out = Out::of(sb.shell(&line.text));
            assert_eq!(
                out.code, 0,
                "README.md:{}: `{}`:\n{}\n{}",
                line.number, line.text, out.stdout, out.stderr
            );
            out
        };
        assert!(
            !out.stderr.contains("panicked"),
            "README.md:{}: {}",
            line.number,
            out.stderr
        );
        eprintln!(
            "README.md:{}: {:.1} s: {}",
            line.number,
            t0.elapsed().as_secs_f64(),
            line.text
        );
    }

    // What the walk-through promises: every dataset sharded, an evaluation report, and
    // a completion script where bash-completion looks for it.
    let status = Out::of({
        let mut c = sb.shell("pmv-data --json status");
        c.stdout(Stdio::piped());
        c
    });
    let status = status.json();
    for name in ["pmv400", "xpc", "k400", "mine"] {
        let d = status["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("no dataset {name}: {status}"));
        let samples: u64 = d["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["samples"].as_u64().unwrap())
            .sum();
        assert!(samples > 0, "{name} has no shard samples: {d}");
    }
    // Each walkthrough ends in a test score of the views its recipe names, on every
    // video of the split it tests.
    for (run, split, views, videos) in [
        ("pmv400-x3d-m", "test", "10x3", 1),
        ("xpc-multimodal", "val", "5x1", 1),
        ("k400-vit-s", "val", "5x3", 1),
    ] {
        let path = sb.path.join(format!(
            "pmv-data-root/runs/{run}/eval-{split}-{views}/eval.json"
        ));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let report: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(report["counts"]["samples"], videos, "{run}: {report}");
        assert!(report["top1"].is_number(), "{run}: {report}");
    }
    let completion = std::fs::read_to_string(
        sb.path
            .join(".local/share/bash-completion/completions/pmv-data"),
    )
    .unwrap();
    assert!(completion.contains("complete "), "{completion}");
}
