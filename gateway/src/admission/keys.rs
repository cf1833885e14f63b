//! Verification keys of a token policy: keys from PEM files and secrets, a JWKS file, and a JWKS
//! URL fetched in the background (refreshed periodically and, rate-limited, when a token names
//! an unknown `kid`; the last good copy is kept when a fetch fails).
//!
//! Every key is pinned to the algorithms it may verify. A token's `alg` must be one of them, so
//! an HMAC token can never be checked against an RSA/EC public key (algorithm confusion), and
//! `none` is not an algorithm at all here.

use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::fetch;
use crate::config::policy::{defaults, Alg, Jwt, Key};

/// One key and the algorithms it is pinned to.
#[derive(Clone)]
pub struct VerifyKey {
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

impl VerifyKey {
    fn serves(&self, kid: Option<&str>, alg: Algorithm) -> bool {
        let kid_ok = match kid {
            Some(kid) => self.kid.as_deref() == Some(kid),
            // A token without `kid` may use any key of the right algorithm.
            None => true,
        };
        kid_ok && self.algorithms.contains(&alg)
    }
}

pub fn algorithm(alg: Alg) -> Algorithm {
    match alg {
        Alg::HS256 => Algorithm::HS256,
        Alg::HS384 => Algorithm::HS384,
        Alg::HS512 => Algorithm::HS512,
        Alg::RS256 => Algorithm::RS256,
        Alg::RS384 => Algorithm::RS384,
        Alg::RS512 => Algorithm::RS512,
        Alg::PS256 => Algorithm::PS256,
        Alg::PS384 => Algorithm::PS384,
        Alg::PS512 => Algorithm::PS512,
        Alg::ES256 => Algorithm::ES256,
        Alg::ES384 => Algorithm::ES384,
        Alg::EdDSA => Algorithm::EdDSA,
    }
}

/// Load a configured key (`keys[i]`).
fn load_key(k: &Key) -> Result<VerifyKey, String> {
    let alg = algorithm(k.alg);
    let key = if k.alg.is_hmac() {
        let secret = match (&k.secret_file, &k.secret_env) {
            (Some(path), _) => std::fs::read(path)
                .map_err(|e| format!("cannot read secret_file {}: {e}", path.display()))?,
            (None, Some(var)) => std::env::var(var)
                .map_err(|_| format!("environment variable {var} (secret_env) is not set"))?
                .into_bytes(),
            (None, None) => return Err("no secret".into()),
        };
        let secret = secret.trim_ascii_end();
        if secret.len() < 32 {
            return Err(format!(
                "the {:?} secret is {} bytes; use at least 32 random bytes",
                k.alg,
                secret.len()
            ));
        }
        DecodingKey::from_secret(secret)
    } else {
        let path = k.pem_file.as_ref().ok_or("no pem_file")?;
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read pem_file {}: {e}", path.display()))?;
        let parsed = match alg {
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
            _ => DecodingKey::from_rsa_pem(&pem),
        };
        parsed.map_err(|e| {
            format!(
                "{} is not a {:?} public key in PEM: {e}",
                path.display(),
                k.alg
            )
        })?
    };
    Ok(VerifyKey {
        kid: k.kid.clone(),
        algorithms: vec![alg],
        key,
    })
}

/// The keys of a JWKS document. A JWK with `alg` is pinned to it; one without is pinned to the
/// policy's `algorithms` of its key type. Symmetric (`oct`) keys are accepted only when the policy
/// lists an HMAC algorithm; keys marked for encryption are skipped.
pub fn keys_from_jwks(doc: &[u8], allowed: &[Algorithm]) -> Result<Vec<VerifyKey>, String> {
    let set: JwkSet =
        serde_json::from_slice(doc).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut out = Vec::new();
    for jwk in &set.keys {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let family = family_algorithms(jwk);
        let algorithms: Vec<Algorithm> = match jwk.common.key_algorithm {
            Some(ka) => match Algorithm::from_str(&ka.to_string()) {
                Ok(a) if family.contains(&a) => vec![a],
                _ => continue,
            },
            None => family.into_iter().filter(|a| allowed.contains(a)).collect(),
        };
        if algorithms.is_empty() {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        out.push(VerifyKey {
            kid: jwk.common.key_id.clone(),
            algorithms,
            key,
        });
    }
    Ok(out)
}

/// The algorithms a JWK's key type can verify.
fn family_algorithms(jwk: &Jwk) -> Vec<Algorithm> {
    use Algorithm::*;
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![ES256],
            EllipticCurve::P384 => vec![ES384],
            _ => vec![],
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![EdDSA],
        AlgorithmParameters::OctetKey(_) => vec![HS256, HS384, HS512],
        _ => vec![],
    }
}

/// A JWKS URL, its last good keys and its refresh schedule.
pub struct RemoteJwks {
    url: fetch::Url,
    url_text: String,
    tls: Arc<rustls::ClientConfig>,
    allowed: Vec<Algorithm>,
    refresh_every: Duration,
    min_refresh: Duration,
    keys: RwLock<Arc<Vec<VerifyKey>>>,
    /// When the last fetch caused by an unknown `kid` was allowed.
    last_on_demand: Mutex<Option<Instant>>,
    /// Wakes the fetch loop for an on-demand refresh.
    wake: Notify,
    /// Keys were taken over from the previous configuration's fetcher of the same URL.
    inherited: bool,
    /// Signalled after every fetch attempt.
    fetched: Notify,
}

impl RemoteJwks {
    fn snapshot(&self) -> Arc<Vec<VerifyKey>> {
        self.keys.read().expect("jwks lock").clone()
    }

