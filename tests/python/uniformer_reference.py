"""Reference logits of mmaction2's UniFormer for the Rust parity tests.

Builds the reference UniFormer-S (scripts/refmodels/uniformer.py: mmaction2's own backbone
file, an I3D-style head), gives every norm random scale, shift and running statistics,
converts its state dict with scripts/convert_uniformer.py into the trainer's layout and
writes OUT/model.safetensors, a fixed input OUT/input.npy [B, 3, T, H, W] and the
reference's eval-mode fp32 logits OUT/expected.npy.

usage: uniformer_reference.py OUT --frames T --height H --width W [--classes N]
       [--batch B] [--seed S] [--depth 3,4,8,3]
"""

import argparse
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(REPO, "scripts"))

import convert_uniformer  # noqa: E402
from refmodels import uniformer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--classes", type=int, default=400)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--depth", default="3,4,8,3")
    a = ap.parse_args()

    torch.set_num_threads(1)
    depth = [int(d) for d in a.depth.split(",")]
    model = uniformer.build(a.frames, a.height, a.width, a.classes, depth=depth)
    uniformer.randomise(model, a.seed)
    model.eval()
    ours, _ = convert_uniformer.convert(model.state_dict(), "reference model")
    os.makedirs(a.out, exist_ok=True)
    save_file(ours, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    g = torch.Generator().manual_seed(a.seed + 1)
    x = torch.randn(a.batch, 3, a.frames, a.height, a.width, generator=g)
    with torch.no_grad():
        y = model(x)
    np.save(os.path.join(a.out, "input.npy"), x.numpy())
    np.save(os.path.join(a.out, "expected.npy"), y.numpy())


if __name__ == "__main__":
    main()
