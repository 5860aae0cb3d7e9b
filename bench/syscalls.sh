#!/usr/bin/env bash
# System calls and context switches per transaction of pgbouncer and of each gateway,
# counted by `perf stat` while the proxy bench runs: `bench/syscalls.sh [bench options]`,
# one case at a time (e.g. `--case '-S -M prepared -c8' --reps 1 --seconds 10`): counts
# are per process over the whole run, divided by the transactions it served. A relay
# that makes one read and one write per message each way spends four per `-S`
# round trip plus its waits. Needs perf; builds target/release.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
command -v perf >/dev/null || { echo "bench/syscalls.sh: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
cargo build --release -q -p postern -p postern-bench
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$target"/release/postern-bench --postern "$target"/release/postern "$@" >"$out/bench.md" &
bench=$!
trap 'kill "$bench" 2>/dev/null || true; rm -rf "$out"' EXIT
declare -A watched=()
for _ in $(seq 1200); do
  for name in pgbouncer.ini postern.toml postern-plain.toml postern-10-rules.toml; do
    [[ -z "${watched[$name]:-}" ]] || continue
    if pid=$(pgrep -f -- "/$name" | head -1) && [[ -n "$pid" ]]; then
      watched[$name]=$pid
      perf stat -x, -e raw_syscalls:sys_enter -e context-switches -p "$pid" -o "$out/$name.perf" &
    fi
  done
  [[ ${#watched[@]} -lt 4 ]] || break
  sleep 0.1
done
wait "$bench"
cat "$out/bench.md"
# perf stat writes its counts when the process it watches ends (the bench stops them).
for _ in $(seq 100); do
  [[ $(grep -l context-switches "$out"/*.perf 2>/dev/null | wc -l) -ge 4 ]] && break
  sleep 0.1
done
seconds=$(printf '%s\n' "$@" | awk 'prev == "--seconds" { print } { prev = $0 }')
seconds=${seconds:-20}
printf '\n| process | system calls per transaction | context switches per transaction |\n|---|---|---|\n'
for name in pgbouncer.ini postern.toml postern-plain.toml postern-10-rules.toml; do
  column=$(case $name in pgbouncer.ini) echo 4;; postern.toml) echo 5;; postern-plain.toml) echo 6;; postern-10-rules.toml) echo 7;; esac)
  txns=$(awk -F'|' -v c="$column" -v s="$seconds" '/^\| -/ || /^\| TPC/ { split($(c), a, " "); t += a[1] * s } END { print t }' "$out/bench.md")
  awk -F, -v n="$txns" -v p="${name%.*}" '
    /raw_syscalls/ { calls = $1 } /context-switches/ { switches = $1 }
    END { printf "| %s | %.2f | %.2f |\n", p, calls / n, switches / n }' "$out/$name.perf"
done
