//! The last phase of a connection: what it reports. Every refused request and every ended
//! session is counted (metrics) and logged (one access-log line) here, in one place, so the
//! phases before only say what happened.

use crate::net::websocket::deflate::Agreed;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::admission::Rejection;
use crate::core::end::{Initiator, SessionEnd};
use crate::core::labels::HandshakeResult;
use crate::core::log_format::LogFormat;
use crate::obs::access_log::{AccessLog, RejectionRecord, RelayRecord, SessionRecord};
use crate::obs::metrics::{Metrics, OpenSession};
use crate::obs::trace::SessionLink;

/// Metrics and the access log of the public listeners.
pub(crate) struct Report {
    pub(crate) metrics: Arc<Metrics>,
    access: AccessLog,
}

impl Report {
    pub(crate) fn new(metrics: Arc<Metrics>, format: LogFormat) -> Report {
        Report {
            metrics,
            access: AccessLog::new(format),
        }
    }

    /// A refused request. `route` is the configured route path or `labels::NO_ROUTE`;
    /// `started` is when its head was complete.
    pub(crate) fn rejected(
        &self,
        route: &str,
        client: Option<IpAddr>,
        protocol: &'static str,
        rejection: &Rejection,
        started: Instant,
    ) {
        self.metrics
            .rejected(route, rejection.reason, started.elapsed());
        self.access.rejection(&RejectionRecord {
            route,
            client,
            protocol,
            subject: None,
            reason: rejection.reason,
            status: rejection.answer.status,
            cluster_fallback: rejection.cluster_fallback,
        });
    }

    /// The `101` (HTTP/1.1) or `200` (HTTP/2) was written (`ok`) or the client left before it
    /// could be.
    pub(crate) fn switched(
        &self,
        route: &str,
        protocol: &str,
        ok: bool,
        started: Instant,
    ) -> Option<OpenSession> {
        let result = if ok {
            HandshakeResult::Accepted
        } else {
            HandshakeResult::Failed
        };
        self.metrics.handshake(route, result, started.elapsed());
        if ok {
            self.metrics.websocket_opened(protocol);
        }
        ok.then(|| self.metrics.session_opened(route))
    }

    /// A session ended; `who` says who it was; `trace` links its span to its handshake's.
    pub(crate) fn session_ended(
        &self,
        route: &str,
        who: &Who,
        end: &SessionEnd,
        duration: Duration,
        relay: Option<RelayRecord<'_>>,
        trace: Option<Box<SessionLink>>,
    ) {
        if let Some(r) = &relay {
            self.metrics.relay_ended(route, r.end_reason);
        }
        let reason = relay.as_ref().map(|r| r.end_reason).or(end.reason);
        if let (Initiator::Gateway, Some(reason)) = (end.initiator, reason) {
            self.metrics.gateway_closed(route, reason);
        }
        self.metrics.closed(route, end.close_code, end.initiator);
        if let Some(link) = trace {
            link.ended(route, who.client, end, reason, duration);
        }
        self.access.session(&SessionRecord {
            route,
            client: who.client,
            protocol: who.protocol,
            subject: who.subject.as_deref(),
            end,
            duration,
            relay,
            cluster_fallback: who.cluster_fallback,
            extension: who.extension.map(|a| a.describe()).as_deref(),
        });
    }
}

/// Who a session was, as its access line says.
#[derive(Debug)]
pub(crate) struct Who {
    /// The client address (trusted-proxy aware).
    pub(crate) client: Option<IpAddr>,
    /// The HTTP that carried the socket: `h1` or `h2`.
    pub(crate) protocol: &'static str,
    /// The verified subject, when the route authenticated the client.
    pub(crate) subject: Option<String>,
    /// Admitted under this process's own limits because the cluster store failed.
    pub(crate) cluster_fallback: bool,
    /// permessage-deflate as agreed with the client.
    pub(crate) extension: Option<Agreed>,
}
