#!/usr/bin/env python3
"""Parameters and GFLOPs of the PMV-400 baselines at their inputs, counted on the reference
implementations (scripts/refmodels) with fvcore's FlopCountAnalysis, the counter PySlowFast
and the X3D/MViTv2/UniFormer papers report with (one multiply-add counts as one FLOP).

The count is for one view (one clip, one crop) at each input; the README's model table
quotes these numbers. Needs the test venv (scripts/setup.sh installs fvcore with
pytorchvideo).

usage: model_flops.py [--input 16x224x224] [--input 16x288x192] [--classes 400] [--json]
"""

import argparse
import importlib
import json
import logging
import os
import sys

import torch

# scripts/ on the path: the reference builders are scripts/refmodels/<model>.py.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# The reference module of each model (scripts/refmodels), imported when counted.
MODELS = {"x3d-m": "x3d", "mvit-v2-s": "mvit", "uniformer-s": "uniformer"}


def shape(text):
    t, h, w = (int(v) for v in text.split("x"))
    return (t, h, w)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", type=shape, action="append")
    ap.add_argument("--classes", type=int, default=400)
    ap.add_argument("--model", action="append", choices=sorted(MODELS))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    inputs = a.input or [(16, 224, 224), (16, 288, 192)]
    from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    rows = []
    for name in a.model or MODELS:
        for t, h, w in inputs:
            model = importlib.import_module(f"refmodels.{MODELS[name]}").build(t, h, w, a.classes).eval()
            params = sum(p.numel() for p in model.parameters())
            with torch.no_grad():
                count = FlopCountAnalysis(model, torch.zeros(1, 3, t, h, w))
                count.unsupported_ops_warnings(False)
                count.uncalled_modules_warnings(False)
                flops = count.total()
            rows.append({"model": name, "input": [t, h, w], "parameters": params, "gflops": flops / 1e9})
            if not a.json:
                print(f"{name:12} {t}x{h}x{w:<4} {params / 1e6:7.2f} M parameters {flops / 1e9:8.2f} GFLOPs")
    if a.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
