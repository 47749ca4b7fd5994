#!/usr/bin/env bash
# Runs influx-proxy end to end on this machine: installs what is missing (Debian/Ubuntu), builds the
# proxy, starts a private Redis and two private InfluxDB servers on free loopback ports, writes the
# proxy config with config.py, starts the proxy, writes sample points through it and shows where each
# measurement landed. Everything runs in a temp dir and is stopped and removed on exit.
#
# Usage: scripts/demo.sh [--no-wait] [--keep] [--help]
#   --no-wait  exit (and clean up) right after the demo instead of waiting for Ctrl-C
#   --keep     keep the temp dir (logs, data, generated configs) after exit
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

NO_WAIT=0
KEEP=0
for arg in "$@"; do
    case "$arg" in
        --no-wait) NO_WAIT=1 ;;
        --keep) KEEP=1 ;;
        --help | -h) usage; exit 0 ;;
        *) echo "demo.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MIN_RUST="1.88"   # edition 2024 and let chains

if [[ -t 1 ]]; then BOLD=$'\e[1m'; RED=$'\e[31m'; RESET=$'\e[0m'; else BOLD=''; RED=''; RESET=''; fi
step() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$RESET"; }
info() { printf '    %s\n' "$*"; }
die() { printf '%sdemo.sh: %s%s\n' "$RED" "$*" "$RESET" >&2; exit 1; }

# ---- processes and cleanup -----------------------------------------------------------------------
TMP=''
PIDS=()
NAMES=()
LOGS=()

show_log() { # name file: last lines of a log, for failures
    if [[ -s "$2" ]]; then
        printf -- '---- last lines of %s (%s) ----\n' "$1" "$2" >&2
        tail -n 15 "$2" >&2
    fi
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local i pid
    # Stop in reverse start order: the proxy first, so it can still flush to the databases.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM "${PIDS[i]}" 2>/dev/null || true
    done
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n "$TMP" && -d "$TMP" ]]; then
        if [[ $status -ne 0 && $status -ne 130 && $status -ne 143 ]]; then
            show_log proxy "$TMP/proxy.log"
        fi
        if [[ $KEEP -eq 1 ]]; then
            echo "demo.sh: kept $TMP" >&2
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME LOG CMD...: runs CMD in the background with output to LOG and remembers it.
start() {
    local name=$1 log=$2
    shift 2
    "$@" >"$log" 2>&1 &
    PIDS+=("$!")
    NAMES+=("$name")
    LOGS+=("$log")
}

# wait_for NAME PID LOG CHECK...: until CHECK succeeds (at most ~20 s), failing early if PID exits.
wait_for() {
    local name=$1 pid=$2 log=$3
    shift 3
    for _ in $(seq 200); do
        if "$@"; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            show_log "$name" "$log"
            die "$name exited during start-up"
        fi
        sleep 0.1
    done
    show_log "$name" "$log"
    die "$name did not come up within 20 s"
}

ping_204() { # port
    [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$1/ping" || true)" == 204 ]]
}

# ---- 1. install what is missing ------------------------------------------------------------------
step "Checking prerequisites"
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root or sudo to run: $*"
    fi
}

missing=()
for cmd in redis-server redis-cli influxd influx curl python3 gzip; do
    command -v "$cmd" >/dev/null || missing+=("$cmd")
done
python3 -m pip --version >/dev/null 2>&1 || python3 -c 'import redis' 2>/dev/null || missing+=(pip)
[[ -x "$HOME/.cargo/bin/cargo" ]] && PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null; then
    command -v cc >/dev/null || missing+=(cc)
fi
# Building ISA-L (the isal-sys crate, the proxy's level-1 gzip) from source takes these.
for cmd in nasm autoreconf aclocal libtoolize make; do
    command -v "$cmd" >/dev/null || missing+=("$cmd")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install them by hand"
    info "missing: ${missing[*]}; installing with apt-get"
    packages=(redis-server influxdb influxdb-client curl python3-pip gzip ca-certificates)
    command -v cc >/dev/null || packages+=(build-essential)
    packages+=(nasm autoconf automake libtool make)
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}"
else
    info "redis-server, influxd, influx, curl, python3: present"
fi

if ! python3 -c 'import redis' 2>/dev/null; then
    info "installing the Python redis package with pip"
    python3 -m pip install --quiet redis 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages redis ||
        die "could not install the Python redis package (try: apt-get install python3-redis)"
