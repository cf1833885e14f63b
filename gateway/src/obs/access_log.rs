//! The access log: one line per WebSocket session at its end, one per rejection, written through
//! the process logger (`obs::logger`) as text or JSON (`[server] log_format`).
//!
//! Access lines go through the `log` crate with target `access` at level `info`, so they share
//! the process's stream (stderr) and filter (`RUST_LOG`; e.g. `RUST_LOG=info,access=off` turns
//! them off). In `text` format a line reads
//!
//! ```text
//! [2026-01-01T12:00:00.000Z INFO  access] session route=/ws/echo client=127.0.0.1 result=closed close_code=1000 initiator=client duration_s=1.250 messages_in=2 messages_out=2 bytes_in=10 bytes_out=22 protocol=h1
//! [2026-01-01T12:00:00.000Z INFO  access] rejection route=/ws/echo client=127.0.0.1 reason=upgrade_required status=426 protocol=h1
//! ```
//!
//! A line whose admission was decided under this process's own limits because the cluster store
//! (Redis) failed ends in `cluster=local_fallback`.
//!
//! and in `json` format it is one JSON object per line with the same keys plus `ts`, `level`,
//! `target` and `event`. Only the fields below are ever written: the route is the configured
//! path (never the request target, so never a query string and never its `access_token`), and
//! no header, cookie or token is logged.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use log::Level;
use serde_json::{Map, Value};

use crate::core::end::{EndReason, SessionEnd};
use crate::core::log_format::LogFormat;
use crate::core::reason::Reason;

/// The `cluster` field of a line whose admission was decided without the cluster store
/// (Redis failed): `cluster=local_fallback`.
pub(crate) const CLUSTER_FALLBACK: &str = "local_fallback";

/// The `log` target of access lines.
pub(crate) const TARGET: &str = "access";

/// One session's access line.
#[derive(Debug)]
pub(crate) struct SessionRecord<'a> {
    /// The configured route path.
    pub(crate) route: &'a str,
    pub(crate) client: Option<IpAddr>,
    /// The HTTP that carried the socket: `h1` or `h2`.
    pub(crate) protocol: &'a str,
    /// The token's subject, when the route authenticated the client.
    pub(crate) subject: Option<&'a str>,
    pub(crate) end: &'a SessionEnd,
    pub(crate) duration: Duration,
    /// What a relayed session adds: the upstream and why the session ended.
    pub(crate) relay: Option<RelayRecord<'a>>,
    /// Admitted under this process's own limits because the cluster store failed.
    pub(crate) cluster_fallback: bool,
    /// The WebSocket extension agreed with the client (permessage-deflate and its parameters).
    pub(crate) extension: Option<&'a str>,
}

/// The relay part of a session line.
#[derive(Debug)]
pub(crate) struct RelayRecord<'a> {
    /// The upstream URL as configured.
    pub(crate) upstream: &'a str,
    /// Why the session ended.
    pub(crate) end_reason: EndReason,
    /// The close code the upstream got or sent.
    pub(crate) upstream_close_code: Option<u16>,
}

/// One rejection's access line.
#[derive(Debug)]
pub(crate) struct RejectionRecord<'a> {
    /// The configured route path, or `none` before routing.
    pub(crate) route: &'a str,
    pub(crate) client: Option<IpAddr>,
    /// The HTTP that carried the request: `h1` or `h2`.
    pub(crate) protocol: &'a str,
    /// The token's subject, when it was known at the time of the rejection.
    pub(crate) subject: Option<&'a str>,
    pub(crate) reason: Reason,
    pub(crate) status: u16,
    /// Decided without the cluster store because it failed.
    pub(crate) cluster_fallback: bool,
}

/// Writes access lines in the configured format.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AccessLog {
    pub(crate) format: LogFormat,
}

