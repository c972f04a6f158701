//! `pmv-data shard` end to end: shards written, recorded and read back (Rust reader,
//! Python tarfile + numpy, webdataset), re-runs append only what is new, the same inputs
//! give byte-identical shards, corrupt videos go to quarantine, a SIGKILL leaves nothing
//! half-recorded, new recipes re-use sharded videos, damaged shards are rebuilt.

use std::path::{Path, PathBuf};

use pmv_core::frame_recipe::{self, Overrides};
use pmv_pipeline::media::geometry::Target;
use pmv_pipeline::media::{Decoder, DecoderOptions, Sampling, VideoFile, sample_indices};
use pmv_pipeline::sharding::{SampleIndex, ShardReader};
use serde_json::json;
use sha2::Digest;

use crate::shard_util::{Spec, ffmpeg, ingest_items, make_video, register};
use crate::util::{Env, repo, s, venv_python};

/// The recipe the tests use: videomae-16x4-224 made small (64x64).
const SIZE: &str = "64x64";

fn small_params() -> pmv_pipeline::sharding::FrameParams {
    frame_recipe::resolve(
        Some("videomae-16x4-224"),
        &Overrides {
            size: Some((64, 64)),
            ..Default::default()
        },
    )
    .unwrap()
    .params
}

/// Items `v0..vN` with labels `i % 3`, the first `train_n` in train, the rest in val,
/// each with a generated video (various codecs and shapes) registered as verified.
fn dataset(env: &Env, name: &str, n: usize, train_n: usize) -> Vec<PathBuf> {
    let items: Vec<_> = (0..n)
        .map(|i| {
            json!({
                "id": format!("v{i}"),
                "label": i % 3,
                "split": if i < train_n { "train" } else { "val" },
                "text": format!("video number {i}"),
            })
        })
        .collect();
    ingest_items(env, name, &items);
    (0..n)
        .map(|i| add_video(env, name, &format!("v{i}"), i))
        .collect()
}

fn add_video(env: &Env, dataset: &str, key: &str, i: usize) -> PathBuf {
    let dir = env.path("src");
    std::fs::create_dir_all(&dir).unwrap();
    let file = format!("{key}.mp4");
    let (w, h) = if i.is_multiple_of(2) {
        (160, 96)
    } else {
        (96, 160)
    };
    let spec = Spec {
        seconds: 1.0 + (i % 3) as f64,
        ..Spec::h264(&file, w, h, 1.0)
    };
    let v = make_video(&dir, &spec);
    register(env, dataset, key, "video", &v);
    v
}

fn shard(env: &Env, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all = vec!["--json", "shard"];
    all.extend_from_slice(args);
    let out = env.run(&all);
    let doc = if out.stdout.trim().is_empty() {
        serde_json::Value::Null
    } else {
        out.json()
    };
    (out.code, doc, out.stderr)
}

