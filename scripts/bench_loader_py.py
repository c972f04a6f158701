#!/usr/bin/env python3
"""The Python peer of `pmv-data-train bench-loader`: a VideoMAE-style fine-tuning loader.

Each clip goes the way VideoMAE's Kinetics fine-tuning dataset prepares one (decord reads
T frames `stride` apart from a random window of the video, resized on decode; timm's
RandAugment on PIL frames, the same draw for every frame; normalisation; a random resized
crop, area [0.08, 1] and aspect [3/4, 4/3], with torch's bilinear interpolation; a
horizontal flip; timm's random erasing, pixel mode), one process per core, one torch thread
per process. Prints one JSON object: clips/s in all and per process.

usage: bench_loader_py.py --videos FILE... [--procs N] [--clips N] [--frames 16] [--stride 4]
                          [--short 256] [--crop 224] [--aa rand-m7-n4-mstd0.5-inc1]
                          [--reprob 0.25]
"""

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import time


def rrc_params(h, w, scale, ratio, rng):
    """Area fraction and log-uniform aspect, ten tries, then the centre (torchvision's rule)."""
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, h - ch), rng.randint(0, w - cw), ch, cw
    side = min(h, w)
    return (h - side) // 2, (w - side) // 2, side, side


def worker(args, seed, queue):
    import decord
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from timm.data.auto_augment import rand_augment_transform
    from timm.data.random_erasing import RandomErasing

    torch.set_num_threads(1)
    rng = random.Random(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    aa = rand_augment_transform(
        args.aa,
        {"translate_const": int(args.crop * 0.45), "interpolation": Image.BICUBIC},
    )
    erase = RandomErasing(args.reprob, mode="pixel", max_count=1, device="cpu")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 1, 3)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 1, 3)
    videos = sorted(args.videos)

    # The decode size keeps each video's aspect, short side `args.short`.
    sizes = {}
    for v in videos:
        vr = decord.VideoReader(v, num_threads=1)
        h, w = vr[0].shape[:2]
        s = args.short / min(h, w)
        sizes[v] = (int(round(w * s)), int(round(h * s)))

    def one_clip():
        v = rng.choice(videos)
        w, h = sizes[v]
        vr = decord.VideoReader(v, width=w, height=h, num_threads=1)
        span = args.frames * args.stride
        end = rng.randint(min(span, len(vr)), len(vr))
        idx = np.clip(np.linspace(end - span, end, num=args.frames, endpoint=False).astype(np.int64), 0, len(vr) - 1)
        frames = vr.get_batch(list(idx)).asnumpy()
        # RandAugment draws once per call; a list of frames gets the same ops.
        pil = same_ops(aa, frames)
        x = torch.from_numpy(np.stack([np.asarray(p) for p in pil])).float().div_(255)
        x = (x - mean) / std  # T H W C
        x = x.permute(0, 3, 1, 2)  # T C H W
        top, left, ch, cw = rrc_params(x.shape[2], x.shape[3], (0.08, 1.0), (0.75, 1.3333), rng)
        x = F.interpolate(x[:, :, top : top + ch, left : left + cw], size=(args.crop, args.crop), mode="bilinear", align_corners=False)
        if rng.random() < 0.5:
            x = x.flip(-1)
        x = erase(x)
        return x.permute(1, 0, 2, 3).contiguous()  # C T H W

    one_clip()  # warm-up: imports, first decode
    started = time.perf_counter()
    for _ in range(args.clips):
        one_clip()
    queue.put((args.clips, time.perf_counter() - started))


def same_ops(aa, frames):
    """Applies one RandAugment draw to every frame of a clip, as VideoMAE's list-taking copy
    of timm's ops does: timm's transform runs on each frame with Python's and NumPy's random
    states rewound to where the clip began, so every frame gets the same ops and magnitudes."""
    import numpy as np
    from PIL import Image

    state = random.getstate()
    np_state = np.random.get_state()
    out = []
    for f in frames:
        random.setstate(state)
        np.random.set_state(np_state)
        out.append(aa(Image.fromarray(f)))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--videos", required=True, nargs="+")
    p.add_argument("--procs", type=int, default=os.cpu_count())
    p.add_argument("--clips", type=int, default=20)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--stride", type=int, default=4)
    p.add_argument("--short", type=int, default=256)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--aa", default="rand-m7-n4-mstd0.5-inc1")
    p.add_argument("--reprob", type=float, default=0.25)
    args = p.parse_args()
    queue = mp.get_context("fork").Queue()
    procs = [mp.get_context("fork").Process(target=worker, args=(args, 1000 + i, queue)) for i in range(args.procs)]
    for pr in procs:
        pr.start()
    results = [queue.get() for _ in procs]
    for pr in procs:
        pr.join()
    per_proc = [n / s for n, s in results]
    print(json.dumps({
        "bench": "loader-python",
        "pipeline": "decord + timm RandAugment + RRC + flip + random erasing",
        "procs": args.procs,
        "clips": sum(n for n, _ in results),
        "clips_per_s": sum(per_proc),
        "clips_per_s_per_proc": sum(per_proc) / len(per_proc),
        "frames": args.frames,
        "stride": args.stride,
        "short_side": args.short,
        "crop": args.crop,
        "aa": args.aa,
        "reprob": args.reprob,
    }))


if __name__ == "__main__":
    main()
