//! What every session of a route needs from the configuration, resolved once per configuration
//! generation (not on every handshake): message limits each way, tungstenite's settings for each
//! socket, the policy's per-connection rates, the relay's pings and idleness, compression, and
//! the close and drain timings.

use std::time::Duration;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::guard::Rates;
use crate::config::compression::Compression;
use crate::config::{Config, Mode, Route};
use crate::net::websocket::config::websocket_config;

/// A relay route's clocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RelayTimers {
    /// Ping a client silent this long; `None`: no pings.
    pub(crate) ping_interval: Option<Duration>,
    /// After a ping, how long the client has to send anything.
    pub(crate) ping_timeout: Duration,
    /// Close when no data message went either way for this long.
    pub(crate) idle_timeout: Option<Duration>,
}

/// One route's session settings (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct SessionSettings {
    /// The largest message a client may send.
    pub(crate) client_max: usize,
    /// Relay routes: the largest message the upstream may send.
    pub(crate) upstream_max: usize,
    /// The client's socket: reads `client_max`, writes what the route answers (the echo's
    /// prefixed text, the upstream's messages). Compression is switched on per socket.
    pub(crate) client_ws: WebSocketConfig,
    /// Relay routes: the upstream's socket.
    pub(crate) upstream_ws: WebSocketConfig,
    /// The per-connection rates of the route's policy, for messages from the client.
    pub(crate) rates: Rates,
    /// Relay routes only.
    pub(crate) relay: Option<RelayTimers>,
    pub(crate) compression: Compression,
    /// The wait for the peer's reply to a close frame.
    pub(crate) close_timeout: Duration,
    /// The gateway's stop spreads its closes over this window.
    pub(crate) drain_window: Duration,
    /// Close with 1001 once the session is this old.
    pub(crate) max_session_duration: Option<Duration>,
}

impl SessionSettings {
    /// The settings of a route of `config` (a validated configuration).
    pub(crate) fn of(config: &Config, route: &Route) -> SessionSettings {
        let limits = &config.limits;
        let client_max = route.max_message_bytes(limits);
        let upstream_max = route.upstream_max_message_bytes.unwrap_or(client_max);
        // Each side writes what the other side (or the echo) sends.
        let client_writes = match route.mode {
            Mode::Relay => upstream_max,
            _ => client_max + route.echo_prefix().len(),
        };
        let relay = (route.mode == Mode::Relay).then(|| {
            let r = route.relay();
            RelayTimers {
                ping_interval: r.ping_interval,
                ping_timeout: r.ping_timeout,
                idle_timeout: r.idle_timeout,
            }
        });
        SessionSettings {
            client_max,
            upstream_max,
            client_ws: websocket_config(limits, client_max, client_writes),
            upstream_ws: websocket_config(limits, upstream_max, client_max),
            rates: config
                .policy_of(route)
                .map(|p| Rates::of(&p.limits))
                .unwrap_or_default(),
            relay,
            compression: route.compression(),
            close_timeout: limits.close_timeout.0,
            drain_window: config.server.drain_window(),
            max_session_duration: route.max_session_duration.map(|d| d.0),
        }
    }
}
