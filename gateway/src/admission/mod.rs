//! Admission: the checks a request passes before the gateway answers `101 Switching Protocols`.
//!
//! Cheapest check first (see `shared/design.md`): a valid RFC 6455 upgrade, then (as they land)
//! rate, Origin, token, claims and connection caps. Each check is a pure function of the request
//! head (plus shared state where it must be) and yields either a go-ahead or a [`Rejection`].

pub mod client_ip;
pub mod fetch;
pub mod jwt_crypto;
pub mod keys;
pub mod limits;
pub mod origin;
pub mod token;
pub mod upgrade;

use std::collections::HashMap;

use futures_util::FutureExt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::SystemTime;

use client_ip::Cidr;
use limits::{Caps, HandshakeRate, Permit};
use token::TokenPolicy;
use upgrade::Upgrade;

use crate::config::policy::{self, PolicyLimits};
use crate::config::{Config, Route};
use crate::http1::{Answer, RequestHead};
use crate::session::guard::{Expiry, Rates};

/// What admission learned about a client it let in. Sessions use it for the token's expiry;
/// relays for identity forwarding and the subprotocols to offer upstream.
#[derive(Debug, Clone, Default)]
pub struct Admitted {
    /// The client's address: the socket peer, or the forwarded address from a trusted proxy.
    pub client_ip: Option<IpAddr>,
    /// The token's `sub`, when a token was checked.
    pub subject: Option<String>,
    /// The token's verified claims (empty for public routes).
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The raw token, kept only so a route that asks for it can forward it; never logged.
    pub token: Option<String>,
    /// When the socket must close because the token expires.
    pub expiry: Option<Expiry>,
    /// The subprotocols the client offered, minus any `bearer.<token>` entry.
    pub protocols: Vec<String>,
    /// Where this route's policy looks for a token besides headers: the query parameter and
    /// the cookie, so that a relay strips them before forwarding (unless asked not to).
    pub token_query_param: Option<String>,
    pub token_cookie: Option<String>,
}

/// Why a request was refused: a low-cardinality label for logs and metrics
/// (`portcullis_rejections_total{reason}`), in one place. The admission and relay work return a
/// [`Rejection`] with one of these; the gateway counts and logs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
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
    /// Too many handshakes from one client (429).
    RateLimited,
    /// A connection cap (per IP, subject, route or global) is reached (429/503).
    ConnLimit,
    /// A relay route could not reach any upstream (502/504).
    UpstreamUnavailable,
    /// The upstream answered the upgrade with its own refusal (its status is passed on).
    UpstreamRefused,
}

impl Reason {
    /// Every reason, so that metrics can start each series at zero.
    pub const ALL: [Reason; 15] = [
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
        Reason::RateLimited,
        Reason::ConnLimit,
        Reason::UpstreamUnavailable,
        Reason::UpstreamRefused,
    ];

    pub fn as_str(self) -> &'static str {
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
            Reason::RateLimited => "rate_limited",
            Reason::ConnLimit => "conn_limit",
            Reason::UpstreamUnavailable => "upstream_unavailable",
            Reason::UpstreamRefused => "upstream_refused",
        }
    }
}

/// A refused handshake: the reason, and the answer the client gets.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub reason: Reason,
    pub answer: Answer,
}

