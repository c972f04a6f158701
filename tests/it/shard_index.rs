//! The files beside a split's shards: `index.json` (a wids shard index with pmv-data's
//! keys) and `classes.txt`, checked against the catalog after a first run, an
//! incremental run and a rebuild of a damaged shard (single- and multi-label datasets);
//! and DATA.md's PyTorch DataLoader example, run as it is written on raw and JPEG shards.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::shard_util::{Spec, ingest_items, make_video, register};
use crate::util::{Env, repo, s, venv_python};

const NAMES: [&str; 3] = ["cat", "dog", "fox"];

/// A small raw recipe: 2 clips of 4 frames, 64×64, 2 samples a shard.
const RAW: [&str; 10] = [
    "--recipe",
    "videomae-16x4-224",
    "--size",
    "64x64",
    "--clips",
    "2",
    "--frames",
    "4",
    "--samples-per-shard",
    "2",
];

/// Items `v0..vN` labelled by name (`NAMES[i % 3]`), the first `train_n` in train.
fn items(n: usize, train_n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "id": format!("v{i}"),
                "label": NAMES[i % 3],
                "split": if i < train_n { "train" } else { "val" },
            })
        })
        .collect()
}

/// A generated 1 to 2 s video registered as the verified video of `key`.
fn add_video(env: &Env, dataset: &str, key: &str, i: usize) {
    let dir = env.path("src");
    std::fs::create_dir_all(&dir).unwrap();
    let file = format!("{dataset}-{key}.mp4");
    let spec = Spec {
        seconds: 1.0 + (i % 2) as f64,
        ..Spec::h264(&file, 96, 64, 1.0)
    };
    let v = make_video(&dir, &spec);
    register(env, dataset, key, "video", &v);
}

fn shard(env: &Env, args: &[&str]) -> Value {
    let mut all = vec!["--json", "shard"];
    all.extend_from_slice(args);
    let out = env.run(&all);
    assert_eq!(out.code, 0, "shard {args:?}: {}", out.stderr);
    out.json()
}

/// A live shard as the catalog records it.
struct Live {
    recipe_id: String,
    split: String,
    path: String,
    bytes: i64,
    sha256: String,
    /// Sample rows recorded for it.
    samples: i64,
}

