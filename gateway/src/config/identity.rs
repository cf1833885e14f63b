//! Identity beyond a locally verified JWT: `[policies.NAME.client_cert]` (the TLS client
//! certificate), `[policies.NAME.ext_authz]` (an external authorization service) and
//! `[policies.NAME.introspection]` (OAuth 2.0 token introspection, RFC 7662), with their checks.
//! The listener side of client certificates (`client_ca`, `client_auth`) is in `listener`; the
//! checks of these tables are in `validate_identity`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::secret::Secret;
use super::token::{ClaimRule, OnExpiry, TokenSource};
use crate::core::duration::HumanDuration;
use crate::core::glob::Glob;
use crate::core::url::HttpUrl;

/// Which part of a verified client certificate is the client's subject (for per-subject limits
/// and the access log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CertSubject {
    /// The subject's common name (`CN`).
    Cn,
    /// The whole subject, RFC 4514 text (`CN=svc-a,O=Example`).
    Dn,
    /// The first subject alternative name.
    San,
    /// The certificate's SHA-256 fingerprint (hex).
    Fingerprint,
}

/// Upstream request headers that carry the verified certificate (relay routes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertHeaders {
    /// The subject, RFC 4514 text.
    pub(crate) subject: Option<String>,
    /// The subject alternative names, comma-separated.
    pub(crate) sans: Option<String>,
    /// The SHA-256 fingerprint of the certificate (lower-case hex).
    pub(crate) fingerprint: Option<String>,
}

impl CertHeaders {
    /// The configured headers, by key.
    pub(crate) fn names(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("subject", &self.subject),
            ("sans", &self.sans),
            ("fingerprint", &self.fingerprint),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
    }
}

/// `[policies.NAME.client_cert]`: what a policy asks of the client certificate that the
/// listener verified (`[listeners.tls] client_ca`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientCert {
    /// Refuse (403) a client without a verified certificate.
    #[serde(default)]
    pub(crate) require: bool,
    /// Subjects (RFC 4514 text, `*` for one value) admitted. With `allow_sans`: either admits.
    #[serde(default)]
    pub(crate) allow_subjects: Vec<Glob>,
    /// Subject alternative names (DNS names, URIs, e-mail addresses, IP addresses) admitted.
    #[serde(default)]
    pub(crate) allow_sans: Vec<Glob>,
    /// The certificate's identity becomes the client's subject.
    pub(crate) subject_from: Option<CertSubject>,
    /// Forward the identity to upstreams in these headers.
    #[serde(default)]
    pub(crate) forward_headers: CertHeaders,
}

/// What an authorizer that cannot be asked means (`deny`, the default, or `allow`).
pub(crate) use crate::core::on_error::AuthzOnError as OnError;

/// `[policies.NAME.ext_authz]`: ask an authorization service about each handshake (the contract
/// of Envoy's `ext_authz` HTTP service, Traefik's ForwardAuth and NGINX's `auth_request`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExtAuthz {
    pub(crate) url: HttpUrl,
    /// Connect to last byte of the answer (default 200 ms).
    pub(crate) timeout: Option<HumanDuration>,
    /// Client request headers sent along (besides the method, path, address and credentials,
    /// which always go).
    #[serde(default)]
    pub(crate) send_headers: Vec<String>,
    /// Headers of the authorizer's 2xx answer added to the upstream request (client copies are
    /// stripped).
    #[serde(default)]
    pub(crate) copy_headers: Vec<String>,
    #[serde(default)]
    pub(crate) on_error: OnError,
    /// Keep decisions this long, keyed by a hash of the credentials and route; off by default.
    pub(crate) cache_ttl: Option<HumanDuration>,
    /// For an `https://` authorizer: trust this CA instead of the system roots.
    pub(crate) ca_file: Option<PathBuf>,
}

/// `[policies.NAME.introspection]`: opaque OAuth tokens checked at the authorization server's
/// introspection endpoint (RFC 7662); the answer's claims are checked as a JWT's would be.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Introspection {
    pub(crate) url: HttpUrl,
    /// The gateway's client credentials at the endpoint (HTTP Basic, RFC 6749 section 2.3.1).
    pub(crate) client_id: String,
    pub(crate) client_secret_file: Option<PathBuf>,
    pub(crate) client_secret_env: Option<String>,
    pub(crate) ca_file: Option<PathBuf>,
    /// Connect to last byte of the answer (default 1 s).
    pub(crate) timeout: Option<HumanDuration>,
    /// Keep an active answer this long, never past the token's `exp`; off by default.
    pub(crate) cache_ttl: Option<HumanDuration>,
    /// Where the token is, as for `jwt`.
    pub(crate) sources: Option<Vec<TokenSource>>,
    pub(crate) query_param: Option<String>,
    pub(crate) cookie: Option<String>,
    pub(crate) max_token_bytes: Option<usize>,
    /// As for `jwt`: the answer's `iss` and `aud`, `exp`/`nbf` leeway, required claims.
    pub(crate) issuers: Option<Vec<String>>,
    pub(crate) audiences: Option<Vec<String>>,
    pub(crate) leeway: Option<HumanDuration>,
    #[serde(default)]
    pub(crate) required_claims: Vec<String>,
    #[serde(default)]
    pub(crate) claims: BTreeMap<String, ClaimRule>,
    #[serde(default)]
    pub(crate) on_expiry: OnExpiry,
    pub(crate) expiry_grace: Option<HumanDuration>,
}

