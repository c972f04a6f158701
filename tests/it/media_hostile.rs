//! Media files that attack the decoder, made by the tests: MP4s whose sample tables
//! declare 80 million samples in about a kilobyte (plain and fragmented), a video larger
//! than 8K, covers whose names FFmpeg would read as numbered-file patterns, and a WebM
//! whose colour matrix is a number no FFmpeg enum has. `probe` refuses the first two at
//! once, naming the file and what is wrong, in bounded memory; `shard` quarantines them,
//! goes on with the others and never opens them again; every cover is read from its own
//! file; the unknown colour matrix is named `unknown`.

use std::path::Path;

use pmv_pipeline::sharding::ShardReader;
use serde_json::json;

use crate::shard_util::{Spec, ffmpeg, ingest_items, make_video, register};
use crate::util::{Env, Out, s};

/// Samples the forged files declare.
const DECLARED: u32 = 80_000_000;
/// The most memory `probe` may hold on them; libavformat alone indexed them in ~2 GB.
const MAX_RSS_MIB: u64 = 300;

fn bx(t: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut v = (8 + payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(t);
    v.extend_from_slice(payload);
    v
}

/// A full box: version 0, `flags`, then `payload`.
fn full(t: &[u8; 4], flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = flags.to_be_bytes().to_vec();
    p.extend_from_slice(payload);
    bx(t, &p)
}

fn be(fields: &[u32]) -> Vec<u8> {
    fields.iter().flat_map(|f| f.to_be_bytes()).collect()
}

const IDENTITY: [u32; 9] = [0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x4000_0000];

/// A movie with one 64x64 H.264 track (no parameter sets: nothing is ever decoded)
/// whose sample tables are `tables`, and `extra` boxes after the track.
fn moov(tables: &[Vec<u8>], extra: &[u8]) -> Vec<u8> {
    let mut mvhd = be(&[0, 0, 1000, 1000, 0x10000]);
    mvhd.extend([1, 0]);
    mvhd.extend([0; 10]);
    mvhd.extend(be(&IDENTITY));
    mvhd.extend([0; 24]);
    mvhd.extend(be(&[2]));
    let mut tkhd = be(&[0, 0, 1, 0, 1000, 0, 0, 0, 0]);
    tkhd.extend(be(&IDENTITY));
    tkhd.extend(be(&[64 << 16, 64 << 16]));
    let mdhd = [be(&[0, 0, 25, 0]), vec![0x55, 0xc4, 0, 0]].concat();
    let mut hdlr = be(&[0]);
    hdlr.extend_from_slice(b"vide");
    hdlr.extend([0; 12]);
    hdlr.extend_from_slice(b"VideoHandler\0");
    let mut avc1 = vec![0, 0, 0, 0, 0, 0, 0, 1];
    avc1.extend([0; 16]);
    avc1.extend(be(&[(64 << 16) | 64, 0x48_0000, 0x48_0000, 0]));
    avc1.extend([0, 1]);
    avc1.extend([0; 32]);
    avc1.extend([0, 24, 0xff, 0xff]);
    let stsd = full(b"stsd", 0, &[be(&[1]), bx(b"avc1", &avc1)].concat());
    let dinf = bx(
        b"dinf",
        &full(b"dref", 0, &[be(&[1]), full(b"url ", 1, &[])].concat()),
    );
    let stbl = bx(b"stbl", &[vec![stsd], tables.to_vec()].concat().concat());
    let minf = bx(b"minf", &[full(b"vmhd", 1, &[0; 8]), dinf, stbl].concat());
    let mdia = bx(
        b"mdia",
        &[full(b"mdhd", 0, &mdhd), full(b"hdlr", 0, &hdlr), minf].concat(),
    );
    let trak = bx(b"trak", &[full(b"tkhd", 3, &tkhd), mdia].concat());
    bx(
        b"moov",
        &[full(b"mvhd", 0, &mvhd), trak, extra.to_vec()].concat(),
    )
}

/// An MP4 of about 1.2 kB whose `stts`, `stsc` and `stsz` agree on [`DECLARED`] samples
/// of one byte in one chunk, with 600 bytes of media data.
fn forged_mp4() -> Vec<u8> {
    let ftyp = bx(b"ftyp", b"isom\0\0\x02\0isomiso2avc1mp41");
    let tables = |chunk: u32| {
        vec![
            full(b"stts", 0, &be(&[1, DECLARED, 1])),
            full(b"stsc", 0, &be(&[1, 1, DECLARED, 1])),
            full(b"stsz", 0, &be(&[1, DECLARED])),
            full(b"stco", 0, &be(&[1, chunk])),
        ]
    };
    let at = (ftyp.len() + moov(&tables(0), &[]).len() + 8) as u32;
    [ftyp, moov(&tables(at), &[]), bx(b"mdat", &[0; 600])].concat()
}

/// A fragmented MP4: empty tables, and one fragment whose `trun` declares [`DECLARED`]
/// samples of the track's default size (one byte), with 600 bytes of media data.
fn forged_fragmented_mp4() -> Vec<u8> {
    let tables = vec![
        full(b"stts", 0, &be(&[0])),
        full(b"stsc", 0, &be(&[0])),
        full(b"stsz", 0, &be(&[0, 0])),
        full(b"stco", 0, &be(&[0])),
    ];
    let mvex = bx(b"mvex", &full(b"trex", 0, &be(&[1, 1, 1, 1, 0])));
    let traf = bx(
        b"traf",
        &[
            full(b"tfhd", 0x2_0000, &be(&[1])),
            full(b"trun", 0x1, &be(&[DECLARED, 0])),
        ]
        .concat(),
    );
    let moof = bx(b"moof", &[full(b"mfhd", 0, &be(&[1])), traf].concat());
    [
        bx(b"ftyp", b"iso5\0\0\x02\0iso5iso6mp41"),
        moov(&tables, &mvex),
        moof,
        bx(b"mdat", &[0; 600]),
    ]
    .concat()
}

/// `pmv-data ARGS` run to its end, and the most memory it held resident, in MiB.
// The child is reaped by wait4, which reports its own peak memory (std's wait does not).
#[allow(clippy::zombie_processes)]
fn run_measured(env: &Env, args: &[&str]) -> (Out, u64) {
    // GNU time (scripts/setup.sh installs it) forks the command from its own small
    // process. Measured from here instead (wait4 on our own child), the peak would
    // count this test process: the kernel carries a process's peak across exec, and
    // the child starts as a copy of, or sharing, the memory of a test binary that may
    // hold hundreds of MB while other tests run.
    let peak = env.path("measured.peak");
    let c = env.command();
    let program = c.get_program().to_owned();
    let before: Vec<std::ffi::OsString> = c.get_args().map(|a| a.to_owned()).collect();
    let mut timed = std::process::Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&peak)
        .arg(program)
        .args(before)
        .args(args);
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let out = Out::of(timed);
    let text = std::fs::read_to_string(&peak).unwrap();
    // The last line: GNU time writes "Command exited with non-zero status N" first.
    let kib: u64 = text.trim().lines().last().unwrap().trim().parse().unwrap();
    (out, kib / 1024)
}

