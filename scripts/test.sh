#!/usr/bin/env bash
# The whole test suite: formatting, lints (warnings are errors) and every test, the
# end-to-end ones against a real PostgreSQL 15 started by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-tools.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
