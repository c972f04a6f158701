"""Round trips of scripts/convert_uniformer.py through its command line, bit for bit.

For each public checkpoint layout (mmaction2's `state_dict` with `backbone.` /
`cls_head.fc_cls.` and a `data_preprocessor.*` buffer; the official code's `model_state`
and `model` wrappers with bare names and `head.*`; a flat safetensors file), writes a
random reference UniFormer-S in that layout, converts it to the trainer's safetensors,
converts that back with --reverse (the command line run in this process), loads the result strictly into a fresh reference model
and checks that (a) the trainer's tensors equal the reference's bit for bit, (b) the
reloaded model's logits equal the original's exactly, (c) converting the reversed file
again gives identical tensors. Prints one JSON line per case; exits non-zero on any
failure.

usage: uniformer_roundtrip.py WORKDIR
"""

import contextlib
import io
import json
import os
import runpy
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(REPO, "scripts"))

from refmodels import uniformer  # noqa: E402

CONVERTER = os.path.join(REPO, "scripts", "convert_uniformer.py")


def run(*args):
    """The converter's command line, in this process (one torch import for all cases)."""
    argv, out = sys.argv, io.StringIO()
    sys.argv = [CONVERTER, *args]
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(CONVERTER, run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            sys.exit(f"convert_uniformer.py {' '.join(args)} failed: {e.code}")
    finally:
        sys.argv = argv
    return out.getvalue().strip()


def same(a, b):
    return set(a) == set(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def main():
    work = sys.argv[1]
    os.makedirs(work, exist_ok=True)
    torch.set_num_threads(1)
    model = uniformer.randomise(uniformer.build(4, 64, 64, 7), seed=3).eval()
    ref = model.state_dict()
    # Non-zero counters, as a trained checkpoint has.
    for k in ref:
        if k.endswith("num_batches_tracked"):
            ref[k].fill_(1234)
    bare = {k[len("backbone."):]: v for k, v in ref.items() if k.startswith("backbone.")}
    bare["head.weight"] = ref["cls_head.fc_cls.weight"]
    bare["head.bias"] = ref["cls_head.fc_cls.bias"]
    x = torch.randn(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = model(x)

    mm = dict(ref)
    mm["data_preprocessor.mean"] = torch.tensor([114.75, 114.75, 114.75]).view(3, 1, 1, 1)
    cases = [
        ("mmaction.pth", "mmaction", lambda p: torch.save({"meta": {"epoch": 1}, "state_dict": mm}, p)),
        ("official_model_state.pyth", "official", lambda p: torch.save({"model_state": bare, "epoch": 3}, p)),
        ("official_model.pth", "official", lambda p: torch.save({"model": bare}, p)),
        ("mmaction.safetensors", "mmaction", lambda p: save_file({k: v.contiguous() for k, v in ref.items()}, p)),
    ]
    failed = False
    for name, layout, write in cases:
        src = os.path.join(work, name)
        write(src)
        ours_path = os.path.join(work, name + ".ours.safetensors")
        run(src, ours_path)
        ours = load_file(ours_path)
        expect = {k: v for k, v in bare.items() if not k.endswith("num_batches_tracked")}
        tensors_equal = same(ours, expect)
        back = os.path.join(work, name + ".back.pth")
        run(ours_path, back, "--reverse", "--layout", layout)
        state = torch.load(back, map_location="cpu")
        state = state["state_dict" if layout == "mmaction" else "model_state"]
        fresh = uniformer.build(4, 64, 64, 7).eval()
        if layout == "mmaction":
            result = fresh.load_state_dict(state, strict=True)
        else:
            head = {"cls_head.fc_cls." + k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
            body = {"backbone." + k: v for k, v in state.items() if not k.startswith("head.")}
            result = fresh.load_state_dict({**body, **head}, strict=True)
        with torch.no_grad():
            diff = (fresh(x) - want).abs().max().item()
        again_path = os.path.join(work, name + ".again.safetensors")
        run(back, again_path)
        again_equal = same(load_file(again_path), ours)
        ok = tensors_equal and again_equal and diff == 0.0 and not result.missing_keys and not result.unexpected_keys
        failed |= not ok
        print(json.dumps({
            "case": name,
            "tensors": len(ours),
            "tensors_equal": tensors_equal,
            "reconverted_equal": again_equal,
            "missing": list(result.missing_keys),
            "unexpected": list(result.unexpected_keys),
            "diff": diff,
        }))
    # A tensor the converter does not know is an error that names it.
    bad = dict(bare)
    bad["blocks1.0.extra.weight"] = torch.zeros(1)
    bad_path = os.path.join(work, "bad.pth")
    torch.save({"model": bad}, bad_path)
    r = subprocess.run([sys.executable, CONVERTER, bad_path, os.path.join(work, "bad.safetensors")],
                       capture_output=True, text=True)
    named = r.returncode != 0 and "blocks1.0.extra.weight" in r.stderr and bad_path in r.stderr
    print(json.dumps({"case": "unknown tensor", "rejected_by_name": named}))
    failed |= not named
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
