#!/usr/bin/env python3
"""PyTorch eager baseline for `pmv-data-train bench --model x3d-m|mvit-v2-s|uniformer-s`:
the same training step on the reference implementation of the same model.

The models are the references the parity tests prove pmv-data's against
(scripts/refmodels: pytorchvideo's X3D-M, torchvision's MViTv2-S, mmaction2's UniFormer-S
with its head), built at the benchmark's input with the drop path and dropout
`pmv-data-train bench` uses (X3D-M dropout 0.5; MViTv2-S drop path 0.2, dropout 0.5;
UniFormer-S drop path 0.1). A step is what the Rust benchmark does: uint8 frames ->
ImageNet normalisation -> forward in training mode (under torch.autocast(bfloat16) with
--precision bf16) -> label-smoothed (0.1) soft-target cross-entropy -> backward -> AdamW
(PyTorch's default implementation, lr 1e-4, weight decay 0.05 off for biases, norms,
position tables and tokens: pmv-data's rule) -> zero_grad. The batch is one random uint8
batch kept on the device. Needs the test venv's packages (scripts/setup.sh installs them).

usage: bench_models_torch.py --model x3d-m|mvit-v2-s|uniformer-s [--batch 2] [--frames 16]
                             [--size 224 | HxW] [--steps 10] [--warmup 2] [--classes 400]
                             [--device cpu|cuda] [--precision fp32|bf16] [--threads N]
                             [--json]
"""

import argparse
import importlib
import json
import math
import os
import sys
import time

import torch

# scripts/ on the path: the reference builders are scripts/refmodels/<model>.py.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# (scripts/refmodels module, drop path, dropout) as `pmv-data-train bench` builds each model.
MODELS = {
    "x3d-m": ("x3d", 0.0, 0.5),
    "mvit-v2-s": ("mvit", 0.2, 0.5),
    "uniformer-s": ("uniformer", 0.1, 0.0),
}


def decays(name, p):
    """pmv-data's weight-decay rule (models::decays)."""
    return not (
        p.ndim <= 1
        or name.endswith(".bias")
        or "position" in name
        or ("pos_embed" in name and p.ndim <= 3)
        or name.endswith("mask_token")
        or name.endswith("cls_token")
    )


def size(text):
    h, _, w = text.partition("x")
    return (int(h), int(w or h))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, choices=sorted(MODELS))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=size, default=(224, 224))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--classes", type=int, default=400)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_models_torch: --device cuda but torch finds no CUDA device")
    torch.manual_seed(0)
    (h, w) = a.size
    module, drop_path, dropout = MODELS[a.model]
    build = importlib.import_module(f"refmodels.{module}").build
    model = build(a.frames, h, w, a.classes, drop_path=drop_path, dropout=dropout).to(dev).train()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if decays(name, p) else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-4,
    )
    frames = torch.randint(0, 256, (a.batch, a.frames, h, w, 3), dtype=torch.uint8, device=dev)
    labels = torch.randint(0, a.classes, (a.batch,), device=dev)
    scale = torch.tensor([1.0 / (255.0 * s) for s in STD], device=dev)
    shift = torch.tensor([m / s for m, s in zip(MEAN, STD)], device=dev)
    bf16 = a.precision == "bf16"

    def step():
        x = (frames.float() * scale - shift).permute(0, 4, 1, 2, 3).contiguous()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        y = torch.full((a.batch, a.classes), 0.1 / a.classes, device=dev)
        y.scatter_(1, labels[:, None], 0.9 + 0.1 / a.classes)
        loss = -(y * logits.float().log_softmax(-1)).sum(-1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(a.warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    secs = time.perf_counter() - t0
    out = {
        "bench": "train-step",
        "implementation": "PyTorch eager (reference model)",
        "torch": torch.__version__,
        "model": a.model,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": a.batch,
        "frames": a.frames,
        "size": [h, w],
        "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "precision": a.precision,
        "steps": a.steps,
        "warmup": a.warmup,
        "seconds": secs,
        "step_ms": 1000.0 * secs / a.steps,
        "clips_per_s": a.steps * a.batch / secs,
    }
    if a.json:
        print(json.dumps(out))
    else:
        print(
            f"PyTorch eager {a.model} batch {a.batch} x {a.frames}x{h}x{w} ({a.precision}, {out['device']}): "
            f"{out['step_ms']:.1f} ms/step, {out['clips_per_s']:.2f} clips/s"
        )
    assert math.isfinite(secs)


if __name__ == "__main__":
    main()
