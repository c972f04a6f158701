#!/usr/bin/env bash
# The test command: sets up (scripts/setup.sh), then runs every check CI runs:
# formatting, lints, docs, the builds without default features, and all tests.
# `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# A cold build of every check below leaves about 5.3 GiB under target/, and the tests
# write some hundreds of MB more.
free_gib=$(df -Pk . | awk 'NR == 2 { print int($4 / 1048576) }')
if ((free_gib < 7)); then
  echo "test: warning: only $free_gib GiB free on the disk of $PWD; a cold build and the tests need about 7" >&2
fi

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
step() { echo; echo "== $*"; }

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy (every crate, all targets, all features)"
cargo clippy --workspace --all-targets --all-features -- -D warnings
step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features
step "build without default features (no FFmpeg), and the trainer alone (a GPU box)"
cargo check --workspace --no-default-features --all-targets
cargo check -p pmv-train --all-targets
step "the crate graph, and no import cycle between the modules of a crate"
python3 scripts/check-graph.py
step "cargo test (every crate, all features)"
# Cargo builds a package's binaries only for that package's integration tests; the
# tests in tests/it run the trainer too, which is another package's binary.
cargo build -p pmv-train --bin pmv-data-train
cargo test --workspace --all-features
