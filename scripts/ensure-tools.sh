#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine with only the Rust toolchain lacks: a C compiler
# (SQLite and libpg_query are built from source), libclang (bindgen), PostgreSQL server binaries and psql, a Python venv with
# psycopg 3 (bundling libpq 18) for the client tests and schemathesis for the admin API,
# rustfmt and clippy, the wasm32-wasip2 target the example plugins are built for, the
# Python (componentize-py, in the venv) and JavaScript (componentize-js, in .js-tools/) plugin
# toolchains, and the web UI's npm tools (ui/node_modules) with Chromium for its browser tests.
#
# Each check looks for the exact file or command the build or the tests use, never a loose
# glob: a pattern for any libclang-prefixed library once matched libclang-cpp (present on
# fresh machines) and skipped the libclang that bindgen loads.
# `scripts/fresh-machine-check.sh` proves this on a new Debian 12 root.
set -euo pipefail

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# True when any path matches one of the patterns (no match leaves the pattern unexpanded).
any_file() {
    local pattern path
    for pattern in "$@"; do
        for path in $pattern; do
            [ -e "$path" ] && return 0
        done
    done
    return 1
}

missing=()
# The cc crate runs `cc` and compiles against libc's headers.
{ command -v cc >/dev/null 2>&1 && [ -f /usr/include/stdio.h ]; } || missing+=(gcc libc6-dev)
# pg_query (PostgreSQL's parser, for the policy engine) generates its bindings with bindgen,
# whose clang-sys loads libclang itself (libclang.so / libclang-N.so, never libclang-cpp) and
# needs clang's own headers (stddef.h) beside it.
if ! any_file '/usr/lib/llvm-*/lib/libclang.so' '/usr/lib/llvm-*/lib/libclang.so.[0-9]*' \
    '/usr/lib/x86_64-linux-gnu/libclang.so' '/usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so*' ||
    ! any_file '/usr/lib/llvm-*/lib/clang/*/include/stddef.h'; then
    missing+=(libclang-dev)
fi
# postern-localpg needs one directory holding both initdb and postgres: on PATH, or a
# Debian cluster directory.
has_server=no
IFS=: read -ra path_dirs <<<"$PATH"
for dir in "${path_dirs[@]}" /usr/lib/postgresql/*/bin; do
    if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ]; then has_server=yes; break; fi
done
[ "$has_server" = yes ] || missing+=(postgresql)
# Debian's psql is a wrapper (postgresql-client-common) that fails without a real client.
psql --version >/dev/null 2>&1 || missing+=(postgresql-client)
# The Python client tests run in a venv of the system Python (python3-venv).
/usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# The systemd unit's test runs systemd-analyze verify and security on it.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# The JavaScript plugin toolchain (componentize-js) and the web UI's build and browser-test
# tools come from the npm registry, on node.
{ command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; } || missing+=(nodejs npm)
# The web UI's browser tests drive Debian's Chromium (Playwright downloads no browser).
[ -x /usr/bin/chromium ] || missing+=(chromium)

if [ "${#missing[@]}" -gt 0 ]; then
    echo "Installing: ${missing[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# psycopg 3 with its bundled libpq 18: the tests' newest libpq, which asks for protocol 3.2.
venv="$(cd "$(dirname "$0")/.." && pwd)/.venv-tests"
if ! "$venv/bin/python" -c 'import psycopg' >/dev/null 2>&1; then
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'psycopg[binary]==3.3.9'
fi
# schemathesis fuzzes the admin API against its own OpenAPI document (tests/schemathesis.rs).
if ! "$venv/bin/schemathesis" --version >/dev/null 2>&1; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis==4.32.5'
fi
# componentize-py (a Python interpreter inside) builds the Python plugin the tests scaffold.
if ! "$venv/bin/componentize-py" --version >/dev/null 2>&1; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'componentize-py==0.25.1'
fi
# componentize-js (a JavaScript engine inside) builds the JavaScript plugin the tests
# scaffold: in a local node_modules, not installed globally.
js_tools="$(cd "$(dirname "$0")/.." && pwd)/.js-tools"
if ! "$js_tools/node_modules/.bin/componentize-js" --version >/dev/null 2>&1; then
    npm install --prefix "$js_tools" --no-audit --no-fund --silent \
        @bytecodealliance/componentize-js@0.23.0
fi

# The web UI's tools (vite, typescript, openapi-typescript, playwright, axe-core), exactly as
# ui/package-lock.json pins them, in ui/node_modules; again whenever the lock file changes.
ui="$(cd "$(dirname "$0")/.." && pwd)/ui"
if ! [ -x "$ui/node_modules/.bin/playwright" ] || ! [ -x "$ui/node_modules/.bin/vite" ] ||
    [ "$ui/package-lock.json" -nt "$ui/node_modules/.package-lock.json" ]; then
    (cd "$ui" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
fi

cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
# The example plugins (plugins/) are built for WebAssembly components by the tests.
[ -d "$(rustc --print sysroot)/lib/rustlib/wasm32-wasip2/lib" ] || rustup target add wasm32-wasip2
