#!/usr/bin/env bash
# Benchmarks, measured on this machine with a release build; results go to stdout and to
# target/bench/results.json. Later stages add their sections here.
#
#   ingest   full PMV-400 lists (target < 1 s), a generated 562,342-row xinpianchang
#            JSON lines file (target < 5 s), both with peak memory < 200 MB; the unchanged
#            re-ingest; and a 10-million-line list to show memory stays flat.
#   shard    40 generated portrait 720x1280 H.264 videos of 15 s (GOP 60) sharded with
#            videomae-16x4-224 at K=1 and K=5, side by side with the ffmpeg command line,
#            PyAV and the GOP decode floor (scripts/bench-shard.sh; its own shard.json).
#
# usage: scripts/bench.sh [ingest] [shard] [--quick]   (--quick: fewer runs, no 10M-line list)
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
    shard) bash scripts/bench-shard.sh $( ((quick)) && echo --quick) ;;
    *) echo "bench: unknown section $s" >&2; exit 2 ;;
  esac
done
echo "]" >>"$results"
echo "results: $results"
