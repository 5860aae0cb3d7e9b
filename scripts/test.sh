#!/usr/bin/env bash
# The whole test suite: formatting, lints (warnings are errors) and every test, the
# end-to-end ones against a real PostgreSQL 15 started by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-tools.sh
cargo fmt --all --check
cargo fmt --all --check --manifest-path plugins/Cargo.toml
# The fuzz targets build with the nightly toolchain (scripts/fuzz.sh); formatting only here.
cargo fmt --all --check --manifest-path fuzz/Cargo.toml
# The committed web UI build and API client are what ui/'s sources give.
scripts/build-ui.sh --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The example plugins are a workspace of their own (they target WebAssembly).
CARGO_TARGET_DIR=target/plugins cargo clippy --manifest-path plugins/Cargo.toml --locked \
    --target wasm32-wasip2 --release -- -D warnings
cargo test --workspace --locked
CARGO_TARGET_DIR=target/plugins-host cargo clippy --manifest-path plugins/Cargo.toml --locked \
    --all-targets -p postern-plugin-sdk --features postern-plugin-sdk/jwt -p table-window \
    -p otlp-logs -p jwt-auth -- -D warnings
# The plugin SDK's unit tests, and the examples' against its fake host, run on the host
# (as plugin authors run theirs).
CARGO_TARGET_DIR=target/plugins-host cargo test --manifest-path plugins/Cargo.toml --locked \
    -p postern-plugin-sdk --features postern-plugin-sdk/jwt -p table-window -p otlp-logs -p jwt-auth
