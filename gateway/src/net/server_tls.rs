//! Server certificates: loading PEM files, generating a development pair, and each listener's
//! rustls settings and certificate resolver, which the edge's TLS handshakes use
//! (`edge::accept`, through [`CertStore::acceptor`]).
//!
//! TLS is terminated by the edge itself with rustls, not by pingora's listener:
//! pingora's TLS phase has a fixed 60 s timeout, no hook to bound or cap connections that never
//! finish it, and no callback for failures. pingora still owns the listening sockets. The
//! settings are those of pingora's rustls mode (TLS 1.2 and 1.3, ring), and certificates come
//! from a resolver ([`CertStore`]) that picks one by SNI. A configuration generation loads a
//! listener's certificates into a [`CertSet`] (every file read and checked, a key that does not
//! match its certificate a clear error); putting the generation in force installs it in the
//! listener's store, and a certificate-only reload re-reads the files of the set in force. Open
//! connections are never touched.
//!
//! A listener with `client_ca` also verifies client certificates (rustls' `WebPkiClientVerifier`,
//! with the listener's CRLs): `required` fails the TLS handshake without a valid one, `optional`
//! lets a client without one through to admission. The verifier belongs to the [`CertSet`], so
//! the client CA and CRLs are reloaded with the certificates: the store keeps the rustls
//! `ServerConfig` of the set in force and every new TLS handshake reads it.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::listener::ClientAuth;
use crate::config::Tls;
use crate::core::name::NamePattern;

/// Names the development certificate covers.
const DEV_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Make sure the certificate pair of a listener exists: generate a self-signed development pair
/// when asked to and the files are missing. Returns `true` when it generated one.
pub(crate) fn ensure_dev_pair(tls: &Tls) -> Result<bool, String> {
    if !needs_dev_pair(tls) {
        return Ok(false);
    }
    DevPair::generate()?.write(tls, &mut Vec::new())?;
    Ok(true)
}

/// The certificate sets of listeners whose development pair is to be generated (each named by
/// its configuration key, for errors). Every pair is generated in memory and loaded with the
/// rest of its listener's certificates (SNI certificates, client CA) first; the pairs are
/// written only once every set has loaded, so an error writes nothing, and a write that fails
/// removes the files this call had created. Listeners naming the same files share one pair.
pub(crate) fn dev_cert_sets(wanted: &[(String, &Tls)]) -> Result<Vec<CertSet>, String> {
    let mut pairs: Vec<(&Tls, DevPair)> = Vec::new();
    let mut sets = Vec::new();
    for (key, tls) in wanted {
        let same = |(t, _): &(&Tls, DevPair)| t.cert == tls.cert && t.key == tls.key;
        let at = match pairs.iter().position(same) {
            Some(at) => at,
            None => {
                pairs.push((tls, DevPair::generate().map_err(|e| format!("{key}: {e}"))?));
                pairs.len() - 1
            }
        };
        let default = pairs[at].1.certified.clone();
        sets.push(CertSet::assemble(tls, default, Vec::new()).map_err(|e| format!("{key}: {e}"))?);
    }
    let mut created = Vec::new();
    for (tls, pair) in &pairs {
        if let Err(e) = pair.write(tls, &mut created) {
            for path in &created {
                let _ = fs::remove_file(path);
            }
            return Err(e);
        }
    }
    for set in &mut sets {
        set.stamps = stamps(&set.tls);
    }
    Ok(sets)
}

/// A self-signed development pair, made in memory: usable before (and without) being written.
struct DevPair {
    cert_pem: String,
    key_pem: String,
    certified: Arc<CertifiedKey>,
}

impl DevPair {
    fn generate() -> Result<DevPair, String> {
        let pair = rcgen::generate_simple_self_signed(
            DEV_NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .map_err(|e| format!("cannot generate a development certificate: {e}"))?;
        let key = PrivateKeyDer::Pkcs8(pair.signing_key.serialize_der().into());
        let certified =
            CertifiedKey::from_der(vec![pair.cert.der().clone()], key, &default_provider())
                .map_err(|e| format!("the generated development certificate is unusable: {e}"))?;
        Ok(DevPair {
            cert_pem: pair.cert.pem(),
            key_pem: pair.signing_key.serialize_pem(),
            certified: Arc::new(certified),
        })
    }

    /// Write the pair where `tls` names it (the key readable by its owner only), creating
    /// folders; the files that did not exist before are added to `created`.
    fn write(&self, tls: &Tls, created: &mut Vec<PathBuf>) -> Result<(), String> {
        for path in [&tls.cert, &tls.key] {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
        }
        let mut note_new = |path: &PathBuf| {
            if !path.exists() {
                created.push(path.clone());
            }
        };
        note_new(&tls.key);
        write_private(&tls.key, self.key_pem.as_bytes())?;
        note_new(&tls.cert);
        fs::write(&tls.cert, &self.cert_pem)
            .map_err(|e| format!("cannot write {}: {e}", tls.cert.display()))
    }
}

/// Whether a start would generate the development pair of `tls` (asked for, and missing).
pub(crate) fn needs_dev_pair(tls: &Tls) -> bool {
    tls.generate_self_signed && !(tls.cert.exists() && tls.key.exists())
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
pub(crate) fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
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

/// The certificates of one listener, loaded from the files its settings name.
pub(crate) struct CertSet {
    tls: Tls,
    default: Arc<CertifiedKey>,
    by_name: Vec<(NamePattern, Arc<CertifiedKey>)>,
    /// Verifies client certificates (a listener with `client_ca`).
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// Modification times of the files when they were read.
    stamps: Vec<Option<SystemTime>>,
}

impl fmt::Debug for CertSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertSet({})", self.tls.cert.display())
    }
}

