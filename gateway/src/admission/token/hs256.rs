//! HS256 tokens made in code, and a token policy that verifies them with a fixed secret: for the
//! unit tests and the fuzzer, which must reach the claim checks with tokens they build
//! themselves (a random signature never verifies).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};

use super::TokenPolicy;
use crate::admission::keys::VerifyKey;
use crate::admission::keyset::KeySet;
use crate::config::policy::Jwt;

/// A compact JWS of the header and claims exactly as given (any bytes, valid JSON or not),
/// signed with HMAC-SHA256 under `secret`.
pub(crate) fn sign(secret: &[u8], header: &[u8], claims: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// The policy of the `[jwt]` table `jwt_toml` (its keys ignored), verifying HS256 with `secret`.
pub(crate) fn policy(jwt_toml: &str, secret: &[u8]) -> Result<TokenPolicy, String> {
    let jwt: Jwt = toml::from_str(jwt_toml).map_err(|e| e.to_string())?;
    crate::admission::jwt_crypto::install();
    let mut policy = TokenPolicy::compile(&jwt, "jwt")?;
    policy.keys = KeySet::fixed(vec![VerifyKey {
        kid: None,
        algorithms: vec![Algorithm::HS256],
        key: DecodingKey::from_secret(secret),
    }]);
    Ok(policy)
}
