"""An HTTP/2 client connection at the frame level, for the tests' HTTP/2 clients.

hyperframe (which comes with Python's `h2`) serialises and parses the frames and hpack encodes
the header blocks, but nothing here keeps HTTP/2's state machine for us: a test can send what a
well-behaved client would not (the attacks in h2_attacks.py) and records every frame the server
answers with. One thread, a non-blocking TLS socket and select(): writing never blocks while
the server's answers wait unread, so a server that stops reading cannot wedge the client, and
every wait has a deadline.
"""

import select
import socket
import ssl
import struct
import time

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# RFC 9113 section 7.
ERROR_CODES = {
    0x0: "NO_ERROR",
    0x1: "PROTOCOL_ERROR",
    0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT",
    0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM",
    0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR",
    0xA: "CONNECT_ERROR",
    0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY",
    0xD: "HTTP_1_1_REQUIRED",
}
CANCEL = 0x8

# SETTINGS identifiers (RFC 9113 section 6.5.2, RFC 8441 section 3).
HEADER_TABLE_SIZE = 0x1
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6
ENABLE_CONNECT_PROTOCOL = 0x8


def error_name(code):
    return ERROR_CODES.get(code, hex(code))


def tls_connect(host, port, ca, server_name, alpn=("h2",), timeout=10.0):
    """A TLS connection trusting only `ca`, offering `alpn`; returns (socket, chosen protocol)."""
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(list(alpn))
    raw = socket.create_connection((host, port), timeout=timeout)
    tls = context.wrap_socket(raw, server_hostname=server_name)
    return tls, tls.selected_alpn_protocol()


class Closed(Exception):
    """The server closed the connection (EOF or reset)."""


