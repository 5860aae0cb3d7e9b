#!/usr/bin/env bash
# The soak: the gateway as shipped, with TLS, under 190 client sessions for 10 minutes
# (pgbench: simple, extended and prepared protocol, plain and TLS), RSS sampled every 10 s;
# then the RSS of 10,000 idle TLS clients waiting in authentication and of 100 idle
# logged-in TLS sessions. Not in CI. Arguments go to the driver
# (e.g. `bench/soak.sh --soak 60 --waiting-in-auth 2000`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-tools.sh
cargo build --release --locked -p postern -p postern-bench
exec target/release/postern-bench --postern target/release/postern --soak 600 "$@"
