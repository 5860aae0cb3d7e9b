#!/usr/bin/env bash
# Instructions per transaction of each gateway thread, counted by callgrind while the
# proxy bench drives real traffic: `bench/gateway-callgrind.sh OUT_DIR [bench options]`
# runs `postern-bench --postern <this script>` (so every `postern serve` the bench starts
# runs under callgrind, collecting from the moment it listens, one file per thread) and
# then prints, per gateway and thread, instructions divided by the transactions that
# gateway served. Slow (callgrind runs the gateway ~50 times slower): use one or two
# `--case`s, `--reps 1`. Needs valgrind; builds target/release.
set -euo pipefail
if [[ "${1:-}" == --as-postern ]]; then
  # Started by the bench in place of postern.
  shift
  [[ " $* " == *" serve "* ]] || exec "$GATEWAY_CALLGRIND_BIN" "$@"
  args=("$@")
  config=unknown port=
  for ((i = 0; i < ${#args[@]} - 1; i++)); do
    case "${args[$i]}" in
      --config) config=$(basename "${args[$((i + 1))]}" .toml) ;;
      --listen) port=${args[$((i + 1))]##*:} ;;
    esac
  done
  # Instrumentation starts once the gateway listens: start-up is not counted.
  (
    for _ in $(seq 600); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.1
    done
    callgrind_control -i on $$ >/dev/null 2>&1
  ) &
  exec valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes \
    --callgrind-out-file="$GATEWAY_CALLGRIND_OUT/$config.%p" "$GATEWAY_CALLGRIND_BIN" "$@"
fi
out=${1:?usage: bench/gateway-callgrind.sh OUT_DIR [bench options]}
shift
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
command -v valgrind >/dev/null || { echo "bench/gateway-callgrind.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
cargo build --release -q -p postern -p postern-bench
mkdir -p "$out"
out=$(cd "$out" && pwd)
self=$(pwd)/bench/gateway-callgrind.sh
wrapper=$(mktemp)
trap 'rm -f "$wrapper"' EXIT
printf '#!/bin/sh\nexec %q --as-postern "$@"\n' "$self" >"$wrapper"
chmod +x "$wrapper"
GATEWAY_CALLGRIND_BIN=$(cd "$target"/release && pwd)/postern GATEWAY_CALLGRIND_OUT=$out \
  "$target"/release/postern-bench --postern "$wrapper" "$@" | tee "$out/bench.md"
# Transactions each gateway served: the sum over cases of median tps × seconds (one rep
# is the run itself).
seconds=$(printf '%s\n' "$@" | awk 'prev == "--seconds" { print } { prev = $0 }')
seconds=${seconds:-20}
for gateway in postern postern-plain postern-10-rules; do
  column=$(case $gateway in postern) echo 5;; postern-plain) echo 6;; postern-10-rules) echo 7;; esac)
  txns=$(awk -F'|' -v c="$column" -v s="$seconds" '/^\| -/ || /^\| TPC/ { split($(c), a, " "); t += a[1] * s } END { print t }' "$out/bench.md")
  echo "== $gateway: $txns transactions; instructions per transaction by thread (its busiest function)"
  for file in "$out/$gateway".[0-9]*-[0-9]*; do
    total=$(sed -n 's/^totals: //p' "$file")
    [[ "${total:-0}" -gt 1000000 ]] || continue
    top=$(callgrind_annotate --inclusive=no "$file" 2>/dev/null | sed -n '/file:function/,$p' | sed -n 3p |
      sed -E 's/^ *[0-9,]+ \([ 0-9.]+%\) +//; s/ \[.*$//; s/^(\?\?\?|\.[^:]*)://' | cut -c1-90)
    awk -v t="$total" -v n="$txns" -v top="$top" 'BEGIN { printf "  %8.0f  %s\n", t / n, top }'
  done
done
