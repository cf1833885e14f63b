//! The configuration: its TOML schema, the embedded default, and validation.
//!
//! This module is the one place where defaults live (see [`defaults`]). Unknown keys are errors
//! (`deny_unknown_fields` everywhere), and every validation error names the file and the key, so
//! `portcullis --check --config FILE` can tell a user exactly what to fix.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod policy;
pub use crate::access_log::LogFormat;
pub use policy::Policy;

/// The configuration used when `portcullis` starts without `--config`.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// The name the embedded default goes by in logs and errors.
pub const EMBEDDED_NAME: &str = "<embedded default>";

/// Every default value, in one place.
pub mod defaults {
    use std::time::Duration;

    /// How long a client may take to send its whole request head (after TLS).
    pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
    /// Largest request head (request line and headers) accepted; larger gets `431`.
    pub const MAX_HEAD_BYTES: usize = 16 * 1024;
    /// Most headers in one request head; more gets `431`.
    pub const MAX_HEADERS: usize = 64;
    /// Largest WebSocket message (after reassembly of fragments); larger gets close `1009`.
    pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
    /// Initial read buffer per WebSocket. Small on purpose: idle sockets should cost little
    /// (tungstenite's own default is 128 KiB per connection).
    pub const READ_BUFFER_BYTES: usize = 4 * 1024;
    /// Most bytes queued for a slow reader before the session stops and waits (backpressure).
    pub const MAX_WRITE_BUFFER_BYTES: usize = 4 * 1024 * 1024;
    /// How long to wait for the peer's reply to our close frame.
    pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
    /// How long a graceful stop (SIGTERM/SIGINT) waits for open sockets to finish.
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
    /// Where an upgrading process picks up the listening sockets.
    pub const UPGRADE_SOCK: &str = "/tmp/portcullis_upgrade.sock";
    /// Window over which shutdown spreads its 1001 closes.
    pub const DRAIN_WINDOW: Duration = Duration::from_secs(5);
    /// Time a removed route's sockets keep after a reload.
    pub const ROUTE_REMOVAL_GRACE: Duration = Duration::from_secs(30);
    /// Idle time allowed between requests on a kept-alive plain HTTP connection.
    pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
    /// Worker threads for the gateway's listeners.
    pub const THREADS: usize = 2;
    /// The prefix the echo mode puts in front of a text message (the Pedestal guide's example).
    pub const ECHO_PREFIX: &str = "echo: ";
    /// Open WebSockets across the gateway before new handshakes get 503.
    pub const MAX_CONNECTIONS: usize = 100_000;
    /// The policy name a route uses when it names none.
    pub const POLICY: &str = "default";

    // Relay routes (`mode = "relay"`).

    /// How long connecting to an upstream may take: TCP, TLS and the WebSocket handshake.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// How long an upstream that refused or failed a connection is left out of the rotation.
    pub const UNHEALTHY_FOR: Duration = Duration::from_secs(10);
    /// A client silent this long is sent a ping.
    pub const PING_INTERVAL: Duration = Duration::from_secs(30);
    /// How long a pinged client has to send anything (its pong) before it is dropped.
    pub const PING_TIMEOUT: Duration = Duration::from_secs(15);
}

/// A configuration error: which file, and what (with the key) is wrong in it.
#[derive(Debug)]
pub struct ConfigError {
    pub source: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A duration written as `"500ms"`, `"10s"`, `"2m"`, `"1h"`, or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let value: f64 = num.parse().map_err(|_| {
            format!("invalid duration {s:?} (expected e.g. \"500ms\", \"10s\", \"2m\")")
        })?;
        let secs = match unit.trim() {
            "ms" => value / 1000.0,
            "s" | "" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            other => {
                return Err(format!(
                    "unknown duration unit {other:?} in {s:?} (use ms, s, m or h)"
                ))
            }
        };
        if !secs.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&secs) {
            return Err(format!("duration {s:?} is out of range"));
        }
        Ok(Duration::from_secs_f64(secs))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(HumanDuration(Duration::from_secs(s))),
            Raw::Text(t) => HumanDuration::parse(&t)
                .map(HumanDuration)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// `[server]`: process-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Worker threads serving the listeners.
    pub threads: usize,
    /// On SIGTERM/SIGINT: how long open sockets get to finish after they were sent close 1001.
    pub shutdown_grace: HumanDuration,
    /// Networks (CIDR) whose `X-Forwarded-For`/`Forwarded` headers are believed for the client
    /// address. Empty: the socket's peer address is the client.
    pub trusted_proxies: Vec<String>,
    /// Also reload when files change, checking this often (SIGHUP always reloads).
    pub watch_interval: Option<HumanDuration>,
    /// On shutdown, open sockets are sent close 1001 at random moments over this window, so
    /// their clients do not all reconnect at once. At most `shutdown_grace`; by default the
    /// smaller of 5 s and half of `shutdown_grace`.
    pub drain_window: Option<HumanDuration>,
    /// After a reload removed a route, its open sockets get this long before close 1001.
    pub route_removal_grace: HumanDuration,
    /// Unix socket over which a new process (`portcullis --upgrade`) takes the listening sockets
    /// from this one when it gets SIGQUIT (zero-downtime upgrade).
    pub upgrade_sock: PathBuf,
    /// `"text"` (default) or `"json"`: the format of every log line, access lines included.
    pub log_format: LogFormat,
}

