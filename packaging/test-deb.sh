#!/usr/bin/env bash
# The Debian package, installed for real: builds this checkout's .deb and an older one
# (OLD_REV, before the newest state migration), makes a new Debian 12 root with debootstrap,
# and there installs the old package, runs it as `postern` under the notify harness against
# a PostgreSQL, provisions a service and an API key, upgrades to the new package (the state
# migrates; secrets, key and configuration survive), runs it again, then removes and purges.
# Ends with lintian on the new package.
#
#   packaging/test-deb.sh            # about 15 minutes on 2 cores (two release builds)
#   OLD_DEB=path/to/old.deb packaging/test-deb.sh
#   OLD_TARGET_DIR=dir packaging/test-deb.sh   # reuse (or keep) the old build's target dir
#
# Needs root (debootstrap, chroot, mounts) and reaches Debian's mirror. Not run by CI.
# Logs in ${DEB_LOG_DIR:-/var/tmp/postern-deb-logs}; the root is removed at exit.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "test-deb: needs root (debootstrap, chroot, mount)" >&2; exit 2; }
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
base="${DEB_ROOT_DIR:-/var/tmp/postern-deb}"
root="$base/root"
logs="${DEB_LOG_DIR:-/var/tmp/postern-deb-logs}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# The last commit before state migration 14: its state database needs a migration.
old_rev="${OLD_REV:-868e4f9}"
pg_port=55499
proxy_port=56432
admin_port=58432
mkdir -p "$logs" "$base"

mounted=()
pg_dir=""
cleanup() {
    local i
    [ -n "$pg_dir" ] && runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
    # --one-file-system: a bind mount that failed to unmount is not followed into the host.
    rm -rf --one-file-system "$root" "$pg_dir" "$base/api-key"
}
trap cleanup EXIT
bind() { mkdir -p "$2" && mount --bind "$1" "$2" && mounted+=("$2"); }
step() { echo "== $*" >&2; }
# Owners are looked up inside the root (the host has no postern user).
check() { # check DESCRIPTION COMMAND...: one PASS or FAIL line
    if "${@:2}" >>"$logs/checks.log" 2>&1; then echo "ok: $1"; else echo "FAIL: $1" >&2; exit 1; fi
}
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
: >"$logs/checks.log"

for tool in debootstrap lintian; do
    command -v "$tool" >/dev/null 2>&1 ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null; }
done

step "building the new package"
new_deb="$(packaging/build-deb.sh 2>"$logs/build-new.log")"
if [ -n "${OLD_DEB:-}" ]; then
    old_deb="$OLD_DEB"
else
    step "building the old package ($old_rev)"
    old_tree="$base/old-tree"
    rm -rf "$old_tree" && git worktree add -f --detach "$old_tree" "$old_rev" >/dev/null
    old_target="${OLD_TARGET_DIR:-/var/tmp/postern-old-target}"
    (cd "$old_tree" && CARGO_TARGET_DIR="$old_target" cargo build --release --locked -p postern) \
        >"$logs/build-old.log" 2>&1
    git worktree remove --force "$old_tree"
    old_version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)+git$(git rev-list --count "$old_rev").$(git rev-parse --short "$old_rev")"
    new_bin="$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/postern"
    old_deb="$(packaging/build-deb.sh --binary "$old_target/release/postern" \
        --version "$old_version" --extras-from "$new_bin" 2>>"$logs/build-old.log")"
fi
echo "new: $new_deb"
echo "old: $old_deb"
echo "size: $(stat -c %s "$new_deb") bytes packed; binary $(dpkg-deb --fsys-tarfile "$new_deb" | tar -xO ./usr/bin/postern | wc -c) bytes stripped"

step "debootstrap bookworm"
rm -rf --one-file-system "$root"
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$logs/debootstrap.log" 2>&1 ||
    { tail -n 20 "$logs/debootstrap.log" >&2; exit 1; }
bind /proc "$root/proc"
bind /sys "$root/sys"
bind /dev "$root/dev"
bind /dev/pts "$root/dev/pts"
cp /etc/resolv.conf "$root/etc/resolv.conf"
[ -f /etc/ssl/certs/ca-certificates.crt ] &&
    mkdir -p "$root/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
# As in any image build: package scripts must not start services inside the root.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod +x "$root/usr/sbin/policy-rc.d"
cp "$new_deb" "$old_deb" "$root/tmp/"
new_in_root="/tmp/$(basename "$new_deb")"
old_in_root="/tmp/$(basename "$old_deb")"

