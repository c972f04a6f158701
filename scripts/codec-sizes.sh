#!/usr/bin/env bash
# What the JPEG frame codec costs and keeps, on the real xinpianchang sample (640x360
# landscape H.264) and its portrait transpose (`ffmpeg -vf transpose=1`, re-encoded at
# CRF 16): for each built-in recipe with room (videomae-16x4-s256-k5-jpeg,
# pmv-16x5-s320-k10-jpeg, pmv-16x4-s320-k10-jpeg) it shards both videos as JPEG and as
# raw (`--codec raw`, the recipe otherwise unchanged), one sample per shard, and prints
# per video the shard bytes of each, their ratio, and the PSNR of the JPEG frames
# against the raw ones (over the whole sample, and of its worst frame). The frames are
# read back with DATA.md's Python reader (webdataset + PIL).
#
# usage: scripts/codec-sizes.sh [PMV_DATA]   (default target/debug/pmv-data, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-$PWD/target/debug/pmv-data}"
[ -x "$bin" ] || cargo build --quiet --bin pmv-data
py="$PWD/.venv/bin/python"
work=$(mktemp -d /tmp/pmv-codec-sizes.XXXXXX)
trap 'rm -rf "$work"' EXIT

src="$PWD/tests/data/xinpianchang/example/99945958.mp4"
cp "$src" "$work/land.mp4"
ffmpeg -v error -nostdin -y -i "$src" -vf transpose=1 -c:v libx264 -preset veryfast -crf 16 \
  -pix_fmt yuv420p -an "$work/port.mp4"

root="$work/root"
printf '{"id":"land","label":0,"split":"train"}\n{"id":"port","label":1,"split":"train"}\n' \
  >"$work/items.jsonl"
"$bin" --root "$root" -q ingest --dataset codec --format jsonl "$work/items.jsonl" >/dev/null
mkdir -p "$root/videos/codec"
{
  echo "BEGIN;"
  for key in land port; do
    cp "$work/$key.mp4" "$root/videos/codec/$key.mp4"
    size=$(stat -c %s "$work/$key.mp4")
    sha=$(sha256sum "$work/$key.mp4" | cut -d' ' -f1)
    echo "INSERT INTO files (item_id, role, state, path, size, sha256, source_rank, attempts, updated_at)
      SELECT id, 'video', 'verified', 'videos/codec/$key.mp4', $size, '$sha', 0, 1, 0
      FROM items WHERE key = '$key';"
  done
  echo "COMMIT;"
} | sqlite3 "$root/catalog.sqlite"

reader=$("$py" -c '
d = open("DATA.md").read()
i = d.index("```python\n# Read pmv-data shards") + len("```python\n")
print(d[i:d.index("```", i)])')
compare='
import json, os, sys
import numpy as np
root, recipe, jpeg_report, raw_report = sys.argv[1:5]
def shard_paths(report):
    return [root + "/" + s["path"] for s in json.load(open(report))["shards"]]
def load(report):
    out = {}
    for path in shard_paths(report):
        size = os.path.getsize(path)
        for key, frames, meta in samples([path]):
            out[key] = (frames, size)
    return out
jpeg, raw = load(jpeg_report), load(raw_report)
for key in sorted(jpeg):
    (j, jb), (r, rb) = jpeg[key], raw[key]
    assert j.shape == r.shape, (j.shape, r.shape)
    err = (j.astype(np.float64) - r.astype(np.float64)) ** 2
    per_frame = err.reshape(j.shape[0] * j.shape[1], -1).mean(axis=1)
    psnr = lambda mse: 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))
    shape = "x".join(map(str, j.shape))
    print(f"{recipe:28} {key:5} {shape:18} {rb:>11,} {jb:>10,} {rb / jb:6.1f}x "
          f"{psnr(err.mean()):6.2f} {psnr(per_frame.max()):6.2f}")
'
printf '%-28s %-5s %-18s %11s %10s %7s %6s %6s\n' recipe video "shape" "raw bytes" "jpeg bytes" ratio "PSNR" worst
for recipe in videomae-16x4-s256-k5-jpeg pmv-16x5-s320-k10-jpeg pmv-16x4-s320-k10-jpeg; do
  for codec in jpeg raw; do
    "$bin" --root "$root" -q --json shard --dataset codec --recipe "$recipe" --codec "$codec" \
      --samples-per-shard 1 >"$work/$codec.json"
  done
  "$py" -c "$reader
$compare" "$root" "$recipe" "$work/jpeg.json" "$work/raw.json"
  rm -rf "$root/shards"
done
