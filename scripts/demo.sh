#!/usr/bin/env bash
# The main job on the built-in data: sets up (scripts/setup.sh), builds pmv-data, checks
# the machine, ingests the real PMV-400 lists shipped in manifests/pmv400 and shows the
# catalog. The data root is ./pmv-data-root unless PMV_DATA_ROOT says otherwise; running
# it again finds the lists unchanged and writes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --quiet
bin=target/release/pmv-data
export PMV_DATA_ROOT="${PMV_DATA_ROOT:-$PWD/pmv-data-root}"

echo; echo "== pmv-data doctor"
"$bin" doctor
echo; echo "== pmv-data ingest: the PMV-400 lists (train, val, test) and taxonomy"
set +e
"$bin" ingest --dataset pmv400 --format pmv400 \
  manifests/pmv400/train_pmv400.csv manifests/pmv400/val_pmv400.csv manifests/pmv400/test_pmv400.csv
code=$?
set -e
[ "$code" = 0 ] || { echo "ingest exited $code" >&2; exit "$code"; }
echo; echo "== pmv-data status"
"$bin" status
