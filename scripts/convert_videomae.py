#!/usr/bin/env python3
"""Converts an official VideoMAE checkpoint (.pth, github.com/MCG-NJU/VideoMAE) into the
layout Hugging Face transformers uses: a folder with model.safetensors and config.json,
which `pmv-data train --init DIR/model.safetensors` and transformers both load.

Fine-tuned checkpoints (patch_embed.*, blocks.N.*, fc_norm or norm, head.*) become a
VideoMAEForVideoClassification; pre-training checkpoints (encoder.*, decoder.*,
encoder_to_decoder, mask_token) a VideoMAEForPreTraining. The fused qkv projection is
split into query/key/value; the query and value biases keep their names (q_bias,
v_bias), as transformers stores them. The head count is not in the weights: it comes
from the width (384 -> 6, 768 -> 12, 1024 -> 16, 1280 -> 16) unless --heads says
otherwise. layer_norm_eps is 1e-6, the original code's value.

usage: convert_videomae.py CHECKPOINT.pth OUT_DIR [--heads N] [--decoder-heads N]
       [--frames 16] [--image-size 224 | HxW] [--labels FILE] [--no-norm-pix-loss]
       [--trust-pickle]
A checkpoint is read without running code from it (scripts/torch_checkpoint.py): one that
holds Python objects besides tensors is refused unless --trust-pickle says its origin is
trusted. Needs torch and safetensors (the repository's .venv has both).
"""

import argparse
import json
import os
import re
import sys

import torch
from safetensors.torch import save_file

sys.dont_write_bytecode = True  # leave no __pycache__ in scripts/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_checkpoint  # noqa: E402

HEADS = {192: 3, 384: 6, 512: 8, 768: 12, 1024: 16, 1280: 16, 1408: 16}


def block_name(rest, prefix):
    """One encoder or decoder block tensor: blocks.N.<part> -> <prefix>.N.<hf part>."""
    m = re.match(r"blocks\.(\d+)\.(.+)$", rest)
    if not m:
        return None
    i, part = m.groups()
    table = {
        "norm1.weight": "layernorm_before.weight",
        "norm1.bias": "layernorm_before.bias",
        "norm2.weight": "layernorm_after.weight",
        "norm2.bias": "layernorm_after.bias",
        "attn.q_bias": "attention.attention.q_bias",
        "attn.v_bias": "attention.attention.v_bias",
        "attn.proj.weight": "attention.output.dense.weight",
        "attn.proj.bias": "attention.output.dense.bias",
        "mlp.fc1.weight": "intermediate.dense.weight",
        "mlp.fc1.bias": "intermediate.dense.bias",
        "mlp.fc2.weight": "output.dense.weight",
        "mlp.fc2.bias": "output.dense.bias",
    }
    if part == "attn.qkv.weight":
        return f"{prefix}.{i}.QKV"
    if part not in table:
        return None
    return f"{prefix}.{i}.{table[part]}"


def convert(state):
    pretraining = any(k.startswith("encoder.") for k in state)
    out, unknown = {}, []
    for key, t in state.items():
        name = None
        enc = key[len("encoder."):] if pretraining and key.startswith("encoder.") else key
        if pretraining and not key.startswith("encoder."):
            # Pre-training decoder side.
            if key.startswith("decoder."):
                rest = key[len("decoder."):]
                name = block_name(rest, "decoder.decoder_layers")
                if rest.startswith("norm.") or rest.startswith("head."):
                    name = key
            elif key in ("encoder_to_decoder.weight", "mask_token"):
                name = key
            elif key == "pos_embed":
                continue  # the fixed table, recomputed by every implementation
        else:
            if enc.startswith("patch_embed.proj."):
                name = "videomae.embeddings.patch_embeddings.projection." + enc.rsplit(".", 1)[1]
            elif enc.startswith("blocks."):
                name = block_name(enc, "videomae.encoder.layer")
            elif enc.startswith("norm."):
                name = "videomae.layernorm." + enc.rsplit(".", 1)[1]
            elif enc.startswith("fc_norm."):
                name = enc
            elif enc.startswith("head."):
                name = "classifier." + enc.rsplit(".", 1)[1]
            elif enc == "pos_embed":
                continue
        if name is None:
            unknown.append(key)
            continue
        if name.endswith(".QKV"):
            q, k, v = t.chunk(3, dim=0)
            base = name[: -len(".QKV")] + ".attention.attention"
            out[f"{base}.query.weight"] = q.contiguous()
            out[f"{base}.key.weight"] = k.contiguous()
            out[f"{base}.value.weight"] = v.contiguous()
        else:
            out[name] = t.contiguous()
    if unknown:
        sys.exit("tensors this converter does not know: " + ", ".join(sorted(unknown)[:20]))
    return out, pretraining


