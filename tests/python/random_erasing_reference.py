"""Reference draws of timm's RandomErasing for the loader's random-erasing test.

Runs timm.data.random_erasing.RandomErasing itself (not a copy) with Python's `random`
seeded, on a C x H x W tensor of ones in `const` mode, and reads each erased rectangle
back from the zeros it left (one rectangle per image: max_count 1). With max_count > 1
the rectangles may overlap, so their sizes are recorded where timm asks for their
pixels. Prints JSON: "draws", and "erased" and "rects" ([[top, left, h, w], ...]) of
the single-rectangle run, "multi_erased" and "multi_sizes" ([[h, w], ...]) of the
other.

usage: random_erasing_reference.py H W PROBABILITY DRAWS MAX_COUNT
"""

import json
import random
import sys

import torch
from timm.data import random_erasing as re_mod


def main():
    h, w, p, draws, max_count = sys.argv[1:6]
    h, w, p, draws, max_count = int(h), int(w), float(p), int(draws), int(max_count)
    random.seed(0)
    torch.manual_seed(0)
    single = re_mod.RandomErasing(probability=p, mode="const", device="cpu")
    rects = []
    erased = 0
    for _ in range(draws):
        img = torch.ones(3, h, w)
        single(img)
        zero = (img[0] == 0).nonzero()
        if len(zero) == 0:
            continue
        erased += 1
        top, left = zero[:, 0].min().item(), zero[:, 1].min().item()
        bottom, right = zero[:, 0].max().item(), zero[:, 1].max().item()
        rects.append([top, left, bottom - top + 1, right - left + 1])

    sizes = []
    original = re_mod._get_pixels

    def record(per_pixel, rand_color, patch_size, dtype=torch.float32, device="cpu"):
        sizes.append([patch_size[1], patch_size[2]])
        return original(per_pixel, rand_color, patch_size, dtype=dtype, device=device)

    re_mod._get_pixels = record
    multi = re_mod.RandomErasing(
        probability=p, mode="const", max_count=max_count, device="cpu"
    )
    multi_erased = 0
    for _ in range(draws):
        before = len(sizes)
        multi(torch.ones(3, h, w))
        multi_erased += len(sizes) > before
    print(
        json.dumps(
            {
                "draws": draws,
                "erased": erased,
                "rects": rects,
                "multi_erased": multi_erased,
                "multi_sizes": sizes,
            }
        )
    )


if __name__ == "__main__":
    main()