impl Introspection {
    /// Where the client secret comes from (errors name the key within the table).
    pub(crate) fn secret(&self) -> Secret<'_> {
        Secret {
            file: self.client_secret_file.as_deref(),
            env: self.client_secret_env.as_deref(),
            file_key: "client_secret_file",
            env_key: "client_secret_env",
        }
    }
}

/// Resolve the relative paths of these tables against `base`.
pub(crate) fn resolve_paths(
    ext: Option<&mut ExtAuthz>,
    intro: Option<&mut Introspection>,
    base: &Path,
) {
    if let Some(e) = ext {
        if let Some(p) = &mut e.ca_file {
            *p = base.join(&*p);
        }
    }
    if let Some(i) = intro {
        for p in [&mut i.ca_file, &mut i.client_secret_file]
            .into_iter()
            .flatten()
        {
            *p = base.join(&*p);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn check(policy: &str) -> Result<(), String> {
        let text = format!("[[listeners]]\naddress = \"127.0.0.1:1\"\n{policy}");
        Config::parse(&text, "f", None)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn tables_parse_and_bad_keys_are_named() {
        check(
            "[policies.a.client_cert]\nrequire = true\nallow_sans = [\"*.svc.example.com\"]\n\
             subject_from = \"cn\"\nforward_headers = { subject = \"X-Client-Subject\" }\n\
             [policies.a.ext_authz]\nurl = \"http://127.0.0.1:9/check\"\ntimeout = \"100ms\"\n\
             send_headers = [\"x-request-id\"]\ncopy_headers = [\"x-user\"]\non_error = \"allow\"\n\
             cache_ttl = \"30s\"\n\
             [policies.b.introspection]\nurl = \"http://[::1]:9/introspect\"\nclient_id = \"gw\"\n\
             client_secret_env = \"GW_SECRET\"\n[policies.b.introspection.claims]\nscope = \"chat\"\n\
             [policies.b.limits]\nconnections_per_subject = 2\n",
        )
        .unwrap();
        let cases = [
            (
                "[policies.a.client_cert]\nforward_headers = { subject = \"Host\" }",
                "policies.a.client_cert.forward_headers.subject",
            ),
            (
                "[policies.a.client_cert]\nallow_sans = [\"\"]",
                "policies.a.client_cert.allow_sans",
            ),
            (
                "[policies.a.ext_authz]\nurl = \"http://x/\"\ntimeout = \"0s\"",
                "policies.a.ext_authz.timeout",
            ),
            (
                "[policies.a.ext_authz]\nurl = \"http://x/\"\nsend_headers = [\"Authorization\"]",
                "policies.a.ext_authz.send_headers[0]",
            ),
            (
                "[policies.a.ext_authz]\nurl = \"http://x/\"\ncopy_headers = [\"x-forwarded-for\"]",
                "policies.a.ext_authz.copy_headers[0]",
            ),
            (
                "[policies.a.ext_authz]\nurl = \"http://x/\"\nca_file = \"/etc/hostname\"",
                "policies.a.ext_authz.ca_file",
            ),
            (
                "[policies.a.ext_authz]\nurl = \"ftp://x/\"",
                "policies.a.ext_authz.url",
            ),
            (
                "[policies.a.ext_authz]\nurl = \"http://x/\"\non_error = \"maybe\"",
                "on_error",
            ),
            (
                "[policies.a.introspection]\nurl = \"http://x/\"\nclient_id = \"gw\"",
                "policies.a.introspection",
            ),
            (
                "[policies.a.introspection]\nurl = \"http://x/\"\nclient_id = \"gw\"\n\
                 client_secret_env = \"A\"\nclient_secret_file = \"b\"",
                "policies.a.introspection.client_secret_file",
            ),
            (
                "[policies.a.introspection]\nurl = \"http://x/\"\nclient_id = \"gw\"\n\
                 client_secret_env = \"A\"\n[policies.a.jwt]\njwks_url = \"http://x/\"",
                "policies.a",
            ),
            (
                "[policies.a.client_cert]\nrequire = true\n[policies.a.limits]\n\
                 connections_per_subject = 1",
                "policies.a.limits",
            ),
        ];
        for (policy, key) in cases {
            let e = check(policy).unwrap_err();
            assert!(e.contains(key), "error {e:?} should name {key}");
        }
    }
}
