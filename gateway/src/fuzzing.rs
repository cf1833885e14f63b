//! Entry points for the coverage-guided fuzzers in `fuzz/` (feature `fuzzing`, off by default).
//!
//! Each is a `pub fn` that takes the fuzzer's bytes and drives the gateway's own code the way a
//! client, an upstream, an identity provider or a configuration file would, so the internals
//! stay `pub(crate)`. Each panics only on a bug: a panic of the code under test, or a broken
//! invariant asserted here (a token that survives its stripping, a session that never ends).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use base64::Engine;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::admission::keys::VerifyKey;
use crate::admission::keyset::KeySet;
use crate::admission::token::extract::{
    cookie, from_authorization, from_subprotocol, query_param, Found,
};
use crate::admission::token::hs256;
use crate::admission::{client_ip, keys, origin, Admitted};
use crate::config::compression::Compression;
use crate::config::policy::Origin;
use crate::config::{Config, Limits};
use crate::core::cidr::Cidr;
use crate::core::credential::{
    is_token_subprotocol, strip_cookie, strip_query_param, PolicyCredentials,
};
use crate::core::log_format::LogFormat;
use crate::core::reason::Reason;
use crate::net::http1::{self, HeadLimits, RequestHead};
use crate::net::websocket::config::websocket_config;
use crate::net::websocket::deflate::{Agreed, Direction};
use crate::net::websocket::request as upgrade;
use crate::obs::access_log::{rejection_fields, AccessLog, RejectionRecord};
use crate::obs::metrics::Meter;
use crate::relay::forward::Forwarding;
use crate::session::control::Control;
use crate::session::deflate::Translate;
use crate::session::guard::{Expiry, Guard, Rates};
use crate::session::relay::RelayOptions;
use crate::session::stop::StopSignal;
use crate::session::{self, echo, SessionContext};

/// The secret every fuzzed token is signed with.
const SECRET: &[u8] = b"portcullis fuzzing secret, 32+ bytes long";

/// The query parameter and cookie the fuzzed policies read tokens from.
const TOKEN_NAME: &str = "access_token";

/// A single-threaded runtime whose clock is paused: it jumps to the next timer whenever every
/// task waits, so a session's timeouts (close, ping, idle, expiry) pass at once and a fuzzed
/// input costs microseconds, not seconds.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("fuzzing runtime")
}

/// The fuzzer's bytes as a source of small choices, then of the rest.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }

    /// The next `n` bytes (fewer at the end).
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }

    /// A part whose length is given by the next two bytes.
    fn part(&mut self) -> &'a [u8] {
        let n = u16::from_le_bytes([self.byte(), self.byte()]);
        self.take(usize::from(n))
    }

    fn rest(&mut self) -> &'a [u8] {
        self.take(self.0.len())
    }
}

// --- The request head and everything read from it before the 101 ------------------------------

/// Target 1: a client's request head, read as the edge reads it (limits, pipelined bytes kept),
/// then every check and extraction that reads a head: the upgrade check, the `Origin` check, the
/// client address behind trusted proxies, the token's four sources and their stripping, and the
/// upstream handshake request a relay route would send.
pub fn http_head(data: &[u8]) {
    let mut input = Input(data);
    let limits = HeadLimits {
        max_bytes: 1024 + usize::from(input.byte()) * 64,
        max_headers: 8 + usize::from(input.byte() % 64),
    };
    let chunk = 1 + usize::from(input.byte());
    let bytes = input.rest();
    let rt = runtime();
    let head = rt.block_on(async {
        // The head arrives in pieces of `chunk` bytes, as over a slow socket.
        let (mut client, mut server) = tokio::io::duplex(4096);
        let writer = async move {
            for piece in bytes.chunks(chunk) {
                if client.write_all(piece).await.is_err() {
                    return;
                }
            }
        };
        // The reader owns its end: once it is done, the writer's writes fail and it stops.
        let reader = async move {
            let mut buf = BytesMut::new();
            let head = http1::read_head(&mut server, &mut buf, limits, Duration::from_secs(10));
            head.await.map(|head| head.map(|h| (h, buf.len())))
        };
        tokio::join!(reader, writer).0
    });
    let (head, left) = match head {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return,
        Err(e) => {
            let _ = e.answer();
            return;
        }
    };
    assert!(left <= bytes.len(), "more bytes left than were sent");
    head_checks(&head);
}

