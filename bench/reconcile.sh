#!/usr/bin/env bash
# The reconciler at scale: builds in release mode and reconciles 1,000 identities x 50
# tables (first run and no-op run, timed). Arguments go to the driver
# (e.g. `bench/reconcile.sh --identities 200 --tables 20`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-tools.sh
cargo build --release --locked -p postern-bench --bin reconcile-scale
exec target/release/reconcile-scale "$@"
