//! The configuration: plain data parsed by serde through the `core` value types (durations,
//! URLs, networks, name patterns, addresses), the embedded default, and validation.
//!
//! Defaults live in [`defaults`]; [`validate`] holds every check a value's type cannot make.
//! Unknown keys are errors (`deny_unknown_fields` everywhere), and every error names the file
//! and the key, so `portcullis --check --config FILE` can tell a user exactly what to fix.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

pub(crate) mod balance;
pub(crate) mod cluster;
pub(crate) mod compression;
pub(crate) mod defaults;
pub(crate) mod http2;
pub(crate) mod identity;
pub(crate) mod listener;
pub(crate) mod policy;
pub(crate) mod route;
pub(crate) mod secret;
pub(crate) mod server;
pub(crate) mod token;
pub(crate) mod tracing;
mod validate;
mod validate_identity;

pub(crate) use balance::{Balance, HashKey, UpstreamEntry};
pub(crate) use listener::{Listener, Tls};
pub(crate) use policy::Policy;
pub(crate) use route::{Balancing, Mode, RelaySettings, Route};
pub(crate) use server::{Admin, Limits, Server};

/// The configuration used when `portcullis` starts without `--config`.
const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// The name the embedded default goes by in logs and errors.
pub(crate) const EMBEDDED_NAME: &str = "<embedded default>";

/// A configuration error: which file, and what (with the key) is wrong in it.
#[derive(Debug)]
pub struct ConfigError {
    pub(crate) source: String,
    pub(crate) message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Parse TOML into `T`; an error names the key path (`listeners[0].address: ...`).
fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let de = toml::Deserializer::parse(text).map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub(crate) server: Server,
    #[serde(default)]
    pub(crate) admin: Admin,
    #[serde(default)]
    pub(crate) limits: Limits,
    /// HTTP/2's own bounds (listeners that offer it).
    #[serde(default)]
    pub(crate) http2: http2::Http2,
    pub(crate) listeners: Vec<Listener>,
    #[serde(default)]
    pub(crate) routes: Vec<Route>,
    #[serde(default)]
    pub(crate) policies: BTreeMap<String, Policy>,
    /// Shared rates and caps across replicas (`None`: every limit is this process's own).
    pub(crate) cluster: Option<cluster::Cluster>,
    /// OpenTelemetry traces (`None`: off).
    pub(crate) tracing: Option<tracing::Tracing>,
    /// Where this configuration came from (a path or [`EMBEDDED_NAME`]); not a TOML key.
    #[serde(skip)]
    pub(crate) source: String,
    /// Every file this configuration was read from (the file and its included policies), for
    /// reloading when they change.
    #[serde(skip)]
    pub(crate) files: Vec<PathBuf>,
}

impl Config {
    /// The embedded default configuration.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::parse(EMBEDDED_DEFAULT, EMBEDDED_NAME, None)
    }

    /// Read and validate a configuration file. Relative paths inside it (certificates) are taken
    /// relative to the file's own folder, so a config works wherever it is started from.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source: source.clone(),
            message: format!("cannot read the file: {e}"),
        })?;
        let mut config = Config::parse(&text, &source, path.parent())?;
        config.files.insert(0, path.to_path_buf());
        Ok(config)
    }

    /// Where this configuration came from, for messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Parse and validate TOML text; `base` resolves relative paths.
    pub(crate) fn parse(
        text: &str,
        source: &str,
        base: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            source: source.to_string(),
            message,
        };
        let mut config: Config = from_toml(text).map_err(err)?;
        config.source = source.to_string();
        let base = base.filter(|b| !b.as_os_str().is_empty());
        if let Some(base) = base {
            config.resolve_paths(base);
        }
        let base = base.unwrap_or(Path::new(""));
        for (name, policy) in config.policies.iter_mut() {
            match policy.include.take() {
                Some(_) if !policy.is_empty() => {
                    return Err(err(format!(
                        "policies.{name}.include cannot be combined with other keys of the policy"
                    )))
                }
                Some(file) => {
                    let file = base.join(file);
                    *policy = load_policy_file(&file, name)?;
                    config.files.push(file);
                }
                None => policy.resolve_paths(base),
            }
        }
        validate::config(&config).map_err(err)?;
        Ok(config)
    }

    /// Resolve the relative paths of the file's own tables against `base`.
    fn resolve_paths(&mut self, base: &Path) {
        if let Some(file) = &mut self.admin.token_file {
            *file = base.join(&*file);
        }
        if let Some(file) = self.tracing.as_mut().and_then(|t| t.ca_file.as_mut()) {
            *file = base.join(&*file);
        }
        if let Some(c) = &mut self.cluster {
            for file in [&mut c.password_file, &mut c.ca_file].into_iter().flatten() {
                *file = base.join(&*file);
            }
        }
        for l in &mut self.listeners {
            if let Some(tls) = &mut l.tls {
                tls.cert = base.join(&tls.cert);
                tls.key = base.join(&tls.key);
                for sni in &mut tls.sni {
                    sni.cert = base.join(&sni.cert);
                    sni.key = base.join(&sni.key);
                }
                for path in tls.client_ca.iter_mut().chain(&mut tls.client_crls) {
                    *path = base.join(&*path);
                }
            }
        }
        for r in &mut self.routes {
            for path in [
                &mut r.upstream_ca_file,
                &mut r.upstream_client_cert,
                &mut r.upstream_client_key,
            ]
            .into_iter()
            .flatten()
            {
                *path = base.join(&*path);
            }
        }
    }

    /// The policy a route names (`None`: the public default).
    pub(crate) fn policy_of(&self, route: &Route) -> Option<&Policy> {
        self.policies.get(route.policy_name())
    }
}

