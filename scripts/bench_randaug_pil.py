"""Times timm's RandAugment ops on PIL at 224x224 (ns per frame per op), and whole
draws of VideoMAE's rand-m7-n4-mstd0.5-inc1, as crates/pmv-train/examples/bench_randaug.rs times ours.

Usage: .venv/bin/python scripts/bench_randaug_pil.py
"""

import timeit

import numpy as np
from PIL import Image

import timm.data.auto_augment as aa

img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))
kw = {"fillcolor": (128, 128, 128), "resample": Image.Resampling.BICUBIC}
cases = [
    ("AutoContrast", ()),
    ("Equalize", ()),
    ("Invert", ()),
    ("Rotate", (21.0,)),
    ("PosterizeIncreasing", (2,)),
    ("SolarizeIncreasing", (80,)),
    ("SolarizeAdd", (77,)),
    ("Color", (1.63,)),
    ("Contrast", (0.37,)),
    ("Brightness", (1.63,)),
    ("Sharpness", (1.63,)),
    ("ShearX", (0.21,)),
    ("ShearY", (-0.21,)),
    ("TranslateXRel", (0.315,)),
    ("TranslateYRel", (-0.315,)),
]
for name, args in cases:
    f = aa.NAME_TO_OP[name]
    t = min(timeit.repeat(lambda: f(img, *args, **dict(kw)), number=200, repeat=5)) / 200
    print(f"{name:<22} {t * 1e9:>10.0f} ns/frame")
ra = aa.rand_augment_transform(
    "rand-m7-n4-mstd0.5-inc1",
    {"translate_const": 100, "interpolation": Image.Resampling.BICUBIC},
)
t = min(timeit.repeat(lambda: ra(img), number=2000, repeat=3)) / 2000
print(f"rand-m7-n4-mstd0.5-inc1, one draw per frame: {t * 1e9:.0f} ns/frame")
