//! Validation of a parsed configuration: every check that a single value's type cannot make,
//! each error naming the key (`routes[2].policy`, `policies.chat.jwt.keys[0]`, ...).

use super::balance::{Balance, HashKey};
use super::policy::{Jwt, Policy, Rate};
use super::route::{Mode, Route};
use super::validate_identity as identity;
use super::{defaults, Config};
use crate::core::credential::is_token_subprotocol;
use crate::core::header::RELAY_RESERVED_HEADERS;

/// Validate a whole configuration (policies included).
pub(super) fn config(c: &Config) -> Result<(), String> {
    let s = &c.server;
    if let super::server::Threads::Count(n) = s.threads {
        if n == 0 || n > 1024 {
            return Err("server.threads must be between 1 and 1024, or \"auto\"".into());
        }
    }
    if s.drain_window.is_some_and(|d| d.0 > s.shutdown_grace.0) {
        return Err("server.drain_window must not be longer than server.shutdown_grace".into());
    }
    c.admin.validate()?;
    let l = &c.limits;
    check_range("limits.max_head_bytes", l.max_head_bytes, 1024, 1 << 20)?;
    check_range("limits.max_headers", l.max_headers, 8, 1024)?;
    check_range("limits.max_message_bytes", l.max_message_bytes, 1, 1 << 30)?;
    check_range(
        "limits.read_buffer_bytes",
        l.read_buffer_bytes,
        512,
        1 << 20,
    )?;
    check_range(
        "limits.max_write_buffer_bytes",
        l.max_write_buffer_bytes,
        4096,
        1 << 30,
    )?;
    for (key, d) in [
        ("limits.head_timeout", l.head_timeout),
        ("limits.keepalive_timeout", l.keepalive_timeout),
        ("limits.close_timeout", l.close_timeout),
    ] {
        if d.0.is_zero() {
            return Err(format!("{key} must be greater than zero"));
        }
    }
    listeners(c)?;
    c.http2.validate()?;
    for (key, v) in [
        ("limits.max_connections", l.max_connections),
        ("limits.max_pending_connections", l.max_pending_connections),
        ("limits.max_pending_per_ip", l.max_pending_per_ip),
    ] {
        if v == 0 {
            return Err(format!("{key} must be at least 1"));
        }
    }
    if let Some(cluster) = &c.cluster {
        cluster.validate()?;
    }
    if let Some(tracing) = &c.tracing {
        tracing.validate()?;
    }
    for (name, p) in &c.policies {
        policy(p, &format!("policies.{name}"))?;
        if p.cluster.is_some() && c.cluster.is_none() {
            return Err(format!(
                "policies.{name}.cluster: there is no [cluster] table (a policy's on_error \
                 applies to the cluster store)"
            ));
        }
    }
    routes(c)
}

fn listeners(c: &Config) -> Result<(), String> {
    if c.listeners.is_empty() {
        return Err("listeners: at least one [[listeners]] table is required".into());
    }
    let mut seen = Vec::new();
    for (i, listener) in c.listeners.iter().enumerate() {
        let addr = listener.address;
        // Port 0: a free port chosen at start, never the same twice.
        if addr.is_fixed() && seen.contains(&addr) {
            return Err(format!("listeners[{i}].address: {addr} is used twice"));
        }
        if addr.is_fixed() && c.admin.enabled && c.admin.address == addr {
            return Err(format!(
                "listeners[{i}].address: {addr} is also admin.address; the admin listener \
                 must be separate"
            ));
        }
        seen.push(addr);
        let Some(tls) = &listener.tls else { continue };
        for (j, sni) in tls.sni.iter().enumerate() {
            let key = format!("listeners[{i}].tls.sni[{j}]");
            if sni.names.is_empty() {
                return Err(format!("{key}.names must name at least one server name"));
            }
            for (k, path) in [("cert", &sni.cert), ("key", &sni.key)] {
                if !path.exists() {
                    return Err(format!("{key}.{k}: {} does not exist", path.display()));
                }
            }
        }
        client_ca(tls, &format!("listeners[{i}].tls"))?;
        for (key, path) in [("cert", &tls.cert), ("key", &tls.key)] {
            if path.as_os_str().is_empty() {
                return Err(format!("listeners[{i}].tls.{key} must not be empty"));
            }
            if !tls.generate_self_signed && !path.exists() {
                return Err(format!(
                    "listeners[{i}].tls.{key}: {} does not exist (set \
                     generate_self_signed = true for a development certificate)",
                    path.display()
                ));
            }
        }
    }
    Ok(())
}

