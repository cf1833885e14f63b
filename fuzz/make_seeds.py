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

# --- jwks: a JWKS document (RFC 7517), as keys_from_jwks reads it -------------------------------
# The HTTP answer around it is read by hyper (net/http_client.rs), whose handling of absurd
# chunk sizes is a unit test there; this target gets the document alone.
rsa_n = b64(hashlib.sha512(b"n").digest() * 4)
EC256 = {"x": b64(hashlib.sha256(b"x").digest()), "y": b64(hashlib.sha256(b"y").digest())}
EC384 = {"x": b64(hashlib.sha384(b"x").digest()), "y": b64(hashlib.sha384(b"y").digest())}
every_key = [
    {"kty": "RSA", "kid": "rsa", "use": "sig", "alg": "RS256", "n": rsa_n, "e": "AQAB"},
    {"kty": "RSA", "kid": "rsa-any", "n": rsa_n, "e": "AQAB"},
    {"kty": "RSA", "kid": "rsa-pss", "alg": "PS256", "n": rsa_n, "e": "AQAB", "key_ops": ["verify"]},
    {"kty": "EC", "crv": "P-256", "kid": "ec", "alg": "ES256", **EC256},
    {"kty": "EC", "crv": "P-384", "kid": "ec384", **EC384},
    {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(hashlib.sha256(b"ed").digest())},
    {"kty": "oct", "kid": "hmac", "k": b64(b"k" * 32)},
    {"kty": "RSA", "kid": "enc", "use": "enc", "n": rsa_n, "e": "AQAB"},
    {"kty": "EC", "crv": "secp256k1", "kid": "k1", "x": "AA", "y": "AA"},
]
put("jwks", "document", json.dumps({"keys": every_key}))
put("jwks", "empty", '{"keys":[]}')
for key in every_key:
    put("jwks", "one-" + key["kid"], json.dumps({"keys": [key]}))
odd = {
    # Shapes an identity provider (or something in its place) may answer.
    "x5c-only": {"keys": [{"kty": "RSA", "kid": "c", "x5c": ["MIIBIjAN"], "x5t#S256": "AA"}]},
    "no-kty": {"keys": [{"kid": "none", "n": rsa_n, "e": "AQAB"}]},
    "no-kid": {"keys": [{"kty": "EC", "crv": "P-256", **EC256}, {"kty": "EC", "crv": "P-256", **EC256}]},
    "duplicate-kid": {"keys": [dict(every_key[0]), dict(every_key[3], kid="rsa")]},
    "alg-mismatch": {"keys": [dict(every_key[3], alg="RS256"), dict(every_key[0], alg="none")]},
    "crv-mismatch": {"keys": [dict(every_key[3], crv="P-384"), dict(every_key[5], crv="X25519")]},
    "bad-base64": {"keys": [{"kty": "RSA", "kid": "b", "n": "!!!", "e": "A=Q=B"}]},
    "tiny-rsa": {"keys": [{"kty": "RSA", "kid": "t", "n": "AQ", "e": "AQAB"}]},
    "huge-exponent": {"keys": [{"kty": "RSA", "kid": "h", "n": rsa_n, "e": b64(b"\xff" * 600)}]},
    "numbers-not-strings": {"keys": [{"kty": "EC", "crv": "P-256", "kid": 7, "x": 1, "y": 2e300}]},
    "private-parts": {"keys": [dict(every_key[3], d=b64(b"d" * 32))]},
    "keys-null": {"keys": None},
    "keys-object": {"keys": {"kty": "RSA"}},
    "nested": {"keys": [{"kty": "RSA", "kid": {"a": [1, [2, [3]]]}, "n": [rsa_n], "e": None}]},
    "extra-members": {"keys": [dict(every_key[5], ext=True, crit=["exp"])], "issuer": "https://idp.example"},
}
for name, document in odd.items():
    put("jwks", name, json.dumps(document))
