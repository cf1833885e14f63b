//! `[policies.NAME]`: the admission rules a route refers to. The schema and its validation live
//! here; `admission` compiles a validated policy into the state that checks requests.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::HumanDuration;

/// Defaults of policy keys, in one place.
pub mod defaults {
    use std::time::Duration;

    pub const QUERY_PARAM: &str = "access_token";
    pub const COOKIE: &str = "access_token";
    /// The `Sec-WebSocket-Protocol` entry prefix that carries a token from browsers.
    pub const SUBPROTOCOL_PREFIX: &str = "bearer.";
    /// Tokens longer than this are refused before any decoding.
    pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
    /// Allowed clock skew for `exp`/`nbf`/`iat`.
    pub const LEEWAY: Duration = Duration::from_secs(30);
    pub const JWKS_REFRESH: Duration = Duration::from_secs(600);
    /// Least time between two JWKS fetches caused by tokens with an unknown `kid`.
    pub const JWKS_MIN_REFRESH: Duration = Duration::from_secs(30);
    pub const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
}

/// A policy. Empty means public: anyone who passes the upgrade check is admitted.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Read the policy's keys from this TOML file instead (relative to the config file).
    pub include: Option<PathBuf>,
    pub origin: Option<Origin>,
    pub jwt: Option<Jwt>,
    #[serde(default)]
    pub limits: PolicyLimits,
}

/// `[policies.NAME.origin]`: which browser origins may open sockets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// Exact origins (`https://chat.example.com`) or subdomain patterns (`https://*.example.com`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Admit requests without an `Origin` header (non-browser clients).
    #[serde(default)]
    pub allow_missing: bool,
    /// Admit `Origin: null` (sandboxed frames, `file://` pages).
    #[serde(default)]
    pub allow_null: bool,
}

/// Where a token may be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Header,
    /// A `Sec-WebSocket-Protocol` entry `bearer.<token>` (browsers cannot set headers).
    Subprotocol,
    /// A query parameter (default `access_token`).
    Query,
    /// A cookie (default `access_token`).
    Cookie,
}

/// A JWT algorithm name as written in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Alg {
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
    pub fn is_hmac(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }
}

/// One verification key, pinned to one algorithm.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Key {
    /// Matched against the token header's `kid`; a key without one serves tokens without `kid`.
    pub kid: Option<String>,
    pub alg: Alg,
    /// Public key PEM (RSA, EC, Ed25519) for the asymmetric algorithms.
    pub pem_file: Option<PathBuf>,
    /// HMAC secret in a file (trailing newline ignored)...
    pub secret_file: Option<PathBuf>,
    /// ...or in an environment variable. Never inline.
    pub secret_env: Option<String>,
}

/// What to do when the token of an open socket expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExpiry {
    /// Close with 1008 `token expired` (after `expiry_grace`).
    #[default]
    Close,
    /// Let the socket live on.
    Ignore,
}

/// `[policies.NAME.jwt]`: token verification.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    /// Where to look, in order. Default: header, subprotocol, query, cookie.
    pub sources: Option<Vec<TokenSource>>,
    pub query_param: Option<String>,
    pub cookie: Option<String>,
    pub max_token_bytes: Option<usize>,
    #[serde(default)]
    pub keys: Vec<Key>,
    /// A JWKS document on disk.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS document fetched in the background (`http://` or `https://`).
    pub jwks_url: Option<String>,
    /// CA bundle for an `https://` JWKS URL (default: the system roots).
    pub jwks_ca_file: Option<PathBuf>,
    pub jwks_refresh: Option<HumanDuration>,
    pub jwks_min_refresh: Option<HumanDuration>,
    /// Algorithms accepted for JWKS keys that do not name their own `alg`.
    pub algorithms: Option<Vec<Alg>>,
    /// Allowed issuers and audiences (the token must match one of each list, when set).
    pub issuers: Option<Vec<String>>,
    pub audiences: Option<Vec<String>>,
    /// `exp` must be present (default true).
    pub require_exp: Option<bool>,
    pub leeway: Option<HumanDuration>,
    /// Claims that must be present, whatever their value.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Claims that must hold values: a string claim must equal the value or (space-separated,
    /// like OAuth `scope`) contain it; an array claim must contain every listed value.
    #[serde(default)]
    pub claims: std::collections::BTreeMap<String, ClaimRule>,
    #[serde(default)]
    pub on_expiry: OnExpiry,
    /// Extra time an open socket keeps after its token's `exp`.
    pub expiry_grace: Option<HumanDuration>,
}

/// A required claim value: one, or all of several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ClaimRule {
    One(String),
    All(Vec<String>),
}

impl ClaimRule {
    pub fn values(&self) -> Vec<&str> {
        match self {
            ClaimRule::One(v) => vec![v.as_str()],
            ClaimRule::All(vs) => vs.iter().map(String::as_str).collect(),
        }
    }
}

/// A rate with a burst: `{ per_second = 5, burst = 10 }` or `{ per_minute = 60 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: Option<u32>,
    pub per_minute: Option<u32>,
    /// Requests allowed at once before the rate applies (default: one second's or minute's worth).
    pub burst: Option<u32>,
}

/// `[policies.NAME.limits]`: rates and caps.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyLimits {
    /// Handshakes per client IP (429 + Retry-After).
    pub handshakes_per_ip: Option<Rate>,
    /// Handshakes per token subject (429 + Retry-After).
    pub handshakes_per_subject: Option<Rate>,
    /// Open sockets per client IP / per subject (429), per route (429) under this policy.
    pub connections_per_ip: Option<usize>,
    pub connections_per_subject: Option<usize>,
    pub connections_per_route: Option<usize>,
    /// Per connection, from the client: data messages and payload bytes per second (close 1008).
    pub messages_per_second: Option<u32>,
    pub bytes_per_second: Option<u32>,
}