impl Rejection {
    pub fn new(reason: Reason, status: u16, body: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            answer: Answer::new(status, body),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Rejection {
        self.answer = self.answer.header(name, value);
        self
    }
}

/// The compiled state of one policy: its checks and the counters they keep.
struct PolicyState {
    origin: Option<policy::Origin>,
    token: Option<TokenPolicy>,
    limits: PolicyLimits,
    ip_rate: Option<Arc<HandshakeRate<IpAddr>>>,
    subject_rate: Option<Arc<HandshakeRate<String>>>,
    per_ip: Arc<Caps<IpAddr>>,
    per_subject: Arc<Caps<String>>,
}

impl PolicyState {
    fn compile(p: &policy::Policy, key: &str) -> Result<PolicyState, String> {
        Ok(PolicyState {
            origin: p.origin.clone(),
            token: p
                .jwt
                .as_ref()
                .map(|jwt| TokenPolicy::compile(jwt, &format!("{key}.jwt")))
                .transpose()?,
            limits: p.limits.clone(),
            ip_rate: p
                .limits
                .handshakes_per_ip
                .as_ref()
                .map(|r| Arc::new(HandshakeRate::new(r))),
            subject_rate: p
                .limits
                .handshakes_per_subject
                .as_ref()
                .map(|r| Arc::new(HandshakeRate::new(r))),
            per_ip: Arc::default(),
            per_subject: Arc::default(),
        })
    }
}

/// The admission engine: every policy compiled, plus the gateway-wide counters.
pub struct Admission {
    policies: HashMap<String, PolicyState>,
    public: PolicyState,
    trusted_proxies: Vec<Cidr>,
    per_route: Arc<Caps<String>>,
    global: Arc<Caps<()>>,
    max_connections: usize,
}

impl Admission {
    /// Compile the policies of a validated config: keys are loaded here, so a bad key file is a
    /// start-up (and `--check`) error naming its key.
    pub fn new(config: &Config) -> Result<Admission, String> {
        jwt_crypto::install();
        let mut policies = HashMap::new();
        for (name, p) in &config.policies {
            policies.insert(
                name.clone(),
                PolicyState::compile(p, &format!("policies.{name}"))?,
            );
        }
        let trusted_proxies = config
            .server
            .trusted_proxies
            .iter()
            .map(|c| Cidr::parse(c))
            .collect::<Result<_, _>>()?;
        Ok(Admission {
            policies,
            public: PolicyState::compile(&policy::Policy::default(), "policies.default")?,
            trusted_proxies,
            per_route: Arc::default(),
            global: Arc::default(),
            max_connections: config.limits.max_connections,
        })
    }

    /// Compile a reloaded configuration, carrying over what must survive a reload: connection
    /// counts (so sockets admitted before it still count against the caps), rate-limiter state
    /// of unchanged rates, and JWKS keys of unchanged URLs.
    pub fn new_after(config: &Config, old: &Admission) -> Result<Admission, String> {
        let mut next = Admission::new(config)?;
        next.per_route = old.per_route.clone();
        next.global = old.global.clone();
        for (name, policy) in next.policies.iter_mut() {
            let Some(prev) = old.policies.get(name) else {
                continue;
            };
            policy.per_ip = prev.per_ip.clone();
            policy.per_subject = prev.per_subject.clone();
            if policy.limits.handshakes_per_ip == prev.limits.handshakes_per_ip {
                policy.ip_rate = prev.ip_rate.clone();
            }
            if policy.limits.handshakes_per_subject == prev.limits.handshakes_per_subject {
                policy.subject_rate = prev.subject_rate.clone();
            }
            if let (Some(token), Some(prev_token)) = (&mut policy.token, &prev.token) {
                token.keys.inherit(&prev_token.keys);
            }
        }
        Ok(next)
    }

    /// Start the background JWKS fetchers (on their own thread, outside the request path).
    pub fn start_background(&self) {
        let remotes: Vec<_> = self
            .policies
            .values()
            .filter_map(|p| p.token.as_ref().and_then(|t| t.keys.remote()))
            .collect();
        if remotes.is_empty() {
            return;
        }
        crate::background::spawn(
            "jwks",
            futures_util::future::join_all(remotes.into_iter().map(keys::RemoteJwks::run))
                .map(|_| ()),
        );
    }

    fn policy(&self, route: &Route) -> &PolicyState {
        self.policies
            .get(route.policy_name())
            .unwrap_or(&self.public)
    }

    /// The client address (trusted-proxy aware).
    pub fn client_ip(&self, peer: Option<IpAddr>, head: &RequestHead) -> Option<IpAddr> {
        client_ip::resolve(peer, head, &self.trusted_proxies)
    }

