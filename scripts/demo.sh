#!/usr/bin/env bash
# The main job: a throwaway PostgreSQL plus the gateway, printing psql lines that work.
# Ctrl-C stops everything and removes the temporary files.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-tools.sh
exec cargo run --quiet --locked -p postern -- demo "$@"
