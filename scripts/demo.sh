#!/usr/bin/env bash
# The main job on the built-in demo data: sets up (scripts/setup.sh), builds pmv-data
# and its trainer in release mode, then runs `pmv-data demo`: renders a synthetic
# portrait dataset whose classes need motion to tell apart, encodes it as H.264, serves
# it over HTTP from inside the process, ingests, fetches, shards, trains tiny3d on the
# CPU (or a GPU if one is found), evaluates it on held-out videos and prints top-1 and
# where the report is. Then `pmv-data status` shows the catalog. The data root is
# ./pmv-data-root unless PMV_DATA_ROOT says otherwise; a second run renders, downloads
# and shards nothing again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "building pmv-data (release; the first build takes several minutes)"
cargo build --release --quiet --bin pmv-data --bin pmv-data-train
bin=target/release/pmv-data
export PMV_DATA_ROOT="${PMV_DATA_ROOT:-$PWD/pmv-data-root}"

echo; echo "== pmv-data doctor"
"$bin" doctor
echo; echo "== pmv-data demo"
"$bin" demo "$@"
echo; echo "== pmv-data status"
"$bin" status --dataset demo
