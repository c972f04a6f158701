#!/usr/bin/env bash
# Installs everything pmv-data needs to build and test, idempotently (safe to run twice):
#   - Debian packages: FFmpeg 5.1 development libraries, clang and pkg-config (for
#     ffmpeg-next), the ffmpeg CLI (tests make videos with it), curl and aria2
#     (benchmark peers), nginx-light (the benchmark's file server), sqlite3
#     (inspecting catalogs);
#   - libtorch: the torch==2.11.0 wheel from PyPI in .venv (git-ignored), which
#     tch =0.24.0 builds against; .venv/libtorch links to it for the build;
#   - transformers and safetensors in .venv: the tests check the trainer's VideoMAE
#     against transformers, and scripts/convert_videomae.py writes safetensors;
#   - timm, torchvision and Pillow in .venv: the augmentation tests compare against
#     timm's RandAugment on PIL and torchvision's RandomResizedCrop;
#   - tensorboard in .venv: the tests read the trainer's event files with it.
#   - nvidia-cuda-crt and nvidia-cuda-cccl in .venv (header files only, about 15 MB),
#     when torch brought CUDA 13.0's runtime: with the CUDA headers that brings,
#     they let pmv-c10d compile its NCCL backend without a CUDA toolkit.
# Nothing is installed when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# The one place the libtorch version is pinned (tch =0.24.0 expects 2.11.0).
TORCH_VERSION=2.11.0
# The transformers the VideoMAE parity tests compare against.
TRANSFORMERS_VERSION=5.23.0
SAFETENSORS_VERSION=0.8.0

