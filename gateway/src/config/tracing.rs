//! `[tracing]`: OpenTelemetry traces of handshakes and sessions, exported over OTLP/HTTP
//! (protobuf). Without this table nothing is traced and nothing is exported.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::defaults;
use crate::core::cidr::Cidr;
use crate::core::duration::HumanDuration;
use crate::core::url::HttpUrl;

/// `[tracing]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tracing {
    /// The collector's OTLP/HTTP traces endpoint, e.g. `http://collector:4318/v1/traces`.
    pub(crate) endpoint: HttpUrl,
    /// Extra headers on every export request (e.g. a collector's API key).
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    /// CA certificates for an `https://` endpoint (default: the system roots).
    pub(crate) ca_file: Option<PathBuf>,
    /// The fraction of new traces recorded (a trusted parent's decision is followed).
    #[serde(default = "sample_ratio")]
    pub(crate) sample_ratio: f64,
    /// Peers (socket addresses) whose `traceparent`/`tracestate` a handshake continues; any
    /// other client's context becomes a link of a new trace.
    #[serde(default)]
    pub(crate) trusted_sources: Vec<Cidr>,
    /// `service.name`.
    #[serde(default = "service_name")]
    pub(crate) service_name: String,
    /// `service.instance.id` (default: the host name and process id).
    pub(crate) service_instance_id: Option<String>,
    /// Finished spans waiting for export; past this, new ones are dropped and counted.
    #[serde(default = "queue_size")]
    pub(crate) queue_size: usize,
    /// Spans per export request at most.
    #[serde(default = "batch_size")]
    pub(crate) batch_size: usize,
    /// How long a batch waits to fill before it is sent.
    #[serde(default = "batch_delay")]
    pub(crate) batch_delay: HumanDuration,
    /// One export request, connect to last byte.
    #[serde(default = "timeout")]
    pub(crate) timeout: HumanDuration,
}

impl Tracing {
    /// Checks a value's type cannot make; errors name the key.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(format!(
                "tracing.sample_ratio must be between 0 and 1 (got {})",
                self.sample_ratio
            ));
        }
        for (key, v) in [
            ("tracing.queue_size", self.queue_size),
            ("tracing.batch_size", self.batch_size),
        ] {
            if v == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        if self.batch_size > self.queue_size {
            return Err("tracing.batch_size must not exceed tracing.queue_size".into());
        }
        for (key, d) in [
            ("tracing.batch_delay", self.batch_delay),
            ("tracing.timeout", self.timeout),
        ] {
            if d.0.is_zero() {
                return Err(format!("{key} must be greater than zero"));
            }
        }
        if self.service_name.trim().is_empty() {
            return Err("tracing.service_name must not be empty".into());
        }
        for (name, value) in &self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(format!("tracing.headers: {name:?} is not a header name"));
            }
            if http::HeaderValue::from_str(value).is_err() {
                return Err(format!("tracing.headers.{name}: not a valid header value"));
            }
        }
        if let Some(ca) = &self.ca_file {
            if !self.endpoint.0.tls() {
                return Err("tracing.ca_file is set but tracing.endpoint is not https://".into());
            }
            if !ca.is_file() {
                return Err(format!("tracing.ca_file: {} does not exist", ca.display()));
            }
        }
        Ok(())
    }
}

fn sample_ratio() -> f64 {
    defaults::TRACING_SAMPLE_RATIO
}
fn service_name() -> String {
    defaults::TRACING_SERVICE_NAME.into()
}
fn queue_size() -> usize {
    defaults::TRACING_QUEUE_SIZE
}
fn batch_size() -> usize {
    defaults::TRACING_BATCH_SIZE
}
fn batch_delay() -> HumanDuration {
    HumanDuration(defaults::TRACING_BATCH_DELAY)
}
fn timeout() -> HumanDuration {
    HumanDuration(defaults::TRACING_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(tracing: &str) -> Result<Config, String> {
        let text = format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[tracing]\n{tracing}\n");
        Config::parse(&text, "test.toml", None).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_checks_that_name_the_key() {
        let c = load("endpoint = \"http://127.0.0.1:4318/v1/traces\"").unwrap();
        let t = c.tracing.unwrap();
        assert_eq!(t.sample_ratio, 1.0);
        assert_eq!(t.service_name, "portcullis");
        assert!(t.trusted_sources.is_empty());
        assert_eq!((t.queue_size, t.batch_size), (2048, 512));

        for (extra, key) in [
            ("sample_ratio = 1.5", "tracing.sample_ratio"),
            ("queue_size = 0", "tracing.queue_size"),
            ("batch_size = 4096", "tracing.batch_size"),
            ("batch_delay = \"0s\"", "tracing.batch_delay"),
            ("headers = { \"bad header\" = \"x\" }", "tracing.headers"),
            ("ca_file = \"ca.pem\"", "tracing.ca_file"),
            ("trusted_sources = [\"10.0.0.0/33\"]", "trusted_sources"),
            ("sampling = 1", "sampling"),
        ] {
            let e = load(&format!("endpoint = \"http://c:4318/v1/traces\"\n{extra}")).unwrap_err();
            assert!(e.contains(key), "{extra}: {e}");
        }
        let e = load("endpoint = \"grpc://c:4317\"").unwrap_err();
        assert!(e.contains("tracing.endpoint"), "{e}");
        // Off without the table; the embedded default has none.
        assert!(Config::embedded().unwrap().tracing.is_none());
    }
}
