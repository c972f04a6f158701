#!/usr/bin/env bash
# Benchmarks, measured on this machine with a release build; results go to stdout and to
# target/bench/results.json. Later stages add their sections here.
#
#   ingest   full PMV-400 lists (target < 1 s), a generated 562,342-row xinpianchang
#            JSON lines file (target < 5 s), both with peak memory < 200 MB; the unchanged
#            re-ingest; and a 10-million-line list to show memory stays flat.
#   fetch    from nginx on 127.0.0.1, the same files at the same concurrency: (a) 200
#            files of 8 MiB, (b) 5,000 files of 64 KiB; pmv-data fetch (hashing every
#            byte, durable group commits) against curl --parallel (no fsync) and aria2c;
#            MB/s, files/s, peak memory; and the disk's durable limit.
#            PMV_BENCH_FETCH_DIR=/dev/shm/pmv-bench puts the files on tmpfs instead.
#   shard    40 generated portrait 720x1280 H.264 videos of 15 s (GOP 60) sharded with
#            videomae-16x4-224 at K=1 and K=5, side by side with the ffmpeg command line,
#            PyAV and the GOP decode floor (scripts/bench-shard.sh; its own shard.json).
#   augment  the fine-tuning loader per core (jpeg frames, RandAugment, random erasing,
#            random resized crops), raw against jpeg shards, beside a VideoMAE-style Python
#            loader (decord + timm) on the same videos; bytes per sample and the PSNR of jpeg
#            frames (scripts/bench-augment.sh; its own augment.json).
#   loader   clips/s the shard loader delivers from synthetic shards (a PMV-like recipe,
#            16x256x192 with 2 clips, cropped to 224x160; and the demo's 8x64x48) with 1
#            and 2 threads, beside tiny3d's training rate on this CPU fed by the loader.
#   models   masked pre-training against fine-tuning steps of the same encoder on this CPU
#            (ViT-S, 16x112x112, mask ratio 0.9), X3D-M steps, and pre-train + fine-tune
#            against training from scratch with the same fine-tune budget on synthetic
#            shards shaped like the demo's (12 classes, 8x64x48).
#   baselines  X3D-M, MViTv2-S and UniFormer-S training steps on this CPU beside the same
#            step of their PyTorch eager reference implementations (the models the parity
#            tests compare with; scripts/bench_models_torch.py), 8x128x96, batch 2, two
#            rounds alternating.
#   distributed  data-parallel scaling on this CPU (Gloo): ViT-S fine-tuning steps
#            (8x64x64, batch 4 a rank) by 1 rank on 1 core, 1 rank on 2 cores and 2 ranks
#            of 1 core each; clips/s, scaling efficiency (2 ranks against twice one rank
#            on one core), and the all-reduce's seconds per step and share of the step;
#            with 2 or more GPUs, ViT-B 16x224 bf16 on 1 GPU against all of them (NCCL).
#   refresh  a nightly refresh of the PMV-400 catalog (76,447 items whose links are all
#            dead) that has nothing to do: the first run tries every link once; the
#            second and third, timed, find nothing due.
#   gpu      scripts/bench_gpu.sh (vit-s 16x224 bf16: pmv-data-train vs PyTorch eager),
#            when nvidia-smi finds a GPU.
#   budget   a time budget against a server that sends one byte every 2 s: wall time of
#            `fetch --max-duration 5s` and `refresh` with max_duration = "5s" (target:
#            the budget plus the documented grace of 5 s), beside `curl --max-time 5`.
#   media    peak memory and time of `probe` on hostile files (scripts/forge_media.py):
#            MP4s of 1.2 kB whose tables declare 80 million samples (plain and in one
#            fragment), an FLV keyframe index declaring 200 million entries, and one
#            8192x4320 H.264 frame; each is refused (exit 3), target < 300 MB.
#
# usage: scripts/bench.sh [ingest] [fetch] [shard] [augment] [loader] [models] [baselines] [distributed] [refresh] [gpu] [budget] [media] [--quick]
#        (--quick: fewer runs, no 10M-line list, a quarter of the fetch files)
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
    # GNU time puts "Command exited with non-zero status N" before the figures.
    read -r wall rss < <(tail -n 1 "$work/time.txt")
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
  cargo build --release --quiet -p pmv-train
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
  echo "(the loader against decoding the source mp4s per step through the media layer, the"
  echo " same videos and sampling, is measured by the shard section: scripts/bench.sh shard)"
}

