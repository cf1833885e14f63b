"""Talk to Portcullis's /ws/echo over wss with Python's `websockets` package.

Usage: python3 python_echo.py wss://localhost:PORT/ws/echo CERT.pem
Exits non-zero with a message on the first mismatch.
"""
import asyncio
import ssl
import sys

import websockets
from websockets.exceptions import ConnectionClosed


async def main(url: str, cafile: str) -> None:
    ctx = ssl.create_default_context(cafile=cafile)
    async with websockets.connect(url, ssl=ctx, open_timeout=10, close_timeout=5) as ws:
        await ws.send("hello from python")
        reply = await asyncio.wait_for(ws.recv(), 10)
        assert reply == "echo: hello from python", reply

        payload = bytes(range(256))
        await ws.send(payload)
        reply = await asyncio.wait_for(ws.recv(), 10)
        assert reply == payload, reply

        pong_waiter = await ws.ping(b"py-ping")
        latency = await asyncio.wait_for(pong_waiter, 10)
        assert latency >= 0

        await ws.close(code=4001, reason="python done")
        assert ws.close_code == 4001, ws.close_code
        assert ws.close_reason == "python done", ws.close_reason

    # A message over the default 1 MiB limit gets close 1009.
    async with websockets.connect(url, ssl=ctx, open_timeout=10, max_size=None) as ws:
        await ws.send("x" * (1024 * 1024 + 1))
        try:
            await asyncio.wait_for(ws.recv(), 10)
            raise AssertionError("expected the gateway to close with 1009")
        except ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code == 1009, e
    print("ALL OK")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
