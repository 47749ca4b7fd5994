#!/usr/bin/env bash
# The whole test suite of influx-proxy, on a fresh Debian/Ubuntu machine: installs what the tests need
# (redis-server, InfluxDB 1.x and its CLI, Python's redis and influxdb packages), then checks formatting,
# runs clippy (with and without the `isal` feature), runs every unit and integration test (real redis-server and influxd processes on free
# loopback ports, started and stopped by the tests), runs the bench programs in their quick mode, and
# finally runs the README's demo end to end. `.ci/run` runs exactly this.
#
# Usage: scripts/test.sh [--help]
#   Takes no other arguments; to run part of the suite use cargo directly, e.g.
#   cargo test --test process, cargo test --lib net::
set -euo pipefail

for arg in "$@"; do
    case "$arg" in
        --help | -h)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "test.sh: unknown argument $arg (see --help)" >&2
            exit 2
            ;;
    esac
done
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

missing=()
# nasm, autoconf, automake, libtool, make: building ISA-L (the isal-sys crate's level-1 gzip) from source.
for cmd in redis-server:redis-server influxd:influxdb influx:influxdb-client python3:python3 curl:curl cc:build-essential \
    openssl:openssl nasm:nasm autoreconf:autoconf aclocal:automake libtoolize:libtool make:make; do
    command -v "${cmd%%:*}" >/dev/null 2>&1 || missing+=("${cmd#*:}")
done
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if ((${#missing[@]})); then
    echo "==> installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! python3 -c 'import redis, influxdb, requests' 2>/dev/null; then
    echo "==> installing Python packages redis, influxdb, requests"
    python3 -m pip install -q redis influxdb requests 2>/dev/null || python3 -m pip install -q --break-system-packages redis influxdb requests
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "==> installing Rust (rustup)"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "==> cargo clippy, without ISA-L (the build the fuzz targets use)"
cargo clippy --lib --no-default-features -- -D warnings
echo "==> no import cycles among the files of src/"
python3 scripts/import_cycles.py src
echo "==> cargo test"
cargo test -q
echo "==> bench programs, quick mode"
cargo test -q --benches
echo "==> scripts/demo.sh --no-wait"
scripts/demo.sh --no-wait
echo "==> all tests passed"