bench_models() {
  echo "== models ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
  local tbin
  tbin=$(train_bin)
  local steps=10
  ((quick)) && steps=4
  local ft pt
  ft=$("$tbin" --json --quiet bench --model vit-s --frames 16 --size 112 --batch 4 --classes 400 \
    --device cpu --steps "$steps" --warmup 2 | tr -d '\n')
  pt=$("$tbin" --json --quiet bench --model vit-s --frames 16 --size 112 --batch 4 --pretrain 0.9 \
    --device cpu --steps "$steps" --warmup 2 | tr -d '\n')
  json_case "vit-s-cpu-finetune-16x112" "$ft"
  json_case "vit-s-cpu-pretrain-0.9-16x112" "$pt"
  python3 - "$ft" "$pt" <<'PY'
import json, sys
ft, pt = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{'ViT-S 16x112x112 fine-tune step, batch 4':50} {ft['clips_per_s']:8.2f} clips/s {ft['step_ms']:9.1f} ms/step")
print(f"{'ViT-S pre-train step, mask 0.9, batch 4':50} {pt['clips_per_s']:8.2f} clips/s {pt['step_ms']:9.1f} ms/step")
print(f"pre-training / fine-tuning throughput: {pt['clips_per_s'] / ft['clips_per_s']:.2f}x (target >= 3x)")
PY
  local x
  x=$("$tbin" --json --quiet bench --model x3d-m --frames 16 --size 224 --batch 2 --device cpu \
    --steps 3 --warmup 1 | tr -d '\n')
  json_case "x3d-m-cpu-16x224" "$x"
  printf '%-50s %8.2f clips/s\n' "X3D-M 16x224x224 training step, batch 2" \
    "$(echo "$x" | python3 -c 'import json, sys; print(json.load(sys.stdin)["clips_per_s"])')"

  # Pre-train + fine-tune against scratch, the same fine-tune budget.
  local d="$work/synth-demo-12"
  [ -d "$d/train" ] || "$tbin" --quiet synth --out "$d" --classes 12 --train 40 --val 10 \
    --frames 8 --size 64x48 --clips 2 --fps 6 >/dev/null
  local pe=40 fe=10
  ((quick)) && pe=10 && fe=4
  rm -rf "$work/mae-pre" "$work/mae-ft" "$work/mae-scratch"
  "$tbin" --json --quiet pretrain --shards "$d" --model vit-s --mask-ratio 0.75 --epochs "$pe" \
    --batch-size 16 --lr 1.5e-3 --device cpu --out "$work/mae-pre" >/dev/null
  local common=(--shards "$d" --model vit-s --epochs "$fe" --batch-size 16 --flip 0 \
    --crop-scale 0.8,1 --lr 1e-3 --device cpu)
  local a b
  a=$("$tbin" --json --quiet train "${common[@]}" --init "$work/mae-pre/model.safetensors" \
    --out "$work/mae-ft" | tr -d '\n')
  b=$("$tbin" --json --quiet train "${common[@]}" --out "$work/mae-scratch" | tr -d '\n')
  json_case "vit-s-pretrained-finetune" "$a"
  json_case "vit-s-scratch" "$b"
  python3 - "$a" "$b" "$pe" "$fe" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"ViT-S on 12 synthetic motion classes, {sys.argv[4]} fine-tune epochs each:")
print(f"  after {sys.argv[3]} epochs of masked pre-training: val top-1 {100 * a['top1']:.1f}%")
print(f"  from scratch:                                val top-1 {100 * b['top1']:.1f}%")
PY
}