    /// Per-connection rates for messages from the client on `route`.
    pub fn client_rates(&self, route: &Route) -> Rates {
        let l = &self.policy(route).limits;
        Rates {
            messages_per_second: l.messages_per_second.and_then(NonZeroU32::new),
            bytes_per_second: l.bytes_per_second.and_then(NonZeroU32::new),
        }
    }

    /// Run checks 2-6 on a valid upgrade (check 1), cheapest first. On success the returned
    /// [`Permit`] holds the connection slots until it is dropped with the session.
    pub async fn admit(
        &self,
        head: &RequestHead,
        route: &Route,
        client_ip: Option<IpAddr>,
        upgrade: &Upgrade,
    ) -> Result<(Admitted, Permit), Rejection> {
        let policy = self.policy(route);
        // 2. handshake rate per client IP
        if let (Some(rate), Some(ip)) = (&policy.ip_rate, client_ip) {
            rate.check(&ip).map_err(rate_limited)?;
        }
        // 3. Origin
        if let Some(origin) = &policy.origin {
            origin::check(head, origin)?;
        }
        // 4 and 5. token and claims
        let verified = match &policy.token {
            Some(token) => Some(token.check(head).await?),
            None => None,
        };
        let subject = verified.as_ref().and_then(|v| v.subject.clone());
        if let (Some(rate), Some(sub)) = (&policy.subject_rate, &subject) {
            rate.check(sub).map_err(rate_limited)?;
        }
        // 6. connection caps
        let mut permit = Permit::default();
        let over = |who: &str| {
            Rejection::new(
                Reason::ConnLimit,
                429,
                format!("too many connections {who}\n"),
            )
        };
        if let (Some(cap), Some(ip)) = (policy.limits.connections_per_ip, client_ip) {
            permit.hold(
                policy
                    .per_ip
                    .acquire(ip, cap)
                    .ok_or_else(|| over("from this address"))?,
            );
        }
        if let (Some(cap), Some(sub)) = (policy.limits.connections_per_subject, &subject) {
            permit.hold(
                policy
                    .per_subject
                    .acquire(sub.clone(), cap)
                    .ok_or_else(|| over("for this subject"))?,
            );
        }
        if let Some(cap) = policy.limits.connections_per_route {
            permit.hold(
                self.per_route
                    .acquire(route.path.clone(), cap)
                    .ok_or_else(|| over("on this route"))?,
            );
        }
        permit.hold(
            self.global
                .acquire((), self.max_connections)
                .ok_or_else(|| {
                    Rejection::new(Reason::ConnLimit, 503, "gateway at capacity\n")
                        .header("Retry-After", "1")
                })?,
        );

        let expiry = verified.as_ref().and_then(|v| v.closes_at).map(|at| {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            Expiry::after(left)
        });
        let (token, claims) = match verified {
            Some(v) => (Some(v.token), v.claims),
            None => (None, Default::default()),
        };
        let admitted = Admitted {
            client_ip,
            subject,
            claims,
            token,
            expiry,
            token_query_param: policy.token.as_ref().map(|t| t.query_param().to_string()),
            token_cookie: policy.token.as_ref().map(|t| t.cookie_name().to_string()),
            protocols: upgrade
                .offered_protocols
                .iter()
                .filter(|p| !token::is_token_subprotocol(p))
                .cloned()
                .collect(),
        };
        Ok((admitted, permit))
    }

    /// Open sockets counted against the global cap.
    pub fn open_connections(&self) -> usize {
        self.global.count(&())
    }
}

fn rate_limited(retry_after: std::time::Duration) -> Rejection {
    Rejection::new(Reason::RateLimited, 429, "too many handshakes\n").header(
        "Retry-After",
        limits::retry_after_secs(retry_after).to_string(),
    )
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
                | Reason::RateLimited
                | Reason::ConnLimit
                | Reason::UpstreamUnavailable
                | Reason::UpstreamRefused => {}
            }
        }
    }
}
