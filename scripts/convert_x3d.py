#!/usr/bin/env python3
"""Converts X3D checkpoints between pytorchvideo's layout and the trainer's (PySlowFast's
parameter names), in both directions, without changing any value.

pytorchvideo -> ours (the default): a pytorchvideo X3D state dict (`create_x3d`, the
torch.hub `x3d_xs/s/m/l` checkpoints, whose weights sit under "model_state") becomes
OUT as safetensors with PySlowFast's names: the stem's `conv_t` (the 1x3x3 spatial
convolution) is our `conv_xy` and its `conv_xy` (the 5x1x1 temporal one) our `conv`;
blocks.{1-4}.res_blocks.{i} are s{2-5}.pathway0_res{i}; the head's pre_conv/pre_norm/
post_conv/proj are head.conv_5/conv_5_bn/lin_5/projection; `num_batches_tracked` is
dropped. pytorchvideo has no BatchNorm on a shortcut whose width does not change (stage 1
block 0, 24->24 at stride 2, in X3D-M); ours has one, so the converter writes an identity
there (γ=1, β=0, mean=0, var=1-1e-5, so that sqrt(var + eps) = 1).

A PySlowFast checkpoint (.pyth, weights under "model_state", already our names) is
written as it is, less `num_batches_tracked`.

--reverse: ours -> pytorchvideo, saved as a .pth holding {"model_state": state dict} (or
as safetensors when OUT ends in .safetensors), with `num_batches_tracked` = 0 for every
BatchNorm, so `load_state_dict(strict=True)` accepts it. A shortcut BatchNorm that
pytorchvideo lacks is dropped only when it is the identity (to float tolerance); any
other is an error naming the tensor: such a model (trained with PySlowFast or here) has
no pytorchvideo equivalent.

usage: convert_x3d.py CHECKPOINT OUT [--reverse] [--trust-pickle]
  CHECKPOINT: .pth / .pyth / .pt (a state dict, or one under "model_state",
  "state_dict", "model" or "module") or .safetensors. OUT: a file, or a directory that
  receives model.safetensors (model.pth with --reverse).
Needs torch and safetensors (the repository's .venv has both).
"""

import argparse
import os
import re
import sys

import torch
from safetensors.torch import save_file

sys.dont_write_bytecode = True  # leave no __pycache__ in scripts/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_checkpoint  # noqa: E402

BN = ("weight", "bias", "running_mean", "running_var")
EPS = 1e-5
# pytorchvideo part of a bottleneck -> ours (inside branch2).
BRANCH2 = {
    "conv_a.weight": "a.weight",
    "conv_b.weight": "b.weight",
    "conv_c.weight": "c.weight",
    "norm_b.1.block.0.weight": "se.fc1.weight",
    "norm_b.1.block.0.bias": "se.fc1.bias",
    "norm_b.1.block.2.weight": "se.fc2.weight",
    "norm_b.1.block.2.bias": "se.fc2.bias",
}
for _p in BN:
    BRANCH2[f"norm_a.{_p}"] = f"a_bn.{_p}"
    BRANCH2[f"norm_b.0.{_p}"] = f"b_bn.{_p}"
    BRANCH2[f"norm_c.{_p}"] = f"c_bn.{_p}"
FIXED = {
    "blocks.0.conv.conv_t.weight": "s1.pathway0_stem.conv_xy.weight",
    "blocks.0.conv.conv_xy.weight": "s1.pathway0_stem.conv.weight",
    "blocks.5.pool.pre_conv.weight": "head.conv_5.weight",
    "blocks.5.pool.post_conv.weight": "head.lin_5.weight",
    "blocks.5.proj.weight": "head.projection.weight",
    "blocks.5.proj.bias": "head.projection.bias",
}
for _p in BN:
    FIXED[f"blocks.0.norm.{_p}"] = f"s1.pathway0_stem.bn.{_p}"
    FIXED[f"blocks.5.pool.pre_norm.{_p}"] = f"head.conv_5_bn.{_p}"
FIXED_BACK = {v: k for k, v in FIXED.items()}
BRANCH2_BACK = {v: k for k, v in BRANCH2.items()}


