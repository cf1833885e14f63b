//! Admission: the checks a request passes before the gateway answers `101 Switching Protocols`.
//!
//! Cheapest check first (the README's admission table gives each one's answer); each is a
//! function of the request head plus shared state where it must be, and yields either a
//! go-ahead or a [`Rejection`]:
//!
//! 1. a valid RFC 6455 upgrade (`net::websocket::request`);
//! 2. the handshake rate per client IP ([`rate`]), the client being the socket's peer or, behind
//!    a trusted proxy, the address it forwards ([`client_ip`]);
//! 3. the `Origin` ([`origin`]);
//! 4. the credential ([`identity`] holds a policy's credentials together): a client certificate
//!    ([`client_cert`]), a JWT ([`token`]; keys from [`keys`], [`keyset`] and [`jwks`],
//!    signatures checked by ring through [`jwt_crypto`]) or an opaque token by introspection
//!    ([`introspection`]); then revoked subjects and token ids are refused;
//! 5. the token's claims ([`token`]), the rate per subject ([`rate`]), and the external
//!    authorizer ([`ext_authz`]); the answers of introspection and the authorizer may be
//!    cached ([`cache`]);
//! 6. the connection caps per IP, subject, route and gateway ([`caps`]), held by the session
//!    until it ends.
//!
//! With `[cluster]` the rates and caps count across replicas ([`shared`]: Redis first, this
//! process's own limiter and caps when Redis fails, as the policy's `on_error` says). The only
//! I/O in a handshake is the calls a policy names (the cluster store, introspection, the
//! authorizer), each under a timeout. [`Admission::build`] compiles the policies of a
//! configuration generation, carrying over from the previous one what a reload must keep
//! (connection counts, unchanged rates, fetched keys).

mod cache;
pub(crate) mod caps;
mod client_cert;
pub(crate) mod client_ip;
mod ext_authz;
mod identity;
mod introspection;
mod jwks;
mod jwt_crypto;
pub(crate) mod keys;
pub(crate) mod keyset;
pub(crate) mod origin;
pub(crate) mod rate;
mod shared;
pub(crate) mod token;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::FutureExt;

use crate::net::websocket::request::{self as upgrade, Upgrade};
pub(crate) use crate::net::websocket::Rejection;
use caps::{Caps, Permit};
use rate::{rate_limited, HandshakeRate};
use shared::{Shared, SharedCap};
use token::{Locator, TokenPolicy};

use crate::cluster::revocations::Revocations;
use crate::cluster::{Cluster, Counted};
use crate::config::cluster::OnError;
use crate::config::policy::{self, PolicyLimits};
use crate::config::{defaults, Config, Route};
use crate::core::background;
use crate::core::cidr::Cidr;
use crate::core::credential::{is_token_subprotocol, PolicyCredentials};
use crate::core::duration::deadline;
use crate::core::labels::BackgroundTask;
use crate::core::reason::Reason;
use crate::net::http1::RequestHead;
use crate::net::peer_cert::PeerCert;
use crate::obs::metrics::supervised;
use identity::Identity;

/// What admission learned about a client it let in. Sessions use it for the token's expiry;
/// relays for identity forwarding and the subprotocols to offer upstream.
#[derive(Debug, Clone, Default)]
pub(crate) struct Admitted {
    /// The client's address: the socket peer, or the forwarded address from a trusted proxy.
    pub(crate) client_ip: Option<IpAddr>,
    /// The token's `sub`, when a token was checked.
    pub(crate) subject: Option<String>,
    /// The token's verified claims (empty for public routes).
    pub(crate) claims: serde_json::Map<String, serde_json::Value>,
    /// The raw token, kept only so a route that asks for it can forward it; never logged.
    pub(crate) token: Option<String>,
    /// When the socket must close because the token expires.
    pub(crate) expires_at: Option<tokio::time::Instant>,
    /// The subprotocols the client offered, minus any `bearer.<token>` entry.
    pub(crate) protocols: Vec<String>,
    /// A cluster check was decided under this process's own limits because Redis failed.
    pub(crate) cluster_fallback: bool,
    /// Identity headers for the upstream request: the client certificate's, and those the
    /// external authorizer's answer gave.
    pub(crate) identity_headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// A WebSocket request as admission sees it: its head and route, and what its connection knows.
pub(crate) struct Request<'a> {
    pub(crate) head: &'a RequestHead,
    pub(crate) route: &'a Route,
    /// The socket's peer address.
    pub(crate) peer: Option<IpAddr>,
    /// The verified client certificate, if the TLS handshake had one.
    pub(crate) peer_cert: Option<&'a PeerCert>,
    /// The gateway is stopping: a valid upgrade is answered `503`.
    pub(crate) stopping: bool,
}

