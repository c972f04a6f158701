#!/usr/bin/env bash
# GPU benchmark: training steps (16x224, bf16) in pmv-data-train beside a PyTorch eager
# script of the same model and batch, on the same GPU in the same run, alternating the
# two; then the same model fed by the shard loader from synthetic shards, to show whether
# the loader keeps up. The PyTorch side is scripts/bench_vit_torch.py for the ViTs and
# the reference implementations for x3d-m, mvit-v2-s and uniformer-s
# (scripts/bench_models_torch.py: it needs torchvision, pytorchvideo and mmaction2's
# files beside torch, as scripts/setup.sh installs them).
#
# Needs only python3 with a CUDA torch and a pmv-data-train binary: built here with
#   cargo build --release -p pmv-train
# or carried to a GPU machine (its libtorch is then taken from python's torch).
#
# usage: scripts/bench_gpu.sh [--bin PATH] [--model vit-s] [--batch 8] [--steps 100]
#                             [--rounds 2] [--no-loader] [--smoke]
#   --model  vit-s, vit-b, x3d-m, mvit-v2-s or uniformer-s
#   --smoke  also train tiny3d and vit-s briefly on CUDA from synthetic shards and evaluate
#            them (a check that the CUDA paths work end to end, with their top-1)
# Results: stdout (a table last) and $BENCH_OUT/gpu.json (default target/bench). Run it
# from the repository root, or anywhere with --bin.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

bin=target/release/pmv-data-train
model=vit-s
batch=8
steps=100
rounds=2
loader=1
smoke=0
while (($#)); do
  case "$1" in
    --bin) bin=$2; shift ;;
    --model) model=$2; shift ;;
    --batch) batch=$2; shift ;;
    --steps) steps=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --no-loader) loader=0 ;;
    --smoke) smoke=1 ;;
    *) echo "bench_gpu: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ -x "$bin" ] || { echo "bench_gpu: no trainer binary at $bin (see the usage in this script)" >&2; exit 1; }
py=${PYTHON:-python3}
torch_lib=$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
work=${BENCH_OUT:-target/bench}
mkdir -p "$work"
work=$(cd "$work" && pwd)
out="$work/gpu.json"

echo "== GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null || true
"$bin" info
"$py" -c 'import torch; print("python torch", torch.__version__, torch.cuda.get_device_name(0))'

# "N ms/step, M clips/s" of a JSON result on stdin.
rate() {
  "$py" -c 'import json, sys; d = json.load(sys.stdin); print("%.2f ms/step, %.1f clips/s" % (d["step_ms"], d["clips_per_s"]))'
}

common=(--model "$model" --batch "$batch" --frames 16 --size 224 --steps "$steps" --warmup 10)
case "$model" in
  vit-s | vit-b) torch_bench=("$py" "$here/bench_vit_torch.py") ;;
  x3d-m | mvit-v2-s | uniformer-s)
    torch_bench=("$py" "$here/bench_models_torch.py" --device cuda --precision bf16) ;;
  *) echo "bench_gpu: no PyTorch baseline for --model $model" >&2; exit 2 ;;
esac
rust=()
torch_runs=()
echo "== $model, batch $batch, 16x224x224, bf16, $steps timed steps after 10, $rounds rounds"
for ((r = 1; r <= rounds; r++)); do
  line=$("$bin" --json --quiet bench "${common[@]}" --device cuda --precision bf16 | tr -d '\n')
  rust+=("$line")
  echo "round $r pmv-data-train: $(echo "$line" | rate)"
  line=$("${torch_bench[@]}" "${common[@]}" --json)
  torch_runs+=("$line")
  echo "round $r PyTorch eager:  $(echo "$line" | rate)"
done
fused="null"
if [[ $model == vit-* ]]; then
  fused=$("$py" "$here/bench_vit_torch.py" "${common[@]}" --fused --json)
  echo "PyTorch eager, fused AdamW: $(echo "$fused" | rate)"
fi

fed="null"
if ((loader)); then
  synth="$work/synth-16x224"
  if [ ! -d "$synth/train" ]; then
    "$bin" --quiet synth --out "$synth" --classes 12 --train 24 --val 0 --frames 16 --size 256x256 \
      --clips 2 --fps 15 --shard-size 32 >/dev/null
  fi
  fed=$("$bin" --json --quiet bench "${common[@]}" --device cuda --precision bf16 --shards "$synth" | tr -d '\n')
  echo "pmv-data-train fed by the loader from shards: $(echo "$fed" | rate), waited $(echo "$fed" | "$py" -c 'import json, sys; print("%.2f" % json.load(sys.stdin)["loader_wait_s"])') s for batches"
