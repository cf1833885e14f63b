//! The one certificate every proxy serves, the ES256 key and token of the JWT phase, and the
//! client secret of the introspection phase.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

use crate::write_file as write;

/// Files in the benchmark's folder, and the token.
pub struct Material {
    /// Self-signed certificate for `localhost` (ECDSA P-256), PEM.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8).
    pub key: PathBuf,
    /// Certificate and key in one file, as HAProxy's `ssl crt` wants them.
    pub combined: PathBuf,
    /// The public key that verifies [`Material::token`], PEM.
    pub jwt_public: PathBuf,
    /// An ES256 token with `sub` and an `exp` a day away.
    pub token: String,
    /// Portcullis's client secret at the introspection endpoint.
    pub client_secret: PathBuf,
}

pub fn generate(dir: &Path) -> Result<Material, String> {
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .map_err(|e| format!("certificate: {e}"))?;
    let (cert_pem, key_pem) = (pair.cert.pem(), pair.signing_key.serialize_pem());
    let m = Material {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        combined: dir.join("combined.pem"),
        jwt_public: dir.join("jwt.pub.pem"),
        token: String::new(),
        client_secret: dir.join("introspection.secret"),
    };
    write(&m.client_secret, crate::identity::CLIENT_SECRET)?;
    write(&m.cert, &cert_pem)?;
    write(&m.key, &key_pem)?;
    write(&m.combined, &format!("{cert_pem}{key_pem}"))?;

    let jwt_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("JWT key: {e}"))?;
    write(&m.jwt_public, &jwt_key.public_key_pem())?;
    let signing = EncodingKey::from_ec_pem(jwt_key.serialize_pem().as_bytes())
        .map_err(|e| format!("JWT key: {e}"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = serde_json::json!({ "sub": "bench", "iat": now, "exp": now + 86_400 });
    let token = encode(&Header::new(Algorithm::ES256), &claims, &signing)
        .map_err(|e| format!("JWT: {e}"))?;
    Ok(Material { token, ..m })
}
