//! Logging: the access log (one line per WebSocket session at its end, one per rejection) and the
//! process logger that writes every line as text or JSON (`[server] log_format`).
//!
//! Access lines go through the `log` crate with target `access` at level `info`, so they share
//! the process's stream (stderr) and filter (`RUST_LOG`; e.g. `RUST_LOG=info,access=off` turns
//! them off). In `text` format a line reads
//!
//! ```text
//! [2026-01-01T12:00:00.000Z INFO  access] session route=/ws/echo client=127.0.0.1 result=closed close_code=1000 initiator=client duration_s=1.250 messages_in=2 messages_out=2 bytes_in=10 bytes_out=22
//! [2026-01-01T12:00:00.000Z INFO  access] rejection route=/ws/echo client=127.0.0.1 reason=upgrade_required status=426
//! ```
//!
//! and in `json` format it is one JSON object per line with the same keys plus `ts`, `level`,
//! `target` and `event`. Only the fields below are ever written: the route is the configured
//! path (never the request target, so never a query string and never its `access_token`), and
//! no header, cookie or token is logged.
//!
//! The logger also counts the TLS handshake failures that pingora reports only as a log record
//! (see [`Logger`]).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use log::{Level, LevelFilter, Log, Metadata, Record};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::admission::Reason;
use crate::metrics::Metrics;
use crate::session::SessionEnd;

/// The `log` target of access lines.
pub const TARGET: &str = "access";

/// `[server] log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `key=value` text after env_logger's usual `[time LEVEL target]` prefix.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// One session's access line.
#[derive(Debug)]
pub struct SessionRecord<'a> {
    /// The configured route path.
    pub route: &'a str,
    pub client: Option<IpAddr>,
    /// The token's subject, when the route authenticated the client.
    pub subject: Option<&'a str>,
    pub end: &'a SessionEnd,
    pub duration: Duration,
    /// What a relayed session adds: the upstream and why the session ended.
    pub relay: Option<RelayRecord<'a>>,
}

/// The relay part of a session line.
#[derive(Debug)]
pub struct RelayRecord<'a> {
    /// The upstream URL as configured.
    pub upstream: &'a str,
    /// Why the session ended (`session::relay::EndReason` label).
    pub end_reason: &'a str,
    /// The close code the upstream got or sent.
    pub upstream_close_code: Option<u16>,
}

/// One rejection's access line.
#[derive(Debug)]
pub struct RejectionRecord<'a> {
    /// The configured route path, or `none` before routing.
    pub route: &'a str,
    pub client: Option<IpAddr>,
    /// The token's subject, when it was known at the time of the rejection.
    pub subject: Option<&'a str>,
    pub reason: Reason,
    pub status: u16,
}

/// Writes access lines in the configured format.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLog {
    pub format: LogFormat,
}