/// The fields of one line, in order.
pub(crate) type Fields = Vec<(&'static str, Value)>;

impl AccessLog {
    pub(crate) fn new(format: LogFormat) -> AccessLog {
        AccessLog { format }
    }

    /// The line for a session that ended.
    pub(crate) fn session(&self, r: &SessionRecord<'_>) {
        self.emit("session", session_fields(r));
    }

    /// The line for a rejected request.
    pub(crate) fn rejection(&self, r: &RejectionRecord<'_>) {
        self.emit("rejection", rejection_fields(r));
    }

    fn emit(&self, event: &'static str, fields: Fields) {
        if log::log_enabled!(target: TARGET, Level::Info) {
            let line = self.format_line(event, &fields);
            log::info!(target: TARGET, "{line}");
        }
    }

    /// The message of one line (without the logger's time and level).
    pub(crate) fn format_line(&self, event: &'static str, fields: &Fields) -> String {
        match self.format {
            LogFormat::Text => {
                let mut out = String::from(event);
                for (key, value) in fields {
                    let _ = write!(out, " {key}={}", text_value(value));
                }
                out
            }
            LogFormat::Json => {
                let mut map = Map::new();
                map.insert("event".into(), Value::from(event));
                for (key, value) in fields {
                    map.insert((*key).into(), value.clone());
                }
                Value::Object(map).to_string()
            }
        }
    }
}

fn client_value(client: Option<IpAddr>) -> Value {
    client.map_or(Value::from("unknown"), |ip| Value::from(ip.to_string()))
}

pub(crate) fn session_fields(r: &SessionRecord<'_>) -> Fields {
    let e = r.end;
    let mut f: Fields = vec![
        ("route", r.route.into()),
        ("client", client_value(r.client)),
    ];
    if let Some(subject) = r.subject {
        f.push(("subject", subject.into()));
    }
    if let Some(relay) = &r.relay {
        f.push(("upstream", relay.upstream.into()));
    }
    let result = if e.close_code.is_some() {
        "closed"
    } else {
        "dropped"
    };
    f.push(("result", result.into()));
    match (&r.relay, e.reason) {
        (Some(relay), _) => f.push(("end_reason", relay.end_reason.as_str().into())),
        (None, Some(reason)) => f.push(("end_reason", reason.as_str().into())),
        (None, None) => {}
    }
    f.extend([
        (
            "close_code",
            e.close_code.map_or(Value::from("none"), Value::from),
        ),
        ("initiator", e.initiator.as_str().into()),
        (
            "duration_s",
            Value::from((r.duration.as_secs_f64() * 1000.0).round() / 1000.0),
        ),
        ("messages_in", e.messages_in.into()),
        ("messages_out", e.messages_out.into()),
        ("bytes_in", e.bytes_in.into()),
        ("bytes_out", e.bytes_out.into()),
    ]);
    if let Some(relay) = &r.relay {
        let code = relay.upstream_close_code;
        f.push((
            "upstream_close_code",
            code.map_or(Value::from("none"), Value::from),
        ));
    }
    if let Some(extension) = r.extension {
        f.push(("extension", extension.into()));
    }
    f.push(("protocol", r.protocol.into()));
    if r.cluster_fallback {
        f.push(("cluster", CLUSTER_FALLBACK.into()));
    }
    f
}

pub(crate) fn rejection_fields(r: &RejectionRecord<'_>) -> Fields {
    let mut f: Fields = vec![
        ("route", r.route.into()),
        ("client", client_value(r.client)),
    ];
    if let Some(subject) = r.subject {
        f.push(("subject", subject.into()));
    }
    f.extend([
        ("result", "rejected".into()),
        ("reason", r.reason.as_str().into()),
        ("status", r.status.into()),
        ("protocol", r.protocol.into()),
    ]);
    if r.cluster_fallback {
        f.push(("cluster", CLUSTER_FALLBACK.into()));
    }
    f
}

/// A value in a text line: plain when it is a number or a simple word, otherwise quoted with
/// escapes, so that no value (a subject from a token, say) can forge a field or a line.
fn text_value(value: &Value) -> String {
    match value {
        Value::String(s) => {
            let simple = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._:-@+~%".contains(c));
            if simple {
                s.clone()
            } else {
                format!("{s:?}")
            }
        }
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                format!("{f:.3}")
            } else {
                n.to_string()
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::end::Initiator;

    pub(crate) fn end() -> SessionEnd {
        SessionEnd {
            close_code: Some(4000),
            initiator: Initiator::Client,
            messages_in: 2,
            messages_out: 3,
            bytes_in: 10,
            bytes_out: 22,
            reason: None,
        }
    }

    #[test]
    fn text_lines_have_every_field() {
        let end = end();
        let r = SessionRecord {
            route: "/ws/echo",
            client: Some("127.0.0.1".parse().unwrap()),
            protocol: "h2",
            subject: Some("alice"),
            end: &end,
            duration: Duration::from_millis(1250),
            relay: None,
            cluster_fallback: false,
            extension: None,
        };
        let line = AccessLog::new(LogFormat::Text).format_line("session", &session_fields(&r));
        assert_eq!(
            line,
            "session route=/ws/echo client=127.0.0.1 subject=alice result=closed close_code=4000 \
             initiator=client duration_s=1.250 messages_in=2 messages_out=3 bytes_in=10 bytes_out=22 \
             protocol=h2"
        );
        let r = RejectionRecord {
            route: "none",
            client: None,
            protocol: "h1",
            subject: None,
            reason: Reason::HeadTimeout,
            status: 408,
            cluster_fallback: true,
        };
        let line = AccessLog::new(LogFormat::Text).format_line("rejection", &rejection_fields(&r));
        assert_eq!(
            line,
            "rejection route=none client=unknown result=rejected reason=head_timeout status=408 \
             protocol=h1 cluster=local_fallback"
        );
    }

    #[test]
    fn hostile_values_cannot_forge_fields_or_lines() {
        let end = SessionEnd::default();
        let r = SessionRecord {
            route: "/ws",
            client: None,
            protocol: "h1",
            subject: Some("eve status=200\n[INFO access] session route=/admin"),
            end: &end,
            duration: Duration::ZERO,
            relay: None,
            cluster_fallback: false,
            extension: None,
        };
        let line = AccessLog::new(LogFormat::Text).format_line("session", &session_fields(&r));
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.contains(r#"subject="eve status=200\n[INFO access] session route=/admin""#),
            "{line}"
        );
        assert!(line.contains("result=dropped close_code=none initiator=none"));
    }
}
