#!/usr/bin/env bash
# One command for the proxy benchmark: installs pgbouncer and pgbench when missing, builds
# Postern in release mode and runs the interleaved comparison. Arguments go to the driver
# (e.g. `bench/run.sh --seconds 5 --reps 1 --quick`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-tools.sh
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
    else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null; fi
fi
cargo build --release --locked -p postern -p postern-bench
exec target/release/postern-bench --postern target/release/postern "$@"