fi

smoke_json="null"
if ((smoke)); then
  echo "== CUDA end to end: tiny3d and vit-s trained briefly on synthetic shards, then evaluated"
  s8="$work/synth-8x64x48"
  [ -d "$s8/train" ] || "$bin" --quiet synth --out "$s8" --classes 8 --train 40 --val 10 --frames 8 \
    --size 64x48 --clips 2 --fps 6 >/dev/null
  rm -rf "$work/smoke-tiny3d" "$work/smoke-vit"
  t=$("$bin" --json --quiet train --shards "$s8" --model tiny3d --epochs 20 --batch-size 8 --flip 0 \
    --crop-scale 0.8,1 --crop-ratio 0.9,1.1 --lr 3e-3 --device cuda --out "$work/smoke-tiny3d" | tr -d '\n')
  te=$("$bin" --json --quiet eval --run "$work/smoke-tiny3d" --device cuda | tr -d '\n')
  v=""
  ve=""
  vf=""
  if ((loader)); then
    v=$("$bin" --json --quiet train --shards "$synth" --val-split none --model vit-s --epochs 2 --batch-size 8 \
      --input 224x224 --device cuda --save-every 10 --out "$work/smoke-vit" | tr -d '\n')
    ve=$("$bin" --json --quiet eval --run "$work/smoke-vit" --split train --views 1x3 --device cuda | tr -d '\n')
    vf=$("$bin" --json --quiet eval --run "$work/smoke-vit" --split train --views 1x3 --device cuda \
      --precision fp32 --out "$work/smoke-vit/eval-fp32" | tr -d '\n')
  fi
  smoke_json=$("$py" - "$t" "$te" "$v" "$ve" "$vf" <<'EOF'
import json, sys
p = lambda s: json.loads(s) if s else None
t, te, v, ve, vf = (p(x) for x in sys.argv[1:6])
print(f"tiny3d on CUDA: {t['steps']} steps in {t['duration_s']:.1f} s ({t['clips_per_s']:.0f} clips/s), "
      f"val top-1 {100 * t['top1']:.1f}%; eval {te['views']} views top-1 {100 * te['top1']:.1f}%", file=sys.stderr)
if v:
    print(f"vit-s on CUDA (bf16): {v['steps']} steps, {v['clips_per_s']:.1f} clips/s, final loss {v['final_loss']:.3f}; "
          f"eval top-1 bf16 {100 * ve['top1']:.1f}% vs fp32 {100 * vf['top1']:.1f}%", file=sys.stderr)
print(json.dumps({"tiny3d": t, "tiny3d_eval": te, "vit_s": v, "vit_s_eval_bf16": ve, "vit_s_eval_fp32": vf}))
EOF
)
fi

"$py" - "$out" "$fused" "$fed" "$smoke_json" "${rust[@]}" --torch "${torch_runs[@]}" <<'EOF'
import json, statistics, sys
out, fused, fed, smoke = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
rest = sys.argv[5:]
cut = rest.index("--torch")
rust = [json.loads(x) for x in rest[:cut]]
torch = [json.loads(x) for x in rest[cut + 1:]]
rs = statistics.median(d["step_ms"] for d in rust)
ts = statistics.median(d["step_ms"] for d in torch)
b = rust[0]["batch"]
doc = {"rust": rust, "torch": torch, "torch_fused_adamw": fused, "loader_fed": fed, "smoke": smoke,
       "median_step_ms": {"pmv-data-train": rs, "pytorch_eager": ts},
       "ratio_torch_over_rust": ts / rs}
json.dump(doc, open(out, "w"), indent=2)
print()
print(f"{'':34} {'step ms':>9} {'clips/s':>9}")
print(f"{'pmv-data-train (tch, bf16)':34} {rs:9.2f} {1000 * b / rs:9.1f}")
print(f"{'PyTorch eager (autocast bf16)':34} {ts:9.2f} {1000 * b / ts:9.1f}")
if fused:
    print(f"{'PyTorch eager, fused AdamW':34} {fused['step_ms']:9.2f} {fused['clips_per_s']:9.1f}")
if fed:
    print(f"{'pmv-data-train fed from shards':34} {fed['step_ms']:9.2f} {fed['clips_per_s']:9.1f}")
print(f"speed ratio (PyTorch step time / pmv-data-train step time): {ts / rs:.3f}")
print(f"results: {out}")
EOF
