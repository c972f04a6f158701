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
#     before the first needed frame to the last needed one.
# Reports videos/s (median of RUNS), frames decoded per frame kept, and peak memory.
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

# --- the videos (generated once, then kept) -------------------------------------------
src="$PWD/tests/data/xinpianchang/example/99945958.mp4"
gen() {
  local i=$1 f="$videos/v$(printf %02d "$1").mp4"
  [ -s "$f" ] && return 0
  # Each video: another portrait window of the sample, another tint, another start.
  local x=$(( (i * 37) % 430 )) hue=$(( (i * 29) % 360 ))
  ffmpeg -v error -y -ss "0.$(( i % 4 ))" -i "$src" -t 15 \
    -vf "crop=202:360:$x:0,scale=720:1280:flags=bicubic,setsar=1,hue=h=$hue,noise=alls=6:allf=t,fps=30" \
    -c:v libx264 -preset veryfast -threads 1 -b:v 2M -maxrate 3M -bufsize 4M \
    -g 60 -keyint_min 60 -sc_threshold 0 -pix_fmt yuv420p -an "$f.tmp.mp4"
  mv "$f.tmp.mp4" "$f"
}
export -f gen
export videos src
missing=0
for ((i = 0; i < n; i++)); do [ -s "$videos/v$(printf %02d $i).mp4" ] || missing=1; done
if ((missing)); then
  echo "generating $n videos (once, a few minutes)..."
  seq 0 $((n - 1)) | xargs -P "$jobs" -I{} bash -c 'gen {}'
fi
mapfile -t files < <(ls "$videos"/v*.mp4 | sort)

