"""Reference outputs of timm's RandAugment and torchvision's RandomResizedCrop.

The trainer's RandAugment (crates/pmv-train/src/data/randaug.rs) and random resized
crop (data/augment.rs) are checked against these: the ops of timm 1.0.31's
`timm/data/auto_augment.py` on PIL images, the draws of its `rand_augment_transform`,
and the crop windows of torchvision 0.26's `RandomResizedCrop.get_params`. The
hyper-parameters are those VideoMAE's `create_random_augment` passes: fill
(128, 128, 128), bicubic resampling, translate_const int(0.45 * short side).

Usage (every mode writes .npy files and a manifest.json into OUT):
    ref_augment.py ops OUT W H        each op at magnitudes 0, 3, 7, 10, both signs
    ref_augment.py draw OUT SPEC N    N draws of rand_augment_transform(SPEC)
    ref_augment.py rrc OUT N WxH...   N RandomResizedCrop windows of each WxH frame

Nothing here reads the network; everything is seeded.
"""

import json
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import timm.data.auto_augment as aa

OPS = [
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "PosterizeIncreasing",
    "Solarize",
    "SolarizeIncreasing",
    "SolarizeAdd",
    "Color",
    "ColorIncreasing",
    "Contrast",
    "ContrastIncreasing",
    "Brightness",
    "BrightnessIncreasing",
    "Sharpness",
    "SharpnessIncreasing",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
]


def hparams(w, h):
    """What VideoMAE's create_random_augment passes (no img_mean: fill is timm's _FILL)."""
    return {
        "translate_const": int(min(w, h) * 0.45),
        "interpolation": Image.Resampling.BICUBIC,
    }


def test_image(w, h):
    """A natural-looking frame: gradients, a few hard edges, a flat patch, noise."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 30 + 180 * x / max(w - 1, 1)
    g = 40 + 150 * y / max(h - 1, 1)
    b = 128 + 90 * np.sin(x / 5.0) * np.cos(y / 7.0)
    img = np.stack([r, g, b], axis=-1)
    img[h // 4 : h // 2, w // 5 : w // 2] = (250, 20, 60)
    img[(x - 0.7 * w) ** 2 + (y - 0.6 * h) ** 2 < (0.15 * min(w, h)) ** 2] = (10, 200, 240)
    img[h - h // 5 :, : w // 3] = (128, 128, 128)
    img += rng.normal(0, 6, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def with_sign(negate, fn):
    """Runs fn with timm's _randomly_negate forced to negate (or not)."""
    saved = aa.random.random
    aa.random.random = lambda: 0.9 if negate else 0.1
    try:
        return fn()
    finally:
        aa.random.random = saved


def posterize_old(img, bits):
    """ImageOps.posterize before Pillow 10 refused bits < 1: keep `bits` high bits."""
    mask = ~(2 ** (8 - bits) - 1) & 0xFF
    return img.point([i & mask for i in range(256)] * 3)


def ops(out, w, h):
    img = test_image(w, h)
    np.save(out / "image.npy", img)
    pil = Image.fromarray(img, "RGB")
    hp = hparams(w, h)
    kwargs = {"fillcolor": aa._FILL, "resample": hp["interpolation"]}
    cases = []
    for name in OPS:
        level_fn = aa.LEVEL_TO_ARG[name]
        for magnitude in (0.0, 3.0, 7.0, 10.0, 5.5):
            for negate in (False, True):
                args = with_sign(negate, lambda: level_fn(magnitude, hp)) if level_fn else ()
                if name.startswith("Posterize") and args[0] < 1:
                    result = posterize_old(pil, args[0])
                else:
                    result = aa.NAME_TO_OP[name](pil, *args, **dict(kwargs))
                file = f"{name}_{magnitude}_{int(negate)}.npy"
                np.save(out / file, np.asarray(result, dtype=np.uint8))
                cases.append(
                    {
                        "name": name,
                        "magnitude": magnitude,
                        "negate": negate,
                        # repr: the exact float (JSON readers may round numbers).
                        "args": [repr(float(a)) for a in args],
                        "file": file,
                    }
                )
    (out / "manifest.json").write_text(json.dumps({"w": w, "h": h, "cases": cases}))


def draw(out, spec, n):
    """Records, per draw, each applied op's name and magnitude (after clipping)."""
    random.seed(0)
    np.random.seed(0)
    ra = aa.rand_augment_transform(spec, hparams(224, 224))
    log = []
    for op in ra.ops:
        fn = op.level_fn

        def level(magnitude, hp, name=op.name, fn=fn):
            log.append((name, magnitude))
            return fn(magnitude, hp) if fn else ()

        op.level_fn = level
        op.aug_fn = lambda img, *a, **k: img
    img = Image.new("RGB", (4, 4))
    names = [op.name for op in ra.ops]
    per_draw = []
    for _ in range(n):
        start = len(log)
        ra(img)
        per_draw.append(len(log) - start)
    np.save(out / "op.npy", np.array([names.index(n) for n, _ in log], dtype=np.int64))
    np.save(out / "magnitude.npy", np.array([m for _, m in log], dtype=np.float64))
    np.save(out / "applied.npy", np.array(per_draw, dtype=np.int64))
    (out / "manifest.json").write_text(json.dumps({"names": names}))


def rrc(out, n, sizes):
    """torchvision's windows (top, left, height, width) on each WxH frame, and its fallback."""
    import torch
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    scale, ratio = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)
    manifest = {}
    for size in sizes:
        w, h = (int(v) for v in size.split("x"))
        img = torch.zeros(3, h, w, dtype=torch.uint8)
        boxes = np.array(
            [RandomResizedCrop.get_params(img, scale, ratio) for _ in range(n)], dtype=np.int64
        )
        # The fallback of get_params: the whole frame clamped to the ratio range, centred.
        in_ratio = w / h
        if in_ratio < min(ratio):
            fw, fh = w, int(round(w / min(ratio)))
        elif in_ratio > max(ratio):
            fh, fw = h, int(round(h * max(ratio)))
        else:
            fw, fh = w, h
        fallback = (boxes == np.array([(h - fh) // 2, (w - fw) // 2, fh, fw])).all(axis=1)
        np.save(out / f"boxes_{size}.npy", boxes)
        np.save(out / f"fallback_{size}.npy", fallback.astype(np.uint8))
        manifest[size] = {"fallback_box": [fw, fh]}
    (out / "manifest.json").write_text(json.dumps(manifest))


def main():
    mode, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    if mode == "ops":
        ops(out, int(sys.argv[3]), int(sys.argv[4]))
    elif mode == "draw":
        draw(out, sys.argv[3], int(sys.argv[4]))
    elif mode == "rrc":
        rrc(out, int(sys.argv[3]), sys.argv[4:])
    else:
        sys.exit(f"ref_augment.py: unknown mode {mode!r}")


if __name__ == "__main__":
    main()