impl CertSet {
    /// Read and check every certificate and key of `tls`.
    pub(crate) fn load(tls: &Tls) -> Result<CertSet, String> {
        let stamps = stamps(tls);
        let default = load_certified_key(&tls.cert, &tls.key)?;
        CertSet::assemble(tls, default, stamps)
    }

    /// The set of `tls` around its `default` certificate (already loaded): the SNI certificates
    /// and the client-certificate verifier are read and checked here.
    fn assemble(
        tls: &Tls,
        default: Arc<CertifiedKey>,
        stamps: Vec<Option<SystemTime>>,
    ) -> Result<CertSet, String> {
        let mut by_name = Vec::new();
        for sni in &tls.sni {
            let key = load_certified_key(&sni.cert, &sni.key)?;
            for name in &sni.names {
                by_name.push((name.clone(), key.clone()));
            }
        }
        Ok(CertSet {
            tls: tls.clone(),
            default,
            by_name,
            client_verifier: client_verifier(tls)?,
            stamps,
        })
    }

    /// The certificate for a client's SNI name: exact names win over wildcards; the default
    /// certificate otherwise.
    fn choose(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        if let Some(name) = server_name {
            let name = name.to_ascii_lowercase();
            let exact = self
                .by_name
                .iter()
                .find(|(p, _)| p.is_exact() && p.matches(&name));
            let any = || self.by_name.iter().find(|(p, _)| p.matches(&name));
            if let Some((_, key)) = exact.or_else(any) {
                return key.clone();
            }
        }
        self.default.clone()
    }
}

/// The client-certificate verifier of a listener's `client_ca` (and `client_crls`), if any.
fn client_verifier(tls: &Tls) -> Result<Option<Arc<dyn ClientCertVerifier>>, String> {
    let Some(ca) = &tls.client_ca else {
        return Ok(None);
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("client_ca: cannot read {}: {e}", ca.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("client_ca: bad PEM in {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("client_ca: unusable certificate in {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "client_ca: no certificate found in {}",
            ca.display()
        ));
    }
    let mut crls = Vec::new();
    for (i, path) in tls.client_crls.iter().enumerate() {
        let list: Vec<CertificateRevocationListDer<'static>> =
            CertificateRevocationListDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| format!("client_crls[{i}]: cannot read {}: {e}", path.display()))?;
        if list.is_empty() {
            return Err(format!(
                "client_crls[{i}]: no CRL found in {}",
                path.display()
            ));
        }
        crls.extend(list);
    }
    let builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(default_provider()))
            .with_crls(crls);
    let builder = match tls.client_auth.unwrap_or_default() {
        ClientAuth::Required => builder,
        ClientAuth::Optional => builder.allow_unauthenticated(),
    };
    builder
        .build()
        .map(Some)
        .map_err(|e| format!("client_ca: {e}"))
}

/// The rustls settings of a listener serving `set` through `resolver`. The settings are those
/// of pingora's rustls mode: TLS 1.2 and 1.3, ring.
fn server_config(
    resolver: Arc<Resolver>,
    set: &CertSet,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| format!("TLS settings: {e}"))?;
    let builder = match &set.client_verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier.clone()),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = alpn(set.tls.http2);
    Ok(Arc::new(config))
}

/// The application protocols a listener offers by ALPN, preferred first. A listener without
/// HTTP/2 offers none, as before (a client that asks gets HTTP/1.1 all the same).
pub(crate) fn alpn(http2: bool) -> Vec<Vec<u8>> {
    if http2 {
        vec![ALPN_H2.to_vec(), b"http/1.1".to_vec()]
    } else {
        Vec::new()
    }
}

/// ALPN's name for HTTP/2 over TLS (RFC 9113 section 3.2).
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// Picks a certificate of the [`CertSet`] in force by SNI.
#[derive(Debug)]
struct Resolver {
    current: ArcSwap<CertSet>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().choose(hello.server_name()))
    }
}

/// One listener's TLS: the [`CertSet`] in force and the rustls settings that serve it.
pub(crate) struct CertStore {
    resolver: Arc<Resolver>,
    /// Read by every new TLS handshake; replaced when a set is put in force.
    config: ArcSwap<rustls::ServerConfig>,
    /// Serialises reloads, so two never interleave their read and swap.
    reloading: Mutex<()>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertStore({})", self.describe())
    }
}

