#!/usr/bin/env bash
# Proves the README's set-up on a fresh machine: builds a minimal Debian 12 root with
# debootstrap, copies this checkout in, and runs scripts/ensure-tools.sh then `cargo build`
# inside it with only the Rust toolchain bind-mounted (read-only) and the package clients'
# configuration of this kind of machine carried in (pip's and npm's config files, PIP_*
# variables, the machine's CAs), so the root reaches the same registries.
#
#   scripts/fresh-machine-check.sh            # both variants below, one after the other
#   scripts/fresh-machine-check.sh bare       # a minbase root only
#   scripts/fresh-machine-check.sh shipped    # minbase plus what a machine of this kind ships
#                                             # (gcc, python3, libclang-cpp14, …) installed first
#
# A bare minbase root has no libclang-cpp, so it alone would not catch a detection that
# mistakes libclang-cpp for libclang: that is why the "shipped" variant exists.
# Needs root (debootstrap, chroot, mounts). Takes several minutes per variant; not run by CI.
# The roots live under ${FRESH_ROOT_DIR:-/var/tmp/postern-fresh} and are removed at exit;
# the logs stay in ${FRESH_LOG_DIR:-/var/tmp/postern-fresh-logs}.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "fresh-machine-check: needs root (debootstrap, chroot, mount)" >&2; exit 2; }
repo="$(cd "$(dirname "$0")/.." && pwd)"
base="${FRESH_ROOT_DIR:-/var/tmp/postern-fresh}"
logs="${FRESH_LOG_DIR:-/var/tmp/postern-fresh-logs}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# What every machine of this kind ships beside the Rust toolchain (see the env notes): a C
# compiler, Python, and LLVM's C++ library, which a loose libclang check mistakes for libclang.
shipped_packages="gcc,libc6-dev,python3,python3-pip,libclang-cpp14,ca-certificates,git"
variants=("$@")
[ "${#variants[@]}" -gt 0 ] || variants=(bare shipped)

command -v debootstrap >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }

rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
toolchain="$(rustup show active-toolchain | cut -d' ' -f1)"

mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
    rm -rf "$base"
}
trap cleanup EXIT
mkdir -p "$logs"

bind() { # bind SRC DST [ro]
    mkdir -p "$2"
    mount --bind "$1" "$2"
    mounted+=("$2")
    if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}

run_variant() {
    local variant="$1" root="$base/$1" include=""
    [ "$variant" = shipped ] && include="--include=$shipped_packages"
    [ "$variant" = bare ] || [ "$variant" = shipped ] ||
        { echo "fresh-machine-check: unknown variant '$variant' (bare or shipped)" >&2; return 2; }
    echo "== $variant: debootstrap bookworm into $root" >&2
    rm -rf "$root"
    # shellcheck disable=SC2086 # $include is one word or none
    debootstrap --variant=minbase $include bookworm "$root" "$mirror" >"$logs/$variant-debootstrap.log" 2>&1 ||
        { tail -n 20 "$logs/$variant-debootstrap.log" >&2; return 1; }

    # The checkout as a fresh clone would have it: tracked and untracked-but-not-ignored files.
    mkdir -p "$root/work/postern"
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard) |
        (cd "$repo" && xargs -0 cp --parents -t "$root/work/postern" 2>/dev/null || true)

    # Only the Rust toolchain comes from the host, read-only; cargo's registry cache and
    # target dir are the root's own.
    bind "$rustup_home" "$root/opt/rustup" ro
    bind "$cargo_home/bin" "$root/opt/cargo-bin" ro
    bind /proc "$root/proc"
    bind /sys "$root/sys"
    bind /dev "$root/dev"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    # As in any image build: package scripts must not start services inside the root.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod +x "$root/usr/sbin/policy-rc.d"
    # Package clients' configuration every machine of this kind has.
    for f in /etc/pip.conf /root/.config/pip/pip.conf /root/.pip/pip.conf /root/.npmrc /etc/npmrc; do
        if [ -f "$f" ]; then mkdir -p "$root$(dirname "$f")" && cp "$f" "$root$f"; fi
    done
    # The machine's own CAs (registries are reached through them): in the bundle, and
    # where update-ca-certificates finds them again when a package rebuilds the bundle.
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        mkdir -p "$root/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    fi
    if [ -d /usr/local/share/ca-certificates ]; then
        mkdir -p "$root/usr/local/share" && cp -r /usr/local/share/ca-certificates "$root/usr/local/share/"
    fi
    [ -d /opt/wheels ] && bind /opt/wheels "$root/opt/wheels" ro
    local pip_env=()
    while IFS='=' read -r name value; do pip_env+=("$name=$value"); done < <(env | grep '^PIP_' || true)

    echo "== $variant: ensure-tools.sh then cargo build, inside the root" >&2
    chroot "$root" /usr/bin/env -i \
        HOME=/root PATH="/opt/cargo-bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        RUSTUP_HOME=/opt/rustup RUSTUP_TOOLCHAIN="$toolchain" CARGO_HOME=/root/.cargo \
        LANG=C.UTF-8 "${pip_env[@]}" \
        /bin/bash -c 'set -euo pipefail
            cd /work/postern
            scripts/ensure-tools.sh
            cargo build --locked --workspace
            echo "installed by ensure-tools: $(dpkg-query -W -f="\${Package} " libclang-dev postgresql postgresql-client python3-venv 2>/dev/null)"' \
        >"$logs/$variant-build.log" 2>&1
    local rc=$?
    tail -n 5 "$logs/$variant-build.log" >&2
    return "$rc"
}

failed=0
for variant in "${variants[@]}"; do
    if run_variant "$variant"; then
        echo "fresh-machine-check: $variant: PASS (ensure-tools.sh and cargo build succeeded in a new Debian 12 root)"
    else
        echo "fresh-machine-check: $variant: FAIL (logs in $logs)"
        failed=1
    fi
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
    mounted=()
    rm -rf "${base:?}/$variant"
done
exit "$failed"
