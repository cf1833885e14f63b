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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
