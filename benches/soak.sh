#!/usr/bin/env bash
# soak.sh — userbus holding 10,000 idle connections while a load runs.
#
# Starts `userbus serve` on free loopback ports with a temporary database, then:
#   1. runs `userbus bench -t mixed -c 50 --duration SECS` alone (the baseline);
#   2. opens CONNS idle connections from a small holder process (Python, standard
#      library only), each sending one PING and reading its PONG, so every one is
#      accepted and served, not just queued; checks INFO's connected_clients;
#   3. runs the same load again while they are held;
#   4. reports the server's VmRSS (from /proc/PID/status) at each step, the memory
#      per idle connection, and the throughput with 50 vs CONNS+50 connections.
# With redis-server installed it also holds CONNS idle connections against a fresh
# Redis (no persistence) and reports its RSS, the comparison the hardening issue
# asks for. All traffic stays on 127.0.0.0/8; every step has a time limit and the
# whole run is cut off after --max-seconds.
#
# usage: benches/soak.sh [--conns N] [--duration SECS] [--sources K] [--silent]
#                        [--durability strict|normal] [--no-redis] [--max-seconds S]
#   run from the project root after `cargo build --release` (or set USERBUS_BIN).
#   --sources K spreads the idle clients over source addresses 127.0.0.2..127.0.0.K+1
#   (bind before connect); by default they are spread only when CONNS would not fit
#   in the ephemeral port range. --silent: the idle clients never send (no PING;
#   only connected_clients checks them). Defaults: 10000 conns, 10 s, normal.
#   The open files limit is raised to 30000 (or the hard limit); the script stops
#   with an error if that is below what CONNS needs.
set -euo pipefail

orig_args=("$@")
conns=10000 secs=10 sources=auto durability=normal with_redis=1 max_seconds=600 ping=1
load_conns=50
while (($#)); do
  case $1 in
    --conns) conns=$2; shift 2 ;;
    --duration) secs=$2; shift 2 ;;
    --sources) sources=$2; shift 2 ;;
    --durability) durability=$2; shift 2 ;;
    --no-redis) with_redis=0; shift ;;
    --silent) ping=0; shift ;;
    --max-seconds) max_seconds=$2; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "soak.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "soak.sh: $*" >&2; exit 1; }

# The whole run is bounded: rerun under timeout(1), which sends TERM (the trap
# below cleans up) and, if that does not end it, KILL.
if [[ -z ${SOAK_BOUNDED:-} ]]; then
  SOAK_BOUNDED=1 exec timeout -k 90 "$max_seconds" bash "$0" "${orig_args[@]}"
fi

bin=${USERBUS_BIN:-target/release/userbus}
[[ -x $bin ]] || die "no userbus binary at $bin: run cargo build --release or set USERBUS_BIN"
command -v python3 >/dev/null || die "python3 is required (the idle-connection holder)"
if ((with_redis)) && ! command -v redis-server >/dev/null; then
  echo "soak.sh: redis-server not found; skipping the Redis comparison" >&2
  with_redis=0
fi

# The server holds CONNS + the load + a few; the holder holds CONNS.
need_fds=$((conns + load_conns + 256))
want_fds=${SOAK_NOFILE:-30000}
((want_fds >= need_fds)) || want_fds=$need_fds
if ! ulimit -n "$want_fds" 2>/dev/null; then
  hard=$(ulimit -Hn)
  [[ $hard == unlimited ]] || ulimit -n "$hard" 2>/dev/null || true
fi
have_fds=$(ulimit -n)
[[ $have_fds == unlimited ]] || ((have_fds >= need_fds)) ||
  die "the open files limit is $have_fds (hard $(ulimit -Hn)) but $conns connections need $need_fds: raise the hard limit (ulimit -Hn as root, LimitNOFILE=, or prlimit --nofile) and run again"

read -r port_lo port_hi </proc/sys/net/ipv4/ip_local_port_range
if [[ $sources == auto ]]; then
  # One source address gives each destination the whole ephemeral range; keep half
  # of it free for everything else on the machine.
  per_source=$(((port_hi - port_lo + 1) / 2))
  sources=$(((conns + per_source - 1) / per_source))
  ((sources > 1)) || sources=0
fi
((sources <= 253)) || die "--sources must be at most 253"