class Connection:
    """One client connection: sends frames, records the server's (SETTINGS are acknowledged)."""

    def __init__(self, host, port, ca, server_name, settings=None, ack_settings=True, give_window=True):
        self.sock, self.alpn = tls_connect(host, port, ca, server_name)
        self.sock.setblocking(False)
        self.authority = f"{server_name}:{port}"
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        # Decode what a server may send without the 64 KiB default getting in the way.
        self.decoder.max_allowed_table_size = 1 << 16
        self.ack_settings = ack_settings
        # Give back the flow-control window for what arrives (a reader that keeps up), or not
        # (a window held at zero).
        self.give_window = give_window
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.frames = []  # every frame received, in order
        self.server_settings = {}
        self.settings_acks = 0
        self.goaway = None
        self.resets = {}  # stream id -> error name
        self.responses = {}  # stream id -> decoded headers (list of pairs)
        self.data = {}  # stream id -> bytes received
        self.ended = set()  # streams the server ended (END_STREAM)
        self.pings = 0
        self.closed = False
        self.close_error = None
        self.sent_frames = 0
        self.header_block = {}  # stream id -> header block fragments until END_HEADERS
        self.send_raw(PREFACE)
        self.send(SettingsFrame(0, settings=settings or {}))

    # --- sending -------------------------------------------------------------------------------

    def send(self, frame):
        self.sent_frames += 1
        self.send_raw(frame.serialize())

    def send_raw(self, data):
        self.outbuf += data

    def headers(self, stream_id, headers, end_stream=False, end_headers=True):
        """A HEADERS frame with `headers` (pairs) encoded by this connection's HPACK encoder."""
        frame = HeadersFrame(stream_id, self.encoder.encode(headers))
        frame.flags.add("END_HEADERS") if end_headers else None
        frame.flags.add("END_STREAM") if end_stream else None
        self.send(frame)

    def request_headers(self, path, method="GET", extra=()):
        return [
            (":method", method),
            (":scheme", "https"),
            (":authority", self.authority),
            (":path", path),
        ] + list(extra)

    def websocket_headers(self, path, extra=()):
        """An extended CONNECT (RFC 8441) for a WebSocket on `path`."""
        return [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":authority", self.authority),
            (":path", path),
            ("sec-websocket-version", "13"),
        ] + list(extra)

    def data_frame(self, stream_id, data, end_stream=False):
        frame = DataFrame(stream_id, data)
        if end_stream:
            frame.flags.add("END_STREAM")
        self.send(frame)

    def reset(self, stream_id, code=CANCEL):
        self.send(RstStreamFrame(stream_id, error_code=code))

    def continuation(self, stream_id, block, end_headers=False):
        frame = ContinuationFrame(stream_id, block)
        if end_headers:
            frame.flags.add("END_HEADERS")
        self.send(frame)

    def ping(self, payload=b"\0" * 8):
        self.send(PingFrame(0, opaque_data=payload))

    def window_update(self, stream_id, increment):
        self.send(WindowUpdateFrame(stream_id, window_increment=increment))

    # --- the socket ----------------------------------------------------------------------------

    def step(self, timeout):
        """Wait up to `timeout` for the socket, then write what is queued and read what arrived."""
        wanted_write = [self.sock] if self.outbuf else []
        readable, writable, _ = select.select([self.sock], wanted_write, [], timeout)
        if readable or self.sock.pending():
            self._read()
        if writable and not self.closed:
            self._write()

    def pump(self, seconds):
        """Write and read for `seconds` (less once the connection is closed); whether it is
        still open."""
        deadline = time.monotonic() + seconds
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.step(min(left, 0.05))
        return not self.closed

    def flush(self, seconds):
        """Step until everything queued is written (or the connection closed, or `seconds`)."""
        deadline = time.monotonic() + seconds
        while self.outbuf and not self.closed and time.monotonic() < deadline:
            self.step(min(0.05, max(0.0, deadline - time.monotonic())))
        return not self.outbuf

    def wait_for(self, condition, seconds):
        """Step until `condition()` holds or the connection closes; whether it held."""
        deadline = time.monotonic() + seconds
        while not condition() and not self.closed and time.monotonic() < deadline:
            self.step(min(0.05, max(0.0, deadline - time.monotonic())))
        return bool(condition())

    def _write(self):
        try:
            sent = self.sock.send(self.outbuf[:65536])
            del self.outbuf[:sent]
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            pass
        except (OSError, ssl.SSLError) as e:
            self._closed(e)

    def _read(self):
        while not self.closed:
            try:
                chunk = self.sock.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return
            except (OSError, ssl.SSLError) as e:
                self._closed(e)
                return
            if not chunk:
                self._closed(None)
                return
            self.inbuf += chunk
            self._parse()

    def _closed(self, error):
        self.closed = True
        self.close_error = None if error is None else type(error).__name__
        # The connection cannot be written any more: nothing queued will go out.
        self.outbuf.clear()

    def _parse(self):
        while len(self.inbuf) >= 9:
            length = int.from_bytes(self.inbuf[:3], "big")
            if len(self.inbuf) < 9 + length:
                return
            frame, _ = Frame.parse_frame_header(memoryview(bytes(self.inbuf[:9])))
            frame.parse_body(memoryview(bytes(self.inbuf[9 : 9 + length])))
            del self.inbuf[: 9 + length]
            self._received(frame)

    def _received(self, frame):
        self.frames.append(frame)
        sid = frame.stream_id
        if isinstance(frame, SettingsFrame):
            if "ACK" in frame.flags:
                self.settings_acks += 1
            else:
                self.server_settings.update(frame.settings)
                if self.ack_settings:
                    ack = SettingsFrame(0)
                    ack.flags.add("ACK")
                    self.send(ack)
        elif isinstance(frame, GoAwayFrame):
            self.goaway = {
                "error": error_name(frame.error_code),
                "last_stream_id": frame.last_stream_id,
                "debug": frame.additional_data.decode("utf-8", "replace"),
            }
        elif isinstance(frame, RstStreamFrame):
            self.resets[sid] = error_name(frame.error_code)
        elif isinstance(frame, PingFrame):
            self.pings += 1
        elif isinstance(frame, (HeadersFrame, ContinuationFrame)):
            self.header_block[sid] = self.header_block.get(sid, b"") + frame.data
            if "END_HEADERS" in frame.flags:
                block = self.header_block.pop(sid)
                headers = [(n.decode(), v.decode()) for n, v in self.decoder.decode(block, raw=True)]
                # The first block is the response; a later one (trailers) is kept too.
                self.responses.setdefault(sid, []).extend(headers)
            if "END_STREAM" in frame.flags:
                self.ended.add(sid)
        elif isinstance(frame, DataFrame):
            self.data[sid] = self.data.get(sid, b"") + frame.data
            if "END_STREAM" in frame.flags:
                self.ended.add(sid)
            size = frame.flow_controlled_length
            if self.give_window and size:
                self.window_update(0, size)
                if sid not in self.ended:
                    self.window_update(sid, size)

    def status(self, stream_id):
        for name, value in self.responses.get(stream_id, []):
            if name == ":status":
                return int(value)
        return None

    def header(self, stream_id, wanted):
        for name, value in self.responses.get(stream_id, []):
            if name == wanted:
                return value
        return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --- WebSocket frames (RFC 6455 section 5) over a stream's DATA ----------------------------------

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def ws_frame(opcode, payload, mask=b"\x37\xfa\x21\x3d"):
    """A final client frame: masked, as RFC 6455 requires of clients (RFC 8441 keeps it)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def ws_close(code, reason=""):
    return ws_frame(CLOSE, struct.pack("!H", code) + reason.encode())


def ws_parse(buf):
    """Complete server frames at the start of `buf`: ([(fin, opcode, payload)], rest). Server
    frames are unmasked; a masked one is reported with opcode None."""
    frames = []
    while len(buf) >= 2:
        fin, opcode = buf[0] >> 7, buf[0] & 0x0F
        masked, n = buf[1] >> 7, buf[1] & 0x7F
        at = 2
        if n == 126:
            if len(buf) < 4:
                break
            n, at = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, at = struct.unpack("!Q", buf[2:10])[0], 10
        if masked:
            at += 4
        if len(buf) < at + n:
            break
        frames.append((fin, None if masked else opcode, bytes(buf[at : at + n])))
        buf = buf[at + n :]
    return frames, buf
