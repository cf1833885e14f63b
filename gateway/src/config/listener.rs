//! `[[listeners]]`: where the gateway accepts connections, and its certificates.

use std::path::PathBuf;

use serde::Deserialize;

use crate::core::addr::Addr;
use crate::core::name::NamePattern;

/// `[[listeners]]`: one address the gateway accepts connections on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Listener {
    pub(crate) address: Addr,
    /// Absent: plain `ws://` (local development only).
    pub(crate) tls: Option<Tls>,
}

/// `[listeners.tls]`: certificate chain and key, PEM files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tls {
    /// The default certificate chain and key: served when no `sni` entry matches.
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    /// Generate a self-signed development pair into `cert`/`key` when they do not exist.
    #[serde(default)]
    pub(crate) generate_self_signed: bool,
    /// More certificates on the same listener, chosen by the client's SNI name.
    #[serde(default)]
    pub(crate) sni: Vec<SniCert>,
    /// CA certificates (PEM) that issue client certificates: the listener asks for one.
    pub(crate) client_ca: Option<PathBuf>,
    /// With `client_ca`: whether a client must present a certificate (default `required`).
    pub(crate) client_auth: Option<ClientAuth>,
    /// Certificate revocation lists (PEM) checked for client certificates.
    #[serde(default)]
    pub(crate) client_crls: Vec<PathBuf>,
    /// Offer HTTP/2 by ALPN (`h2`, then `http/1.1`): WebSockets over HTTP/2 (RFC 8441) and
    /// static routes; HTTP/1.1 clients are served as before.
    #[serde(default = "http2_default")]
    pub(crate) http2: bool,
}

fn http2_default() -> bool {
    super::defaults::LISTENER_HTTP2
}

/// `client_auth`: what a listener with a `client_ca` does without a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ClientAuth {
    /// No certificate, or one that does not verify: the TLS handshake fails.
    #[default]
    Required,
    /// No certificate is fine (a policy may still require one: 403); a presented certificate
    /// must verify.
    Optional,
}

/// `[[listeners.tls.sni]]`: a certificate for some server names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SniCert {
    /// Exact names (`chat.example.com`) or one-level wildcards (`*.example.com`).
    pub(crate) names: Vec<NamePattern>,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}
