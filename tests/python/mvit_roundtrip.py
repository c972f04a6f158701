"""Round trips of scripts/convert_mvit.py, run as a user runs it (a subprocess).

1. A randomised torchvision MViTv2-S state dict (.pth, wrapped in {"model": ...} as
   training scripts save it) -> ours -> --reverse -> torchvision: every tensor
   bit-identical, the result loads strictly into a fresh torchvision model, and its
   logits equal the original's exactly.
2. The same weights under PySlowFast's names ({"model_state": ...}, .pyth) -> ours:
   identical to step 1's file; -> --reverse --slowfast: the PySlowFast names and values
   back exactly.
3. --input --square-tables: the weights of a T x H x W model converted for a taller input
   (OUT/resized.safetensors) load strictly into torchvision's model built for that input;
   the tables are the linear resampling the model applies itself. --input alone
   (OUT/resized-per-axis.safetensors, for the trainer's preset) resizes only the tables of
   the side that changed: the h tables, to the same values.
Prints one JSON line per case; exits non-zero on any difference.

usage: mvit_roundtrip.py OUT [--frames 4 --height 64 --width 64 --to-height 96]
"""

import argparse
import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "..", "..", "scripts")
sys.dont_write_bytecode = True  # leave no __pycache__ in scripts/
sys.path.insert(0, SCRIPTS)

import convert_mvit  # noqa: E402
from refmodels import mvit  # noqa: E402

CONVERTER = os.path.join(SCRIPTS, "convert_mvit.py")


def run(*args):
    r = subprocess.run([sys.executable, CONVERTER, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"convert_mvit.py {' '.join(args)} failed:\n{r.stdout}{r.stderr}")
    return r.stdout


def same(a, b, what):
    if set(a) != set(b):
        sys.exit(f"{what}: names differ: {sorted(set(a) ^ set(b))[:10]}")
    for k in a:
        if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape or not torch.equal(a[k], b[k]):
            sys.exit(f"{what}: {k} differs")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--to-height", type=int, default=96)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    p = lambda name: os.path.join(a.out, name)  # noqa: E731

    torch.manual_seed(0)
    model = mvit.build(a.frames, a.height, a.width, 7).eval()
    mvit.randomise(model, 0)
    ref = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"model": ref, "epoch": 3}, p("tv.pth"))
    run(p("tv.pth"), p("ours.safetensors"))
    run("--reverse", p("ours.safetensors"), p("back.pth"))
    back = torch.load(p("back.pth"), map_location="cpu")
    same(ref, back, "torchvision -> ours -> torchvision")
    fresh = mvit.build(a.frames, a.height, a.width, 7).eval()
    result = fresh.load_state_dict(back, strict=True)
    x = torch.randn(2, 3, a.frames, a.height, a.width)
    with torch.no_grad():
        diff = (fresh(x) - model(x)).abs().max().item()
    if diff != 0.0:
        sys.exit(f"logits after the round trip differ by {diff}")
    print(json.dumps({"case": "torchvision", "tensors": len(ref), "missing": len(result.missing_keys),
                      "unexpected": len(result.unexpected_keys), "logit_diff": diff}))

    slowfast = convert_mvit.to_slowfast(ref)
    torch.save({"model_state": slowfast, "cur_epoch": 3}, p("sf.pyth"))
    run(p("sf.pyth"), p("ours_sf.safetensors"))
    same(load_file(p("ours.safetensors")), load_file(p("ours_sf.safetensors")), "PySlowFast -> ours")
    run("--reverse", "--slowfast", p("ours_sf.safetensors"), p("back.pyth"))
    same(slowfast, torch.load(p("back.pyth"), map_location="cpu")["model_state"], "ours -> PySlowFast")
    print(json.dumps({"case": "pyslowfast", "tensors": len(slowfast), "cls_token": list(slowfast["cls_token"].shape)}))

    shape = f"{a.frames}x{a.to_height}x{a.width}"
    said = run(p("tv.pth"), p("resized.safetensors"), "--input", shape, "--square-tables")
    resized = load_file(p("resized.safetensors"))
    taller = mvit.build(a.frames, a.to_height, a.width, 7)
    taller.load_state_dict(resized, strict=True)
    lines = [line for line in said.splitlines() if line.startswith("resized ")]
    for k, v in resized.items():
        if ".rel_pos_" in k and v.shape != ref[k].shape:
            want = torch.nn.functional.interpolate(ref[k].t()[None], size=v.shape[0], mode="linear")[0].t()
            if not torch.equal(v, want.contiguous()):
                sys.exit(f"{k}: not the linear resampling")
        elif not torch.equal(v, ref[k]):
            sys.exit(f"{k} changed though its shape did not")
    if not lines:
        sys.exit("--input resized nothing")
    run(p("tv.pth"), p("resized-per-axis.safetensors"), "--input", shape)
    per_axis = load_file(p("resized-per-axis.safetensors"))
    for k, v in per_axis.items():
        want = resized[k] if not k.endswith(".rel_pos_w") else ref[k]
        if not torch.equal(v, want):
            sys.exit(f"{k}: per-axis sizing differs from the square sizing's h table or the original w table")
    print(json.dumps({"case": "input", "input": shape, "resized": len(lines), "first": lines[0]}))


if __name__ == "__main__":
    main()
