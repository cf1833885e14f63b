//! The identity in a client certificate that the listener's TLS verifier accepted: its subject
//! (RFC 4514 text), common name, subject alternative names and SHA-256 fingerprint. Read once
//! per connection, right after the TLS handshake, for admission (`client_cert` policies), the
//! access log and the identity headers sent upstream.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use x509_parser::extensions::GeneralName;
use x509_parser::objects::{oid2abbrev, oid_registry};
use x509_parser::x509::X509Name;

/// A verified client certificate, as admission reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerCert {
    /// The subject, RFC 4514 text: the last RDN first, `,` between RDNs (`CN=a,O=Example`), as
    /// `openssl x509 -noout -subject -nameopt RFC2253` prints it.
    pub(crate) subject: String,
    /// The subject's (most specific) common name.
    pub(crate) cn: Option<String>,
    /// DNS names, URIs, e-mail addresses and IP addresses, in the certificate's order.
    pub(crate) sans: Vec<String>,
    /// SHA-256 of the certificate's DER, lower-case hex.
    pub(crate) fingerprint: String,
}

impl PeerCert {
    /// Read the end-entity certificate `der`.
    pub(crate) fn from_der(der: &[u8]) -> Result<PeerCert, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("unreadable client certificate: {e}"))?;
        let sans = match cert.subject_alternative_name() {
            Ok(Some(ext)) => ext
                .value
                .general_names
                .iter()
                .filter_map(general_name)
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(format!("bad subjectAltName in client certificate: {e}")),
        };
        let cn = cert
            .subject()
            .iter_common_name()
            .last()
            .and_then(|a| a.as_str().ok())
            .map(String::from);
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut fingerprint = String::with_capacity(64);
        for b in digest.as_ref() {
            let _ = write!(fingerprint, "{b:02x}");
        }
        Ok(PeerCert {
            subject: rfc4514(cert.subject()),
            cn,
            sans,
            fingerprint,
        })
    }
}

/// A name as RFC 4514 text (RDNs in reverse order, multi-valued RDNs joined with `+`).
fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type();
                    let key = oid2abbrev(oid, oid_registry())
                        .map(String::from)
                        .unwrap_or_else(|_| oid.to_id_string());
                    let value = match atv.as_str() {
                        Ok(s) => escape(s),
                        Err(_) => {
                            let mut hex = String::from("#");
                            for b in atv.attr_value().as_bytes() {
                                let _ = write!(hex, "{b:02x}");
                            }
                            hex
                        }
                    };
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// RFC 4514 section 2.4 escaping.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        if c == '\0' {
            out.push_str("\\00");
        } else {
            out.push(c);
        }
    }
    out
}

fn general_name(name: &GeneralName<'_>) -> Option<String> {
    match name {
        GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
            Some((*s).to_string())
        }
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => Some(
                IpAddr::from(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])).to_string(),
            ),
            16 => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(bytes);
                Some(IpAddr::from(Ipv6Addr::from(octets)).to_string())
            }
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_subject_sans_and_fingerprint() {
        let mut params = rcgen::CertificateParams::new(vec![
            "chat.svc.example.com".to_string(),
            "10.0.0.1".to_string(),
        ])
        .unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://example.org/chat".try_into().unwrap(),
        ));
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "Example, Inc.");
        dn.push(rcgen::DnType::CommonName, "svc-chat");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let peer = PeerCert::from_der(cert.der()).unwrap();
        assert_eq!(peer.subject, "CN=svc-chat,O=Example\\, Inc.");
        assert_eq!(peer.cn.as_deref(), Some("svc-chat"));
        assert_eq!(
            peer.sans,
            [
                "chat.svc.example.com",
                "10.0.0.1",
                "spiffe://example.org/chat"
            ]
        );
        assert_eq!(peer.fingerprint.len(), 64);
        assert!(PeerCert::from_der(b"not a certificate").is_err());
    }

    #[test]
    fn escapes() {
        assert_eq!(escape(" a+b "), "\\ a\\+b\\ ");
        assert_eq!(escape("#x"), "\\#x");
    }
}
