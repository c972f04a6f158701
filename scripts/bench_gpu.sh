#!/usr/bin/env bash
# GPU benchmark: VideoMAE ViT training steps (16x224, bf16) in pmv-data-train beside a
# PyTorch eager script of the same model and batch (scripts/bench_vit_torch.py), on the
# same GPU in the same run, alternating the two; then the same model fed by the shard
# loader from synthetic shards, to show whether the loader keeps up.
#
# Needs only python3 with a CUDA torch and a pmv-data-train binary: built here with
#   cargo build --release --no-default-features --features train
# or carried to a GPU machine (its libtorch is then taken from python's torch).
#
# usage: scripts/bench_gpu.sh [--bin PATH] [--model vit-s] [--batch 8] [--steps 100]
#                             [--rounds 2] [--no-loader]
# Results: stdout (a table last) and target/bench/gpu.json.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release/pmv-data-train
model=vit-s
batch=8
steps=100
rounds=2
loader=1
while (($#)); do
  case "$1" in
    --bin) bin=$2; shift ;;
    --model) model=$2; shift ;;
    --batch) batch=$2; shift ;;
    --steps) steps=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --no-loader) loader=0 ;;
    *) echo "bench_gpu: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ -x "$bin" ] || { echo "bench_gpu: no trainer binary at $bin (see the usage in this script)" >&2; exit 1; }
py=${PYTHON:-python3}
torch_lib=$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
work=target/bench
mkdir -p "$work"
out="$work/gpu.json"

echo "== GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null || true
"$bin" info
"$py" -c 'import torch; print("python torch", torch.__version__, torch.cuda.get_device_name(0))'

common=(--model "$model" --batch "$batch" --frames 16 --size 224 --steps "$steps" --warmup 10)
rust=()
torch_runs=()
echo "== $model, batch $batch, 16x224x224, bf16, $steps timed steps after 10, $rounds rounds"
for ((r = 1; r <= rounds; r++)); do
  line=$("$bin" --json --quiet bench "${common[@]}" --device cuda --precision bf16 | tr -d '\n')
  rust+=("$line")
  echo "round $r pmv-data-train: $(echo "$line" | "$py" -c 'import json,sys; d=json.load(sys.stdin); print(f"{d[\"step_ms\"]:.2f} ms/step, {d[\"clips_per_s\"]:.1f} clips/s")')"
  line=$("$py" scripts/bench_vit_torch.py "${common[@]}" --json)
  torch_runs+=("$line")
  echo "round $r PyTorch eager:  $(echo "$line" | "$py" -c 'import json,sys; d=json.load(sys.stdin); print(f"{d[\"step_ms\"]:.2f} ms/step, {d[\"clips_per_s\"]:.1f} clips/s")')"
done
fused=$("$py" scripts/bench_vit_torch.py "${common[@]}" --fused --json)
echo "PyTorch eager, fused AdamW: $(echo "$fused" | "$py" -c 'import json,sys; d=json.load(sys.stdin); print(f"{d[\"step_ms\"]:.2f} ms/step, {d[\"clips_per_s\"]:.1f} clips/s")')"

fed="null"
if ((loader)); then
  synth="$work/synth-16x224"
  if [ ! -d "$synth/train" ]; then
    "$bin" --quiet synth --out "$synth" --classes 12 --train 24 --val 0 --frames 16 --size 256x256 \
      --clips 2 --fps 15 --shard-size 32 >/dev/null
  fi
  fed=$("$bin" --json --quiet bench "${common[@]}" --device cuda --precision bf16 --shards "$synth" | tr -d '\n')
  echo "pmv-data-train fed by the loader from shards: $(echo "$fed" | "$py" -c 'import json,sys; d=json.load(sys.stdin); print(f"{d[\"step_ms\"]:.2f} ms/step, {d[\"clips_per_s\"]:.1f} clips/s, waited {d[\"loader_wait_s\"]:.2f} s for batches")')"
fi

"$py" - "$out" "$fused" "$fed" "${rust[@]}" --torch "${torch_runs[@]}" <<'EOF'
import json, statistics, sys
out, fused, fed = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
rest = sys.argv[4:]
cut = rest.index("--torch")
rust = [json.loads(x) for x in rest[:cut]]
torch = [json.loads(x) for x in rest[cut + 1:]]
rs = statistics.median(d["step_ms"] for d in rust)
ts = statistics.median(d["step_ms"] for d in torch)
b = rust[0]["batch"]
doc = {"rust": rust, "torch": torch, "torch_fused_adamw": fused, "loader_fed": fed,
       "median_step_ms": {"pmv-data-train": rs, "pytorch_eager": ts},
       "ratio_torch_over_rust": ts / rs}
json.dump(doc, open(out, "w"), indent=2)
print()
print(f"{'':34} {'step ms':>9} {'clips/s':>9}")
print(f"{'pmv-data-train (tch, bf16)':34} {rs:9.2f} {1000 * b / rs:9.1f}")
print(f"{'PyTorch eager (autocast bf16)':34} {ts:9.2f} {1000 * b / ts:9.1f}")
print(f"{'PyTorch eager, fused AdamW':34} {fused['step_ms']:9.2f} {fused['clips_per_s']:9.1f}")
if fed:
    print(f"{'pmv-data-train fed from shards':34} {fed['step_ms']:9.2f} {fed['clips_per_s']:9.1f}")
print(f"speed ratio (PyTorch step time / pmv-data-train step time): {ts / rs:.3f}")
print(f"results: {out}")
EOF
