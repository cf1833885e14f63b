//! Why no upstream socket could be had, classified by type; the client's answer, the rejection
//! reason and the metric label are all derived here.

use std::fmt;
use std::io;

use crate::admission::Rejection;
use crate::core::labels::UpstreamErrorKind;
use crate::core::reason::Reason;
use crate::net::answer::Answer;
use crate::net::websocket::upstream::Failed;

/// Largest upstream refusal body passed on to the client; longer ones are replaced.
const MAX_PASSED_BODY: usize = 1024;

/// Answer headers of an upstream refusal that the client gets too.
const PASSED_HEADERS: [&str; 3] = ["WWW-Authenticate", "Retry-After", "Sec-WebSocket-Version"];

/// Why connecting to an upstream failed.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// Every upstream is out of rotation.
    NoneAvailable,
    /// The TCP connection could not be made (refused, reset, unreachable, name not resolved).
    Connect(io::Error),
    /// The TLS handshake with the upstream failed (certificate, protocol).
    Tls(io::Error),
    /// The upstream's answer to the upgrade was not a WebSocket handshake (a `200`, a redirect,
    /// a broken head).
    Handshake(String),
    /// No complete handshake within `connect_timeout`.
    Timeout,
    /// The upstream answered the upgrade with a final error status (e.g. `401`, `403`).
    Refused {
        status: u16,
        body: Option<String>,
        headers: Vec<(&'static str, String)>,
    },
    /// The gateway could not form the request or the TLS name (a configuration problem).
    Local(String),
    /// A claim the route forwards holds what no header can carry (`forward::Refused`).
    Identity(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::NoneAvailable => f.write_str("no upstream in the rotation"),
            ConnectError::Connect(e) => write!(f, "connect: {e}"),
            ConnectError::Tls(e) => write!(f, "TLS: {e}"),
            ConnectError::Handshake(why) => write!(f, "handshake: {why}"),
            ConnectError::Timeout => f.write_str("timed out"),
            ConnectError::Refused { status, .. } => write!(f, "refused the upgrade with {status}"),
            ConnectError::Local(why) => f.write_str(why),
            ConnectError::Identity(claim) => {
                write!(f, "claim {claim:?} cannot be forwarded as a header")
            }
        }
    }
}

impl ConnectError {
    /// The metric label of a failed attempt.
    pub(crate) fn kind(&self) -> UpstreamErrorKind {
        match self {
            ConnectError::Timeout => UpstreamErrorKind::Timeout,
            ConnectError::Connect(_) => UpstreamErrorKind::Refused,
            ConnectError::Tls(_) => UpstreamErrorKind::Tls,
            ConnectError::Refused { .. } | ConnectError::Handshake(_) => {
                UpstreamErrorKind::Handshake
            }
            ConnectError::NoneAvailable | ConnectError::Local(_) | ConnectError::Identity(_) => {
                UpstreamErrorKind::Other
            }
        }
    }

    /// Whether the upstream took part and said no: it stays in the rotation and its answer goes
    /// to the client as it is.
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(self, ConnectError::Refused { .. })
    }

    /// The rejection the client gets instead of a `101`.
    pub(crate) fn rejection(&self) -> Rejection {
        let reason = match self {
            ConnectError::Refused { .. } => Reason::UpstreamRefused,
            ConnectError::Identity(_) => Reason::IdentityUnforwardable,
            _ => Reason::UpstreamUnavailable,
        };
        Rejection {
            reason,
            answer: self.answer(),
            cluster_fallback: false,
        }
    }

    fn answer(&self) -> Answer {
        match self {
            ConnectError::NoneAvailable => Answer::new(502, "no healthy upstream\n"),
            ConnectError::Timeout => Answer::new(504, "upstream timed out\n"),
            ConnectError::Identity(_) => Answer::new(403, "identity cannot be forwarded\n"),
            ConnectError::Refused {
                status,
                body,
                headers,
            } => {
                let body = body
                    .clone()
                    .unwrap_or_else(|| format!("upstream answered {status}\n"));
                let mut answer = Answer::new(*status, body);
                for (name, value) in headers {
                    answer = answer.header(name, value.clone());
                }
                answer
            }
            ConnectError::Connect(_)
            | ConnectError::Tls(_)
            | ConnectError::Handshake(_)
            | ConnectError::Local(_) => Answer::new(502, "upstream unavailable\n"),
        }
    }

    /// Classify a failed upstream handshake.
    pub(crate) fn from_handshake(e: Failed) -> ConnectError {
        let response = match e {
            Failed::Answered(response) => response,
            Failed::Io(e) => return ConnectError::Handshake(e.to_string()),
            Failed::Invalid(why) => return ConnectError::Handshake(why),
        };
        let status = response.status().as_u16();
        if !(400..=599).contains(&status) {
            // A redirect or a 200 to an upgrade is a broken upstream, and its Location
            // would point clients at an internal address.
            return ConnectError::Handshake(format!("answered {status}"));
        }
        let headers = PASSED_HEADERS
            .iter()
            .filter_map(|name| {
                let v = response.headers().get(*name)?.to_str().ok()?;
                let clean = !v.contains(['\r', '\n']) && v.len() <= 256;
                clean.then(|| (*name, v.to_string()))
            })
            .collect();
        // The handshake hands over the bytes it had read past the head: the body when it is
        // complete (its Content-Length, or any when the upstream sent none), short and text;
        // otherwise a body of our own.
        let expected = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        let body = response
            .body()
            .as_ref()
            .filter(|b| expected.is_none_or(|n| n == b.len()))
            .filter(|b| !b.is_empty() && b.len() <= MAX_PASSED_BODY)
            .and_then(|b| String::from_utf8(b.clone()).ok());
        ConnectError::Refused {
            status,
            body,
            headers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reason_and_label_come_from_the_type() {
        let refused = ConnectError::Refused {
            status: 403,
            body: Some("no\n".into()),
            headers: vec![("WWW-Authenticate", "Bearer".into())],
        };
        let r = refused.rejection();
        assert_eq!((r.answer.status, r.reason), (403, Reason::UpstreamRefused));
        assert_eq!(r.answer.body, "no\n");
        assert_eq!(refused.kind(), UpstreamErrorKind::Handshake);
        let cases = [
            (ConnectError::NoneAvailable, 502, UpstreamErrorKind::Other),
            (ConnectError::Timeout, 504, UpstreamErrorKind::Timeout),
            (
                ConnectError::Connect(io::ErrorKind::ConnectionRefused.into()),
                502,
                UpstreamErrorKind::Refused,
            ),
            (
                ConnectError::Tls(io::Error::other("bad certificate")),
                502,
                UpstreamErrorKind::Tls,
            ),
            (
                ConnectError::Handshake("answered 200".into()),
                502,
                UpstreamErrorKind::Handshake,
            ),
        ];
        for (e, status, kind) in cases {
            let r = e.rejection();
            assert_eq!(r.answer.status, status, "{e}");
            assert_eq!(r.reason, Reason::UpstreamUnavailable, "{e}");
            assert_eq!(e.kind(), kind, "{e}");
        }
    }
}
