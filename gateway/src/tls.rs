//! Server certificates: loading PEM files, generating a development pair, and the rustls
//! certificate resolver handed to pingora's listener.
//!
//! pingora's rustls listener panics on unreadable certificate files and on a key that does not
//! match its certificate. We load and check both ourselves, report a clear error, and give
//! pingora a resolver holding the already-parsed key. The resolver is also the seam for
//! certificate reload and SNI later.

use std::fmt;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::Tls;

/// Names the development certificate covers.
const DEV_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Make sure the certificate pair of a listener exists: generate a self-signed development pair
/// when asked to and the files are missing. Returns `true` when it generated one.
pub fn ensure_dev_pair(tls: &Tls) -> Result<bool, String> {
    if !tls.generate_self_signed || (tls.cert.exists() && tls.key.exists()) {
        return Ok(false);
    }
    let pair = rcgen::generate_simple_self_signed(
        DEV_NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    )
    .map_err(|e| format!("cannot generate a development certificate: {e}"))?;
    for path in [&tls.cert, &tls.key] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }
    write_private(&tls.key, pair.signing_key.serialize_pem().as_bytes())?;
    fs::write(&tls.cert, pair.cert.pem())
        .map_err(|e| format!("cannot write {}: {e}", tls.cert.display()))?;
    Ok(true)
}

/// Write a private key readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Load a certificate chain and its key, checking that they belong together.
pub fn load_certified_key(tls: &Tls) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", tls.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM in certificate {}: {e}", tls.cert.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate found in {}", tls.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", tls.key.display()))?;
    let certified = CertifiedKey::from_der(chain, key, &default_provider()).map_err(|e| {
        format!(
            "certificate {} and key {} do not form a usable pair: {e}",
            tls.cert.display(),
            tls.key.display()
        )
    })?;
    Ok(Arc::new(certified))
}

/// Serves one certificate to every client.
pub struct StaticCert(pub Arc<CertifiedKey>);

impl fmt::Debug for StaticCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticCert")
    }
}

impl ResolvesServerCert for StaticCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_then_loads_a_dev_pair() {
        let dir = tempfile::tempdir().unwrap();
        let tls = Tls {
            cert: dir.path().join("dev/cert.pem"),
            key: dir.path().join("dev/key.pem"),
            generate_self_signed: true,
        };
        assert!(ensure_dev_pair(&tls).unwrap());
        assert!(!ensure_dev_pair(&tls).unwrap(), "an existing pair is kept");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&tls.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
        load_certified_key(&tls).unwrap();
    }

    #[test]
    fn mismatched_or_garbage_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tls {
            cert: dir.path().join("a/cert.pem"),
            key: dir.path().join("a/key.pem"),
            generate_self_signed: true,
        };
        let b = Tls {
            cert: dir.path().join("b/cert.pem"),
            key: dir.path().join("b/key.pem"),
            generate_self_signed: true,
        };
        ensure_dev_pair(&a).unwrap();
        ensure_dev_pair(&b).unwrap();
        let mixed = Tls {
            cert: a.cert.clone(),
            key: b.key.clone(),
            generate_self_signed: false,
        };
        let e = load_certified_key(&mixed).unwrap_err();
        assert!(e.contains("do not form a usable pair"), "{e}");
        fs::write(&a.cert, "not a certificate").unwrap();
        let e = load_certified_key(&a).unwrap_err();
        assert!(e.contains("no certificate found"), "{e}");
    }
}
