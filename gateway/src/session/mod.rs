//! What happens after `101 Switching Protocols`: the WebSocket sessions ([`echo`], [`relay`]),
//! the per-direction policy they apply ([`guard`]), how they close ([`close`]), what stops them
//! from outside ([`stop`], [`control`]), the open sessions an operator can list and close
//! ([`registry`]), and the count of open sockets a graceful stop waits on ([`count`]).
//!
//! A session runs as a task of its own, spawned by the edge once the `101` is out
//! (`edge::handshake`): it owns its streams and a [`SessionContext`] (all it needs from
//! admission and the configuration), not the handshake's state, and it returns how it ended for
//! the edge to report. Its route's settings ([`settings`]) are resolved once per configuration
//! generation; tungstenite's part of them comes from `net::websocket::config`.

pub(crate) mod close;
pub(crate) mod control;
pub(crate) mod count;
pub(crate) mod deflate;
pub(crate) mod echo;
pub(crate) mod guard;
pub(crate) mod idle;
pub(crate) mod registry;
pub(crate) mod relay;
pub(crate) mod settings;
pub(crate) mod stop;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Sleep;

use crate::core::close::TOKEN_EXPIRED;
use crate::core::end::{EndReason, Stop};
use crate::obs::metrics::Meter;
use control::Control;
use guard::{Expiry, Guard};
use registry::{CloseRequest, Counters};
use stop::StopSignal;

/// What every session needs besides its socket: the stop signal, the close timeout, the
/// policy for messages from the client, the token's expiry, and the route's message counters.
pub(crate) struct SessionContext {
    /// Shutdown (jittered over the drain window) and route removal: close 1001.
    pub(crate) stop: StopSignal,
    pub(crate) close_timeout: Duration,
    /// Applied to each data message the client sends.
    pub(crate) inbound: Guard,
    pub(crate) expiry: Option<Expiry>,
    /// Counts every message by direction and class (`Meter::default()` counts nothing).
    pub(crate) meter: Meter,
    /// This session's own counts, readable while it runs (the admin API lists them).
    pub(crate) counters: Arc<Counters>,
    /// An operator's close, and the route's maximum lifetime.
    pub(crate) control: Control,
}

/// Sleep until `at`, with the timer on the heap. Every open socket holds its session's future,
/// and most of a session's timers (token expiry, lifetime, the drain delay, ping and idle
/// watchdogs) are never started: boxed, each costs a pointer until it is. (A plain function, not
/// an `async fn`: that one's state would hold `at` twice beside the pointer.)
pub(crate) fn sleep_until(at: tokio::time::Instant) -> Pin<Box<Sleep>> {
    Box::pin(tokio::time::sleep_until(at))
}

/// What ends a session from outside its sockets.
pub(crate) enum Outside {
    /// The gateway's stop or the route's removal (1001).
    Stop(Stop),
    /// The token expired (1008 `token expired`).
    Expired,
    /// An operator's close or revocation, or the route's lifetime.
    Operator(CloseRequest),
}

impl Outside {
    /// Resolves when the gateway's stop, the token's expiry, an operator or the route's lifetime
    /// ends the session. Create it once per session and poll it beside the sockets: its timers
    /// are then registered once, not once per message. (An `async` block rather than an
    /// `async fn`: every open socket holds this future, and an `async fn`'s would also keep a
    /// copy of its arguments.)
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    pub(crate) fn wait<'a>(
        stop: &'a mut StopSignal,
        expiry: Option<Expiry>,
        control: &'a mut Control,
    ) -> impl Future<Output = Outside> + 'a {
        async move {
            tokio::select! {
                biased;
                why = stop.wait() => Outside::Stop(why),
                _ = Expiry::wait(expiry) => Outside::Expired,
                request = control.wait() => Outside::Operator(request),
            }
        }
    }

    /// The close the client gets, and the session's end reason.
    pub(crate) fn close(&self) -> ((u16, &str), EndReason) {
        match self {
            Outside::Stop(why) => {
                let v = why.close();
                ((v.code, v.reason), (*why).into())
            }
            Outside::Expired => {
                let v = TOKEN_EXPIRED;
                ((v.code, v.reason), EndReason::TokenExpired)
            }
            Outside::Operator(r) => ((r.code, &r.reason), r.cause),
        }
    }
}