fn shard(env: &Env) -> (i32, serde_json::Value, String) {
    let out = env.run(&[
        "--json",
        "shard",
        "--dataset",
        "d",
        "--recipe",
        "videomae-16x4-224",
        "--size",
        "64x64",
    ]);
    let doc = if out.stdout.trim().is_empty() {
        serde_json::Value::Null
    } else {
        out.json()
    };
    (out.code, doc, out.stderr)
}

/// Items `keys` in dataset `d` (train split, label 0).
fn items(env: &Env, keys: &[&str]) {
    let items: Vec<_> = keys
        .iter()
        .map(|k| json!({"id": k, "label": 0, "split": "train"}))
        .collect();
    ingest_items(env, "d", &items);
}

/// Checks that `items` were quarantined by the first shard run (`r`) with reasons
/// containing `why`, that the others were sharded, and that a second run opens nothing.
fn assert_quarantined(env: &Env, r: &serde_json::Value, items: &[(&str, &str)]) {
    let corrupt = r["corrupt"].as_array().unwrap();
    assert_eq!(corrupt.len(), items.len(), "{r}");
    for (item, why) in items {
        let c = corrupt
            .iter()
            .find(|c| c["item"] == *item)
            .unwrap_or_else(|| panic!("{item} not quarantined: {r}"));
        let reason = c["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{item}: {reason}");
        let to = c["quarantined"].as_str().unwrap();
        assert_eq!(to, format!("quarantine/d/{item}.mp4"));
        assert!(env.root.join(to).exists());
        let note = std::fs::read_to_string(env.root.join(format!("{to}.reason.txt"))).unwrap();
        assert!(note.contains(reason), "{note}");
        assert_eq!(
            env.strings(&format!(
                "SELECT f.state || ' ' || f.path FROM files f JOIN items i ON i.id = f.item_id \
                 WHERE i.key = '{item}'"
            )),
            vec![format!("corrupt {to}")]
        );
    }
    assert_eq!(
        env.strings("SELECT i.key FROM samples s JOIN items i ON i.id = s.item_id"),
        vec!["good"]
    );
    // A later run has nothing to open.
    let (code, r, e) = shard(env);
    assert_eq!(code, 0, "{e}");
    assert_eq!(r["videos_pending"], 0, "{r}");
}