fn head_checks(head: &RequestHead) {
    let _ = (head.path(), head.has_body(), head.keep_alive());
    let upgrade = upgrade::check(head);
    let policy = Origin {
        allow: vec![
            "https://chat.example.com".into(),
            "https://*.example.org".into(),
        ],
        allow_missing: false,
        allow_null: true,
    };
    let _ = origin::check(head, &policy);
    let trusted = [
        Cidr::parse("127.0.0.0/8").expect("a network"),
        Cidr::parse("::1/128").expect("a network"),
    ];
    let peer: IpAddr = [127, 0, 0, 1].into();
    let client = client_ip::resolve(Some(peer), head, &trusted);

    let token = [
        from_authorization(head),
        from_subprotocol(head),
        query_param(&head.target, TOKEN_NAME),
        cookie(head, TOKEN_NAME),
    ]
    .into_iter()
    .find_map(|found| match found {
        Found::One(t) => Some(t),
        _ => None,
    });
    // What goes upstream and into logs must never carry the token.
    let stripped = strip_query_param(&head.target, TOKEN_NAME);
    assert_eq!(
        query_param(&stripped, TOKEN_NAME),
        Found::None,
        "the token query parameter survived stripping {:?}",
        head.target
    );
    for value in head.headers.get_all("cookie") {
        if let Some(kept) = value
            .to_str()
            .ok()
            .and_then(|v| strip_cookie(v, TOKEN_NAME))
        {
            let _ = kept;
        }
    }

    let Ok(upgrade) = upgrade else { return };
    let admitted = Admitted {
        client_ip: client,
        subject: Some("fuzz".into()),
        token,
        protocols: upgrade
            .offered_protocols
            .iter()
            .filter(|p| !is_token_subprotocol(p))
            .cloned()
            .collect(),
        ..Admitted::default()
    };
    let (route, upstream) = relay_route();
    let credentials = PolicyCredentials {
        query_param: TOKEN_NAME.into(),
        cookie: Some(TOKEN_NAME.into()),
        identity_headers: Vec::new(),
    };
    let forwarding = Forwarding::of(route, credentials).expect("the fuzzing route forwards");
    let Ok(request) = forwarding.request(upstream, head, &admitted, true) else {
        return;
    };
    assert!(
        request.headers().get("authorization").is_none(),
        "the client's Authorization header was forwarded"
    );
    for p in request.headers().get_all("sec-websocket-protocol") {
        let p = p.to_str().unwrap_or_default();
        assert!(
            !p.split(',').any(|p| is_token_subprotocol(p.trim())),
            "a bearer. subprotocol was forwarded: {p:?}"
        );
    }
    assert_eq!(
        query_param(&request.uri().to_string(), TOKEN_NAME),
        Found::None,
        "the token query parameter was forwarded"
    );
}

/// The relay route the head target forwards through (parsed once).
fn relay_route() -> (
    &'static crate::config::Route,
    &'static crate::core::url::Url,
) {
    static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let text = "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\npath = \"/r\"\n\
                    mode = \"relay\"\nupstreams = [\"ws://backend:9001/chat?v=1\"]\n\
                    forward_claims = { sub = \"X-Auth-Subject\", tenant = \"X-Tenant\" }\n";
        Config::parse(text, "fuzz", None).expect("the fuzzing config is valid")
    });
    let route = &config.routes[0];
    let upstream = &route.upstreams.as_ref().expect("a relay route")[0].0;
    (route, upstream)
}

// --- Tokens -------------------------------------------------------------------------------------

/// The policies a fuzzed token is checked against (the first input byte picks one).
const TOKEN_POLICIES: [&str; 4] = [
    "",
    "require_exp = false\nleeway = \"0s\"\non_expiry = \"ignore\"",
    "issuers = [\"https://idp.example\"]\naudiences = [\"portcullis\", \"chat\"]\n\
     required_claims = [\"sub\"]\nclaims = { scope = [\"chat:read\", \"chat:write\"], role = \"admin\", admin = \"true\" }",
    "require_exp = false\nexpiry_grace = \"1h\"\nleeway = 31536000\nclaims = { groups = \"ops\" }",
];