put("jwks", "not-an-object", '[{"keys":[]}]')
put("jwks", "truncated", json.dumps({"keys": every_key})[:200])
put("jwks", "bom-and-whitespace", "\ufeff \n\t" + json.dumps({"keys": every_key[3:4]}) + "\n")

# --- config: the repository's own configuration files ------------------------------------------
for path in [
    "gateway/src/config/default.toml",
    "policies/example.toml",
    "deploy/container/portcullis.toml",
]:
    full = os.path.join(REPO, path)
    if os.path.exists(full):
        with open(full, "rb") as f:
            put("config", path.replace("/", "_"), f.read())


def as_config(fragment, name):
    """A policy file (included as `[policies.NAME]`) inlined into a whole configuration, so
    that the parser reaches its tables instead of stopping at the first unknown top-level key.
    The listener names no file (the fuzz target runs where none exists, and a missing one would
    stop validation before the policies)."""
    lines = []
    for line in fragment.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            line = f"[policies.{name}.{stripped[1:]}"
        lines.append(line)
    return (
        '[[listeners]]\naddress = "127.0.0.1:0"\n\n'
        f'[[routes]]\npath = "/ws/{name}"\nmode = "relay"\npolicy = "{name}"\n'
        'upstreams = ["ws://127.0.0.1:9001/"]\n\n' + "\n".join(lines) + "\n"
    )


# The policy files, each as the policy of a route.
for name in ["chat", "internal", "public-echo", "forward-auth", "opaque-tokens", "services-mtls"]:
    full = os.path.join(REPO, "policies", name + ".toml")
    if os.path.exists(full):
        with open(full, encoding="utf-8") as f:
            put("config", f"policies_{name}.toml", as_config(f.read(), name.replace("-", "_")))
put("config", "cluster", """
[[listeners]]
address = "127.0.0.1:0"
[cluster]
redis_url = "rediss://[::1]:6380/2"
username = "portcullis"
key_prefix = "gw-a:"
timeout = "50ms"
lease_ttl = "15s"
on_error = "open"
[[routes]]
path = "/ws/chat"
mode = "echo"
policy = "chat"
max_session_duration = "8h"
[policies.chat.cluster]
on_error = "closed"
[policies.chat.limits]
handshakes_per_ip = { per_second = 5, burst = 10 }
handshakes_per_subject = { per_second = 1 }
connections_per_ip = 4
connections_per_subject = 2
connections_per_route = 1000
[policies.chat.jwt]
jwks_url = "https://idp.example.com/.well-known/jwks.json"
""")
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
    "{", "}", "[", "]", ":", ",", "null", "true", "false", '""', "\\u0000", "\\ud800",
    '"keys"', '"kty"', '"RSA"', '"EC"', '"OKP"', '"oct"', '"crv"', '"P-256"', '"P-384"',
    '"P-521"', '"secp256k1"', '"Ed25519"', '"Ed448"', '"X25519"', '"alg"', '"use"', '"enc"',
    '"sig"', '"kid"', '"n"', '"e"', '"x"', '"y"', '"k"', '"d"', '"key_ops"', '"verify"', '"x5c"',
    '"x5t"', '"x5t#S256"', '"AQAB"', '"AA"', '"none"', '"RS256"', '"RS384"', '"PS256"',
    '"PS512"', '"ES256"', '"ES384"', '"ES512"', '"EdDSA"', '"HS256"',
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
for path in ["policies/example.toml", "policies/chat.toml", "policies/forward-auth.toml",
             "policies/opaque-tokens.toml", "policies/services-mtls.toml", "docs/relay.md"]:
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
    "[cluster]", "redis_url = ", '"redis://127.0.0.1:6379/0"', '"rediss://[::1]:6380/15"',
    "key_prefix = ", "lease_ttl = ", "password_env = ", "on_error = ", '"open"', '"closed"',
    "[policies.p.cluster]", "max_session_duration = ",
] + EDGE_NUMBERS)
print("seeds written to", os.path.join(HERE, "corpus"))
