//! `[[routes]]`: a path, what to do there, and the policy that admits clients; for relay routes
//! also the upstreams and the forwarding rules.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::balance::{Balance, HashKey, UpstreamEntry};
use super::compression::{Compression, CompressionConfig};
use super::defaults;
use crate::core::duration::HumanDuration;

/// What a route does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// A fixed HTTP answer (`status`, `body`); not a WebSocket.
    Static,
    /// A local WebSocket echo served by the gateway itself.
    Echo,
    /// Forward admitted WebSockets, frame by frame, to upstream `ws://`/`wss://` services.
    Relay,
}

/// `[[routes]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    /// Exact path (the query string is not part of the match).
    pub(crate) path: String,
    pub(crate) mode: Mode,
    /// `echo`: text put in front of each echoed text message.
    pub(crate) prefix: Option<String>,
    /// `static`: the answer's status (default 200) and body.
    pub(crate) status: Option<u16>,
    pub(crate) body: Option<String>,
    /// Name of a table under `[policies]`; `"default"` when absent.
    pub(crate) policy: Option<String>,
    /// Overrides `[limits].max_message_bytes` for this route.
    pub(crate) max_message_bytes: Option<usize>,
    /// permessage-deflate with the client (and, on relays, with the upstream).
    pub(crate) compression: Option<CompressionConfig>,
    /// Close sockets with 1001 `session lifetime reached` once they are this old (each at a
    /// random moment in the last tenth), so clients reconnect and authenticate again. Off by
    /// default.
    pub(crate) max_session_duration: Option<HumanDuration>,

    // `relay` routes only (see docs/relay.md). Validated only for mode = "relay"; an error on
    // any other mode.
    /// `ws://` or `wss://` URLs of the upstream service, one or several; each may be a table
    /// with its `weight` and `drain` flag.
    pub(crate) upstreams: Option<Vec<UpstreamEntry>>,
    /// `round_robin` (default), `least_connections` or `hash`.
    pub(crate) balance: Option<Balance>,
    /// `balance = "hash"`: what is hashed (default the verified token's `sub`).
    pub(crate) hash_key: Option<HashKey>,
    /// `balance = "hash"`: no upstream takes more than this × the mean of open sockets per
    /// upstream (bounded loads); `0` turns the bound off.
    pub(crate) hash_balance_factor: Option<f64>,
    /// An upstream that joins (by reload) or comes back after a failure gets its share of new
    /// sockets gradually over this long; absent: at once.
    pub(crate) slow_start: Option<HumanDuration>,
    /// TCP + TLS + WebSocket handshake with the upstream; then `504`.
    pub(crate) connect_timeout: Option<HumanDuration>,
    /// PEM file of CA certificates trusted for `wss://` upstreams, instead of the system roots.
    pub(crate) upstream_ca_file: Option<PathBuf>,
    /// PEM certificate chain and key presented to `wss://` upstreams (mutual TLS).
    pub(crate) upstream_client_cert: Option<PathBuf>,
    pub(crate) upstream_client_key: Option<PathBuf>,
    /// The TLS server name sent to and verified against `wss://` upstreams, instead of the
    /// host of each upstream URL.
    pub(crate) upstream_sni: Option<String>,
    /// Allow-list of subprotocols a client may offer upstream; absent: any.
    pub(crate) subprotocols: Option<Vec<String>>,
    /// Token claims sent upstream as headers: claim name → header name.
    pub(crate) forward_claims: Option<BTreeMap<String, String>>,
    /// Forward the client's token (`Authorization`, `access_token` query) upstream.
    pub(crate) forward_token: Option<bool>,
    /// Ping a client silent this long; `"0s"` turns pings off.
    pub(crate) ping_interval: Option<HumanDuration>,
    /// Drop a pinged client that sends nothing for this long.
    pub(crate) ping_timeout: Option<HumanDuration>,
    /// Close a socket with no data message either way for this long; absent: never.
    pub(crate) idle_timeout: Option<HumanDuration>,
    /// Actively check each upstream (TCP + TLS connect) this often; absent: passive only.
    pub(crate) health_check_interval: Option<HumanDuration>,
    /// How long an upstream that failed is left out of the rotation.
    pub(crate) unhealthy_for: Option<HumanDuration>,
    /// Largest message accepted from the upstream (the route's `max_message_bytes` applies
    /// to the client's messages); default: the same as for the client.
    pub(crate) upstream_max_message_bytes: Option<usize>,
}

impl Route {
    pub(crate) fn policy_name(&self) -> &str {
        self.policy.as_deref().unwrap_or(defaults::POLICY)
    }

    pub(crate) fn echo_prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(defaults::ECHO_PREFIX)
    }

    /// The largest message a client may send on this route.
    pub(crate) fn max_message_bytes(&self, limits: &super::Limits) -> usize {
        self.max_message_bytes.unwrap_or(limits.max_message_bytes)
    }

    /// permessage-deflate settings, defaults applied.
    pub(crate) fn compression(&self) -> Compression {
        self.compression.clone().unwrap_or_default().resolve()
    }

    /// The relay keys this route sets, by name (for "only valid with mode = relay" errors).
    pub(crate) fn relay_keys_set(&self) -> Vec<&'static str> {
        [
            ("upstreams", self.upstreams.is_some()),
            ("balance", self.balance.is_some()),
            ("hash_key", self.hash_key.is_some()),
            ("hash_balance_factor", self.hash_balance_factor.is_some()),
            ("slow_start", self.slow_start.is_some()),
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
    pub(crate) fn relay(&self) -> RelaySettings {
        let d = |v: Option<HumanDuration>, default: Duration| v.map_or(default, |h| h.0);
        RelaySettings {
            connect_timeout: d(self.connect_timeout, defaults::CONNECT_TIMEOUT),
            unhealthy_for: d(self.unhealthy_for, defaults::UNHEALTHY_FOR),
            health_check_interval: self.health_check_interval.map(|h| h.0),
            ping_interval: Some(d(self.ping_interval, defaults::PING_INTERVAL))
                .filter(|i| !i.is_zero()),
            ping_timeout: d(self.ping_timeout, defaults::PING_TIMEOUT),
            idle_timeout: self.idle_timeout.map(|h| h.0),
            forward_token: self.forward_token.unwrap_or(defaults::FORWARD_TOKEN),
        }
    }
}

impl Route {
    /// How a `relay` route spreads sockets over its upstreams, with defaults applied.
    pub(crate) fn balancing(&self) -> Balancing {
        Balancing {
            balance: self.balance.unwrap_or_default(),
            hash_key: self.hash_key.clone().unwrap_or_default(),
            hash_balance_factor: self
                .hash_balance_factor
                .unwrap_or(defaults::HASH_BALANCE_FACTOR),
            slow_start: self.slow_start.map(|h| h.0).filter(|d| !d.is_zero()),
        }
    }
}

/// How a relay route spreads sockets over its upstreams (see [`Route::balancing`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Balancing {
    pub(crate) balance: Balance,
    /// Only read with `balance = "hash"`.
    pub(crate) hash_key: HashKey,
    /// `0.0`: no bound.
    pub(crate) hash_balance_factor: f64,
    pub(crate) slow_start: Option<std::time::Duration>,
}

/// The scalar settings of a relay route, defaults applied (see [`Route::relay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RelaySettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) unhealthy_for: Duration,
    pub(crate) health_check_interval: Option<Duration>,
    /// `None`: no keepalive pings.
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) ping_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) forward_token: bool,
}
