//! Server certificates: loading PEM files, generating a development pair, and the rustls
//! certificate resolver handed to pingora's listener.
//!
//! pingora's rustls listener panics on unreadable certificate files and on a key that does not
//! match its certificate. We load and check both ourselves, report a clear error, and give
//! pingora a resolver ([`CertStore`]) holding the already-parsed keys: it picks a certificate by
//! SNI and can reload them from disk while the listener runs.

use std::fmt;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::SystemTime;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

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
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM in certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate found in {}", cert.display()));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
    let certified = CertifiedKey::from_der(chain, private, &default_provider()).map_err(|e| {
        format!(
            "certificate {} and key {} do not form a usable pair: {e}",
            cert.display(),
            key.display()
        )
    })?;
    Ok(Arc::new(certified))
}

/// The certificates a TLS client of the gateway trusts (wss:// upstreams, https:// JWKS): the
/// CA certificates in `ca_file`, or else the system's (loaded once; empty when there are none).
pub fn trust_roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
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

/// A server-name pattern: exact (`chat.example.com`) or a one-level wildcard (`*.example.com`,
/// which matches `a.example.com` but neither `example.com` nor `a.b.example.com`, as browsers do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamePattern {
    Exact(String),
    Wildcard(String),
}

impl NamePattern {
    pub fn parse(name: &str) -> Result<NamePattern, String> {
        let lower = name.trim().to_ascii_lowercase();
        let valid = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|label| {
                    !label.is_empty()
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        };
        match lower.strip_prefix("*.") {
            Some(domain) if valid(domain) => Ok(NamePattern::Wildcard(domain.to_string())),
            None if valid(&lower) => Ok(NamePattern::Exact(lower)),
            _ => Err(format!(
                "{name:?} is not a server name (e.g. \"chat.example.com\" or \"*.example.com\")"
            )),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Exact(n) => n == name,
            NamePattern::Wildcard(domain) => name
                .strip_suffix(domain.as_str())
                .and_then(|sub| sub.strip_suffix('.'))
                .is_some_and(|sub| !sub.is_empty() && !sub.contains('.')),
        }
    }
}

/// The certificates of one listener as loaded from disk.
struct Loaded {
    default: Arc<CertifiedKey>,
    by_name: Vec<(NamePattern, Arc<CertifiedKey>)>,
}

/// The certificates of one listener: chosen by SNI, reloadable without a restart.
///
/// pingora's rustls listener takes one certificate and has no handshake hooks, but it accepts a
/// rustls certificate resolver; this is that resolver. Reloading swaps what it serves: handshakes
/// after the swap get the new certificate, and open connections are not touched.
pub struct CertStore {
    tls: Tls,
    loaded: RwLock<Arc<Loaded>>,
    /// Modification times of the files, to reload only when they change.
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertStore({})", self.tls.cert.display())
    }
}

impl CertStore {
    pub fn load(tls: &Tls) -> Result<Arc<CertStore>, String> {
        let store = CertStore {
            loaded: RwLock::new(Arc::new(load_all(tls)?)),
            stamps: Mutex::new(stamps(tls)),
            tls: tls.clone(),
        };
        Ok(Arc::new(store))
    }

    /// Reload every file; on any error the certificates in use stay.
    pub fn reload(&self) -> Result<(), String> {
        let stamps_now = stamps(&self.tls);
        let loaded = load_all(&self.tls)?;
        *self.loaded.write().expect("cert lock") = Arc::new(loaded);
        *self.stamps.lock().expect("cert lock") = stamps_now;
        Ok(())
    }

    /// Reload when a file's modification time changed; `Ok(true)` when it reloaded.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        if *self.stamps.lock().expect("cert lock") == stamps(&self.tls) {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    pub fn describe(&self) -> String {
        self.tls.cert.display().to_string()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let loaded = self.loaded.read().expect("cert lock").clone();
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            // Exact names win over wildcards.
            let exact = loaded
                .by_name
                .iter()
                .find(|(p, _)| matches!(p, NamePattern::Exact(_)) && p.matches(&name));
            let any = || loaded.by_name.iter().find(|(p, _)| p.matches(&name));
            if let Some((_, key)) = exact.or_else(any) {
                return Some(key.clone());
            }
        }
        Some(loaded.default.clone())
    }
}

fn load_all(tls: &Tls) -> Result<Loaded, String> {
    let default = load_certified_key(&tls.cert, &tls.key)?;
    let mut by_name = Vec::new();
    for sni in &tls.sni {
        let key = load_certified_key(&sni.cert, &sni.key)?;
        for name in &sni.names {
            by_name.push((NamePattern::parse(name)?, key.clone()));
        }
    }
    Ok(Loaded { default, by_name })
}

fn stamps(tls: &Tls) -> Vec<Option<SystemTime>> {
    std::iter::once((&tls.cert, &tls.key))
        .chain(tls.sni.iter().map(|s| (&s.cert, &s.key)))
        .flat_map(|(c, k)| [c, k])
        .map(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
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
            sni: vec![],
        };
        assert!(ensure_dev_pair(&tls).unwrap());
        assert!(!ensure_dev_pair(&tls).unwrap(), "an existing pair is kept");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&tls.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
        load_certified_key(&tls.cert, &tls.key).unwrap();
    }

    #[test]
    fn mismatched_or_garbage_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tls {
            cert: dir.path().join("a/cert.pem"),
            key: dir.path().join("a/key.pem"),
            generate_self_signed: true,
            sni: vec![],
        };
        let b = Tls {
            cert: dir.path().join("b/cert.pem"),
            key: dir.path().join("b/key.pem"),
            generate_self_signed: true,
            sni: vec![],
        };
        ensure_dev_pair(&a).unwrap();
        ensure_dev_pair(&b).unwrap();
        let mixed = Tls {
            cert: a.cert.clone(),
            key: b.key.clone(),
            generate_self_signed: false,
            sni: vec![],
        };
        let e = load_certified_key(&mixed.cert, &mixed.key).unwrap_err();
        assert!(e.contains("do not form a usable pair"), "{e}");
        fs::write(&a.cert, "not a certificate").unwrap();
        let e = load_certified_key(&a.cert, &a.key).unwrap_err();
        assert!(e.contains("no certificate found"), "{e}");
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn patterns() {
        let w = NamePattern::parse("*.Example.com").unwrap();
        assert!(w.matches("a.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("a.b.example.com"));
        assert!(!w.matches("aexample.com"));
        let e = NamePattern::parse("chat.example.com").unwrap();
        assert!(e.matches("chat.example.com"));
        assert!(NamePattern::parse("*.*.x").is_err());
        assert!(NamePattern::parse("a..b").is_err());
        assert!(NamePattern::parse("").is_err());
    }
}