impl Server {
    /// The drain window in force (see `drain_window`).
    pub fn drain_window(&self) -> Duration {
        match self.drain_window {
            Some(d) => d.0,
            None => defaults::DRAIN_WINDOW.min(self.shutdown_grace.0 / 2),
        }
    }
}

impl Default for Server {
    fn default() -> Self {
        Server {
            threads: defaults::THREADS,
            shutdown_grace: HumanDuration(defaults::SHUTDOWN_GRACE),
            trusted_proxies: Vec::new(),
            watch_interval: None,
            drain_window: None,
            route_removal_grace: HumanDuration(defaults::ROUTE_REMOVAL_GRACE),
            upgrade_sock: PathBuf::from(defaults::UPGRADE_SOCK),
            log_format: LogFormat::default(),
        }
    }
}

/// `[admin]`: the separate listener for `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// `false` turns the admin listener off.
    pub enabled: bool,
    pub address: String,
    /// A file holding the bearer token that `/metrics` and `/readyz` require (relative to the
    /// config file's folder). At most one of `token_file` and `token_env`.
    pub token_file: Option<PathBuf>,
    /// The name of an environment variable holding that token.
    pub token_env: Option<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            enabled: true,
            address: "127.0.0.1:9090".to_string(),
            token_file: None,
            token_env: None,
        }
    }
}

/// `[limits]`: connection-level protections, for every listener and route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub head_timeout: HumanDuration,
    pub max_head_bytes: usize,
    pub max_headers: usize,
    pub keepalive_timeout: HumanDuration,
    pub max_message_bytes: usize,
    pub read_buffer_bytes: usize,
    pub max_write_buffer_bytes: usize,
    pub close_timeout: HumanDuration,
    /// Open WebSockets across the whole gateway; past it new handshakes get 503.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head_timeout: HumanDuration(defaults::HEAD_TIMEOUT),
            max_head_bytes: defaults::MAX_HEAD_BYTES,
            max_headers: defaults::MAX_HEADERS,
            keepalive_timeout: HumanDuration(defaults::KEEPALIVE_TIMEOUT),
            max_message_bytes: defaults::MAX_MESSAGE_BYTES,
            read_buffer_bytes: defaults::READ_BUFFER_BYTES,
            max_write_buffer_bytes: defaults::MAX_WRITE_BUFFER_BYTES,
            close_timeout: HumanDuration(defaults::CLOSE_TIMEOUT),
            max_connections: defaults::MAX_CONNECTIONS,
        }
    }
}

/// `[[listeners]]`: one address the gateway accepts connections on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub address: String,
    /// Absent: plain `ws://` (local development only).
    pub tls: Option<Tls>,
}

/// `[listeners.tls]`: certificate chain and key, PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// The default certificate chain and key: served when no `sni` entry matches.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Generate a self-signed development pair into `cert`/`key` when they do not exist.
    #[serde(default)]
    pub generate_self_signed: bool,
    /// More certificates on the same listener, chosen by the client's SNI name.
    #[serde(default)]
    pub sni: Vec<SniCert>,
}

/// `[[listeners.tls.sni]]`: a certificate for some server names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCert {
    /// Exact names (`chat.example.com`) or one-level wildcards (`*.example.com`).
    pub names: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a route does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A fixed HTTP answer (`status`, `body`); not a WebSocket.
    Static,
    /// A local WebSocket echo served by the gateway itself.
    Echo,
    /// Forward admitted WebSockets, frame by frame, to upstream `ws://`/`wss://` services.
    Relay,
}

/// How a relay route spreads new sockets over its upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each new socket goes to the next healthy upstream in turn.
    #[default]
    RoundRobin,
    /// Each new socket goes to the healthy upstream with the fewest open sockets.
    LeastConnections,
}

