//! Check 4, client certificates: what a policy asks of the certificate the listener's TLS
//! verifier accepted (`[policies.NAME.client_cert]`). The TLS layer decides whether a
//! certificate is genuine (chain to `client_ca`, CRLs); this decides whether that client may use
//! the route, what its subject is, and which headers carry its identity upstream.

use http::{HeaderName, HeaderValue};

use super::Rejection;
use crate::config::identity::{CertSubject, ClientCert};
use crate::core::glob::Glob;
use crate::core::reason::Reason;
use crate::net::peer_cert::PeerCert;

/// Which part of the certificate a forwarded header carries.
#[derive(Debug, Clone, Copy)]
enum Field {
    Subject,
    Sans,
    Fingerprint,
}

/// A compiled `client_cert` table.
pub(crate) struct CertPolicy {
    require: bool,
    allow_subjects: Vec<Glob>,
    allow_sans: Vec<Glob>,
    subject_from: Option<CertSubject>,
    headers: Vec<(Field, HeaderName)>,
}

impl CertPolicy {
    pub(crate) fn compile(c: &ClientCert, key: &str) -> Result<CertPolicy, String> {
        let mut headers = Vec::new();
        for (field, name) in c.forward_headers.names() {
            let h = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{key}.forward_headers.{field}: invalid header name"))?;
            let field = match field {
                "subject" => Field::Subject,
                "sans" => Field::Sans,
                _ => Field::Fingerprint,
            };
            headers.push((field, h));
        }
        Ok(CertPolicy {
            require: c.require,
            allow_subjects: c.allow_subjects.clone(),
            allow_sans: c.allow_sans.clone(),
            subject_from: c.subject_from,
            headers,
        })
    }

    /// `403` without a certificate when one is required, or with one the allow-lists (when
    /// set) do not name: its subject, or any of its SANs, must match.
    pub(crate) fn check(&self, cert: Option<&PeerCert>) -> Result<(), Rejection> {
        let Some(cert) = cert else {
            if self.require {
                return Err(refused("client certificate required"));
            }
            return Ok(());
        };
        if self.allow_subjects.is_empty() && self.allow_sans.is_empty() {
            return Ok(());
        }
        let subject_ok = self.allow_subjects.iter().any(|p| p.matches(&cert.subject));
        let san_ok = || {
            cert.sans
                .iter()
                .any(|san| self.allow_sans.iter().any(|p| p.matches(san)))
        };
        if subject_ok || san_ok() {
            Ok(())
        } else {
            Err(refused("client certificate not allowed"))
        }
    }

    /// The certificate's identity as the client's subject, when the policy says so.
    pub(crate) fn subject(&self, cert: Option<&PeerCert>) -> Option<String> {
        let cert = cert?;
        match self.subject_from? {
            CertSubject::Cn => cert.cn.clone(),
            CertSubject::Dn => Some(cert.subject.clone()),
            CertSubject::San => cert.sans.first().cloned(),
            CertSubject::Fingerprint => Some(cert.fingerprint.clone()),
        }
    }

    /// The header names this policy sets upstream (a client's own copies are removed).
    pub(crate) fn header_names(&self) -> impl Iterator<Item = &HeaderName> {
        self.headers.iter().map(|(_, h)| h)
    }

    /// The identity headers for the upstream request.
    pub(crate) fn headers(&self, cert: Option<&PeerCert>) -> Vec<(HeaderName, HeaderValue)> {
        let Some(cert) = cert else { return Vec::new() };
        self.headers
            .iter()
            .filter_map(|(field, name)| {
                let text = match field {
                    Field::Subject => cert.subject.clone(),
                    Field::Sans => cert.sans.join(","),
                    Field::Fingerprint => cert.fingerprint.clone(),
                };
                // A subject with characters a header cannot hold is not forwarded.
                HeaderValue::from_str(&text).ok().map(|v| (name.clone(), v))
            })
            .collect()
    }
}

fn refused(why: &str) -> Rejection {
    Rejection::new(Reason::ClientCert, 403, format!("{why}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> PeerCert {
        PeerCert {
            subject: "CN=svc-chat,O=Example".into(),
            cn: Some("svc-chat".into()),
            sans: vec![
                "chat.svc.example.com".into(),
                "spiffe://example.org/chat".into(),
            ],
            fingerprint: "ab".repeat(32),
        }
    }

    fn policy(toml: &str) -> CertPolicy {
        let c: ClientCert = toml::from_str(toml).unwrap();
        CertPolicy::compile(&c, "p").unwrap()
    }

    #[test]
    fn require_and_allow_lists() {
        let open = policy("");
        assert!(open.check(None).is_ok());
        assert!(open.check(Some(&cert())).is_ok());
        let required = policy("require = true");
        assert_eq!(required.check(None).unwrap_err().answer.status, 403);
        let by_san = policy("require = true\nallow_sans = [\"spiffe://example.org/*\"]");
        assert!(by_san.check(Some(&cert())).is_ok());
        let by_subject = policy("allow_subjects = [\"CN=svc-*,O=Example\"]");
        assert!(by_subject.check(Some(&cert())).is_ok());
        let other = policy(
            "allow_subjects = [\"CN=billing,O=Example\"]\nallow_sans = [\"*.billing.example.com\"]",
        );
        let e = other.check(Some(&cert())).unwrap_err();
        assert_eq!((e.reason, e.answer.status), (Reason::ClientCert, 403));
    }

    #[test]
    fn subject_and_headers() {
        let p = policy(
            "subject_from = \"cn\"\nforward_headers = { subject = \"X-Client-Subject\", sans = \"X-Client-Sans\", fingerprint = \"X-Client-Sha256\" }",
        );
        assert_eq!(p.subject(Some(&cert())).as_deref(), Some("svc-chat"));
        assert_eq!(p.subject(None), None);
        let h = p.headers(Some(&cert()));
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].0, "x-client-subject");
        assert_eq!(h[1].1, "chat.svc.example.com,spiffe://example.org/chat");
        let fp = policy("subject_from = \"fingerprint\"");
        assert_eq!(fp.subject(Some(&cert())).unwrap().len(), 64);
    }
}
