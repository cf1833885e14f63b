//! Verification keys: from PEM files and secrets, and from JWKS documents. Every key is pinned
//! to the algorithms it may verify.
//!
//! Every key is pinned to the algorithms it may verify. A token's `alg` must be one of them, so
//! an HMAC token can never be checked against an RSA/EC public key (algorithm confusion), and
//! `none` is not an algorithm at all here.

use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::policy::{Alg, Key};
use crate::config::secret::Secret;

/// One key and the algorithms it is pinned to.
#[derive(Clone)]
pub(crate) struct VerifyKey {
    pub(crate) kid: Option<String>,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) key: DecodingKey,
}

impl VerifyKey {
    pub(crate) fn serves(&self, kid: Option<&str>, alg: Algorithm) -> bool {
        let kid_ok = match kid {
            Some(kid) => self.kid.as_deref() == Some(kid),
            // A token without `kid` may use any key of the right algorithm.
            None => true,
        };
        kid_ok && self.algorithms.contains(&alg)
    }
}

pub(crate) fn algorithm(alg: Alg) -> Algorithm {
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
pub(crate) fn load_key(k: &Key) -> Result<VerifyKey, String> {
    let alg = algorithm(k.alg);
    let key = if k.alg.is_hmac() {
        let source = Secret {
            file: k.secret_file.as_deref(),
            env: k.secret_env.as_deref(),
            file_key: "secret_file",
            env_key: "secret_env",
        };
        let (_, secret) = source.read()?.ok_or("no secret")?;
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
pub(crate) fn keys_from_jwks(doc: &[u8], allowed: &[Algorithm]) -> Result<Vec<VerifyKey>, String> {
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
