#!/usr/bin/env python3
"""PSNR of the frames of jpeg shards against the raw shards of the same videos and recipe.

Reads every `<key>.frames.npy` of the raw shards and the `<key>.cKKfTTT.jpg` members of the
jpeg shards (tarfile, numpy and PIL only), pairs samples by key and prints one line: the mean
PSNR over all frames, its minimum, and the frames compared.

usage: shard_psnr.py RAW_DIR JPEG_DIR
"""

import glob
import io
import math
import os
import re
import sys
import tarfile

import numpy as np
from PIL import Image

FRAME = re.compile(r"^(?P<key>[^.]+)\.c(?P<c>\d+)f(?P<t>\d+)\.jpg$")


def raw_samples(folder):
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.tar"))):
        with tarfile.open(path) as tar:
            for m in tar:
                if m.name.endswith(".frames.npy"):
                    out[m.name.split(".", 1)[0]] = np.load(io.BytesIO(tar.extractfile(m).read()))
    return out


def jpeg_frames(folder):
    """(key, clip, frame) -> RGB array."""
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.tar"))):
        with tarfile.open(path) as tar:
            for m in tar:
                f = FRAME.match(m.name)
                if f:
                    img = Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")
                    out[(f["key"], int(f["c"]), int(f["t"]))] = np.asarray(img)
    return out


def main():
    raw_dir, jpeg_dir = sys.argv[1:3]
    raw = raw_samples(raw_dir)
    jpg = jpeg_frames(jpeg_dir)
    psnrs = []
    for (key, c, t), frame in jpg.items():
        ref = raw[key][c, t]
        mse = np.mean((ref.astype(np.float64) - frame.astype(np.float64)) ** 2)
        psnrs.append(99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse))
    if not psnrs:
        sys.exit("shard_psnr: no jpeg frames found under " + jpeg_dir)
    print(f"mean {np.mean(psnrs):.2f} dB, min {np.min(psnrs):.2f} dB over {len(psnrs)} frames")


if __name__ == "__main__":
    main()
