#!/usr/bin/env python3
"""WebSockets over HTTP/2 (RFC 8441) with Python's `h2` (hyper-h2), a real client's state machine.

One TLS connection negotiates ALPN h2; the client checks the server's
SETTINGS_ENABLE_CONNECT_PROTOCOL, optionally GETs a page on the same connection, then opens
`--streams` WebSockets at once (as many as the server's SETTINGS_MAX_CONCURRENT_STREAMS allows
at a time) with extended CONNECT. On each stream answered 200 it sends a masked text frame
`hello <n>`, reads the answer, sends close 1000 `done`, reads the server's close and the end of
the stream, and ends its side. A refused stream's status and body are reported instead.

Prints one JSON object: the connection's facts and one entry per stream. It asserts nothing:
the test that runs it does.

usage: h2_websocket.py --port PORT --ca CA.pem [--path /ws/echo] [--streams 100]
       [--protocols "bearer.TOKEN, chat.v1"] [--origin URL] [--get /]
"""

import argparse
import json
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from h2_raw import CLOSE, PING, PONG, TEXT, tls_connect, ws_close, ws_frame, ws_parse

LIMIT = 20.0  # seconds for the whole run; every wait below is bounded by it


class Client:
    def __init__(self, args):
        self.args = args
        self.sock, self.alpn = tls_connect(args.host, args.port, args.ca, args.server_name)
        self.sock.settimeout(0.2)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.settings_seen = False
        self.streams = {}  # stream id -> what we saw
        self.get = None
        self.goaway = None
        self.deadline = time.monotonic() + LIMIT

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self):
        """Read once (bounded by the socket timeout) and handle the events."""
        self.flush()
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        if not data:
            raise ConnectionError("the server closed the connection")
        for event in self.conn.receive_data(data):
            self.event(event)
        self.flush()

    def wait(self, condition, what):
        while not condition():
            if time.monotonic() > self.deadline:
                raise TimeoutError(f"no {what} within {LIMIT} s")
            self.pump()

    def event(self, event):
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings_seen = True
        elif isinstance(event, h2.events.ResponseReceived):
            seen = self.target(event.stream_id)
            seen["status"] = int(dict(event.headers)[":status"])
            seen["headers"] = {k: v for k, v in event.headers if not k.startswith(":")}
        elif isinstance(event, h2.events.DataReceived):
            seen = self.target(event.stream_id)
            seen["_buf"] += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if "frames" in seen:
                frames, seen["_buf"] = ws_parse(seen["_buf"])
                for fin, opcode, payload in frames:
                    self.ws_frame(event.stream_id, seen, fin, opcode, payload)
        elif isinstance(event, h2.events.StreamEnded):
            self.target(event.stream_id)["ended"] = True
        elif isinstance(event, h2.events.StreamReset):
            self.target(event.stream_id)["reset"] = str(event.error_code.name)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = {
                "error": str(event.error_code.name),
                "last_stream_id": event.last_stream_id,
            }

    def target(self, stream_id):
        if self.get is not None and self.get.get("_id") == stream_id:
            return self.get
        return self.streams[stream_id]

    def ws_frame(self, stream_id, seen, fin, opcode, payload):
        if opcode == TEXT:
            seen["frames"].append({"text": payload.decode("utf-8", "replace"), "fin": bool(fin)})
            # The answer to our message: close.
            self.conn.send_data(stream_id, ws_close(1000, "done"))
        elif opcode == CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            seen["close"] = {"code": code, "reason": payload[2:].decode("utf-8", "replace")}
            # The closing handshake is done: end our side of the stream (RFC 8441 section 5).
            # (Unless the server has closed it already: the events describe frames h2 has
            # processed as a batch.)
            if not seen.get("ended_ours"):
                seen["ended_ours"] = True
                try:
                    self.conn.end_stream(stream_id)
                except h2.exceptions.StreamClosedError:
                    pass
        elif opcode == PING:
            self.conn.send_data(stream_id, ws_frame(PONG, payload))
        else:
            seen["frames"].append({"opcode": opcode, "length": len(payload)})

    def run(self):
        self.flush()
        self.wait(lambda: self.settings_seen, "SETTINGS from the server")
        remote = self.conn.remote_settings
        report = {
            "alpn": self.alpn,
            "enable_connect_protocol": remote.enable_connect_protocol,
            "max_concurrent_streams": remote.max_concurrent_streams,
        }
        if self.args.get:
            sid = self.conn.get_next_available_stream_id()
            self.get = {"_id": sid, "_buf": b""}
            self.conn.send_headers(
                sid,
                [(":method", "GET"), (":scheme", "https"),
                 (":authority", f"{self.args.server_name}:{self.args.port}"),
                 (":path", self.args.get)],
                end_stream=True,
            )
            self.wait(lambda: self.get.get("ended") or "reset" in self.get, "answer to the GET")
            report["get"] = {"status": self.get.get("status"),
                             "body": self.get["_buf"].decode("utf-8", "replace")}
        pending = list(range(self.args.streams))
        open_now, most_open = [], 0
        while pending or open_now:
            # Open as many as the server allows at a time (all of them, by default).
            while pending and len(open_now) < remote.max_concurrent_streams:
                n = pending.pop(0)
                open_now.append(self.open(n))
            most_open = max(most_open, len(open_now))
            self.wait(lambda: any(self.done(s) for s in open_now), "stream to finish")
            open_now = [s for s in open_now if not self.done(s)]
        report["most_open_at_once"] = most_open
        report["streams"] = [
            {k: v for k, v in seen.items() if not k.startswith("_") and k != "ended_ours"}
            for _, seen in sorted(self.streams.items())
        ]
        report["goaway"] = self.goaway
        return report

    def open(self, n):
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":authority", f"{self.args.server_name}:{self.args.port}"),
            (":path", self.args.path),
            ("sec-websocket-version", "13"),
        ]
        if self.args.protocols:
            headers.append(("sec-websocket-protocol", self.args.protocols))
        if self.args.origin:
            headers.append(("origin", self.args.origin))
        self.streams[sid] = {"n": n, "_buf": b""}
        self.conn.send_headers(sid, headers)
        self.flush()
        return sid

    def done(self, sid):
        seen = self.streams[sid]
        if "reset" in seen or self.goaway:
            return True
        status = seen.get("status")
        if status is None:
            return False
        if status != 200:
            if seen.get("ended"):
                seen["body"] = seen["_buf"].decode("utf-8", "replace")
                return True
            return False
        if "frames" not in seen:
            # Accepted: say hello.
            seen["frames"] = []
            self.conn.send_data(sid, ws_frame(TEXT, f"hello {seen['n']}".encode()))
            self.flush()
        return bool(seen.get("ended") and "close" in seen)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True, help="PEM certificate(s) to trust")
    parser.add_argument("--server-name", default="localhost")
    parser.add_argument("--path", default="/ws/echo")
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--protocols", help="Sec-WebSocket-Protocol to offer")
    parser.add_argument("--origin")
    parser.add_argument("--get", help="GET this path on the same connection first")
    args = parser.parse_args()
    client = Client(args)
    try:
        report = client.run()
    finally:
        client.sock.close()
    json.dump(report, sys.stdout)
    print()


if __name__ == "__main__":
    main()