/// Admission's one answer to a request: the client it saw (trusted-proxy aware, for the log
/// either way), and either what the handshake needs to go on or why not.
pub(crate) struct Decision {
    pub(crate) client: Option<IpAddr>,
    pub(crate) verdict: Result<Admit, Rejection>,
}

/// A request admission let in.
pub(crate) struct Admit {
    /// Who the client is, as verified.
    pub(crate) admitted: Admitted,
    /// The connection slots taken for it, held by its session until it ends.
    pub(crate) permit: Permit,
    /// The upgrade's facts: the accept key, the subprotocols and extensions offered.
    pub(crate) upgrade: Upgrade,
}

/// Refuse a subject or token id an operator has revoked. Admission asks before its later checks;
/// the edge asks again once the session is registered, so that a revocation made while the
/// handshake was in flight (an upstream connect can take seconds) cannot miss it.
pub(crate) fn not_revoked(subject: Option<&str>, jti: Option<&str>) -> Result<(), Rejection> {
    if Revocations::global().is_revoked(subject, jti) {
        return Err(token::invalid(Reason::Revoked, "token revoked"));
    }
    Ok(())
}

impl Admitted {
    /// The verified token's id (`jti`), if it has one.
    pub(crate) fn jti(&self) -> Option<&str> {
        self.claims.get("jti").and_then(|j| j.as_str())
    }
}

/// The compiled state of one policy: its checks and the counters they keep.
struct PolicyState {
    /// The policy's name (part of its cluster keys).
    name: String,
    /// With `[cluster]`: what the cluster checks do when Redis fails.
    on_error: Option<OnError>,
    origin: Option<policy::Origin>,
    token: Option<TokenPolicy>,
    identity: Identity,
    limits: PolicyLimits,
    ip_rate: Option<Arc<HandshakeRate<IpAddr>>>,
    subject_rate: Option<Arc<HandshakeRate<String>>>,
    per_ip: Arc<Caps<IpAddr>>,
    per_subject: Arc<Caps<String>>,
}

impl PolicyState {
    /// Where this policy's token is looked for: its JWT's, else its introspection's.
    fn locator(&self) -> Option<&Locator> {
        (self.token.as_ref().map(TokenPolicy::locator)).or_else(|| self.identity.locator())
    }

