"""PyAV peer of the shard benchmark (scripts/bench-shard.sh).

Samples the same frames as `pmv-data shard` (given as frame indices per clip), the way a
PyAV data loader does: per clip, seek to the keyframe before it, decode forward, and
for each needed frame resize the whole picture so its short side is 224 (bicubic) and
centre-crop 224x224. Videos are spread over N worker processes, each decoding with one
thread. Prints one JSON object: videos, seconds, videos per second, frames kept and
frames decoded.

usage: bench_pyav.py JOBS CLIPS_JSON VIDEO...
"""

import json
import multiprocessing as mp
import sys
import time

import av


def sample(args):
    path, clips = args
    kept = decoded = 0
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "SLICE"
        s.codec_context.thread_count = 1
        tb = float(s.time_base)
        fps = float(s.average_rate)
        w, h = s.codec_context.width, s.codec_context.height
        if w < h:
            sw, sh = 224, round(h * 224 / w)
        else:
            sw, sh = round(w * 224 / h), 224
        x0, y0 = (sw - 224) // 2, (sh - 224) // 2
        for idx in clips:
            want = set(idx)
            last = max(idx)
            c.seek(int(min(idx) / fps / tb), stream=s, backward=True)
            for f in c.decode(s):
                decoded += 1
                n = round(f.pts * tb * fps)
                if n in want:
                    img = f.reformat(
                        width=sw, height=sh, format="rgb24", interpolation="BICUBIC"
                    ).to_ndarray()[y0 : y0 + 224, x0 : x0 + 224]
                    kept += idx.count(n)
                    assert img.shape == (224, 224, 3)
                if n >= last:
                    break
    return kept, decoded


def main():
    jobs = int(sys.argv[1])
    clips = json.loads(sys.argv[2])
    videos = sys.argv[3:]
    t0 = time.perf_counter()
    with mp.Pool(jobs) as pool:
        results = pool.map(sample, [(v, clips) for v in videos], chunksize=1)
    dt = time.perf_counter() - t0
    kept = sum(r[0] for r in results)
    decoded = sum(r[1] for r in results)
    print(
        json.dumps(
            {
                "videos": len(videos),
                "seconds": dt,
                "videos_per_s": len(videos) / dt,
                "frames_kept": kept,
                "frames_decoded": decoded,
            }
        )
    )


if __name__ == "__main__":
    main()
