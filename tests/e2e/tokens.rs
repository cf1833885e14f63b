//! Test keys and tokens: generated per test run (never committed), written next to each gateway's
//! config, and signed with `jsonwebtoken` like an identity provider would.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{json, Value};

pub const ISSUER: &str = "https://idp.test";
pub const AUDIENCE: &str = "chat";
/// 48 bytes, above the gateway's 32-byte minimum for HMAC secrets.
pub const HS_SECRET: &str = "test-secret-0123456789-abcdefghijklmnopqrstuvwx";

pub struct KeyMaterial {
    pub rsa_private: String,
    pub rsa_public: String,
    pub ec_private: String,
    pub ec_public: String,
    /// Uncompressed P-256 point, for the JWK.
    pub ec_point: Vec<u8>,
    pub ed_private: String,
    pub ed_public: String,
    pub ec2_private: String,
    pub ec2_point: Vec<u8>,
}

pub fn keys() -> &'static KeyMaterial {
    static KEYS: OnceLock<KeyMaterial> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rsa = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let ec2 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        KeyMaterial {
            rsa_private: rsa.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            rsa_public: rsa
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
            ec_private: ec.serialize_pem(),
            ec_public: ec.public_key_pem(),
            ec_point: ec.public_key_raw().to_vec(),
            ed_private: ed.serialize_pem(),
            ed_public: ed.public_key_pem(),
            ec2_private: ec2.serialize_pem(),
            ec2_point: ec2.public_key_raw().to_vec(),
        }
    })
}

/// Write the public keys and the HMAC secret into `dir/keys/`.
pub fn write_keys(dir: &Path) {
    let k = keys();
    let d = dir.join("keys");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("rsa.pub.pem"), &k.rsa_public).unwrap();
    std::fs::write(d.join("ec.pub.pem"), &k.ec_public).unwrap();
    std::fs::write(d.join("ed.pub.pem"), &k.ed_public).unwrap();
    std::fs::write(d.join("hs.secret"), format!("{HS_SECRET}\n")).unwrap();
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims a good token carries: override or remove fields with `patch` (null removes).
pub fn claims(patch: Value) -> Value {
    let mut c = json!({
        "sub": "alice",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now(),
        "exp": now() + 300,
        "scope": "chat:read chat:write",
    });
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

/// Sign `claims` with the key for `alg`, naming `kid`.
pub fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let k = keys();
    let key = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(HS_SECRET.as_bytes())
        }
        Algorithm::RS256 | Algorithm::PS256 => {
            EncodingKey::from_rsa_pem(k.rsa_private.as_bytes()).unwrap()
        }
        Algorithm::ES256 => EncodingKey::from_ec_pem(k.ec_private.as_bytes()).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(k.ed_private.as_bytes()).unwrap(),
        other => panic!("no test key for {other:?}"),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    encode(&header, claims, &key).unwrap()
}

/// Sign with the second EC key (for JWKS rotation).
pub fn sign_ec2(kid: &str, claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(keys().ec2_private.as_bytes()).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    encode(&header, claims, &key).unwrap()
}

/// A JWK for an uncompressed P-256 point.
pub fn ec_jwk(kid: &str, point: &[u8]) -> Value {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": b64.encode(&point[1..33]), "y": b64.encode(&point[33..65]),
    })
}

/// Build a token by hand: `header` and `payload` JSON, and a signature string.
pub fn forge(header: &Value, payload: &Value, signature: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.{signature}",
        b64.encode(header.to_string()),
        b64.encode(payload.to_string())
    )
}

/// An HS256 token signed with `secret`, naming `kid` (for the algorithm-confusion attack).
pub fn hs256_with_secret(kid: &str, payload: &Value, secret: &[u8]) -> String {
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(kid.into());
    encode(&h, payload, &EncodingKey::from_secret(secret)).unwrap()
}