step "PostgreSQL 15 on 127.0.0.1:$pg_port for the gateway to front"
pg_bin="$(ls -d /usr/lib/postgresql/15/bin)"
pg_dir="$(mktemp -d /var/tmp/postern-deb-pg.XXXXXX)"
chown postgres "$pg_dir"
echo superpw >"$pg_dir/.pw" && chown postgres "$pg_dir/.pw"
runuser -u postgres -- "$pg_bin/initdb" -D "$pg_dir/data" -A scram-sha-256 --pwfile="$pg_dir/.pw" -U postgres >"$logs/initdb.log"
runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w \
    -o "-p $pg_port -k /tmp -c listen_addresses=127.0.0.1" start >/dev/null
PGPASSWORD=superpw psql -qX -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE app_rw LOGIN PASSWORD 'app-rw-secret'" -c "CREATE DATABASE app OWNER app_rw"

# The service's user, as numbers (the host has no such user to look the name up in).
postern_user() { echo "$(in_root id -u postern):$(in_root id -g postern)"; }
# systemd's LoadCredential=: the key copied where only the service's user reads it.
load_credential() {
    mkdir -p "$root/run/credentials/postern.service"
    install -m 0400 -o "$(in_root id -u postern)" "$root/etc/postern/master-key" \
        "$root/run/credentials/postern.service/master-key"
}
# The installed gateway as systemd runs it: its user, the key as a credential.
serve_env=(PATH=/usr/bin:/bin CREDENTIALS_DIRECTORY=/run/credentials/postern.service
    POSTERN_LISTEN="127.0.0.1:$proxy_port" POSTERN_ADMIN_LISTEN="127.0.0.1:$admin_port")
serve_args=(/usr/bin/postern --config /etc/postern/postern.toml serve)
# Under the notify harness; $1 is the check to run once it is ready.
serve_under_harness() {
    load_credential
    # `env -i` would clear what the harness sets: its two variables are named again inside.
    python3 packaging/notify-harness.py --socket "$root/run/postern-notify" \
        --env-socket /run/postern-notify --watchdog-usec 3000000 --check "$1" -- \
        chroot --userspec="$(postern_user)" "$root" /usr/bin/env -i "${serve_env[@]}" \
        NOTIFY_SOCKET=/run/postern-notify WATCHDOG_USEC=3000000 "${serve_args[@]}"
}
# For a version that predates the notify protocol: waits for the port, runs the check, stops.
serve_plainly() {
    load_credential
    chroot --userspec="$(postern_user)" "$root" /usr/bin/env -i "${serve_env[@]}" "${serve_args[@]}" &
    local pid=$! deadline=$((SECONDS + 30))
    until (exec 3<>"/dev/tcp/127.0.0.1/$proxy_port") 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || { kill "$pid"; echo "the old gateway did not listen" >&2; return 1; }
        kill -0 "$pid" || { echo "the old gateway exited" >&2; return 1; }
        sleep 0.2
    done
    local rc=0
    bash -c "$1" || rc=$?
    kill -TERM "$pid"
    wait "$pid" || rc=$?
    return "$rc"
}
# The CLI as the service's user with its credential (a root shell would leave root-owned
# files in the state directory).
as_postern() {
    chroot --userspec="$(postern_user)" "$root" /usr/bin/env -i PATH=/usr/bin:/bin \
        CREDENTIALS_DIRECTORY=/run/credentials/postern.service \
        /usr/bin/postern --config /etc/postern/postern.toml "$@"
}
export -f as_postern in_root postern_user
export root

step "install the old package"
in_root apt-get update -qq >"$logs/apt.log" 2>&1
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$old_in_root" >>"$logs/apt.log" 2>&1 ||
    { tail -n 30 "$logs/apt.log" >&2; exit 1; }