/// The shard files (`.tar`) under the root, by path, with their bytes.
fn shard_files(env: &Env) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    let base = env.root.join("shards");
    let mut stack = vec![base.clone()];
    while let Some(d) = stack.pop() {
        if !d.exists() {
            continue;
        }
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "tar") {
                let rel = p
                    .strip_prefix(&env.root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn shards_a_dataset_and_every_reader_agrees() {
    let env = Env::new();
    let videos = dataset(&env, "d", 5, 3);
    let (code, r, stderr) = shard(
        &env,
        &[
            "--dataset",
            "d",
            "--recipe",
            "videomae-16x4-224",
            "--size",
            SIZE,
            "--samples-per-shard",
            "2",
        ],
    );
    assert_eq!(code, 0, "{stderr}\n{r}");
    assert_eq!(r["videos_pending"], 5);
    assert_eq!(r["videos_sharded"], 5);
    assert_eq!(r["samples"], 5);
    let shards = r["shards"].as_array().unwrap();
    // train: 2 + 1, val: 2.
    let mut layout: Vec<(String, u64)> = shards
        .iter()
        .map(|s| {
            (
                s["split"].as_str().unwrap().to_owned(),
                s["samples"].as_u64().unwrap(),
            )
        })
        .collect();
    layout.sort();
    assert_eq!(
        layout,
        vec![("train".into(), 1), ("train".into(), 2), ("val".into(), 2)]
    );
    let recipe_id = r["recipe_id"].as_str().unwrap();
    for s in shards {
        let path = s["path"].as_str().unwrap();
        assert!(
            path.starts_with(&format!("shards/d/16x4-64x64-ss64-{recipe_id}/")),
            "{path}"
        );
    }
    assert!(r["decode_ratio"].as_f64().unwrap() >= 1.0);

    // The catalog.
    assert_eq!(
        env.query::<i64>("SELECT count(*) FROM shards WHERE state = 'live'"),
        3
    );
    assert_eq!(env.query::<i64>("SELECT count(*) FROM samples"), 5);
    assert_eq!(env.query::<i64>("SELECT count(*) FROM probes"), 5);
    assert_eq!(
        env.strings("SELECT DISTINCT state FROM files WHERE role = 'video'"),
        vec!["sharded"]
    );
    assert_eq!(
        env.query::<String>("SELECT name FROM recipes"),
        "16x4-64x64-ss64"
    );

    // Each shard: the recorded hash, the recorded offsets, and frames equal to what the
    // media layer gives for the video directly.
    let params = small_params();
    let conn = env.catalog();
    let mut stmt = conn
        .prepare(
            "SELECT sh.id, sh.path, sh.sha256, i.key, s.members, s.label FROM samples s \
             JOIN shards sh ON sh.id = s.shard_id JOIN items i ON i.id = s.item_id \
             ORDER BY sh.id, s.ordinal",
        )
        .unwrap();
    let rows: Vec<(i64, String, String, String, String, Option<i64>)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let schema = |name: &str| {
        let text = std::fs::read_to_string(repo().join("schemas").join(name)).unwrap();
        jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
    };
    let (sample_schema, recipe_schema) = (
        schema("shard-sample.schema.json"),
        schema("recipe.schema.json"),
    );
    let params_json: serde_json::Value =
        serde_json::from_str(&env.query::<String>("SELECT params FROM recipes")).unwrap();
    assert!(recipe_schema.is_valid(&params_json), "{params_json}");
    let mut rust_view = vec![];
    let root = pmv_core::root::DataRoot::new(&env.root);
    let catalog = pmv_catalog::Catalog::open_existing_readonly(&root.catalog_path())
        .unwrap()
        .unwrap();
    let dataset_id = catalog.dataset("d").unwrap().unwrap().id;
    assert_eq!(
        catalog
            .live_shards::<SampleIndex>(dataset_id, recipe_id, None)
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        catalog
            .live_shards::<SampleIndex>(dataset_id, recipe_id, Some("val"))
            .unwrap()
            .len(),
        1
    );
    for (shard_id, path, sha256, key, members, label) in &rows {
        let file = env.root.join(path);
        let reader = ShardReader::open(&file).unwrap();
        reader.verify_sha256(sha256).unwrap();
        // Opened from the catalog's offsets, the shard has the same index as scanned.
        let (row, from_catalog) =
            pmv_pipeline::sharding::open_shard(&root, &catalog, *shard_id).unwrap();
        assert_eq!(&row.path, path);
        assert_eq!(from_catalog.index(), reader.index());
        let index: SampleIndex = serde_json::from_str(members).unwrap();
        let pos = reader
            .index()
            .iter()
            .position(|s| s.key == index.key)
            .unwrap();
        assert_eq!(
            reader.index()[pos],
            index,
            "catalog offsets differ from the tar"
        );
        let sample = reader.sample(pos).unwrap();
        assert_eq!(sample.shape, [1, 16, 64, 64, 3]);
        assert_eq!(sample.label.map(i64::from), *label);
        let meta = sample.meta().unwrap();
        let raw: serde_json::Value = serde_json::from_slice(sample.json.unwrap()).unwrap();
        if let Err(e) = sample_schema.validate(&raw) {
            panic!("{key}.json does not match schemas/shard-sample.schema.json: {e}\n{raw}");
        }
        assert_eq!(&meta.id, key);
        assert_eq!(meta.labels, vec![label.unwrap() as u32]);
        assert_eq!(meta.recipe, recipe_id);
        assert_eq!(sample.txt.unwrap(), format!("video number {}", &key[1..]));
        let n: usize = key[1..].parse().unwrap();
        let mut v = VideoFile::open(&videos[n]).unwrap();
        assert_eq!(meta.sha256, sha(&std::fs::read(&videos[n]).unwrap()));
        assert_eq!(
            (meta.width, meta.height),
            (v.probe().display_width, v.probe().display_height)
        );
        let idx = sample_indices(
            &Sampling::from(&params),
            &v.table().times,
            v.table().duration_s,
        );
        assert_eq!(meta.frame_indices, idx);
        let mut direct = vec![0u8; params.sample_bytes() as usize];
        Decoder::new()
            .extract(
                &mut v,
                &idx,
                &Target::from(&params),
                &DecoderOptions::default(),
                &mut direct,
            )
            .unwrap();
        assert!(
            sample.raw_frames().unwrap() == direct.as_slice(),
            "{key}: frames differ from a direct decode"
        );
        // Zero copy: the frames are a slice of the map, 64-byte aligned in the file.
        assert_eq!(index.frames.offset % 64, 0);
        rust_view.push(json!({
            "shard": path, "key": sample.key, "label": sample.label, "id": meta.id,
            "split": meta.split, "frames_sha256": sha(sample.raw_frames().unwrap()),
        }));
    }

    // Python: tarfile + numpy read the same samples, byte for byte.
    let script = r#"
import io, json, sys, tarfile, hashlib
import numpy as np
out = []
for path in sys.argv[2:]:
    with tarfile.open(path) as tar:
        members = {}
        for m in tar.getmembers():
            key, ext = m.name.split(".", 1)
            members.setdefault(key, {})[ext] = (m, tar.extractfile(m).read())
        for key, parts in members.items():
            m, raw = parts["frames.npy"]
            arr = np.load(io.BytesIO(raw))
            assert arr.dtype == np.uint8 and arr.flags.c_contiguous, arr.dtype
            hdr = raw.index(b"\n") + 1
            assert (m.offset_data + hdr) % 64 == 0, "frames not 64-byte aligned"
            meta = json.loads(parts["json"][1])
            out.append({
                "shard": path[len(sys.argv[1]) + 1:], "key": key, "shape": list(arr.shape),
                "label": int(parts["cls"][1]), "id": meta["id"], "split": meta["split"],
                "frames_sha256": hashlib.sha256(arr.tobytes()).hexdigest(),
                "txt": parts["txt"][1].decode(),
            })
print(json.dumps(out))
"#;
    let paths: Vec<String> = shards
        .iter()
        .map(|s| {
            env.root
                .join(s["path"].as_str().unwrap())
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let py = python(script, env.root.to_str().unwrap(), &paths);
    let py: Vec<serde_json::Value> = serde_json::from_str(&py).unwrap();
    assert_eq!(py.len(), 5);
    for p in &py {
        assert_eq!(p["shape"], json!([1, 16, 64, 64, 3]));
        let mine = rust_view
            .iter()
            .find(|r| r["key"] == p["key"])
            .unwrap_or_else(|| panic!("python saw {p} which Rust did not"));
        for f in ["shard", "label", "id", "split", "frames_sha256"] {
            assert_eq!(mine[f], p[f], "{f} of {}", p["key"]);
        }
    }

    // webdataset reads the shards as a dataset.
    let wds = r#"
import sys, json
import webdataset as wds
n = 0
for s in wds.WebDataset(sys.argv[2:], shardshuffle=False).decode():
    arr = s["frames.npy"]
    assert arr.shape == (1, 16, 64, 64, 3), arr.shape
    assert s["json"]["id"].startswith("v")
    assert int(s["cls"]) == s["json"]["labels"][0]
    n += 1
print(n)
"#;
    assert_eq!(python(wds, "", &paths).trim(), "5");
    let _ = videos;
}

fn python(script: &str, first: &str, args: &[String]) -> String {
    let mut argv = vec!["-c", script, first];
    argv.extend(args.iter().map(String::as_str));
    venv_python(argv)
}

#[test]
fn reruns_append_only_what_is_new_and_inputs_decide_the_bytes() {
    let env = Env::new();
    dataset(&env, "d", 3, 3);
    let args = [
        "--dataset",
        "d",
        "--recipe",
        "videomae-16x4-224",
        "--size",
        SIZE,
    ];
    let (code, r, e) = shard(&env, &args);
    assert_eq!(code, 0, "{e}");
    assert_eq!(r["samples"], 3);
    let before = shard_files(&env);
    assert_eq!(before.len(), 1);

    // Nothing new: nothing written.
    let (code, r, _) = shard(&env, &args);
    assert_eq!(code, 0);
    assert_eq!(r["videos_pending"], 0);
    assert_eq!(r["shards"], json!([]));
    assert_eq!(shard_files(&env), before);

    // Two more videos: one new shard with just them; the first is untouched.
    let items: Vec<_> = (0..5)
        .map(|i| json!({"id": format!("v{i}"), "label": i % 3, "split": "train", "text": format!("video number {i}")}))
        .collect();
    ingest_items(&env, "d", &items);
    add_video(&env, "d", "v3", 3);
    add_video(&env, "d", "v4", 4);
    let (code, r, e) = shard(&env, &args);
    assert_eq!(code, 0, "{e}");
    assert_eq!(r["videos_pending"], 2);
    assert_eq!(r["shards"].as_array().unwrap().len(), 1);
    assert_eq!(r["shards"][0]["seq"], 1);
    assert_eq!(r["shards"][0]["samples"], 2);
    let after = shard_files(&env);
    assert_eq!(after.len(), 2);
    assert_eq!(after[0], before[0], "an existing shard changed");

    // The same inputs in a fresh root, with a different number of jobs: identical bytes.
    let env2 = Env::new();
    dataset(&env2, "d", 3, 3);
    let (code, _, e) = shard(&env2, &[&args[..], &["--jobs", "1"]].concat());
    assert_eq!(code, 0, "{e}");
    let env3 = Env::new();
    dataset(&env3, "d", 3, 3);
    let (code, _, e) = shard(&env3, &[&args[..], &["--jobs", "2"]].concat());
    assert_eq!(code, 0, "{e}");
    assert_eq!(shard_files(&env2), before);
    assert_eq!(shard_files(&env3), before);
}

#[test]
fn corrupt_videos_go_to_quarantine_and_never_reach_a_shard() {
    let env = Env::new();
    let items: Vec<_> = ["good", "cut", "noise", "silent"]
        .iter()
        .map(|k| json!({"id": k, "label": 1, "split": "train"}))
        .collect();
    ingest_items(&env, "d", &items);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let good = make_video(&src, &Spec::h264("good.mp4", 160, 96, 2.0));
    register(&env, "d", "good", "video", &good);
    let bytes = std::fs::read(&good).unwrap();
    let cut = env.write("src/cut.mp4", &bytes[..bytes.len() / 2]);
    register(&env, "d", "cut", "video", &cut);
    let noise = env.write(
        "src/noise.mp4",
        (0..50_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
            .collect::<Vec<_>>(),
    );
    register(&env, "d", "noise", "video", &noise);
    let silent = src.join("silent.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=duration=1",
        "-c:a",
        "aac",
        s(&silent),
    ]);
    register(&env, "d", "silent", "video", &silent);
    // A source rank the quarantine must keep.
    env.catalog();
    let conn = rusqlite::Connection::open(env.root.join("catalog.sqlite")).unwrap();
    conn.execute(
        "UPDATE files SET source_rank = 1 WHERE path LIKE '%cut.mp4'",
        [],
    )
    .unwrap();
    drop(conn);

    let (code, r, stderr) = shard(
        &env,
        &[
            "--dataset",
            "d",
            "--recipe",
            "videomae-16x4-224",
            "--size",
            SIZE,
        ],
    );
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(r["videos_sharded"], 1);
    assert_eq!(r["samples"], 1);
    let corrupt = r["corrupt"].as_array().unwrap();
    assert_eq!(corrupt.len(), 3, "{r}");
    for c in corrupt {
        let item = c["item"].as_str().unwrap();
        let to = c["quarantined"].as_str().unwrap();
        assert_eq!(to, format!("quarantine/d/{item}.mp4"));
        assert!(env.root.join(to).exists());
        let reason = std::fs::read_to_string(env.root.join(format!("{to}.reason.txt"))).unwrap();
        assert!(reason.contains(&format!("item: {item}")), "{reason}");
        assert!(reason.contains(c["reason"].as_str().unwrap()));
        assert!(!env.root.join(format!("videos/d/{item}.mp4")).exists());
    }
    let states = env.strings(
        "SELECT i.key || ' ' || f.state || ' ' || coalesce(f.error_class, '-') || ' ' || f.path || ' ' || f.source_rank \
         FROM files f JOIN items i ON i.id = f.item_id ORDER BY i.key",
    );
    assert_eq!(
        states,
        vec![
            "cut corrupt corrupt quarantine/d/cut.mp4 1",
            "good sharded - videos/d/good.mp4 0",
            "noise corrupt corrupt quarantine/d/noise.mp4 0",
            "silent corrupt corrupt quarantine/d/silent.mp4 0",
        ]
    );
    // Only the good video is in a shard.
    assert_eq!(
        env.strings("SELECT i.key FROM samples s JOIN items i ON i.id = s.item_id"),
        vec!["good"]
    );
    // A second run has nothing to do: corrupt files are not retried by shard.
    let (code, r, _) = shard(
        &env,
        &[
            "--dataset",
            "d",
            "--recipe",
            "videomae-16x4-224",
            "--size",
            SIZE,
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(r["videos_pending"], 0);
}

#[test]
fn a_missing_video_is_sent_back_to_fetch() {
    let env = Env::new();
    dataset(&env, "d", 2, 2);
    std::fs::remove_file(env.root.join("videos/d/v1.mp4")).unwrap();
    let (code, r, _) = shard(
        &env,
        &[
            "--dataset",
            "d",
            "--recipe",
            "videomae-16x4-224",
            "--size",
            SIZE,
        ],
    );
    assert_eq!(code, 3);
    assert_eq!(r["failed"][0]["item"], "v1");
    assert_eq!(
        env.query::<String>("SELECT f.state || ' ' || f.error_class FROM files f JOIN items i ON i.id = f.item_id WHERE i.key = 'v1'"),
        "failed_transient missing"
    );
}

/// A shard run of dataset `d` slow enough to be stopped while its one shard is being
/// written (one job, 16x224 clips, every sample in one shard).
const SLOW_ONE_SHARD: [&str; 11] = [
    "shard",
    "--dataset",
    "d",
    "--recipe",
    "videomae-16x4-224",
    "--size",
    "128x128",
    "--jobs",
    "1",
    "--samples-per-shard",
    "100",
];

#[test]
fn ctrl_c_stops_cleanly_keeps_what_was_done_and_exits_130() {
    let env = Env::new();
    let n = 10;
    dataset(&env, "d", n, n);
    let args = SLOW_ONE_SHARD;
    let mut child = env
        .command()
        .arg("--json")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Interrupt as soon as the shard is being written.
    let dir = env.root.join("shards/d");
    wait_for_temporary_shard(&dir, &mut child);
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["stopped"], "cancelled");
    let done = r["samples"].as_u64().unwrap();
    assert!(done >= 1 && done < n as u64, "{r}");
    assert_eq!(r["not_started"].as_u64().unwrap(), n as u64 - done);
    // What was decoded is in a sealed, recorded shard; nothing is left half-written.
    assert!(find(&dir, |n| n.contains(".tmp-")).is_none());
    assert_eq!(env.query::<i64>("SELECT count(*) FROM shards"), 1);
    assert_eq!(
        env.query::<i64>("SELECT count(*) FROM samples"),
        done as i64
    );
    assert_eq!(
        env.query::<String>("SELECT status FROM runs WHERE command = 'shard'"),
        "interrupted"
    );
    // The next run shards only the rest.
    let (code, r, e) = shard(&env, &args[1..]);
    assert_eq!(code, 0, "{e}");
    assert_eq!(r["samples"].as_u64().unwrap(), n as u64 - done);
    assert_eq!(env.query::<i64>("SELECT count(*) FROM samples"), n as i64);
}

#[test]
fn a_killed_run_leaves_no_shard_and_no_rows() {
    let env = Env::new();
    let n = 10;
    dataset(&env, "d", n, n);
    let mut child = env
        .command()
        .args(SLOW_ONE_SHARD)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the shard is being written (its temporary file exists), then kill.
    let dir = env.root.join("shards/d");
    // At once: ten small videos take well under a second, and a wait here could find
    // the shard already sealed on a fast machine.
    let tmp = wait_for_temporary_shard(&dir, &mut child);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        find(&dir, |n| n.ends_with(".tar")).is_none(),
        "a shard exists under its final name"
    );
    assert_eq!(env.query::<i64>("SELECT count(*) FROM shards"), 0);
    assert_eq!(env.query::<i64>("SELECT count(*) FROM samples"), 0);
    assert_eq!(
        env.strings("SELECT DISTINCT state FROM files"),
        vec!["verified"]
    );
    // The next run removes the leftover and writes everything.
    let (code, r, e) = shard(
        &env,
        &[
            "--dataset",
            "d",
            "--recipe",
            "videomae-16x4-224",
            "--size",
            "128x128",
            "--samples-per-shard",
            "100",
        ],
    );
    assert_eq!(code, 0, "{e}");
    assert_eq!(r["samples"], n);
    let left = r["removed_leftovers"].as_array().unwrap();
    assert_eq!(left.len(), 1);
    assert!(
        left[0]
            .as_str()
            .unwrap()
            .ends_with(tmp.file_name().unwrap().to_str().unwrap())
    );
    assert!(!tmp.exists());
}

/// Waits (60 s at most) until a run is writing a shard under `dir` and returns the
/// temporary file; fails if the run ends first.
fn wait_for_temporary_shard(dir: &Path, child: &mut std::process::Child) -> PathBuf {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(t) = find(dir, |n| n.contains(".tmp-")) {
            return t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no temporary shard appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it wrote a shard"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

fn find(dir: &Path, pred: impl Fn(&str) -> bool + Copy) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()? {
        let p = e.ok()?.path();
        if p.is_dir() {
            if let Some(f) = find(&p, pred) {
                return Some(f);
            }
        } else if pred(&p.file_name()?.to_string_lossy()) {
            return Some(p);
        }
    }
    None
}

#[test]
fn a_new_recipe_reuses_sharded_videos() {
    let env = Env::new();
    dataset(&env, "d", 3, 2);
    let (code, _, e) = shard(
        &env,
        &[
            "--dataset",
            "d",
            "--recipe",
            "videomae-16x4-224",
            "--size",
            SIZE,
        ],
    );
    assert_eq!(code, 0, "{e}");
    let (code, r, e) = shard(
        &env,
        &[
            "--dataset",
            "d",
            "--recipe",
            "pmv-portrait-16x4-288x192",
            "--size",
            "48x32",
            "--clips",
            "2",
            "--split",
            "train",
        ],
    );
    assert_eq!(code, 0, "{e}");
    assert_eq!(r["videos_pending"], 2, "only the train split was asked for");
    let path = r["shards"][0]["path"].as_str().unwrap();
    let reader = ShardReader::open(&env.root.join(path)).unwrap();
    assert_eq!(reader.sample(0).unwrap().shape, [2, 16, 48, 32, 3]);
    assert_eq!(env.query::<i64>("SELECT count(*) FROM recipes"), 2);
}

#[test]
fn a_damaged_shard_is_rebuilt_under_a_new_name() {
    let env = Env::new();
    dataset(&env, "d", 3, 3);
    let (code, r, e) = shard(
        &env,
        &[
            "--dataset",
            "d",
            "--recipe",
            "videomae-16x4-224",
            "--size",
            SIZE,
        ],
    );
    assert_eq!(code, 0, "{e}");
    let id = r["shards"][0]["id"].as_i64().unwrap();
    let path = env.root.join(r["shards"][0]["path"].as_str().unwrap());
    let recorded = r["shards"][0]["sha256"].as_str().unwrap().to_owned();
    let original = std::fs::read(&path).unwrap();
    // Bit rot in the middle of the frames.
    let mut rotten = original.clone();
    let mid = rotten.len() / 2;
    rotten[mid] ^= 0x40;
    std::fs::write(&path, &rotten).unwrap();
    assert!(
        ShardReader::open(&path)
            .unwrap()
            .verify_sha256(&recorded)
            .is_err()
    );

    let (code, r, e) = shard(&env, &["--rebuild", &id.to_string()]);
    assert_eq!(code, 0, "{e}");
    assert_eq!(r["identical"], true, "{r}");
    let new_path = env.root.join(r["new"]["path"].as_str().unwrap());
    assert_ne!(new_path, path);
    assert_eq!(std::fs::read(&new_path).unwrap(), original);
    assert_eq!(
        env.strings("SELECT state FROM shards ORDER BY id"),
        vec!["replaced", "live"]
    );
    assert_eq!(env.query::<i64>("SELECT count(*) FROM samples s JOIN shards sh ON sh.id = s.shard_id WHERE sh.state = 'live'"), 3);
    // A replaced shard cannot be rebuilt again, and a re-run has nothing to do.
    let (code, _, e) = shard(&env, &["--rebuild", &id.to_string()]);
    assert_eq!(code, 1);
    assert!(e.contains("replaced"), "{e}");
    let (_, r, _) = shard(
        &env,
        &[
            "--dataset",
            "d",
            "--recipe",
            "videomae-16x4-224",
            "--size",
            SIZE,
        ],
    );
    assert_eq!(r["videos_pending"], 0);
}

#[test]
fn the_real_sample_keeps_its_cover_text_and_labels() {
    let env = Env::new();
    let dir = env.path("MP4_download/Sea/99945958");
    std::fs::create_dir_all(&dir).unwrap();
    let example = repo().join("tests/data/xinpianchang/example");
    for f in ["99945958.txt", "99945958.mp4", "99945958.jpeg"] {
        std::fs::copy(example.join(f), dir.join(f)).unwrap();
    }
    std::fs::create_dir_all(env.path("MP4_download/City/99945958")).unwrap();
    std::fs::copy(
        example.join("99945958.txt"),
        env.path("MP4_download/City/99945958/99945958.txt"),
    )
    .unwrap();
    let out = env.ingest(&[
        "--dataset",
        "xpc",
        "--format",
        "xinpianchang",
        "--split",
        "train",
        s(&env.path("MP4_download")),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    register(
        &env,
        "xpc",
        "99945958",
        "video",
        &example.join("99945958.mp4"),
    );
    register(
        &env,
        "xpc",
        "99945958",
        "cover",
        &example.join("99945958.jpeg"),
    );
    let (code, r, e) = shard(
        &env,
        &["--dataset", "xpc", "--recipe", "pmv-portrait-16x4-288x192"],
    );
    assert_eq!(code, 0, "{e}");
    let reader =
        ShardReader::open(&env.root.join(r["shards"][0]["path"].as_str().unwrap())).unwrap();
    let sample = reader.sample(0).unwrap();
    assert_eq!(sample.shape, [1, 16, 288, 192, 3]);
    assert_eq!(
        sample.jpg.unwrap(),
        std::fs::read(example.join("99945958.jpeg")).unwrap()
    );
    assert_eq!(sample.txt.unwrap(), "Hong Kong Circa 2017, City B-Roll");
    assert_eq!(sample.label, Some(11));
    let meta = sample.meta().unwrap();
    assert_eq!(meta.labels, vec![11, 23]);
    assert_eq!((meta.width, meta.height), (640, 360));
    assert!((meta.fps.unwrap() - 23.976).abs() < 0.001);
    // A local source is named by its file name only.
    assert_eq!(meta.source.as_deref(), Some("local:99945958.mp4"));
    assert_eq!(meta.extra["source_frames"], 369);
    let (w, h, rot): (i64, i64, i64) = env
        .catalog()
        .query_row("SELECT width, height, rotation FROM probes", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!((w, h, rot), (640, 360, 0));
}

#[test]
fn bad_requests_are_refused() {
    let env = Env::new();
    let out = env.run(&["shard", "--dataset", "d", "--recipe", "videomae-16x4-224"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no catalog"), "{}", out.stderr);
    dataset(&env, "d", 1, 1);
    let out = env.run(&["shard", "--dataset", "d", "--recipe", "nope"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("videomae-16x4-224"), "{}", out.stderr);
    let out = env.run(&[
        "shard",
        "--dataset",
        "d",
        "--frames",
        "16",
        "--size",
        "224x224",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = env.run(&[
        "shard",
        "--dataset",
        "nope",
        "--recipe",
        "videomae-16x4-224",
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("no dataset named 'nope'"),
        "{}",
        out.stderr
    );
    let out = env.run(&[
        "shard",
        "--dataset",
        "d",
        "--recipe",
        "videomae-16x4-224",
        "--split",
        "../x",
    ]);
    assert_eq!(out.code, 1);
    let out = env.run(&["--json", "shard", "--list-recipes"]);
    assert_eq!(out.code, 0);
    assert!(
        out.json()["recipes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "pmv-portrait-16x4-288x192")
    );
}

/// Sets a flag once `after` videos are reported done.
struct CancelAfter {
    flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
    after: u64,
    done: std::sync::atomic::AtomicU64,
}

impl pmv_core::report::Reporter for CancelAfter {
    fn advance(&self, n: u64) {
        use std::sync::atomic::Ordering;
        if self.done.fetch_add(n, Ordering::SeqCst) + n >= self.after {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
}

#[test]
fn a_deadline_or_a_cancellation_stops_cleanly() {
    use pmv_catalog::Catalog;
    use pmv_core::root::DataRoot;
    use pmv_pipeline::sharding::{ShardOptions, Stop};

    let env = Env::new();
    dataset(&env, "d", 5, 5);
    let root = DataRoot::new(&env.root);
    let mut catalog = Catalog::open(&root.catalog_path()).unwrap();
    let recipe = frame_recipe::resolve(
        Some("videomae-16x4-224"),
        &Overrides {
            size: Some((64, 64)),
            ..Default::default()
        },
    )
    .unwrap();
    let mut opts = ShardOptions {
        dataset: "d".into(),
        splits: vec![],
        recipe,
        samples_per_shard: None,
        jobs: Some(1),
        limit: None,
        deadline: Some(std::time::Instant::now()),
        cancel: None,
    };
    let r =
        pmv_pipeline::sharding::run(&root, &mut catalog, &opts, &pmv_core::report::Silent).unwrap();
    assert_eq!(r.stopped, Some(Stop::Deadline));
    assert_eq!(r.not_started, 5);
    assert!(r.shards.is_empty());

    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    opts.deadline = None;
    opts.cancel = Some(flag.clone());
    let stopper = CancelAfter {
        flag,
        after: 2,
        done: Default::default(),
    };
    let r = pmv_pipeline::sharding::run(&root, &mut catalog, &opts, &stopper).unwrap();
    assert_eq!(r.stopped, Some(Stop::Cancelled));
    assert!((2..=3).contains(&r.videos_sharded), "{r:?}");
    assert_eq!(r.not_started, 5 - r.videos_sharded);
    // The shard open at the stop was closed and recorded: short, complete, readable.
    assert_eq!(r.shards.len(), 1);
    let reader = ShardReader::open(&env.root.join(&r.shards[0].path)).unwrap();
    reader.verify_sha256(&r.shards[0].sha256).unwrap();
    assert_eq!(reader.len(), r.videos_sharded);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["stopped"], "cancelled");

    // The next run does the rest.
    opts.cancel = None;
    let r2 =
        pmv_pipeline::sharding::run(&root, &mut catalog, &opts, &pmv_core::report::Silent).unwrap();
    assert_eq!(r2.videos_sharded, 5 - r.videos_sharded);
    assert_eq!(r2.shards[0].seq, 1);
}

#[test]
fn an_item_in_two_splits_is_decoded_once_and_written_to_both() {
    let env = Env::new();
    // PMV-400 publishes the same list as val and test.
    for split in ["val", "test"] {
        let text: String = (0..2)
            .map(|i| {
                format!(
                    "{}\n",
                    json!({"id": format!("v{i}"), "label": i, "split": split})
                )
            })
            .collect();
        let m = env.write(&format!("{split}.jsonl"), text);
        let out = env.ingest(&["--dataset", "d", "--format", "jsonl", s(&m)]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    add_video(&env, "d", "v0", 0);
    add_video(&env, "d", "v1", 1);
    let (code, r, e) = shard(
        &env,
        &[
            "--dataset",
            "d",
            "--recipe",
            "videomae-16x4-224",
            "--size",
            SIZE,
        ],
    );
    assert_eq!(code, 0, "{e}");
    assert_eq!(r["videos_sharded"], 2);
    assert_eq!(r["samples"], 4);
    let mut splits: Vec<&str> = r["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["split"].as_str().unwrap())
        .collect();
    splits.sort();
    assert_eq!(splits, vec!["test", "val"]);
    // The same frames in both, each sample's json naming its own split.
    let read = |i: usize| {
        ShardReader::open(&env.root.join(r["shards"][i]["path"].as_str().unwrap())).unwrap()
    };
    let (a, b) = (read(0), read(1));
    for i in 0..2 {
        assert!(a.sample(i).unwrap().raw_frames() == b.sample(i).unwrap().raw_frames());
        assert_ne!(
            a.sample(i).unwrap().meta().unwrap().split,
            b.sample(i).unwrap().meta().unwrap().split
        );
    }
    // A second run has nothing to do.
    let (_, r, _) = shard(
        &env,
        &[
            "--dataset",
            "d",
            "--recipe",
            "videomae-16x4-224",
            "--size",
            SIZE,
        ],
    );
    assert_eq!(r["videos_pending"], 0);
}
