#!/usr/bin/env python3
"""A consumer of a userbus JetStream stream, as a user on another machine writes it.

Connects to URL (comma-separated servers), creates the durable pull consumer
DURABLE with explicit ack on STREAM filtered to SUBJECT (or binds it when it
exists), fetches COUNT messages, acks each, and prints one JSON line per message:
{"seq": <stream seq>, "msg_id": <Nats-Msg-Id>, "subject": ..., "data": <payload>}.
Exits 0 after COUNT messages, 1 when they did not all come within --timeout.

    python3 consume.py nats://127.0.0.1:4222 USERBUS 'userbus.>' 10
"""

import argparse
import asyncio
import json
import sys

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig


async def consume(args, printed):
    nc = await nats.connect(
        servers=args.url.split(","),
        connect_timeout=2,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
    )
    try:
        js = nc.jetstream()
        config = ConsumerConfig(durable_name=args.durable, ack_policy=AckPolicy.EXPLICIT)
        sub = await js.pull_subscribe(
            args.subject, durable=args.durable, stream=args.stream, config=config
        )
        while printed[0] < args.count:
            try:
                msgs = await sub.fetch(args.count - printed[0], timeout=1)
            except NatsTimeout:
                continue
            for msg in msgs:
                line = {
                    "seq": msg.metadata.sequence.stream,
                    "msg_id": (msg.headers or {}).get("Nats-Msg-Id"),
                    "subject": msg.subject,
                    "data": msg.data.decode("utf-8", "replace"),
                }
                # Acked before printed: a printed message is one the stream has
                # recorded as consumed.
                await msg.ack_sync()
                print(json.dumps(line), flush=True)
                printed[0] += 1
    finally:
        await nc.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("stream")
    p.add_argument("subject")
    p.add_argument("count", type=int)
    p.add_argument("--durable", default="consumer")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds for all of it")
    args = p.parse_args()
    printed = [0]
    try:
        asyncio.run(asyncio.wait_for(consume(args, printed), args.timeout))
    except asyncio.TimeoutError:
        print(f"timeout: {printed[0]} of {args.count} messages in {args.timeout}s", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
