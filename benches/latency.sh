#!/usr/bin/env bash
# latency.sh — userbus against redis-server at pipeline 1: latency percentiles,
# side by side, same client, same run.
#
# Set up as ../shared/tools/compare-redis.sh: both servers pinned to CPU 1,
# redis-benchmark to CPU 0, 50 connections, fresh servers per scenario, runs in
# turn (A B A B ...). redis-benchmark's --csv gives p50/p95/p99/max per run; the
# table shows the median of each over the pairs, and the p99 ratio userbus/redis
# (below 1: userbus answered faster at the 99th percentile).
#
# usage: benches/latency.sh [--pairs N] [SCENARIO ...]
#   scenarios: ping1 register-strict1 register-normal1 lookup1 (default: all)
#   run from the project root; builds target/release/userbus unless USERBUS_BIN is set.
#   UB_PORT and RD_PORT choose the ports (default 17879, 16391).
set -euo pipefail

pairs=3 scenarios=()
while (($#)); do
  case $1 in
    --pairs) pairs=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) scenarios+=("$1"); shift ;;
  esac
done
((${#scenarios[@]})) || scenarios=(ping1 register-strict1 register-normal1 lookup1)

for tool in redis-server redis-benchmark redis-cli taskset; do
  command -v "$tool" >/dev/null || { echo "$tool is required (apt-get install redis-server redis-tools)" >&2; exit 2; }
done
bin=${USERBUS_BIN:-}
if [[ -z $bin ]]; then
  cargo build --release --quiet
  bin=target/release/userbus
fi

work=$(mktemp -d /tmp/latency.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
UB_PORT=${UB_PORT:-17879} RD_PORT=${RD_PORT:-16391}

wait_ready() {
  for _ in $(seq 1 200); do
    [[ $(redis-cli -p "$1" PING 2>/dev/null) == PONG ]] && return 0
    sleep 0.05
  done
  echo "server on port $1 did not answer PING" >&2; return 1
}
start_userbus() { # durability
  rm -rf "$work/ub"; mkdir -p "$work/ub"
  taskset -c 1 "$bin" serve --port "$UB_PORT" --http-port 0 --db "$work/ub/userbus.db" \
    --durability "$1" >"$work/ub.log" 2>&1 &
  pids+=($!); UB_PID=$!
  wait_ready "$UB_PORT"
}
start_redis() { # appendfsync: no|everysec|always
  rm -rf "$work/rd"; mkdir -p "$work/rd"
  local aof=(--appendonly no)
  [[ $1 != no ]] && aof=(--appendonly yes --appendfsync "$1")
  taskset -c 1 redis-server --port "$RD_PORT" --bind 127.0.0.1 --save '' --dir "$work/rd" \
    "${aof[@]}" --daemonize no >"$work/rd.log" 2>&1 &
  pids+=($!); RD_PID=$!
  wait_ready "$RD_PORT"
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# Prints "rps p50 p95 p99 max" of one run.
run() { # port n keyspace command...
  local port=$1 n=$2 r=$3; shift 3
  local rflag=(); [[ $r != 0 ]] && rflag=(-r "$r")
  taskset -c 0 redis-benchmark -h 127.0.0.1 -p "$port" -c 50 -n "$n" -P 1 "${rflag[@]}" --csv "$@" 2>/dev/null \
    | tail -n 1 | tr -d '"' | awk -F, '{print $2, $5, $6, $7, $8}'
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
col() { awk -v c="$1" '{print $c}'; }

printf '%-17s %-8s %9s %8s %8s %8s %8s\n' scenario server rps p50_ms p95_ms p99_ms max_ms
ratios=()
for s in "${scenarios[@]}"; do
  case $s in
    ping1)            dur=normal; aof=no;       n=200000; r=0;          ub=(-t ping_mbulk); rd=(-t ping_mbulk) ;;
    register-strict1) dur=strict; aof=always;   n=100000; r=2000000000; ub=(REGISTER u__rand_int__ email a@example.com); rd=(HSET u__rand_int__ email a@example.com) ;;
    register-normal1) dur=normal; aof=everysec; n=200000; r=2000000000; ub=(REGISTER u__rand_int__ email a@example.com); rd=(HSET u__rand_int__ email a@example.com) ;;
    lookup1)          dur=normal; aof=no;       n=200000; r=100000;     ub=(LOOKUP u__rand_int__); rd=(HGETALL u__rand_int__) ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
  start_userbus "$dur"; start_redis "$aof"
  if [[ $s == lookup1 ]]; then
    taskset -c 0 redis-benchmark -p "$UB_PORT" -c 50 -n 300000 -P 16 -r 100000 -q REGISTER u__rand_int__ email a@example.com >/dev/null
    taskset -c 0 redis-benchmark -p "$RD_PORT" -c 50 -n 300000 -P 16 -r 100000 -q HSET u__rand_int__ email a@example.com >/dev/null
  fi
  : >"$work/ub.runs"; : >"$work/rd.runs"
  for _ in $(seq 1 "$pairs"); do
    run "$UB_PORT" "$n" "$r" "${ub[@]}" >>"$work/ub.runs"
    run "$RD_PORT" "$n" "$r" "${rd[@]}" >>"$work/rd.runs"
  done
  stop "$UB_PID"; stop "$RD_PID"
  for side in ub rd; do
    f="$work/$side.runs"
    [[ $(wc -l <"$f") -eq $pairs ]] || { echo "$s: a run failed" >&2; exit 1; }
    name=userbus; [[ $side == rd ]] && name=redis
    printf '%-17s %-8s %9.0f %8.3f %8.3f %8.3f %8.3f\n' "$s" "$name" \
      "$(col 1 <"$f" | median)" "$(col 2 <"$f" | median)" "$(col 3 <"$f" | median)" \
      "$(col 4 <"$f" | median)" "$(col 5 <"$f" | median)"
  done
  ratios+=("$s=$(awk -v u="$(col 4 <"$work/ub.runs" | median)" -v r="$(col 4 <"$work/rd.runs" | median)" \
    'BEGIN {printf "%.3f", (r > 0 ? u / r : 0)}')")
done
echo "p99 ratios (userbus/redis, below 1 is faster): ${ratios[*]}"