/// Read a policy from its own file (`include = "..."`); its relative paths follow that file.
fn load_policy_file(path: &Path, name: &str) -> Result<Policy, ConfigError> {
    let source = path.display().to_string();
    let err = |message: String| ConfigError {
        source: source.clone(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        err(format!(
            "cannot read policy {name:?} (policies.{name}.include): {e}"
        ))
    })?;
    let mut policy: Policy = from_toml(&text).map_err(err)?;
    if policy.include.is_some() {
        return Err(err(
            "include: an included policy cannot include another".into()
        ));
    }
    policy.resolve_paths(path.parent().unwrap_or(Path::new("")));
    validate::policy(&policy, &format!("policies.{name}")).map_err(err)?;
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::log_format::LogFormat;

    const MINIMAL: &str = r#"
        [[listeners]]
        address = "127.0.0.1:0"
    "#;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded().unwrap();
        assert_eq!(c.listeners[0].address.to_string(), "127.0.0.1:8443");
        assert!(c.listeners[0].tls.as_ref().unwrap().generate_self_signed);
        assert!(c
            .routes
            .iter()
            .any(|r| r.path == "/ws/echo" && r.mode == Mode::Echo));
        assert_eq!(c.admin.address.to_string(), "127.0.0.1:9090");
    }

    #[test]
    fn threads_are_auto_by_default_or_a_number() {
        use super::server::Threads;
        let parse =
            |server: &str| Config::parse(&format!("[server]\n{server}\n{MINIMAL}"), "t", None);
        assert_eq!(parse("").unwrap().server.threads, Threads::Auto);
        assert!(!parse("").unwrap().server.work_stealing);
        assert!(parse("work_stealing = true").unwrap().server.work_stealing);
        assert_eq!(
            parse("threads = \"auto\"").unwrap().server.threads,
            Threads::Auto
        );
        assert_eq!(
            parse("threads = 3").unwrap().server.threads,
            Threads::Count(3)
        );
        assert_eq!(Threads::Count(3).resolve(), 3);
        assert_eq!(
            Threads::Auto.resolve(),
            std::thread::available_parallelism().unwrap().get()
        );
        for bad in [
            "threads = 0",
            "threads = 2000",
            "threads = -1",
            "threads = \"many\"",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("threads"), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let text = format!("{MINIMAL}\n[limits]\nmax_mesage_bytes = 10\n");
        let e = Config::parse(&text, "x.toml", None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.toml: "), "{e}");
        assert!(e.contains("max_mesage_bytes"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[[listeners]]\naddress = \"nope\"", "listeners[0].address"),
            (
                "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[routes]]\npath = \"/a\"\nmode = \"echo\"\npolicy = \"missing\"",
                "routes[0].policy",
            ),
            (
                "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[routes]]\npath = \"/a\"\nmode = \"echo\"\nbody = \"x\"",
                "routes[0].body",
            ),
            (
                "[[listeners]]\naddress = \"127.0.0.1:1\"\n[limits]\nhead_timeout = \"3 fortnights\"",
                "head_timeout",
            ),
            (
                "[[listeners]]\naddress = \"127.0.0.1:1\"\n[listeners.tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"",
                "listeners[0].tls.cert",
            ),
            ("listeners = []", "listeners"),
        ];
        for (text, key) in cases {
            let e = Config::parse(text, "f.toml", None).unwrap_err().to_string();
            assert!(e.contains(key), "error {e:?} should name {key}");
        }
    }

    #[test]
    fn relay_routes_validate_their_keys() {
        let base = "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[routes]]\npath = \"/r\"\n";
        let good = format!(
            "{base}mode = \"relay\"\nupstreams = [\"ws://127.0.0.1:9001/chat\", \"wss://backend.internal/chat\"]\n\
             balance = \"least_connections\"\nconnect_timeout = \"2s\"\nsubprotocols = [\"chat.v1\"]\n\
             forward_claims = {{ sub = \"X-Auth-Subject\" }}\nping_interval = \"0s\"\nidle_timeout = \"5m\"\n\
             upstream_sni = \"backend.internal\"\nupstream_max_message_bytes = 100\n"
        );
        let c = Config::parse(&good, "f", None).unwrap();
        let relay = c.routes[0].relay();
        assert_eq!(c.routes[0].balancing().balance, Balance::LeastConnections);
        assert_eq!(relay.connect_timeout, std::time::Duration::from_secs(2));
        assert_eq!(relay.ping_interval, None);
        assert_eq!(relay.unhealthy_for, defaults::UNHEALTHY_FOR);
        assert!(!relay.forward_token);

        // The table form of an upstream, and a hash route (on a claim: its policy verifies).
        let hash = format!(
            "{base}mode = \"relay\"\npolicy = \"p\"\nbalance = \"hash\"\nhash_balance_factor = 1.5\n\
             slow_start = \"30s\"\nupstreams = [\"ws://a/\", {{ url = \"ws://b/\", weight = 3, drain = true }}]\n\
             [policies.p.jwt]\nkeys = [{{ alg = \"HS256\", secret_file = \"/etc/hostname\" }}]\n"
        );
        let c = Config::parse(&hash, "f", None).unwrap();
        let entries = c.routes[0].upstreams.as_ref().unwrap();
        assert_eq!((entries[0].weight, entries[0].drain), (1, false));
        assert_eq!((entries[1].weight, entries[1].drain), (3, true));
        let b = c.routes[0].balancing();
        assert_eq!(b.balance, Balance::Hash);
        assert_eq!(b.hash_key, HashKey::Claim("sub".into()));
        assert_eq!(b.hash_balance_factor, 1.5);
        assert_eq!(b.slow_start, Some(std::time::Duration::from_secs(30)));

        let cases = [
            ("mode = \"relay\"", "routes[0].upstreams"),
            ("mode = \"relay\"\nupstreams = []", "routes[0].upstreams"),
            ("mode = \"relay\"\nupstreams = [\"http://x/\"]", "routes[0].upstreams[0]"),
            ("mode = \"relay\"\nupstreams = [\"ws://a@x/\"]", "routes[0].upstreams[0]"),
            (
                "mode = \"relay\"\nupstreams = [\"ws://x/\"]\nbalance = \"random\"",
                "balance",
            ),
            (
                "mode = \"relay\"\nupstreams = [\"ws://x/\"]\nconnect_timeout = \"0s\"",
                "routes[0].connect_timeout",
            ),
            (
                "mode = \"relay\"\nupstreams = [\"ws://x/\"]\nupstream_sni = \"x\"",
                "routes[0].upstream_sni",
            ),
            (
                "mode = \"relay\"\nupstreams = [\"wss://x/\"]\nupstream_ca_file = \"/nonexistent.pem\"",
                "routes[0].upstream_ca_file",
            ),
            (
                "mode = \"relay\"\nupstreams = [\"wss://x/\"]\nupstream_client_key = \"/etc/hostname\"",
                "routes[0].upstream_client_cert",
            ),
            (
                "mode = \"relay\"\nupstreams = [\"ws://x/\"]\nsubprotocols = [\"bearer.x\"]",
                "routes[0].subprotocols[0]",
            ),
            (
                "mode = \"relay\"\nupstreams = [\"ws://x/\"]\nforward_claims = { sub = \"X-Forwarded-For\" }",
                "routes[0].forward_claims.sub",
            ),
            (
                "mode = \"relay\"\nupstreams = [\"ws://x/\"]\nprefix = \"x\"",
                "routes[0].prefix",
            ),
            ("mode = \"echo\"\nupstreams = [\"ws://x/\"]", "routes[0].upstreams"),
            (
                "mode = \"relay\"\nupstreams = [{ url = \"ws://x/\", weight = 0 }]",
                "routes[0].upstreams[0].weight",
            ),
            (
                "mode = \"relay\"\nupstreams = [{ url = \"ws://x/\", wieght = 2 }]",
                "routes[0].upstreams[0]",
            ),
            (
                "mode = \"relay\"\nupstreams = [{ url = \"http://x/\" }]",
                "routes[0].upstreams[0].url",
            ),
            (
                "mode = \"relay\"\nupstreams = [\"ws://x/\"]\nhash_key = \"header:x-room\"",
                "routes[0].hash_key is only valid with balance = \"hash\"",
            ),
            (
                "mode = \"relay\"\nupstreams = [\"ws://x/\"]\nbalance = \"hash\"\nhash_key = \"body:x\"",
                "routes[0].hash_key",
            ),
            (
                "mode = \"relay\"\nupstreams = [\"ws://x/\"]\nbalance = \"hash\"\nhash_balance_factor = 0.5",
                "routes[0].hash_balance_factor",
            ),
            (
                "mode = \"relay\"\nupstreams = [\"ws://x/\"]\nbalance = \"hash\"",
                "routes[0].hash_key: \"claim:sub\" needs a policy that verifies tokens",
            ),
            ("mode = \"echo\"\nslow_start = \"10s\"", "routes[0].slow_start"),
            ("mode = \"static\"\nidle_timeout = \"1s\"", "routes[0].idle_timeout"),
        ];
        for (route, key) in cases {
            let e = Config::parse(&format!("{base}{route}\n"), "f", None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "error {e:?} should name {key}");
        }
    }

    #[test]
    fn admin_token_sources() {
        let both = format!("{MINIMAL}\n[admin]\ntoken_file = \"t\"\ntoken_env = \"T\"\n");
        let e = Config::parse(&both, "f", None).unwrap_err().to_string();
        assert!(e.contains("admin.token_file and admin.token_env"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin.token"), "s3cret-token\n").unwrap();
        let text = format!("{MINIMAL}\n[admin]\ntoken_file = \"admin.token\"\n");
        let c = Config::parse(&text, "f", Some(dir.path())).unwrap();
        assert_eq!(c.admin.token().unwrap().as_deref(), Some("s3cret-token"));

        std::fs::write(dir.path().join("admin.token"), "  \n").unwrap();
        let e = c.admin.token().unwrap_err();
        assert!(e.contains("admin.token_file") && e.contains("empty"), "{e}");

        let text = format!("{MINIMAL}\n[admin]\ntoken_env = \"PORTCULLIS_TEST_UNSET_TOKEN\"\n");
        let c = Config::parse(&text, "f", None).unwrap();
        let e = c.admin.token().unwrap_err();
        assert!(e.contains("PORTCULLIS_TEST_UNSET_TOKEN"), "{e}");
        assert!(Config::embedded().unwrap().admin.token().unwrap().is_none());
    }

    #[test]
    fn cluster_table_defaults_and_errors_name_their_key() {
        let c = Config::parse(
            &format!("{MINIMAL}\n[cluster]\nredis_url = \"redis://127.0.0.1:6380/1\"\n"),
            "f",
            None,
        )
        .unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.key_prefix, defaults::CLUSTER_KEY_PREFIX);
        assert_eq!(cluster.timeout.0, defaults::CLUSTER_TIMEOUT);
        assert_eq!(cluster.lease_ttl.0, defaults::CLUSTER_LEASE_TTL);
        assert_eq!(cluster.on_error, cluster::OnError::Open);
        assert_eq!(
            cluster.liveness_interval.0,
            defaults::CLUSTER_LIVENESS_INTERVAL
        );
        assert_eq!(
            cluster.liveness_timeout.0,
            defaults::CLUSTER_LIVENESS_TIMEOUT
        );
        assert_eq!(cluster.password().unwrap(), None);

        let cases = [
            ("[cluster]\nredis_url = \"http://x\"", "cluster.redis_url"),
            (
                "[cluster]\nredis_url = \"redis://:pw@x\"",
                "cluster.redis_url",
            ),
            (
                "[cluster]\nredis_url = \"redis://x/abc\"",
                "cluster.redis_url",
            ),
            (
                "[cluster]\nredis_url = \"redis://x\"\npassword = \"x\"",
                "password",
            ),
            (
                "[cluster]\nredis_url = \"redis://x\"\npassword_file = \"a\"\npassword_env = \"B\"",
                "cluster.password_file and cluster.password_env",
            ),
            (
                "[cluster]\nredis_url = \"redis://x\"\non_error = \"maybe\"",
                "on_error",
            ),
            (
                "[cluster]\nredis_url = \"redis://x\"\ntimeout = \"0s\"",
                "cluster.timeout",
            ),
            (
                "[cluster]\nredis_url = \"redis://x\"\nlease_ttl = \"200ms\"",
                "cluster.lease_ttl",
            ),
            (
                "[cluster]\nredis_url = \"redis://x\"\nkey_prefix = \"\"",
                "cluster.key_prefix",
            ),
            (
                "[cluster]\nredis_url = \"redis://x\"\nliveness_interval = \"10ms\"",
                "cluster.liveness_interval",
            ),
            ("[cluster]\nkey_prefix = \"x:\"", "cluster: redis_url (one Redis), sentinels"),
            (
                "[cluster]\ncluster_nodes = [\"redis://n:7000\"]\nkey_prefix = \"{x}:\"",
                "may not contain {",
            ),
            (
                "[cluster]\ncluster_nodes = [\"redis://n:7000\"]\nredis_url = \"redis://x\"",
                "not both",
            ),
            (
                "[cluster]\nredis_url = \"redis://x\"\nsentinels = [\"redis://s:26379\"]\nmaster_name = \"m\"",
                "not both",
            ),
            (
                "[cluster]\nsentinels = [\"redis://s:26379\"]",
                "cluster.sentinels needs cluster.master_name",
            ),
            (
                "[cluster]\nredis_url = \"redis://x\"\nmaster_name = \"m\"",
                "cluster.master_name needs cluster.sentinels",
            ),
            (
                "[cluster]\nsentinels = [\"redis://s:26379\", \"rediss://t:26379\"]\nmaster_name = \"m\"",
                "all be redis:// or all be rediss://",
            ),
            (
                "[cluster]\nsentinels = [\"redis://s:26379/2\"]\nmaster_name = \"m\"",
                "without a path",
            ),
            (
                "[cluster]\nredis_url = \"redis://x\"\nliveness_timeout = \"2m\"",
                "cluster.liveness_timeout",
            ),
            (
                "[cluster]\nredis_url = \"redis://x\"\nca_file = \"/etc/hostname\"",
                "cluster.ca_file",
            ),
            (
                "[policies.p.cluster]\non_error = \"closed\"",
                "policies.p.cluster",
            ),
        ];
        for (table, key) in cases {
            let e = Config::parse(&format!("{MINIMAL}\n{table}\n"), "f", None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "error {e:?} should name {key}");
        }

        let text = format!(
            "{MINIMAL}\n[cluster]\nredis_url = \"redis://x\"\npassword_env = \"PORTCULLIS_TEST_UNSET_PW\"\n"
        );
        let c = Config::parse(&text, "f", None).unwrap();
        let e = c.cluster.unwrap().password().unwrap_err();
        assert!(e.contains("cluster.password_env"), "{e}");
    }

    #[test]
    fn log_format_is_text_or_json() {
        let c = Config::parse(
            &format!("{MINIMAL}\n[server]\nlog_format = \"json\"\n"),
            "f",
            None,
        )
        .unwrap();
        assert_eq!(c.server.log_format, LogFormat::Json);
        assert_eq!(
            Config::embedded().unwrap().server.log_format,
            LogFormat::Text
        );
        let e = Config::parse(
            &format!("{MINIMAL}\n[server]\nlog_format = \"xml\"\n"),
            "f",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("log_format") || e.contains("xml"), "{e}");
    }

    #[test]
    fn relative_cert_paths_follow_the_file() {
        let text = "[[listeners]]\naddress = \"127.0.0.1:1\"\n[listeners.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\ngenerate_self_signed = true";
        let c = Config::parse(text, "f", Some(Path::new("/etc/portcullis"))).unwrap();
        let tls = c.listeners[0].tls.as_ref().unwrap();
        assert_eq!(tls.cert, Path::new("/etc/portcullis/c.pem"));
    }
}
