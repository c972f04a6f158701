"""scripts/convert_x3d.py against pytorchvideo: random X3D models (X3D-M, and a narrow,
shallow one) are saved as the torch.hub checkpoints are ({"model_state": ...} in a .pth),
converted to the trainer's layout and back with the converter run as a program, and
loaded strictly into a fresh pytorchvideo model: every tensor must come back bit for bit
and the logits must be identical. Also checked: a PySlowFast .pyth (our names, with
num_batches_tracked) converts to exactly its tensors less num_batches_tracked, and
--reverse refuses, naming the tensor, a shortcut BatchNorm that is not the identity.

usage: x3d_roundtrip.py WORK_DIR   (one JSON line per case, then {"ok": true})
"""

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
SCRIPTS = os.path.join(HERE, "..", "..", "scripts")
sys.path.insert(0, SCRIPTS)

from refmodels import x3d  # noqa: E402

CONVERTER = os.path.join(SCRIPTS, "convert_x3d.py")


def convert(*args, ok=True):
    r = subprocess.run([sys.executable, CONVERTER, *args], capture_output=True, text=True)
    if ok and r.returncode != 0:
        raise SystemExit(f"convert_x3d.py {' '.join(args)} failed:\n{r.stderr}")
    if not ok and r.returncode == 0:
        raise SystemExit(f"convert_x3d.py {' '.join(args)} should have failed:\n{r.stdout}")
    return r


def case(work, name, **kw):
    model = x3d.build(4, 32, 32, 5, **kw)
    x = torch.randn(2, 3, 4, 32, 32)
    x3d.randomise(model, 3, sample=x)
    model.eval()
    # A checkpoint carries the count of batches each norm has seen.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.num_batches_tracked.fill_(0)
    sd = model.state_dict()
    src = os.path.join(work, f"{name}.pth")
    torch.save({"model_state": sd}, src)
    ours = os.path.join(work, f"{name}.safetensors")
    convert(src, ours)
    back = os.path.join(work, f"{name}_back.pth")
    convert(ours, back, "--reverse")
    restored = x3d.build(4, 32, 32, 5, **kw)
    result = restored.load_state_dict(torch.load(back, weights_only=True)["model_state"], strict=True)
    assert not result.missing_keys and not result.unexpected_keys, result
    restored.eval()
    new = restored.state_dict()
    assert sorted(new) == sorted(sd)
    differs = [k for k in sd if not torch.equal(sd[k], new[k]) or sd[k].dtype != new[k].dtype]
    assert not differs, f"{name}: changed by the round trip: {differs[:5]}"
    with torch.no_grad():
        diff = (model(x) - restored(x)).abs().max().item()
    assert diff == 0.0, f"{name}: logits differ by {diff}"
    tensors = load_file(ours)
    print(json.dumps({"case": name, "pytorchvideo_tensors": len(sd), "ours": len(tensors), "diff": diff}))
    return ours


def pyslowfast(work, ours):
    """A .pyth of PySlowFast names (with num_batches_tracked) converts to its tensors."""
    tensors = load_file(ours)
    state = dict(tensors)
    for k in list(tensors):
        if k.endswith(".running_var"):
            state[k[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(7)
    src = os.path.join(work, "slowfast.pyth")
    torch.save({"model_state": state, "epoch": 300}, src)
    out = os.path.join(work, "slowfast.safetensors")
    convert(src, out)
    got = load_file(out)
    assert sorted(got) == sorted(tensors)
    assert all(torch.equal(got[k], tensors[k]) for k in got)
    print(json.dumps({"case": "pyslowfast", "tensors": len(got)}))


def refuses_a_real_shortcut_norm(work, ours):
    tensors = load_file(ours)
    name = "s2.pathway0_res0.branch1_bn.bias"
    tensors[name] = tensors[name] + 0.5
    bad = os.path.join(work, "trained.safetensors")
    save_file(tensors, bad)
    r = convert(bad, os.path.join(work, "trained.pth"), "--reverse", ok=False)
    assert "s2.pathway0_res0.branch1_bn" in r.stderr and "trained.safetensors" in r.stderr, r.stderr
    print(json.dumps({"case": "non-identity shortcut norm refused", "error": r.stderr.strip()}))


def main():
    work = sys.argv[1]
    os.makedirs(work, exist_ok=True)
    torch.manual_seed(0)
    ours = case(work, "x3d_m")
    case(work, "narrow", width_factor=1.0, depth_factor=1.0, stem_dim_in=8, head_dim_out=64)
    pyslowfast(work, ours)
    refuses_a_real_shortcut_norm(work, ours)
    print(json.dumps({"ok": True}))


if __name__ == "__main__":
    main()
