#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (cargo-fuzz, libFuzzer, nightly toolchain), each from its
# seeds in fuzz/seeds plus the corpus earlier runs grew in fuzz/corpus, and prints one
# row per target: executions, seconds, executions a second, crashes (a crash leaves its
# input in fuzz/artifacts/TARGET and makes the script exit non-zero).
#
#   scripts/fuzz.sh                      # wire and SCRAM targets 10^7 runs, the others 10^6
#   scripts/fuzz.sh --runs 2000 [TARGET…]   # the same number for each (a smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."

WIRE_TARGETS=(startup frontend backend scram certificate)
OTHER_TARGETS=(resources cel classify)
runs=""
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${WIRE_TARGETS[@]}" "${OTHER_TARGETS[@]}")

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q '^nightly' || {
    echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 2
}

cd fuzz
cargo +nightly fuzz build --release
failed=0
printf '%-12s %14s %9s %11s %8s\n' target executions seconds 'execs/s' crashes
for target in "${targets[@]}"; do
    n="$runs"
    if [ -z "$n" ]; then
        n=1000000
        for wire in "${WIRE_TARGETS[@]}"; do [ "$wire" = "$target" ] && n=10000000; done
    fi
    mkdir -p "corpus/$target" "artifacts/$target" target/fuzz-logs
    log="target/fuzz-logs/$target.log"
    started=$(date +%s%N)
    status=0
    cargo +nightly fuzz run --release "$target" "corpus/$target" "seeds/$target" -- \
        -runs="$n" -print_final_stats=1 -max_len=8192 >"$log" 2>&1 || status=$?
    seconds=$(awk -v a="$started" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    executed=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    crashes=0
    if [ "$status" -ne 0 ]; then
        crashes=$(find "artifacts/$target" -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' | wc -l)
        [ "$crashes" -gt 0 ] || crashes=1
        failed=1
    fi
    rate=$(awk -v n="${executed:-0}" -v s="$seconds" 'BEGIN { printf "%d", (s > 0 ? n / s : 0) }')
    printf '%-12s %14s %9.0f %11s %8s\n' "$target" "${executed:-?}" "$seconds" "$rate" "$crashes"
    [ "$status" -eq 0 ] || grep -E -A12 '^(thread .* panicked|==[0-9]+==ERROR)' "$log" | head -40 >&2
done
exit $failed