impl Policy {
    /// No rules at all (besides a possible `include`).
    pub fn is_empty(&self) -> bool {
        let l = &self.limits;
        self.origin.is_none()
            && self.jwt.is_none()
            && l.handshakes_per_ip.is_none()
            && l.handshakes_per_subject.is_none()
            && l.connections_per_ip.is_none()
            && l.connections_per_subject.is_none()
            && l.connections_per_route.is_none()
            && l.messages_per_second.is_none()
            && l.bytes_per_second.is_none()
    }

    /// Validate; `key` is this policy's key path (e.g. `policies.chat`) for error messages.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if let Some(origin) = &self.origin {
            for (i, o) in origin.allow.iter().enumerate() {
                validate_origin_pattern(o).map_err(|e| format!("{key}.origin.allow[{i}]: {e}"))?;
            }
        }
        if let Some(jwt) = &self.jwt {
            jwt.validate(&format!("{key}.jwt"))?;
        }
        let l = &self.limits;
        for (name, rate) in [
            ("handshakes_per_ip", l.handshakes_per_ip),
            ("handshakes_per_subject", l.handshakes_per_subject),
        ] {
            if let Some(r) = rate {
                r.validate()
                    .map_err(|e| format!("{key}.limits.{name}: {e}"))?;
            }
        }
        for (name, v) in [
            ("connections_per_ip", l.connections_per_ip),
            ("connections_per_subject", l.connections_per_subject),
            ("connections_per_route", l.connections_per_route),
            (
                "messages_per_second",
                l.messages_per_second.map(|v| v as usize),
            ),
            ("bytes_per_second", l.bytes_per_second.map(|v| v as usize)),
        ] {
            if v == Some(0) {
                return Err(format!("{key}.limits.{name} must be at least 1"));
            }
        }
        let per_subject = l.handshakes_per_subject.is_some() || l.connections_per_subject.is_some();
        if per_subject && self.jwt.is_none() {
            return Err(format!(
                "{key}.limits: per-subject limits need a [{key}.jwt] table (a subject comes from a token)"
            ));
        }
        Ok(())
    }

    /// Resolve relative paths against `base` (the config file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
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

impl Rate {
    pub fn validate(&self) -> Result<(), String> {
        match (self.per_second, self.per_minute) {
            (Some(0), _) | (_, Some(0)) => Err("the rate must be at least 1".into()),
            (Some(_), Some(_)) => Err("set per_second or per_minute, not both".into()),
            (None, None) => Err("set per_second or per_minute".into()),
            _ if self.burst == Some(0) => Err("burst must be at least 1".into()),
            _ => Ok(()),
        }
    }
}

impl Jwt {
    fn validate(&self, key: &str) -> Result<(), String> {
        if self.keys.is_empty() && self.jwks_file.is_none() && self.jwks_url.is_none() {
            return Err(format!(
                "{key}: no verification keys (set keys, jwks_file or jwks_url)"
            ));
        }
        if let Some(sources) = &self.sources {
            if sources.is_empty() {
                return Err(format!("{key}.sources must name at least one source"));
            }
        }
        if self.max_token_bytes == Some(0) {
            return Err(format!("{key}.max_token_bytes must be at least 1"));
        }
        if let Some(url) = &self.jwks_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "{key}.jwks_url must start with http:// or https://"
                ));
            }
        }
        for (i, k) in self.keys.iter().enumerate() {
            let kkey = format!("{key}.keys[{i}]");
            let secrets = k.secret_file.is_some() as u8 + k.secret_env.is_some() as u8;
            if k.alg.is_hmac() {
                if k.pem_file.is_some() {
                    return Err(format!(
                        "{kkey}: {:?} takes secret_file or secret_env, not pem_file",
                        k.alg
                    ));
                }
                if secrets != 1 {
                    return Err(format!(
                        "{kkey}: {:?} needs exactly one of secret_file, secret_env",
                        k.alg
                    ));
                }
            } else {
                if secrets != 0 {
                    return Err(format!(
                        "{kkey}: {:?} is verified with a public key (pem_file); a secret would allow \
                         algorithm confusion",
                        k.alg
                    ));
                }
                if k.pem_file.is_none() {
                    return Err(format!("{kkey}: {:?} needs pem_file", k.alg));
                }
            }
        }
        Ok(())
    }
}

/// An origin pattern is `scheme://host[:port]`, where the host may start with `*.`.
pub fn validate_origin_pattern(o: &str) -> Result<(), String> {
    let (scheme, rest) = o.split_once("://").ok_or_else(|| {
        format!("{o:?} is not an origin (expected e.g. \"https://app.example.com\")")
    })?;
    if !matches!(scheme, "http" | "https") {
        return Err(format!("{o:?}: scheme must be http or https"));
    }
    if rest.is_empty() || rest.contains('/') {
        return Err(format!("{o:?}: an origin has no path (no trailing '/')"));
    }
    let wildcard_ok = match rest.strip_prefix("*.") {
        Some(domain) => !domain.contains('*') && !domain.is_empty(),
        None => !rest.contains('*'),
    };
    if !wildcard_ok {
        return Err(format!(
            "{o:?}: '*' is only allowed as the first label (\"https://*.example.com\")"
        ));
    }
    Ok(())
}
