#!/usr/bin/env bash
# Benchmarks, measured on this machine with a release build; results go to stdout and to
# target/bench/results.json. Later stages add their sections here.
#
#   ingest   full PMV-400 lists (target < 1 s), a generated 562,342-row xinpianchang
#            JSON lines file (target < 5 s), both with peak memory < 200 MB; the unchanged
#            re-ingest; and a 10-million-line list to show memory stays flat.
#   loader   clips/s the shard loader delivers from synthetic shards (a PMV-like recipe,
#            16x256x192 with 2 clips, cropped to 224x160; and the demo's 8x64x48) with 1
#            and 2 threads, beside tiny3d's training rate on this CPU fed by the loader.
#   gpu      scripts/bench_gpu.sh (vit-s 16x224 bf16: pmv-data-train vs PyTorch eager),
#            when nvidia-smi finds a GPU.
#
# usage: scripts/bench.sh [ingest] [loader] [gpu] [--quick]
#        (--quick: fewer runs, no 10M-line list)
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
sections=()
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    *) sections+=("$a") ;;
  esac
done
((${#sections[@]})) || sections=(ingest)

bash scripts/setup.sh >/dev/null
cargo build --release --quiet --bin pmv-data
bin="$PWD/target/release/pmv-data"
work="$PWD/target/bench"
mkdir -p "$work"
results="$work/results.json"
echo "[" >"$results"
first=1

# run_case NAME RUNS ROWS -- COMMAND...: runs COMMAND in a fresh root RUNS times; prints
# the median wall time, rows per second and the largest peak RSS, and appends them to
# results.json.
run_case() {
  local name=$1 runs=$2 rows=$3
  shift 4
  local walls=() rss_max=0
  for ((i = 0; i < runs; i++)); do
    rm -rf "$work/root"
    /usr/bin/time -f "%e %M" -o "$work/time.txt" env PMV_DATA_ROOT="$work/root" "$@" >/dev/null 2>"$work/stderr.txt" || {
      code=$?
      [ "$code" = 3 ] || { cat "$work/stderr.txt" >&2; echo "bench: $name failed ($code)" >&2; exit 1; }
    }
    read -r wall rss <"$work/time.txt"
    walls+=("$wall")
    ((rss > rss_max)) && rss_max=$rss
  done
  local median
  median=$(printf '%s\n' "${walls[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  local rate
  rate=$(awk "BEGIN {printf \"%.0f\", $rows / ($median > 0 ? $median : 0.001)}")
  printf '%-50s %7s s %10s rows/s %7.1f MB peak  (runs: %s)\n' "$name" "$median" "$rate" \
    "$(awk "BEGIN {print $rss_max / 1024}")" "${walls[*]}"
  ((first)) || echo "," >>"$results"
  first=0
  printf '  {"case": "%s", "rows": %s, "median_s": %s, "rows_per_s": %s, "peak_rss_kb": %s, "runs": [%s]}' \
    "$name" "$rows" "$median" "$rate" "$rss_max" "$(IFS=,; echo "${walls[*]}")" >>"$results"
}

# The trainer, built with only the `train` feature as on a GPU machine.
train_bin() {
  cargo build --release --quiet --no-default-features --features train --bin pmv-data-train
  echo "$PWD/target/release/pmv-data-train"
}

# json_case NAME JSON: appends one result object to results.json.
json_case() {
  ((first)) || echo "," >>"$results"
  first=0
  printf '  {"case": "%s", "result": %s}' "$1" "$2" >>"$results"
}

bench_loader() {
  echo "== loader ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
  local tbin
  tbin=$(train_bin)
  local pmv="$work/synth-16x256x192" demo="$work/synth-8x64x48"
  [ -d "$pmv/train" ] || "$tbin" --quiet synth --out "$pmv" --classes 8 --train 8 --val 0 \
    --frames 16 --size 256x192 --clips 2 --fps 15 --shard-size 32 >/dev/null
  [ -d "$demo/train" ] || "$tbin" --quiet synth --out "$demo" --classes 8 --train 40 --val 10 \
    --frames 8 --size 64x48 --clips 2 --fps 6 >/dev/null
  local epochs=5
  ((quick)) && epochs=2
  for w in 1 2; do
    local r
    r=$("$tbin" --json --quiet bench-loader --shards "$pmv" --batch 8 --size 224x160 --workers "$w" --epochs "$epochs" | tr -d '\n')
    printf '%-50s %8.1f clips/s\n' "loader 16x256x192 -> 224x160, $w thread(s)" \
      "$(echo "$r" | python3 -c 'import json, sys; print(json.load(sys.stdin)["clips_per_s"])')"
    json_case "loader-16x256x192-w$w" "$r"
  done
  local r
  r=$("$tbin" --json --quiet bench-loader --shards "$demo" --batch 8 --workers 1 --epochs "$epochs" | tr -d '\n')
  printf '%-50s %8.1f clips/s\n' "loader 8x64x48 (demo), 1 thread" \
    "$(echo "$r" | python3 -c 'import json, sys; print(json.load(sys.stdin)["clips_per_s"])')"
  json_case "loader-8x64x48-w1" "$r"
  r=$("$tbin" --json --quiet bench --model tiny3d --batch 8 --frames 8 --size 64x48 --classes 8 \
    --device cpu --steps 100 --warmup 10 --shards "$demo" --workers 1 | tr -d '\n')
  printf '%-50s %8.1f clips/s  %6.1f ms/step, %.2f s waiting for the loader\n' "tiny3d training, fed by the loader" \
    "$(echo "$r" | python3 -c 'import json, sys; print(json.load(sys.stdin)["clips_per_s"])')" \
    "$(echo "$r" | python3 -c 'import json, sys; print(json.load(sys.stdin)["step_ms"])')" \
    "$(echo "$r" | python3 -c 'import json, sys; print(json.load(sys.stdin)["loader_wait_s"])')"
  json_case "tiny3d-cpu-8x64x48" "$r"
  echo "(decoding the source videos per step through the media layer, the loader's peer, is"
  echo " measured here once that layer's decoder is in this build)"
}

bench_gpu() {
  if ! nvidia-smi -L >/dev/null 2>&1; then
    echo "== gpu: no NVIDIA GPU here (nvidia-smi finds none); skipped"
    return
  fi
  local tbin
  tbin=$(train_bin)
  BENCH_OUT="$work" bash scripts/bench_gpu.sh --bin "$tbin"
  json_case "gpu" "$(cat "$work/gpu.json")"
}

bench_ingest() {
  echo "== ingest ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
  local pmv=(manifests/pmv400/train_pmv400.csv manifests/pmv400/val_pmv400.csv manifests/pmv400/test_pmv400.csv)
  local runs=5
  ((quick)) && runs=3
  run_case "PMV-400 lists (96,442 rows, 76,447 items)" "$runs" 96442 -- \
    "$bin" ingest --dataset pmv400 --format pmv400 "${pmv[@]}"

  # Unchanged re-ingest: ingest once, then time the second run in the same root.
  rm -rf "$work/root"
  PMV_DATA_ROOT="$work/root" "$bin" ingest --dataset pmv400 --format pmv400 "${pmv[@]}" >/dev/null
  /usr/bin/time -f "%e %M" -o "$work/time.txt" env PMV_DATA_ROOT="$work/root" \
    "$bin" ingest --dataset pmv400 --format pmv400 "${pmv[@]}" >/dev/null
  read -r wall rss <"$work/time.txt"
  printf '%-50s %7s s %17s %7.1f MB peak\n' "PMV-400 unchanged re-ingest" "$wall" "" "$(awk "BEGIN {print $rss / 1024}")"

  local xpc="$work/xinpianchang-562342.jsonl"
  [ -s "$xpc" ] || python3 scripts/gen_xinpianchang.py "$xpc"
  runs=3
  ((quick)) && runs=1
  run_case "xinpianchang JSONL (562,342 rows, 499,607 items)" "$runs" 562342 -- \
    "$bin" ingest --dataset xpc --format xinpianchang "$xpc"

  if ((!quick)); then
    local big="$work/videomae-10M.txt"
    [ -s "$big" ] || awk 'BEGIN { for (i = 0; i < 10000000; i++) printf "clips/v%08d.mp4 %d\n", (i * 7919) % 10000000, i % 400 }' >"$big"
    run_case "10,000,000-line VideoMAE list" 1 10000000 -- \
      "$bin" ingest --dataset big --format videomae --split train "$big"
  fi
}

for s in "${sections[@]}"; do
  case "$s" in
    ingest) bench_ingest ;;
    loader) bench_loader ;;
    gpu) bench_gpu ;;
    *) echo "bench: unknown section $s" >&2; exit 2 ;;
  esac
done
echo "]" >>"$results"
echo "results: $results"
