//! All the verification keys of one token policy: the fixed ones (PEM files, secrets, a JWKS
//! file) and those of a JWKS URL fetched in the background ([`super::jwks`]).

use std::sync::{Arc, Weak};

use jsonwebtoken::Algorithm;

use super::jwks::RemoteJwks;
use super::keys::{algorithm, keys_from_jwks, load_key, VerifyKey};
use crate::config::defaults;
use crate::config::policy::Jwt;

/// All the keys of one token policy.
pub(crate) struct KeySet {
    fixed: Vec<VerifyKey>,
    remote: Option<Arc<RemoteJwks>>,
}

impl KeySet {
    /// Load the configured keys and JWKS file; prepare (not start) the JWKS URL fetcher.
    pub(crate) fn load(jwt: &Jwt, key: &str) -> Result<KeySet, String> {
        let allowed: Vec<Algorithm> = jwt
            .algorithms
            .as_deref()
            .unwrap_or(&defaults::JWKS_ALGORITHMS)
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
        let remote = jwt
            .jwks_url
            .as_ref()
            .map(|url| RemoteJwks::new(jwt, url, allowed, key).map(Arc::new))
            .transpose()?;
        Ok(KeySet { fixed, remote })
    }

    /// Only the given keys (tests and the fuzzer).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn fixed(keys: Vec<VerifyKey>) -> KeySet {
        KeySet {
            fixed: keys,
            remote: None,
        }
    }

    /// The background fetcher to run, if the policy has a JWKS URL.
    pub(crate) fn remote(&self) -> Option<Weak<RemoteJwks>> {
        self.remote.as_ref().map(Arc::downgrade)
    }

    /// After a reload: start from the previous configuration's keys for the same JWKS URL, so
    /// tokens keep verifying while the new fetcher's first fetch is under way.
    pub(crate) fn inherit(&mut self, old: &KeySet) {
        if let (Some(new), Some(old)) = (&mut self.remote, &old.remote) {
            if let Some(new) = Arc::get_mut(new) {
                new.inherit(old);
            }
        }
    }

    /// Keys that may verify a token with this `kid` and `alg`. An unknown `kid` triggers a
    /// (rate-limited) JWKS refresh that this call waits for.
    pub(crate) async fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<VerifyKey> {
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