PACKAGES=(
  pkg-config clang
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libavfilter-dev libavdevice-dev
  ffmpeg curl aria2 sqlite3 time nginx-light
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# pip keeps no cache outside the checkout (--no-cache-dir; the cache would also hold a
# second copy of the 900 MB torch wheel) and puts its temporary files under .venv, not in a
# /tmp that may be a small tmpfs.
pip_install() {
  mkdir -p .venv/.pip-tmp
  TMPDIR="$PWD/.venv/.pip-tmp" .venv/bin/python -m pip install --quiet \
    --disable-pip-version-check --no-cache-dir "$@"
  rm -rf .venv/.pip-tmp
}

# Free space on the checkout's disk, in GiB (rounded down).
free_gib() { df -Pk . | awk 'NR == 2 { print int($4 / 1048576) }'; }

# numpy: the tests read shards back with tarfile + numpy, and torch warns without it.
have_torch() {
  [ -x .venv/bin/python ] &&
    .venv/bin/python -c "import numpy, torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null
}
if ! have_torch; then
  echo "setup: installing torch==$TORCH_VERSION and numpy into .venv (about 4.6 GB)"
  # The wheel and its CUDA libraries unpack to about 4.6 GB, next to the 900 MB download.
  if (($(free_gib) < 6)); then
    echo "setup: torch $TORCH_VERSION needs about 6 GiB free on the disk of $PWD; $(free_gib) GiB free" >&2
    exit 1
  fi
  [ -x .venv/bin/python ] || python3 -m venv .venv
  pip_install "torch==$TORCH_VERSION" numpy
  have_torch || { echo "setup: torch $TORCH_VERSION did not install" >&2; exit 1; }
fi

have_hf() {
  .venv/bin/python -c "import sys, transformers, safetensors; sys.exit(0 if (transformers.__version__, safetensors.__version__) == ('$TRANSFORMERS_VERSION', '$SAFETENSORS_VERSION') else 1)" 2>/dev/null
}
if ! have_hf; then
  echo "setup: installing transformers==$TRANSFORMERS_VERSION and safetensors==$SAFETENSORS_VERSION into .venv"
  pip_install "transformers==$TRANSFORMERS_VERSION" "safetensors==$SAFETENSORS_VERSION"
  have_hf || { echo "setup: transformers $TRANSFORMERS_VERSION did not install" >&2; exit 1; }
fi

# webdataset: the shard tests read shards with it; av (PyAV): a peer in the shard benchmark.
if ! .venv/bin/python -c "import webdataset, av" 2>/dev/null; then
  echo "setup: installing webdataset==1.0.2 and av==18.1.0 (PyAV) into .venv"
  pip_install webdataset==1.0.2 av==18.1.0
fi

# tensorboard: the trainer's event files are read back with its EventAccumulator.
TENSORBOARD_VERSION=2.21.0
if ! .venv/bin/python -c "import sys, tensorboard; sys.exit(0 if tensorboard.__version__ == '$TENSORBOARD_VERSION' else 1)" 2>/dev/null; then
  echo "setup: installing tensorboard==$TENSORBOARD_VERSION into .venv"
  pip_install "tensorboard==$TENSORBOARD_VERSION"
fi

# timm and torchvision (with the Pillow whose arithmetic the RandAugment tests match):
# scripts/ref_augment.py. torchvision 0.26.0 is the build for torch 2.11.0; naming torch
# in the same install keeps pip from replacing it.
TIMM_VERSION=1.0.31
TORCHVISION_VERSION=0.26.0
PILLOW_VERSION=13.0.0
have_aug() {
  .venv/bin/python -c "import sys, timm, torchvision, PIL; sys.exit(0 if (timm.__version__, torchvision.__version__.split('+')[0], PIL.__version__) == ('$TIMM_VERSION', '$TORCHVISION_VERSION', '$PILLOW_VERSION') else 1)" 2>/dev/null
}
if ! have_aug; then
  echo "setup: installing timm==$TIMM_VERSION, torchvision==$TORCHVISION_VERSION and pillow==$PILLOW_VERSION into .venv"
  pip_install "torch==$TORCH_VERSION" "timm==$TIMM_VERSION" "torchvision==$TORCHVISION_VERSION" "pillow==$PILLOW_VERSION"
  have_aug || { echo "setup: timm $TIMM_VERSION / torchvision $TORCHVISION_VERSION did not install" >&2; exit 1; }
fi

# The reference implementations the model parity tests compare against: pytorchvideo's
# X3D and mmaction2's UniFormer (torchvision's MViTv2 comes with torchvision above).
# pytorchvideo 0.1.5 and fvcore/iopath are pure-Python sdists; --no-deps keeps pip away
# from torch and av, so their small dependencies are named here. mmaction2 is installed
# for its files only: tests/python/uniformer_reference.py loads one of them on its own
# (the package as a whole needs mmcv, which has no wheel for torch 2.11).
PYTORCHVIDEO_VERSION=0.1.5
FVCORE_VERSION=0.1.5.post20221221
IOPATH_VERSION=0.1.10
MMACTION2_VERSION=1.2.0
have_refs() {
  .venv/bin/python - <<PY 2>/dev/null
import sys
from importlib.metadata import version
want = {"pytorchvideo": "$PYTORCHVIDEO_VERSION", "fvcore": "$FVCORE_VERSION",
        "iopath": "$IOPATH_VERSION", "mmaction2": "$MMACTION2_VERSION"}
sys.exit(0 if all(version(k) == v for k, v in want.items()) else 1)
PY
}
if ! have_refs; then
  echo "setup: installing pytorchvideo==$PYTORCHVIDEO_VERSION and mmaction2==$MMACTION2_VERSION (reference models) into .venv"
  pip_install --no-deps "pytorchvideo==$PYTORCHVIDEO_VERSION" "fvcore==$FVCORE_VERSION" \
    "iopath==$IOPATH_VERSION" "mmaction2==$MMACTION2_VERSION" \
    parameterized==0.9.0 yacs==0.1.8 termcolor==3.2.0 tabulate==0.9.0 portalocker==3.2.0
  have_refs || { echo "setup: the reference model packages did not install" >&2; exit 1; }
  .venv/bin/python -c "import pytorchvideo.models.x3d, fvcore.nn" || {
    echo "setup: pytorchvideo $PYTORCHVIDEO_VERSION does not import" >&2; exit 1; }
fi

# The CUDA headers pmv-c10d's NCCL half needs that the torch wheel's CUDA packages leave
# out: crt/host_config.h (nvidia-cuda-crt) and nv/target (nvidia-cuda-cccl), of the CUDA
# release of the cuda_runtime.h torch brought (nvidia-cuda-runtime 13.0.x), landing beside
# it in site-packages/nvidia/cu13/include. Headers only: --no-deps keeps pip away from
# torch's CUDA packages. Skipped without CUDA 13.0's runtime (pmv-c10d then builds Gloo
# only). The check reads package metadata and does not import torch (2 s).
CUDA_CRT_VERSION=13.0.88
CUDA_CCCL_VERSION=13.0.85
# Exit status 0: installed; 1: missing or another version; 2: not wanted.
cuda_headers() {
  .venv/bin/python - <<PY 2>/dev/null
import sys
from importlib.metadata import version, PackageNotFoundError
def have(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return None
if not (have("nvidia-cuda-runtime") or "").startswith("13.0."):
    sys.exit(2)
sys.exit(0 if (have("nvidia-cuda-crt"), have("nvidia-cuda-cccl")) == ("$CUDA_CRT_VERSION", "$CUDA_CCCL_VERSION") else 1)
PY
}
status=0
cuda_headers || status=$?
if ((status == 1)); then
  echo "setup: installing nvidia-cuda-crt==$CUDA_CRT_VERSION and nvidia-cuda-cccl==$CUDA_CCCL_VERSION (CUDA headers for NCCL) into .venv"
  pip_install --no-deps "nvidia-cuda-crt==$CUDA_CRT_VERSION" "nvidia-cuda-cccl==$CUDA_CCCL_VERSION"
  cuda_headers || { echo "setup: the CUDA header packages did not install" >&2; exit 1; }
fi

# .cargo/config.toml points LIBTORCH at .venv/libtorch, so a plain `cargo build` finds
# libtorch wherever the venv's Python keeps site-packages (a relative link, so the
# checkout may move).
torch_dir=$(.venv/bin/python -c "import os, torch; print(os.path.relpath(os.path.dirname(torch.__file__), '.venv'))")
if [ "$(readlink .venv/libtorch 2>/dev/null)" != "$torch_dir" ]; then
  ln -sfn "$torch_dir" .venv/libtorch
fi
echo "setup: ready (FFmpeg $(pkg-config --modversion libavcodec) libavcodec, torch $TORCH_VERSION)"
