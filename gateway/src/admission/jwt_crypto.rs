//! Token signatures verified with `ring` instead of jsonwebtoken's RustCrypto backend.
//!
//! Measured by the benchmark (`bench/RESULTS.md`): ES256 verification in RustCrypto's `p256`
//! took 188 µs, 37 % of a handshake's CPU with a token; `ring` (already in the tree through
//! rustls) verifies in 35 µs. jsonwebtoken lets a process install its own `CryptoProvider`;
//! this one keeps RustCrypto for signing (tests only) and JWK utilities, and verifies with ring.
//!
//! Every verifier first checks that the key's family matches the algorithm, so an HMAC token is
//! never checked against an RSA or EC public key (the keys in `keys.rs` are pinned as well).

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier};
use jsonwebtoken::errors::{new_error, ErrorKind, Result};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};
use ring::signature::{self as sig, RsaPublicKeyComponents, UnparsedPublicKey};
use std::sync::LazyLock;

/// The provider: ring for verification, jsonwebtoken's RustCrypto for the rest.
static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    verifier_factory: new_verifier,
    ..jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.clone()
});

/// Install the provider for the process (idempotent; before any token is verified).
pub(crate) fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if LazyLock::force(&PROVIDER).install_default().is_err() {
            log::warn!(
                "jsonwebtoken's crypto provider was chosen before ring's could be installed"
            );
        }
    });
}

/// How one algorithm is verified by ring.
#[derive(Clone, Copy)]
enum Scheme {
    Hmac(ring::hmac::Algorithm),
    Rsa(&'static sig::RsaParameters),
    Ecdsa(&'static sig::EcdsaVerificationAlgorithm),
    Ed25519,
}

fn scheme(alg: Algorithm) -> Option<(AlgorithmFamily, Scheme)> {
    use Algorithm::*;
    Some(match alg {
        HS256 => (AlgorithmFamily::Hmac, Scheme::Hmac(ring::hmac::HMAC_SHA256)),
        HS384 => (AlgorithmFamily::Hmac, Scheme::Hmac(ring::hmac::HMAC_SHA384)),
        HS512 => (AlgorithmFamily::Hmac, Scheme::Hmac(ring::hmac::HMAC_SHA512)),
        RS256 => (
            AlgorithmFamily::Rsa,
            Scheme::Rsa(&sig::RSA_PKCS1_2048_8192_SHA256),
        ),
        RS384 => (
            AlgorithmFamily::Rsa,
            Scheme::Rsa(&sig::RSA_PKCS1_2048_8192_SHA384),
        ),
        RS512 => (
            AlgorithmFamily::Rsa,
            Scheme::Rsa(&sig::RSA_PKCS1_2048_8192_SHA512),
        ),
        PS256 => (
            AlgorithmFamily::Rsa,
            Scheme::Rsa(&sig::RSA_PSS_2048_8192_SHA256),
        ),
        PS384 => (
            AlgorithmFamily::Rsa,
            Scheme::Rsa(&sig::RSA_PSS_2048_8192_SHA384),
        ),
        PS512 => (
            AlgorithmFamily::Rsa,
            Scheme::Rsa(&sig::RSA_PSS_2048_8192_SHA512),
        ),
        ES256 => (
            AlgorithmFamily::Ec,
            Scheme::Ecdsa(&sig::ECDSA_P256_SHA256_FIXED),
        ),
        ES384 => (
            AlgorithmFamily::Ec,
            Scheme::Ecdsa(&sig::ECDSA_P384_SHA384_FIXED),
        ),
        EdDSA => (AlgorithmFamily::Ed, Scheme::Ed25519),
        _ => return None,
    })
}

struct RingVerifier {
    algorithm: Algorithm,
    scheme: Scheme,
    key: DecodingKeyKind,
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let (family, scheme) =
        scheme(*algorithm).ok_or_else(|| new_error(ErrorKind::UnsupportedAlgorithm))?;
    if key.family() != family {
        return Err(new_error(ErrorKind::InvalidAlgorithm));
    }
    Ok(Box::new(RingVerifier {
        algorithm: *algorithm,
        scheme,
        key: key.kind().clone(),
    }))
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let ok = match (&self.key, self.scheme) {
            (DecodingKeyKind::SecretOrDer(secret), Scheme::Hmac(alg)) => {
                let key = ring::hmac::Key::new(alg, secret);
                ring::hmac::verify(&key, msg, signature).is_ok()
            }
            (DecodingKeyKind::SecretOrDer(der), Scheme::Rsa(params)) => {
                UnparsedPublicKey::new(params, der)
                    .verify(msg, signature)
                    .is_ok()
            }
            (DecodingKeyKind::RsaModulusExponent { n, e }, Scheme::Rsa(params)) => {
                RsaPublicKeyComponents { n, e }
                    .verify(params, msg, signature)
                    .is_ok()
            }
            (DecodingKeyKind::SecretOrDer(point), Scheme::Ecdsa(alg)) => {
                UnparsedPublicKey::new(alg, point)
                    .verify(msg, signature)
                    .is_ok()
            }
            (DecodingKeyKind::SecretOrDer(raw), Scheme::Ed25519) => {
                UnparsedPublicKey::new(&sig::ED25519, raw)
                    .verify(msg, signature)
                    .is_ok()
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(signature::Error::new())
        }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, encode, EncodingKey, Header, Validation};
    use serde_json::{json, Map, Value};

    fn roundtrip(alg: Algorithm, enc: &EncodingKey, dec: &DecodingKey) -> bool {
        install();
        let claims = json!({"sub": "s", "exp": 4_000_000_000u64});
        let token = encode(&Header::new(alg), &claims, enc).unwrap();
        decode::<Map<String, Value>>(&token, dec, &Validation::new(alg)).is_ok()
    }

    #[test]
    fn every_family_verifies_and_confusion_fails() {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let ec_enc = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap();
        let ec_dec = DecodingKey::from_ec_pem(ec.public_key_pem().as_bytes()).unwrap();
        assert!(roundtrip(Algorithm::ES256, &ec_enc, &ec_dec));

        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let ed_enc = EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).unwrap();
        let ed_dec = DecodingKey::from_ed_pem(ed.public_key_pem().as_bytes()).unwrap();
        assert!(roundtrip(Algorithm::EdDSA, &ed_enc, &ed_dec));

        let rsa = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let rsa_enc =
            EncodingKey::from_rsa_pem(rsa.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes())
                .unwrap();
        let public_pem = rsa
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let rsa_dec = DecodingKey::from_rsa_pem(public_pem.as_bytes()).unwrap();
        assert!(roundtrip(Algorithm::RS256, &rsa_enc, &rsa_dec));
        assert!(roundtrip(Algorithm::PS256, &rsa_enc, &rsa_dec));

        let secret = b"0123456789abcdef0123456789abcdef";
        let hs_enc = EncodingKey::from_secret(secret);
        assert!(roundtrip(
            Algorithm::HS256,
            &hs_enc,
            &DecodingKey::from_secret(secret)
        ));
        // A wrong key does not verify.
        assert!(!roundtrip(
            Algorithm::HS256,
            &hs_enc,
            &DecodingKey::from_secret(b"another secret another secret!!")
        ));
        // HS256 signed with the RSA public key's PEM, checked against that RSA key: refused.
        let confused = EncodingKey::from_secret(public_pem.as_bytes());
        assert!(!roundtrip(Algorithm::HS256, &confused, &rsa_dec));
    }
}