# --- a data root holding them as verified downloads ------------------------------------
make_root() {
  local root=$1
  rm -rf "$root"
  mkdir -p "$root"
  local manifest="$work/bench.jsonl"
  : >"$manifest"
  for ((i = 0; i < n; i++)); do
    printf '{"id":"v%02d","label":%d,"split":"train"}\n' "$i" $((i % 4)) >>"$manifest"
  done
  "$bin" --root "$root" -q ingest --dataset bench --format jsonl "$manifest" >/dev/null
  mkdir -p "$root/videos/bench"
  local sql="$work/register.sql"
  echo "BEGIN;" >"$sql"
  for f in "${files[@]}"; do
    local key
    key=$(basename "$f" .mp4)
    ln -f "$f" "$root/videos/bench/$key.mp4" 2>/dev/null || cp "$f" "$root/videos/bench/$key.mp4"
    local size sha
    size=$(stat -c %s "$f")
    sha=$(sha256sum "$f" | cut -d' ' -f1)
    echo "INSERT INTO files (item_id, role, state, path, size, sha256, source_rank, attempts, updated_at)
      SELECT id, 'video', 'verified', 'videos/bench/$key.mp4', $size, '$sha', 0, 1, 0 FROM items WHERE key = '$key';" >>"$sql"
  done
  echo "COMMIT;" >>"$sql"
  sqlite3 "$root/catalog.sqlite" <"$sql"
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rate() { awk "BEGIN {printf \"%.2f\", $n / $1}"; }
first_entry=1
record() { # name videos_per_s decoded_per_kept peak_mb note
  ((first_entry)) || printf ',\n' >>"$out_json"
  first_entry=0
  printf '  {"case": "%s", "videos_per_s": %s, "decoded_per_kept": %s, "peak_rss_mb": "%s", "note": "%s"}' \
    "$1" "$2" "$3" "$4" "$5" >>"$out_json"
  printf '%-44s %8s videos/s  %6s decoded/kept  %7s MB peak  %s\n' "$1" "$2" "$3" "$4" "$5"
}
echo "[" >"$out_json"

for k in 1 5; do
  echo "== videomae-16x4-224, K=$k, $n videos, $jobs jobs ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
  # pmv-data
  walls=()
  rss=0
  for ((r = 0; r < runs; r++)); do
    make_root "$work/root"
    /usr/bin/time -f "%e %M" -o "$work/time.txt" "$bin" --root "$work/root" --json shard \
      --dataset bench --recipe videomae-16x4-224 --clips "$k" --jobs "$jobs" >"$work/report.json"
    read -r wall m <"$work/time.txt"
    walls+=("$wall")
    ((m > rss)) && rss=$m
  done
  wall=$(printf '%s\n' "${walls[@]}" | median)
  ratio=$("$py" -c "import json; r = json.load(open('$work/report.json')); print(round(r['decode_ratio'], 2))")
  record "pmv-data shard K=$k" "$(rate "$wall")" "$ratio" "$((rss / 1024))" "runs: ${walls[*]} s"
  # The frame indices it took (the same for every video here), for the peers.
  clips=$("$py" - "$work/root" <<'EOF'
import glob, json, sys, tarfile
path = sorted(glob.glob(sys.argv[1] + "/shards/bench/*/train/*.tar"))[0]
with tarfile.open(path) as t:
    m = next(m for m in t.getmembers() if m.name.endswith(".json"))
    print(json.dumps(json.loads(t.extractfile(m).read())["frame_indices"]))
EOF
)
  first=$("$py" -c "import json; print(min(min(c) for c in json.loads('$clips')))")
  last=$("$py" -c "import json; print(max(max(c) for c in json.loads('$clips')))")
  kf=$(( first / 60 * 60 ))
  # Frames the CLI decodes: from the keyframe before the first needed frame to the last.
  cli_ratio=$(awk "BEGIN {printf \"%.2f\", ($last - $kf + 1) / ($k * 16)}")
  select=$("$py" -c "import json; c = json.loads('$clips'); print('+'.join('eq(n\\\\,%d)' % (i - $first) for i in sorted(set(x for cl in c for x in cl))))")
  ss=$(awk "BEGIN {printf \"%.4f\", ($first - 0.5) / 30}")
  # ffmpeg command line
  walls=()
  for ((r = 0; r < runs; r++)); do
    rm -f "$work/cli-rss.txt"
    start=$(date +%s.%N)
    printf '%s\n' "${files[@]}" | xargs -P "$jobs" -I{} /usr/bin/time -f "%M" -a -o "$work/cli-rss.txt" \
      ffmpeg -v error -nostdin -threads 1 -ss "$ss" -i {} \
      -vf "select='$select',crop=720:720:0:280,scale=224:224:flags=bicubic+full_chroma_int+accurate_rnd" \
      -fps_mode passthrough -frames:v $((k * 16)) -f rawvideo -pix_fmt rgb24 -y /dev/null
    end=$(date +%s.%N)
    walls+=("$(awk "BEGIN {print $end - $start}")")
  done
  wall=$(printf '%s\n' "${walls[@]}" | median)
  cli_rss=$(sort -g "$work/cli-rss.txt" | tail -1)
  record "ffmpeg CLI K=$k" "$(rate "$wall")" "$cli_ratio" "$((cli_rss / 1024))x$jobs" "per process; runs: ${walls[*]} s"
  # PyAV
  if "$py" -c "import av" 2>/dev/null; then
    walls=()
    for ((r = 0; r < runs; r++)); do
      /usr/bin/time -f "%M" -o "$work/time.txt" "$py" scripts/bench_pyav.py "$jobs" "$clips" "${files[@]}" >"$work/pyav.json"
      walls+=("$("$py" -c "import json; print(json.load(open('$work/pyav.json'))['seconds'])")")
    done
    wall=$(printf '%s\n' "${walls[@]}" | median)
    pratio=$("$py" -c "import json; r = json.load(open('$work/pyav.json')); print(round(r['frames_decoded'] / r['frames_kept'], 2))")
    record "PyAV K=$k" "$(rate "$wall")" "$pratio" "$(( $(cat "$work/time.txt") / 1024 ))" "main process; runs: ${walls[*]} s"
  else
    echo "PyAV not installed in .venv: skipped (pip install av)"
  fi
  # GOP floor: decode only, exactly the frames from the keyframe before the first needed
  # frame to the last needed frame.
  walls=()
  for ((r = 0; r < runs; r++)); do
    start=$(date +%s.%N)
    printf '%s\n' "${files[@]}" | xargs -P "$jobs" -I{} \
      ffmpeg -v error -nostdin -threads 1 -ss "$(awk "BEGIN {print $kf / 30}")" -i {} \
      -frames:v $((last - kf + 1)) -f null -
    end=$(date +%s.%N)
    walls+=("$(awk "BEGIN {print $end - $start}")")
  done
  wall=$(printf '%s\n' "${walls[@]}" | median)
  record "GOP floor (decode only) K=$k" "$(rate "$wall")" "$cli_ratio" "-" "frames $kf..$last; runs: ${walls[*]} s"
done
printf '\n]\n' >>"$out_json"
echo "results: $out_json"
