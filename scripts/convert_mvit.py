#!/usr/bin/env python3
"""Converts an MViTv2 checkpoint into the safetensors layout the trainer's `mvit` model
loads (`pmv-data train --init OUT`), and back.

The trainer's parameter names are torchvision's (`conv_proj.*`, `pos_encoding.class_token`,
`blocks.N.attn.{qkv,project.0,pool_{q,k,v}.pool,pool_{q,k,v}.norm_act.0,rel_pos_{t,h,w}}`,
`blocks.N.{norm1,norm2,project,mlp.0,mlp.3}`, `norm.*`, `head.1.*`), so a torchvision
`mvit_v2_s` state dict (.pth) converts by name. PySlowFast's MViTv2 checkpoints (.pyth,
tensors under `model_state`) are renamed: `patch_embed.proj` -> `conv_proj`, `cls_token`
[1, 1, C] -> `pos_encoding.class_token` [C], `attn.pool_q` -> `attn.pool_q.pool`,
`attn.norm_q` -> `attn.pool_q.norm_act.0` (likewise k, v), `attn.proj` -> `attn.project.0`,
`blocks.N.proj` -> `blocks.N.project`, `mlp.fc1`/`mlp.fc2` -> `mlp.0`/`mlp.3`,
`head.projection` -> `head.1`. Values are copied unchanged.

The relative-position tables are sized for the input a checkpoint was trained at
(16x224x224 for the public MViTv2-S weights). `--input TxHxW` resizes every table whose
length differs for another training input with the linear interpolation (no corner
alignment) the model itself applies at run time, and prints which; that needs the
MViTv2-S block settings, taken from torchvision. The tables are sized as the trainer's
`mvit-v2-s` preset sizes them: each spatial table from its own side (PMV-400's layout;
at 16x288x192 the first block's h table has 143 rows and its w table 95).
`--square-tables` sizes both from the longer side instead, as torchvision does (a
torchvision MViT built for that input then loads the result strictly).

usage: convert_mvit.py CHECKPOINT.{pth,pyth,safetensors} OUT[.safetensors] [--input TxHxW
                       [--square-tables]] [--trust-pickle]
       convert_mvit.py --reverse OURS.safetensors OUT.pth [--slowfast]
OUT without a .safetensors suffix is a folder that receives model.safetensors.
--reverse writes a torchvision state dict (torch.save), or with --slowfast a PySlowFast
checkpoint ({"model_state": ...}). Needs torch, torchvision and safetensors (the
repository's .venv has them).
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


# Our (torchvision) names. Anything else is refused.
OURS = re.compile(
    r"^(conv_proj\.(weight|bias)"
    r"|pos_encoding\.class_token"
    r"|norm\.(weight|bias)"
    r"|head\.1\.(weight|bias)"
    r"|blocks\.\d+\.(norm1|norm2|project|mlp\.0|mlp\.3)\.(weight|bias)"
    r"|blocks\.\d+\.attn\.(qkv|project\.0)\.(weight|bias)"
    r"|blocks\.\d+\.attn\.pool_[qkv]\.pool\.weight"
    r"|blocks\.\d+\.attn\.pool_[qkv]\.norm_act\.0\.(weight|bias)"
    r"|blocks\.\d+\.attn\.rel_pos_[thw])$"
)

# PySlowFast name pieces -> ours, applied to the part after `blocks.N.`.
SLOWFAST_BLOCK = [
    (r"^attn\.pool_([qkv])\.weight$", r"attn.pool_\1.pool.weight"),
    (r"^attn\.norm_([qkv])\.(weight|bias)$", r"attn.pool_\1.norm_act.0.\2"),
    (r"^attn\.proj\.(weight|bias)$", r"attn.project.0.\1"),
    (r"^attn\.(qkv\.(weight|bias)|rel_pos_[thw])$", r"attn.\1"),
    (r"^proj\.(weight|bias)$", r"project.\1"),
    (r"^mlp\.fc1\.(weight|bias)$", r"mlp.0.\1"),
    (r"^mlp\.fc2\.(weight|bias)$", r"mlp.3.\1"),
    (r"^(norm[12]\.(weight|bias))$", r"\1"),
]
SLOWFAST_TOP = {
    "patch_embed.proj.weight": "conv_proj.weight",
    "patch_embed.proj.bias": "conv_proj.bias",
    "cls_token": "pos_encoding.class_token",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
    "head.projection.weight": "head.1.weight",
    "head.projection.bias": "head.1.bias",
}
OURS_BLOCK_TO_SLOWFAST = [
    (r"^attn\.pool_([qkv])\.pool\.weight$", r"attn.pool_\1.weight"),
    (r"^attn\.pool_([qkv])\.norm_act\.0\.(weight|bias)$", r"attn.norm_\1.\2"),
    (r"^attn\.project\.0\.(weight|bias)$", r"attn.proj.\1"),
    (r"^attn\.(qkv\.(weight|bias)|rel_pos_[thw])$", r"attn.\1"),
    (r"^project\.(weight|bias)$", r"proj.\1"),
    (r"^mlp\.0\.(weight|bias)$", r"mlp.fc1.\1"),
    (r"^mlp\.3\.(weight|bias)$", r"mlp.fc2.\1"),
    (r"^(norm[12]\.(weight|bias))$", r"\1"),
]


class ConvertError(Exception):
    """A checkpoint this converter cannot turn into the other layout."""


def layout(state, path):
    if "conv_proj.weight" in state:
        return "torchvision"
    if "patch_embed.proj.weight" in state:
        return "pyslowfast"
    raise ConvertError(f"{path}: neither torchvision (conv_proj.weight) nor PySlowFast "
                       "(patch_embed.proj.weight) MViT")


def rename_blocks(name, rules):
    m = re.match(r"^blocks\.(\d+)\.(.+)$", name)
    if not m:
        return None
    i, rest = m.groups()
    for pattern, repl in rules:
        if re.match(pattern, rest):
            return f"blocks.{i}." + re.sub(pattern, repl, rest)
    return None


def from_slowfast(state, path):
    out, unknown = {}, []
    for key, t in state.items():
        if key in SLOWFAST_TOP:
            name = SLOWFAST_TOP[key]
            if key == "cls_token":
                t = t.reshape(-1)
        else:
            name = rename_blocks(key, SLOWFAST_BLOCK)
        if name is None:
            unknown.append(key)
            continue
        out[name] = t
    if unknown:
        raise ConvertError(f"{path}: PySlowFast tensors with no counterpart here (absolute "
                           f"position tables, another head?): {', '.join(sorted(unknown)[:20])}")
    return out


def to_slowfast(state):
    back = {v: k for k, v in SLOWFAST_TOP.items()}
    out = {}
    for key, t in state.items():
        if key in back:
            name = back[key]
            if key == "pos_encoding.class_token":
                t = t.reshape(1, 1, -1)
        else:
            name = rename_blocks(key, OURS_BLOCK_TO_SLOWFAST)
        out[name] = t
    return out


def check_ours(state, path):
    unknown = sorted(k for k in state if not OURS.match(k))
    if unknown:
        raise ConvertError(f"{path}: tensors the trainer's MViT does not have: {', '.join(unknown[:20])}")
    for need in ("conv_proj.weight", "pos_encoding.class_token", "norm.weight", "head.1.weight"):
        if need not in state:
            raise ConvertError(f"{path}: {need} is missing")


def to_ours(state, path="<state dict>"):
    """A torchvision or PySlowFast MViT state dict -> our names (contiguous fp tensors)."""
    if layout(state, path) == "pyslowfast":
        state = from_slowfast(state, path)
    check_ours(state, path)
    return {k: v.detach().contiguous() for k, v in state.items()}


def parse_input(text):
    try:
        t, h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ConvertError(f"--input {text}: expected TxHxW, e.g. 16x288x192") from None
    if t <= 0 or h <= 0 or w <= 0 or t % 2 or h % 32 or w % 32:
        raise ConvertError(f"--input {text}: frames must be a multiple of 2, height and width of 32")
    return t, h, w


def resample(table, length):
    """Linear interpolation of a [L, C] table to `length` rows, as the model does."""
    return (torch.nn.functional.interpolate(table.t().unsqueeze(0).float(), size=length, mode="linear")
            .squeeze(0).t().to(table.dtype).contiguous())


def resize_tables(state, frames, height, width, path="<state dict>", square=False):
    """Resizes the relative-position tables for MViTv2-S trained at frames x height x
    width, each spatial table from its own side (or, `square`, both from the longer side
    as torchvision sizes them); returns the names resized as 'name (old -> new)'."""
    from refmodels import mvit

    classes = state["head.1.weight"].shape[0]

    def shapes_at(h, w):
        with torch.device("meta"):
            return {k: tuple(v.shape) for k, v in mvit.build(frames, h, w, classes).state_dict().items()}

    shapes = shapes_at(height, width)
    if not square:
        # torchvision sizes both tables from the longer side: a square model of each
        # side gives that side's table.
        by_h, by_w = shapes_at(height, height), shapes_at(width, width)
        for k in shapes:
            if k.endswith(".rel_pos_h"):
                shapes[k] = by_h[k]
            elif k.endswith(".rel_pos_w"):
                shapes[k] = by_w[k]
    missing = sorted(set(shapes) - set(state))
    extra = sorted(set(state) - set(shapes))
    if missing or extra:
        raise ConvertError(f"{path}: not MViTv2-S (missing {missing[:10]}, unexpected {extra[:10]}); "
                           "--input knows only MViTv2-S")
    done = []
    for k, shape in shapes.items():
        have = tuple(state[k].shape)
        if have == shape:
            continue
        if ".rel_pos_" in k and have[1:] == shape[1:]:
            state[k] = resample(state[k], shape[0])
            done.append(f"{k} ({have[0]} -> {shape[0]})")
        else:
            raise ConvertError(f"{path}: {k} is {list(have)}, MViTv2-S has {list(shape)}")
    return done


def out_file(out):
    return out if out.endswith(".safetensors") else os.path.join(out, "model.safetensors")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="read a checkpoint holding Python objects besides tensors (runs code from it)")
    ap.add_argument("--input", help="TxHxW the converted model will train at (resizes tables)")
    ap.add_argument("--square-tables", action="store_true",
                    help="with --input: both spatial tables from the longer side, as torchvision")
    ap.add_argument("--reverse", action="store_true", help="ours -> torchvision state dict")
    ap.add_argument("--slowfast", action="store_true", help="with --reverse: PySlowFast names")
    a = ap.parse_args()
    try:
        state = torch_checkpoint.state_dict(a.checkpoint, a.trust_pickle)
        if a.reverse:
            check_ours(state, a.checkpoint)
            if a.input:
                done = resize_tables(state, *parse_input(a.input), path=a.checkpoint, square=a.square_tables)
                for d in done:
                    print(f"resized {d}")
            if a.slowfast:
                torch.save({"model_state": to_slowfast(state)}, a.out)
                what = "PySlowFast checkpoint (model_state)"
            else:
                torch.save(state, a.out)
                what = "torchvision state dict"
            print(f"{a.checkpoint}: {len(state)} tensors -> {what} {a.out}")
            return
        kind = layout(state, a.checkpoint)
        tensors = to_ours(state, a.checkpoint)
        if a.input:
            done = resize_tables(tensors, *parse_input(a.input), path=a.checkpoint, square=a.square_tables)
            for d in done:
                print(f"resized {d}")
            if not done:
                print("no table needed resizing")
        dest = out_file(a.out)
        if os.path.dirname(dest):
            os.makedirs(os.path.dirname(dest), exist_ok=True)
        save_file(tensors, dest, metadata={"format": "pt"})
        blocks = len({k.split(".")[1] for k in tensors if k.startswith("blocks.")})
        classes = tensors["head.1.weight"].shape[0]
        print(f"{a.checkpoint}: {kind} MViT, {blocks} blocks, {classes} classes, "
              f"{len(tensors)} tensors -> {dest}")
    except (ConvertError, torch_checkpoint.CheckpointError) as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
