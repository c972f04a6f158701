"""Reference outputs of Hugging Face transformers' VideoMAE for the Rust parity tests.

Builds a small random VideoMAE (classification or pre-training), gives every parameter
random values (layer norms included, so no weight hides behind an identity), saves it
as a checkpoint folder (model.safetensors + config.json, as save_pretrained writes it),
and saves a fixed input in the trainer's layout [B, 3, T, H, W] with what transformers
computes from it:
  classify: logits of VideoMAEForVideoClassification         -> expected.npy
  pretrain: encoder tokens of VideoMAEForPreTraining.videomae  -> expected.npy
            (the encoder blocks' output, before any final norm)

transformers writes the query and value biases as `q_bias` / `v_bias` (the Hub's names);
--new-names stores them as `query.bias` / `value.bias`, its in-memory names.

usage: videomae_reference.py OUT {classify,pretrain} [--mean-pooling 0|1]
       [--new-names] [--eps X] [--height H --width W --frames T] [--patch P]
"""

import argparse
import json
import os

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import VideoMAEConfig, VideoMAEForPreTraining, VideoMAEForVideoClassification


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("mode", choices=["classify", "pretrain"])
    ap.add_argument("--mean-pooling", type=int, default=1)
    ap.add_argument("--new-names", action="store_true", help="store query.bias/value.bias")
    ap.add_argument("--eps", type=float, default=1e-12)
    ap.add_argument("--height", type=int, default=48)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    cfg = VideoMAEConfig(
        image_size=[a.height, a.width],
        patch_size=a.patch,
        num_frames=a.frames,
        tubelet_size=2,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=96,
        layer_norm_eps=a.eps,
        use_mean_pooling=bool(a.mean_pooling),
        num_labels=5,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
    )
    cfg._attn_implementation = "eager"
    if a.mode == "classify":
        model = VideoMAEForVideoClassification(cfg)
    else:
        model = VideoMAEForPreTraining(cfg)
    model.eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or ".layernorm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))

    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(a.out, safe_serialization=True)
    path = os.path.join(a.out, "model.safetensors")
    if a.new_names:
        tensors = load_file(path)
        renamed = {}
        for k, v in tensors.items():
            k = k.replace("attention.attention.q_bias", "attention.attention.query.bias")
            k = k.replace("attention.attention.v_bias", "attention.attention.value.bias")
            renamed[k] = v
        save_file(renamed, path, metadata={"format": "pt"})

    x = torch.randn(2, 3, a.frames, a.height, a.width)
    pixel_values = x.permute(0, 2, 1, 3, 4)  # transformers takes [B, T, C, H, W]
    with torch.no_grad():
        if a.mode == "classify":
            out = model(pixel_values=pixel_values).logits
        else:
            emb = model.videomae.embeddings(pixel_values, None)
            out = model.videomae.encoder(emb).last_hidden_state
    np.save(os.path.join(a.out, "input.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(a.out, "expected.npy"), out.numpy().astype(np.float32))
    with open(os.path.join(a.out, "config.json")) as f:
        saved = json.load(f)
    print(json.dumps({"expected_shape": list(out.shape), "model_type": saved.get("model_type")}))


if __name__ == "__main__":
    main()
