#!/usr/bin/env bash
# latency.sh — userbus against redis-server: latency percentiles, side by side, same
# client, same run, at pipeline 1 and 16.
#
# Set up as ../shared/tools/compare-redis.sh: both servers pinned to CPU 1,
# redis-benchmark to CPU 0, 50 connections, fresh servers per scenario, runs in
# turn (A B A B ...). redis-benchmark's latency report gives p50/p99/max and its
# percentile distribution p99.9 (the first step at or above 99.9%); the table shows
# the median of each over the pairs, then the ratios userbus/redis of p99.9 and max
# (below 1: userbus answered faster).
#
# usage: benches/latency.sh [--pairs N] [--curves DIR] [--apart] [SCENARIO ...]
#   scenarios: ping1 register-strict1 register-normal1 lookup1 register-strict16
#   register-normal16 lookup16-load (default: all). lookup16-load measures LOOKUP
#   (HGETALL) at P=16 on 50 connections while 10 more connections REGISTER (HSET) at
#   P=16. --curves DIR keeps each scenario's percentile distributions, one file per
#   server and pair (DIR/SCENARIO.userbus.N, "percentile ms" lines), for
#   `userbus bench --plot FILE.svg --curve LABEL=FILE ...`. --apart moves each
#   server's threads other than its main one (userbus's checkpointer, Redis's bio
#   threads that fsync the AOF and close files) to CPU 0 once it answers, so they
#   do not take turns with the main thread on CPU 1.
#   run from the project root; builds target/release/userbus unless USERBUS_BIN is set.
#   UB_PORT and RD_PORT choose the ports (default 17879, 16391).
set -euo pipefail

pairs=3 curves='' apart=0 scenarios=()
while (($#)); do
  case $1 in
    --pairs) pairs=$2; shift 2 ;;
    --curves) curves=$2; shift 2 ;;
    --apart) apart=1; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) scenarios+=("$1"); shift ;;
  esac