class ConvertError(Exception):
    """A checkpoint this converter cannot convert; the message names file and tensor."""


def layout(state, path):
    """'pytorchvideo' or 'ours' (PySlowFast's names)."""
    if any(k.startswith("blocks.") for k in state):
        return "pytorchvideo"
    if any(k.startswith("s1.pathway0_stem.") for k in state):
        return "ours"
    raise ConvertError(f"{path}: neither pytorchvideo's X3D (blocks.*) nor PySlowFast's "
                       f"(s1.pathway0_stem.*); first tensor: {next(iter(state))}")


def to_ours(state, path):
    """pytorchvideo names -> ours; adds the identity shortcut BatchNorms pytorchvideo lacks.
    Returns (tensors, number of identity BatchNorms added)."""
    out, unknown = {}, []
    for key, t in state.items():
        if key.endswith(".num_batches_tracked"):
            continue
        name = FIXED.get(key)
        m = re.match(r"blocks\.([1-4])\.res_blocks\.(\d+)\.(.+)$", key)
        if name is None and m:
            s, i, part = m.groups()
            base = f"s{int(s) + 1}.pathway0_res{i}"
            if part == "branch1_conv.weight":
                name = f"{base}.branch1.weight"
            elif part.startswith("branch1_norm.") and part.split(".", 1)[1] in BN:
                name = f"{base}.branch1_bn.{part.split('.', 1)[1]}"
            elif part.startswith("branch2.") and part[len("branch2."):] in BRANCH2:
                name = f"{base}.branch2.{BRANCH2[part[len('branch2.'):]]}"
        if name is None:
            unknown.append(key)
            continue
        out[name] = t.contiguous()
    if unknown:
        raise ConvertError(f"{path}: tensors with no place in the trainer's X3D: "
                           + ", ".join(sorted(unknown)[:20]))
    added = 0
    for name, t in list(out.items()):
        if name.endswith(".branch1.weight"):
            bn = name[: -len(".branch1.weight")] + ".branch1_bn"
            if f"{bn}.weight" not in out:
                c = t.shape[0]
                out[f"{bn}.weight"] = torch.ones(c, dtype=t.dtype)
                out[f"{bn}.bias"] = torch.zeros(c, dtype=t.dtype)
                out[f"{bn}.running_mean"] = torch.zeros(c, dtype=t.dtype)
                out[f"{bn}.running_var"] = torch.full((c,), 1.0 - EPS, dtype=t.dtype)
                added += 1
    return out, added


def is_identity(bn, tensors):
    """Whether a BatchNorm's eval transform is y = x (to float tolerance)."""
    missing = [f"{bn}.{p}" for p in BN if f"{bn}.{p}" not in tensors]
    if missing:
        raise ConvertError(f"missing {', '.join(missing)}")
    w, b, mean, var = (tensors[f"{bn}.{p}"].double() for p in BN)
    scale = w / torch.sqrt(var + EPS)
    return bool(torch.allclose(scale, torch.ones_like(scale), rtol=0, atol=1e-6)
                and torch.allclose(b - mean * scale, torch.zeros_like(b), rtol=0, atol=1e-6))


