#!/usr/bin/env bash
# follow.sh — how fast a follower applies the stream: while a primary takes a
# REGISTER burst, and catching up from an empty database afterwards.
#
# Starts nats-server with JetStream on a temp dir, a primary (`--nats`, normal
# durability) and a follower (`--follow`), loads the primary with
# `userbus bench -t register -P 16 --duration SECS`, and samples once a second
# the primary's last seq (INFO nats: confirmed + lag), the stream's (the relay's
# confirmed seq) and the follower's applied seq (INFO replication). Prints the
# three rates during the burst, the follower's largest lag behind the primary
# and behind the stream, the time it took to catch up after the burst, and its
# CPU time per event (the figure to compare when others load the machine). Last,
# a second follower starts on an empty database after the burst and is timed
# until it has applied the whole stream (the catch-up rate from empty).
#
# usage: benches/follow.sh [--duration SECS] [--quiet]
#   --duration SECS  length of the burst (default 10)
#   --quiet          no per-second lines
#   run from the project root; builds target/release/userbus unless USERBUS_BIN is
#   set; TMPDIR decides where the databases and the stream go (about 1 GB for a
#   10 s burst; removed at the end).
set -euo pipefail

duration=10 quiet=0
while (($#)); do
  case $1 in
    --duration) duration=$2; shift 2 ;;
    --quiet) quiet=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) sed -n '15,21p' "$0" >&2; exit 2 ;;
  esac
done
. "$(dirname "$0")/bin.sh"
need nats-server python3

PYTHONPATH="$(dirname "$0")" python3 - "$bin" "$duration" "$quiet" <<'EOF'
import os, shutil, socket, subprocess, sys, tempfile, time

from procs import cpu_seconds, free_port

binary, duration, quiet = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
tmp = tempfile.mkdtemp(prefix="userbus-follow-")
procs = []

def start(args, log):
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(tmp, log), "w"))
    procs.append(p)
    return p

def info(port, section):
    """INFO SECTION as a dict; None while the server does not answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"INFO %s\r\n" % section.encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return None
                data += chunk
                head, _, rest = data.partition(b"\r\n")
                if head.startswith(b"$") and len(rest) >= int(head[1:]):
                    break
    except OSError:
        return None
    out = {}
    for line in rest.decode().splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value
    return out

def wait_up(port):
    deadline = time.monotonic() + 30
    while info(port, "server") is None:
        if time.monotonic() > deadline:
            sys.exit(f"server on port {port} did not start (logs in {tmp})")
        time.sleep(0.1)

def primary_seqs(port):
    """The primary's last seq and the last the stream confirmed to it."""
    n = info(port, "nats") or {}
    confirmed = int(n.get("nats_confirmed_seq", 0))
    return confirmed + int(n.get("nats_lag_events", 0)), confirmed

def applied(port):
    r = info(port, "replication") or {}
    return int(r.get("userbus_applied_seq", 0)), int(r.get("userbus_apply_commits", 0))

def serve(port, db, log, *extra):
    p = start([binary, "serve", "--port", str(port), "--http-port", "0",
               "--db", os.path.join(tmp, db), "--durability", "normal",
               "--nats", nats_url, *extra], log)
    wait_up(port)
    return p

try:
    nats_port = free_port()
    nats_url = f"nats://127.0.0.1:{nats_port}"
    nats = start(["nats-server", "-js", "-a", "127.0.0.1", "-p", str(nats_port),
           "-sd", os.path.join(tmp, "js")], "nats.log")
    time.sleep(0.5)
    pport, fport = free_port(), free_port()
    primary = serve(pport, "primary.db", "primary.log")
    follower = serve(fport, "follower.db", "follower.log", "--follow")

    bench = subprocess.Popen([binary, "bench", "-p", str(pport), "-t", "register",
                              "-P", "16", "--duration", str(duration), "-q"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    cpu0 = [cpu_seconds(p.pid) for p in (follower, primary, nats)]
    samples = []  # (t, primary last, stream last, follower applied, commits)
    end_t = None
    caught_t = None
    while True:
        now = time.monotonic() - t0
        last, stream = primary_seqs(pport)
        seq, commits = applied(fport)
        samples.append((now, last, stream, seq, commits))
        if not quiet:
            print(f"t={now:5.1f}s primary={last:9d} stream={stream:9d} follower={seq:9d} "
                  f"behind the stream={stream - seq:8d}", flush=True)
        if end_t is None and bench.poll() is not None:
            end_t = now
        if end_t is not None and seq >= last and primary_seqs(pport)[0] == last:
            caught_t = now
            break
        if now > duration + 300:
            break
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t0 - now)))
    cpu, cpu_primary, cpu_nats = (cpu_seconds(p.pid) - c
                                  for p, c in zip((follower, primary, nats), cpu0))
    burst = [s for s in samples if s[0] <= end_t]
    (ta, pa, sa, fa, ca), (tb, pb, sb, fb, cb) = burst[0], burst[-1]
    final = samples[-1][1]
    print(f"burst: {tb - ta:.1f} s, primary {(pb - pa) / (tb - ta):,.0f} events/s, "
          f"stream {(sb - sa) / (tb - ta):,.0f} events/s, "
          f"follower applied {(fb - fa) / (tb - ta):,.0f} events/s "
          f"({(fb - fa) / max(1, cb - ca):,.0f} events per commit)")
    print(f"largest lag: {max(s[1] - s[3] for s in samples):,} events behind the primary, "
          f"{max(s[2] - s[3] for s in samples):,} behind the stream")
    if caught_t is None:
        print("the follower did not catch up")
    else:
        print(f"caught up {caught_t - end_t:.1f} s after the burst "
              f"(stream ends at seq {final:,}); follower CPU {cpu:.1f} s, "
              f"{cpu * 1e6 / max(1, final):.2f} us per event (primary {cpu_primary:.1f} s, "
              f"nats-server {cpu_nats:.1f} s)")
    # Once the primary stops, the follower chases the stream as it fills.
    after = [s for s in samples if s[0] >= end_t]
    if len(after) > 2:
        (tc, _, _, fc, cc), (td, _, _, fd, cd) = after[0], after[-1]
        print(f"after the burst: follower applied {(fd - fc) / (td - tc):,.0f} events/s "
              f"({(fd - fc) / max(1, cd - cc):,.0f} events per commit)")

    # A follower from an empty database, after the burst: the catch-up rate.
    cport = free_port()
    t1 = time.monotonic()
    late = serve(cport, "late.db", "late.log", "--follow")
    while applied(cport)[0] < final:
        if time.monotonic() - t1 > 600:
            break
        time.sleep(0.05)
    took = time.monotonic() - t1
    cpu = cpu_seconds(late.pid)
    seq, commits = applied(cport)
    print(f"from empty: {seq:,} events in {took:.1f} s, {seq / took:,.0f} events/s "
          f"({seq / max(1, commits):,.0f} events per commit); CPU {cpu:.1f} s, "
          f"{cpu * 1e6 / max(1, seq):.2f} us per event")
finally:
    for p in reversed(procs):
        p.terminate()
    for p in reversed(procs):
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(tmp, ignore_errors=True)
EOF
