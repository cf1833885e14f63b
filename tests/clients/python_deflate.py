"""permessage-deflate through Portcullis with Python's `websockets` (compression on, as browsers
have it).

  python3 python_deflate.py server plain|deflate
      An upstream echo server on 127.0.0.1:0 (prints its port, runs until stdin closes). It
      answers "ext?" with the Sec-WebSocket-Extensions it agreed ("none" if none).
  python3 python_deflate.py client URL CAFILE echo|relay
      Checks the agreed extension, 200 chat-like JSON messages both ways, the bytes on the wire,
      and two inflation bombs (one frame, many fragments) that must end with 1009.
Exits non-zero with a message on the first mismatch; prints "ALL OK" at the end.
"""
import asyncio
import json
import ssl
import sys

import websockets
from websockets.exceptions import ConnectionClosed


def chat(i):
    return json.dumps({
        "type": "message", "room": "general", "user": f"user{i % 7}",
        "text": f"hello, this is message number {i} of the chat", "ts": 1700000000 + i,
        "meta": {"client": "python", "version": "1.2.3", "flags": ["a", "b"]},
    })


async def server(mode):
    compression = "deflate" if mode == "deflate" else None

    async def handler(ws):
        ext = ws.response.headers.get("Sec-WebSocket-Extensions") or "none"
        async for message in ws:
            await ws.send(ext if message == "ext?" else message)

    async with websockets.serve(handler, "127.0.0.1", 0, compression=compression,
                                max_size=None) as srv:
        port = srv.sockets[0].getsockname()[1]
        print(port, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


async def client(url, cafile, mode):
    ctx = ssl.create_default_context(cafile=cafile)
    async with websockets.connect(url, ssl=ctx, open_timeout=10, max_size=None) as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions")
        want = "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
        assert ext == want, f"agreed {ext!r}"
        if mode == "relay":
            await ws.send("ext?")
            print("upstream extension:", await asyncio.wait_for(ws.recv(), 10), flush=True)
        prefix = "echo: " if mode == "echo" else ""
        for i in range(200):
            await ws.send(chat(i))
            reply = await asyncio.wait_for(ws.recv(), 10)
            assert reply == prefix + chat(i), reply
        # Binary, large and incompressible-ish.
        blob = bytes((i * 7919) % 251 for i in range(300_000))
        await ws.send(blob)
        reply = await asyncio.wait_for(ws.recv(), 10)
        assert reply == blob, len(reply)
        await ws.close()

    # Bombs: 16 MiB of zeros compress to about 16 KiB; the route's limit is 1 MiB.
    zeros = b"\0" * (16 << 20)
    for shape in ("frame", "fragments"):
        async with websockets.connect(url, ssl=ctx, open_timeout=10, max_size=None) as ws:
            if shape == "frame":
                await ws.send(zeros)
            else:
                await ws.send(zeros[i:i + (1 << 20)] for i in range(0, len(zeros), 1 << 20))
            try:
                await asyncio.wait_for(ws.recv(), 10)
                raise AssertionError(f"bomb as {shape}: expected close 1009")
            except ConnectionClosed as e:
                assert e.rcvd is not None and e.rcvd.code == 1009, e
        print(f"bomb as {shape}: 1009", flush=True)
    print("ALL OK")


if __name__ == "__main__":
    if sys.argv[1] == "server":
        asyncio.run(server(sys.argv[2]))
    else:
        asyncio.run(client(sys.argv[2], sys.argv[3], sys.argv[4]))
