#!/usr/bin/env bash
# callgrind.sh BIN ping|register|lookup PIPELINE N: user-space instructions per request
# of `userbus serve` (valgrind --tool=callgrind; counters zeroed after a warm-up, so
# start-up is not counted). Repeatable for the same binary and inputs, whatever
# else the machine does. Needs valgrind, redis-benchmark and redis-cli.
set -euo pipefail
bin=$1; test=$2; P=$3; N=$4
dir=$(mktemp -d); port=$((20000 + RANDOM % 20000))
valgrind --tool=callgrind --callgrind-out-file=$dir/cg.out "$bin" serve --port $port --http-port 0 --db $dir/db --durability normal >$dir/log 2>&1 &
vpid=$!
for i in $(seq 1 200); do redis-cli -p $port PING >/dev/null 2>&1 && break; sleep 0.2; done
# warm up, then zero the counters
redis-benchmark -p $port -c 50 -n 2000 -P $P -q PING >/dev/null 2>&1
callgrind_control -z $vpid >/dev/null
if [ "$test" = lookup ]; then
  redis-benchmark -p $port -c 50 -n 100000 -P 16 -r 10000 -q REGISTER user:__rand_int__ email x@y >/dev/null 2>&1
fi
callgrind_control -z $vpid >/dev/null
if [ "$test" = lookup ]; then
  redis-benchmark -p $port -c 50 -n $N -P $P -r 10000 -q LOOKUP user:__rand_int__ >/dev/null 2>&1
elif [ "$test" = ping ]; then
  redis-benchmark -p $port -c 50 -n $N -P $P -q PING >/dev/null 2>&1
else
  redis-benchmark -p $port -c 50 -n $N -P $P -r 100000000 -q REGISTER user:__rand_int__ email x@y >/dev/null 2>&1
fi
callgrind_control -d $vpid >/dev/null
sleep 1
kill $vpid; wait $vpid 2>/dev/null || true
ir=$(for f in $dir/cg.out.*; do callgrind_annotate $f 2>/dev/null | grep -m1 "PROGRAM TOTALS" ; done | awk '{gsub(",","",$1); s+=$1} END {print s}')
echo "$test P=$P N=$N total_Ir=$ir per_req=$(echo "$ir / $N" | bc -l | cut -c1-8)"
rm -rf $dir
