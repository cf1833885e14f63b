//! `[policies.NAME]`: the admission rules a route refers to (schema only; `validate` checks it,
//! `admission` compiles a validated policy into the state that checks requests).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::identity::{ClientCert, ExtAuthz, Introspection};
pub(crate) use super::token::{ClaimRule, OnExpiry, TokenSource};
use crate::core::duration::HumanDuration;
use crate::core::url::HttpUrl;

/// A policy. Empty means public: anyone who passes the upgrade check is admitted.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Policy {
    /// Read the policy's keys from this TOML file instead (relative to the config file).
    pub(crate) include: Option<PathBuf>,
    pub(crate) origin: Option<Origin>,
    pub(crate) jwt: Option<Jwt>,
    /// The TLS client certificate (see `identity`).
    pub(crate) client_cert: Option<ClientCert>,
    /// An external authorization service asked about each handshake.
    pub(crate) ext_authz: Option<ExtAuthz>,
    /// Opaque tokens checked by OAuth 2.0 token introspection.
    pub(crate) introspection: Option<Introspection>,
    #[serde(default)]
    pub(crate) limits: PolicyLimits,
    /// This policy's choice when the cluster store fails (`[cluster] on_error` otherwise).
    pub(crate) cluster: Option<PolicyCluster>,
}

/// `[policies.NAME.origin]`: which browser origins may open sockets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Origin {
    /// Exact origins (`https://chat.example.com`) or subdomain patterns (`https://*.example.com`).
    #[serde(default)]
    pub(crate) allow: Vec<String>,
    /// Admit requests without an `Origin` header (non-browser clients).
    #[serde(default)]
    pub(crate) allow_missing: bool,
    /// Admit `Origin: null` (sandboxed frames, `file://` pages).
    #[serde(default)]
    pub(crate) allow_null: bool,
}

/// A JWT algorithm name as written in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Alg {
    pub(crate) fn is_hmac(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }
}

/// One verification key, pinned to one algorithm.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Key {
    /// Matched against the token header's `kid`; a key without one serves tokens without `kid`.
    pub(crate) kid: Option<String>,
    pub(crate) alg: Alg,
    /// Public key PEM (RSA, EC, Ed25519) for the asymmetric algorithms.
    pub(crate) pem_file: Option<PathBuf>,
    /// HMAC secret in a file (trailing newline ignored)...
    pub(crate) secret_file: Option<PathBuf>,
    /// ...or in an environment variable. Never inline.
    pub(crate) secret_env: Option<String>,
}

/// `[policies.NAME.jwt]`: token verification.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Jwt {
    /// Where to look, in order. Default: header, subprotocol, query, cookie.
    pub(crate) sources: Option<Vec<TokenSource>>,
    pub(crate) query_param: Option<String>,
    pub(crate) cookie: Option<String>,
    pub(crate) max_token_bytes: Option<usize>,
    #[serde(default)]
    pub(crate) keys: Vec<Key>,
    /// A JWKS document on disk.
    pub(crate) jwks_file: Option<PathBuf>,
    /// A JWKS document fetched in the background (`http://` or `https://`).
    pub(crate) jwks_url: Option<HttpUrl>,
    /// CA bundle for an `https://` JWKS URL (default: the system roots).
    pub(crate) jwks_ca_file: Option<PathBuf>,
    pub(crate) jwks_refresh: Option<HumanDuration>,
    pub(crate) jwks_min_refresh: Option<HumanDuration>,
    /// Algorithms accepted for JWKS keys that do not name their own `alg`.
    pub(crate) algorithms: Option<Vec<Alg>>,
    /// Allowed issuers and audiences (the token must match one of each list, when set).
    pub(crate) issuers: Option<Vec<String>>,
    pub(crate) audiences: Option<Vec<String>>,
    /// `exp` must be present (default true).
    pub(crate) require_exp: Option<bool>,
    pub(crate) leeway: Option<HumanDuration>,
    /// Claims that must be present, whatever their value.
    #[serde(default)]
    pub(crate) required_claims: Vec<String>,
    /// Claims that must hold values: a string claim must equal the value or (space-separated,
    /// like OAuth `scope`) contain it; an array claim must contain every listed value.
    #[serde(default)]
    pub(crate) claims: std::collections::BTreeMap<String, ClaimRule>,
    #[serde(default)]
    pub(crate) on_expiry: OnExpiry,
    /// Extra time an open socket keeps after its token's `exp`.
    pub(crate) expiry_grace: Option<HumanDuration>,
}

/// A rate with a burst: `{ per_second = 5, burst = 10 }` or `{ per_minute = 60 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rate {
    pub(crate) per_second: Option<u32>,
    pub(crate) per_minute: Option<u32>,
    /// Requests allowed at once before the rate applies (default: one second's or minute's worth).
    pub(crate) burst: Option<u32>,
}

/// `[policies.NAME.limits]`: rates and caps.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyLimits {
    /// Handshakes per client IP (429 + Retry-After).
    pub(crate) handshakes_per_ip: Option<Rate>,
    /// Handshakes per subject: the token's `sub`, or the client certificate's identity
    /// (429 + Retry-After).
    pub(crate) handshakes_per_subject: Option<Rate>,
    /// Open sockets per client IP / per subject (429), per route (429) under this policy.
    pub(crate) connections_per_ip: Option<usize>,
    pub(crate) connections_per_subject: Option<usize>,
    pub(crate) connections_per_route: Option<usize>,
    /// Per connection, from the client: data messages and payload bytes per second (close 1008).
    pub(crate) messages_per_second: Option<u32>,
    pub(crate) bytes_per_second: Option<u32>,
}

impl Policy {
    /// No rules at all (besides a possible `include`).
    pub(crate) fn is_empty(&self) -> bool {
        let l = &self.limits;
        self.origin.is_none()
            && self.jwt.is_none()
            && self.cluster.is_none()
            && self.client_cert.is_none()
            && self.ext_authz.is_none()
            && self.introspection.is_none()
            && l.handshakes_per_ip.is_none()
            && l.handshakes_per_subject.is_none()
            && l.connections_per_ip.is_none()
            && l.connections_per_subject.is_none()
            && l.connections_per_route.is_none()
            && l.messages_per_second.is_none()
            && l.bytes_per_second.is_none()
    }

    /// Resolve relative paths against `base` (the config file's folder).
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        super::identity::resolve_paths(self.ext_authz.as_mut(), self.introspection.as_mut(), base);
        if let Some(jwt) = &mut self.jwt {
            for k in &mut jwt.keys {
                for p in [&mut k.pem_file, &mut k.secret_file].into_iter().flatten() {
                    *p = base.join(&*p);
                }
            }
            for p in [&mut jwt.jwks_file, &mut jwt.jwks_ca_file]
                .into_iter()
                .flatten()
            {
                *p = base.join(&*p);
            }
        }
    }
}

/// `[policies.NAME.cluster]`: a policy's own choice for when Redis fails.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyCluster {
    pub(crate) on_error: Option<crate::core::on_error::OnError>,
}
