#!/usr/bin/env bash
# The shard benchmark (called by scripts/bench.sh shard): 40 generated portrait 720x1280
# H.264 videos of 15 s at 30 fps (GOP 60, ~2 Mb/s, real motion from the xinpianchang
# sample plus film grain), sampled with videomae-16x4-224 (16 frames 4 apart, short side
# 224, centre crop) at K=1 and K=5 clips, 2 parallel jobs, side by side with:
#   - the ffmpeg command line: one process per video (-threads 1), input seek to the
#     first needed frame + select + crop + scale (the same region and flags), raw RGB out;
#   - PyAV (if installed in .venv): seek to the keyframe before each clip, decode,
#     resize + centre crop, one process per job;
#   - the GOP floor: ffmpeg decoding (no scaling) exactly the frames from the keyframe
#     before the first needed frame to the last needed one;
#   - the reference floor: the same with -skip_frame noref, i.e. only the frames any
#     exact decoder must decode; and what starting an ffmpeg process costs.
# Reports videos/s (median of RUNS), frames decoded per frame kept, and peak memory; and,
# at K=1, the trainer's loader reading the shards against decoding the mp4s per step.
# Results: stdout and target/bench/shard.json.
#
# usage: scripts/bench-shard.sh [--quick]      (QUICK: 1 run each instead of 3)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=3
[ "${1:-}" = "--quick" ] && runs=1
jobs=2
n=40
bin="$PWD/target/release/pmv-data"
cargo build --release --quiet --bin pmv-data
py="$PWD/.venv/bin/python"
work="$PWD/target/bench/shard"
videos="$work/videos"
mkdir -p "$videos"
out_json="$work/../shard.json"

# --- the videos (generated once, then kept), and data roots holding them -----------------
source scripts/bench-videos.sh
bench_videos "$n" "$videos"
mapfile -t files < <(ls "$videos"/v*.mp4 | sort | head -n "$n")
make_root() { bench_root "$1" "${files[@]}"; }

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
minimum() { sort -g | head -1; }
first_entry=1
# record NAME LABEL DECODED_PER_KEPT PEAK NOTE: summarises $work/m-NAME.txt (one "wall cpu
# rss" line per run) as videos/s (best run and median) and CPU milliseconds per video.
record() {
  local m="$work/m-$1.txt"
  shift
  local best med cpu vbest vmed cpv
  best=$(cut -d' ' -f1 "$m" | minimum)
  med=$(cut -d' ' -f1 "$m" | median)
  cpu=$(cut -d' ' -f2 "$m" | median)
  vbest=$(awk "BEGIN {printf \"%.2f\", $n / $best}")
  vmed=$(awk "BEGIN {printf \"%.2f\", $n / $med}")
  cpv=$(awk "BEGIN {printf \"%.0f\", 1000 * $cpu / $n}")
  ((first_entry)) || printf ',\n' >>"$out_json"
  first_entry=0
  printf '  {"case": "%s K=%s", "videos_per_s_best": %s, "videos_per_s_median": %s, "cpu_ms_per_video": %s, "decoded_per_kept": "%s", "peak_rss_mb": "%s", "runs_s": [%s], "note": "%s"}' \
    "$1" "$k" "$vbest" "$vmed" "$cpv" "$2" "$3" "$(cut -d' ' -f1 "$m" | paste -sd,)" "$4" >>"$out_json"
  printf '%-12s %6s videos/s best %6s median %6s CPU ms/video %6s decoded/kept %7s MB  %s\n' \
    "$1" "$vbest" "$vmed" "$cpv" "$2" "$3" "$4"
}
# timed NAME CMD...: runs CMD and appends "wall cpu rss" to $work/m-NAME.txt (cpu: user +
# system time of CMD and every child it waited for).
timed() {
  local name=$1
  shift
  /usr/bin/time -f "%e %U %S %M" -o "$work/t.txt" "$@" >"$work/out-$name.txt" 2>"$work/err.txt" ||
    { cat "$work/err.txt" >&2; echo "bench: $name failed" >&2; exit 1; }
  local e u s m
  read -r e u s m <"$work/t.txt"
  echo "$e $(awk "BEGIN {print $u + $s}") $m" >>"$work/m-$name.txt"
}
# The ffmpeg command line over every video, $jobs at a time.
cli() {
  printf '%s\n' "${files[@]}" | xargs -P "$jobs" -I{} /usr/bin/time -f "%M" -a -o "$work/cli-rss.txt" \
    ffmpeg -v error -nostdin -threads 1 -ss "$ss" -i {} \
    -vf "select='$select',crop=720:720:0:280,scale=224:224:flags=bicubic+full_chroma_int+accurate_rnd" \
    -fps_mode passthrough -frames:v $((k * 16)) -f rawvideo -pix_fmt rgb24 -y /dev/null
}
# Decoding only: the frames from the keyframe before the first needed one to the last.
floor() {
  printf '%s\n' "${files[@]}" | xargs -P "$jobs" -I{} \
    ffmpeg -v error -nostdin -threads 1 -ss "$(awk "BEGIN {print $kf / 30}")" -i {} \
    -frames:v $((last - kf + 1)) -f null -
}
# Decoding only the frames every decoder must: the reference frames from that keyframe
# to the last needed frame (-skip_frame noref), the floor for exact decoding.
reffloor() {
  printf '%s\n' "${files[@]}" | xargs -P "$jobs" -I{} \
    ffmpeg -v error -nostdin -threads 1 -skip_frame noref -ss "$(awk "BEGIN {print $kf / 30}")" -i {} \
    -t "$(awk "BEGIN {print ($last - $kf + 1) / 30}")" -f null -
}
# What starting an ffmpeg process costs.
startup() {
  printf '%s\n' "${files[@]}" | xargs -P "$jobs" -I{} ffmpeg -v error -nostdin -version
}
export -f cli floor reffloor startup
have_av=0
if "$py" -c "import av" 2>/dev/null; then
  have_av=1