def to_pytorchvideo(state, path):
    """Ours -> pytorchvideo names, num_batches_tracked added. Returns (tensors, the
    identity shortcut BatchNorms dropped)."""
    out, unknown, dropped = {}, [], []
    for key, t in state.items():
        if key.endswith(".num_batches_tracked"):
            continue
        name = FIXED_BACK.get(key)
        m = re.match(r"s([2-5])\.pathway0_res(\d+)\.(.+)$", key)
        if name is None and m:
            s, i, part = m.groups()
            base = f"blocks.{int(s) - 1}.res_blocks.{i}"
            if part == "branch1.weight":
                name = f"{base}.branch1_conv.weight"
            elif part.startswith("branch1_bn.") and part.split(".", 1)[1] in BN:
                w = state.get(f"s{s}.pathway0_res{i}.branch1.weight")
                if w is not None and w.shape[0] == w.shape[1]:
                    # pytorchvideo has no norm on a shortcut that keeps the width.
                    bn = key.rsplit(".", 1)[0]
                    try:
                        identity = is_identity(bn, state)
                    except ConvertError as e:
                        raise ConvertError(f"{path}: {e}") from e
                    if not identity:
                        raise ConvertError(
                            f"{path}: {bn} (the BatchNorm on a shortcut that keeps its width) "
                            "is not the identity, and pytorchvideo's X3D has no norm there: "
                            "this model has no pytorchvideo equivalent")
                    if bn not in dropped:
                        dropped.append(bn)
                    continue
                name = f"{base}.branch1_norm.{part.split('.', 1)[1]}"
            elif part.startswith("branch2.") and part[len("branch2."):] in BRANCH2_BACK:
                name = f"{base}.branch2.{BRANCH2_BACK[part[len('branch2.'):]]}"
        if name is None:
            unknown.append(key)
            continue
        out[name] = t.contiguous()
    if unknown:
        raise ConvertError(f"{path}: tensors pytorchvideo's X3D has no place for: "
                           + ", ".join(sorted(unknown)[:20]))
    for name in [n for n in out if n.endswith(".running_var")]:
        out[name[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return out, dropped


def describe(ours):
    """One line on the network the tensors (our names) make."""
    depths = []
    for s in range(2, 6):
        idx = {int(m.group(1)) for n in ours for m in [re.match(rf"s{s}\.pathway0_res(\d+)\.", n)] if m}
        depths.append(max(idx) + 1 if idx else 0)
    stem = ours["s1.pathway0_stem.conv_xy.weight"].shape[0]
    widths = [ours[f"s{s}.pathway0_res0.branch2.c.weight"].shape[0] for s in range(2, 6)
              if f"s{s}.pathway0_res0.branch2.c.weight" in ours]
    classes = ours["head.projection.weight"].shape[0] if "head.projection.weight" in ours else "?"
    return f"stem {stem}, stage widths {widths}, depths {depths}, {classes} classes"


def output_path(out, default_name):
    if os.path.isdir(out) or not os.path.splitext(out)[1]:
        os.makedirs(out, exist_ok=True)
        return os.path.join(out, default_name)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    return out


def convert_file(src, out, reverse=False, trust=False):
    """Converts CHECKPOINT `src` into `out`; returns the line main prints. `trust`: read a
    pickle that holds more than tensors (scripts/torch_checkpoint.py)."""
    state = torch_checkpoint.state_dict(src, trust)
    kind = layout(state, src)
    if reverse:
        if kind != "ours":
            raise ConvertError(f"{src}: --reverse takes the trainer's X3D (s1.pathway0_stem.*), "
                               "this is pytorchvideo's already")
        pv, dropped = to_pytorchvideo(state, src)
        dest = output_path(out, "model.pth")
        if dest.endswith(".safetensors"):
            save_file(pv, dest, metadata={"format": "pt"})
        else:
            torch.save({"model_state": pv}, dest)
        note = f"; dropped identity shortcut norms {', '.join(dropped)}" if dropped else ""
        return f"{src}: X3D ({describe(state)}) -> pytorchvideo {dest} ({len(pv)} tensors{note})"
    if kind == "pytorchvideo":
        ours, added = to_ours(state, src)
        note = f", {added} identity shortcut norm(s) added" if added else ""
    else:
        ours = {k: v.contiguous() for k, v in state.items() if not k.endswith(".num_batches_tracked")}
        note = ", PySlowFast names kept"
    dest = output_path(out, "model.safetensors")
    save_file(ours, dest, metadata={"format": "pt"})
    source = "pytorchvideo" if kind == "pytorchvideo" else "PySlowFast-named"
    return f"{src}: {source} X3D ({describe(ours)}) -> {dest} ({len(ours)} tensors{note})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="read a checkpoint holding Python objects besides tensors (runs code from it)")
    ap.add_argument("--reverse", action="store_true", help="ours -> pytorchvideo")
    a = ap.parse_args()
    try:
        print(convert_file(a.checkpoint, a.out, a.reverse, a.trust_pickle))
    except (ConvertError, torch_checkpoint.CheckpointError) as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
