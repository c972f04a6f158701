"""Reference outputs of pytorchvideo's X3D for the trainer's parity tests.

Builds the reference (scripts/refmodels/x3d.py: X3D-M's widths and depths unless told
otherwise), draws every weight and BatchNorm statistic from the seed, and writes into OUT:
  model.safetensors   the weights in the trainer's layout, through scripts/convert_x3d.py
  input.npy           [B, 3, T, H, W] fp32
  expected.npy        the reference's logits in eval mode (fp32)
With --train also:
  expected_train.npy  the logits of one train-mode forward (batch statistics; no dropout),
                      with an identity BatchNorm added where pytorchvideo's shortcut has
                      none (the trainer's, PySlowFast's, layout)
  train_stats.safetensors  every BatchNorm's running statistics after that forward
                      (momentum 0.1), in the trainer's names
It prints one JSON line: pytorchvideo's parameter count, whether the head kept
pytorchvideo's own pool, the pool kernel, the logits' size.

usage: x3d_reference.py OUT --frames T --height H --width W [--classes N] [--batch B]
       [--seed S] [--global-pool auto|yes|no] [--width-factor F --depth-factor F] [--train]
"""

import argparse
import copy
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))

from convert_x3d import to_ours  # noqa: E402
from refmodels import x3d  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--classes", type=int, default=400)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--global-pool", choices=["auto", "yes", "no"], default="auto")
    ap.add_argument("--width-factor", type=float, default=2.0)
    ap.add_argument("--depth-factor", type=float, default=2.2)
    ap.add_argument("--train", action="store_true")
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    pool = {"auto": None, "yes": True, "no": False}[a.global_pool]
    model = x3d.build(a.frames, a.height, a.width, a.classes, width_factor=a.width_factor,
                      depth_factor=a.depth_factor, global_pool=pool)
    x = torch.randn(a.batch, 3, a.frames, a.height, a.width)
    sample = torch.randn(4, 3, a.frames, a.height, a.width)
    x3d.randomise(model, a.seed, sample=sample)
    model.eval()
    with torch.no_grad():
        logits = model(x)

    os.makedirs(a.out, exist_ok=True)
    ours, added = to_ours(model.state_dict(), "reference")
    save_file(ours, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    np.save(os.path.join(a.out, "input.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(a.out, "expected.npy"), logits.numpy().astype(np.float32))
    if a.train:
        # The trainer's X3D has PySlowFast's BatchNorm on every projected shortcut;
        # pytorchvideo lacks one where the width is kept. An identity there changes no
        # eval output, but in train mode it normalises with the batch's statistics.
        trained = copy.deepcopy(model)
        x3d.add_shortcut_norms(trained)
        trained.train()
        with torch.no_grad():
            out = trained(x)
        np.save(os.path.join(a.out, "expected_train.npy"), out.numpy().astype(np.float32))
        stats, _ = to_ours(trained.state_dict(), "reference")
        stats = {k: v for k, v in stats.items() if k.endswith((".running_mean", ".running_var"))}
        save_file(stats, os.path.join(a.out, "train_stats.safetensors"), metadata={"format": "pt"})
    kernel = [int(k) for k in model.blocks[-1].pool.pool.kernel_size] if x3d.stock_head(model) else None
    print(json.dumps({
        "params": sum(p.numel() for p in model.parameters()),
        "identity_norms_added": added,
        "stock_head": x3d.stock_head(model),
        "pool_kernel": kernel,
        "final_map": list(x3d.final_map(a.frames, a.height, a.width)),
        "logits": list(logits.shape),
        "max_abs_logit": logits.abs().max().item(),
        "sample_spread": (logits[0] - logits[-1]).abs().max().item(),
    }))


if __name__ == "__main__":
    main()