check "user postern exists, with no login shell" bash -c '[ "$(in_root getent passwd postern | cut -d: -f7)" = /usr/sbin/nologin ]'
check "/etc/postern is root:postern 0750" bash -c '[ "$(in_root stat -c "%U:%G %a" /etc/postern)" = "root:postern 750" ]'
check "/var/lib/postern is postern 0700" bash -c '[ "$(in_root stat -c "%U:%G %a" /var/lib/postern)" = "postern:postern 700" ]'
check "the master key is root 0400" bash -c '[ "$(in_root stat -c "%U:%G %a" /etc/postern/master-key)" = "root:root 400" ]'
check "the config is root:postern 0640 and a conffile" bash -c '[ "$(in_root stat -c "%U:%G %a" /etc/postern/postern.toml)" = "root:postern 640" ] && grep -qx /etc/postern/postern.toml "$root/var/lib/dpkg/info/postern.conffiles"'
check "the unit is enabled" test -L "$root/etc/systemd/system/multi-user.target.wants/postern.service"
check "bash, zsh and fish completions" test -s "$root/usr/share/bash-completion/completions/postern" -a -s "$root/usr/share/zsh/vendor-completions/_postern" -a -s "$root/usr/share/fish/vendor_completions.d/postern.fish"
check "the man page" bash -c 'zcat "$root/usr/share/man/man1/postern.1.gz" | grep -q "^.TH postern 1"'
key_before="$(sha256sum "$root/etc/postern/master-key")"

step "run the old gateway (it predates sd_notify); provision a service and an API key"
cat >"$root/tmp/provision.yaml" <<EOF
kind: Namespace
metadata: {name: team-a}
---
kind: Target
metadata: {name: main-pg, namespace: team-a}
spec: {address: '127.0.0.1:$pg_port', sslMode: disable}
---
kind: Service
metadata: {name: orders, namespace: team-a}
spec: {target: main-pg, database: app, upstream: {mode: static, user: app_rw, passwordSecret: app-rw-password}}
---
kind: Identity
metadata: {name: alice, namespace: team-a}
spec: {type: human, groups: [engineering]}
EOF
chmod 644 "$root/tmp/provision.yaml"
serve_plainly "
    as_postern apply -f /tmp/provision.yaml >/dev/null &&
    echo app-rw-secret | as_postern secret set app-rw-password -n team-a >/dev/null &&
    (umask 077 && as_postern identity key create alice -n team-a >'$base/api-key') &&
    PGPASSWORD=\$(cat '$base/api-key') psql -qXAt -h 127.0.0.1 -p $proxy_port -U alice.team-a -d orders.team-a -c 'SELECT 40 + 1' | grep -qx 41
" >"$logs/serve-old.log" 2>&1 || { cat "$logs/serve-old.log" >&2; exit 1; }
echo "ok: the old package's gateway: provisioned, psql through it, stopped"
check "the bootstrap admin token was written on first start" test -s "$root/var/lib/postern/admin-token"

step "upgrade to the new package"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$new_in_root" >>"$logs/apt.log" 2>&1 ||
    { tail -n 30 "$logs/apt.log" >&2; exit 1; }
check "the new binary is installed" bash -c 'in_root postern version | grep -q "commit $(git -C "'"$repo"'" rev-parse --short=12 HEAD)"'
check "the master key is unchanged" bash -c '[ "$(sha256sum "$root/etc/postern/master-key")" = "'"$key_before"'" ]'
serve_under_harness "
    PGPASSWORD=\$(cat '$base/api-key') psql -qXAt -h 127.0.0.1 -p $proxy_port -U alice.team-a -d orders.team-a -c 'SELECT 41 + 1' | grep -qx 42
" >"$logs/serve-new.log" 2>&1 || { cat "$logs/serve-new.log" >&2; exit 1; }
echo "ok: after the upgrade: the state migrated, the old API key and sealed password still work"
grep "READY after" "$logs/serve-new.log"

step "remove, then purge"
in_root env DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq postern >>"$logs/apt.log" 2>&1
check "remove: the binary is gone" test ! -e "$root/usr/bin/postern"
check "remove: state and key stay" test -s "$root/var/lib/postern/state.db" -a -s "$root/etc/postern/master-key"
check "remove: the unit is masked (its enable link goes on purge, as debhelper does)" \
    bash -c '[ "$(readlink "$root/etc/systemd/system/postern.service")" = /dev/null ]'
in_root env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq postern >>"$logs/apt.log" 2>&1
check "purge: state and configuration are gone" test ! -e "$root/var/lib/postern" -a ! -e "$root/etc/postern"
check "purge: no enable link or mask is left" \
    test ! -L "$root/etc/systemd/system/multi-user.target.wants/postern.service" -a ! -L "$root/etc/systemd/system/postern.service"

step "lintian"
lintian --info "$new_deb" >"$logs/lintian.log" 2>&1 || true
cat "$logs/lintian.log"
echo "test-deb: PASS"
