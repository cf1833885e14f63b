#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets into fuzz/corpus/<target>/ and their libFuzzer
dictionaries into fuzz/dict/<target>.dict (both committed).

  fuzz/make_seeds.py

Each seed is laid out as its target reads it (see gateway/src/fuzzing.rs): a few choice bytes,
then length-prefixed parts. The config seeds are the repository's own configuration files.
Re-running it rewrites the same files and never deletes a seed added by hand.
"""
import base64
import hashlib
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def put(target, name, data):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def part(data):
    """A part as Input::part reads it: two length bytes (little-endian), then the bytes."""
    if isinstance(data, str):
        data = data.encode()
    return struct.pack("<H", len(data)) + data


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0):
    """One RFC 6455 frame, masked as a client sends it."""
    if isinstance(payload, str):
        payload = payload.encode()
    first = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head = bytes([first, bit | n])
    elif n < 65536:
        head = bytes([first, bit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([first, bit | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = b"\x37\xfa\x21\x3d"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close(code, reason="", mask=True):
    return frame(8, struct.pack(">H", code) + reason.encode(), mask=mask)


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- http_head: [max_bytes, max_headers, chunk] + a request head ----------------------------------
HANDSHAKE = (
    "GET /ws/echo HTTP/1.1\r\nHost: gw.example\r\nUpgrade: websocket\r\n"
    "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)
heads = {
    "rfc6455": HANDSHAKE + "Sec-WebSocket-Protocol: chat, superchat\r\nOrigin: https://chat.example.com\r\n\r\n",
    "bearer-header": HANDSHAKE + "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln\r\n\r\n",
    "bearer-subprotocol": HANDSHAKE + "Sec-WebSocket-Protocol: bearer.eyJhbGciOiJIUzI1NiJ9.e30.c2ln, chat.v1\r\n\r\n",
    "query-token": HANDSHAKE.replace("/ws/echo", "/r?a=1&access_token=abc.def.ghi&access%5Ftoken=x&b=2#frag") + "\r\n",
    "cookie-token": HANDSHAKE + "Cookie: theme=dark; access_token=\"abc.def\"; x=1\r\nCookie: access_token=second\r\n\r\n",
    "forwarded": HANDSHAKE + "Forwarded: for=\"[2001:db8::1]:4711\";proto=https, for=127.0.0.2\r\n"
    "X-Forwarded-For: 6.6.6.6, 198.51.100.7, 127.0.0.5\r\nOrigin: https://a.b.example.org\r\n\r\n",
    "pipelined": HANDSHAKE + "\r\n" + "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
    "absolute-form": HANDSHAKE.replace("/ws/echo", "https://gw.example/ws/echo?x=y") + "\r\n",
    "plain-get": "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    "http10": "GET /ws/echo HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
    "post-chunked": "POST /ws/echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nUpgrade: websocket\r\n\r\n0\r\n\r\n",
    "duplicate-key": HANDSHAKE + "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nHost: other\r\n\r\n",
    "connection-listed": HANDSHAKE + "Connection: X-Secret\r\nX-Secret: 1\r\nX-Forwarded-Host: evil\r\nTE: trailers\r\n\r\n",
    "tls-hello": "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + "A" * 32 + "\r\n\r\n",
    "obs-fold": "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n  folded\r\n\r\n",
    "many-headers": "GET / HTTP/1.1\r\n" + "".join(f"H{i}: v\r\n" for i in range(40)) + "\r\n",
}
for i, (name, head) in enumerate(heads.items()):
    choices = bytes([0x10, 0x18, 0xFF if i % 3 == 0 else 3 + i])
    put("http_head", name, choices + head.encode("latin-1"))

# --- token: [policy, how] + part(header JSON) + claims JSON -------------------------------------
# Fixed moments, so the seeds do not change with the clock: long past, and far ahead (2100).
PAST = 1700000000
FUTURE = 4102444800
HEADER = '{"alg":"HS256","typ":"JWT"}'
claims = {
    "minimal": {"sub": "alice", "exp": FUTURE},
    "full": {
        "sub": "alice", "exp": FUTURE, "nbf": PAST, "iat": PAST,
        "iss": "https://idp.example", "aud": ["chat", "other"],
        "scope": "chat:read chat:write", "role": ["admin", "user"], "admin": True,
        "groups": "ops dev",
    },
    "expired": {"sub": "bob", "exp": PAST},
    "huge-exp": {"sub": "big", "exp": 2**63},
    "max-exp": {"exp": 2**64 - 1},
    "float-exp": {"exp": 1796117809.5, "iat": 1.5},
    "future-iat": {"exp": FUTURE, "iat": FUTURE - 60},
    "not-yet": {"exp": FUTURE, "nbf": FUTURE - 60},
    "no-exp": {"sub": "carol", "scope": ["chat:read"]},
    "string-exp": {"exp": str(FUTURE), "sub": 7},
    "aud-string": {"exp": FUTURE, "aud": "portcullis", "iss": "https://idp.example", "sub": "d"},
}
headers = {
    "plain": HEADER,
    "kid": '{"alg":"HS256","kid":"k1"}',
    "crit": '{"alg":"HS256","crit":["exp"],"exp":1}',
    "none": '{"alg":"none"}',
    "rs256": '{"alg":"RS256","kid":"rsa"}',
    "ps384": '{"alg":"PS384","kid":"rsa"}',
    "es256": '{"alg":"ES256","kid":"ec"}',
    "eddsa": '{"alg":"EdDSA","kid":"ed"}',
}
i = 0
for cname, c in claims.items():
    for policy in range(4):
        how = (i % 4) << 1  # the four token sources, in turn
        hname = list(headers)[i % len(headers)] if cname in ("minimal", "full") else "plain"
        body = part(headers[hname]) + json.dumps(c).encode()
        put("token", f"{cname}-p{policy}-{hname}", bytes([policy, how]) + body)
        i += 1
# Raw token texts (odd second byte): a real-looking token, garbage, a header that is not JSON.
for name, text in {
    "raw-real": b64(HEADER.encode()) + "." + b64(b'{"exp":1}') + "." + b64(b"x" * 32),
    "raw-two-parts": "eyJhbGciOiJIUzI1NiJ9.e30",
    "raw-bad-b64": "!!!.@@@.###",
    "raw-not-json": b64(b"not json") + ".e30.",
}.items():
    put("token", name, bytes([0, 1]) + text.encode())

# --- jwks: an HTTP answer (chunked or not), or a bare JWKS document -----------------------------
rsa_n = b64(hashlib.sha512(b"n").digest() * 4)
jwks = {"keys": [
    {"kty": "RSA", "kid": "rsa", "use": "sig", "alg": "RS256", "n": rsa_n, "e": "AQAB"},
    {"kty": "RSA", "kid": "rsa-any", "n": rsa_n, "e": "AQAB"},
    {"kty": "EC", "crv": "P-256", "kid": "ec", "alg": "ES256",
     "x": b64(hashlib.sha256(b"x").digest()), "y": b64(hashlib.sha256(b"y").digest())},
    {"kty": "EC", "crv": "P-384", "kid": "ec384",
     "x": b64(hashlib.sha384(b"x").digest()), "y": b64(hashlib.sha384(b"y").digest())},
    {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(hashlib.sha256(b"ed").digest())},
    {"kty": "oct", "kid": "hmac", "k": b64(b"k" * 32)},
    {"kty": "RSA", "kid": "enc", "use": "enc", "n": rsa_n, "e": "AQAB"},
    {"kty": "EC", "crv": "secp256k1", "kid": "k1", "x": "AA", "y": "AA"},
]}
doc = json.dumps(jwks)
put("jwks", "document", doc)
put("jwks", "empty", '{"keys":[]}')
put("jwks", "answer-plain", f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(doc)}\r\n\r\n{doc}")
chunks = "".join(f"{len(doc[j:j + 100]):x}\r\n{doc[j:j + 100]}\r\n" for j in range(0, len(doc), 100))
put("jwks", "answer-chunked", f"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}0\r\n\r\n")
put("jwks", "answer-chunk-ext", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\nb;name=v\r\n{\"keys\":[]}\r\n0\r\n\r\n")
put("jwks", "answer-404", "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
put("jwks", "answer-huge-chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffe\r\nab")

# --- config: the repository's own configuration files ------------------------------------------
for path in [
    "gateway/src/config/default.toml",
    "policies/chat.toml",
    "policies/example.toml",
    "policies/internal.toml",
    "policies/public-echo.toml",
    "deploy/container/portcullis.toml",
]:
    full = os.path.join(REPO, path)
    if os.path.exists(full):
        with open(full, "rb") as f:
            put("config", path.replace("/", "_"), f.read())
put("config", "relay-all-keys", """
[server]
shutdown_grace = 30
drain_window = "5s"
trusted_proxies = ["10.0.0.0/8", "::1/128"]
[limits]
head_timeout = "500ms"
max_head_bytes = 8192
max_message_bytes = 65536
[[listeners]]
address = "127.0.0.1:0"
[[routes]]
path = "/r"
mode = "relay"
policy = "chat"
upstreams = ["ws://127.0.0.1:9001/chat", "wss://backend.internal/chat?v=1"]
balance = "least_connections"
connect_timeout = "2s"
subprotocols = ["chat.v1"]
forward_claims = { sub = "X-Auth-Subject" }
ping_interval = "0s"
idle_timeout = 31536000
upstream_sni = "backend.internal"
upstream_max_message_bytes = 100
[policies.chat.origin]
allow = ["https://*.example.com"]
allow_null = true
[policies.chat.limits]
handshakes_per_ip = { per_second = 5, burst = 10 }
connections_per_ip = 4
messages_per_second = 10
""")

# --- echo_session: [flags, size, chunk] + part(early bytes) + the client's bytes ----------------
# flags: 1 message rate, 2 byte rate, 4 token expiry, 8 graceful stop, 16 structured frames.
client_talk = (
    frame(1, "hello") + frame(2, b"\x00\x01\x02") + frame(9, "ping?")
    + frame(1, "frag", fin=False) + frame(0, "mented") + frame(10, "") + close(1000, "bye")
)
put("echo_session", "talk", bytes([0, 8, 0]) + part(b"") + client_talk)
put("echo_session", "early-frames", bytes([0, 8, 3]) + part(frame(1, "early")) + frame(1, "later") + close(1001))
put("echo_session", "bad-utf8", bytes([0, 8, 0]) + part(b"") + frame(1, b"\xff\xfe"))
put("echo_session", "unmasked", bytes([0, 8, 0]) + part(b"") + frame(1, "x", mask=False))
put("echo_session", "rsv-bits", bytes([0, 8, 0]) + part(b"") + frame(1, "x", rsv=0x40))
put("echo_session", "too-big", bytes([0, 0, 0]) + part(b"") + frame(2, b"z" * 300))
put("echo_session", "rate", bytes([3, 12, 0]) + part(b"") + frame(1, "a") * 20)
put("echo_session", "expiry-and-stop", bytes([12 | 0x40, 30, 1]) + part(b"") + frame(1, "hi"))
put("echo_session", "close-reason", bytes([0, 8, 0]) + part(b"") + close(4000, "x" * 123))
put("echo_session", "close-1-byte", bytes([0, 8, 0]) + part(b"") + frame(8, b"\x03"))
put("echo_session", "len-64bit", bytes([0, 8, 0]) + part(b"") + b"\x82\xff" + b"\x7f" + b"\xff" * 7 + b"\x00" * 4)
# Structured: (first byte, length byte, payload) triples, masked by the harness.
put("echo_session", "structured", bytes([16, 8, 0]) + part(b"") + b"\x81\x05hello\x89\x00\x01\x03abc\x80\x02de\x88\x02\x03\xe8")

# --- relay_session: [flags, size, chunk, timers] + part(client bytes) + the upstream's bytes ----
# timers: 1 pings, 2 idle timeout; (timers >> 2) % 3: who hangs up first.
upstream_talk = frame(1, "welcome", mask=False) + frame(2, b"\x01", mask=False) + frame(9, "", mask=False)
put("relay_session", "talk", bytes([0, 8, 0, 0]) + part(client_talk) + upstream_talk)
put("relay_session", "upstream-closes", bytes([0, 8, 0, 4]) + part(frame(1, "hi")) + upstream_talk + close(4001, "done", mask=False))
put("relay_session", "pings-idle", bytes([0, 8, 0, 3 | 8]) + part(b"") + b"")
put("relay_session", "client-too-big", bytes([0, 2, 0, 0]) + part(frame(1, "0123456789" * 10)) + upstream_talk)
put("relay_session", "upstream-masked", bytes([0, 8, 0, 0]) + part(frame(1, "a")) + frame(1, "masked"))
put("relay_session", "upstream-bad-close", bytes([0, 8, 0, 0]) + part(b"") + frame(8, b"\x03\xe8\xff", mask=False))
put("relay_session", "stop-drain", bytes([8 | 0x80, 20, 0, 0]) + part(frame(1, "x") * 3) + upstream_talk)
put("relay_session", "structured", bytes([16, 8, 0, 0]) + part(b"\x81\x02hi\x88\x02\x03\xe8") + b"\x81\x03yo!\x8a\x00")

# --- Dictionaries (fuzz/dict/TARGET.dict): words libFuzzer splices into inputs. Numbers at the
# edges of u64/i64 and long hex chunk sizes matter most: mutation alone rarely grows a
# timestamp or a chunk size into one that overflows.
def write_dict(target, words):
    folder = os.path.join(HERE, "dict")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, target + ".dict"), "w") as f:
        f.write(f"# libFuzzer dictionary for {target}, written by make_seeds.py\n")
        for w in dict.fromkeys(words):
            if isinstance(w, str):
                w = w.encode()
            text = "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}" for b in w)
            f.write(f'"{text}"\n')


EDGE_NUMBERS = [
    "18446744073709551615", "18446744073709551614", "9223372036854775808", "9223372036854775807",
    "4294967296", "-1", "0", "1e19", "1.5e300", "0.5",
]
write_dict("jwks", [
    "ffffffffffffffff", "fffffffffffffffe", "7fffffffffffffff", "Transfer-Encoding: chunked",
    "chunked", "\r\n", "0\r\n\r\n", ";ext=1", "HTTP/1.1 200 OK\r\n", "Content-Length: ",
    '"keys"', '"kty"', '"RSA"', '"EC"', '"OKP"', '"oct"', '"crv"', '"P-256"', '"P-384"',
    '"P-521"', '"Ed25519"', '"X25519"', '"alg"', '"use"', '"enc"', '"sig"', '"kid"', '"n"', '"e"',
    '"x"', '"y"', '"k"', '"d"', '"key_ops"', '"x5c"', '"x5t"', '"AQAB"', '"RS256"', '"ES256"',
    '"EdDSA"', '"HS256"', '"PS512"',
] + EDGE_NUMBERS)
write_dict("token", [
    '"exp"', '"nbf"', '"iat"', '"iss"', '"aud"', '"sub"', '"jti"', '"scope"', '"role"',
    '"groups"', '"admin"', '"crit"', '"kid"', '"alg"', '"typ"', '"HS256"', '"RS256"', '"PS384"',
    '"ES256"', '"EdDSA"', '"none"', '"rsa"', '"ec"', '"ed"', '"https://idp.example"',
    '"portcullis"', '"chat"', '"chat:read"', '"chat:write"', '"ops"', "null", "true", "false",
    "[]", "{}", "\\u0000", "\\n",
] + EDGE_NUMBERS)
write_dict("http_head", [
    "GET ", " HTTP/1.1\r\n", " HTTP/1.0\r\n", "\r\n", "\r\n\r\n", "Host: ", "Upgrade: websocket",
    "Connection: Upgrade", "Connection: close", "Connection: keep-alive", "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol: ", "bearer.",
    "Authorization: Bearer ", "Cookie: ", "access_token=", "access%5Ftoken=", "?access_token=",
    "&access_token=", "#", "%2E", "+", "Origin: ", "https://chat.example.com", "https://x.example.org",
    "null", "Forwarded: for=", "X-Forwarded-For: ", "127.0.0.1", "[::1]", "Content-Length: ",
    "Transfer-Encoding: chunked", "TE: ", "Keep-Alive: ", "Proxy-Authorization: ", "X-Auth-Subject: ",
])
keys = set()
for path in ["policies/example.toml", "policies/chat.toml", "docs/relay.md"]:
    full = os.path.join(REPO, path)
    if os.path.exists(full):
        for line in open(full, encoding="utf-8"):
            line = line.strip().lstrip("#").strip()
            if "=" in line and line.split("=")[0].strip().replace("_", "").isalnum():
                keys.add(line.split("=")[0].strip() + " = ")
            if line.startswith("[") and line.endswith("]"):
                keys.add(line)
write_dict("config", sorted(keys) + [
    '"1y"', '"0s"', '"500ms"', '"1e3s"', '"nan"', '"inf"', '"31536001"', "31536001",
    '"ws://h/"', '"wss://[::1]:1/"', '"http://[fe80::1%eth0]/"', '"https://*.example.com"',
    '"10.0.0.0/33"', '"::/0"', '"127.0.0.1:0"', '"[::]:65536"', "include = ", '"HS256"',
] + EDGE_NUMBERS)
print("seeds written to", os.path.join(HERE, "corpus"))