/// The client-certificate keys of a listener's TLS table (`key`).
fn client_ca(tls: &super::Tls, key: &str) -> Result<(), String> {
    let Some(ca) = &tls.client_ca else {
        if tls.client_auth.is_some() || !tls.client_crls.is_empty() {
            return Err(format!(
                "{key}: client_auth and client_crls need client_ca (the CA that issues client \
                 certificates)"
            ));
        }
        return Ok(());
    };
    if !ca.is_file() {
        return Err(format!("{key}.client_ca: {} does not exist", ca.display()));
    }
    for (j, crl) in tls.client_crls.iter().enumerate() {
        if !crl.is_file() {
            return Err(format!(
                "{key}.client_crls[{j}]: {} does not exist",
                crl.display()
            ));
        }
    }
    Ok(())
}

fn routes(c: &Config) -> Result<(), String> {
    let mut paths = Vec::new();
    for (i, route) in c.routes.iter().enumerate() {
        let key = |k: &str| format!("routes[{i}].{k}");
        if !route.path.starts_with('/') || route.path.contains(['?', '#', ' ']) {
            return Err(format!(
                "{}: {:?} must start with '/' and hold no query",
                key("path"),
                route.path
            ));
        }
        if paths.contains(&route.path.as_str()) {
            return Err(format!("{}: {:?} is routed twice", key("path"), route.path));
        }
        paths.push(&route.path);
        match route.mode {
            Mode::Static => {
                if route.prefix.is_some() {
                    return Err(format!(
                        "{} is only valid with mode = \"echo\"",
                        key("prefix")
                    ));
                }
                if let Some(status) = route.status {
                    if !(200..=599).contains(&status) {
                        return Err(format!(
                            "{}: {status} is not a final HTTP status",
                            key("status")
                        ));
                    }
                }
            }
            Mode::Echo => {
                for (k, set) in [
                    ("status", route.status.is_some()),
                    ("body", route.body.is_some()),
                ] {
                    if set {
                        return Err(format!("{} is only valid with mode = \"static\"", key(k)));
                    }
                }
            }
            Mode::Relay => relay(route, &key)?,
        }
        if route.mode != Mode::Relay {
            if let Some(k) = route.relay_keys_set().first() {
                return Err(format!("{} is only valid with mode = \"relay\"", key(k)));
            }
        }
        if let Some(max) = route.max_message_bytes {
            check_range(&key("max_message_bytes"), max, 1, 1 << 30)?;
        }
        if let Some(d) = route.max_session_duration {
            if d.0 < std::time::Duration::from_secs(1) {
                return Err(format!(
                    "{} must be at least 1s",
                    key("max_session_duration")
                ));
            }
            if route.mode == Mode::Static {
                return Err(format!(
                    "{} is only valid with mode = \"echo\" or \"relay\"",
                    key("max_session_duration")
                ));
            }
        }
        if let Some(compression) = &route.compression {
            if route.mode == Mode::Static {
                return Err(format!(
                    "{} is only valid with mode = \"echo\" or \"relay\"",
                    key("compression")
                ));
            }
            compression
                .validate()
                .map_err(|e| format!("{}{e}", key("")))?;
        }
        let policy = route.policy_name();
        if policy != defaults::POLICY && !c.policies.contains_key(policy) {
            return Err(format!(
                "{}: no policy named {policy:?} (define [policies.{policy}])",
                key("policy")
            ));
        }
        claim_key_has_a_token(c, route, &key("hash_key"))?;
    }
    Ok(())
}

