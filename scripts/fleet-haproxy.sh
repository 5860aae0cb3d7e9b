#!/usr/bin/env bash
# The fleet behind HAProxy (issue 22): three gateways on one PostgreSQL state behind
# Debian's HAProxy in TCP mode, pgbench sessions and a stream of new connections through
# it, one gateway SIGKILLed mid-run. Not in scripts/test.sh (it needs haproxy, which this
# installs when missing); runs the ignored test in crates/postern/tests/fleet.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-tools.sh
if ! [ -x /usr/sbin/haproxy ] && ! [ -x /usr/bin/haproxy ]; then
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
    else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; fi
    # The package starts its own service; this test runs its own instance.
    (systemctl stop haproxy || service haproxy stop) >/dev/null 2>&1 || true
fi
exec cargo test --locked -p postern --test fleet -- --ignored --exact \
    behind_haproxy_a_killed_gateway_loses_only_its_own_sessions --nocapture