bench_baselines() {
  echo "== baselines ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
  local tbin
  tbin=$(train_bin)
  # The PMV-400 baselines against their reference implementations (PyTorch eager, the
  # models the parity tests compare with), the same training step on this CPU at a small
  # portrait input, alternating the two, two rounds each.
  local m size=128x96 frames=8 reps=2
  ((quick)) && reps=1
  for m in x3d-m mvit-v2-s uniformer-s; do
    local r ours ref
    for ((r = 1; r <= reps; r++)); do
      ours=$("$tbin" --json --quiet bench --model "$m" --frames "$frames" --size "$size" --batch 2 \
        --device cpu --steps 3 --warmup 1 | tr -d '\n')
      ref=$(.venv/bin/python scripts/bench_models_torch.py --model "$m" --frames "$frames" --size "$size" \
        --batch 2 --steps 3 --warmup 1 --threads "$(nproc)" --json)
      json_case "$m-cpu-${frames}x$size-round$r" "$ours"
      json_case "$m-cpu-${frames}x$size-round$r-pytorch" "$ref"
      python3 - "$ours" "$ref" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
name = f"{a['model']} {a['frames']}x{a['size'][0]}x{a['size'][1]} step, batch {a['batch']}"
print(f"{name:50} {a['clips_per_s']:8.2f} clips/s {a['step_ms']:9.1f} ms/step "
      f"(PyTorch eager reference {b['step_ms']:.1f} ms/step: {b['step_ms'] / a['step_ms']:.2f}x)")
PY
    done
  done
}

bench_distributed() {
  echo "== distributed ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
  local tbin d="$work/distributed"
  tbin=$(train_bin)
  rm -rf "$d"
  mkdir -p "$d"
  local per_class=8
  ((quick)) && per_class=4
  "$tbin" --quiet synth --out "$d/shards" --classes 8 --train "$per_class" --val 1 --frames 8 \
    --size 64x64 --clips 1 >/dev/null
  # name threads ranks: one ViT-S epoch (the first steps warm up; the rates are the
  # metrics lines' after the first).
  dp_case() {
    local name=$1 threads=$2 nproc=$3
    OMP_NUM_THREADS=$threads "$tbin" --quiet train --shards "$d/shards" --model vit-s \
      --epochs 1 --batch-size 4 --device cpu --threads "$threads" --nproc "$nproc" --log-every 1 \
      --no-tensorboard --val-split none --workers 1 --out "$d/$name" >/dev/null
    python3 - "$d/$name/metrics.jsonl" "$name" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l][1:]
rate = sum(l["clips_per_s"] for l in lines) / len(lines)
ar = [l["allreduce_s"] for l in lines if "allreduce_s" in l]
out = {"clips_per_s": rate, "steps": len(lines)}
if ar:
    out["allreduce_s"] = sum(ar) / len(ar)
print(json.dumps(out))
PY
  }
  local one two both
  one=$(dp_case one-rank-1-core 1 1)
  both=$(dp_case one-rank-2-cores 2 1)
  two=$(dp_case two-ranks-1-core-each 1 2)
  json_case "vit-s-1-rank-1-core" "$one"
  json_case "vit-s-1-rank-2-cores" "$both"
  json_case "vit-s-2-ranks-1-core-each" "$two"
  # PyTorch's own Gloo all-reduce of a buffer of ViT-S's trainable parameters (what
  # DistributedDataParallel averages), between two processes on the same cores.
  local numel ref
  numel=$("$tbin" --json --quiet bench --model vit-s --frames 8 --size 64x64 --batch 1 --device cpu \
    --steps 1 --warmup 0 | python3 -c 'import json,sys; print(json.load(sys.stdin)["parameters"])')
  ref=$(OMP_NUM_THREADS=1 .venv/bin/torchrun --nproc-per-node 2 --standalone \
    scripts/bench_allreduce_torch.py "$numel" 2>/dev/null | tail -n 1)
  json_case "pytorch-gloo-allreduce-vit-s-grads-2-ranks" "$ref"
  python3 - "$one" "$both" "$two" "$ref" <<'PY'
import json, sys
one, both, two, ref = (json.loads(a) for a in sys.argv[1:])
step = 8 / two["clips_per_s"]  # seconds a step takes: 2 ranks x batch 4 clips
print(f"{'ViT-S 8x64x64, 1 rank on 1 core':50} {one['clips_per_s']:8.2f} clips/s")
print(f"{'ViT-S 8x64x64, 1 rank on 2 cores':50} {both['clips_per_s']:8.2f} clips/s")
print(f"{'ViT-S 8x64x64, 2 ranks of 1 core (Gloo)':50} {two['clips_per_s']:8.2f} clips/s "
      f"(scaling efficiency {two['clips_per_s'] / (2 * one['clips_per_s']):.0%}; all-reduce "
      f"{two['allreduce_s'] * 1000:.0f} ms a step, {two['allreduce_s'] / step:.0%} of it)")