/// The checks of a `relay` route's keys. `key` names a key of this route.
fn relay(route: &Route, key: &dyn Fn(&str) -> String) -> Result<(), String> {
    for (k, set) in [
        ("prefix", route.prefix.is_some()),
        ("status", route.status.is_some()),
        ("body", route.body.is_some()),
    ] {
        if set {
            return Err(format!("{} is not valid with mode = \"relay\"", key(k)));
        }
    }
    let upstreams = match &route.upstreams {
        Some(u) if !u.is_empty() => u,
        _ => {
            return Err(format!(
                "{}: a relay route needs at least one upstream (e.g. upstreams = \
                 [\"ws://127.0.0.1:9001/chat\"])",
                key("upstreams")
            ))
        }
    };
    if upstreams.len() > 256 {
        return Err(format!("{}: at most 256 upstreams", key("upstreams")));
    }
    for (j, u) in upstreams.iter().enumerate() {
        let max = defaults::MAX_UPSTREAM_WEIGHT as usize;
        check_range(
            &key(&format!("upstreams[{j}].weight")),
            u.weight as usize,
            1,
            max,
        )?;
    }
    balancing(route, key)?;
    let any_tls = upstreams.iter().any(|u| u.tls());
    for (k, d) in [
        ("connect_timeout", route.connect_timeout),
        ("ping_timeout", route.ping_timeout),
        ("idle_timeout", route.idle_timeout),
        ("health_check_interval", route.health_check_interval),
        ("unhealthy_for", route.unhealthy_for),
    ] {
        if d.is_some_and(|d| d.0.is_zero()) {
            return Err(format!("{} must be greater than zero", key(k)));
        }
    }
    let tls_keys = [
        ("upstream_ca_file", route.upstream_ca_file.as_ref()),
        ("upstream_client_cert", route.upstream_client_cert.as_ref()),
        ("upstream_client_key", route.upstream_client_key.as_ref()),
    ];
    for (k, path) in tls_keys {
        let Some(path) = path else { continue };
        if !any_tls {
            return Err(format!("{} is set but no upstream uses wss://", key(k)));
        }
        if !path.is_file() {
            return Err(format!("{}: {} does not exist", key(k), path.display()));
        }
    }
    if route.upstream_client_cert.is_some() != route.upstream_client_key.is_some() {
        return Err(format!(
            "{} and {} go together: set both or neither",
            key("upstream_client_cert"),
            key("upstream_client_key")
        ));
    }
    if let Some(sni) = &route.upstream_sni {
        if !any_tls {
            return Err(format!(
                "{} is set but no upstream uses wss://",
                key("upstream_sni")
            ));
        }
        if rustls::pki_types::ServerName::try_from(sni.as_str()).is_err() {
            return Err(format!(
                "{}: {sni:?} is not a DNS name or IP address",
                key("upstream_sni")
            ));
        }
    }
    if let Some(protocols) = &route.subprotocols {
        for (j, p) in protocols.iter().enumerate() {
            let token = !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
            if !token {
                return Err(format!(
                    "{}[{j}]: {p:?} is not a valid subprotocol name",
                    key("subprotocols")
                ));
            }
            if is_token_subprotocol(p) {
                return Err(format!(
                    "{}[{j}]: \"bearer.\" entries carry tokens and are never forwarded",
                    key("subprotocols")
                ));
            }
        }
    }
    if let Some(claims) = &route.forward_claims {
        let mut headers = Vec::new();
        for (claim, header) in claims {
            let k = key(&format!("forward_claims.{claim}"));
            let name = http::HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| format!("{k}: {header:?} is not a valid header name"))?;
            if RELAY_RESERVED_HEADERS.contains(&name.as_str())
                || name.as_str().starts_with("sec-websocket-")
            {
                return Err(format!(
                    "{k}: the header {header:?} is set by the gateway and cannot carry a claim"
                ));
            }
            if headers.contains(&name) {
                return Err(format!("{k}: the header {header:?} carries two claims"));
            }
            headers.push(name);
        }
    }
    if let Some(max) = route.upstream_max_message_bytes {
        check_range(&key("upstream_max_message_bytes"), max, 1, 1 << 30)?;
    }
    Ok(())
}

