#!/usr/bin/env bash
# Builds the Debian package: target/debian/postern_<version>_<arch>.deb.
#
#   packaging/build-deb.sh                      # release build of this checkout, then package
#   packaging/build-deb.sh --binary PATH --version V [--extras-from PATH]
#                                               # package a postern binary built elsewhere
#                                               # (the upgrade test packages an older one,
#                                               # whose completions and man page come from
#                                               # a newer binary: it has no such commands)
#
# The package version is the crate's, plus the commit count and hash (0.1.0+git412.b1c5dcc),
# so a later commit's package upgrades an earlier one. Installs cargo-deb from crates.io
# when it is missing. Prints the .deb's path.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

binary=""
version=""
extras_from=""
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --version) version="$2"; shift 2 ;;
        --extras-from) extras_from="$2"; shift 2 ;;
        *) echo "build-deb.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked --version '^3' >&2
# The .deb's files carry the commit's time, not the build's (reproducible builds).
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"
target="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
out="$target/debian"
if [ -z "$binary" ]; then
    cargo build --release --locked -p postern >&2
else
    # Packed from a target directory of its own: the checkout's release build stays as
    # cargo left it.
    target="$(mktemp -d)"
    trap 'rm -rf "$target"' EXIT
    export CARGO_TARGET_DIR="$target"
    mkdir -p "$target/release"
    install -m 0755 "$binary" "$target/release/postern"
fi
if [ -z "$version" ]; then
    crate_version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
    version="$crate_version+git$(git rev-list --count HEAD).$(git rev-parse --short HEAD)"
fi

# What the binary generates: completions and the man page; and the packaged configuration,
# whose master key is the one the postinst makes (the service gets it as a credential, a
# root shell's CLI reads the file).
extra="$target/release/deb-extra"
rm -rf "$extra"
mkdir -p "$extra"
bin="${extras_from:-$target/release/postern}"
"$bin" completions bash >"$extra/postern.bash"
"$bin" completions zsh >"$extra/_postern"
"$bin" completions fish >"$extra/postern.fish"
"$bin" man | gzip -9n >"$extra/postern.1.gz"
sed 's|^# master_key_file = .*|master_key_file = "/etc/postern/master-key"|' \
    config/postern.toml >"$extra/postern.toml"
grep -q '^master_key_file = "/etc/postern/master-key"' "$extra/postern.toml" ||
    { echo "build-deb.sh: config/postern.toml lost its master_key_file line" >&2; exit 1; }

mkdir -p "$out"
deb="$out/postern_${version}_$(dpkg --print-architecture).deb"
# cargo-deb strips the binary as it packs it.
cargo deb -p postern --no-build --deb-version "$version" --output "$deb" >&2
echo "$deb"
