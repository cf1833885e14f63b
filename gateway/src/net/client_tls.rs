//! The gateway as a TLS client (`wss://` upstreams, `https://` identity providers): one builder
//! for rustls client settings, trusting a CA file or the system roots, optionally presenting a
//! client certificate.
//!
//! The one TLS client that does not come from here is the cluster store's `rediss://`
//! connection (`cluster`). redis-rs (1.8) builds a rustls `ClientConfig` of its own for every
//! connection it opens (`create_rustls_config`, a crate-private function) from PEM bytes
//! (`redis::TlsCertificates`), and offers no way to pass a prebuilt one: the parameters it keeps
//! (`TlsConnParams`) have crate-private fields. Its settings match this builder's where it
//! matters: rustls's process-wide provider, which is ring (the only one compiled in), its
//! default protocol versions (TLS 1.2 and 1.3), and `[cluster] ca_file` or else the system
//! roots as the trust anchors. It differs in reading the system roots on every connect, even
//! with a CA file, and in failing the connect if any system certificate cannot be loaded. The
//! way to bring it here would be to hand redis-rs finished TLS streams
//! (`MultiplexedConnection::new_with_config`, `aio::PubSub::new`), which means dialling,
//! reconnecting and driving those connections in `cluster` ourselves: more code to own than the
//! difference is worth today.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// Why client TLS settings could not be built; the caller names the key.
#[derive(Debug)]
pub(crate) enum ClientTlsError {
    /// The CA file (the trust roots) is unreadable or holds no usable certificate.
    Roots(String),
    /// The client certificate chain is unreadable or empty.
    Cert(String),
    /// The client key is unreadable.
    Key(String),
    /// The client certificate and key do not belong together.
    Mismatch(String),
    /// rustls refused the protocol settings.
    Settings(String),
}

impl std::fmt::Display for ClientTlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientTlsError::Roots(e)
            | ClientTlsError::Cert(e)
            | ClientTlsError::Key(e)
            | ClientTlsError::Mismatch(e)
            | ClientTlsError::Settings(e) => f.write_str(e),
        }
    }
}

/// A client certificate chain and its key, PEM files.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Identity<'a> {
    pub(crate) cert: &'a Path,
    pub(crate) key: &'a Path,
}

/// rustls client settings: trust `ca_file` (or the system roots), present `identity` if given,
/// and offer `alpn` (e.g. `http/1.1` for WebSocket upstreams).
pub(crate) fn client_config(
    ca_file: Option<&Path>,
    identity: Option<Identity<'_>>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, ClientTlsError> {
    let roots = trust_roots(ca_file).map_err(ClientTlsError::Roots)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientTlsError::Settings(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(Identity { cert, key }) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| ClientTlsError::Cert(format!("cannot read {}: {e}", cert.display())))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ClientTlsError::Cert(format!("bad PEM in {}: {e}", cert.display())))?;
            if chain.is_empty() {
                return Err(ClientTlsError::Cert(format!(
                    "no certificate found in {}",
                    cert.display()
                )));
            }
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                ClientTlsError::Key(format!(
                    "cannot read a private key from {}: {e}",
                    key.display()
                ))
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                ClientTlsError::Mismatch(format!("certificate and key do not match: {e}"))
            })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Whether the system has CA certificates (a warning is due when a client relies on none).
pub(crate) fn have_system_roots() -> bool {
    !system_roots().is_empty()
}

/// The certificates a TLS client of the gateway trusts (wss:// upstreams, https:// JWKS): the
/// CA certificates in `ca_file`, or else the system's (loaded once; empty when there are none).
fn trust_roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let Some(path) = ca_file else {
        for cert in system_roots() {
            let _ = roots.add(cert.clone());
        }
        return Ok(roots);
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM in {}: {e}", path.display()))?;
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("unusable certificate in {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("no certificate found in {}", path.display()));
    }
    Ok(roots)
}

/// The system's CA certificates, loaded once.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| match rustls_native_certs::load_native_certs() {
        Ok(certs) => certs,
        Err(e) => {
            log::warn!("cannot load the system CA certificates: {e}");
            Vec::new()
        }
    })
}