/// `[[routes]]`: a path, what to do there, and the policy that admits clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Exact path (the query string is not part of the match).
    pub path: String,
    pub mode: Mode,
    /// `echo`: text put in front of each echoed text message.
    pub prefix: Option<String>,
    /// `static`: the answer's status (default 200) and body.
    pub status: Option<u16>,
    pub body: Option<String>,
    /// Name of a table under `[policies]`; `"default"` when absent.
    pub policy: Option<String>,
    /// Overrides `[limits].max_message_bytes` for this route.
    pub max_message_bytes: Option<usize>,

    // `relay` routes only (see docs/relay.md). Validated only for mode = "relay"; an error on
    // any other mode.
    /// `ws://` or `wss://` URLs of the upstream service; one or several.
    pub upstreams: Option<Vec<String>>,
    /// `round_robin` (default) or `least_connections`.
    pub balance: Option<Balance>,
    /// TCP + TLS + WebSocket handshake with the upstream; then `504`.
    pub connect_timeout: Option<HumanDuration>,
    /// PEM file of CA certificates trusted for `wss://` upstreams, instead of the system roots.
    pub upstream_ca_file: Option<PathBuf>,
    /// PEM certificate chain and key presented to `wss://` upstreams (mutual TLS).
    pub upstream_client_cert: Option<PathBuf>,
    pub upstream_client_key: Option<PathBuf>,
    /// The TLS server name sent to and verified against `wss://` upstreams, instead of the
    /// host of each upstream URL.
    pub upstream_sni: Option<String>,
    /// Allow-list of subprotocols a client may offer upstream; absent: any.
    pub subprotocols: Option<Vec<String>>,
    /// Token claims sent upstream as headers: claim name → header name.
    pub forward_claims: Option<BTreeMap<String, String>>,
    /// Forward the client's token (`Authorization`, `access_token` query) upstream.
    pub forward_token: Option<bool>,
    /// Ping a client silent this long; `"0s"` turns pings off.
    pub ping_interval: Option<HumanDuration>,
    /// Drop a pinged client that sends nothing for this long.
    pub ping_timeout: Option<HumanDuration>,
    /// Close a socket with no data message either way for this long; absent: never.
    pub idle_timeout: Option<HumanDuration>,
    /// Actively check each upstream (TCP + TLS connect) this often; absent: passive only.
    pub health_check_interval: Option<HumanDuration>,
    /// How long an upstream that failed is left out of the rotation.
    pub unhealthy_for: Option<HumanDuration>,
    /// Largest message accepted from the upstream (the route's `max_message_bytes` applies
    /// to the client's messages); default: the same as for the client.
    pub upstream_max_message_bytes: Option<usize>,
}

impl Route {
    pub fn policy_name(&self) -> &str {
        self.policy.as_deref().unwrap_or(defaults::POLICY)
    }

    pub fn echo_prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(defaults::ECHO_PREFIX)
    }

    /// The relay keys this route sets, by name (for "only valid with mode = relay" errors).
    fn relay_keys_set(&self) -> Vec<&'static str> {
        [
            ("upstreams", self.upstreams.is_some()),
            ("balance", self.balance.is_some()),
            ("connect_timeout", self.connect_timeout.is_some()),
            ("upstream_ca_file", self.upstream_ca_file.is_some()),
            ("upstream_client_cert", self.upstream_client_cert.is_some()),
            ("upstream_client_key", self.upstream_client_key.is_some()),
            ("upstream_sni", self.upstream_sni.is_some()),
            ("subprotocols", self.subprotocols.is_some()),
            ("forward_claims", self.forward_claims.is_some()),
            ("forward_token", self.forward_token.is_some()),
            ("ping_interval", self.ping_interval.is_some()),
            ("ping_timeout", self.ping_timeout.is_some()),
            ("idle_timeout", self.idle_timeout.is_some()),
            (
                "health_check_interval",
                self.health_check_interval.is_some(),
            ),
            ("unhealthy_for", self.unhealthy_for.is_some()),
            (
                "upstream_max_message_bytes",
                self.upstream_max_message_bytes.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }

    /// The relay settings of a `relay` route, with defaults applied.
    pub fn relay(&self) -> RelaySettings {
        let d = |v: Option<HumanDuration>, default: Duration| v.map_or(default, |h| h.0);
        RelaySettings {
            balance: self.balance.unwrap_or_default(),
            connect_timeout: d(self.connect_timeout, defaults::CONNECT_TIMEOUT),
            unhealthy_for: d(self.unhealthy_for, defaults::UNHEALTHY_FOR),
            health_check_interval: self.health_check_interval.map(|h| h.0),
            ping_interval: Some(d(self.ping_interval, defaults::PING_INTERVAL))
                .filter(|i| !i.is_zero()),
            ping_timeout: d(self.ping_timeout, defaults::PING_TIMEOUT),
            idle_timeout: self.idle_timeout.map(|h| h.0),
            forward_token: self.forward_token.unwrap_or(false),
        }
    }
}

/// The scalar settings of a relay route, defaults applied (see [`Route::relay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySettings {
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub unhealthy_for: Duration,
    pub health_check_interval: Option<Duration>,
    /// `None`: no keepalive pings.
    pub ping_interval: Option<Duration>,
    pub ping_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub forward_token: bool,
}

