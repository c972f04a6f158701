//! The JPEG frame codec end to end: real videos (landscape and portrait, made here with
//! the `ffmpeg` command line) sharded with a JPEG recipe and its raw twin; the JPEG
//! samples decode to the raw frames within a PSNR bound, the catalog's record opens the
//! same samples as a scan, DATA.md's Python reader (webdataset + PIL) gives the arrays
//! the Rust reader decodes, and a damaged frame is an error naming its sample.

use std::path::{Path, PathBuf};
use std::process::Command;

use pmv_core::frame_recipe::Codec;
use pmv_pipeline::sharding::{SampleIndex, ShardReader};
use serde_json::json;

use crate::shard_util::{H264, ffmpeg, ingest_items, psnr, register};
use crate::util::{Env, repo, s};

/// Least PSNR of a JPEG (q90, 4:2:0) frame against the raw recipe's frame of the same
/// video (camera footage; synthetic patterns with saturated colour edges lose more to
/// 4:2:0).
const MIN_PSNR_DB: f64 = 35.0;
/// Most a pixel of DATA.md's Python reader (PIL's libjpeg) may differ from the Rust
/// reader's (libjpeg-turbo): both are libjpeg-turbo with the same defaults, so the
/// expected difference is none; one level allows another IDCT.
const MAX_PY_DIFF: u8 = 1;

/// The small recipe flags the tests use, on top of a built-in JPEG recipe: 2 clips of 4
/// frames, 112×64 (a 7:4 portrait, not a multiple of the 16-pixel MCU), short side 64.
const SMALL: [&str; 10] = [
    "--recipe",
    "pmv-16x4-s320-k10-jpeg",
    "--size",
    "112x64",
    "--short-side",
    "64",
    "--clips",
    "2",
    "--frames",
    "4",
];

