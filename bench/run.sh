#!/usr/bin/env bash
# One command for the proxy benchmark: installs pgbouncer and pgbench when missing, builds
# Postern in release mode (and a no-op policy plugin) and runs the interleaved comparison. Arguments go to the driver
# (e.g. `bench/run.sh --seconds 5 --reps 1 --quick`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-tools.sh
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
    else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null; fi
fi
cargo build --release --locked -p postern -p postern-bench
# A policy-hook plugin that allows everything, called on every statement of one more
# gateway (the price of a plugin on the statement path).
CARGO_TARGET_DIR=target/plugins cargo build --release --locked --target wasm32-wasip2 \
    --manifest-path plugins/Cargo.toml -p misbehave
exec target/release/postern-bench --postern target/release/postern \
    --plugin target/plugins/wasm32-wasip2/release/misbehave.wasm "$@"