/// A parsed upstream URL of a relay route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// The URL as configured (for logs).
    pub url: String,
    pub tls: bool,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path and query sent in the upstream request line.
    pub path_and_query: String,
}

impl UpstreamUrl {
    /// Parse `ws://host[:port]/path[?query]` or `wss://...`.
    pub fn parse(url: &str) -> Result<UpstreamUrl, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| format!("{url:?} is not a URL (e.g. \"ws://127.0.0.1:9001/chat\")"))?;
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(format!("{url:?} must start with ws:// or wss://")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{url:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("{url:?}: credentials in the URL are not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if port == 0 {
            return Err(format!("{url:?}: port 0 is not a port"));
        }
        let path_and_query = uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        let path_and_query = if path_and_query.starts_with('/') {
            path_and_query
        } else {
            format!("/{path_and_query}")
        };
        Ok(UpstreamUrl {
            url: url.to_string(),
            tls,
            host: host.to_string(),
            port,
            path_and_query,
        })
    }

    /// The `Host` header value for this upstream.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default_port = if self.tls { 443 } else { 80 };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Request headers the relay sets itself; a route cannot name them in `forward_claims`.
pub const RELAY_RESERVED_HEADERS: [&str; 16] = [
    "host",
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "content-length",
    "transfer-encoding",
    "te",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "authorization",
];

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub limits: Limits,
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub policies: BTreeMap<String, Policy>,
    /// Where this configuration came from (a path or [`EMBEDDED_NAME`]); not a TOML key.
    #[serde(skip)]
    pub source: String,
    /// Every file this configuration was read from (the file and its included policies), for
    /// reloading when they change.
    #[serde(skip)]
    pub files: Vec<PathBuf>,
}

