#!/usr/bin/env python3
"""PyTorch eager baseline for `pmv-data-train bench`: the same VideoMAE ViT training step.

The model is VideoMAE's own architecture as its reference code writes it (tubelet
Conv3d 2x16x16, fixed sinusoidal positions, pre-norm blocks with a fused qkv projection
carrying query and value biases, exact GELU, mean pooling, fc_norm, linear head), with
F.scaled_dot_product_attention and stochastic depth 0.1. A step is what the Rust trainer
does: uint8 frames -> normalise -> forward under torch.autocast(bfloat16) -> label-smoothed
soft-target cross-entropy -> backward -> AdamW (PyTorch's default implementation, weight
decay 0.05 off for biases and norms) -> zero_grad. The batch is one random uint8 batch kept
on the GPU, as in `pmv-data-train bench` without --shards. Needs only python3 + torch.

usage: bench_vit_torch.py [--model vit-s|vit-b] [--batch 8] [--frames 16] [--size 224]
                          [--steps 100] [--warmup 10] [--classes 400] [--fused] [--json]
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {"vit-s": (384, 12, 6), "vit-b": (768, 12, 12)}
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def sinusoid_table(n, d):
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(d)
    angle = pos / torch.pow(10000.0, (2 * (j // 2)).double() / d)
    table = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()[None]


class Block(nn.Module):
    def __init__(self, d, heads, drop_path):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(d))
        self.v_bias = nn.Parameter(torch.zeros(d))
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)
        self.drop_path = drop_path

    def drop(self, x):
        if not self.training or self.drop_path == 0.0:
            return x
        keep = 1.0 - self.drop_path
        mask = x.new_empty(x.shape[0], 1, 1).bernoulli_(keep)
        return x * mask / keep

    def forward(self, x):
        b, n, d = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(self.norm1(x), self.qkv.weight, bias)
        qkv = qkv.reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, n, d)))
        x = x + self.drop(self.fc2(F.gelu(self.fc1(self.norm2(x)))))
        return x


class VideoMAE(nn.Module):
    def __init__(self, d, depth, heads, classes, frames, size, drop_path=0.1):
        super().__init__()
        self.patch = nn.Conv3d(3, d, kernel_size=(2, 16, 16), stride=(2, 16, 16))
        n = (frames // 2) * (size[0] // 16) * (size[1] // 16)
        self.register_buffer("pos", sinusoid_table(n, d), persistent=False)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList([Block(d, heads, r) for r in rates])
        self.fc_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = x + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.fc_norm(x.mean(1)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit-s", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--classes", type=int, default=400)
    ap.add_argument("--fused", action="store_true", help="AdamW(fused=True) instead of the default")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    assert torch.cuda.is_available(), "this benchmark needs a CUDA device"
    dev = torch.device("cuda")
    torch.manual_seed(0)
    d, depth, heads = PRESETS[a.model]
    model = VideoMAE(d, depth, heads, a.classes, a.frames, (a.size, a.size)).to(dev).train()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-4,
        fused=True if a.fused else None,
    )
    frames = torch.randint(0, 256, (a.batch, a.frames, a.size, a.size, 3), dtype=torch.uint8, device=dev)
    labels = torch.randint(0, a.classes, (a.batch,), device=dev)
    scale = torch.tensor([1.0 / (255.0 * s) for s in STD], device=dev)
    shift = torch.tensor([m / s for m, s in zip(MEAN, STD)], device=dev)

    def step():
        x = (frames.float() * scale - shift).permute(0, 4, 1, 2, 3)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
        y = torch.full((a.batch, a.classes), 0.1 / a.classes, device=dev)
        y.scatter_(1, labels[:, None], 0.9 + 0.1 / a.classes)
        loss = -(y * logits.float().log_softmax(-1)).sum(-1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    out = {
        "bench": "train-step",
        "implementation": "PyTorch eager" + (" (fused AdamW)" if a.fused else ""),
        "torch": torch.__version__,
        "model": a.model,
        "parameters": params,
        "batch": a.batch,
        "frames": a.frames,
        "size": [a.size, a.size],
        "device": torch.cuda.get_device_name(0),
        "precision": "bf16",
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
            f"PyTorch eager {a.model} batch {a.batch} x {a.frames}x{a.size}x{a.size}: "
            f"{out['step_ms']:.2f} ms/step, {out['clips_per_s']:.1f} clips/s"
        )
    assert math.isfinite(secs)


if __name__ == "__main__":
    main()
