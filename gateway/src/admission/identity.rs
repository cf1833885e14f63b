//! The credentials of a policy besides a locally verified JWT, together: the client certificate
//! ([`client_cert`](super::client_cert)), an opaque token checked by introspection
//! ([`introspection`](super::introspection)) and the external authorizer
//! ([`ext_authz`](super::ext_authz)); what they make of the client's subject, and the identity
//! headers they send upstream.

use std::net::IpAddr;

use http::{HeaderName, HeaderValue};

use super::client_cert::CertPolicy;
use super::ext_authz::{Authorizer, Question};
use super::introspection::Introspector;
use super::token::{Locator, Verified};
use super::Rejection;
use crate::config::{Config, Policy};
use crate::net::http1::RequestHead;
use crate::net::peer_cert::PeerCert;

/// A policy's certificate, introspection and authorizer checks, compiled.
#[derive(Default)]
pub(crate) struct Identity {
    client_cert: Option<CertPolicy>,
    introspection: Option<Introspector>,
    ext_authz: Option<Authorizer>,
    /// The upstream headers this policy sets (client copies are stripped).
    header_names: Vec<HeaderName>,
}

impl Identity {
    pub(crate) fn compile(p: &Policy, key: &str) -> Result<Identity, String> {
        let client_cert = p
            .client_cert
            .as_ref()
            .map(|c| CertPolicy::compile(c, &format!("{key}.client_cert")))
            .transpose()?;
        let introspection = p
            .introspection
            .as_ref()
            .map(|i| Introspector::compile(i, &format!("{key}.introspection")))
            .transpose()?;
        let ext_authz = p
            .ext_authz
            .as_ref()
            .map(|e| Authorizer::compile(e, &format!("{key}.ext_authz")))
            .transpose()?;
        let header_names = client_cert
            .iter()
            .flat_map(CertPolicy::header_names)
            .chain(ext_authz.iter().flat_map(Authorizer::header_names))
            .cloned()
            .collect();
        Ok(Identity {
            client_cert,
            introspection,
            ext_authz,
            header_names,
        })
    }

    /// Check 4, the client certificate.
    pub(crate) fn check_cert(&self, cert: Option<&PeerCert>) -> Result<(), Rejection> {
        match &self.client_cert {
            Some(policy) => policy.check(cert),
            None => Ok(()),
        }
    }

    /// Checks 4 and 5 for an introspected token; `None` when the policy has no introspection.
    pub(crate) async fn introspect(
        &self,
        head: &RequestHead,
    ) -> Result<Option<Verified>, Rejection> {
        match &self.introspection {
            Some(i) => i.check(head).await.map(Some),
            None => Ok(None),
        }
    }

    /// Where an introspected token is looked for.
    pub(crate) fn locator(&self) -> Option<&Locator> {
        self.introspection.as_ref().map(Introspector::locator)
    }

    /// The client's subject: the certificate's identity when the policy takes it
    /// (`subject_from`), otherwise the token's `sub`.
    pub(crate) fn subject(
        &self,
        cert: Option<&PeerCert>,
        verified: Option<&Verified>,
    ) -> Option<String> {
        self.client_cert
            .as_ref()
            .and_then(|c| c.subject(cert))
            .or_else(|| verified.and_then(|v| v.subject.clone()))
    }

    /// Check 5c, the external authorizer (after the per-subject rate); with the certificate's
    /// headers, the identity headers for the upstream request.
    pub(crate) async fn authorize(
        &self,
        q: &Question<'_>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Rejection> {
        let mut headers = match &self.client_cert {
            Some(c) => c.headers(q.cert),
            None => Vec::new(),
        };
        if let Some(authorizer) = &self.ext_authz {
            headers.extend(authorizer.check(q).await?);
        }
        Ok(headers)
    }

    /// The upstream headers this policy sets.
    pub(crate) fn header_names(&self) -> &[HeaderName] {
        &self.header_names
    }
}

/// A question for the authorizer.
pub(crate) fn question<'a>(
    head: &'a RequestHead,
    route: &'a str,
    client_ip: Option<IpAddr>,
    cert: Option<&'a PeerCert>,
    token_param: &'a str,
) -> Question<'a> {
    Question {
        head,
        route,
        client_ip,
        cert,
        token_param,
    }
}

/// A `client_cert` table is of no use when no listener asks for client certificates: say so
/// (start-up, `--check` and reload), since every client of such a policy is then without one.
pub(crate) fn warn_without_client_ca(config: &Config) {
    let asks = config
        .listeners
        .iter()
        .any(|l| l.tls.as_ref().is_some_and(|t| t.client_ca.is_some()));
    if asks {
        return;
    }
    for (name, p) in &config.policies {
        if p.client_cert.is_some() {
            log::warn!(
                "policies.{name}.client_cert: no listener asks for client certificates (set \
                 client_ca in a [listeners.tls] table); its clients never have one"
            );
        }
    }
}
