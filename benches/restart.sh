#!/usr/bin/env bash
# restart.sh — how long a node with many users takes from start to its first reply,
# and how much memory it then holds per user.
#
# Each run starts `userbus serve` on the database, sends PING every millisecond
# until one is answered (time to first reply), asks USERCOUNT, reads the server's
# CPU time (user + system) and VmRSS from /proc once the user index is loaded (after
# a crash it loads while the server serves), then stops the server and times the
# stop: with SIGTERM (a clean stop, which writes the user index's image) or, with
# --crash, with SIGKILL (the next start finds no clean-stop image: it reads the base
# image the imager thread wrote, or scans the users table when there is none; set
# USERBUS_BASE_IMAGE_EVENTS=0 to write none).
#
# usage: benches/restart.sh [--runs N] [--grow SECS] [--crash] DB
#   --grow SECS  first grow DB with `userbus bench -t register -P 16 --duration SECS`
#                against a server on it (about 20M users in 120 s on 2 shared cores)
#   --runs N     restarts to time (default 2)
#   --crash      end each run with SIGKILL instead of SIGTERM
#   run from the project root; builds target/release/userbus unless USERBUS_BIN is set.
set -euo pipefail

runs=2 grow=0 signal=TERM db=
while (($#)); do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --grow) grow=$2; shift 2 ;;
    --crash) signal=KILL; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) db=$1; shift ;;
  esac
done
[[ -n $db ]] || { sed -n '14,19p' "$0" >&2; exit 2; }
. "$(dirname "$0")/bin.sh"
need python3

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if ((grow > 0)); then
  port=$(free_port)
  "$bin" serve --port "$port" --http-port 0 --db "$db" --durability normal 2>/dev/null &
  pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  until "$bin" cli -p "$port" PING >/dev/null 2>&1; do sleep 0.2; done
  "$bin" bench -p "$port" -t register -P 16 --duration "$grow" | sed -n '3p'
  kill -TERM "$pid"; wait "$pid" || true
  trap - EXIT
fi

for ((i = 1; i <= runs; i++)); do
  port=$(free_port)
  PYTHONPATH="$(dirname "$0")" python3 - "$bin" "$db" "$port" "$signal" <<'EOF'
import signal, socket, subprocess, sys, time

from procs import cpu_seconds

binary, db, port, sig = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def ask(sock, cmd):
    sock.sendall(cmd)
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data.decode().strip()

t0 = time.monotonic()
proc = subprocess.Popen([binary, "serve", "--port", str(port), "--http-port", "0",
                         "--db", db, "--durability", "normal"],
                        stderr=subprocess.DEVNULL)
sock = None
while True:
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        if ask(sock, b"PING\r\n") == "+PONG":
            break
    except OSError:
        if sock:
            sock.close()
        sock = None
        if proc.poll() is not None:
            sys.exit("the server exited before answering")
        time.sleep(0.001)
ready = time.monotonic() - t0
users = int(ask(sock, b"USERCOUNT\r\n").lstrip(":"))
# After a crash the index loads while the server serves: wait until it is whole.
def info_loading():
    sock.sendall(b"INFO persistence\r\n")
    data = b""
    while b"loading:" not in data or not data.endswith(b"\r\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return b"loading:1" in data
while info_loading():
    time.sleep(0.01)
loaded = time.monotonic() - t0
cpu = cpu_seconds(proc.pid)
rss_kib = 0
with open(f"/proc/{proc.pid}/status") as f:
    for line in f:
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
sock.close()
t1 = time.monotonic()
proc.send_signal(signal.SIGKILL if sig == "KILL" else signal.SIGTERM)
proc.wait()
stop = time.monotonic() - t1
print(f"first reply {ready:6.2f} s  index loaded {loaded:6.2f} s  cpu {cpu:6.2f} s  users {users}  rss {rss_kib / 1024:8.1f} MiB  "
      f"{rss_kib * 1024 / max(users, 1):6.1f} B/user  stop SIG{sig} in {stop:.2f} s")
EOF
done
