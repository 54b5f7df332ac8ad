#!/usr/bin/env python3
"""A webhook receiver for userbus, as a third party writes it with `standardwebhooks`.

Listens on 127.0.0.1 (PORT, default any free port), prints `listening <port>`, then
verifies every POST with standardwebhooks.Webhook(SECRET).verify(body, headers) and
prints one JSON line per request:
  {"ok": true, "id": <webhook-id>, "timestamp": <webhook-timestamp>, "payload": <event>}
or {"ok": false, "error": "<why verification failed>"}.
A verified delivery is answered 204, a failed one 400 (so userbus retries it).
Exits after --timeout seconds.

    pip install standardwebhooks
    python3 receiver.py whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw --port 8000
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PRINT_LOCK = threading.Lock()


def emit(line):
    with PRINT_LOCK:
        print(json.dumps(line), flush=True)


def handler(webhook):
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1: keep-alive, as userbus reuses its connection per endpoint.
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                payload = webhook.verify(body, headers)
            except WebhookVerificationError as e:
                emit({"ok": False, "error": str(e)})
                self.answer(400)
                return
            emit(
                {
                    "ok": True,
                    "id": headers.get("webhook-id"),
                    "timestamp": headers.get("webhook-timestamp"),
                    "payload": payload,
                }
            )
            self.answer(204)

        def answer(self, status):
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("secret", help="the endpoint's secret, whsec_...")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds until it exits")
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(Webhook(args.secret)))
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    timer = threading.Timer(args.timeout, server.shutdown)
    timer.daemon = True
    timer.start()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