/// Target 2: a token's header and claims as the fuzzer writes them (any bytes), signed with the
/// policy's key so that verification reaches the claims, then carried in one of the four places
/// a client may put it; or (odd second byte) the fuzzer's bytes as the token text itself. The
/// real extraction, verification and authorization run on it.
pub fn token(data: &[u8]) {
    let mut input = Input(data);
    let policy_choice = usize::from(input.byte()) % TOKEN_POLICIES.len();
    let how = input.byte();
    let token = if how & 1 == 1 {
        String::from_utf8_lossy(input.rest()).into_owned()
    } else {
        let header = input.part();
        let claims = input.rest();
        hs256::sign(SECRET, header, claims)
    };
    let policy = token_policy(policy_choice);
    let (target, header) = match (how >> 1) % 4 {
        0 => (
            "/ws".into(),
            Some(("authorization", format!("Bearer {token}"))),
        ),
        1 => (
            "/ws".into(),
            Some(("sec-websocket-protocol", format!("chat.v1, bearer.{token}"))),
        ),
        2 => {
            let encoded: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
            (format!("/ws?{TOKEN_NAME}={encoded}"), None)
        }
        _ => (
            "/ws".into(),
            Some(("cookie", format!("theme=dark; {TOKEN_NAME}={token}"))),
        ),
    };
    // Values a header cannot carry never reach the policy from a real client either.
    let Some(head) = head_of(&target, header.as_ref()) else {
        return;
    };
    let rt = runtime();
    let verified = rt.block_on(policy.check(&head));
    let Ok(v) = verified else { return };
    if how & 1 == 0 {
        assert_eq!(v.token, token, "a different token was verified");
    }
    // The subject is the issuer's text: in the access log it must stay one field of one line.
    let record = RejectionRecord {
        route: "/ws",
        client: None,
        protocol: "h1",
        subject: v.subject.as_deref(),
        reason: Reason::Forbidden,
        status: 403,
        cluster_fallback: false,
    };
    for format in [LogFormat::Text, LogFormat::Json] {
        let line = AccessLog::new(format).format_line("rejected", &rejection_fields(&record));
        assert!(
            !line.contains(['\n', '\r']),
            "a subject broke the line: {line:?}"
        );
        if format == LogFormat::Json {
            let parsed: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
            assert_eq!(parsed["subject"].as_str(), v.subject.as_deref());
        }
    }
}

/// A head with one header that may not be a valid header value; `None` when it is not.
fn head_of(target: &str, header: Option<&(&'static str, String)>) -> Option<RequestHead> {
    let mut map = http::HeaderMap::new();
    if let Some((name, value)) = header {
        map.append(*name, http::HeaderValue::from_str(value).ok()?);
    }
    Some(RequestHead {
        method: "GET".into(),
        target: target.into(),
        minor_version: 1,
        headers: map,
        tls: true,
        version: http1::Version::Http1,
    })
}

fn token_policy(choice: usize) -> &'static crate::admission::token::TokenPolicy {
    use crate::admission::token::TokenPolicy;
    static POLICIES: std::sync::OnceLock<Vec<TokenPolicy>> = std::sync::OnceLock::new();
    &POLICIES.get_or_init(|| {
        TOKEN_POLICIES
            .iter()
            .map(|text| {
                let mut policy = hs256::policy(text, SECRET).expect("a fuzzing policy");
                policy.keys = KeySet::fixed(fuzzing_keys());
                policy
            })
            .collect()
    })[choice]
}

/// The HS256 key the fuzzer signs with, and public keys of the other families (their
/// signatures never verify, but a token naming their algorithm reaches their verifiers).
fn fuzzing_keys() -> Vec<VerifyKey> {
    use jsonwebtoken::{Algorithm::*, DecodingKey};
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    };
    // A 2048-bit modulus (any odd number of that size parses), and the P-256 base point.
    let mut modulus = vec![0xc5u8; 256];
    modulus[255] = 0x01;
    let p256_x = hex("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296");
    let p256_y = hex("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5");
    let key = |kid: &str, algorithms: Vec<jsonwebtoken::Algorithm>, key| VerifyKey {
        kid: Some(kid.into()),
        algorithms,
        key,
    };
    let mut keys = vec![VerifyKey {
        kid: None,
        algorithms: vec![HS256],
        key: DecodingKey::from_secret(SECRET),
    }];
    keys.extend([
        key(
            "rsa",
            vec![RS256, RS384, RS512, PS256, PS384, PS512],
            DecodingKey::from_rsa_components(&b64(&modulus), "AQAB").expect("an RSA key"),
        ),
        key(
            "ec",
            vec![ES256],
            DecodingKey::from_ec_components(&b64(&p256_x), &b64(&p256_y)).expect("an EC key"),
        ),
        key(
            "ed",
            vec![EdDSA],
            DecodingKey::from_ed_components(&b64(&[0x66; 32])).expect("an Ed25519 key"),
        ),
    ]);
    keys
}