    fn compile(
        p: &policy::Policy,
        name: &str,
        cluster: Option<&Cluster>,
    ) -> Result<PolicyState, String> {
        let key = format!("policies.{name}");
        Ok(PolicyState {
            name: name.to_string(),
            on_error: cluster.map(|c| {
                p.cluster
                    .as_ref()
                    .and_then(|pc| pc.on_error)
                    .unwrap_or(c.on_error())
            }),
            origin: p.origin.clone(),
            token: p
                .jwt
                .as_ref()
                .map(|jwt| TokenPolicy::compile(jwt, &format!("{key}.jwt")))
                .transpose()?,
            identity: Identity::compile(p, &key)?,
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

    /// Carry over from the same policy of the previous generation what must survive a reload:
    /// connection counts (sockets admitted before it still count against the caps), the state
    /// of unchanged rates, and the keys of an unchanged JWKS URL.
    fn inherit(&mut self, prev: &PolicyState) {
        self.per_ip = prev.per_ip.clone();
        self.per_subject = prev.per_subject.clone();
        if self.limits.handshakes_per_ip == prev.limits.handshakes_per_ip {
            self.ip_rate = prev.ip_rate.clone();
        }
        if self.limits.handshakes_per_subject == prev.limits.handshakes_per_subject {
            self.subject_rate = prev.subject_rate.clone();
        }
        if let (Some(token), Some(prev_token)) = (&mut self.token, &prev.token) {
            token.keys.inherit(&prev_token.keys);
        }
    }
}

/// The admission engine: every policy compiled, plus the gateway-wide counters.
pub(crate) struct Admission {
    policies: HashMap<String, PolicyState>,
    public: PolicyState,
    trusted_proxies: Vec<Cidr>,
    per_route: Arc<Caps<String>>,
    global: Arc<Caps<()>>,
    max_connections: usize,
    /// The cluster store, when `[cluster]` is set (kept across reloads while unchanged).
    cluster: Option<Arc<Cluster>>,
}

impl Admission {
    /// Compile the policies of a validated config: keys are loaded here, so a bad key file is a
    /// start-up (and `--check`, and reload) error naming its key. With `previous` (a reload),
    /// counters and limiter state carry over (see [`PolicyState::inherit`]).
    pub(crate) fn build(
        config: &Config,
        previous: Option<&Admission>,
    ) -> Result<Admission, String> {
        jwt_crypto::install();
        let cluster = config
            .cluster
            .as_ref()
            .map(|c| Cluster::build(c, previous.and_then(|p| p.cluster.as_ref())))
            .transpose()?;
        identity::warn_without_client_ca(config);
        let mut policies = HashMap::new();
        for (name, p) in &config.policies {
            let mut state = PolicyState::compile(p, name, cluster.as_deref())?;
            if let Some(prev) = previous.and_then(|old| old.policies.get(name)) {
                state.inherit(prev);
            }
            policies.insert(name.clone(), state);
        }
        Ok(Admission {
            policies,
            public: PolicyState::compile(&policy::Policy::default(), "default", None)?,
            trusted_proxies: config.server.trusted_proxies.clone(),
            per_route: previous.map_or_else(Arc::default, |old| old.per_route.clone()),
            global: previous.map_or_else(Arc::default, |old| old.global.clone()),
            max_connections: config.limits.max_connections,
            cluster,
        })
    }

    /// The cluster store, when `[cluster]` is set.
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Start the background JWKS fetchers (on their own thread, outside the request path). Each
    /// fetcher is supervised: a panic restarts it (logged and counted) instead of ending it.
    pub(crate) fn start_background(&self) {
        if let Some(cluster) = &self.cluster {
            cluster.start();
        }
        let remotes: Vec<_> = self
            .policies
            .values()
            .filter_map(|p| p.token.as_ref().and_then(|t| t.keys.remote()))
            .collect();
        if remotes.is_empty() {
            return;
        }
        let fetchers = remotes.into_iter().map(|remote| {
            supervised(BackgroundTask::Jwks, move || {
                jwks::RemoteJwks::run(remote.clone())
            })
        });
        background::spawn("jwks", futures_util::future::join_all(fetchers).map(|_| ()));
    }

    fn policy(&self, route: &Route) -> &PolicyState {
        self.policies
            .get(route.policy_name())
            .unwrap_or(&self.public)
    }

    /// Where `route`'s policy takes a token from and which identity headers it sets: what a
    /// relay must strip from the requests it forwards.
    pub(crate) fn credentials(&self, route: &Route) -> PolicyCredentials {
        let policy = self.policy(route);
        let locator = policy.locator();
        PolicyCredentials {
            query_param: locator
                .map_or(defaults::QUERY_PARAM, Locator::query_param)
                .to_string(),
            cookie: locator.map(|l| l.cookie_name().to_string()),
            identity_headers: policy.identity.header_names().to_vec(),
        }
    }

    /// Every check, in order (see the module docs): the one decision of a handshake.
    pub(crate) async fn decide(&self, request: Request<'_>) -> Decision {
        let Request {
            head,
            route,
            peer,
            peer_cert,
            stopping,
        } = request;
        let client = client_ip::resolve(peer, head, &self.trusted_proxies);
        let verdict = match upgrade::check(head) {
            Err(rejection) => Err(rejection),
            Ok(_) if stopping => Err(Rejection::new(Reason::ShuttingDown, 503, "shutting down\n")),
            Ok(upgrade) => self
                .admit(head, route, client, peer_cert, &upgrade)
                .await
                .map(|(admitted, permit)| Admit {
                    admitted,
                    permit,
                    upgrade,
                }),
        };
        Decision { client, verdict }
    }

    /// Run checks 2-6 on a valid upgrade (check 1), cheapest first. On success the returned
    /// [`Permit`] holds the connection slots until it is dropped with the session.
    async fn admit(
        &self,
        head: &RequestHead,
        route: &Route,
        client_ip: Option<IpAddr>,
        peer_cert: Option<&PeerCert>,
        upgrade: &Upgrade,
    ) -> Result<(Admitted, Permit), Rejection> {
        let policy = self.policy(route);
        let mut shared = match (&self.cluster, policy.on_error) {
            (Some(cluster), Some(on_error)) => Some(Shared::new(cluster, on_error)),
            _ => None,
        };
        // 2. handshake rate per client IP
        if let (Some(rate), Some(ip)) = (&policy.ip_rate, client_ip) {
            match &mut shared {
                Some(s) => {
                    let key = s.cluster.rate_key(&policy.name, Counted::Ip(ip));
                    s.rate(key, rate, &ip).await?;
                }
                None => rate.check(&ip).map_err(rate_limited)?,
            }
        }
        // 3. Origin
        if let Some(origin) = &policy.origin {
            origin::check(head, origin)?;
        }
        // 4 and 5. client certificate, token (JWT or introspection) and claims
        policy.identity.check_cert(peer_cert)?;
        let verified = match &policy.token {
            Some(token) => Some(token.check(head).await?),
            None => policy.identity.introspect(head).await?,
        };
        let subject = policy.identity.subject(peer_cert, verified.as_ref());
        // 4b. revoked subjects and token ids (an operator's POST /revocations)
        let jti = verified
            .as_ref()
            .and_then(|v| v.claims.get("jti"))
            .and_then(|j| j.as_str());
        not_revoked(subject.as_deref(), jti)?;
        if let (Some(rate), Some(sub)) = (&policy.subject_rate, &subject) {
            match &mut shared {
                Some(s) => {
                    let key = s.cluster.rate_key(&policy.name, Counted::Subject(sub));
                    s.rate(key, rate, sub).await?;
                }
                None => rate.check(sub).map_err(rate_limited)?,
            }
        }
        // 4. the external authorizer: after the rate checks, before the caps
        let locator = policy.locator();
        let token_param = locator.map_or(defaults::QUERY_PARAM, Locator::query_param);
        let question = identity::question(head, &route.path, client_ip, peer_cert, token_param);
        let identity_headers = policy.identity.authorize(&question).await?;
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
        // 6 (cluster). The same caps across replicas, in one round trip, after the local ones
        // (which this process's sockets can only fill less).
        if let Some(s) = &mut shared {
            let l = &policy.limits;
            let mut caps = Vec::new();
            if let (Some(cap), Some(ip)) = (l.connections_per_ip, client_ip) {
                let key = s.cluster.cap_key(&policy.name, Counted::Ip(ip));
                caps.push(SharedCap {
                    key,
                    cap,
                    who: "from this address",
                });
            }
            if let (Some(cap), Some(sub)) = (l.connections_per_subject, &subject) {
                let key = s.cluster.cap_key(&policy.name, Counted::Subject(sub));
                caps.push(SharedCap {
                    key,
                    cap,
                    who: "for this subject",
                });
            }
            if let Some(cap) = l.connections_per_route {
                let key = s.cluster.route_key(&policy.name, &route.path);
                caps.push(SharedCap {
                    key,
                    cap,
                    who: "on this route",
                });
            }
            if !caps.is_empty() {
                let earlier = s.fallback;
                let over = |who: &str| over(who).fallback(earlier);
                permit.hold(s.caps(caps, over).await?);
            }
        }

        // An expiry further away than the monotonic clock can count saturates (never reached).
        let expires_at = verified.as_ref().and_then(|v| v.closes_at).map(|at| {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            deadline(tokio::time::Instant::now(), left)
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
            expires_at,
            identity_headers,
            protocols: upgrade
                .offered_protocols
                .iter()
                .filter(|p| !is_token_subprotocol(p))
                .cloned()
                .collect(),
            cluster_fallback: shared.is_some_and(|s| s.fallback),
        };
        Ok((admitted, permit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One echo route under a policy with one socket per address and the handshake rate `rate`.
    fn config(rate: &str) -> Config {
        let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n\
             [[routes]]\npath = \"/r\"\nmode = \"echo\"\npolicy = \"p\"\n\
             [policies.p.limits]\nconnections_per_ip = 1\nhandshakes_per_ip = {rate}\n"
        );
        Config::parse(&text, "test", None).unwrap()
    }

    /// A valid upgrade to `/r` from `ip` through `admission`: the permit, or why it was refused.
    async fn admit(admission: &Admission, config: &Config, ip: IpAddr) -> Result<Permit, Reason> {
        let head = RequestHead::for_test(
            "GET",
            "/r",
            &[
                ("host", "example"),
                ("upgrade", "websocket"),
                ("connection", "Upgrade"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
        );
        let upgrade = upgrade::check(&head).unwrap();
        admission
            .admit(&head, &config.routes[0], Some(ip), None, &upgrade)
            .await
            .map(|(_, permit)| permit)
            .map_err(|rejection| rejection.reason)
    }

    #[tokio::test]
    async fn a_reload_keeps_the_slots_and_unchanged_rates_of_the_previous_admission() {
        let ip: IpAddr = [192, 0, 2, 7].into();
        // Two handshakes at once, then one a minute (none comes back during the test).
        let two = config("{ per_minute = 1, burst = 2 }");
        let old = Admission::build(&two, None).unwrap();
        let socket = admit(&old, &two, ip).await.unwrap();

        let reloaded = Admission::build(&two, Some(&old)).unwrap();
        // The socket admitted before the reload still holds its slot (its second handshake
        // passes the rate and meets the cap)...
        assert_eq!(
            admit(&reloaded, &two, ip).await.err(),
            Some(Reason::ConnLimit)
        );
        // ...and the rate remembers both handshakes: a fresh limiter would have let a third one
        // through to the cap again.
        assert_eq!(
            admit(&reloaded, &two, ip).await.err(),
            Some(Reason::RateLimited)
        );

        // A changed rate starts afresh, while the slot is still held...
        let three = config("{ per_minute = 1, burst = 3 }");
        let changed = Admission::build(&three, Some(&reloaded)).unwrap();
        assert_eq!(
            admit(&changed, &three, ip).await.err(),
            Some(Reason::ConnLimit)
        );
        // ...until the socket from before both reloads ends.
        drop(socket);
        admit(&changed, &three, ip).await.unwrap();
    }
}
