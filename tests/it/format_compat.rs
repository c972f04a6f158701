//! The shard format against Python: shards written here read with `tarfile` + `numpy`,
//! and tars written by Python's `tarfile` (PAX long names, unaligned arrays, npy from
//! `numpy.save`) read by the Rust reader.

use std::path::{Path, PathBuf};
use std::process::Command;

use pmv_pipeline::sharding::{
    FrameData, SampleInput, SampleMeta, ShardReader, ShardWriter, sample_key,
};

use crate::util::repo;

fn python() -> PathBuf {
    repo().join(".venv/bin/python")
}

fn run_python(script: &str, args: &[&Path]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run the venv python (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn meta(id: &str, labels: Vec<u32>) -> SampleMeta {
    SampleMeta {
        id: id.into(),
        dataset: "demo".into(),
        labels,
        split: "val".into(),
        recipe: "abc".into(),
        source: Some("http://127.0.0.1/x.mp4".into()),
        sha256: "ab".repeat(32),
        size: 1234,
        duration_s: Some(2.5),
        fps: Some(30.0),
        width: 192,
        height: 288,
        frame_indices: vec![vec![0, 4, 8], vec![10, 14, 18]],
        extra: Default::default(),
    }
}

#[test]
fn python_reads_what_rust_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("val-000000.tar");
    let shape = [2usize, 3, 5, 7, 3];
    let ids = [
        "v0d00fg10000cc0bltrc77ud5sllkjug",
        "a.b c",
        &"z".repeat(150),
    ];
    let mut w = ShardWriter::new(std::fs::File::create(&path).unwrap());
    for (n, id) in ids.iter().enumerate() {
        let frames: Vec<u8> = (0..shape.iter().product::<usize>())
            .map(|i| ((i * 31 + n * 7) % 251) as u8)
            .collect();
        let m = meta(id, vec![n as u32, 9]);
        w.append(&SampleInput {
            key: &sample_key(id),
            shape,
            frames: FrameData::Raw(&frames),
            label: (n != 1).then_some(n as u32),
            meta: &m,
            jpg: (n == 0).then_some(&b"\xff\xd8\xff\xe0cover"[..]),
            txt: Some("一段描述 text"),
        })
        .unwrap();
    }
    let (_, summary) = w.finish().unwrap();

    // Python prints, per sample: key, shape, sum of the array, label, id, and whether the
    // array data is 64-byte aligned in the file.
    let script = r#"
import io, json, sys, tarfile, numpy as np
tf = tarfile.open(sys.argv[1])
samples = {}
order = []
for m in tf.getmembers():
    key, ext = m.name.split('.', 1)
    if key not in samples:
        samples[key] = {}
        order.append(key)
    data = tf.extractfile(m).read()
    samples[key][ext] = (data, m.offset_data)
for key in order:
    s = samples[key]
    raw, off = s['frames.npy']
    arr = np.load(io.BytesIO(raw))
    hdr = len(raw) - arr.nbytes
    meta = json.loads(s['json'][0])
    cls = s['cls'][0].decode() if 'cls' in s else '-'
    print(key, 'x'.join(map(str, arr.shape)), int(arr.astype(np.int64).sum()), cls,
          meta['id'], (off + hdr) % 64 == 0, s['txt'][0].decode('utf-8') == '一段描述 text',
          'jpg' in s)
"#;
    let printed = run_python(script, &[&path]);
    let r = ShardReader::open(&path).unwrap();
    r.verify_sha256(&summary.sha256).unwrap();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 3, "{printed}");
    for (i, line) in lines.iter().enumerate() {
        let s = r.sample(i).unwrap();
        let sum: u64 = s.raw_frames().unwrap().iter().map(|&b| b as u64).sum();
        let cls = s.label.map_or("-".to_string(), |l| l.to_string());
        let expect = format!(
            "{} 2x3x5x7x3 {sum} {cls} {} True True {}",
            s.key,
            ids[i],
            if i == 0 { "True" } else { "False" }
        );
        assert_eq!(*line, expect);
    }
}

#[test]
fn rust_reads_what_python_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foreign.tar");
    // PAX format (Python's default), a key longer than a ustar name, a 4-d array saved
    // by numpy (unaligned inside the tar), a directory entry and an unrelated file.
    let script = r#"
import io, sys, tarfile, numpy as np
def add(tf, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))
with tarfile.open(sys.argv[1], 'w', format=tarfile.PAX_FORMAT) as tf:
    d = tarfile.TarInfo('dir'); d.type = tarfile.DIRTYPE; tf.addfile(d)
    add(tf, 'README', b'not a sample')
    for n, key in enumerate(['short', 'k' * 120]):
        a = (np.arange(4 * 6 * 5 * 3) % 256).astype(np.uint8).reshape(4, 6, 5, 3) + n
        buf = io.BytesIO(); np.save(buf, a)
        add(tf, 'dir/' + key + '.frames.npy', buf.getvalue())
        add(tf, 'dir/' + key + '.cls', str(7 + n).encode())
        add(tf, 'dir/' + key + '.json', b'{"id": "x"}')
"#;
    run_python(script, &[&path]);
    let r = ShardReader::open(&path).unwrap();
    assert_eq!(r.len(), 2);
    for n in 0..2 {
        let s = r.sample(n).unwrap();
        assert_eq!(s.shape, [1, 4, 6, 5, 3]);
        let expect: Vec<u8> = (0..360)
            .map(|i| ((i % 256) as u8).wrapping_add(n as u8))
            .collect();
        assert_eq!(s.raw_frames().unwrap(), &expect[..]);
        assert_eq!(s.label, Some(7 + n as u32));
    }
    assert_eq!(r.sample(1).unwrap().key, format!("dir/{}", "k".repeat(120)));
}