#[test]
fn probe_refuses_forged_sample_tables_at_once_in_bounded_memory() {
    let env = Env::new();
    let plain = env.write("forged.mp4", forged_mp4());
    let frag = env.write("forged-fragments.mp4", forged_fragmented_mp4());
    let good = make_video(&env.path(""), &Spec::h264("good.mp4", 96, 64, 1.0));
    for (file, what) in [
        (&plain, "track 1 declares 80000000 samples of 1 byte each"),
        (&frag, "movie fragment (trun) declares 80000000 samples"),
    ] {
        let (out, rss) = run_measured(&env, &["--json", "probe", s(file)]);
        assert_eq!(out.code, 3, "{}", out.stderr);
        let doc = out.json();
        let error = doc["files"][0]["error"].as_str().unwrap();
        assert!(error.starts_with(s(file)), "{error}");
        assert!(error.contains("forged or damaged MP4 headers"), "{error}");
        assert!(error.contains(what), "{error}");
        assert_eq!(doc["files"][0]["corrupt"], true);
        assert!(
            rss < MAX_RSS_MIB,
            "probe held {rss} MiB on {}",
            file.display()
        );
    }
    // People read the same on stderr; the good file is still probed.
    let out = env.run(&["probe", s(&plain), s(&good)]);
    assert_eq!(out.code, 3);
    assert!(
        out.stderr
            .contains("forged.mp4: not a decodable video: forged or damaged MP4 headers"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("96x64"), "{}", out.stdout);
}

/// An FLV whose `onMetaData` keyframe index declares 200 million times and file
/// positions (libavformat allocated and zeroed 1.6 GB for them) and holds one of each.
fn forged_flv() -> Vec<u8> {
    let amf_key = |k: &[u8]| [(k.len() as u16).to_be_bytes().to_vec(), k.to_vec()].concat();
    let array = |n: u32| [vec![0x0a], be(&[n]), vec![0], 0f64.to_be_bytes().to_vec()].concat();
    let keyframes = [
        vec![0x03],
        amf_key(b"times"),
        array(200_000_000),
        amf_key(b"filepositions"),
        array(200_000_000),
        vec![0, 0, 9],
    ]
    .concat();
    let meta = [
        vec![0x02],
        amf_key(b"onMetaData"),
        vec![0x08],
        be(&[1]),
        amf_key(b"keyframes"),
        keyframes,
        vec![0, 0, 9],
    ]
    .concat();
    let tag = |kind: u8, data: &[u8]| {
        let mut t = vec![kind];
        t.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        t.extend([0; 7]);
        t.extend_from_slice(data);
        t.extend_from_slice(&(t.len() as u32).to_be_bytes());
        t
    };
    [
        b"FLV\x01\x01\0\0\0\x09\0\0\0\0".to_vec(),
        tag(18, &meta),
        tag(9, &[0x17, 0, 0, 0, 0]),
    ]
    .concat()
}

#[test]
fn probe_refuses_a_forged_flv_keyframe_index() {
    let env = Env::new();
    let flv = env.write("forged.flv", forged_flv());
    let (out, rss) = run_measured(&env, &["--json", "probe", s(&flv)]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let error = out.json()["files"][0]["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("forged.flv: not a decodable video"),
        "{error}"
    );
    assert!(error.contains("forged or damaged FLV headers"), "{error}");
    assert!(error.contains("declares 200000000 entries"), "{error}");
    assert!(rss < MAX_RSS_MIB, "probe held {rss} MiB");
}

#[test]
fn shard_quarantines_forged_sample_tables_and_goes_on() {
    let env = Env::new();
    items(&env, &["good", "forged", "fragments"]);
    let forged = env.write("src/forged.mp4", forged_mp4());
    let good = make_video(&env.path("src"), &Spec::h264("good.mp4", 96, 64, 1.0));
    register(&env, "d", "good", "video", &good);
    register(&env, "d", "forged", "video", &forged);
    let frag = env.write("src/fragments.mp4", forged_fragmented_mp4());
    register(&env, "d", "fragments", "video", &frag);
    let (code, r, e) = shard(&env);
    assert_eq!(code, 3, "{e}");
    assert_eq!(r["videos_sharded"], 1, "{r}");
    assert_quarantined(
        &env,
        &r,
        &[
            ("forged", "declares 80000000 samples of 1 byte each"),
            ("fragments", "(trun) declares 80000000 samples"),
        ],
    );
}

/// One grey frame of H.264 at `w`x`h`.
fn still(dir: &Path, name: &str, w: u32, h: u32) -> std::path::PathBuf {
    let path = dir.join(name);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("color=c=gray:size={w}x{h}:rate=25"),
        "-frames:v",
        "1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        s(&path),
    ]);
    path
}