/// The balancing keys of a `relay` route: the hash keys only with `balance = "hash"`, a bound
/// that bounds (at least the mean).
fn balancing(route: &Route, key: &dyn Fn(&str) -> String) -> Result<(), String> {
    if route.balance != Some(Balance::Hash) {
        for (k, set) in [
            ("hash_key", route.hash_key.is_some()),
            ("hash_balance_factor", route.hash_balance_factor.is_some()),
        ] {
            if set {
                return Err(format!("{} is only valid with balance = \"hash\"", key(k)));
            }
        }
    }
    if let Some(c) = route.hash_balance_factor {
        if !(c == 0.0 || (1.0..=100.0).contains(&c)) {
            return Err(format!(
                "{} = {c}: must be between 1.0 and 100.0 (no upstream above c × the mean), or 0 \
                 for no bound",
                key("hash_balance_factor")
            ));
        }
    }
    Ok(())
}

/// A `claim:` hash key is read from the verified token: the route's policy must verify one
/// (`jwt` or `introspection`), or no handshake would ever have the key.
fn claim_key_has_a_token(c: &Config, route: &Route, key: &str) -> Result<(), String> {
    if route.mode != Mode::Relay || route.balance != Some(Balance::Hash) {
        return Ok(());
    }
    let hash_key = route.balancing().hash_key;
    if !matches!(hash_key, HashKey::Claim(_)) {
        return Ok(());
    }
    let name = route.policy_name();
    let verifies = c
        .policies
        .get(name)
        .is_some_and(|p| p.jwt.is_some() || p.introspection.is_some());
    if verifies {
        return Ok(());
    }
    Err(format!(
        "{key}: \"{hash_key}\" needs a policy that verifies tokens (jwt or introspection), and \
         the policy {name:?} verifies none; hash on a header, query, cookie or client_ip instead"
    ))
}

/// Validate a policy; `key` is its key path (e.g. `policies.chat`).
pub(super) fn policy(p: &Policy, key: &str) -> Result<(), String> {
    if let Some(origin) = &p.origin {
        for (i, o) in origin.allow.iter().enumerate() {
            origin_pattern(o).map_err(|e| format!("{key}.origin.allow[{i}]: {e}"))?;
        }
    }
    if let Some(jwt) = &p.jwt {
        self::jwt(jwt, &format!("{key}.jwt"))?;
    }
    if let Some(c) = &p.client_cert {
        identity::validate_client_cert(c, &format!("{key}.client_cert"))?;
    }
    if let Some(e) = &p.ext_authz {
        identity::validate_ext_authz(e, &format!("{key}.ext_authz"))?;
    }
    if let Some(i) = &p.introspection {
        identity::validate_introspection(i, &format!("{key}.introspection"))?;
        if p.jwt.is_some() {
            return Err(format!(
                "{key}: jwt and introspection are two ways to check one token; keep one"
            ));
        }
    }
    let l = &p.limits;
    for (name, rate) in [
        ("handshakes_per_ip", l.handshakes_per_ip),
        ("handshakes_per_subject", l.handshakes_per_subject),
    ] {
        if let Some(r) = rate {
            self::rate(&r).map_err(|e| format!("{key}.limits.{name}: {e}"))?;
        }
    }
    for (name, v) in [
        ("connections_per_ip", l.connections_per_ip),
        ("connections_per_subject", l.connections_per_subject),
        ("connections_per_route", l.connections_per_route),
        (
            "messages_per_second",
            l.messages_per_second.map(|v| v as usize),
        ),
        ("bytes_per_second", l.bytes_per_second.map(|v| v as usize)),
    ] {
        if v == Some(0) {
            return Err(format!("{key}.limits.{name} must be at least 1"));
        }
    }
    let per_subject = l.handshakes_per_subject.is_some() || l.connections_per_subject.is_some();
    let has_subject = p.jwt.is_some()
        || p.introspection.is_some()
        || p.client_cert
            .as_ref()
            .is_some_and(|c| c.subject_from.is_some());
    if per_subject && !has_subject {
        return Err(format!(
            "{key}.limits: per-subject limits need a subject: a [{key}.jwt] or \
             [{key}.introspection] table, or [{key}.client_cert] subject_from"
        ));
    }
    Ok(())
}

