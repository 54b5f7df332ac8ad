#!/usr/bin/env python3
"""Reads one key of a NATS KV bucket through nats-py's KeyValue API, as a user's
program would, and prints its value.

    python3 kv_get.py nats://127.0.0.1:4222 USERBUS_handlers mail
"""

import asyncio
import sys

import nats


async def main(url, bucket, key):
    nc = await nats.connect(servers=url.split(","), connect_timeout=2)
    try:
        kv = await nc.jetstream().key_value(bucket)
        entry = await kv.get(key)
        print(entry.value.decode())
    finally:
        await nc.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