def count(prefix, names):
    idx = {int(m.group(1)) for n in names for m in [re.match(re.escape(prefix) + r"\.(\d+)\.", n)] if m}
    return max(idx) + 1 if idx else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--heads", type=int)
    ap.add_argument("--decoder-heads", type=int)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--image-size", default="224")
    ap.add_argument("--labels", help="class names, one per line (fine-tuned checkpoints)")
    ap.add_argument("--no-norm-pix-loss", action="store_true")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="read a checkpoint holding Python objects besides tensors (runs code from it)")
    a = ap.parse_args()

    try:
        state = torch_checkpoint.state_dict(a.checkpoint, a.trust_pickle)
    except torch_checkpoint.CheckpointError as e:
        sys.exit(str(e))
    tensors, pretraining = convert(state)
    names = list(tensors)
    proj = tensors["videomae.embeddings.patch_embeddings.projection.weight"]
    hidden, _, tubelet, patch, _ = proj.shape
    layers = count("videomae.encoder.layer", names)
    heads = a.heads or HEADS.get(hidden)
    if not heads:
        sys.exit(f"width {hidden}: give --heads")
    size = [int(x) for x in a.image_size.lower().split("x")]
    image_size = size[0] if len(size) == 1 else size
    cfg = {
        "model_type": "videomae",
        "architectures": ["VideoMAEForPreTraining" if pretraining else "VideoMAEForVideoClassification"],
        "image_size": image_size,
        "patch_size": patch,
        "num_channels": 3,
        "num_frames": a.frames,
        "tubelet_size": tubelet,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": tensors["videomae.encoder.layer.0.intermediate.dense.weight"].shape[0],
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-6,
        "qv_bias": "videomae.encoder.layer.0.attention.attention.q_bias" in tensors,
        "use_mean_pooling": "fc_norm.weight" in tensors,
        "norm_pix_loss": not a.no_norm_pix_loss,
    }
    if pretraining:
        dh = tensors["decoder.decoder_layers.0.layernorm_before.weight"].shape[0]
        dheads = a.decoder_heads or HEADS.get(dh)
        if not dheads:
            sys.exit(f"decoder width {dh}: give --decoder-heads")
        cfg.update(
            decoder_hidden_size=dh,
            decoder_num_hidden_layers=count("decoder.decoder_layers", names),
            decoder_num_attention_heads=dheads,
            decoder_intermediate_size=tensors["decoder.decoder_layers.0.intermediate.dense.weight"].shape[0],
        )
    else:
        n = tensors["classifier.weight"].shape[0]
        labels = [f"LABEL_{i}" for i in range(n)]
        if a.labels:
            labels = [l.strip() for l in open(a.labels, encoding="utf-8") if l.strip()]
            if len(labels) != n:
                sys.exit(f"{a.labels}: {len(labels)} names for a head of {n} classes")
        cfg["id2label"] = {str(i): l for i, l in enumerate(labels)}
        cfg["label2id"] = {l: i for i, l in enumerate(labels)}

    os.makedirs(a.out, exist_ok=True)
    save_file(tensors, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    kind = "pre-training" if pretraining else "fine-tuned"
    print(f"{a.checkpoint}: {kind} ViT of {layers} layers, width {hidden}, {heads} heads -> {a.out}")


if __name__ == "__main__":
    main()
