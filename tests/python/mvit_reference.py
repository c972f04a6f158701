"""Reference logits of torchvision's MViTv2-S for the Rust parity tests.

Builds torchvision's MViT with the MViTv2-S block settings for the given input size
(scripts/refmodels/mvit.py), randomises it (norms, biases, class token and position
tables included), and writes, in eval mode and fp32:
  OUT/model.safetensors  the weights in the trainer's layout (scripts/convert_mvit.py)
  OUT/input.npy          a fixed input [B, 3, T, H, W]
  OUT/expected.npy       torchvision's logits for it
It prints one JSON line: the size, parameter count and largest |logit|.

usage: mvit_reference.py OUT --frames T --height H --width W [--classes N] [--batch B]
       [--seed S]
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts")
sys.dont_write_bytecode = True  # leave no __pycache__ in scripts/
sys.path.insert(0, SCRIPTS)

import convert_mvit  # noqa: E402
from refmodels import mvit  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    model = mvit.build(a.frames, a.height, a.width, a.classes).eval()
    mvit.randomise(model, a.seed)
    x = torch.randn(a.batch, 3, a.frames, a.height, a.width, generator=torch.Generator().manual_seed(a.seed + 1))
    with torch.no_grad():
        logits = model(x)
    os.makedirs(a.out, exist_ok=True)
    save_file(convert_mvit.to_ours(model.state_dict()), os.path.join(a.out, "model.safetensors"))
    np.save(os.path.join(a.out, "input.npy"), x.numpy())
    np.save(os.path.join(a.out, "expected.npy"), logits.numpy())
    print(json.dumps({
        "input": [a.frames, a.height, a.width],
        "params": sum(p.numel() for p in model.parameters()),
        "max_abs_logit": logits.abs().max().item(),
    }))


if __name__ == "__main__":
    main()