print(f"{'PyTorch Gloo all-reduce of the same ' + str(ref['numel']) + ' floats':50} "
      f"{ref['allreduce_s'] * 1000:8.0f} ms")
PY
  # With two or more GPUs: ViT-B fine-tuning at 16x224x224, bf16, batch 8 a rank, on one
  # GPU and on all of them (NCCL). NCCL's all-reduce runs on its own stream, so the time
  # a step spends in it shows in the scaling, not in allreduce_s (the time to queue it).
  local gpus
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  if ((gpus >= 2)); then
    "$tbin" --quiet synth --out "$d/gpu-shards" --classes 8 --train 64 --val 1 --frames 16 \
      --size 224x224 --clips 1 >/dev/null
    gpu_case() {
      local name=$1 nproc=$2
      "$tbin" --quiet train --shards "$d/gpu-shards" --model vit-b --epochs 1 --batch-size 8 \
        --device cuda --precision bf16 --nproc "$nproc" --log-every 4 --no-tensorboard \
        --val-split none --out "$d/$name" >/dev/null
      python3 -c 'import json,sys; l=[json.loads(x) for x in open(sys.argv[1]) if "\"train\"" in x][1:]; print(json.dumps({"clips_per_s": sum(x["clips_per_s"] for x in l)/len(l)}))' "$d/$name/metrics.jsonl"
    }
    local g1 gn
    g1=$(gpu_case vit-b-1-gpu 1)
    gn=$(gpu_case "vit-b-$gpus-gpus" "$gpus")
    json_case "vit-b-16x224-bf16-1-gpu" "$g1"
    json_case "vit-b-16x224-bf16-$gpus-gpus" "$gn"
    python3 - "$g1" "$gn" "$gpus" <<'PY'
import json, sys
one, many, n = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
print(f"{'ViT-B 16x224x224 bf16, 1 GPU':50} {one['clips_per_s']:8.1f} clips/s")
print(f"{f'ViT-B 16x224x224 bf16, {n} GPUs (NCCL)':50} {many['clips_per_s']:8.1f} clips/s "
      f"(scaling efficiency {many['clips_per_s'] / (n * one['clips_per_s']):.0%}; target 90%)")
PY
  else
    echo "(fewer than 2 GPUs here: the GPU scaling case is skipped)"
  fi
}