fn shard(env: &Env, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--json", "shard", "--dataset", "d"];
    args.extend_from_slice(&SMALL);
    args.extend_from_slice(extra);
    let out = env.run(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.json()
}

/// Two items made from the real xinpianchang sample (camera footage, not a synthetic
/// pattern): 1.5 s of it at 256×144 (16:9 landscape) and the same transposed
/// (`transpose=1`, 9:16 portrait).
fn dataset(env: &Env) {
    ingest_items(
        env,
        "d",
        &[
            json!({"id": "land", "label": 0, "split": "train"}),
            json!({"id": "port", "label": 1, "split": "train"}),
        ],
    );
    let dir = env.path("src");
    std::fs::create_dir_all(&dir).unwrap();
    let sample = repo().join("tests/data/xinpianchang/example/99945958.mp4");
    let make = |name: &str, filter: &str| {
        let out = dir.join(name);
        let mut args = vec![
            "-ss",
            "1",
            "-t",
            "1.5",
            "-i",
            s(&sample),
            "-vf",
            filter,
            "-an",
        ];
        args.extend_from_slice(H264);
        args.push(s(&out));
        ffmpeg(&args);
        out
    };
    let land = make("land.mp4", "scale=256:144");
    let port = make("port.mp4", "scale=256:144,transpose=1");
    register(env, "d", "land", "video", &land);
    register(env, "d", "port", "video", &port);
}

/// The one shard a run wrote.
fn only_shard(r: &serde_json::Value) -> String {
    let shards = r["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 1, "{r}");
    shards[0]["path"].as_str().unwrap().to_owned()
}

/// DATA.md's Python reader: the ```python block that starts with `# Read pmv-data shards`.
fn documented_reader() -> String {
    let data = std::fs::read_to_string(repo().join("DATA.md")).unwrap();
    let start = data
        .find("```python\n# Read pmv-data shards")
        .expect("DATA.md has the Python shard reader");
    let body = &data[start + "```python\n".len()..];
    body[..body.find("```").unwrap()].to_owned()
}

/// Runs DATA.md's reader over `shard`; returns, per key, the shape and the bytes of
/// the array it made.
fn python_arrays(shard: &Path, out: &Path) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let script = documented_reader()
        + r#"
import json, sys
out = sys.argv[1]
seen = []
for key, frames, meta in samples(sys.argv[2:]):
    assert frames.dtype == np.uint8
    np.ascontiguousarray(frames).tofile(f"{out}/{key}.bin")
    seen.append([key, list(frames.shape)])
print(json.dumps(seen))
"#;
    let run = Command::new(repo().join(".venv/bin/python"))
        .arg("-c")
        .arg(&script)
        .arg(out)
        .arg(shard)
        .output()
        .expect("run the venv python");
    assert!(
        run.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let seen: Vec<(String, Vec<usize>)> = serde_json::from_slice(&run.stdout).unwrap();
    seen.into_iter()
        .map(|(key, shape)| {
            let bytes = std::fs::read(out.join(format!("{key}.bin"))).unwrap();
            (key, shape, bytes)
        })
        .collect()
}

#[test]
fn jpeg_shards_decode_to_the_raw_frames_in_rust_and_python() {
    let env = Env::new();
    dataset(&env);
    let jpeg = shard(&env, &[]);
    assert_eq!(
        jpeg["recipe"]["name"], "4x4-k2-112x64-ss64-jpeg90",
        "{jpeg}"
    );
    assert_eq!(
        jpeg["recipe"]["params"]["codec"],
        json!({"kind": "jpeg", "quality": 90})
    );
    let raw = shard(&env, &["--codec", "raw"]);
    assert_eq!(raw["recipe"]["name"], "4x4-k2-112x64-ss64");
    assert!(raw["recipe"]["params"].get("codec").is_none(), "{raw}");
    let (jpeg_rel, raw_rel) = (only_shard(&jpeg), only_shard(&raw));
    let jpeg_path = env.root.join(&jpeg_rel);
    let jr = ShardReader::open(&jpeg_path).unwrap();
    let rr = ShardReader::open(&env.root.join(&raw_rel)).unwrap();
    assert_eq!(jr.len(), 2);
    let (jpeg_bytes, raw_bytes) = (jr.bytes().len(), rr.bytes().len());
    assert!(
        jpeg_bytes * 2 < raw_bytes,
        "JPEG shard {jpeg_bytes} bytes, raw {raw_bytes}"
    );

    // The catalog's record (samples.members) opens the same samples as the scan.
    let conn = env.catalog();
    let mut stmt = conn
        .prepare(
            "SELECT s.members FROM samples s JOIN shards sh ON sh.id = s.shard_id \
             WHERE sh.path = ?1 ORDER BY s.ordinal",
        )
        .unwrap();
    let recorded: Vec<SampleIndex> = stmt
        .query_map([&jpeg_rel], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|m| serde_json::from_str(&m.unwrap()).unwrap())
        .collect();
    assert_eq!(recorded, jr.index());
    let indexed = ShardReader::open_indexed(&jpeg_path, recorded).unwrap();

    let schema_text = std::fs::read_to_string(repo().join("schemas/shard-sample.schema.json"));
    let schema =
        jsonschema::validator_for(&serde_json::from_str(&schema_text.unwrap()).unwrap()).unwrap();
    let shape = [2, 4, 112, 64, 3];
    let clip_bytes = 4 * 112 * 64 * 3;
    let mut rust = vec![];
    let mut worst = f64::INFINITY;
    let mut buf = vec![];
    for i in 0..2 {
        let (j, j2) = (jr.sample(i).unwrap(), indexed.sample(i).unwrap());
        let r = (0..2)
            .map(|n| rr.sample(n).unwrap())
            .find(|r| r.key == j.key)
            .unwrap();
        assert_eq!((j.shape, r.shape), (shape, shape));
        assert_eq!(j.codec, Codec::Jpeg { quality: 90 });
        let raw_json: serde_json::Value = serde_json::from_slice(j.json.unwrap()).unwrap();
        assert!(schema.is_valid(&raw_json), "{raw_json}");
        assert_eq!(raw_json["frame_shape"], json!(shape));
        assert_eq!(
            raw_json["frame_codec"],
            json!({"kind": "jpeg", "quality": 90})
        );
        assert_eq!(
            j.meta().unwrap().frame_indices,
            r.meta().unwrap().frame_indices
        );
        j.check_frames().unwrap();
        let mut all = vec![];
        for k in 0..2 {
            let got = j.clip_pixels(k, &mut buf).unwrap().to_vec();
            assert_eq!(got.len(), clip_bytes);
            assert_eq!(j2.clip_pixels(k, &mut buf).unwrap(), &got[..]);
            let want = r.clip_pixels(k, &mut buf).unwrap();
            for (f, (g, w)) in got
                .chunks(clip_bytes / 4)
                .zip(want.chunks(clip_bytes / 4))
                .enumerate()
            {
                let db = psnr(g, w);
                assert!(
                    db >= MIN_PSNR_DB,
                    "{} clip {k} frame {f}: {db:.1} dB",
                    j.key
                );
                worst = worst.min(db);
            }
            all.extend_from_slice(&got);
        }
        rust.push((j.key.to_owned(), all));
    }
    eprintln!("JPEG q90 against raw frames: worst PSNR {worst:.1} dB");

    // DATA.md's Python reader gives the same arrays.
    let out = tempfile::tempdir().unwrap();
    let py = python_arrays(&jpeg_path, out.path());
    assert_eq!(py.len(), 2);
    for (key, py_shape, py_bytes) in &py {
        assert_eq!(py_shape, &shape.to_vec(), "{key}");
        let (_, mine) = rust.iter().find(|(k, _)| k == key).unwrap();
        let diff = mine
            .iter()
            .zip(py_bytes)
            .map(|(&a, &b)| a.abs_diff(b))
            .max()
            .unwrap();
        assert!(
            diff <= MAX_PY_DIFF,
            "{key}: Python differs by {diff} levels"
        );
        eprintln!("{key}: DATA.md's Python reader differs from Rust by at most {diff} levels");
    }
    // It reads raw shards too.
    let py = python_arrays(&env.root.join(&raw_rel), out.path());
    assert_eq!(py.len(), 2);
    for (key, py_shape, py_bytes) in &py {
        assert_eq!(py_shape, &shape.to_vec());
        let s = (0..2)
            .map(|n| rr.sample(n).unwrap())
            .find(|s| s.key == key)
            .unwrap();
        assert_eq!(s.raw_frames().unwrap(), &py_bytes[..]);
    }
}

#[test]
fn a_damaged_frame_names_its_sample_and_member() {
    let env = Env::new();
    dataset(&env);
    let r = shard(&env, &[]);
    let path: PathBuf = env.root.join(only_shard(&r));
    let (pos, member) = {
        let reader = ShardReader::open(&path).unwrap();
        let pos = reader.index().iter().position(|s| s.key == "port").unwrap();
        // Clip 1, frame 2.
        (pos, reader.index()[pos].frame_members[4 + 2])
    };
    // The frame's last bytes (its end-of-image marker among them) zeroed: the tar
    // still scans, the JPEG no longer decodes.
    let mut bytes = std::fs::read(&path).unwrap();
    let end = member.end() as usize;
    bytes[end - 16..end].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let reader = ShardReader::open(&path).unwrap();
    let s = reader.sample(pos).unwrap();
    let mut buf = vec![];
    s.clip_pixels(0, &mut buf).unwrap();
    let e = s.clip_pixels(1, &mut buf).unwrap_err().to_string();
    assert!(
        e.contains("sample port")
            && e.contains("port.c01f002.jpg")
            && e.contains("does not decode"),
        "{e}"
    );
    let e = reader.check_frames().unwrap_err().to_string();
    assert!(
        e.contains(path.to_str().unwrap()) && e.contains("port"),
        "{e}"
    );
}