impl Config {
    /// The embedded default configuration.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::parse(EMBEDDED_DEFAULT, EMBEDDED_NAME, None)
    }

    /// Read and validate a configuration file. Relative paths inside it (certificates) are taken
    /// relative to the file's own folder, so a config works wherever it is started from.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source: source.clone(),
            message: format!("cannot read the file: {e}"),
        })?;
        let mut config = Config::parse(&text, &source, path.parent())?;
        config.files.insert(0, path.to_path_buf());
        Ok(config)
    }

    /// Parse and validate TOML text; `base` resolves relative paths.
    pub fn parse(text: &str, source: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            source: source.to_string(),
            message,
        };
        let mut config: Config = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        config.source = source.to_string();
        let base = base.filter(|b| !b.as_os_str().is_empty());
        if let Some(base) = base {
            if let Some(file) = &mut config.admin.token_file {
                *file = base.join(&*file);
            }
            for l in &mut config.listeners {
                if let Some(tls) = &mut l.tls {
                    tls.cert = base.join(&tls.cert);
                    tls.key = base.join(&tls.key);
                    for sni in &mut tls.sni {
                        sni.cert = base.join(&sni.cert);
                        sni.key = base.join(&sni.key);
                    }
                }
            }
            for r in &mut config.routes {
                for path in [
                    &mut r.upstream_ca_file,
                    &mut r.upstream_client_cert,
                    &mut r.upstream_client_key,
                ]
                .into_iter()
                .flatten()
                {
                    *path = base.join(&*path);
                }
            }
        }
        let base = base.unwrap_or(Path::new(""));
        for (name, policy) in config.policies.iter_mut() {
            match policy.include.take() {
                Some(_) if !policy.is_empty() => {
                    return Err(err(format!(
                        "policies.{name}.include cannot be combined with other keys of the policy"
                    )))
                }
                Some(file) => {
                    let file = base.join(file);
                    *policy = load_policy_file(&file, name)?;
                    config.files.push(file);
                }
                None => policy.resolve_paths(base),
            }
        }
        config.validate().map_err(err)?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let s = &self.server;
        if s.threads == 0 || s.threads > 1024 {
            return Err("server.threads must be between 1 and 1024".into());
        }
        if s.drain_window.is_some_and(|d| d.0 > s.shutdown_grace.0) {
            return Err("server.drain_window must not be longer than server.shutdown_grace".into());
        }
        if self.admin.enabled {
            self.admin
                .socket_addr()
                .map_err(|e| format!("admin.address: {e}"))?;
        }
        match (&self.admin.token_file, &self.admin.token_env) {
            (Some(_), Some(_)) => {
                return Err("admin.token_file and admin.token_env: set at most one".into())
            }
            (Some(file), None) if file.as_os_str().is_empty() => {
                return Err("admin.token_file must not be empty".into())
            }
            (None, Some(var)) if var.is_empty() || var.contains(['=', '\0']) => {
                return Err(format!(
                    "admin.token_env: {var:?} is not an environment variable name"
                ))
            }
            _ => {}
        }
        let l = &self.limits;
        check_range("limits.max_head_bytes", l.max_head_bytes, 1024, 1 << 20)?;
        check_range("limits.max_headers", l.max_headers, 8, 1024)?;
        check_range("limits.max_message_bytes", l.max_message_bytes, 1, 1 << 30)?;
        check_range(
            "limits.read_buffer_bytes",
            l.read_buffer_bytes,
            512,
            1 << 20,
        )?;
        check_range(
            "limits.max_write_buffer_bytes",
            l.max_write_buffer_bytes,
            4096,
            1 << 30,
        )?;
        for (key, d) in [
            ("limits.head_timeout", l.head_timeout),
            ("limits.keepalive_timeout", l.keepalive_timeout),
            ("limits.close_timeout", l.close_timeout),
        ] {
            if d.0.is_zero() {
                return Err(format!("{key} must be greater than zero"));
            }
        }

        if self.listeners.is_empty() {
            return Err("listeners: at least one [[listeners]] table is required".into());
        }
        let mut seen = Vec::new();
        for (i, listener) in self.listeners.iter().enumerate() {
            let addr = listener
                .socket_addr()
                .map_err(|e| format!("listeners[{i}].address: {e}"))?;
            // Port 0: a free port chosen at start, never the same twice.
            let fixed = addr.port() != 0;
            if fixed && seen.contains(&addr) {
                return Err(format!("listeners[{i}].address: {addr} is used twice"));
            }
            if fixed && self.admin.enabled && self.admin.socket_addr().ok() == Some(addr) {
                return Err(format!(
                    "listeners[{i}].address: {addr} is also admin.address; the admin listener \
                     must be separate"
                ));
            }
            seen.push(addr);
            if let Some(tls) = &listener.tls {
                for (j, sni) in tls.sni.iter().enumerate() {
                    let key = format!("listeners[{i}].tls.sni[{j}]");
                    if sni.names.is_empty() {
                        return Err(format!("{key}.names must name at least one server name"));
                    }
                    for name in &sni.names {
                        crate::tls::NamePattern::parse(name)
                            .map_err(|e| format!("{key}.names: {e}"))?;
                    }
                    for (k, path) in [("cert", &sni.cert), ("key", &sni.key)] {
                        if !path.exists() {
                            return Err(format!("{key}.{k}: {} does not exist", path.display()));
                        }
                    }
                }
                for (key, path) in [("cert", &tls.cert), ("key", &tls.key)] {
                    if path.as_os_str().is_empty() {
                        return Err(format!("listeners[{i}].tls.{key} must not be empty"));
                    }
                    if !tls.generate_self_signed && !path.exists() {
                        return Err(format!(
                            "listeners[{i}].tls.{key}: {} does not exist (set \
                             generate_self_signed = true for a development certificate)",
                            path.display()
                        ));
                    }
                }
            }
        }

        for (i, net) in s.trusted_proxies.iter().enumerate() {
            crate::admission::client_ip::Cidr::parse(net)
                .map_err(|e| format!("server.trusted_proxies[{i}]: {e}"))?;
        }
        if l.max_connections == 0 {
            return Err("limits.max_connections must be at least 1".into());
        }
        for (name, policy) in &self.policies {
            policy.validate(&format!("policies.{name}"))?;
        }

        let mut paths = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            let key = |k: &str| format!("routes[{i}].{k}");
            if !route.path.starts_with('/') || route.path.contains(['?', '#', ' ']) {
                return Err(format!(
                    "{}: {:?} must start with '/' and hold no query",
                    key("path"),
                    route.path
                ));
            }
            if paths.contains(&route.path.as_str()) {
                return Err(format!("{}: {:?} is routed twice", key("path"), route.path));
            }
            paths.push(&route.path);
            match route.mode {
                Mode::Static => {
                    if route.prefix.is_some() {
                        return Err(format!(
                            "{} is only valid with mode = \"echo\"",
                            key("prefix")
                        ));
                    }
                    if let Some(status) = route.status {
                        if !(200..=599).contains(&status) {
                            return Err(format!(
                                "{}: {status} is not a final HTTP status",
                                key("status")
                            ));
                        }
                    }
                }
                Mode::Echo => {
                    for (k, set) in [
                        ("status", route.status.is_some()),
                        ("body", route.body.is_some()),
                    ] {
                        if set {
                            return Err(format!("{} is only valid with mode = \"static\"", key(k)));
                        }
                    }
                }
                Mode::Relay => validate_relay(route, &key)?,
            }
            if route.mode != Mode::Relay {
                if let Some(k) = route.relay_keys_set().first() {
                    return Err(format!("{} is only valid with mode = \"relay\"", key(k)));
                }
            }
            if let Some(max) = route.max_message_bytes {
                check_range(&key("max_message_bytes"), max, 1, 1 << 30)?;
            }
            let policy = route.policy_name();
            if policy != defaults::POLICY && !self.policies.contains_key(policy) {
                return Err(format!(
                    "{}: no policy named {policy:?} (define [policies.{policy}])",
                    key("policy")
                ));
            }
        }
        Ok(())
    }
}