work=$(mktemp -d /tmp/userbus-soak.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "soak.sh: interrupted (or over --max-seconds $max_seconds)" >&2; exit 130' INT TERM

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# Like compare-redis.sh: the server on CPU 1, the load generator on CPU 0 (when
# taskset exists and there are two CPUs). taskset execs, so $! is the server's PID.
server_cpu=() client_cpu=()
if command -v taskset >/dev/null && (($(nproc) > 1)); then
  server_cpu=(taskset -c 1) client_cpu=(taskset -c 0)
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cli() { # port args...
  local port=$1; shift
  timeout 10 "$bin" cli -p "$port" --raw "$@"
}

wait_ready() { # port
  for _ in $(seq 1 200); do
    [[ $(cli "$1" PING 2>/dev/null) == PONG ]] && return 0
    sleep 0.05
  done
  die "the server on port $1 did not answer PING"
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

connected() { # port
  cli "$1" INFO clients | tr -d '\r' | awk -F: '/^connected_clients:/ {print $2}'
}

wait_connected() { # port what: until INFO counts every idle connection (30 s at most)
  local n=0
  for _ in $(seq 1 300); do
    n=$(connected "$1")
    ((n >= conns)) && return 0
    sleep 0.1
  done
  die "$2 INFO clients says connected_clients:$n, expected at least $conns"
}

# The idle-connection holder: opens N connections (bound to 127.0.0.2.. when
# sources > 0), one PING each (unless ping is 0), all PONGs read, then prints
# "ready" and sleeps.
holder_py='
import selectors, socket, sys, time
host, port, n, sources, lifetime, ping = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
t0 = time.monotonic()
socks = []
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if sources:
        # the port is picked at connect, per destination, not reserved at bind
        s.setsockopt(socket.IPPROTO_IP, NO_PORT, 1)
        s.bind(("127.0.0.%d" % (2 + i % sources), 0))
    s.settimeout(10)
    try:
        s.connect((host, port))
    except OSError as e:
        sys.exit("holder: connection %d failed: %s" % (i, e))
    socks.append(s)
sel = selectors.DefaultSelector()
for s in socks if ping else []:
    s.sendall(b"PING\r\n")
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, b"")
left, deadline = n if ping else 0, time.monotonic() + 60
while left and time.monotonic() < deadline:
    for key, _ in sel.select(timeout=1):
        got = key.data + key.fileobj.recv(64)
        if not got or not b"+PONG\r\n".startswith(got[:7]):
            sys.exit("holder: unexpected reply %r" % got)
        if got == b"+PONG\r\n":
            sel.unregister(key.fileobj)
            left -= 1
        else:
            sel.modify(key.fileobj, selectors.EVENT_READ, got)
if left:
    sys.exit("holder: %d connections got no PONG" % left)
print("ready %d %.1f" % (n, time.monotonic() - t0), flush=True)
time.sleep(lifetime)
'

hold() { # port: starts the holder, waits until it holds every connection
  local port=$1 log=$work/holder-$1.log
  python3 -c "$holder_py" 127.0.0.1 "$port" "$conns" "$sources" "$max_seconds" "$ping" >"$log" 2>&1 &
  HOLDER_PID=$!
  pids+=("$HOLDER_PID")
  for _ in $(seq 1 1200); do
    if grep -q '^ready' "$log"; then
      HOLD_SECS=$(awk '/^ready/ {print $3}' "$log")
      return 0
    fi
    kill -0 "$HOLDER_PID" 2>/dev/null || die "the holder failed: $(cat "$log")"
    sleep 0.1
  done
  die "the holder did not connect within 120 s: $(cat "$log")"
}

load() { # port: one bench run; prints "rps p50 p99" (ms)
  "${client_cpu[@]}" timeout $((${secs%.*} + 60)) "$bin" bench -p "$1" -t mixed -c "$load_conns" \
    --duration "$secs" -q --json >"$work/bench.json" ||
    die "userbus bench failed: $(cat "$work/bench.json")"
  python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
if r["errors"] or r["lost"]:
    sys.exit("bench: %d errors, %d lost: %s" % (r["errors"], r["lost"], r["first_error"]))
l = r["latency_ms"]
print("%.0f %.3f %.3f" % (r["requests_per_sec"], l["p50"], l["p99"]))
' "$work/bench.json"
}

# --- userbus ---------------------------------------------------------------
ub_port=$(free_port)
"${server_cpu[@]}" env RUST_LOG=warn "$bin" serve --port "$ub_port" --http-port 0 --db "$work/soak.db" \
  --durability "$durability" --maxclients $((conns + load_conns + 64)) >"$work/serve.log" 2>&1 &
ub_pid=$!
pids+=("$ub_pid")
wait_ready "$ub_port"
sleep 1
ub_rss_start=$(rss_kib "$ub_pid")

echo "soak: load alone ($load_conns connections, $secs s)..." >&2
out=$(load "$ub_port")
read -r rps_alone p50_alone p99_alone <<<"$out"
sleep 1
ub_rss_base=$(rss_kib "$ub_pid")

echo "soak: opening $conns idle connections (source addresses: $((sources ? sources : 1)))..." >&2
hold "$ub_port"
ub_hold_secs=$HOLD_SECS
ub_holder=$HOLDER_PID
wait_connected "$ub_port" userbus
sleep 1
ub_rss_held=$(rss_kib "$ub_pid")

echo "soak: load with $conns idle connections held..." >&2
out=$(load "$ub_port")
read -r rps_held p50_held p99_held <<<"$out"
n_after=$(connected "$ub_port")
((n_after >= conns)) || die "idle connections were dropped during the load: connected_clients:$n_after"
ub_rss_after=$(rss_kib "$ub_pid")
stop "$ub_holder"
stop "$ub_pid"
grep -E 'WARN|ERROR' "$work/serve.log" | head -5 >&2 || true

# --- redis -----------------------------------------------------------------
rd_rss_start=- rd_rss_held=- rd_per_conn=- rd_version=-
if ((with_redis)); then
  rd_port=$(free_port)
  mkdir -p "$work/redis"
  # Protected mode counts only 127.0.0.1 as local, not the other source addresses.
  "${server_cpu[@]}" redis-server --port "$rd_port" --bind 127.0.0.1 --protected-mode no \
    --save '' --appendonly no \
    --dir "$work/redis" --maxclients $((conns + 64)) --daemonize no >"$work/redis.log" 2>&1 &
  rd_pid=$!
  pids+=("$rd_pid")
  wait_ready "$rd_port"
  rd_version=$(redis-server --version | sed -E 's/.* v=([^ ]+).*/\1/')
  sleep 1
  rd_rss_start=$(rss_kib "$rd_pid")
  echo "soak: opening $conns idle connections to redis-server $rd_version..." >&2
  hold "$rd_port"
  wait_connected "$rd_port" redis
  sleep 1
  rd_rss_held=$(rss_kib "$rd_pid")
  rd_per_conn=$(awk -v a="$rd_rss_start" -v b="$rd_rss_held" -v n="$conns" 'BEGIN {printf "%.1f", (b - a) / n}')
  stop "$HOLDER_PID"
  stop "$rd_pid"
fi

# --- report ----------------------------------------------------------------
mib() { [[ $1 == - ]] && echo - || awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }
kib() { [[ $1 == - ]] && echo - || echo "$1 KiB"; }
ub_per_conn=$(awk -v a="$ub_rss_base" -v b="$ub_rss_held" -v n="$conns" 'BEGIN {printf "%.1f", (b - a) / n}')
ratio=$(awk -v a="$rps_alone" -v b="$rps_held" 'BEGIN {printf "%.2f", b / a}')
spoke=", one PING each"
((ping)) || spoke=", silent"
echo "soak: $conns idle connections (connected in ${ub_hold_secs}s, $((sources ? sources : 1)) source address(es)$spoke), load: userbus bench -t mixed -c $load_conns --duration $secs, durability $durability"
printf '%-34s %16s %16s\n' "" userbus "redis $rd_version"
printf '%-34s %16s %16s\n' "rss at start" "$(mib "$ub_rss_start")" "$(mib "$rd_rss_start")"
printf '%-34s %16s %16s\n' "rss after the load alone" "$(mib "$ub_rss_base")" -
printf '%-34s %16s %16s\n' "rss with $conns idle" "$(mib "$ub_rss_held")" "$(mib "$rd_rss_held")"
printf '%-34s %16s %16s\n' "per idle connection" "$(kib "$ub_per_conn")" "$(kib "$rd_per_conn")"
printf '%-34s %16s %16s\n' "rss after the load with $conns" "$(mib "$ub_rss_after")" -
printf '%-34s %16s %16s\n' "requests/s, $load_conns conns" "$rps_alone" -
printf '%-34s %16s %16s\n' "requests/s, $conns idle + $load_conns" "$rps_held" -
printf '%-34s %16s %16s\n' "  ratio" "$ratio" -
printf '%-34s %16s %16s\n' "p50 / p99 ms, $load_conns conns" "$p50_alone / $p99_alone" -
printf '%-34s %16s %16s\n' "p50 / p99 ms, $conns idle + $load_conns" "$p50_held / $p99_held" -
