#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine with only the Rust toolchain lacks: a C compiler
# (SQLite and libpg_query are built from source), libclang (bindgen), PostgreSQL server binaries and psql, a Python venv with
# psycopg 3 (bundling libpq 18) for the client tests and schemathesis for the admin API,
# rustfmt and clippy.
set -euo pipefail

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
# pg_query (PostgreSQL's parser, for the policy engine) generates its bindings with
# bindgen, which needs libclang and clang's headers.
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 || missing+=(libclang-dev)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
# The Python client tests run in a venv of the system Python (python3-venv).
/usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)

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

cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