/// Read a policy from its own file (`include = "..."`); its relative paths follow that file.
fn load_policy_file(path: &Path, name: &str) -> Result<Policy, ConfigError> {
    let source = path.display().to_string();
    let err = |message: String| ConfigError {
        source: source.clone(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        err(format!(
            "cannot read policy {name:?} (policies.{name}.include): {e}"
        ))
    })?;
    let mut policy: Policy = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
    if policy.include.is_some() {
        return Err(err(
            "include: an included policy cannot include another".into()
        ));
    }
    policy.resolve_paths(path.parent().unwrap_or(Path::new("")));
    policy.validate(&format!("policies.{name}")).map_err(err)?;
    Ok(policy)
}

impl Listener {
    pub fn socket_addr(&self) -> Result<SocketAddr, String> {
        parse_addr(&self.address)
    }
}

impl Admin {
    pub fn socket_addr(&self) -> Result<SocketAddr, String> {
        parse_addr(&self.address)
    }

    /// The admin bearer token, read from `token_file` or `token_env` (surrounding whitespace
    /// removed); `None` when neither is set. An unreadable or empty source is an error naming
    /// its key (never the token).
    pub fn token(&self) -> Result<Option<String>, String> {
        let (key, value) = match (&self.token_file, &self.token_env) {
            (Some(file), _) => (
                "admin.token_file",
                std::fs::read_to_string(file).map_err(|e| {
                    format!("admin.token_file: cannot read {}: {e}", file.display())
                })?,
            ),
            (None, Some(var)) => (
                "admin.token_env",
                std::env::var(var).map_err(|_| {
                    format!("admin.token_env: the environment variable {var} is not set")
                })?,
            ),
            (None, None) => return Ok(None),
        };
        let token = value.trim();
        if token.is_empty() {
            return Err(format!("{key}: the token is empty"));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{key}: the token must be printable ASCII without spaces"
            ));
        }
        Ok(Some(token.to_string()))
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an IP address with a port (e.g. \"127.0.0.1:8443\")"))
}

/// The checks of a `relay` route's keys. `key` names a key of this route.
fn validate_relay(route: &Route, key: &dyn Fn(&str) -> String) -> Result<(), String> {
    for (k, set) in [
        ("prefix", route.prefix.is_some()),
        ("status", route.status.is_some()),
        ("body", route.body.is_some()),
    ] {
        if set {
            return Err(format!("{} is not valid with mode = \"relay\"", key(k)));
        }
    }
    let upstreams = match &route.upstreams {
        Some(u) if !u.is_empty() => u,
        _ => {
            return Err(format!(
                "{}: a relay route needs at least one upstream (e.g. upstreams = \
                 [\"ws://127.0.0.1:9001/chat\"])",
                key("upstreams")
            ))
        }
    };
    if upstreams.len() > 256 {
        return Err(format!("{}: at most 256 upstreams", key("upstreams")));
    }
    let mut any_tls = false;
    for (j, url) in upstreams.iter().enumerate() {
        let parsed =
            UpstreamUrl::parse(url).map_err(|e| format!("{}[{j}]: {e}", key("upstreams")))?;
        any_tls |= parsed.tls;
    }
    for (k, d) in [
        ("connect_timeout", route.connect_timeout),
        ("ping_timeout", route.ping_timeout),
        ("idle_timeout", route.idle_timeout),
        ("health_check_interval", route.health_check_interval),
        ("unhealthy_for", route.unhealthy_for),
    ] {
        if d.is_some_and(|d| d.0.is_zero()) {
            return Err(format!("{} must be greater than zero", key(k)));
        }
    }
    let tls_keys = [
        ("upstream_ca_file", route.upstream_ca_file.as_ref()),
        ("upstream_client_cert", route.upstream_client_cert.as_ref()),
        ("upstream_client_key", route.upstream_client_key.as_ref()),
    ];
    for (k, path) in tls_keys {
        let Some(path) = path else { continue };
        if !any_tls {
            return Err(format!("{} is set but no upstream uses wss://", key(k)));
        }
        if !path.is_file() {
            return Err(format!("{}: {} does not exist", key(k), path.display()));
        }
    }
    if route.upstream_client_cert.is_some() != route.upstream_client_key.is_some() {
        return Err(format!(
            "{} and {} go together: set both or neither",
            key("upstream_client_cert"),
            key("upstream_client_key")
        ));
    }
    if let Some(sni) = &route.upstream_sni {
        if !any_tls {
            return Err(format!(
                "{} is set but no upstream uses wss://",
                key("upstream_sni")
            ));
        }
        if rustls::pki_types::ServerName::try_from(sni.as_str()).is_err() {
            return Err(format!(
                "{}: {sni:?} is not a DNS name or IP address",
                key("upstream_sni")
            ));
        }
    }
    if let Some(protocols) = &route.subprotocols {
        for (j, p) in protocols.iter().enumerate() {
            let token = !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
            if !token {
                return Err(format!(
                    "{}[{j}]: {p:?} is not a valid subprotocol name",
                    key("subprotocols")
                ));
            }
            if p.starts_with("bearer.") {
                return Err(format!(
                    "{}[{j}]: \"bearer.\" entries carry tokens and are never forwarded",
                    key("subprotocols")
                ));
            }
        }
    }
    if let Some(claims) = &route.forward_claims {
        let mut headers = Vec::new();
        for (claim, header) in claims {
            let k = key(&format!("forward_claims.{claim}"));
            let name = http::HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| format!("{k}: {header:?} is not a valid header name"))?;
            if RELAY_RESERVED_HEADERS.contains(&name.as_str())
                || name.as_str().starts_with("sec-websocket-")
            {
                return Err(format!(
                    "{k}: the header {header:?} is set by the gateway and cannot carry a claim"
                ));
            }
            if headers.contains(&name) {
                return Err(format!("{k}: the header {header:?} carries two claims"));
            }
            headers.push(name);
        }
    }
    if let Some(max) = route.upstream_max_message_bytes {
        check_range(&key("upstream_max_message_bytes"), max, 1, 1 << 30)?;
    }
    Ok(())
}