done
((${#scenarios[@]})) || scenarios=(ping1 register-strict1 register-normal1 lookup1
  register-strict16 register-normal16 lookup16-load)
[[ -n $curves ]] && mkdir -p "$curves"

for tool in redis-server redis-benchmark redis-cli taskset; do
  command -v "$tool" >/dev/null || { echo "$tool is required (apt-get install redis-server redis-tools)" >&2; exit 2; }
done
. "$(dirname "$0")/bin.sh"

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
# With --apart: every thread of `pid` but its main one to CPU 0.
move_apart() { # pid
  ((apart)) || return 0
  local task tid
  for task in /proc/"$1"/task/*; do
    tid=${task##*/}
    [[ $tid == "$1" ]] || taskset -p -c 0 "$tid" >/dev/null
  done
}

# Prints "rps p50 p99 p99.9 max" of one run; its percentile distribution goes to
# the file $curve_file.
run() { # port n pipeline keyspace command...
  local port=$1 n=$2 p=$3 r=$4; shift 4
  local rflag=(); [[ $r != 0 ]] && rflag=(-r "$r")
  taskset -c 0 redis-benchmark -h 127.0.0.1 -p "$port" -c 50 -n "$n" -P "$p" "${rflag[@]}" "$@" 2>/dev/null \
    | tr '\r' '\n' | awk -v curve="$curve_file" '
        /^Latency by percentile distribution/ { d = 1; next }
        /^Cumulative distribution/ { d = 0 }
        d && /% <= / {
          pct = $1; sub("%", "", pct)
          if (p999 == "" && pct + 0 >= 99.9) p999 = $3
          print pct, $3 > curve
        }
        /throughput summary:/ { rps = $3 }
        /avg +min +p50 +p95 +p99 +max/ { getline; p50 = $3; p99 = $5; max = $6 }
        END { if (rps != "" && p999 != "") print rps, p50, p99, p999, max }'
}
# Loads the server on `port` with REGISTER (or HSET) from 10 more connections at
# P=16 until stopped; the pid is in LOAD_PID.
start_load() { # port command...
  local port=$1; shift
  taskset -c 0 redis-benchmark -h 127.0.0.1 -p "$port" -c 10 -n 100000000 -P 16 -r 2000000000 -q "$@" \
    >/dev/null 2>&1 &
  pids+=($!); LOAD_PID=$!
  sleep 0.5
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
col() { awk -v c="$1" '{print $c}'; }
ratio() { awk -v u="$1" -v r="$2" 'BEGIN {printf "%.2f", (r > 0 ? u / r : 0)}'; }

printf '%-18s %-8s %9s %8s %8s %9s %8s\n' scenario server rps p50_ms p99_ms p99.9_ms max_ms
summary=()
for s in "${scenarios[@]}"; do
  reg=(REGISTER u__rand_int__ email a@example.com) hset=(HSET u__rand_int__ email a@example.com)
  load=0
  case $s in
    ping1)             dur=normal; aof=no;       n=200000;  p=1;  r=0;          ub=(-t ping_mbulk); rd=(-t ping_mbulk) ;;
    register-strict1)  dur=strict; aof=always;   n=100000;  p=1;  r=2000000000; ub=("${reg[@]}"); rd=("${hset[@]}") ;;
    register-normal1)  dur=normal; aof=everysec; n=200000;  p=1;  r=2000000000; ub=("${reg[@]}"); rd=("${hset[@]}") ;;
    lookup1)           dur=normal; aof=no;       n=200000;  p=1;  r=100000;     ub=(LOOKUP u__rand_int__); rd=(HGETALL u__rand_int__) ;;
    register-strict16) dur=strict; aof=always;   n=1000000; p=16; r=2000000000; ub=("${reg[@]}"); rd=("${hset[@]}") ;;
    register-normal16) dur=normal; aof=everysec; n=1000000; p=16; r=2000000000; ub=("${reg[@]}"); rd=("${hset[@]}") ;;
    lookup16-load)     dur=normal; aof=everysec; n=1000000; p=16; r=100000;     ub=(LOOKUP u__rand_int__); rd=(HGETALL u__rand_int__); load=1 ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
  start_userbus "$dur"; start_redis "$aof"
  move_apart "$UB_PID"; move_apart "$RD_PID"
  if [[ $s == lookup* ]]; then # fill ~95% of the keyspace first, untimed
    taskset -c 0 redis-benchmark -p "$UB_PORT" -c 50 -n 300000 -P 16 -r 100000 -q "${reg[@]}" >/dev/null
    taskset -c 0 redis-benchmark -p "$RD_PORT" -c 50 -n 300000 -P 16 -r 100000 -q "${hset[@]}" >/dev/null
  fi
  : >"$work/ub.runs"; : >"$work/rd.runs"
  for i in $(seq 1 "$pairs"); do
    for side in ub rd; do
      if [[ $side == ub ]]; then port=$UB_PORT cmd=("${ub[@]}") name=userbus w=("${reg[@]}")
      else port=$RD_PORT cmd=("${rd[@]}") name=redis w=("${hset[@]}"); fi
      curve_file=/dev/null
      [[ -n $curves ]] && curve_file="$curves/$s.$name.$i" && : >"$curve_file"
      ((load)) && start_load "$port" "${w[@]}"
      run "$port" "$n" "$p" "$r" "${cmd[@]}" >>"$work/$side.runs"
      ((load)) && stop "$LOAD_PID"
    done
  done
  stop "$UB_PID"; stop "$RD_PID"
  for side in ub rd; do
    f="$work/$side.runs"
    [[ $(wc -l <"$f") -eq $pairs ]] || { echo "$s: a run failed" >&2; exit 1; }
    name=userbus; [[ $side == rd ]] && name=redis
    printf '%-18s %-8s %9.0f %8.3f %8.3f %9.3f %8.3f\n' "$s" "$name" \
      "$(col 1 <"$f" | median)" "$(col 2 <"$f" | median)" "$(col 3 <"$f" | median)" \
      "$(col 4 <"$f" | median)" "$(col 5 <"$f" | median)"
  done
  summary+=("$s p99.9=$(ratio "$(col 4 <"$work/ub.runs" | median)" "$(col 4 <"$work/rd.runs" | median)") \
max=$(ratio "$(col 5 <"$work/ub.runs" | median)" "$(col 5 <"$work/rd.runs" | median)")")
done
echo "ratios userbus/redis of the medians (below 1 is faster):"
printf '  %s\n' "${summary[@]}"
