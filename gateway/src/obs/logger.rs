//! The process logger: env_logger's filter (`RUST_LOG`) and output, each line as text or JSON
//! (`[server] log_format`), access lines included.

use std::io::Write as _;

use log::{Log, Metadata, Record};
use serde_json::{Map, Value};

use super::access_log::TARGET;
use crate::config::Config;
use crate::core::log_format::LogFormat;

/// The process logger: env_logger's filter (`RUST_LOG`) and output, in the configured format.
pub struct Logger {
    inner: env_logger::Logger,
}

impl Logger {
    /// Install as the process logger (once, at start-up) in the format `config` asks for.
    /// `RUST_LOG` filters; the default is `info`.
    pub fn install(config: &Config) -> Result<(), log::SetLoggerError> {
        Logger::install_format(config.server.log_format)
    }

    fn install_format(format: LogFormat) -> Result<(), log::SetLoggerError> {
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
        let max = inner.filter();
        log::set_boxed_logger(Box::new(Logger { inner }))?;
        log::set_max_level(max);
        Ok(())
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
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
    use crate::obs::access_log::tests::end;
    use crate::obs::access_log::{session_fields, AccessLog, SessionRecord};
    use log::Level;
    use std::time::Duration;

    /// Call `f` with a log record (the record borrows its message only for the call).
    fn with_record<R>(target: &str, level: Level, msg: &str, f: impl FnOnce(&Record) -> R) -> R {
        f(&Record::builder()
            .target(target)
            .level(level)
            .args(format_args!("{msg}"))
            .build())
    }

    #[test]
    fn json_lines_parse_and_carry_the_fields() {
        let end = end();
        let r = SessionRecord {
            route: "/ws/echo",
            client: Some("::1".parse().unwrap()),
            protocol: "h1",
            subject: None,
            end: &end,
            duration: Duration::from_millis(5),
            relay: None,
            cluster_fallback: false,
            extension: None,
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
}
