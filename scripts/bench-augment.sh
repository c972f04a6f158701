#!/usr/bin/env bash
# The augmentation benchmark (called by scripts/bench.sh augment): what a fine-tuning loader
# costs per core, raw against jpeg frames, beside a VideoMAE-style Python loader.
#   - 8 generated portrait 720x1280 H.264 videos of 15 s (scripts/bench-videos.sh) sharded
#     with pmv-16x4-s320-k10-jpeg (16 frames 4 apart, K=10, 568x320 stored, JPEG q90) and
#     the same recipe with --codec raw: bytes per sample, and the PSNR of the jpeg frames
#     against the raw ones;
#   - pmv-data-train bench-loader on both, the full fine-tuning augmentation (a random one
#     of the 10 clips, random resized crop area [0.08, 1] to 224x224, flip, RandAugment
#     rand-m7-n4-mstd0.5-inc1, random erasing 0.25 pixel mode), 1 and 2 threads; and jpeg
#     with crops only, to show what RandAugment and erasing cost;
#   - scripts/bench_loader_py.py on the same videos: decord (short side 320) + timm
#     RandAugment + the same crop, flip and erasing, 1 and 2 processes.
# Reports clips/s per core and how many cores feed ViT-B fine-tuning on one H100
# (206-256 clips/s measured, README "GPU" section); then each RandAugment operation per
# 224x224 frame, ours against timm's on PIL.
# Results: stdout and target/bench/augment.json.
#
# usage: scripts/bench-augment.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1
n=8
bin="$PWD/target/release/pmv-data"
cargo build --release --quiet --bin pmv-data
cargo build --release --quiet -p pmv-train
tbin="$PWD/target/release/pmv-data-train"
py="$PWD/.venv/bin/python"
"$py" -c "import decord" 2>/dev/null || {
  echo "installing decord==0.6.0 into .venv (the Python loader's decoder)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-cache-dir decord==0.6.0
}
work="$PWD/target/bench/augment"
mkdir -p "$work"
out_json="$work/../augment.json"
source scripts/bench-videos.sh
bench_videos "$n" "$PWD/target/bench/shard/videos"
mapfile -t files < <(ls "$PWD"/target/bench/shard/videos/v*.mp4 | sort | head -n "$n")

recipe=pmv-16x4-s320-k10-jpeg
for codec in jpeg raw; do
  if [ ! -s "$work/$codec.done" ]; then
    bench_root "$work/root-$codec" "${files[@]}"
    "$bin" --root "$work/root-$codec" -q shard --dataset bench --recipe "$recipe" --codec "$codec" --jobs 2
    touch "$work/$codec.done"
  fi
done
shards_of() { ls -d "$work/root-$1"/shards/bench/*/train; }
bytes_of() { cat "$(shards_of "$1")"/*.tar | wc -c; }
jb=$(bytes_of jpeg)
rb=$(bytes_of raw)
psnr=$("$py" scripts/shard_psnr.py "$(shards_of raw)" "$(shards_of jpeg)")
printf 'bytes/sample: raw %.1f MB, jpeg %.2f MB (%.1fx smaller); PSNR jpeg vs raw: %s\n' \
  "$(awk "BEGIN {print $rb / $n / 1e6}")" "$(awk "BEGIN {print $jb / $n / 1e6}")" \
  "$(awk "BEGIN {print $rb / $jb}")" "$psnr"

epochs=6
clips=24
((quick)) && epochs=3 && clips=10
aug=(--size 224x224 --crop-scale 0.08,1 --auto-augment rand-m7-n4-mstd0.5-inc1 --random-erase 0.25)
loader() { # CODEC WORKERS ARGS...
  local codec=$1 w=$2
  shift 2
  "$tbin" --json --quiet bench-loader --shards "$(shards_of "$codec")" --batch 4 --workers "$w" \
    --epochs "$epochs" "$@" | "$py" -c 'import json, sys; print(round(json.load(sys.stdin)["clips_per_s"], 2))'
}
python_loader() { # PROCS
  "$py" scripts/bench_loader_py.py --procs "$1" --clips "$clips" --short 320 --videos "${files[@]}" |
    "$py" -c 'import json, sys; print(round(json.load(sys.stdin)["clips_per_s"], 2))'
}
declare -A r
for w in 1 2; do
  r[jpeg$w]=$(loader jpeg "$w" "${aug[@]}")
  r[raw$w]=$(loader raw "$w" "${aug[@]}")
  r[crop$w]=$(loader jpeg "$w" --size 224x224 --crop-scale 0.08,1)
  r[py$w]=$(python_loader "$w")
done
{
  echo "["
  printf '  {"case": "bytes per sample", "recipe": "%s", "raw_bytes": %s, "jpeg_bytes": %s, "psnr": "%s"},\n' \
    "$recipe" "$((rb / n))" "$((jb / n))" "$psnr"
  for w in 1 2; do
    printf '  {"case": "fine-tune loader, %s core(s)", "jpeg_clips_per_s": %s, "raw_clips_per_s": %s, "jpeg_crop_only_clips_per_s": %s, "python_clips_per_s": %s}%s\n' \
      "$w" "${r[jpeg$w]}" "${r[raw$w]}" "${r[crop$w]}" "${r[py$w]}" "$([ $w = 1 ] && echo ,)"
  done
  echo "]"
} >"$out_json"
printf '%-44s %10s %10s\n' "clips/s (16x224x224 out)" "1 core" "2 cores"
printf '%-44s %10s %10s\n' "pmv-data loader, jpeg, full augmentation" "${r[jpeg1]}" "${r[jpeg2]}"
printf '%-44s %10s %10s\n' "pmv-data loader, raw, full augmentation" "${r[raw1]}" "${r[raw2]}"
printf '%-44s %10s %10s\n' "pmv-data loader, jpeg, crop + flip only" "${r[crop1]}" "${r[crop2]}"
printf '%-44s %10s %10s\n' "Python: decord + timm (VideoMAE-style)" "${r[py1]}" "${r[py2]}"
printf 'per core, jpeg + full augmentation: %sx the Python loader; cores to feed ViT-B fine-tuning on one H100 (256 clips/s): %s\n' \
  "$(awk "BEGIN {printf \"%.1f\", ${r[jpeg1]} / ${r[py1]}}")" \
  "$(awk "BEGIN {printf \"%.0f\", 256 / ${r[jpeg1]} + 0.999}")"
echo "== RandAugment per 224x224 frame: ours (release), then timm on PIL"
cargo run --release --quiet -p pmv-train --example bench_randaug
"$py" scripts/bench_randaug_pil.py
echo "results: $out_json"
