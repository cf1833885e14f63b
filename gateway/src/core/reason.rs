//! Why a request was refused: a low-cardinality label for logs and metrics
//! (`portcullis_rejections_total{reason}`), in one place. Admission and the relay return a
//! rejection carrying one of these; the edge counts and logs it.

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Reason {
    /// Not a valid WebSocket upgrade, or a malformed request head (400).
    BadRequest,
    /// A plain HTTP request to a WebSocket route (426).
    UpgradeRequired,
    /// The gateway is draining for shutdown (503).
    ShuttingDown,
    /// The client did not send a complete request head in time (408).
    HeadTimeout,
    /// The request head was larger than allowed (431).
    HeadTooLarge,
    /// A WebSocket upgrade to a path with no route (404).
    NoRoute,
    /// The Origin is not on the route's allow-list (403).
    Origin,
    /// No token where the route requires one (401).
    AuthMissing,
    /// A token that does not verify: signature, issuer, audience, algorithm (401).
    AuthInvalid,
    /// A token past its expiry (401).
    AuthExpired,
    /// A valid token whose claims the route's policy refuses (403).
    Forbidden,
    /// No verified client certificate where the policy requires one, or one it does not allow
    /// (403).
    ClientCert,
    /// The external authorizer refused the handshake (its status: 401, 403, ...).
    AuthzDenied,
    /// The external authorizer or the introspection endpoint could not be asked (503).
    AuthUnavailable,
    /// Too many handshakes from one client (429).
    RateLimited,
    /// A connection cap (per IP, subject, route or global) is reached (429/503).
    ConnLimit,
    /// A relay route could not reach any upstream (502/504).
    UpstreamUnavailable,
    /// The upstream answered the upgrade with its own refusal (its status is passed on).
    UpstreamRefused,
    /// A claim the route forwards as a header holds what no header can (control characters,
    /// over the size limit): the session would reach the upstream without its identity (403).
    IdentityUnforwardable,
    /// The cluster store failed and the policy's `on_error` is `"closed"` (503).
    ClusterUnavailable,
    /// The token's subject or id is revoked by an operator (401 `invalid_token`).
    Revoked,
}

impl Reason {
    /// Every reason, so that metrics can start each series at zero.
    pub(crate) const ALL: [Reason; 21] = [
        Reason::BadRequest,
        Reason::UpgradeRequired,
        Reason::ShuttingDown,
        Reason::HeadTimeout,
        Reason::HeadTooLarge,
        Reason::NoRoute,
        Reason::Origin,
        Reason::AuthMissing,
        Reason::AuthInvalid,
        Reason::AuthExpired,
        Reason::Forbidden,
        Reason::ClientCert,
        Reason::AuthzDenied,
        Reason::AuthUnavailable,
        Reason::RateLimited,
        Reason::ConnLimit,
        Reason::UpstreamUnavailable,
        Reason::UpstreamRefused,
        Reason::IdentityUnforwardable,
        Reason::ClusterUnavailable,
        Reason::Revoked,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::BadRequest => "bad_request",
            Reason::UpgradeRequired => "upgrade_required",
            Reason::ShuttingDown => "shutting_down",
            Reason::HeadTimeout => "head_timeout",
            Reason::HeadTooLarge => "head_too_large",
            Reason::NoRoute => "no_route",
            Reason::Origin => "origin",
            Reason::AuthMissing => "auth_missing",
            Reason::AuthInvalid => "auth_invalid",
            Reason::AuthExpired => "auth_expired",
            Reason::Forbidden => "forbidden",
            Reason::ClientCert => "client_cert",
            Reason::AuthzDenied => "authz_denied",
            Reason::AuthUnavailable => "auth_unavailable",
            Reason::RateLimited => "rate_limited",
            Reason::ConnLimit => "conn_limit",
            Reason::UpstreamUnavailable => "upstream_unavailable",
            Reason::UpstreamRefused => "upstream_refused",
            Reason::IdentityUnforwardable => "identity_unforwardable",
            Reason::ClusterUnavailable => "cluster_unavailable",
            Reason::Revoked => "revoked",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_listed_once_with_distinct_labels() {
        let mut labels: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), Reason::ALL.len());
        // A new variant must join `ALL`: this match stops compiling until it is handled here.
        for r in Reason::ALL {
            match r {
                Reason::BadRequest
                | Reason::UpgradeRequired
                | Reason::ShuttingDown
                | Reason::HeadTimeout
                | Reason::HeadTooLarge
                | Reason::NoRoute
                | Reason::Origin
                | Reason::AuthMissing
                | Reason::AuthInvalid
                | Reason::AuthExpired
                | Reason::Forbidden
                | Reason::ClientCert
                | Reason::AuthzDenied
                | Reason::AuthUnavailable
                | Reason::RateLimited
                | Reason::ConnLimit
                | Reason::UpstreamUnavailable
                | Reason::UpstreamRefused
                | Reason::IdentityUnforwardable
                | Reason::ClusterUnavailable
                | Reason::Revoked => {}
            }
        }
    }
}
