"""Reading a checkpoint file as a state dict without running code from it: the one way the
converters (scripts/convert_*.py) open their input.

`torch.load` unpickles, and a pickle can run any code as it loads. `load(path)` reads with
`weights_only=True`: tensors, containers, numbers and strings only, plus
`argparse.Namespace` (the training arguments VideoMAE's checkpoints carry; unpickling one
only sets attributes). The public checkpoints of the models here pass: torchvision's and
pytorchvideo's state dicts, PySlowFast's `.pyth` (its config is a YAML string), VideoMAE's
and the official UniFormer's `.pth`. A file holding other Python objects (an mmengine
message hub, a pickled config class) is refused with an error naming the file;
`trust=True` (the converters' `--trust-pickle`, for a file whose origin the user trusts)
reads it anyway. `state_dict(path)` then finds the tensors inside the dicts public
checkpoints keep them in. Nothing here writes.
"""

import argparse
import pickle

import torch
from safetensors.torch import load_file

# Where checkpoints keep their state dict: PySlowFast and pytorchvideo (`model_state`),
# mmaction2 (`state_dict`), VideoMAE and the official UniFormer (`model`), DataParallel
# wrappers (`module`); nested wrappers are unwrapped in turn.
WRAPPERS = ("model_state", "state_dict", "model", "module")


class CheckpointError(Exception):
    """A file that is not a readable state dict; the message names the file."""


class UnsafeCheckpoint(CheckpointError):
    """The file holds objects that only a full unpickle, running its code, could read."""


def load(path, trust=False):
    """The object saved in `path`, on the CPU."""
    if trust:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        reason = next((line for line in first if "GLOBAL" in line or "Unsupported" in line), first[0] if first else "")
        raise UnsafeCheckpoint(
            f"{path}: holds Python objects besides tensors ({reason.strip()}); reading them would run "
            "code from the file. If you trust where it came from, pass --trust-pickle"
        ) from None


def state_dict(path, trust=False):
    """The flat name -> tensor dict of a `.safetensors` file or a torch checkpoint read by
    `load`: unwrapped from `WRAPPERS` and from a DataParallel `module.` prefix. Raises
    `CheckpointError` (or `UnsafeCheckpoint`) naming the file."""
    if path.endswith(".safetensors"):
        try:
            state = load_file(path)
        except Exception as e:  # noqa: BLE001 - safetensors raises several kinds; report them all
            raise CheckpointError(f"{path}: cannot read as safetensors: {e}") from e
    else:
        try:
            state = load(path, trust)
        except UnsafeCheckpoint:
            raise
        except Exception as e:  # noqa: BLE001 - torch raises many kinds; report them all
            raise CheckpointError(f"{path}: cannot read as a torch checkpoint: {e}") from e
        while isinstance(state, dict):
            inner = next((state[k] for k in WRAPPERS if isinstance(state.get(k), dict)), None)
            if inner is None:
                break
            state = inner
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: no state dict (looked under {', '.join(WRAPPERS)})")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: not tensors: {', '.join(map(str, bad[:10]))}")
    return {k.removeprefix("module."): v for k, v in state.items()}