#[test]
fn video_over_8k_is_refused_at_probe_and_quarantined() {
    let env = Env::new();
    let dir = env.path("src");
    std::fs::create_dir_all(&dir).unwrap();
    let big = still(&dir, "big.mp4", 8192, 4320);
    let out = env.run(&["--json", "probe", s(&big)]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let doc = out.json();
    let error = doc["files"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("big.mp4: refused: pictures of 8192x4320"),
        "{error}"
    );
    assert!(error.contains("7680x4320"), "{error}");
    assert_eq!(doc["files"][0]["corrupt"], true);
    // 8K itself is within the limit.
    let uhd = still(&dir, "uhd.mp4", 7680, 4320);
    let out = env.run(&["--json", "probe", s(&uhd)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["files"][0]["probe"]["width"], 7680);

    items(&env, &["good", "big"]);
    let good = make_video(&dir, &Spec::h264("good.mp4", 96, 64, 1.0));
    register(&env, "d", "good", "video", &good);
    register(&env, "d", "big", "video", &big);
    let (code, r, e) = shard(&env);
    assert_eq!(code, 3, "{e}");
    assert_eq!(r["videos_sharded"], 1, "{r}");
    assert!(r["failed"].as_array().unwrap().is_empty(), "{r}");
    assert_quarantined(&env, &r, &[("big", "pictures of 8192x4320 are larger")]);
}

/// A PNG of one colour.
fn png(dir: &Path, name: &str, colour: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("color=c={colour}:size=32x32"),
        "-frames:v",
        "1",
        s(&path),
    ]);
    path
}

#[test]
fn cover_file_names_are_never_patterns() {
    // The cover of `cov d` is stored as `cov%20d.png`, which FFmpeg's image2 demuxer
    // reads as "cov" and a 20-digit number: `cov00000000000000000000.png` is the cover
    // of another item.
    let env = Env::new();
    let keys = [
        "cov d",
        "cov00000000000000000000",
        "cov00000000000000000001",
    ];
    let colours = [
        ("red", [255u8, 0, 0]),
        ("blue", [0, 0, 255]),
        ("lime", [0, 255, 0]),
    ];
    items(&env, &keys);
    let dir = env.path("src");
    std::fs::create_dir_all(&dir).unwrap();
    let video = make_video(&dir, &Spec::h264("v.mp4", 96, 64, 0.5));
    for (i, key) in keys.iter().enumerate() {
        register(&env, "d", key, "video", &video);
        let cover = png(&dir, &format!("c{i}.png"), colours[i].0);
        let stored = register(&env, "d", key, "cover", &cover);
        let name = stored.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            name,
            format!("{}.png", pmv_pipeline::manifest::file_stem(key))
        );
    }
    assert!(env.root.join("covers/d/cov%20d.png").exists());
    let (code, r, e) = shard(&env);
    assert_eq!(code, 0, "{e}");
    assert!(r["cover_problems"].as_array().unwrap().is_empty(), "{r}");
    let reader =
        ShardReader::open(&env.root.join(r["shards"][0]["path"].as_str().unwrap())).unwrap();
    assert_eq!(reader.len(), 3);
    for i in 0..reader.len() {
        let sample = reader.sample(i).unwrap();
        let id = sample.meta().unwrap().id;
        let k = keys.iter().position(|k| *k == id).unwrap();
        let jpg = image::load_from_memory(sample.jpg.expect("a cover")).unwrap();
        let rgb = jpg.to_rgb8();
        let centre = rgb.get_pixel(16, 16).0;
        let want = colours[k].1;
        let close = centre
            .iter()
            .zip(want)
            .all(|(&a, b)| (i16::from(a) - i16::from(b)).abs() < 40);
        assert!(close, "{id}: cover is {centre:?}, its own is {want:?}");
    }
}

#[test]
fn a_colour_matrix_number_no_enum_has_is_named_unknown() {
    // Matroska copies the Colour element's MatrixCoefficients into FFmpeg's enum field
    // unchecked: 200 is no AVColorSpace. VP8 does not say it again in its frames.
    let env = Env::new();
    let webm = env.path("colour.webm");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x64:rate=10:duration=1",
        "-c:v",
        "libvpx",
        "-colorspace",
        "bt709",
        s(&webm),
    ]);
    let mut bytes = std::fs::read(&webm).unwrap();
    // MatrixCoefficients (0x55B1), one byte, 1 (bt709).
    let at = bytes
        .windows(4)
        .position(|w| w == [0x55, 0xb1, 0x81, 0x01])
        .expect("a colour matrix element");
    bytes[at + 3] = 200;
    std::fs::write(&webm, bytes).unwrap();
    let out = env.run(&["--json", "probe", "--decode", s(&webm)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc = out.json();
    assert_eq!(doc["files"][0]["probe"]["color_space"], "unknown");
    assert_eq!(doc["files"][0]["decoded_frames"], 10);
}