fi

if ! command -v cargo >/dev/null; then
    info "installing Rust with rustup (into ~/.cargo)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    PATH="$HOME/.cargo/bin:$PATH"
fi
rust_version=$(rustc --version | awk '{print $2}')
if [[ "$(printf '%s\n%s\n' "$MIN_RUST" "$rust_version" | sort -V | head -n 1)" != "$MIN_RUST" ]]; then
    die "Rust $rust_version is too old, the proxy needs $MIN_RUST or newer (rustup update stable)"
fi
info "python3 redis package, Rust $rust_version: present"

# ---- 2. build ------------------------------------------------------------------------------------
step "Building the proxy (cargo build --release)"
(cd "$ROOT" && cargo build --release)
PROXY="$ROOT/target/release/influx-proxy"
[[ -x "$PROXY" ]] || die "build produced no $PROXY"

# ---- 3. redis and two influxd --------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/influx-proxy-demo.XXXXXX")
step "Starting Redis and two InfluxDB servers in $TMP"

# Six distinct free loopback ports: redis, 2 x (influx http, influx rpc), proxy.
read -r REDIS_PORT INFLUX1_PORT INFLUX1_RPC INFLUX2_PORT INFLUX2_RPC PROXY_PORT < <(python3 -c '
import socket
socks = []
for _ in range(6):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
')

mkdir -p "$TMP/redis"
start redis "$TMP/redis.log" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
    --appendonly no --dir "$TMP/redis"
redis_pid=${PIDS[-1]}
redis_up() { [[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }
wait_for redis "$redis_pid" "$TMP/redis.log" redis_up
info "redis      127.0.0.1:$REDIS_PORT"

# influx_config DIR HTTP_PORT RPC_PORT: influxd's default config, made private to DIR and quiet.
influx_config() {
    local dir=$1 http=$2 rpc=$3
    influxd config -config /dev/null 2>/dev/null | awk -v dir="$dir" -v http="$http" -v rpc="$rpc" '
        function set(value) { sub(/=.*/, "= " value); changed++ }
        /^\[/                                              { section = $0 }
        section == "" && /^reporting-enabled *=/           { set("false") }
        section == "" && /^bind-address *=/                { set("\"127.0.0.1:" rpc "\"") }
        section == "[meta]" && /^ *dir *=/                 { set("\"" dir "/meta\"") }
        section == "[data]" && /^ *dir *=/                 { set("\"" dir "/data\"") }
        section == "[data]" && /^ *wal-dir *=/             { set("\"" dir "/wal\"") }
        section == "[data]" && /^ *query-log-enabled *=/   { set("false") }
        section == "[monitor]" && /^ *store-enabled *=/    { set("false") }
        section == "[http]" && /^ *bind-address *=/        { set("\"127.0.0.1:" http "\"") }
        section == "[http]" && /^ *bind-socket *=/         { set("\"" dir "/influxdb.sock\"") }
        section == "[http]" && /^ *log-enabled *=/         { set("false") }
        section == "[logging]" && /^ *suppress-logo *=/    { set("true") }
        { print }
        END { if (changed != 11) { print "expected 11 settings, changed " changed > "/dev/stderr"; exit 1 } }
    ' >"$dir/influxdb.conf"
}

declare -A INFLUX_PORT=([influx1]=$INFLUX1_PORT [influx2]=$INFLUX2_PORT)
declare -A INFLUX_RPC=([influx1]=$INFLUX1_RPC [influx2]=$INFLUX2_RPC)
for name in influx1 influx2; do
    mkdir -p "$TMP/$name"
    influx_config "$TMP/$name" "${INFLUX_PORT[$name]}" "${INFLUX_RPC[$name]}" ||
        die "could not make an influxd config from 'influxd config'"
    start "$name" "$TMP/$name.log" influxd run -config "$TMP/$name/influxdb.conf"
done
for i in 1 2; do
    name=influx$i
    wait_for "$name" "${PIDS[i]}" "$TMP/$name.log" ping_204 "${INFLUX_PORT[$name]}"
    info "$name    http://127.0.0.1:${INFLUX_PORT[$name]}"
done

# ---- 4. proxy config -----------------------------------------------------------------------------
step "Writing the proxy config to Redis with config.py"
cat >"$TMP/demo-config.json" <<EOF
{
  "DEFAULT_NODE": {},
  "NODES": {
    "demo": {"listenaddr": "127.0.0.1:$PROXY_PORT", "db": "demo"}
  },
  "BACKENDS": {
    "influx1": {"url": "http://127.0.0.1:$INFLUX1_PORT", "interval": 200},
    "influx2": {"url": "http://127.0.0.1:$INFLUX2_PORT", "interval": 200}
  },
  "KEYMAPS": {
    "cpu": ["influx1", "influx2"],
    "mem": ["influx1"],
    "disk": ["influx2"],
    "_default_": ["influx1"]
  }
}
EOF
info "python3 config.py -p $REDIS_PORT --from $TMP/demo-config.json"
python3 "$ROOT/config.py" -p "$REDIS_PORT" --from "$TMP/demo-config.json" | sed 's/^/    /'
info "keymaps: cpu -> influx1 + influx2, mem -> influx1, disk -> influx2, anything else -> influx1"
# The node's db also receives the proxy's own statistics (measurement influxdb.cluster, every 10 s);
# without it they would go to _internal, which these InfluxDB servers do not have (their monitor
# store is off), and the proxy would rightly warn that it parks them.
info "node demo: clients use database demo, which also gets the proxy's statistics (influxdb.cluster)"

# ---- 5. databases and the proxy ------------------------------------------------------------------
step "Creating database demo on both InfluxDB servers, starting the proxy"
for name in influx1 influx2; do
    curl -sS --fail -o /dev/null -XPOST "http://127.0.0.1:${INFLUX_PORT[$name]}/query" \
        --data-urlencode 'q=CREATE DATABASE demo' || die "CREATE DATABASE failed on $name"
done
start proxy "$TMP/proxy.log" "$PROXY" --redis "127.0.0.1:$REDIS_PORT" --node demo \
    --data-dir "$TMP/data"
proxy_pid=${PIDS[-1]}
wait_for proxy "$proxy_pid" "$TMP/proxy.log" ping_204 "$PROXY_PORT"
info "proxy      http://127.0.0.1:$PROXY_PORT (node demo)"

# ---- 6. writes through the proxy -----------------------------------------------------------------
step "Writing points through the proxy"
now=$(date +%s)
cat >"$TMP/plain.txt" <<EOF
cpu,host=server01,region=eu usage_idle=91.5,usage_user=4.2 $((now - 30))
cpu,host=server02,region=us usage_idle=78.0,usage_user=12.9 $((now - 30))
mem,host=server01 used_percent=42.1,free=8120i $((now - 30))
disk,host=server01,path=/ used_percent=63.0,free=51200000i $((now - 30))
cpu,host=server03,region=eu usage_idle=55.5,usage_user=30.1
EOF
cat >"$TMP/gzip.txt" <<EOF
cpu,host=server01,region=eu usage_idle=89.0,usage_user=6.3 $((now - 20))
mem,host=server02 used_percent=71.8,free=2300i $((now - 20))
disk,host=server02,path=/var used_percent=12.5,free=98000000i $((now - 20))
EOF
gzip -c "$TMP/gzip.txt" >"$TMP/gzip.txt.gz"

# post_write LABEL BODY_FILE TEXT_FILE [CURL ARGS...]: POST a body to the proxy's /write, show its
# lines (from TEXT_FILE) and the HTTP status.
post_write() {
    local label=$1 body=$2 text=$3 code
    shift 3
    code=$(curl -sS -o "$TMP/response" -w '%{http_code}' -XPOST \
        "http://127.0.0.1:$PROXY_PORT/write?db=demo&precision=s" --data-binary "@$body" "$@")
    info "POST /write?db=demo&precision=s  $label -> HTTP $code"
    sed 's/^/      /' "$text"
    if [[ "$code" != 204 ]]; then
        cat "$TMP/response" >&2
        die "the proxy refused the write"
    fi
}
post_write "(plain body, 5 lines, the last without timestamp)" "$TMP/plain.txt" "$TMP/plain.txt"
post_write "(gzip -c body, $(wc -c <"$TMP/gzip.txt.gz") bytes, 3 lines)" "$TMP/gzip.txt.gz" \
    "$TMP/gzip.txt" -H 'Content-Encoding: gzip'

# ---- results, read from each InfluxDB directly ---------------------------------------------------
# counts NAME: "cpu=N mem=N disk=N" as stored on that InfluxDB.
counts() {
    influx -host 127.0.0.1 -port "${INFLUX_PORT[$1]}" -database demo -format csv \
        -execute 'SELECT * FROM cpu, mem, disk' 2>/dev/null |
        awk -F, 'NR > 1 && $1 != "name" { n[$1]++ }
                 END { printf "cpu=%d mem=%d disk=%d\n", n["cpu"], n["mem"], n["disk"] }'
}
expected_influx1="cpu=4 mem=2 disk=0"
expected_influx2="cpu=4 mem=0 disk=2"
sleep 1
for _ in $(seq 50); do
    [[ "$(counts influx1)" == "$expected_influx1" && "$(counts influx2)" == "$expected_influx2" ]] && break
    sleep 0.2
done

step "SELECT * FROM cpu, mem, disk on each InfluxDB directly (not through the proxy)"
for name in influx1 influx2; do
    printf '\n%s-- %s (http://127.0.0.1:%s) --%s\n' "$BOLD" "$name" "${INFLUX_PORT[$name]}" "$RESET"
    influx -host 127.0.0.1 -port "${INFLUX_PORT[$name]}" -database demo -precision rfc3339 \
        -execute 'SELECT * FROM cpu, mem, disk'
done
echo
result1=$(counts influx1)
result2=$(counts influx2)
info "influx1: $result1   (expected $expected_influx1: cpu replicated, mem here)"
info "influx2: $result2   (expected $expected_influx2: cpu replicated, disk here)"
if [[ "$result1" != "$expected_influx1" || "$result2" != "$expected_influx2" ]]; then
    die "the points did not land where the keymaps say"
fi
info "OK: every measurement is where its keymap sends it"

# ---- queries through the proxy (shown, not checked) ----------------------------------------------
step "Queries through the proxy"
proxy_query() { # QUERY NOTE
    local code
    code=$(curl -sS -o "$TMP/response" -w '%{http_code}' -G "http://127.0.0.1:$PROXY_PORT/query" \
        --data-urlencode db=demo --data-urlencode "q=$1" || true)
    info "GET /query q=$1   ($2)"
    if [[ "$code" == 404 ]] && grep -q 'page not found' "$TMP/response"; then
        info "  -> HTTP 404: this build of the proxy does not serve /query yet"
    else
        info "  -> HTTP $code $(head -c 400 "$TMP/response")"
    fi
}
proxy_query "SELECT usage_idle FROM cpu WHERE time > now() - 1h" "answered by influx1 or influx2"
proxy_query "SELECT * FROM cpu" "refused by the default query rule select_star"

# A clean run logs no warning or error; anything else is a bug in the proxy or in this demo.
if grep -E '^[^ ]+ (WARN|ERROR) ' "$TMP/proxy.log" >&2; then
    die "the proxy logged the warnings or errors above ($TMP/proxy.log)"
fi

# ---- 7. where things are -------------------------------------------------------------------------
step "The demo is running"
info "proxy       http://127.0.0.1:$PROXY_PORT   e.g. curl -i 'http://127.0.0.1:$PROXY_PORT/ping'"
info "influx1     http://127.0.0.1:$INFLUX1_PORT   influx -port $INFLUX1_PORT -database demo"
info "influx2     http://127.0.0.1:$INFLUX2_PORT   influx -port $INFLUX2_PORT -database demo"
info "redis       127.0.0.1:$REDIS_PORT           redis-cli -p $REDIS_PORT"
info "proxy log   $TMP/proxy.log"
info "other logs  $TMP/redis.log $TMP/influx1.log $TMP/influx2.log"
info "config      python3 $ROOT/config.py -p $REDIS_PORT --from $TMP/demo-config.json"
if [[ $KEEP -eq 1 ]]; then
    info "the temp dir $TMP is kept after exit (--keep)"
else
    info "everything under $TMP is removed on exit (--keep keeps it)"
fi

if [[ $NO_WAIT -eq 1 ]]; then
    info "--no-wait: stopping everything"
    exit 0
fi
info "press Ctrl-C to stop everything"
while true; do
    for i in "${!PIDS[@]}"; do
        if ! kill -0 "${PIDS[i]}" 2>/dev/null; then
            show_log "${NAMES[i]}" "${LOGS[i]}"
            die "${NAMES[i]} exited unexpectedly"
        fi
    done
    sleep 1
done
