"""The reference X3D: pytorchvideo 0.1.5's `create_x3d`, built for a given input, for the
parity tests, benchmarks and FLOP counts that compare the trainer's X3D against it.

`build` returns pytorchvideo's own module, unchanged except in two ways that touch no
parameter: the head applies no softmax (`head_activation=None`, so it returns logits in
train and eval mode), and when pytorchvideo's fixed head pool would not average the whole
final feature map (a non-square input: `create_x3d` only knows a square crop), that pool
is replaced by a global average (`AdaptiveAvgPool3d(1)`), which is what X3D's head means
and what the trainer computes. `randomise` gives every norm random statistics. This module
never converts names (scripts/convert_x3d.py does) and never loads checkpoints.

usage: sys.path.insert(0, "<repo>/scripts"); from refmodels import x3d;
       model = x3d.build(16, 288, 192, 400)
"""

import math

import torch
from torch import nn

from pytorchvideo.models.x3d import create_x3d


def final_map(frames, height, width):
    """(T, H, W) of the last stage's output: the stem and each of the four stages halve
    the sides (a stride-2, padding-1 3x3 convolution takes a side to ceil(side / 2));
    time is never strided."""
    def down(side):
        for _ in range(5):
            side = math.ceil(side / 2)
        return side

    return (frames, down(height), down(width))


def build(frames, height, width, classes, drop_path=0.0, dropout=0.0, depth_factor=2.2,
          width_factor=2.0, stem_dim_in=12, bottleneck_factor=2.25, head_dim_out=2048,
          se_ratio=0.0625, global_pool=None):
    """pytorchvideo's X3D (X3D-M at the defaults: depth 2.2, width 2.0) for inputs of
    [B, 3, frames, height, width], returning logits [B, classes].

    The other keyword arguments are `create_x3d`'s (smaller widths and depths for quick
    tests). X3D has no stochastic depth: `drop_path` must be 0. `global_pool`: None keeps
    pytorchvideo's head pool exactly when its kernel equals the final feature map and
    otherwise replaces it by a global average; True always replaces it; False never does
    (the pool may then slide over a larger map, or fail on a smaller one).
    """
    if drop_path:
        raise ValueError("X3D has no stochastic depth (drop_path must be 0)")
    crop = max(height, width)
    model = create_x3d(
        input_clip_length=frames,
        input_crop_size=crop,
        model_num_class=classes,
        dropout_rate=dropout,
        width_factor=width_factor,
        depth_factor=depth_factor,
        stem_dim_in=stem_dim_in,
        bottleneck_factor=bottleneck_factor,
        head_dim_out=head_dim_out,
        se_ratio=se_ratio,
        head_activation=None,
    )
    head_pool = model.blocks[-1].pool
    kernel = tuple(int(k) for k in head_pool.pool.kernel_size)
    if global_pool is None:
        global_pool = kernel != final_map(frames, height, width)
    if global_pool:
        head_pool.pool = nn.AdaptiveAvgPool3d(1)
    return model


def stock_head(model):
    """Whether the head still has pytorchvideo's own pool (not the global average)."""
    return not isinstance(model.blocks[-1].pool.pool, nn.AdaptiveAvgPool3d)


def randomise(model, seed, sample=None, residual_gain=0.2):
    """Draws every weight again from `seed`, so that no norm is an identity and the logits
    are O(1) and depend on the input: convolutions and linears normal with the spread of
    pytorchvideo's initialisation of each, biases small, BatchNorm γ≈1 and β random, the
    classifier scaled for O(1) logits (for the sample's logits to have unit spread, given
    a sample). The BatchNorm running statistics are random
    (mean 0.2·N(0,1), var in [0.5, 1.5]) or, given `sample` (an input [B, 3, T, H, W]),
    those the sample's activations have, each perturbed at random (mean ± 0.2 std, var
    ×[0.7, 1.3]): pytorchvideo's fan-out initialisation of the depthwise convolutions
    shrinks the signal, and statistics that do not match it would leave logits that
    hardly depend on the input. Each residual branch's last norm (`norm_c`) has its γ and
    β scaled by `residual_gain`, before the statistics are measured: with unit variance
    everywhere the random network is chaotic (fp32 rounding reached 7e-5 on the logits),
    with 0.2 it is as well conditioned as a trained one (2.5e-6 against fp64)."""
    g = torch.Generator().manual_seed(seed)

    def randn(t):
        return torch.randn(t.shape, generator=g, dtype=t.dtype)

    def rand(t):
        return torch.rand(t.shape, generator=g, dtype=t.dtype)

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv3d, nn.Linear)):
                m.weight.copy_(randn(m.weight) * m.weight.std().clamp_min(1e-3))
                if m.bias is not None:
                    m.bias.copy_(0.1 * randn(m.bias))
        for m in norms:
            m.weight.copy_(1.0 + 0.2 * randn(m.weight))
            m.bias.copy_(0.2 * randn(m.bias))
            m.running_mean.copy_(0.2 * randn(m.running_mean))
            m.running_var.copy_(0.5 + rand(m.running_var))
        # Residual branches end in a smaller γ: a random network whose every layer has
        # unit variance is chaotic (rounding errors grow exponentially with depth); one
        # near the identity in each block is as well conditioned as a trained one.
        for m in model.modules():
            norm_c = getattr(m, "norm_c", None)
            if isinstance(norm_c, nn.BatchNorm3d):
                norm_c.weight.mul_(residual_gain)
                norm_c.bias.mul_(residual_gain)
        proj = model.blocks[-1].proj
        proj.weight.copy_(randn(proj.weight) * (3.0 / proj.weight.shape[1]) ** 0.5)
        if sample is not None:
            was_training = model.training
            momenta = [m.momentum for m in norms]
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # a plain average: one batch gives its statistics
            model.train()
            model(sample)
            model.train(was_training)
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
                m.num_batches_tracked.zero_()
                std = m.running_var.sqrt()
                m.running_mean.add_(0.2 * std * randn(m.running_mean))
                m.running_var.mul_(0.7 + 0.6 * rand(m.running_var))
            # The classifier rescaled so the sample's logits have unit spread.
            model.eval()
            spread = model(sample).std().clamp_min(1e-6)
            model.train(was_training)
            proj.weight.div_(spread)
    return model


def add_shortcut_norms(model):
    """PySlowFast's layout: an identity BatchNorm (γ=1, β=0, mean=0, var=1-eps) on every
    projected shortcut that pytorchvideo leaves without one (those that keep the width:
    stage 1 block 0 in X3D-M). In eval mode nothing changes; in train mode that norm uses
    the batch's statistics, as the trainer's X3D (PySlowFast's) does. Returns the names
    of the norms added."""
    added = []
    for name, m in model.named_modules():
        if getattr(m, "branch1_conv", None) is not None and getattr(m, "branch1_norm", "x") is None:
            conv = m.branch1_conv
            norm = nn.BatchNorm3d(conv.out_channels, eps=1e-5, momentum=0.1)
            with torch.no_grad():
                norm.running_var.fill_(1.0 - norm.eps)
            m.branch1_norm = norm.to(conv.weight.device)
            added.append(f"{name}.branch1_norm")
    return added