fn check_range(key: &str, v: usize, min: usize, max: usize) -> Result<(), String> {
    if v < min || v > max {
        return Err(format!("{key} = {v} is out of range ({min}..={max})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[listeners]]
        address = "127.0.0.1:0"
    "#;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded().unwrap();
        assert_eq!(c.listeners[0].address, "127.0.0.1:8443");
        assert!(c.listeners[0].tls.as_ref().unwrap().generate_self_signed);
        assert!(c
            .routes
            .iter()
            .any(|r| r.path == "/ws/echo" && r.mode == Mode::Echo));
        assert_eq!(c.admin.address, "127.0.0.1:9090");
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let text = format!("{MINIMAL}\n[limits]\nmax_mesage_bytes = 10\n");
        let e = Config::parse(&text, "x.toml", None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.toml: "), "{e}");
        assert!(e.contains("max_mesage_bytes"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[[listeners]]\naddress = \"nope\"", "listeners[0].address"),
            (
                "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[routes]]\npath = \"/a\"\nmode = \"echo\"\npolicy = \"missing\"",
                "routes[0].policy",
            ),
            (
                "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[routes]]\npath = \"/a\"\nmode = \"echo\"\nbody = \"x\"",
                "routes[0].body",
            ),
            (
                "[[listeners]]\naddress = \"127.0.0.1:1\"\n[limits]\nhead_timeout = \"3 fortnights\"",
                "head_timeout",
            ),
            (
                "[[listeners]]\naddress = \"127.0.0.1:1\"\n[listeners.tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"",
                "listeners[0].tls.cert",
            ),
            ("listeners = []", "listeners"),
        ];
        for (text, key) in cases {
            let e = Config::parse(text, "f.toml", None).unwrap_err().to_string();
            assert!(e.contains(key), "error {e:?} should name {key}");
        }
    }

    #[test]
    fn relay_routes_validate_their_keys() {
        let base = "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[routes]]\npath = \"/r\"\n";
        let good = format!(
            "{base}mode = \"relay\"\nupstreams = [\"ws://127.0.0.1:9001/chat\", \"wss://backend.internal/chat\"]\n\
             balance = \"least_connections\"\nconnect_timeout = \"2s\"\nsubprotocols = [\"chat.v1\"]\n\
             forward_claims = {{ sub = \"X-Auth-Subject\" }}\nping_interval = \"0s\"\nidle_timeout = \"5m\"\n\
             upstream_sni = \"backend.internal\"\nupstream_max_message_bytes = 100\n"
        );
        let c = Config::parse(&good, "f", None).unwrap();
        let relay = c.routes[0].relay();
        assert_eq!(relay.balance, Balance::LeastConnections);
        assert_eq!(relay.connect_timeout, Duration::from_secs(2));
        assert_eq!(relay.ping_interval, None);
        assert_eq!(relay.unhealthy_for, defaults::UNHEALTHY_FOR);
        assert!(!relay.forward_token);

        let cases = [
            ("mode = \"relay\"", "routes[0].upstreams"),
            ("mode = \"relay\"\nupstreams = []", "routes[0].upstreams"),
            ("mode = \"relay\"\nupstreams = [\"http://x/\"]", "routes[0].upstreams[0]"),
            ("mode = \"relay\"\nupstreams = [\"ws://a@x/\"]", "routes[0].upstreams[0]"),
            (
                "mode = \"relay\"\nupstreams = [\"ws://x/\"]\nbalance = \"random\"",
                "balance",
            ),
            (
                "mode = \"relay\"\nupstreams = [\"ws://x/\"]\nconnect_timeout = \"0s\"",
                "routes[0].connect_timeout",
            ),
            (
                "mode = \"relay\"\nupstreams = [\"ws://x/\"]\nupstream_sni = \"x\"",
                "routes[0].upstream_sni",
            ),
            (
                "mode = \"relay\"\nupstreams = [\"wss://x/\"]\nupstream_ca_file = \"/nonexistent.pem\"",
                "routes[0].upstream_ca_file",
            ),
            (
                "mode = \"relay\"\nupstreams = [\"wss://x/\"]\nupstream_client_key = \"/etc/hostname\"",
                "routes[0].upstream_client_cert",
            ),
            (
                "mode = \"relay\"\nupstreams = [\"ws://x/\"]\nsubprotocols = [\"bearer.x\"]",
                "routes[0].subprotocols[0]",
            ),
            (
                "mode = \"relay\"\nupstreams = [\"ws://x/\"]\nforward_claims = { sub = \"X-Forwarded-For\" }",
                "routes[0].forward_claims.sub",
            ),
            (
                "mode = \"relay\"\nupstreams = [\"ws://x/\"]\nprefix = \"x\"",
                "routes[0].prefix",
            ),
            ("mode = \"echo\"\nupstreams = [\"ws://x/\"]", "routes[0].upstreams"),
            ("mode = \"static\"\nidle_timeout = \"1s\"", "routes[0].idle_timeout"),
        ];
        for (route, key) in cases {
            let e = Config::parse(&format!("{base}{route}\n"), "f", None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "error {e:?} should name {key}");
        }
    }

    #[test]
    fn upstream_urls() {
        let u = UpstreamUrl::parse("wss://[::1]/a?b=1").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "::1", 443));
        assert_eq!(u.path_and_query, "/a?b=1");
        assert_eq!(u.host_header(), "[::1]");
        let u = UpstreamUrl::parse("ws://backend:9001").unwrap();
        assert_eq!(u.path_and_query, "/");
        assert_eq!(u.host_header(), "backend:9001");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            HumanDuration::parse("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            HumanDuration::parse("2m").unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(HumanDuration::parse("7").unwrap(), Duration::from_secs(7));
        assert!(HumanDuration::parse("-1s").is_err());
        assert!(HumanDuration::parse("1y").is_err());
    }

    #[test]
    fn admin_token_sources() {
        let both = format!("{MINIMAL}\n[admin]\ntoken_file = \"t\"\ntoken_env = \"T\"\n");
        let e = Config::parse(&both, "f", None).unwrap_err().to_string();
        assert!(e.contains("admin.token_file and admin.token_env"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin.token"), "s3cret-token\n").unwrap();
        let text = format!("{MINIMAL}\n[admin]\ntoken_file = \"admin.token\"\n");
        let c = Config::parse(&text, "f", Some(dir.path())).unwrap();
        assert_eq!(c.admin.token().unwrap().as_deref(), Some("s3cret-token"));

        std::fs::write(dir.path().join("admin.token"), "  \n").unwrap();
        let e = c.admin.token().unwrap_err();
        assert!(e.contains("admin.token_file") && e.contains("empty"), "{e}");

        let text = format!("{MINIMAL}\n[admin]\ntoken_env = \"PORTCULLIS_TEST_UNSET_TOKEN\"\n");
        let c = Config::parse(&text, "f", None).unwrap();
        let e = c.admin.token().unwrap_err();
        assert!(e.contains("PORTCULLIS_TEST_UNSET_TOKEN"), "{e}");
        assert!(Config::embedded().unwrap().admin.token().unwrap().is_none());
    }

    #[test]
    fn log_format_is_text_or_json() {
        let c = Config::parse(
            &format!("{MINIMAL}\n[server]\nlog_format = \"json\"\n"),
            "f",
            None,
        )
        .unwrap();
        assert_eq!(c.server.log_format, LogFormat::Json);
        assert_eq!(
            Config::embedded().unwrap().server.log_format,
            LogFormat::Text
        );
        let e = Config::parse(
            &format!("{MINIMAL}\n[server]\nlog_format = \"xml\"\n"),
            "f",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("log_format") || e.contains("xml"), "{e}");
    }

    #[test]
    fn relative_cert_paths_follow_the_file() {
        let text = "[[listeners]]\naddress = \"127.0.0.1:1\"\n[listeners.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\ngenerate_self_signed = true";
        let c = Config::parse(text, "f", Some(Path::new("/etc/portcullis"))).unwrap();
        let tls = c.listeners[0].tls.as_ref().unwrap();
        assert_eq!(tls.cert, Path::new("/etc/portcullis/c.pem"));
    }
}