    /// One fetch; on success the keys are replaced, on failure the last good copy stays.
    async fn fetch_once(&self) {
        match fetch::get(&self.url, &self.tls, defaults::JWKS_TIMEOUT).await {
            Ok(body) => match keys_from_jwks(&body, &self.allowed) {
                Ok(keys) => {
                    log::info!("jwks: {} key(s) from {}", keys.len(), self.url_text);
                    *self.keys.write().expect("jwks lock") = Arc::new(keys);
                }
                Err(e) => log::warn!("jwks: {}: {e}; keeping the last good keys", self.url_text),
            },
            Err(e) => log::warn!(
                "jwks: fetching {} failed: {e}; keeping the last good keys",
                self.url_text
            ),
        }
        self.fetched.notify_waiters();
    }

    /// The background loop: fetch now (unless keys were inherited from the previous
    /// configuration), then periodically and when woken. It ends once the policy that owns
    /// these keys is gone (replaced by a reload and no longer used).
    pub async fn run(me: Weak<Self>) {
        let mut first = true;
        loop {
            let Some(this) = me.upgrade() else { return };
            if !(first && this.inherited) {
                this.fetch_once().await;
            }
            first = false;
            tokio::select! {
                _ = tokio::time::sleep(this.refresh_every) => {}
                _ = this.wake.notified() => {}
            }
        }
    }

    /// Ask for a refresh because a token named an unknown `kid`, and wait (bounded) for it.
    /// Returns false when a refresh happened too recently to allow another.
    async fn refresh_for_unknown_kid(&self) -> bool {
        {
            let mut last = self.last_on_demand.lock().expect("jwks lock");
            let now = Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < self.min_refresh) {
                return false;
            }
            *last = Some(now);
        }
        let fetched = self.fetched.notified();
        self.wake.notify_one();
        let _ =
            tokio::time::timeout(defaults::JWKS_TIMEOUT + Duration::from_secs(1), fetched).await;
        true
    }
}

/// All the keys of one token policy.
pub struct KeySet {
    fixed: Vec<VerifyKey>,
    remote: Option<Arc<RemoteJwks>>,
}

impl KeySet {
    /// Load the configured keys and JWKS file; prepare (not start) the JWKS URL fetcher.
    pub fn load(jwt: &Jwt, key: &str) -> Result<KeySet, String> {
        let allowed: Vec<Algorithm> = jwt
            .algorithms
            .as_deref()
            .unwrap_or(&[Alg::RS256, Alg::PS256, Alg::ES256, Alg::ES384, Alg::EdDSA])
            .iter()
            .map(|a| algorithm(*a))
            .collect();
        let mut fixed = Vec::new();
        for (i, k) in jwt.keys.iter().enumerate() {
            fixed.push(load_key(k).map_err(|e| format!("{key}.keys[{i}]: {e}"))?);
        }
        if let Some(path) = &jwt.jwks_file {
            let doc = std::fs::read(path)
                .map_err(|e| format!("{key}.jwks_file: cannot read {}: {e}", path.display()))?;
            let keys = keys_from_jwks(&doc, &allowed)
                .map_err(|e| format!("{key}.jwks_file: {}: {e}", path.display()))?;
            if keys.is_empty() {
                return Err(format!(
                    "{key}.jwks_file: {} holds no usable signature key",
                    path.display()
                ));
            }
            fixed.extend(keys);
        }
        let remote = match &jwt.jwks_url {
            None => None,
            Some(url_text) => {
                let url =
                    fetch::Url::parse(url_text).map_err(|e| format!("{key}.jwks_url: {e}"))?;
                let tls = fetch::tls_config(jwt.jwks_ca_file.as_deref())
                    .map_err(|e| format!("{key}.jwks_ca_file: {e}"))?;
                Some(Arc::new(RemoteJwks {
                    url,
                    url_text: url_text.clone(),
                    tls,
                    allowed,
                    refresh_every: jwt.jwks_refresh.map_or(defaults::JWKS_REFRESH, |d| d.0),
                    min_refresh: jwt
                        .jwks_min_refresh
                        .map_or(defaults::JWKS_MIN_REFRESH, |d| d.0),
                    keys: RwLock::new(Arc::new(Vec::new())),
                    last_on_demand: Mutex::new(None),
                    wake: Notify::new(),
                    fetched: Notify::new(),
                    inherited: false,
                }))
            }
        };
        Ok(KeySet { fixed, remote })
    }

    /// The background fetcher to run, if the policy has a JWKS URL.
    pub fn remote(&self) -> Option<Weak<RemoteJwks>> {
        self.remote.as_ref().map(Arc::downgrade)
    }

    /// After a reload: start from the previous configuration's keys for the same JWKS URL, so
    /// tokens keep verifying while the new fetcher's first fetch is under way.
    pub fn inherit(&mut self, old: &KeySet) {
        if let (Some(new), Some(old)) = (&mut self.remote, &old.remote) {
            if new.url_text == old.url_text {
                if let Some(new) = Arc::get_mut(new) {
                    *new.keys.get_mut().expect("jwks lock") = old.snapshot();
                    new.inherited = true;
                }
            }
        }
    }

    /// Keys that may verify a token with this `kid` and `alg`. An unknown `kid` triggers a
    /// (rate-limited) JWKS refresh that this call waits for.
    pub async fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<VerifyKey> {
        let found = self.find(kid, alg);
        if !found.is_empty() || kid.is_none() {
            return found;
        }
        match &self.remote {
            Some(remote) if remote.refresh_for_unknown_kid().await => self.find(kid, alg),
            _ => found,
        }
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Vec<VerifyKey> {
        let remote = self.remote.as_ref().map(|r| r.snapshot());
        self.fixed
            .iter()
            .chain(remote.iter().flat_map(|keys| keys.iter()))
            .filter(|k| k.serves(kid, alg))
            .cloned()
            .collect()
    }
}