/// Target 2b: an identity provider's JWKS document, turned into verification keys. (The HTTP
/// answer around it is read by hyper, in `net::http_client`.)
pub fn jwks(data: &[u8]) {
    use jsonwebtoken::Algorithm::*;
    let allowed = [HS256, RS256, PS256, ES256, ES384, EdDSA];
    let _ = keys::keys_from_jwks(data, &allowed);
}

// --- Configuration ------------------------------------------------------------------------------

/// Target 3: a configuration file: parsed and validated (relative paths resolve against the
/// working folder; nothing is written), then the values read from a valid one.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text, "fuzz.toml", None) else {
        return;
    };
    let _ = config.server.drain_window();
    for route in &config.routes {
        let _ = (route.policy_name(), route.echo_prefix());
        let _ = route.max_message_bytes(&config.limits);
        let _ = config.policy_of(route);
        if route.mode == crate::config::Mode::Relay {
            let _ = route.relay();
            let _ = Forwarding::of(route, PolicyCredentials::default());
        }
    }
}

// --- Sessions -----------------------------------------------------------------------------------

/// The policy of a fuzzed session, from the first input bytes.
struct SessionChoices {
    max_message: usize,
    rates: Rates,
    expiry: Option<Duration>,
    /// When the gateway starts its graceful stop, if it does.
    shutdown_after: Option<Duration>,
    drain_window: Duration,
    /// Structured input: frames the harness builds (masked where a client must mask) rather
    /// than raw bytes.
    frames: bool,
    chunk: usize,
}

impl SessionChoices {
    fn read(input: &mut Input<'_>) -> SessionChoices {
        let flags = input.byte();
        let size = input.byte();
        SessionChoices {
            max_message: 1 << (4 + size % 16),
            rates: Rates {
                messages_per_second: NonZeroU32::new(u32::from(flags & 1) * 5),
                bytes_per_second: NonZeroU32::new(u32::from(flags & 2) * 2048),
            },
            expiry: (flags & 4 == 4).then(|| Duration::from_secs(u64::from(size))),
            shutdown_after: (flags & 8 == 8).then(|| Duration::from_millis(u64::from(size) * 10)),
            drain_window: Duration::from_millis(u64::from(flags >> 6) * 500),
            frames: flags & 16 == 16,
            chunk: 1 + usize::from(input.byte()) * 4,
        }
    }

    fn context(&self, shutdown: pingora::server::ShutdownWatch) -> SessionContext {
        let removed = tokio::sync::watch::channel(false).1;
        SessionContext {
            stop: StopSignal::new(shutdown, removed, self.drain_window),
            close_timeout: Duration::from_secs(5),
            inbound: Guard::new(self.max_message, self.rates),
            expiry: Expiry::at(self.expiry.map(|d| tokio::time::Instant::now() + d)),
            meter: Meter::default(),
            counters: Default::default(),
            control: Control::none(),
        }
    }
}

