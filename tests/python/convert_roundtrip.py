"""scripts/convert_videomae.py against transformers: small random VideoMAE models are
written in the official VideoMAE code's layout (fused qkv, blocks.N.*, encoder./decoder.
prefixes for pre-training), converted back, and loaded by transformers, which must find
every tensor and compute exactly what the original model computes.

usage: convert_roundtrip.py WORK_DIR   (prints one JSON line per case)
"""

import argparse
import json
import os
import re
import subprocess
import sys

import torch
from transformers import VideoMAEConfig, VideoMAEForPreTraining, VideoMAEForVideoClassification

HERE = os.path.dirname(os.path.abspath(__file__))
CONVERTER = os.path.join(HERE, "..", "..", "scripts", "convert_videomae.py")

BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}


def official(sd, pretraining):
    """The state dict in the layout of github.com/MCG-NJU/VideoMAE."""
    out = {}
    qkv = {}
    enc = "encoder." if pretraining else ""
    for k, v in sd.items():
        k = k.replace("attention.attention.query.bias", "attention.attention.q_bias")
        k = k.replace("attention.attention.value.bias", "attention.attention.v_bias")
        m = re.match(r"(videomae\.encoder\.layer|decoder\.decoder_layers)\.(\d+)\.(.+)$", k)
        if m:
            where, i, part = m.groups()
            base = (enc + "blocks" if where.startswith("videomae") else "decoder.blocks") + f".{i}"
            if part.startswith("attention.attention."):
                leaf = part[len("attention.attention."):]
                if leaf in ("q_bias", "v_bias"):
                    out[f"{base}.attn.{leaf}"] = v
                else:
                    qkv.setdefault(base, {})[leaf.split(".")[0]] = v
                continue
            for hf, orig in BLOCK.items():
                if part.startswith(hf + "."):
                    out[f"{base}.{orig}.{part[len(hf) + 1:]}"] = v
                    break
            else:
                raise SystemExit(f"unmapped {k}")
            continue
        if k.startswith("videomae.embeddings.patch_embeddings.projection."):
            out[enc + "patch_embed.proj." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("videomae.layernorm."):
            out[enc + "norm." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("classifier."):
            out["head." + k.rsplit(".", 1)[1]] = v
        else:  # fc_norm, decoder.norm, decoder.head, encoder_to_decoder, mask_token
            out[k] = v
    for base, parts in qkv.items():
        out[f"{base}.attn.qkv.weight"] = torch.cat([parts["query"], parts["key"], parts["value"]], 0)
    return out


def randomise(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_((1.0 if "norm" in name and name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))


def case(work, name, pretraining, mean_pooling):
    cfg = VideoMAEConfig(
        image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=48,
        num_hidden_layers=2, num_attention_heads=3, intermediate_size=96, layer_norm_eps=1e-6,
        use_mean_pooling=mean_pooling, num_labels=5, decoder_hidden_size=32,
        decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64,
    )
    cls = VideoMAEForPreTraining if pretraining else VideoMAEForVideoClassification
    model = cls(cfg).eval()
    randomise(model)
    pth = os.path.join(work, f"{name}.pth")
    if pretraining:
        # As VideoMAE's training scripts save: the weights beside the epoch and the
        # argparse namespace, which the converter reads without a full unpickle.
        ck = {"model": official(model.state_dict(), True), "epoch": 3,
              "args": argparse.Namespace(model="pretrain_videomae", mask_ratio=0.9, lr=1.5e-4)}
    else:
        ck = {"module": official(model.state_dict(), False)}
    torch.save(ck, pth)
    out = os.path.join(work, name)
    args = [sys.executable, CONVERTER, pth, out, "--frames", "4", "--image-size", "32", "--heads", "3"]
    if pretraining:
        args += ["--decoder-heads", "2"]
    subprocess.run(args, check=True, capture_output=True)
    back, info = cls.from_pretrained(out, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k != "error_msgs"}
    assert not problems, f"{name}: {problems}"
    back.eval()
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        if pretraining:
            mask = torch.zeros(2, 8, dtype=torch.bool)
            mask[:, ::2] = True
            a = model(x, bool_masked_pos=mask).logits
            b = back(x, bool_masked_pos=mask).logits
        else:
            a = model(x).logits
            b = back(x).logits
    diff = (a - b).abs().max().item()
    assert diff == 0.0, f"{name}: outputs differ by {diff}"
    with open(os.path.join(out, "config.json")) as f:
        c = json.load(f)
    print(json.dumps({"case": name, "max_diff": diff, "architectures": c["architectures"],
                      "heads": c["num_attention_heads"], "eps": c["layer_norm_eps"]}))


def main():
    work = sys.argv[1]
    os.makedirs(work, exist_ok=True)
    case(work, "finetuned", pretraining=False, mean_pooling=True)
    case(work, "finetuned_norm", pretraining=False, mean_pooling=False)
    case(work, "pretrained", pretraining=True, mean_pooling=False)


if __name__ == "__main__":
    main()
