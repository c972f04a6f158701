"""The reference MViTv2-S: torchvision's `MViT` with the block settings `mvit_v2_s` uses,
built for any input size (frames, height, width), and a randomiser for parity tests.

`mvit_v2_s` itself fixes the input at 16x224x224 (its relative-position tables are sized
from it), so `build` takes the 16 block settings and the MViTv2 options from torchvision's
own `mvit_v2_s` call path and passes them to `MViT` with the size asked for. It never
loads weights and never downloads anything.

usage: sys.path.insert(0, "<repo>/scripts"); from refmodels import mvit
       model = mvit.build(16, 224, 224, 400); mvit.randomise(model, seed=0)
"""

import torch
import torchvision.models.video.mvit as tv_mvit


class _Captured(Exception):
    """Stops `mvit_v2_s` once its settings are known, before it builds anything."""


def settings():
    """(block settings, MViT options) exactly as torchvision's `mvit_v2_s` passes them."""
    got = {}
    original = tv_mvit._mvit

    def capture(block_setting, stochastic_depth_prob, weights, progress, **kwargs):
        got["blocks"] = list(block_setting)
        got["options"] = {
            k: kwargs[k]
            for k in ("residual_pool", "residual_with_cls_embed", "rel_pos_embed", "proj_after_attn")
        }
        raise _Captured

    tv_mvit._mvit = capture
    try:
        tv_mvit.mvit_v2_s()
    except _Captured:
        pass
    finally:
        tv_mvit._mvit = original
    return got["blocks"], got["options"]


def build(frames, height, width, classes, drop_path=0.0, dropout=0.0):
    """torchvision MViTv2-S for [B, 3, frames, height, width] input (logits out)."""
    blocks, options = settings()
    return tv_mvit.MViT(
        spatial_size=(height, width),
        temporal_size=frames,
        block_setting=blocks,
        stochastic_depth_prob=drop_path,
        num_classes=classes,
        dropout=dropout,
        **options,
    )


def randomise(model, seed):
    """Random values where the default initialisation leaves an identity or a zero:
    LayerNorm weights 1 + 0.2·N and biases 0.2·N, linear biases 0.02·N, the class token
    N(0, 1) and the relative-position tables 0.2·N (so the position term matters in
    the scores). Other weights keep torchvision's initialisation, so logits stay O(1)."""
    g = torch.Generator().manual_seed(seed)

    def randn(t):
        return torch.randn(t.shape, generator=g, dtype=t.dtype)

    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            module = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            if isinstance(module, torch.nn.LayerNorm):
                p.copy_((1.0 + 0.2 * randn(p)) if leaf == "weight" else 0.2 * randn(p))
            elif isinstance(module, torch.nn.Linear) and leaf == "bias":
                p.copy_(0.02 * randn(p))
            elif leaf == "class_token":
                p.copy_(randn(p))
            elif leaf.startswith("rel_pos_"):
                p.copy_(0.2 * randn(p))
    return model