fn rate(r: &Rate) -> Result<(), String> {
    match (r.per_second, r.per_minute) {
        (Some(0), _) | (_, Some(0)) => Err("the rate must be at least 1".into()),
        (Some(_), Some(_)) => Err("set per_second or per_minute, not both".into()),
        (None, None) => Err("set per_second or per_minute".into()),
        _ if r.burst == Some(0) => Err("burst must be at least 1".into()),
        _ => Ok(()),
    }
}

fn jwt(j: &Jwt, key: &str) -> Result<(), String> {
    if j.keys.is_empty() && j.jwks_file.is_none() && j.jwks_url.is_none() {
        return Err(format!(
            "{key}: no verification keys (set keys, jwks_file or jwks_url)"
        ));
    }
    if let Some(sources) = &j.sources {
        if sources.is_empty() {
            return Err(format!("{key}.sources must name at least one source"));
        }
    }
    if j.max_token_bytes == Some(0) {
        return Err(format!("{key}.max_token_bytes must be at least 1"));
    }
    for (i, k) in j.keys.iter().enumerate() {
        let kkey = format!("{key}.keys[{i}]");
        let secrets = k.secret_file.is_some() as u8 + k.secret_env.is_some() as u8;
        if k.alg.is_hmac() {
            if k.pem_file.is_some() {
                return Err(format!(
                    "{kkey}: {:?} takes secret_file or secret_env, not pem_file",
                    k.alg
                ));
            }
            if secrets != 1 {
                return Err(format!(
                    "{kkey}: {:?} needs exactly one of secret_file, secret_env",
                    k.alg
                ));
            }
        } else {
            if secrets != 0 {
                return Err(format!(
                    "{kkey}: {:?} is verified with a public key (pem_file); a secret would allow \
                     algorithm confusion",
                    k.alg
                ));
            }
            if k.pem_file.is_none() {
                return Err(format!("{kkey}: {:?} needs pem_file", k.alg));
            }
        }
    }
    Ok(())
}

/// An origin pattern is `scheme://host[:port]`, where the host may start with `*.`.
fn origin_pattern(o: &str) -> Result<(), String> {
    let (scheme, rest) = o.split_once("://").ok_or_else(|| {
        format!("{o:?} is not an origin (expected e.g. \"https://app.example.com\")")
    })?;
    if !matches!(scheme, "http" | "https") {
        return Err(format!("{o:?}: scheme must be http or https"));
    }
    if rest.is_empty() || rest.contains('/') {
        return Err(format!("{o:?}: an origin has no path (no trailing '/')"));
    }
    let wildcard_ok = match rest.strip_prefix("*.") {
        Some(domain) => !domain.contains('*') && !domain.is_empty(),
        None => !rest.contains('*'),
    };
    if !wildcard_ok {
        return Err(format!(
            "{o:?}: '*' is only allowed as the first label (\"https://*.example.com\")"
        ));
    }
    Ok(())
}

fn check_range(key: &str, v: usize, min: usize, max: usize) -> Result<(), String> {
    if v < min || v > max {
        return Err(format!("{key} = {v} is out of range ({min}..={max})"));
    }
    Ok(())
}
