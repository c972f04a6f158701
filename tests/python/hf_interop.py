"""A run folder as a Hugging Face user picks it up, for the interoperability test.

Loads the run's preprocessing with `AutoImageProcessor.from_pretrained(run)` and
classifies every sample of the given shards (its middle stored clip, what `eval --views
1x1` takes) with `transformers.pipeline("video-classification", model=run,
image_processor=...)`, both ways the pipeline takes a video:
  file:   the image processor on frames the pipeline decodes from a video file with
          PyAV (transformers 4's only way; the clip is written as lossless FFV1 first,
          so the pipeline sees the stored frames);
  frames: the stored frames given as an array, through the video processor
          transformers 5 builds from the same preprocessor_config.json (absent with
          transformers 4, which has no video processors).

Also reads the evaluation's `probabilities.npy` with numpy and checks it against
`predictions.csv`: the same rows in the same order, and every probability the csv
lists equal to the array's, bit for bit.

usage: hf_interop.py RUN EVAL_DIR WORK SHARD.tar...
prints: {"processor": class name, "processor_config": {...},
         "file": {key: [label, score]}, "frames": {key: [label, score]} or null,
         "npy_shape": [N, C]}
"""

import csv
import io
import json
import os
import sys
import tarfile

import av
import numpy as np
from transformers import AutoImageProcessor, pipeline


def samples(shard):
    """(key, frames [K, T, H, W, 3] uint8) of every sample with raw frames."""
    members = {}
    with tarfile.open(shard) as tar:
        for m in tar.getmembers():
            if m.name.endswith(".frames.npy"):
                key = m.name[: -len(".frames.npy")]
                members[key] = np.load(io.BytesIO(tar.extractfile(m).read()))
    for key in sorted(members):
        a = members[key]
        yield key, a.reshape((-1,) + a.shape[-4:])


def write_video(path, frames, fps=6):
    """Frames [T, H, W, 3] as lossless FFV1 in Matroska."""
    container = av.open(path, "w")
    stream = container.add_stream("ffv1", rate=fps)
    stream.height, stream.width = frames.shape[1], frames.shape[2]
    stream.pix_fmt = "bgr0"
    for f in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def check_probabilities(eval_dir, classes):
    """predictions.csv's probabilities are probabilities.npy's, row by row."""
    probs = np.load(os.path.join(eval_dir, "probabilities.npy"))
    assert probs.dtype == np.float32, probs.dtype
    index = {name: i for i, name in enumerate(classes)}
    with open(os.path.join(eval_dir, "predictions.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert probs.shape == (len(rows), len(classes)), (probs.shape, len(rows))
    for r, row in enumerate(rows):
        assert np.float32(row["confidence"]) == probs[r].max(), (row, probs[r])
        assert index[row["predicted"]] == int(np.argmax(probs[r])), (row, probs[r])
        listed = [t.rsplit(":", 1) for t in row["top5"].split("|")]
        assert len(listed) == min(5, len(classes)), row
        for name, p in listed:
            assert np.float32(p) == probs[r, index[name]], (row, name, probs[r])
    return list(probs.shape)


def main():
    run, eval_dir, work = sys.argv[1:4]
    shards = sys.argv[4:]
    processor = AutoImageProcessor.from_pretrained(run)
    classify = pipeline("video-classification", model=run, image_processor=processor)
    labels = classify.model.config.id2label
    classes = [labels[i] for i in range(len(labels))]
    clips = [(key, c[len(c) // 2]) for shard in shards for key, c in samples(shard)]
    frames = None
    if getattr(classify, "video_processor", None) is not None:
        frames = {}
        for key, clip in clips:
            best = classify(clip, top_k=1)[0]
            frames[key] = [best["label"], best["score"]]
        # Without it the pipeline decodes files and prepares them with the image
        # processor, as transformers 4 does.
        classify.video_processor = None
    files = {}
    for key, clip in clips:
        path = os.path.join(work, key + ".mkv")
        write_video(path, clip)
        best = classify(path, top_k=1)[0]
        files[key] = [best["label"], best["score"]]
    print(
        json.dumps(
            {
                "processor": type(processor).__name__,
                "processor_config": processor.to_dict(),
                "file": files,
                "frames": frames,
                "npy_shape": check_probabilities(eval_dir, classes),
            }
        )
    )


if __name__ == "__main__":
    main()
