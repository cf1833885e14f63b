//! `[server]`, `[admin]` and `[limits]`: process-wide settings.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::defaults;
use super::secret::Secret;
use crate::core::addr::Addr;
use crate::core::cidr::Cidr;
use crate::core::duration::HumanDuration;
use crate::core::log_format::LogFormat;

/// `[server]`: process-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Server {
    /// Worker threads serving the listeners, each with a runtime of its own.
    pub(crate) threads: Threads,
    /// `true`: one runtime whose threads steal each other's tasks (pingora's default);
    /// `false`: a single-threaded runtime and a listening socket (`SO_REUSEPORT`) per thread,
    /// each connection kept on the thread that accepted it.
    pub(crate) work_stealing: bool,
    /// On SIGTERM/SIGINT: how long open sockets get to finish after they were sent close 1001.
    pub(crate) shutdown_grace: HumanDuration,
    /// Networks whose `X-Forwarded-For`/`Forwarded` headers are believed for the client
    /// address. Empty: the socket's peer address is the client.
    pub(crate) trusted_proxies: Vec<Cidr>,
    /// Also reload when files change, checking this often (SIGHUP always reloads).
    pub(crate) watch_interval: Option<HumanDuration>,
    /// On shutdown, open sockets are sent close 1001 at random moments over this window, so
    /// their clients do not all reconnect at once. At most `shutdown_grace`; by default the
    /// smaller of 5 s and half of `shutdown_grace`.
    pub(crate) drain_window: Option<HumanDuration>,
    /// After a reload removed a route, its open sockets get this long before close 1001.
    pub(crate) route_removal_grace: HumanDuration,
    /// Unix socket over which a new process (`portcullis --upgrade`) takes the listening sockets
    /// from this one when it gets SIGQUIT (zero-downtime upgrade).
    pub(crate) upgrade_sock: PathBuf,
    /// `"text"` (default) or `"json"`: the format of every log line, access lines included.
    pub(crate) log_format: LogFormat,
}

/// `[server] threads`: a number, or `"auto"` (the default): one per core the process may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threads {
    Auto,
    Count(usize),
}

impl Threads {
    /// The number of worker threads to run.
    pub(crate) fn resolve(self) -> usize {
        match self {
            Threads::Auto => defaults::threads(),
            Threads::Count(n) => n,
        }
    }
}

impl<'de> Deserialize<'de> for Threads {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Threads;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of threads or \"auto\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Threads, E> {
                usize::try_from(v)
                    .map(Threads::Count)
                    .map_err(|_| E::custom("threads must be between 1 and 1024, or \"auto\""))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Threads, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Threads, E> {
                match v {
                    "auto" => Ok(Threads::Auto),
                    _ => Err(E::custom(format!(
                        "expected a number of threads or \"auto\", found {v:?}"
                    ))),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Server {
    /// The drain window in force (see `drain_window`).
    pub(crate) fn drain_window(&self) -> Duration {
        match self.drain_window {
            Some(d) => d.0,
            None => defaults::DRAIN_WINDOW.min(self.shutdown_grace.0 / 2),
        }
    }
}

impl Default for Server {
    fn default() -> Self {
        Server {
            threads: Threads::Auto,
            work_stealing: defaults::WORK_STEALING,
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
pub(crate) struct Admin {
    /// `false` turns the admin listener off.
    pub(crate) enabled: bool,
    pub(crate) address: Addr,
    /// A file holding the bearer token that `/metrics` and `/readyz` require (relative to the
    /// config file's folder). At most one of `token_file` and `token_env`.
    pub(crate) token_file: Option<PathBuf>,
    /// The name of an environment variable holding that token.
    pub(crate) token_env: Option<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            enabled: true,
            address: Addr::parse(defaults::ADMIN_ADDRESS).expect("the default address parses"),
            token_file: None,
            token_env: None,
        }
    }
}

impl Admin {
    fn secret(&self) -> Secret<'_> {
        Secret {
            file: self.token_file.as_deref(),
            env: self.token_env.as_deref(),
            file_key: "admin.token_file",
            env_key: "admin.token_env",
        }
    }

    /// The admin bearer token, read from `token_file` or `token_env` (surrounding whitespace
    /// removed); `None` when neither is set. An unreadable or empty source is an error naming
    /// its key (never the token).
    pub(crate) fn token(&self) -> Result<Option<String>, String> {
        let Some((key, value)) = self.secret().read()? else {
            return Ok(None);
        };
        let value = String::from_utf8(value)
            .map_err(|_| format!("{key}: the token must be printable ASCII without spaces"))?;
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

    /// The checks of `token_file`/`token_env` that need no file (validation).
    pub(crate) fn validate(&self) -> Result<(), String> {
        self.secret().validate()
    }
}

/// `[limits]`: connection-level protections, for every listener and route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Limits {
    /// From accept to a complete first request head, TLS handshake included.
    pub(crate) head_timeout: HumanDuration,
    pub(crate) max_head_bytes: usize,
    pub(crate) max_headers: usize,
    pub(crate) keepalive_timeout: HumanDuration,
    pub(crate) max_message_bytes: usize,
    pub(crate) read_buffer_bytes: usize,
    pub(crate) max_write_buffer_bytes: usize,
    pub(crate) close_timeout: HumanDuration,
    /// Open WebSockets across the whole gateway; past it new handshakes get 503.
    pub(crate) max_connections: usize,
    /// Connections not yet admitted (in TLS, or before their WebSocket head is complete), in
    /// total and per client address; past either the connection is closed at once.
    pub(crate) max_pending_connections: usize,
    pub(crate) max_pending_per_ip: usize,
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
            max_pending_connections: defaults::MAX_PENDING_CONNECTIONS,
            max_pending_per_ip: defaults::MAX_PENDING_PER_IP,
        }
    }
}
