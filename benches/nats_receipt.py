#!/usr/bin/env python3
"""Commit -> receipt latency of userbus events at a nats-py JetStream consumer.

Subscribes to SUBJECT on STREAM at URL with an ordered push consumer (new messages
only), prints "ready" once the consumer exists, then, for each message, takes
time.time() at receipt minus the event's "at" (from the JSON payload; see
below). It stops --idle seconds after the last
message (once one came) or after --timeout seconds in all, and prints one JSON
line: {"messages", "p50_ms", "p99_ms", "max_ms"}. `cargo bench --bench nats` runs
it while a paced REGISTER load runs; by hand:

    python3 benches/nats_receipt.py nats://127.0.0.1:4222 USERBUS 'userbus.>'

"at" is when the REGISTER ran in its tick, before the tick's commit, truncated to
the millisecond: a figure includes the commit itself and up to 1 ms of rounding,
so it is an upper bound of commit -> receipt.
"""

import argparse
import asyncio
import datetime
import json
import sys
import time

import nats
from nats.js.api import DeliverPolicy


def at_seconds(payload):
    """The event's "at" ("2026-12-06T08:35:07.852Z") as Unix seconds."""
    at = json.loads(payload)["at"]
    return datetime.datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def percentile(sorted_values, p):
    """The nearest-rank percentile p (0-100) of a sorted list."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


async def consume(args):
    nc = await nats.connect(servers=args.url.split(","), connect_timeout=2)
    # Receipt times first, parsed after the run: the callback stays short, so a
    # backlog in Python does not add to the figures.
    received = []

    async def on_msg(msg):
        received.append((time.time(), msg.data))

    try:
        js = nc.jetstream()
        await js.subscribe(
            args.subject,
            stream=args.stream,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            cb=on_msg,
        )
        print("ready", flush=True)
        started = time.monotonic()
        last_count, last_change = 0, time.monotonic()
        while time.monotonic() - started < args.timeout:
            await asyncio.sleep(0.05)
            if len(received) != last_count:
                last_count, last_change = len(received), time.monotonic()
            elif last_count and time.monotonic() - last_change >= args.idle:
                break
    finally:
        await nc.close()
    return received


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", help="nats://host:port[,nats://host:port...]")
    p.add_argument("stream")
    p.add_argument("subject")
    p.add_argument("--idle", type=float, default=1.0, help="seconds without a message that end it")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds for all of it")
    args = p.parse_args()
    received = asyncio.run(consume(args))
    ms = sorted((t - at_seconds(data)) * 1000.0 for t, data in received)
    print(
        json.dumps(
            {
                "messages": len(ms),
                "p50_ms": percentile(ms, 50),
                "p99_ms": percentile(ms, 99),
                "max_ms": ms[-1] if ms else None,
            }
        ),
        flush=True,
    )
    if not ms:
        print("no message came", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
