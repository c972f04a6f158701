"""The reference UniFormer-S: mmaction2 1.2.0's own `UniFormer` backbone with an I3D-style
classifier head, for parity tests, benchmarks and FLOP counts.

Owns loading mmaction2's `models/backbones/uniformer.py` from the installed package on its
own, with small stand-ins for the mmcv/mmengine/mmaction names that file imports (the
stand-ins only register, log and hold modules; `DropPath` is a per-sample stochastic
depth), and restoring `sys.modules` afterwards so a later `import mmaction` sees nothing
of them. It never calls `init_weights` (no download, no pretrained weights) and never
writes files.

    sys.path.insert(0, "<repo>/scripts")
    from refmodels import uniformer
    model = uniformer.build(frames=16, height=224, width=224, classes=400)
    uniformer.randomise(model, seed=0)

The model's state dict is mmaction's recognizer layout: `backbone.*` and
`cls_head.fc_cls.{weight,bias}`; it maps `[B, 3, T, H, W]` to logits `[B, classes]`
(global average pool, dropout, linear: `I3DHead` without the prediction-time softmax).
"""

import importlib.util
import logging
import os
import sys
import types

import torch
from torch import nn

# UniFormer-S (mmaction2's configs/recognition/uniformer/uniformer-small_*.py).
DEPTH = [3, 4, 8, 3]
EMBED_DIM = [64, 128, 320, 512]
HEAD_DIM = 64


class _DropPath(nn.Module):
    """Per-sample stochastic depth: each sample's branch is kept with probability 1 - p and
    then scaled by 1 / (1 - p)."""

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x):
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        mask = (torch.rand(shape, dtype=x.dtype, device=x.device) < keep).to(x.dtype)
        return x * mask / keep


class _BaseModule(nn.Module):
    def __init__(self, init_cfg=None):
        super().__init__()
        self.init_cfg = init_cfg


class _ModuleList(nn.ModuleList):
    def __init__(self, modules=None, init_cfg=None):
        super().__init__(modules)
        self.init_cfg = init_cfg


class _MMLogger:
    @staticmethod
    def get_current_instance():
        return logging.getLogger("refmodels.uniformer")


def _load_checkpoint(*args, **kwargs):
    raise RuntimeError("the reference UniFormer never loads pretrained weights")


def _to_2tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


class _Registry:
    def register_module(self, *args, **kwargs):
        return lambda cls: cls


def _stand_ins():
    def mod(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        return m

    return {
        "mmcv": mod("mmcv"),
        "mmcv.cnn": mod("mmcv.cnn"),
        "mmcv.cnn.bricks": mod("mmcv.cnn.bricks", DropPath=_DropPath),
        "mmengine": mod("mmengine"),
        "mmengine.logging": mod("mmengine.logging", MMLogger=_MMLogger),
        "mmengine.model": mod("mmengine.model", BaseModule=_BaseModule, ModuleList=_ModuleList),
        "mmengine.runner": mod("mmengine.runner"),
        "mmengine.runner.checkpoint": mod("mmengine.runner.checkpoint", _load_checkpoint=_load_checkpoint),
        "mmengine.utils": mod("mmengine.utils", to_2tuple=_to_2tuple),
        "mmaction": mod("mmaction"),
        "mmaction.registry": mod("mmaction.registry", MODELS=_Registry()),
    }


def source_path():
    """Where the installed mmaction2 keeps `models/backbones/uniformer.py` (found without
    importing mmaction, whose package import needs mmengine and mmcv)."""
    spec = importlib.util.find_spec("mmaction")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("mmaction2 is not installed (scripts/setup.sh installs its files)")
    for root in spec.submodule_search_locations:
        path = os.path.join(root, "models", "backbones", "uniformer.py")
        if os.path.isfile(path):
            return path
    raise RuntimeError("mmaction2 has no models/backbones/uniformer.py")


_MODULE = None


def backbone_module():
    """mmaction2's uniformer.py as a module of its own (loaded once)."""
    global _MODULE
    if _MODULE is not None:
        return _MODULE
    path = source_path()
    stand_ins = _stand_ins()
    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:
        spec = importlib.util.spec_from_file_location("_refmodels_mmaction_uniformer", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    _MODULE = module
    return module


class _Head(nn.Module):
    """mmaction's I3DHead: average pool over T, H, W, dropout, `fc_cls`."""

    def __init__(self, in_channels, classes, dropout):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc_cls = nn.Linear(in_channels, classes)

    def forward(self, x):
        return self.fc_cls(self.dropout(self.avg_pool(x)).flatten(1))


class Recognizer(nn.Module):
    """Backbone and head with mmaction's recognizer names (`backbone.`, `cls_head.`)."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone = backbone
        self.cls_head = head

    def forward(self, x):
        return self.cls_head(self.backbone(x))


def build(frames, height, width, classes, drop_path=0.0, dropout=0.0, depth=None):
    """The reference UniFormer-S for `[B, 3, frames, height, width]` input (the size only
    feeds mmaction's unused `num_patches`; any multiple of 32 runs). `depth` overrides the
    blocks per stage (UniFormer-S: [3, 4, 8, 3])."""
    del frames
    m = backbone_module()
    backbone = m.UniFormer(
        depth=list(depth or DEPTH),
        img_size=max(height, width),
        embed_dim=EMBED_DIM,
        head_dim=HEAD_DIM,
        drop_path_rate=drop_path,
        pretrained2d=False,
    )
    return Recognizer(backbone, _Head(EMBED_DIM[-1], classes, dropout))


def randomise(model, seed):
    """Fresh default weights from `seed`, then every norm's scale and shift and every
    BatchNorm's running statistics random too, so no tensor hides behind an identity;
    the logits stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for mod in model.modules():
            if isinstance(mod, (nn.Conv3d, nn.Linear)):
                mod.reset_parameters()
        for mod in model.modules():
            if isinstance(mod, (nn.LayerNorm, nn.BatchNorm3d)):
                d = mod.weight.shape
                mod.weight.copy_(1.0 + 0.2 * torch.randn(d, generator=g))
                mod.bias.copy_(0.2 * torch.randn(d, generator=g))
            if isinstance(mod, nn.BatchNorm3d):
                mod.running_mean.copy_(0.2 * torch.randn(d, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(d, generator=g))
    return model