else
  echo "PyAV not installed in .venv: skipped (pip install av)"
fi
echo "[" >"$out_json"

for k in 1 5; do
  echo "== videomae-16x4-224, K=$k, $n videos, $jobs jobs ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load $(cut -d' ' -f1-3 /proc/loadavg)"
  rm -f "$work"/m-*.txt "$work/cli-rss.txt"
  # One pmv-data run first: the peers take the frames it took (of a 450-frame video).
  make_root "$work/root"
  "$bin" --root "$work/root" --json shard --dataset bench --recipe videomae-16x4-224 \
    --clips "$k" --jobs "$jobs" >"$work/report.json"
  clips=$("$py" - "$work/root" <<'PY'
import glob, json, sys, tarfile
for path in sorted(glob.glob(sys.argv[1] + "/shards/bench/*/train/*.tar")):
    with tarfile.open(path) as t:
        for m in t.getmembers():
            if m.name.endswith(".json"):
                meta = json.loads(t.extractfile(m).read())
                if meta["source_frames"] == 450:
                    print(json.dumps(meta["frame_indices"]))
                    sys.exit(0)
sys.exit("no 450-frame sample")
PY
)
  first=$("$py" -c "import json; print(min(min(c) for c in json.loads('$clips')))")
  last=$("$py" -c "import json; print(max(max(c) for c in json.loads('$clips')))")
  kf=$((first / 60 * 60))
  # The command line decodes every frame from that keyframe to the last needed one.
  cli_ratio=$(awk "BEGIN {printf \"%.2f\", ($last - $kf + 1) / ($k * 16)}")
  select=$("$py" -c "import json; c = json.loads('$clips'); print('+'.join('eq(n\\\\,%d)' % (i - $first) for i in sorted(set(x for cl in c for x in cl))))")
  ss=$(awk "BEGIN {printf \"%.4f\", ($first - 0.5) / 30}")
  export files_list="${files[*]}" ss select k kf last jobs work
  # The cases take turns, so that load from other processes falls on all of them alike.
  for ((r = 0; r < runs; r++)); do
    make_root "$work/root"
    timed pmv "$bin" --root "$work/root" --json shard --dataset bench --recipe videomae-16x4-224 \
      --clips "$k" --jobs "$jobs"
    cp "$work/out-pmv.txt" "$work/report.json"
    timed cli bash -c 'files=($files_list); cli'
    if ((have_av)); then
      timed pyav "$py" scripts/bench_pyav.py "$jobs" "$clips" "${files[@]}"
    fi
    timed floor bash -c 'files=($files_list); floor'
    timed reffloor bash -c 'files=($files_list); reffloor'
    timed startup bash -c 'files=($files_list); startup'
  done
  ratio=$("$py" -c "import json; r = json.load(open('$work/report.json')); print(round(r['decode_ratio'], 2))")
  rss=$(cut -d' ' -f3 "$work/m-pmv.txt" | sort -g | tail -1)
  record pmv pmv-data "$ratio" "$((rss / 1024))" "pmv-data shard --jobs $jobs"
  cli_rss=$(sort -g "$work/cli-rss.txt" | tail -1)
  record cli ffmpeg-cli "$cli_ratio" "$((cli_rss / 1024))x$jobs" "a process per video (-threads 1): input seek, select, crop, scale"
  if ((have_av)); then
    pratio=$("$py" -c "import json; r = json.load(open('$work/out-pyav.txt')); print(round(r['frames_decoded'] / r['frames_kept'], 2))")
    prss=$(cut -d' ' -f3 "$work/m-pyav.txt" | sort -g | tail -1)
    record pyav pyav "$pratio" "$((prss / 1024))" "a pool of $jobs processes: seek per clip, resize, crop"
  fi
  record floor gop-floor "$cli_ratio" "-" "ffmpeg decoding only frames $kf..$last, no scaling"
  record reffloor ref-floor "-" "-" "ffmpeg decoding only the reference frames of $kf..$last"
  record startup ffmpeg-start "-" "-" "ffmpeg -version: the process start the CLI rows include"
  if ((k == 1)); then
    # The trainer's view of the same work: a training step needs one clip of each video.
    # Decoding it from the mp4 through the media layer is what `pmv-data shard` just
    # timed (one clip per video, same sampling and scaling); the loader instead reads the
    # K=1 shards it wrote, with the training augmentation (random resized crop to
    # 224x224, flip), on the same $jobs threads.
    cargo build --release --quiet --bin pmv-data-train
    shards=$(ls -d "$work"/root/shards/bench/*/train)
    "$PWD/target/release/pmv-data-train" --json --quiet bench-loader --shards "$shards" \
      --batch 8 --size 224x224 --workers "$jobs" --epochs 25 >"$work/loader.json"
    loader=$("$py" -c "import json; print(round(json.load(open('$work/loader.json'))['clips_per_s'], 1))")
    decode=$(awk "BEGIN {printf \"%.2f\", $n / $(cut -d' ' -f1 "$work/m-pmv.txt" | median)}")
    printf ',\n  {"case": "loader vs decoding per step", "loader_clips_per_s": %s, "decode_clips_per_s": %s, "ratio": %s}' \
      "$loader" "$decode" "$(awk "BEGIN {printf \"%.1f\", $loader / $decode}")" >>"$out_json"
    printf '%-12s %6s clips/s from shards vs %s clips/s decoding the mp4s (%sx)\n' loader "$loader" "$decode" \
      "$(awk "BEGIN {printf \"%.1f\", $loader / $decode}")"
  fi
done
printf '\n]\n' >>"$out_json"
echo "results: $out_json"