impl CertStore {
    pub(crate) fn new(set: Arc<CertSet>) -> Result<Arc<CertStore>, String> {
        let resolver = Arc::new(Resolver {
            current: ArcSwap::new(set.clone()),
        });
        let config = server_config(resolver.clone(), &set)?;
        Ok(Arc::new(CertStore {
            resolver,
            config: ArcSwap::new(config),
            reloading: Mutex::new(()),
        }))
    }

    /// Put `set` in force (a new configuration generation, or re-read files).
    pub(crate) fn install(&self, set: Arc<CertSet>) -> Result<(), String> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        self.swap(set)
    }

    fn swap(&self, set: Arc<CertSet>) -> Result<(), String> {
        let config = server_config(self.resolver.clone(), &set)?;
        self.resolver.current.store(set);
        self.config.store(config);
        Ok(())
    }

    /// Re-read the files of the set in force; on any error the certificates in use stay.
    pub(crate) fn reload(&self) -> Result<(), String> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let next = CertSet::load(&self.resolver.current.load().tls)?;
        self.swap(Arc::new(next))
    }

    /// Reload when a file's modification time changed; `Ok(true)` when it reloaded.
    pub(crate) fn reload_if_changed(&self) -> Result<bool, String> {
        let current = self.resolver.current.load();
        if current.stamps == stamps(&current.tls) {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    pub(crate) fn describe(&self) -> String {
        self.resolver.current.load().tls.cert.display().to_string()
    }

    /// The acceptor for one new TLS handshake, with the settings in force.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.load_full())
    }
}

fn stamps(tls: &Tls) -> Vec<Option<SystemTime>> {
    std::iter::once((&tls.cert, &tls.key))
        .chain(tls.sni.iter().map(|s| (&s.cert, &s.key)))
        .flat_map(|(c, k)| [c, k])
        .chain(tls.client_ca.iter())
        .chain(tls.client_crls.iter())
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
            ..Tls::default()
        };
        assert!(ensure_dev_pair(&tls).unwrap());
        assert!(!ensure_dev_pair(&tls).unwrap(), "an existing pair is kept");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&tls.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
        load_certified_key(&tls.cert, &tls.key).unwrap();
    }

    #[test]
    fn dev_cert_sets_write_nothing_unless_every_set_loads() {
        let dir = tempfile::tempdir().unwrap();
        let dev = |name: &str| Tls {
            cert: dir.path().join(name).join("cert.pem"),
            key: dir.path().join(name).join("key.pem"),
            generate_self_signed: true,
            ..Tls::default()
        };
        let a = dev("a");
        // The second listener's client CA is no certificate: its set cannot load.
        let garbage = dir.path().join("ca.pem");
        fs::write(&garbage, "not a certificate").unwrap();
        let b = Tls {
            client_ca: Some(garbage),
            ..dev("b")
        };
        let e = dev_cert_sets(&[
            ("listeners[0].tls".into(), &a),
            ("listeners[1].tls".into(), &b),
        ])
        .unwrap_err();
        assert!(e.starts_with("listeners[1].tls: client_ca"), "{e}");
        for name in ["a", "b"] {
            assert!(!dir.path().join(name).exists(), "{name} written: {e}");
        }

        // Every set loads: the pairs are written, and two listeners naming the same files
        // serve the one pair written there.
        let sets = dev_cert_sets(&[("l0".into(), &a), ("l1".into(), &dev("a"))]).unwrap();
        assert!(!needs_dev_pair(&a));
        let written = load_certified_key(&a.cert, &a.key).unwrap();
        assert_eq!(sets.len(), 2);
        for set in &sets {
            assert_eq!(set.default.cert, written.cert);
            assert_eq!(set.stamps, stamps(&a), "stamped after the write");
        }
    }

    #[test]
    fn mismatched_or_garbage_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tls {
            cert: dir.path().join("a/cert.pem"),
            key: dir.path().join("a/key.pem"),
            generate_self_signed: true,
            ..Tls::default()
        };
        let b = Tls {
            cert: dir.path().join("b/cert.pem"),
            key: dir.path().join("b/key.pem"),
            generate_self_signed: true,
            ..Tls::default()
        };
        ensure_dev_pair(&a).unwrap();
        ensure_dev_pair(&b).unwrap();
        let mixed = Tls {
            cert: a.cert.clone(),
            key: b.key.clone(),
            generate_self_signed: false,
            ..Tls::default()
        };
        let e = load_certified_key(&mixed.cert, &mixed.key).unwrap_err();
        assert!(e.contains("do not form a usable pair"), "{e}");
        fs::write(&a.cert, "not a certificate").unwrap();
        let e = load_certified_key(&a.cert, &a.key).unwrap_err();
        assert!(e.contains("no certificate found"), "{e}");
    }
}