bench_refresh() {
  echo "== refresh ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
  local d="$work/refresh"
  rm -rf "$d"
  mkdir -p "$d"
  # Every item gets a link to a closed port: the first run fails each one once (the
  # nightly state of a dataset with dead links); later runs find nothing due.
  cat >"$d/pmv.toml" <<TOML
root = "root"
[refresh]
verify_fraction = 0.01
[fetch]
retries = 1
concurrency = 64
per_host = 64
allow_private_hosts = true
[[datasets]]
name = "pmv400"
format = "pmv400"
manifests = ["$PWD/manifests/pmv400/train_pmv400.csv", "$PWD/manifests/pmv400/val_pmv400.csv", "$PWD/manifests/pmv400/test_pmv400.csv"]
url_template = "http://127.0.0.1:9/{id}.mp4"
recipes = ["videomae-16x4-224"]
TOML
  /usr/bin/time -f "%e %M" -o "$work/time.txt" "$bin" --config "$d/pmv.toml" refresh >"$work/stdout.txt" 2>&1 || true
  read -r wall rss <"$work/time.txt"
  printf '%-50s %7s s %17s %7.1f MB peak\n' "first refresh (ingest, 76,447 dead links)" "$wall" "" "$(awk "BEGIN {print $rss / 1024}")"
  for i in 1 2; do
    /usr/bin/time -f "%e %M" -o "$work/time.txt" "$bin" --config "$d/pmv.toml" refresh >"$work/stdout.txt" 2>&1
    # GNU time puts "Command exited with non-zero status N" before the figures.
    read -r wall rss < <(tail -n 1 "$work/time.txt")
    printf '%-50s %7s s %17s %7.1f MB peak\n' "refresh with nothing to do, run $i" "$wall" "" "$(awk "BEGIN {print $rss / 1024}")"
    json_case "refresh-nothing-to-do-$i" "{\"wall_s\": $wall, \"peak_rss_kb\": $rss}"
  done
  cat "$work/stdout.txt"
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

# fetch_case NAME FILES BYTES -- COMMAND...: runs COMMAND $fruns times, each in a clean
# output directory and root, after a sync; checks that every file arrived; prints the
# median wall time, MB/s, files/s and the largest peak RSS; appends them to
# results.json.
fetch_case() {
  local name=$1 files=$2 bytes=$3
  shift 4
  local walls=() rss_max=0
  for ((r = 0; r < fruns; r++)); do
    rm -rf "$fw/out" "$fw/root-run"
    mkdir -p "$fw/out"
    cp -a "$fw/root-ingested-$case" "$fw/root-run"
    sync
    /usr/bin/time -f "%e %M" -o "$work/time.txt" "$@" >"$work/stdout.txt" 2>"$work/stderr.txt" || {
      code=$?
      cat "$work/stderr.txt" >&2
      echo "bench: $name failed ($code)" >&2
      exit 1
    }
    local wall rss got
    # GNU time puts "Command exited with non-zero status N" before the figures.
    read -r wall rss < <(tail -n 1 "$work/time.txt")
    got=$(find "$fw/out" "$fw/root-run/videos" -type f ! -name '*.partial' 2>/dev/null | wc -l)
    if [ "$got" != "$files" ]; then
      echo "bench: $name stored $got of $files files" >&2
      tail -5 "$work/stderr.txt" >&2
      exit 1
    fi
    walls+=("$wall")
    ((rss > rss_max)) && rss_max=$rss
  done
  local median mbs fps
  median=$(printf '%s\n' "${walls[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  mbs=$(awk "BEGIN {printf \"%.0f\", $bytes / 1e6 / ($median > 0 ? $median : 0.001)}")
  fps=$(awk "BEGIN {printf \"%.0f\", $files / ($median > 0 ? $median : 0.001)}")
  printf '%-48s %6s s %6s MB/s %6s files/s %6.1f MB peak  (runs: %s)\n' "$name" "$median" "$mbs" "$fps" \
    "$(awk "BEGIN {print $rss_max / 1024}")" "${walls[*]}"
  ((first)) || echo "," >>"$results"
  first=0
  printf '  {"case": "%s", "files": %s, "bytes": %s, "median_s": %s, "mb_per_s": %s, "files_per_s": %s, "peak_rss_kb": %s, "runs": [%s]}' \
    "$name" "$files" "$bytes" "$median" "$mbs" "$fps" "$rss_max" "$(IFS=,; echo "${walls[*]}")" >>"$results"
}

bench_fetch() {
  command -v nginx >/dev/null || { echo "bench: nginx is missing (scripts/setup.sh installs nginx-light)" >&2; exit 1; }
  local conc=16 port=18473 big=200 small=5000
  fruns=3
  ((quick)) && big=50 && small=1250 && fruns=1
  # PMV_BENCH_FETCH_DIR=/dev/shm/x runs the same on tmpfs: no disk in the way.
  fw="${PMV_BENCH_FETCH_DIR:-$work/fetch}"
  mkdir -p "$fw/www/big" "$fw/www/small" "$fw/nginx"
  echo "== fetch ($(nproc) cores; nginx on 127.0.0.1:$port; concurrency $conc; $big x 8 MiB, $small x 64 KiB)"
  # Files that sniff as MP4 (an ftyp box, then random bytes), made once.
  python3 - "$fw/www" "$big" "$small" <<'PY'
import os, sys
www, big, small = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
head = b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2"
for sub, n, size in (("big", big, 8 << 20), ("small", small, 64 << 10)):
    for i in range(n):
        p = os.path.join(www, sub, f"{sub[0]}{i:05d}.mp4")
        if os.path.exists(p) and os.path.getsize(p) == size:
            continue
        with open(p, "wb") as f:
            f.write(head + os.urandom(size - len(head)))
PY
  cat >"$fw/nginx/nginx.conf" <<NGINX
worker_processes 1;
pid $fw/nginx/nginx.pid;
error_log $fw/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path $fw/nginx/tmp;
  proxy_temp_path $fw/nginx/tmp;
  fastcgi_temp_path $fw/nginx/tmp;
  uwsgi_temp_path $fw/nginx/tmp;
  scgi_temp_path $fw/nginx/tmp;
  types { video/mp4 mp4; }
  server { listen 127.0.0.1:$port; root $fw/www; }
}
NGINX
  mkdir -p "$fw/nginx/tmp"
  nginx -c "$fw/nginx/nginx.conf" -e "$fw/nginx/error.log"
  trap 'nginx -c "$fw/nginx/nginx.conf" -e "$fw/nginx/error.log" -s stop 2>/dev/null || true' EXIT
  sleep 0.3

  for case in big small; do
    local n size
    if [ "$case" = big ]; then n=$big size=$((8 << 20)); else n=$small size=$((64 << 10)); fi
    local bytes=$((n * size))
    # The same URLs for everyone: a manifest for pmv-data, a config for curl, a list
    # for aria2c.
    : >"$fw/$case.jsonl"
    : >"$fw/$case.curl"
    : >"$fw/$case.aria2"
    for ((i = 0; i < n; i++)); do
      local f
      f=$(printf '%s%05d' "${case:0:1}" "$i")
      local url="http://127.0.0.1:$port/$case/$f.mp4"
      printf '{"id":"%s","urls":["%s"]}\n' "$f" "$url" >>"$fw/$case.jsonl"
      printf 'url = "%s"\noutput = "%s"\n' "$url" "$fw/out/$f.mp4" >>"$fw/$case.curl"
      printf '%s\n  out=%s.mp4\n' "$url" "$f" >>"$fw/$case.aria2"
    done
    rm -rf "$fw/root-ingested-$case"
    "$bin" --root "$fw/root-ingested-$case" ingest --dataset "$case" --format jsonl --split train "$fw/$case.jsonl" >/dev/null
    local label="$n x $((size >> 10)) KiB"
    fetch_case "fetch $label: pmv-data fetch" "$n" "$bytes" -- \
      "$bin" --root "$fw/root-run" -q fetch --concurrency "$conc" --per-host "$conc"
    fetch_case "fetch $label: curl --parallel" "$n" "$bytes" -- \
      curl --silent --show-error --fail --parallel --parallel-max "$conc" --config "$fw/$case.curl"
    fetch_case "fetch $label: curl --parallel, then sync" "$n" "$bytes" -- \
      sh -c 'curl --silent --show-error --fail --parallel --parallel-max "$1" --config "$2" && sync' \
        sh "$conc" "$fw/$case.curl"
    fetch_case "fetch $label: aria2c" "$n" "$bytes" -- \
      aria2c --quiet --input-file "$fw/$case.aria2" --dir "$fw/out" --max-concurrent-downloads "$conc" \
        --max-connection-per-server 1 --split 1 --file-allocation none --auto-file-renaming false \
        --allow-overwrite true --check-certificate false --console-log-level error
  done
  nginx -c "$fw/nginx/nginx.conf" -e "$fw/nginx/error.log" -s stop 2>/dev/null || true
  trap - EXIT

  # What this disk makes durable, with no network and no hashing: the same files
  # written from memory and fsynced one by one, or flushed together with one sync as
  # pmv-data's group commit does.
  python3 - "$fw/durable" "$big" "$small" "$fruns" <<'PY'
import os, shutil, sys, time
d, big, small, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for n, size in ((big, 8 << 20), (small, 64 << 10)):
    data = os.urandom(size)
    for mode in ("fsync each file", "one sync for all"):
        took = []
        for _ in range(runs):
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            os.sync()
            t = time.time()
            for i in range(n):
                fd = os.open(os.path.join(d, f"{i}"), os.O_WRONLY | os.O_CREAT, 0o644)
                os.write(fd, data)
                if mode == "fsync each file":
                    os.fsync(fd)
                os.close(fd)
            if mode != "fsync each file":
                os.sync()
            dirfd = os.open(d, os.O_RDONLY)
            os.fsync(dirfd)
            os.close(dirfd)
            took.append(time.time() - t)
        s = sorted(took)[len(took) // 2]
        label = f"durable limit, {n} x {size >> 10} KiB, {mode}"
        print(f"{label:<48} {s:6.2f} s {n * size / 1e6 / s:6.0f} MB/s {n / s:6.0f} files/s")
shutil.rmtree(d, ignore_errors=True)
PY
}

bench_budget() {
  echo "== budget: a 5 s time budget against a server sending one byte every 2 s"
  local d="$work/budget"
  rm -rf "$d"
  mkdir -p "$d"
  # Two files of 1,000 announced bytes, dripped one byte every 2 s, on a free port.
  python3 - "$d/port" <<'PY' &
import http.server, socketserver, sys, time
class Drip(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(2)
        except OSError:
            pass
    def log_message(self, *a):
        pass
class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
s = Server(("127.0.0.1", 0), Drip)
open(sys.argv[1], "w").write(str(s.server_address[1]))
s.serve_forever()
PY
  local server=$!
  trap 'kill $server 2>/dev/null || true' EXIT
  while [ ! -s "$d/port" ]; do sleep 0.1; done
  local port
  port=$(cat "$d/port")
  for i in 1 2; do
    echo "{\"id\": \"drip$i\", \"urls\": [\"http://127.0.0.1:$port/drip$i.mp4\"]}"
  done >"$d/items.jsonl"
  cat >"$d/pmv.toml" <<TOML
[refresh]
max_duration = "5s"
verify_fraction = 0
[fetch]
allow_private_hosts = true
[[datasets]]
name = "drip"
format = "jsonl"
manifests = ["items.jsonl"]
recipes = ["videomae-16x4-224"]
TOML
  local runs=3
  ((quick)) && runs=1
  timed() {
    local name=$1
    shift
    local walls=()
    for ((i = 0; i < runs; i++)); do
      rm -rf "$d/root"
      /usr/bin/time -f "%e" -o "$work/time.txt" "$@" >/dev/null 2>&1 || true
      walls+=("$(tail -n 1 "$work/time.txt")")
    done
    local median
    median=$(printf '%s\n' "${walls[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf '%-50s %7s s  (runs: %s)\n' "$name" "$median" "${walls[*]}"
    json_case "budget: $name" "{\"median_s\": $median, \"runs\": [$(IFS=,; echo "${walls[*]}")]}"
  }
  timed "curl --max-time 5" curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$port/drip1.mp4"
  "$bin" --root "$d/ingested" ingest --dataset drip --format jsonl "$d/items.jsonl" >/dev/null
  timed "pmv-data fetch --max-duration 5s" \
    sh -c "rm -rf '$d/root' && cp -a '$d/ingested' '$d/root' && exec '$bin' --root '$d/root' fetch --max-duration 5s --allow-private-hosts"
  timed "pmv-data refresh, max_duration = 5s" "$bin" --root "$d/root" --config "$d/pmv.toml" refresh
  kill $server 2>/dev/null || true
  trap - EXIT
}

bench_media() {
  echo "== media: probe on hostile files (each refused, exit 3)"
  local d="$work/media"
  python3 scripts/forge_media.py "$d"
  [ -e "$d/8k.mp4" ] || ffmpeg -hide_banner -nostdin -v error -y -f lavfi \
    -i color=c=gray:size=8192x4320:rate=25 -frames:v 1 -c:v libx264 -preset ultrafast \
    -pix_fmt yuv420p "$d/8k.mp4"
  for f in forged.mp4 forged-fragments.mp4 forged.flv 8k.mp4; do
    run_case "probe $f" 3 1 -- "$bin" probe "$d/$f"
  done
}

for s in "${sections[@]}"; do
  case "$s" in
    ingest) bench_ingest ;;
    fetch) bench_fetch ;;
    loader) bench_loader ;;
    models) bench_models ;;
    baselines) bench_baselines ;;
    distributed) bench_distributed ;;
    refresh) bench_refresh ;;
    gpu) bench_gpu ;;
    budget) bench_budget ;;
    media) bench_media ;;
    shard) bash scripts/bench-shard.sh $( ((quick)) && echo --quick) ;;
    augment) bash scripts/bench-augment.sh $( ((quick)) && echo --quick) ;;
    *) echo "bench: unknown section $s" >&2; exit 2 ;;
  esac
done
echo "]" >>"$results"
echo "results: $results"
