"""Reading a PyTorch checkpoint file without running code from it: the one way the
converters (scripts/convert_*.py) open `.pth`/`.pyth`/`.pt` files.

`torch.load` unpickles, and a pickle can run any code as it loads. `load(path)` reads with
`weights_only=True`: tensors, containers, numbers and strings only. The public
checkpoints of the models here pass (torchvision's and pytorchvideo's state dicts,
PySlowFast's `.pyth`, whose config is a YAML string, VideoMAE's and the official
UniFormer's `.pth`). A file holding other Python objects (an mmengine message hub, a
pickled config class) is refused with an error naming the file; `trust=True` (the
converters' `--trust-pickle`, for a file whose origin the user trusts) reads it anyway.
Nothing here writes.
"""

import pickle

import torch


class UnsafeCheckpoint(Exception):
    """The file holds objects that only a full unpickle, running its code, could read."""


def load(path, trust=False):
    """The object saved in `path`, on the CPU."""
    if trust:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        reason = next((line for line in first if "GLOBAL" in line or "Unsupported" in line), first[0] if first else "")
        raise UnsafeCheckpoint(
            f"{path}: holds Python objects besides tensors ({reason.strip()}); reading them would run "
            "code from the file. If you trust where it came from, pass --trust-pickle"
        ) from None
