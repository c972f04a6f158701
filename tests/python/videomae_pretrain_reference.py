"""Reference losses of Hugging Face transformers' VideoMAEForPreTraining for the Rust
parity tests of masked pre-training.

  make OUT   builds a small random VideoMAEForPreTraining (every parameter random, layer
             norms included), saves it as a checkpoint folder (model.safetensors +
             config.json), a fixed normalised input in the trainer's layout
             [B, 3, T, H, W] (input.npy), a tube mask [B, N] (mask.npy, uint8, 1 =
             masked: one random spatial mask per clip repeated over every temporal
             slot) and what transformers computes: the loss (loss.json) and the
             predicted pixels of the masked tubelets (logits.npy).
  check DIR  loads DIR (written by the trainer) with from_pretrained, refusing any
             missing, unexpected or mis-shaped tensor, and prints the loss it computes
             on DIR/input.npy with DIR/mask.npy as JSON.

usage: videomae_pretrain_reference.py make OUT [--height H --width W --frames T
                                               --mask-ratio R --norm-pix-loss 0|1]
       videomae_pretrain_reference.py check DIR
"""

import argparse
import json
import os

import numpy as np
import torch
from transformers import VideoMAEConfig, VideoMAEForPreTraining


def loss_of(model, x, mask):
    pixel_values = torch.from_numpy(x).permute(0, 2, 1, 3, 4)  # transformers: [B, T, C, H, W]
    bool_masked_pos = torch.from_numpy(mask).bool()
    with torch.no_grad():
        out = model(pixel_values=pixel_values, bool_masked_pos=bool_masked_pos)
    return out


def make(a):
    torch.manual_seed(a.seed)
    cfg = VideoMAEConfig(
        image_size=[a.height, a.width],
        patch_size=16,
        num_frames=a.frames,
        tubelet_size=2,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=96,
        layer_norm_eps=1e-6,
        use_mean_pooling=False,
        norm_pix_loss=bool(a.norm_pix_loss),
        decoder_hidden_size=32,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
    )
    cfg._attn_implementation = "eager"
    model = VideoMAEForPreTraining(cfg)
    model.eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(a.out, safe_serialization=True)

    slots = a.frames // 2
    per_slot = (a.height // 16) * (a.width // 16)
    masked = int(a.mask_ratio * per_slot)
    rng = np.random.default_rng(a.seed)
    rows = []
    for _ in range(2):
        spatial = np.zeros(per_slot, dtype=np.uint8)
        spatial[rng.permutation(per_slot)[:masked]] = 1
        rows.append(np.tile(spatial, slots))
    mask = np.stack(rows)
    x = torch.randn(2, 3, a.frames, a.height, a.width).numpy().astype(np.float32)
    out = loss_of(model, x, mask)
    np.save(os.path.join(a.out, "input.npy"), x)
    np.save(os.path.join(a.out, "mask.npy"), mask)
    np.save(os.path.join(a.out, "logits.npy"), out.logits.numpy().astype(np.float32))
    with open(os.path.join(a.out, "loss.json"), "w") as f:
        json.dump({"loss": float(out.loss)}, f)
    print(json.dumps({"loss": float(out.loss), "tokens": int(mask.shape[1])}))


def check(a):
    model, info = VideoMAEForPreTraining.from_pretrained(a.out, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise SystemExit(f"loading {a.out}: {problems}")
    model.config._attn_implementation = "eager"
    model.eval()
    x = np.load(os.path.join(a.out, "input.npy"))
    mask = np.load(os.path.join(a.out, "mask.npy"))
    out = loss_of(model, x, mask)
    print(json.dumps({"loss": float(out.loss)}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["make", "check"])
    ap.add_argument("out")
    ap.add_argument("--height", type=int, default=48)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--mask-ratio", type=float, default=0.5)
    ap.add_argument("--norm-pix-loss", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    make(a) if a.mode == "make" else check(a)


if __name__ == "__main__":
    main()
