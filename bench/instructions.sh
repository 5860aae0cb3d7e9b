#!/usr/bin/env bash
# Instructions per operation of the statement path's hot pieces, counted by callgrind
# (exact and repeatable where timings on a shared box are not): classification by the
# parser and from the cache, a ten-rule check, an event pushed into the access log, an
# event written by the state sink, a relayed message scanned. Compare runs to see
# regressions. Needs valgrind (`apt-get install valgrind`).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
command -v valgrind >/dev/null || { echo "bench/instructions.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
cargo build --release -q -p postern-bench --bin instructions
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '%-16s %12s\n' piece 'Ir/op'
for piece in classify_miss classify_hit ten_rule_check ten_rule_recheck event_push state_write frame_scan frame_scan_watched redact_clean; do
  ops=$(valgrind --tool=callgrind --toggle-collect="*piece_${piece}*" \
    --callgrind-out-file="$out/$piece" "$target"/release/instructions "$piece" 2>/dev/null)
  total=$(sed -n 's/^summary: //p' "$out/$piece")
  awk -v p="$piece" -v t="$total" -v n="$ops" 'BEGIN { printf "%-16s %12.0f\n", p, t / n }'
done