/// The fields of one line, in order.
type Fields = Vec<(&'static str, Value)>;

impl AccessLog {
    pub fn new(format: LogFormat) -> AccessLog {
        AccessLog { format }
    }

    /// The line for a session that ended.
    pub fn session(&self, r: &SessionRecord<'_>) {
        self.emit("session", session_fields(r));
    }

    /// The line for a rejected request.
    pub fn rejection(&self, r: &RejectionRecord<'_>) {
        self.emit("rejection", rejection_fields(r));
    }

    fn emit(&self, event: &'static str, fields: Fields) {
        if log::log_enabled!(target: TARGET, Level::Info) {
            let line = self.format_line(event, &fields);
            log::info!(target: TARGET, "{line}");
        }
    }

    /// The message of one line (without the logger's time and level).
    pub fn format_line(&self, event: &'static str, fields: &Fields) -> String {
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

fn session_fields(r: &SessionRecord<'_>) -> Fields {
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
    if let Some(relay) = &r.relay {
        f.push(("end_reason", relay.end_reason.into()));
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
    f
}

fn rejection_fields(r: &RejectionRecord<'_>) -> Fields {
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
    ]);
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

/// pingora reports a failed or timed-out TLS handshake on a public listener only as an error
/// record from this module (`services/listening.rs`: "Downstream handshake error ...",
/// "Downstream handshake timeout"); there is no callback for failures in its rustls mode.
const PINGORA_LISTENER: &str = "pingora_core::services::listening";

/// The process logger: env_logger's filter (`RUST_LOG`) and output, in the configured format,
/// which also counts pingora's TLS handshake failures into `portcullis_tls_handshake_failures_total`
/// whatever the filter says.
pub struct Logger {
    inner: env_logger::Logger,
}

impl Logger {
    /// Install as the process logger (once, at start-up). `RUST_LOG` filters; the default is
    /// `info`.
    pub fn install(format: LogFormat) -> Result<(), log::SetLoggerError> {
        let mut builder =
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
        match format {
            LogFormat::Text => {
                builder.format_timestamp_millis();
            }
            LogFormat::Json => {
                builder.format(|buf, record| {
                    let ts = buf.timestamp_millis();
                    writeln!(buf, "{}", json_line(&ts.to_string(), record))
                });
            }
        }
        let inner = builder.build();
        // Error records must reach us (to be counted) even where RUST_LOG filters them out.
        let max = inner.filter().max(LevelFilter::Error);
        log::set_boxed_logger(Box::new(Logger { inner }))?;
        log::set_max_level(max);
        Ok(())
    }
}

/// Whether a record is pingora's report of a failed TLS handshake.
fn is_tls_handshake_failure(record: &Record<'_>) -> bool {
    if record.level() != Level::Error || record.target() != PINGORA_LISTENER {
        return false;
    }
    let msg = record.args().to_string();
    msg.starts_with("Downstream handshake error") || msg.starts_with("Downstream handshake timeout")
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
            || (metadata.level() == Level::Error && metadata.target() == PINGORA_LISTENER)
    }

    fn log(&self, record: &Record<'_>) {
        if is_tls_handshake_failure(record) {
            Metrics::global().tls_handshake_failure();
        }
        if self.inner.matches(record) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// One JSON log line: `ts`, `level`, `target`, then either an access line's own fields (its
/// message is already a JSON object) or `msg`.
fn json_line(ts: &str, record: &Record<'_>) -> String {
    let mut map = Map::new();
    map.insert("ts".into(), ts.into());
    map.insert("level".into(), record.level().as_str().into());
    map.insert("target".into(), record.target().into());
    let msg = record.args().to_string();
    let fields = (record.target() == TARGET)
        .then(|| serde_json::from_str::<Map<String, Value>>(&msg).ok())
        .flatten();
    match fields {
        Some(fields) => map.extend(fields),
        None => {
            map.insert("msg".into(), msg.into());
        }
    }
    Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Initiator;

    /// Call `f` with a log record (the record borrows its message only for the call).
    fn with_record<R>(target: &str, level: Level, msg: &str, f: impl FnOnce(&Record) -> R) -> R {
        f(&Record::builder()
            .target(target)
            .level(level)
            .args(format_args!("{msg}"))
            .build())
    }

    fn end() -> SessionEnd {
        SessionEnd {
            close_code: Some(4000),
            initiator: Initiator::Client,
            messages_in: 2,
            messages_out: 3,
            bytes_in: 10,
            bytes_out: 22,
        }
    }

    #[test]
    fn text_lines_have_every_field() {
        let end = end();
        let r = SessionRecord {
            route: "/ws/echo",
            client: Some("127.0.0.1".parse().unwrap()),
            subject: Some("alice"),
            end: &end,
            duration: Duration::from_millis(1250),
            relay: None,
        };
        let line = AccessLog::new(LogFormat::Text).format_line("session", &session_fields(&r));
        assert_eq!(
            line,
            "session route=/ws/echo client=127.0.0.1 subject=alice result=closed close_code=4000 \
             initiator=client duration_s=1.250 messages_in=2 messages_out=3 bytes_in=10 bytes_out=22"
        );
        let r = RejectionRecord {
            route: "none",
            client: None,
            subject: None,
            reason: Reason::HeadTimeout,
            status: 408,
        };
        let line = AccessLog::new(LogFormat::Text).format_line("rejection", &rejection_fields(&r));
        assert_eq!(
            line,
            "rejection route=none client=unknown result=rejected reason=head_timeout status=408"
        );
    }

    #[test]
    fn hostile_values_cannot_forge_fields_or_lines() {
        let end = SessionEnd::default();
        let r = SessionRecord {
            route: "/ws",
            client: None,
            subject: Some("eve status=200\n[INFO access] session route=/admin"),
            end: &end,
            duration: Duration::ZERO,
            relay: None,
        };
        let line = AccessLog::new(LogFormat::Text).format_line("session", &session_fields(&r));
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.contains(r#"subject="eve status=200\n[INFO access] session route=/admin""#),
            "{line}"
        );
        assert!(line.contains("result=dropped close_code=none initiator=none"));
    }

    #[test]
    fn json_lines_parse_and_carry_the_fields() {
        let end = end();
        let r = SessionRecord {
            route: "/ws/echo",
            client: Some("::1".parse().unwrap()),
            subject: None,
            end: &end,
            duration: Duration::from_millis(5),
            relay: None,
        };
        let msg = AccessLog::new(LogFormat::Json).format_line("session", &session_fields(&r));
        let line = with_record(TARGET, Level::Info, &msg, |r| {
            json_line("2026-01-01T00:00:00.000Z", r)
        });
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "session");
        assert_eq!(v["target"], "access");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["route"], "/ws/echo");
        assert_eq!(v["client"], "::1");
        assert_eq!(v["close_code"], 4000);
        assert_eq!(v["initiator"], "client");
        assert_eq!(v["duration_s"], 0.005);
        assert_eq!(v["bytes_out"], 22);
        assert!(v.get("subject").is_none());
        // Other records keep their message under `msg`.
        let line = with_record(
            "portcullis::server",
            Level::Warn,
            "a \"quoted\" message",
            |r| json_line("t", r),
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["msg"], "a \"quoted\" message");
        assert_eq!(v["level"], "WARN");
    }

    #[test]
    fn pingora_handshake_errors_are_recognised() {
        let make = |target: &str, level: Level, msg: &str| {
            with_record(target, level, msg, is_tls_handshake_failure)
        };
        assert!(make(
            PINGORA_LISTENER,
            Level::Error,
            "Downstream handshake error from 127.0.0.1:5000: TLSHandshakeFailure"
        ));
        assert!(make(
            PINGORA_LISTENER,
            Level::Error,
            "Downstream handshake timeout"
        ));
        assert!(!make(PINGORA_LISTENER, Level::Error, "Accept() failed"));
        assert!(!make(
            "other",
            Level::Error,
            "Downstream handshake error from x"
        ));
    }
}