/// The bytes one peer sends: as given, or frames built from them.
fn wire(bytes: &[u8], frames: bool, mask: bool) -> Vec<u8> {
    if !frames {
        return bytes.to_vec();
    }
    // Each frame: a first byte (FIN, RSV, opcode, as given), a payload length byte, payload.
    let mut out = Vec::new();
    let mut input = Input(bytes);
    while !input.0.is_empty() {
        let first = input.byte();
        let len = usize::from(input.byte());
        let payload = input.take(len);
        out.push(first);
        let mask_bit = if mask { 0x80 } else { 0 };
        if payload.len() < 126 {
            out.push(mask_bit | payload.len() as u8);
        } else {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        let key = [0x37, 0xfa, 0x21, 0x3d];
        if mask {
            out.extend_from_slice(&key);
        }
        out.extend(
            payload
                .iter()
                .enumerate()
                .map(|(i, b)| if mask { b ^ key[i % 4] } else { *b }),
        );
    }
    out
}

/// One peer of a session: sends `bytes` in chunks, then closes its sending side after `linger`
/// (virtual time); reads and drops everything the gateway sends, until the gateway closes.
async fn peer(io: DuplexStream, bytes: Vec<u8>, chunk: usize, linger: Duration) {
    let (mut rx, mut tx) = tokio::io::split(io);
    let send = async move {
        for piece in bytes.chunks(chunk) {
            if tx.write_all(piece).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(linger).await;
        let _ = tx.shutdown().await;
    };
    let drain = async move {
        let mut sink = [0u8; 4096];
        while matches!(rx.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    tokio::join!(send, drain);
}

/// How long (virtual time) a fuzzed session may take: every timer it can set is shorter.
const SESSION_BOUND: Duration = Duration::from_secs(4 * 3600);

/// What a browser and the gateway's defaults agree: 12-bit windows, context takeover.
fn fuzz_agreement() -> Agreed {
    let keep = Direction {
        window_bits: 12,
        no_context_takeover: false,
    };
    Agreed {
        server: keep,
        client: keep,
    }
}

/// Target 4a: the local echo, fed a client's bytes (some of them pipelined behind the head).
pub fn echo_session(data: &[u8]) {
    let mut input = Input(data);
    let choices = SessionChoices::read(&mut input);
    let early = input.part().to_vec();
    let client_bytes = wire(input.rest(), choices.frames, true);
    let rt = runtime();
    rt.block_on(async {
        let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
        let (gateway, client) = tokio::io::duplex(16 * 1024);
        let prefix = "echo: ";
        let limits = Limits::default();
        // permessage-deflate agreed for odd chunk sizes (a choice the input already makes, so
        // the committed seeds keep their meaning): RSV1 frames are then inflated.
        let deflate = (choices.chunk % 2 == 1).then(fuzz_agreement);
        let config = websocket_config(
            &limits,
            choices.max_message,
            choices.max_message + prefix.len(),
        )
        .compressed_messages(deflate.is_some());
        let translate = deflate
            .map(|a| Translate::echo(&a, &Compression::default()))
            .unwrap_or_default();
        let ctx = choices.context(shutdown);
        let session = async {
            let ws =
                WebSocketStream::from_partially_read(gateway, early, Role::Server, Some(config))
                    .await;
            echo::run(ws, prefix, ctx, translate).await
        };
        let linger = Duration::from_secs(60);
        let stop = stop_after(shutdown_tx, choices.shutdown_after);
        let bounded = tokio::time::timeout(SESSION_BOUND, async {
            tokio::join!(
                session,
                peer(client, client_bytes, choices.chunk, linger),
                stop
            )
            .0
        });
        bounded.await.expect("the echo session ended");
    });
}

/// Target 4b: a relay session between a fuzzed client and a fuzzed upstream.
pub fn relay_session(data: &[u8]) {
    let mut input = Input(data);
    let choices = SessionChoices::read(&mut input);
    let timers = input.byte();
    let client_bytes = wire(input.part(), choices.frames, true);
    let upstream_bytes = wire(input.rest(), choices.frames, false);
    let opts = RelayOptions {
        outbound: Guard::new(choices.max_message, Rates::default()),
        ping_interval: (timers & 1 == 1).then(|| Duration::from_secs(30)),
        ping_timeout: Duration::from_secs(15),
        idle_timeout: (timers & 2 == 2).then(|| Duration::from_secs(300)),
        to_upstream: None,
        to_client: None,
    };
    // permessage-deflate with the client, the upstream, both or neither (bits 5 and 6).
    let client_deflate = (timers & 32 == 32).then(fuzz_agreement);
    let upstream_deflate = (timers & 64 == 64).then(fuzz_agreement);
    let (to_upstream, to_client) = Translate::relay(
        client_deflate.as_ref(),
        upstream_deflate.as_ref(),
        &Compression::default(),
    );
    let opts = RelayOptions {
        to_upstream,
        to_client,
        ..opts
    };
    // Which side hangs up first, and how long the other lingers.
    let (client_linger, upstream_linger) = match (timers >> 2) % 3 {
        0 => (Duration::from_secs(1), Duration::from_secs(3600)),
        1 => (Duration::from_secs(3600), Duration::from_secs(1)),
        _ => (Duration::from_secs(100), Duration::from_secs(100)),
    };
    let rt = runtime();
    rt.block_on(async {
        let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
        let (gw_client, client) = tokio::io::duplex(16 * 1024);
        let (gw_upstream, upstream) = tokio::io::duplex(16 * 1024);
        let limits = Limits::default();
        let config = websocket_config(&limits, choices.max_message, choices.max_message);
        let ctx = choices.context(shutdown);
        let session = async {
            let client_config = config.compressed_messages(client_deflate.is_some());
            let client_ws =
                WebSocketStream::from_raw_socket(gw_client, Role::Server, Some(client_config))
                    .await;
            let upstream_config = config.compressed_messages(upstream_deflate.is_some());
            let upstream_ws =
                WebSocketStream::from_raw_socket(gw_upstream, Role::Client, Some(upstream_config))
                    .await;
            session::relay::run(client_ws, upstream_ws, ctx, opts).await
        };
        let stop = stop_after(shutdown_tx, choices.shutdown_after);
        let bounded = tokio::time::timeout(SESSION_BOUND, async {
            tokio::join!(
                session,
                peer(client, client_bytes, choices.chunk, client_linger),
                peer(upstream, upstream_bytes, choices.chunk, upstream_linger),
                stop
            )
            .0
        });
        bounded.await.expect("the relay session ended");
    });
}

/// Start the graceful stop after `after`, if given.
async fn stop_after(tx: tokio::sync::watch::Sender<bool>, after: Option<Duration>) {
    if let Some(after) = after {
        tokio::time::sleep(after).await;
        tx.send_replace(true);
    }
}

/// permessage-deflate from outside: the first line of `data` is a `Sec-WebSocket-Extensions`
/// value, negotiated as a client's offer and checked as an upstream's answer; the rest, split
/// at `0xff`, are compressed messages inflated in order under a 64 KiB limit with context
/// takeover (a peer's stream, garbage included). Invariants: nothing inflates past the limit,
/// nothing panics, and the plain bytes round-trip through the gateway's own deflater and
/// inflater under whatever was agreed.
pub fn deflate(data: &[u8]) {
    use crate::net::websocket::deflate::codec::{Deflater, Inflater};
    use crate::net::websocket::deflate::{accept, Offer};
    use crate::net::websocket::extensions;

    const LIMIT: usize = 64 * 1024;
    let (header, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let settings = Compression::default();
    let offers = extensions::parse([header]).unwrap_or_default();
    let agreed = accept(&offers, &settings).map(|(a, _)| a);
    let offer = Offer::new(&settings, agreed.as_ref());
    let _ = Offer::agreed(offer.as_ref(), &offers);
    let agreed = agreed.unwrap_or_else(fuzz_agreement);
    let mut inflater = Inflater::new(agreed.client);
    for message in rest.split(|&b| b == 0xff) {
        if let Ok(plain) = inflater.inflate(message, LIMIT) {
            assert!(plain.len() <= LIMIT);
        }
    }
    if let Some(mut deflater) = Deflater::new(agreed.server, settings.level, 0) {
        let mut inflater = Inflater::new(agreed.server);
        for plain in rest.chunks(97) {
            let compressed = deflater.deflate(plain).expect("min_bytes 0 compresses");
            assert_eq!(inflater.inflate(&compressed, LIMIT).unwrap(), plain);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry point runs on empty and on small inputs without panicking (the fuzz crate
    /// runs them on far more; this keeps them compiling and sane in `cargo test`).
    #[test]
    fn entry_points_take_any_bytes() {
        let samples: [&[u8]; 4] = [
            b"",
            b"GET /ws HTTP/1.1\r\nHost: h\r\n\r\n",
            b"\x00\x00\x00\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
            &[0xff; 64],
        ];
        for s in samples {
            http_head(s);
            token(s);
            jwks(s);
            config(s);
            echo_session(s);
            relay_session(s);
        }
    }
}
