#!/usr/bin/env python3
"""Converts a UniFormer video checkpoint into the trainer's layout (model.safetensors, which
`pmv-data train --init` loads) and, with --reverse, back into a reference layout.

Reads the two public layouts:
  mmaction2 (`state_dict` wrapper): `backbone.<name>` and `cls_head.fc_cls.{weight,bias}`;
      `data_preprocessor.*` (the input normalisation) is dropped;
  the official UniFormer code (github.com/Sense-X/UniFormer, video_classification;
      `model_state` or `model` wrapper, or none): bare backbone names and `head.*`.
The trainer's names are the official ones: `patch_embed1.proj.weight`,
`blocks1.0.pos_embed.weight`, `blocks3.0.attn.qkv.weight`, `norm.running_mean`, ...,
`head.weight`. BatchNorm `num_batches_tracked` counters are dropped (the trainer keeps
none); --reverse writes them as 0. Tensors are copied bit for bit, dtype kept.

Note: the official code builds its attention blocks' LayerNorms with eps 1e-6, mmaction2
with 1e-5; the weights are the same either way.

usage: convert_uniformer.py CHECKPOINT OUT [--reverse] [--layout mmaction|official] [--trust-pickle]
  CHECKPOINT  .pth/.pyth/.pt (torch.load) or .safetensors
  OUT         forward: a .safetensors file, or a folder that gets model.safetensors;
              --reverse: .pth (wrapped as the layout's checkpoints are) or .safetensors
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


# The trainer's names (the official layout without num_batches_tracked).
OURS = re.compile(
    r"^(patch_embed[1-4]\.(proj|norm)\.(weight|bias)"
    r"|blocks[12]\.\d+\.(pos_embed|conv1|conv2|attn|mlp\.fc1|mlp\.fc2)\.(weight|bias)"
    r"|blocks[12]\.\d+\.norm[12]\.(weight|bias|running_mean|running_var)"
    r"|blocks[34]\.\d+\.(pos_embed|norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)"
    r"|norm\.(weight|bias|running_mean|running_var)"
    r"|head\.(weight|bias))$"
)


class ConvertError(Exception):
    pass


def layout_of(state):
    return "mmaction" if any(k.startswith(("backbone.", "cls_head.")) for k in state) else "official"


def convert(state, source="checkpoint"):
    """Reference state dict (either layout) -> (ours, dropped names)."""
    mm = layout_of(state) == "mmaction"
    out, dropped, unknown = {}, [], []
    for key, t in state.items():
        name = key
        if mm:
            if key.startswith("data_preprocessor."):
                dropped.append(key)
                continue
            if key.startswith("backbone."):
                name = key[len("backbone."):]
            elif key.startswith("cls_head.fc_cls."):
                name = "head." + key[len("cls_head.fc_cls."):]
            else:
                unknown.append(key)
                continue
        if name.endswith(".num_batches_tracked"):
            dropped.append(key)
            continue
        if not OURS.match(name):
            unknown.append(key)
            continue
        out[name] = t.detach().contiguous()
    if unknown:
        raise ConvertError(f"{source}: tensors this converter does not know: " + ", ".join(sorted(unknown)[:20]))
    for need in ("patch_embed1.proj.weight", "norm.running_var", "head.weight"):
        if need not in out:
            raise ConvertError(f"{source}: missing tensor {need}")
    w, b = out["head.weight"], out.get("head.bias")
    if b is None or w.dim() != 2 or b.shape != (w.shape[0],) or w.shape[1] != out["norm.weight"].shape[0]:
        raise ConvertError(f"{source}: head.weight {tuple(w.shape)} / head.bias does not fit the final norm")
    return out, dropped


def reverse(ours, layout="mmaction"):
    """Our state dict -> the reference layout, BatchNorm counters as 0."""
    out = {}
    prefix = "backbone." if layout == "mmaction" else ""
    for name, t in ours.items():
        if name.startswith("head."):
            key = ("cls_head.fc_cls." if layout == "mmaction" else "head.") + name[len("head."):]
        else:
            key = prefix + name
        out[key] = t
        if name.endswith(".running_var"):
            base = key[: -len("running_var")]
            out[base + "num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return out


def count_blocks(names):
    depth = []
    for s in range(1, 5):
        idx = {int(m.group(1)) for n in names for m in [re.match(rf"blocks{s}\.(\d+)\.", n)] if m}
        depth.append(max(idx) + 1 if idx else 0)
    return depth


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="read a checkpoint holding Python objects besides tensors (runs code from it)")
    ap.add_argument("--reverse", action="store_true", help="ours -> reference layout")
    ap.add_argument("--layout", choices=["mmaction", "official"], default="mmaction",
                    help="the reference layout --reverse writes (default mmaction)")
    a = ap.parse_args()
    try:
        if a.reverse:
            # Checks the names and the head (and takes any layout, ours included).
            ours, _ = convert(torch_checkpoint.state_dict(a.checkpoint, a.trust_pickle), a.checkpoint)
            ref = reverse(ours, a.layout)
            if a.out.endswith(".safetensors"):
                save_file(ref, a.out, metadata={"format": "pt"})
            else:
                torch.save({"state_dict" if a.layout == "mmaction" else "model_state": ref}, a.out)
            print(f"{a.checkpoint} -> {a.out}: {len(ref)} tensors in the {a.layout} layout "
                  f"({sum(n.endswith('num_batches_tracked') for n in ref)} num_batches_tracked set to 0)")
            return
        state = torch_checkpoint.state_dict(a.checkpoint, a.trust_pickle)
        src = layout_of(state)
        ours, dropped = convert(state, a.checkpoint)
        out = a.out
        if not out.endswith(".safetensors"):
            os.makedirs(out, exist_ok=True)
            out = os.path.join(out, "model.safetensors")
        save_file(ours, out, metadata={"format": "pt"})
        print(f"{a.checkpoint} ({src} layout) -> {out}: {len(ours)} tensors, blocks per stage "
              f"{count_blocks(ours)}, {ours['head.weight'].shape[0]} classes; dropped {len(dropped)} "
              f"(num_batches_tracked, data_preprocessor)")
    except (ConvertError, torch_checkpoint.CheckpointError) as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
