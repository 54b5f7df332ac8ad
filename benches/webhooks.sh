#!/usr/bin/env bash
# webhooks.sh — webhook deliveries per second to a local receiver that answers at
# once, with 1 and 10 endpoints; and REGISTER at P=16 with 10 endpoints attached
# against none, in the same run.
#
# Deliveries: a fresh server (--durability normal) gets EVENTS registrations with no
# endpoint, then E endpoints on the receiver are added and each is rewound to seq 1
# (WEBHOOK REPLAY id 1); the time from the first REPLAY until INFO webhooks counts
# E x EVENTS deliveries gives deliveries per second. One request is in flight per
# endpoint, so 1 endpoint measures the round trip and 10 measure the loop's
# concurrency.
# REGISTER: `userbus bench -t register -P 16 -c 50 --duration SECS` against a fresh
# server with no endpoint and one with 10 endpoints attached (delivering while the
# load runs), in turn, PAIRS times; the medians and their ratio are printed.
#
# The receiver is an asyncio HTTP/1.1 server in this script that answers every
# request `200` with an empty body, on keep-alive connections, or one already
# listening on 127.0.0.1:PORT (--receiver). It shares the machine's cores with the
# server and the load: on 2 cores the figures are a floor. Each delivery run also
# prints the CPU the server and this script (with its receiver) used, as a share of
# one core over the run: near 100% is the one that limits it.
#
# usage: benches/webhooks.sh [--events N] [--pairs N] [--duration SECS] [--durability MODE]
#                            [--receiver PORT]
#   --events N        registrations each endpoint receives in the delivery runs (default 20000)
#   --pairs N         REGISTER runs with and without endpoints (default 3)
#   --duration SECS   length of each REGISTER run (default 10)
#   --durability MODE the REGISTER runs' durability (default strict)
#   --receiver PORT   deliver to this receiver on 127.0.0.1 instead of the built-in one
#   run from the project root; builds target/release/userbus unless USERBUS_BIN is set.
set -euo pipefail

events=20000 pairs=3 duration=10 durability=strict receiver=0
while (($#)); do
  case $1 in
    --events) events=$2; shift 2 ;;
    --pairs) pairs=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --durability) durability=$2; shift 2 ;;
    --receiver) receiver=$2; shift 2 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) sed -n '23,30p' "$0" >&2; exit 2 ;;
  esac
done
. "$(dirname "$0")/bin.sh"
need python3

PYTHONPATH="$(dirname "$0")" exec python3 - "$bin" "$events" "$pairs" "$duration" "$durability" "$receiver" <<'EOF'
import asyncio, json, os, socket, statistics, subprocess, sys, tempfile, threading, time

from procs import cpu_seconds, free_port

binary = sys.argv[1]
events, pairs, duration = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
durability = sys.argv[5]
given_receiver = int(sys.argv[6])


# --- the receiver -------------------------------------------------------------

class Answer(asyncio.Protocol):
    """Answers 200 to each request on the connection (Content-Length bodies)."""

    def connection_made(self, transport):
        self.transport, self.buf = transport, b""

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self.buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")


def start_receiver():
    ready, port = threading.Event(), []

    def run():
        loop = asyncio.new_event_loop()
        server = loop.run_until_complete(loop.create_server(Answer, "127.0.0.1", 0))
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    ready.wait()
    return port[0]


# --- the server ---------------------------------------------------------------

class Server:
    def __init__(self, mode):
        self.dir = tempfile.TemporaryDirectory()
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "serve", "--port", str(self.port), "--http-port", "0",
             "--db", os.path.join(self.dir.name, "bench.db"), "--durability", mode,
             "--webhook-allow-private"],
            stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
                self.file = self.sock.makefile("rb")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def call(self, *words):
        out = b"*%d\r\n" % len(words)
        for w in words:
            w = str(w).encode()
            out += b"$%d\r\n%s\r\n" % (len(w), w)
        self.sock.sendall(out)
        return self.read()

    def read(self):
        line = self.file.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b":"):
            return int(rest) if kind == b":" else rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.file.read(n + 2)[:-2].decode()
        if kind in (b"*", b"%"):
            n = int(rest) * (2 if kind == b"%" else 1)
            return [self.read() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")

    def info(self, field):
        for line in self.call("INFO", "webhooks").splitlines():
            key, _, value = line.partition(":")
            if key == field:
                return int(value)
        raise RuntimeError(f"no {field} in INFO webhooks")

    def bench(self, *args):
        out = subprocess.run(
            [binary, "bench", "-p", str(self.port), "--json", "-q", *map(str, args)],
            check=True, capture_output=True, text=True).stdout
        return json.loads(out)

    def stop(self):
        self.sock.close()
        self.proc.terminate()
        self.proc.wait()
        self.dir.cleanup()


def add_endpoints(server, receiver, n):
    ids = []
    for i in range(n):
        reply = server.call("WEBHOOK", "ADD", f"http://127.0.0.1:{receiver}/e{i}")
        ids.append(reply[1])  # id <int> secret <bulk>
    return ids


# --- deliveries per second ----------------------------------------------------

receiver = given_receiver or start_receiver()
which = "given" if given_receiver else "built-in asyncio"
print(f"receiver ({which}) on 127.0.0.1:{receiver}; {events} events per endpoint")
print(f"{'endpoints':>10} {'deliveries':>11} {'seconds':>8} {'deliveries/s':>13} "
      f"{'server CPU':>11} {'script CPU':>11}")
for endpoints in (1, 10):
    server = Server("normal")
    server.bench("-t", "register", "-n", events, "-P", 16, "-c", 16)
    ids = add_endpoints(server, receiver, endpoints)
    want = events * endpoints
    start = time.monotonic()
    cpu = cpu_seconds(server.proc.pid), cpu_seconds(os.getpid())
    for i in ids:
        server.call("WEBHOOK", "REPLAY", i, 1)
    while server.info("webhook_deliveries") < want:
        time.sleep(0.01)
    seconds = time.monotonic() - start
    used = [cpu_seconds(p) - c for p, c in zip((server.proc.pid, os.getpid()), cpu)]
    print(f"{endpoints:>10} {want:>11} {seconds:>8.2f} {want / seconds:>13.0f} "
          f"{100 * used[0] / seconds:>10.0f}% {100 * used[1] / seconds:>10.0f}%")
    server.stop()

# --- REGISTER with and without endpoints ---------------------------------------

print(f"\nREGISTER -P 16 -c 50, {duration} s runs, --durability {durability}")
runs = {0: [], 10: []}
for pair in range(pairs):
    order = (0, 10) if pair % 2 == 0 else (10, 0)
    for endpoints in order:
        server = Server(durability)
        add_endpoints(server, receiver, endpoints)
        report = server.bench("-t", "register", "-P", 16, "-c", 50, "--duration", duration)
        delivered = server.info("webhook_deliveries") if endpoints else 0
        runs[endpoints].append(report["requests_per_sec"])
        print(f"  pair {pair + 1}, {endpoints:>2} endpoints: {report['requests_per_sec']:>9.0f} "
              f"REGISTER/s, p99 {report['latency_ms']['p99']:.2f} ms"
              + (f", {delivered} deliveries during the run" if endpoints else ""))
        server.stop()
none, ten = statistics.median(runs[0]), statistics.median(runs[10])
print(f"median: {none:.0f}/s with none, {ten:.0f}/s with 10 endpoints: ratio {ten / none:.3f}")
EOF
