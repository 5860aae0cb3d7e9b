#!/usr/bin/env bash
# Rebuilds the web UI from its sources: copies the API's OpenAPI document to ui/openapi.json,
# regenerates the typed client (ui/src/api/schema.d.ts) and builds ui/dist, which is committed
# and embedded in the binary (so `cargo build` needs no Node).
# `--check` changes nothing: it fails when the committed client or build is not what the
# sources give (CI runs it; the Rust test ui_openapi checks the document copy).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --check ]; then
    (cd ui && npm run --silent check)
    exit
fi
WRITE_UI_OPENAPI=1 cargo test --quiet -p postern-api --test ui_openapi >/dev/null
(cd ui && npm run --silent gen && npm run --silent build)
