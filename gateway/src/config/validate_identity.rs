//! The checks of the identity tables (`client_cert`, `ext_authz`, `introspection`; schema in
//! `identity`), each error naming its key.

use std::path::Path;

use super::identity::{ClientCert, ExtAuthz, Introspection};
use crate::core::duration::HumanDuration;
use crate::core::header::RELAY_RESERVED_HEADERS;
use crate::core::url::HttpUrl;

/// Headers the authorizer always gets from the gateway itself; `send_headers` cannot name them.
pub(crate) const AUTHZ_SET_HEADERS: [&str; 9] = [
    "host",
    "authorization",
    "cookie",
    "x-forwarded-method",
    "x-forwarded-uri",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-client-cert",
];

/// A header name a policy adds to the upstream request: valid, and none the relay sets itself.
fn upstream_header(name: &str, key: &str) -> Result<(), String> {
    let h = http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{key}: {name:?} is not a valid header name"))?;
    if RELAY_RESERVED_HEADERS.contains(&h.as_str()) || h.as_str().starts_with("sec-websocket-") {
        return Err(format!(
            "{key}: the header {name:?} is set by the gateway and cannot carry an identity"
        ));
    }
    Ok(())
}

fn positive(d: Option<HumanDuration>, key: &str) -> Result<(), String> {
    if d.is_some_and(|d| d.0.is_zero()) {
        return Err(format!("{key} must be greater than zero"));
    }
    Ok(())
}

fn ca_file(path: Option<&Path>, url: &HttpUrl, key: &str) -> Result<(), String> {
    let Some(path) = path else { return Ok(()) };
    if !url.tls() {
        return Err(format!(
            "{key}.ca_file is set but {key}.url is not https://"
        ));
    }
    if !path.is_file() {
        return Err(format!("{key}.ca_file: {} does not exist", path.display()));
    }
    Ok(())
}

/// Validate `[KEY.client_cert]`.
pub(crate) fn validate_client_cert(c: &ClientCert, key: &str) -> Result<(), String> {
    let mut seen = Vec::new();
    for (k, name) in c.forward_headers.names() {
        let hkey = format!("{key}.forward_headers.{k}");
        upstream_header(name, &hkey)?;
        let lower = name.to_ascii_lowercase();
        if seen.contains(&lower) {
            return Err(format!("{hkey}: the header {name:?} is used twice"));
        }
        seen.push(lower);
    }
    Ok(())
}

/// Validate `[KEY.ext_authz]`.
pub(crate) fn validate_ext_authz(e: &ExtAuthz, key: &str) -> Result<(), String> {
    positive(e.timeout, &format!("{key}.timeout"))?;
    positive(e.cache_ttl, &format!("{key}.cache_ttl"))?;
    ca_file(e.ca_file.as_deref(), &e.url, key)?;
    for (i, name) in e.send_headers.iter().enumerate() {
        let k = format!("{key}.send_headers[{i}]");
        let h = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{k}: {name:?} is not a valid header name"))?;
        if AUTHZ_SET_HEADERS.contains(&h.as_str()) {
            return Err(format!(
                "{k}: {name:?} is always sent (or set by the gateway); leave it out"
            ));
        }
    }
    for (i, name) in e.copy_headers.iter().enumerate() {
        upstream_header(name, &format!("{key}.copy_headers[{i}]"))?;
    }
    Ok(())
}

/// Validate `[KEY.introspection]`.
pub(crate) fn validate_introspection(i: &Introspection, key: &str) -> Result<(), String> {
    if i.client_id.is_empty() {
        return Err(format!("{key}.client_id must not be empty"));
    }
    i.secret().validate().map_err(|e| format!("{key}.{e}"))?;
    if i.client_secret_file.is_none() && i.client_secret_env.is_none() {
        return Err(format!(
            "{key}: set client_secret_file or client_secret_env (the gateway's client secret at \
             the endpoint)"
        ));
    }
    positive(i.timeout, &format!("{key}.timeout"))?;
    positive(i.cache_ttl, &format!("{key}.cache_ttl"))?;
    ca_file(i.ca_file.as_deref(), &i.url, key)?;
    if i.sources.as_ref().is_some_and(Vec::is_empty) {
        return Err(format!("{key}.sources must name at least one source"));
    }
    if i.max_token_bytes == Some(0) {
        return Err(format!("{key}.max_token_bytes must be at least 1"));
    }
    Ok(())
}