fn live_shards(env: &Env, dataset: &str) -> Vec<Live> {
    let c = env.catalog();
    let mut stmt = c
        .prepare(
            "SELECT s.recipe_id, s.split, s.path, s.bytes, s.sha256, \
               (SELECT count(*) FROM samples x WHERE x.shard_id = s.id) \
             FROM shards s JOIN datasets d ON d.id = s.dataset_id \
             WHERE d.name = ?1 AND s.state = 'live' ORDER BY s.recipe_id, s.split, s.seq",
        )
        .unwrap();
    stmt.query_map([dataset], |r| {
        Ok(Live {
            recipe_id: r.get(0)?,
            split: r.get(1)?,
            path: r.get(2)?,
            bytes: r.get(3)?,
            sha256: r.get(4)?,
            samples: r.get(5)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (no shard index beside the shards)", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Checks `index.json` and `classes.txt` of every split of `dataset` against the
/// catalog; returns the indexes by split folder (relative to the root).
fn check_against_catalog(env: &Env, dataset: &str) -> BTreeMap<String, Value> {
    let live = live_shards(env, dataset);
    assert!(!live.is_empty());
    let c = env.catalog();
    let names: Vec<String> = {
        let mut stmt = c
            .prepare(
                "SELECT c.name FROM classes c JOIN datasets d ON d.id = c.dataset_id \
                 WHERE d.name = ?1 ORDER BY c.class_id",
            )
            .unwrap();
        stmt.query_map([dataset], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let multi_label: bool = c
        .query_row(
            "SELECT multi_label FROM datasets WHERE name = ?1",
            [dataset],
            |r| r.get(0),
        )
        .unwrap();
    let mut by_folder: BTreeMap<String, Vec<&Live>> = BTreeMap::new();
    for l in &live {
        let folder = Path::new(&l.path)
            .parent()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        by_folder.entry(folder).or_default().push(l);
    }
    let mut out = BTreeMap::new();
    for (folder, shards) in &by_folder {
        let dir = env.root.join(folder);
        let (recipe_id, split) = (&shards[0].recipe_id, &shards[0].split);
        let index = read_json(&dir.join("index.json"));
        // What wids requires of a shard index.
        assert_eq!(index["__kind__"], "wids-shard-index-v1");
        assert_eq!(index["wids_version"], 1);
        let list = index["shardlist"].as_array().unwrap();
        assert_eq!(
            list.iter()
                .map(|e| e["url"].as_str().unwrap())
                .collect::<Vec<_>>(),
            shards
                .iter()
                .map(|l| Path::new(&l.path).file_name().unwrap().to_str().unwrap())
                .collect::<Vec<_>>(),
            "{folder}: the index lists exactly the live shards, in sequence order"
        );
        for (e, l) in list.iter().zip(shards) {
            assert_eq!(e["nsamples"], l.samples, "{}", l.path);
            assert_eq!(e["filesize"], l.bytes, "{}", l.path);
            assert_eq!(e["sha256"], l.sha256.as_str());
            // Relative to the index's folder.
            let file = dir.join(e["url"].as_str().unwrap());
            assert_eq!(std::fs::metadata(&file).unwrap().len() as i64, l.bytes);
        }
        let total: i64 = shards.iter().map(|l| l.samples).sum();
        assert_eq!(index["nsamples"], total);
        assert_eq!(index["bytes"], shards.iter().map(|l| l.bytes).sum::<i64>());
        assert_eq!(index["dataset"], dataset);
        assert_eq!(index["split"], split.as_str());
        assert_eq!(index["recipe"]["id"], recipe_id.as_str());
        let params: Value = serde_json::from_str(
            &c.query_row(
                "SELECT params FROM recipes WHERE id = ?1",
                [recipe_id],
                |r| r.get::<_, String>(0),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(index["recipe"]["params"], params);
        for key in ["clips", "frames", "height", "width"] {
            assert_eq!(index[key], params[key], "{key}");
        }
        assert_eq!(
            index["codec"]["kind"],
            params
                .get("codec")
                .map_or("raw", |c| c["kind"].as_str().unwrap())
        );
        assert_eq!(index["multi_label"], multi_label);
        assert_eq!(index["num_classes"], names.len());
        // Samples per `.cls` value, and without one.
        let mut cls = vec![0i64; names.len()];
        let mut unlabelled = 0i64;
        let mut stmt = c
            .prepare(
                "SELECT x.label, count(*) FROM samples x JOIN shards s ON s.id = x.shard_id \
                 JOIN datasets d ON d.id = s.dataset_id WHERE d.name = ?1 \
                 AND s.recipe_id = ?2 AND s.split = ?3 AND s.state = 'live' GROUP BY x.label",
            )
            .unwrap();
        for row in stmt
            .query_map([dataset, recipe_id, split], |r| {
                Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, i64>(1)?))
            })
            .unwrap()
        {
            match row.unwrap() {
                (Some(l), n) => cls[l as usize] = n,
                (None, n) => unlabelled = n,
            }
        }
        assert_eq!(index["cls_samples"], json!(cls));
        assert_eq!(index["unlabelled"], unlabelled);
        // Every split of the recipe, with its totals.
        let mut splits = BTreeMap::new();
        for l in live.iter().filter(|l| &l.recipe_id == recipe_id) {
            let t = splits
                .entry(l.split.clone())
                .or_insert_with(|| json!({"shards": 0, "nsamples": 0, "bytes": 0}));
            for (k, v) in [("shards", 1), ("nsamples", l.samples), ("bytes", l.bytes)] {
                t[k] = json!(t[k].as_i64().unwrap() + v);
            }
        }
        assert_eq!(index["splits"], json!(splits));

        let classes = std::fs::read_to_string(dir.join("classes.txt")).unwrap();
        assert_eq!(
            classes,
            names.iter().map(|n| format!("{n}\n")).collect::<String>()
        );
        out.insert(folder.clone(), index);
    }
    // No temporary file is left beside them.
    for folder in by_folder.keys() {
        for e in std::fs::read_dir(env.root.join(folder)).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "{folder}/{name} left behind");
        }
    }
    out
}

/// Opens every index with `wids.ShardListDataset` when the installed webdataset ships
/// `wids` (0.2.x; 1.0.x does not) and checks its length.
fn wids_opens(indexes: &BTreeMap<String, Value>, root: &Path) {
    let script = r#"
import importlib.util, sys
if importlib.util.find_spec("wids") is None:
    print("absent")
    sys.exit(0)
import wids
print(" ".join(str(len(wids.ShardListDataset(p))) for p in sys.argv[1:]))
"#;
    let paths: Vec<PathBuf> = indexes
        .keys()
        .map(|f| root.join(f).join("index.json"))
        .collect();
    let mut args: Vec<&OsStr> = vec!["-c".as_ref(), script.as_ref()];
    args.extend(paths.iter().map(|p| p.as_os_str()));
    let out = venv_python(args);
    if out.trim() == "absent" {
        eprintln!("wids is not installed (webdataset 1.0.x): index checked against its rules only");
        return;
    }
    let lens: Vec<u64> = indexes
        .values()
        .map(|i| i["nsamples"].as_u64().unwrap())
        .collect();
    assert_eq!(
        out.split_whitespace()
            .map(|n| n.parse::<u64>().unwrap())
            .collect::<Vec<_>>(),
        lens
    );
}

#[test]
fn the_index_and_classes_follow_the_live_shards() {
    let env = Env::new();
    ingest_items(&env, "d", &items(5, 3));
    for i in 0..5 {
        add_video(&env, "d", &format!("v{i}"), i);
    }
    let r = shard(&env, &[&["--dataset", "d"], &RAW[..]].concat());
    let indexes = check_against_catalog(&env, "d");
    assert_eq!(indexes.len(), 2, "train and val");
    let train = indexes
        .keys()
        .find(|k| k.ends_with("/train"))
        .unwrap()
        .clone();
    assert_eq!(indexes[&train]["shardlist"].as_array().unwrap().len(), 2);
    assert_eq!(indexes[&train]["cls_samples"], json!([1, 1, 1]));
    assert_eq!(
        r["indexes"],
        json!(
            indexes
                .keys()
                .map(|k| format!("{k}/index.json"))
                .collect::<Vec<_>>()
        )
    );
    wids_opens(&indexes, &env.root);

    // Incremental: two more train videos, one more shard, listed after the others.
    ingest_items(
        &env,
        "d",
        &items(7, 3)
            .into_iter()
            .enumerate()
            .map(|(i, mut v)| {
                if i >= 5 {
                    v["split"] = json!("train");
                }
                v
            })
            .collect::<Vec<_>>(),
    );
    add_video(&env, "d", "v5", 5);
    add_video(&env, "d", "v6", 6);
    let r = shard(&env, &[&["--dataset", "d"], &RAW[..]].concat());
    assert_eq!(r["shards"].as_array().unwrap().len(), 1, "{r}");
    let indexes = check_against_catalog(&env, "d");
    let list = indexes[&train]["shardlist"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(indexes[&train]["nsamples"], 5);
    assert_eq!(indexes[&train]["splits"]["val"]["nsamples"], 2);

    // Rebuild: a damaged shard is replaced under a new name; the index lists the new
    // one in the old one's place and never the old one (whose file stays).
    let old_path = format!("{train}/{}", list[0]["url"].as_str().unwrap());
    let old_id: i64 = env
        .catalog()
        .query_row("SELECT id FROM shards WHERE path = ?1", [&old_path], |r| {
            r.get(0)
        })
        .unwrap();
    let file = env.root.join(&old_path);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let r = shard(&env, &["--rebuild", &old_id.to_string()]);
    let new_path = r["new"]["path"].as_str().unwrap().to_owned();
    let indexes = check_against_catalog(&env, "d");
    let urls: Vec<String> = indexes[&train]["shardlist"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{train}/{}", e["url"].as_str().unwrap()))
        .collect();
    assert!(!urls.contains(&old_path), "{urls:?}");
    assert!(urls.contains(&new_path), "{urls:?}");
    assert!(file.exists(), "the damaged file is left where it was");
    assert_eq!(indexes[&train]["nsamples"], 5);
    assert_eq!(
        r["indexes"],
        json!(
            indexes
                .keys()
                .map(|k| format!("{k}/index.json"))
                .collect::<Vec<_>>()
        )
    );

    // A multi-label dataset: the same class list; the labels are in the `.json`.
    let manifest = env.write(
        "m.jsonl",
        [
            json!({"id": "a", "labels": ["owl", "bat"], "split": "train"}),
            json!({"id": "b", "labels": ["bat"], "split": "train"}),
        ]
        .iter()
        .map(|v| format!("{v}\n"))
        .collect::<String>(),
    );
    let out = env.ingest(&[
        "--dataset",
        "m",
        "--format",
        "jsonl",
        "--multi-label",
        s(&manifest),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    add_video(&env, "m", "a", 0);
    add_video(&env, "m", "b", 1);
    shard(&env, &[&["--dataset", "m"], &RAW[..]].concat());
    let indexes = check_against_catalog(&env, "m");
    let (folder, index) = indexes.iter().next().unwrap();
    assert_eq!(index["multi_label"], true);
    let classes = std::fs::read_to_string(env.root.join(folder).join("classes.txt")).unwrap();
    let classes: Vec<&str> = classes.lines().collect();
    let c = env.catalog();
    let labels: String = c
        .query_row("SELECT labels FROM items WHERE key = 'a'", [], |r| r.get(0))
        .unwrap();
    let mut named: Vec<&str> = labels
        .split(',')
        .map(|l| classes[l.parse::<usize>().unwrap()])
        .collect();
    named.sort();
    assert_eq!(named, ["bat", "owl"]);
}

/// DATA.md's DataLoader example: the ```python block that starts with
/// `# A PyTorch DataLoader over one split`, written to `loader.py` in the test's dir.
fn documented_loader(env: &Env) -> PathBuf {
    let data = std::fs::read_to_string(repo().join("DATA.md")).unwrap();
    let start = data
        .find("```python\n# A PyTorch DataLoader over one split")
        .expect("DATA.md has the PyTorch DataLoader example");
    let body = &data[start + "```python\n".len()..];
    env.write("py/loader.py", &body[..body.find("```").unwrap()])
}

/// Labels (`.cls`) of the live samples of a split folder, sorted.
fn catalog_labels(env: &Env, folder: &str) -> Vec<i64> {
    let c = env.catalog();
    let mut stmt = c
        .prepare(
            "SELECT x.label FROM samples x JOIN shards s ON s.id = x.shard_id \
             WHERE s.state = 'live' AND substr(s.path, 1, length(?1) + 1) = ?1 || '/' ORDER BY x.label",
        )
        .unwrap();
    stmt.query_map([folder], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Runs the example as a script over `folder` in `mode`; checks every batch's shape
/// (`per_sample`: the shape of one sample) and labels and the count it reports.
fn run_example(env: &Env, loader: &Path, folder: &str, mode: &str, per_sample: &[u64]) {
    let dir = env.root.join(folder);
    let out = venv_python([loader.as_os_str(), dir.as_os_str(), mode.as_ref()]);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (last, batches) = lines.split_last().unwrap();
    let index = read_json(&dir.join("index.json"));
    let classes = std::fs::read_to_string(dir.join("classes.txt")).unwrap();
    let classes: Vec<&str> = classes.lines().collect();
    let mut labels = vec![];
    for b in batches {
        let shape: Vec<u64> = serde_json::from_value(b["shape"].clone()).unwrap();
        let n = b["labels"].as_array().unwrap().len() as u64;
        assert!((1..=4).contains(&n), "{b}");
        assert_eq!(shape[0], n);
        assert_eq!(&shape[1..], per_sample, "{folder} {mode}");
        for (l, name) in b["labels"]
            .as_array()
            .unwrap()
            .iter()
            .zip(b["classes"].as_array().unwrap())
        {
            assert_eq!(
                classes[l.as_u64().unwrap() as usize],
                name.as_str().unwrap()
            );
            labels.push(l.as_i64().unwrap());
        }
    }
    labels.sort();
    assert_eq!(labels, catalog_labels(env, folder), "{folder} {mode}");
    assert_eq!(last["samples"], index["nsamples"]);
    assert_eq!(last["length"], index["nsamples"]);
    assert_eq!(last["num_classes"], 3);
}

#[test]
fn the_documented_dataloader_reads_raw_and_jpeg_shards() {
    let env = Env::new();
    ingest_items(&env, "d", &items(5, 3));
    for i in 0..5 {
        add_video(&env, "d", &format!("v{i}"), i);
    }
    let raw = shard(&env, &[&["--dataset", "d"], &RAW[..]].concat());
    let jpeg = shard(
        &env,
        &[&["--dataset", "d", "--codec", "jpeg"], &RAW[..]].concat(),
    );
    let folders = |r: &Value| -> Vec<String> {
        r["indexes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                p.as_str()
                    .unwrap()
                    .trim_end_matches("/index.json")
                    .to_owned()
            })
            .collect()
    };
    let (raw, jpeg) = (folders(&raw), folders(&jpeg));
    assert_eq!(raw.len(), 2);
    assert_eq!(jpeg.len(), 2);
    assert_ne!(raw, jpeg);
    let loader = documented_loader(&env);
    // Training: one clip, (C, T, H, W); testing: all K clips, (K, C, T, H, W).
    run_example(&env, &loader, &raw[0], "train", &[3, 4, 64, 64]);
    run_example(&env, &loader, &jpeg[1], "test", &[2, 3, 4, 64, 64]);

    // The values: normalised back, every clip equals the frames of its shard member
    // (NumPy for raw, PIL for JPEG, as webdataset decodes them) within float rounding,
    // and a training sample is one of its sample's clips.
    let check = r#"
import io, json, os, sys, tarfile
import numpy as np, torch
from PIL import Image
sys.path.insert(0, os.path.dirname(sys.argv[1]))
from loader import split_dataset, MEAN, STD

def members(split_dir, index):
    out = {}
    for shard in index["shardlist"]:
        with tarfile.open(os.path.join(split_dir, shard["url"])) as tar:
            for m in tar:
                key, ext = m.name.split(".", 1)
                out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out

worst = 0.0
for split_dir in sys.argv[2:]:
    ds, classes, index = split_dataset(split_dir, train=False)
    ref = members(split_dir, index)
    train, _, _ = split_dataset(split_dir, train=True)
    picked = {int(label): clip for clip, label in train}
    n = 0
    for (clips, label), (key, m) in zip(ds, ref.items()):
        meta = json.loads(m["json"])
        assert label == int(m["cls"]) == meta["labels"][0], (label, key)
        if "frames.npy" in m:
            frames = np.load(io.BytesIO(m["frames.npy"]))
        else:
            k, t, h, w, _ = meta["frame_shape"]
            frames = np.stack([np.asarray(Image.open(io.BytesIO(m[f"c{c:02d}f{i:03d}.jpg"])).convert("RGB"))
                               for c in range(k) for i in range(t)]).reshape(k, t, h, w, 3)
        want = torch.from_numpy(frames).permute(0, 4, 1, 2, 3).double()
        got = (clips.double() * STD.double() + MEAN.double()) * 255
        worst = max(worst, float((got - want).abs().max()))
        n += 1
    assert n == index["nsamples"] == len(ref), (n, index["nsamples"], len(ref))
    # Labels are 0..2, one sample each in train; a picked clip is one of K.
    for clips, label in ds:
        if label in picked and any(torch.equal(picked[label], c) for c in clips):
            picked.pop(label)
    assert not picked, sorted(picked)
print(worst)
"#;
    let dirs: Vec<PathBuf> = [&raw[0], &raw[1], &jpeg[0], &jpeg[1]]
        .iter()
        .map(|f| env.root.join(f))
        .collect();
    let mut args: Vec<&OsStr> = vec!["-c".as_ref(), check.as_ref(), loader.as_os_str()];
    args.extend(dirs.iter().map(|d| d.as_os_str()));
    let out = venv_python(args);
    let worst: f64 = out.trim().parse().unwrap();
    // float32 normalisation undone in float64: well under a thousandth of a level.
    assert!(worst < 1e-3, "{worst}");
}
