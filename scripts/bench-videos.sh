#!/usr/bin/env bash
# Sourced by the benchmarks that need real-looking videos (bench-shard.sh, bench-augment.sh):
#   bench_videos N DIR     makes DIR/v00.mp4 .. v(N-1).mp4 once (kept afterwards): portrait
#                          720x1280 H.264, 15 s at 30 fps, GOP 60, ~2 Mb/s, real motion from
#                          the xinpianchang sample (another window, tint and start each) plus
#                          film grain; 2 ffmpeg jobs at a time.
#   bench_root ROOT FILES  a fresh data root whose catalog holds FILES (paths) as verified
#                          downloads of the dataset "bench" (labels 0..3 in turn, split train),
#                          as if fetched; needs $bin (pmv-data) and sqlite3.

bench_gen_one() {
  local i=$1 dir=$2 src=$3 f
  f="$dir/v$(printf %02d "$i").mp4"
  [ -s "$f" ] && return 0
  local x=$(((i * 37) % 430)) hue=$(((i * 29) % 360))
  ffmpeg -v error -y -ss "0.$((i % 4))" -i "$src" -t 15 \
    -vf "crop=202:360:$x:0,scale=720:1280:flags=bicubic,setsar=1,hue=h=$hue,noise=alls=6:allf=t,fps=30" \
    -c:v libx264 -preset veryfast -threads 1 -b:v 2M -maxrate 3M -bufsize 4M \
    -g 60 -keyint_min 60 -sc_threshold 0 -pix_fmt yuv420p -an "$f.tmp.mp4"
  mv "$f.tmp.mp4" "$f"
}

bench_videos() {
  local n=$1 dir=$2 missing=0 i
  local src="$PWD/tests/data/xinpianchang/example/99945958.mp4"
  mkdir -p "$dir"
  for ((i = 0; i < n; i++)); do [ -s "$dir/v$(printf %02d $i).mp4" ] || missing=1; done
  if ((missing)); then
    echo "generating $n videos (once, a few minutes)..."
    export -f bench_gen_one
    seq 0 $((n - 1)) | xargs -P 2 -I{} bash -c "bench_gen_one {} '$dir' '$src'"
  fi
}

bench_root() {
  local root=$1
  shift
  local files=("$@") i key size sha
  rm -rf "$root"
  mkdir -p "$root/videos/bench"
  local manifest="$root.jsonl" sql="$root.sql"
  : >"$manifest"
  for ((i = 0; i < ${#files[@]}; i++)); do
    key=$(basename "${files[$i]}" .mp4)
    printf '{"id":"%s","label":%d,"split":"train"}\n' "$key" $((i % 4)) >>"$manifest"
  done
  "$bin" --root "$root" -q ingest --dataset bench --format jsonl "$manifest" >/dev/null
  echo "BEGIN;" >"$sql"
  for f in "${files[@]}"; do
    key=$(basename "$f" .mp4)
    ln -f "$f" "$root/videos/bench/$key.mp4" 2>/dev/null || cp "$f" "$root/videos/bench/$key.mp4"
    size=$(stat -c %s "$f")
    sha=$(sha256sum "$f" | cut -d' ' -f1)
    echo "INSERT INTO files (item_id, role, state, path, size, sha256, source_rank, attempts, updated_at)
      SELECT id, 'video', 'verified', 'videos/bench/$key.mp4', $size, '$sha', 0, 1, 0 FROM items WHERE key = '$key';" >>"$sql"
  done
  echo "COMMIT;" >>"$sql"
  sqlite3 "$root/catalog.sqlite" <"$sql"
  rm -f "$manifest" "$sql"
}
