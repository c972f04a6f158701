#!/usr/bin/env python3
"""Writes a synthetic xinpianchang metadata file (JSON lines) shaped like the real one.

The real `multimodal_data_info.json` has 562,342 rows for 499,607 unique mp4_id: a video
listed under several of the 31 labels has one row per label (up to 9). Fields and URL
patterns follow the real sample in tests/data/xinpianchang/example/. Deterministic for a
given seed. Used by scripts/bench.sh and the streaming tests.

usage: gen_xinpianchang.py OUT [--rows N] [--unique U] [--seed S]
"""
import argparse
import json
import random

LABELS = [
    "360VR", "4k", "Abstract", "Aerial", "Alpha Channel", "Animals", "Archival",
    "Backgrounds", "Beach", "Business", "Celebration", "City", "Clouds", "Corporate",
    "Explosion", "Film", "Green Screen", "Intro", "Military", "Nature", "News", "R3d",
    "Romantic", "Sea", "Sport", "Technology", "Timelapse", "Underwater", "Wedding",
    "space", "stars",
]
WORDS = ("city aerial drone sunset ocean wave forest mountain night timelapse people "
         "walking street traffic light abstract background loop cinematic slow motion "
         "beach clouds sky river snow 4k footage 城市 航拍 日落 海浪 森林 延时 夜景").split()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--rows", type=int, default=562_342)
    ap.add_argument("--unique", type=int, default=499_607)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    if args.unique > args.rows:
        raise SystemExit("--unique must not exceed --rows")
    rng = random.Random(args.seed)
    ids = rng.sample(range(10_000_000, 99_999_999), args.unique)
    # Every id once, then extra rows for ids listed under more labels (at most 9 each).
    rows = [(i, rng.randrange(len(LABELS))) for i in ids]
    extra = args.rows - args.unique
    counts = {}
    while extra > 0:
        i = ids[rng.randrange(len(ids))]
        if counts.get(i, 1) >= 9:
            continue
        counts[i] = counts.get(i, 1) + 1
        rows.append((i, rng.randrange(len(LABELS))))
        extra -= 1
    # Upstream groups rows by label directory.
    rows.sort(key=lambda r: r[1])
    with open(args.out, "w", encoding="utf-8") as f:
        for mp4_id, label in rows:
            secs = rng.randrange(5, 300)
            brief = " " + " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 12)))
            f.write(json.dumps({
                "mp4_id": str(mp4_id),
                "mp4_download_url": f"https://p5-v1.xpccdn.com/{mp4_id:09d}_main_xl.mp4",
                "mp4_time": f"{secs // 60}:{secs % 60:02d}",
                "mp4_background_image_url": f"https://p5-i1.xpccdn.com/{mp4_id:09d}_iconl.jpeg",
                "mp4_txt_brief": brief,
                "video_label": LABELS[label],
            }, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
