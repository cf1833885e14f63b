//! `[cluster]`: the Redis that replicas share so that rates and connection caps hold across all
//! of them (schema only; `validate` checks it, `cluster` connects to it).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::defaults;
use super::secret::Secret;
use crate::core::duration::HumanDuration;
pub(crate) use crate::core::on_error::OnError;
use crate::core::url::RedisUrl;

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cluster {
    /// `redis://host:port[/db]` or `rediss://...` (TLS). No credentials in the URL. Either
    /// this (one Redis) or `sentinels` with `master_name` (the primary Redis Sentinel names).
    pub(crate) redis_url: Option<RedisUrl>,
    /// Redis Sentinel: the Sentinels to ask which server is the primary (`redis://host:port`,
    /// or `rediss://` for TLS to the Sentinels and to the primary), asked again on every
    /// (re)connection, so that the gateway follows failovers.
    #[serde(default)]
    pub(crate) sentinels: Vec<RedisUrl>,
    /// With `sentinels`: the name under which they watch the primary (`sentinel monitor NAME`).
    pub(crate) master_name: Option<String>,
    /// Redis Cluster: some of its nodes (`redis://host:port`, or `rediss://`), from which the
    /// gateway learns the rest and the slots; keys are then hash-tagged so that every script
    /// touches one slot.
    #[serde(default)]
    pub(crate) cluster_nodes: Vec<RedisUrl>,
    /// An ACL user name (Redis 6+); without it the password is for the default user.
    pub(crate) username: Option<String>,
    /// The password, from a file (relative to the config file) or an environment variable.
    pub(crate) password_file: Option<PathBuf>,
    pub(crate) password_env: Option<String>,
    /// `rediss://`: trust this CA bundle instead of the system roots.
    pub(crate) ca_file: Option<PathBuf>,
    /// Put before every key and the event channel, so that gateways sharing a Redis but not
    /// their limits stay apart.
    #[serde(default = "default_prefix")]
    pub(crate) key_prefix: String,
    /// The longest a handshake waits for Redis, all its calls together (and the longest one
    /// background call may take); past it the call counts as failed.
    #[serde(default = "default_timeout")]
    pub(crate) timeout: HumanDuration,
    /// How long a connection slot lives in Redis without being renewed (renewed every third).
    #[serde(default = "default_lease_ttl")]
    pub(crate) lease_ttl: HumanDuration,
    /// What checks do when Redis fails; policies may override it.
    #[serde(default = "default_on_error")]
    pub(crate) on_error: OnError,
    /// How often each link (the command connection and the event subscription) is checked
    /// with `PING` while nothing else shows it alive.
    #[serde(default = "default_liveness_interval")]
    pub(crate) liveness_interval: HumanDuration,
    /// How long a `PING` may go unanswered before its link counts as dead (dropped and made
    /// anew): a flow a NAT forgot answers nothing, and TCP would take minutes to say so.
    #[serde(default = "default_liveness_timeout")]
    pub(crate) liveness_timeout: HumanDuration,
}

fn default_prefix() -> String {
    defaults::CLUSTER_KEY_PREFIX.to_string()
}

fn default_timeout() -> HumanDuration {
    HumanDuration(defaults::CLUSTER_TIMEOUT)
}

fn default_lease_ttl() -> HumanDuration {
    HumanDuration(defaults::CLUSTER_LEASE_TTL)
}

fn default_on_error() -> OnError {
    defaults::CLUSTER_ON_ERROR
}

fn default_liveness_interval() -> HumanDuration {
    HumanDuration(defaults::CLUSTER_LIVENESS_INTERVAL)
}

fn default_liveness_timeout() -> HumanDuration {
    HumanDuration(defaults::CLUSTER_LIVENESS_TIMEOUT)
}

impl Cluster {
    fn secret(&self) -> Secret<'_> {
        Secret {
            file: self.password_file.as_deref(),
            env: self.password_env.as_deref(),
            file_key: "cluster.password_file",
            env_key: "cluster.password_env",
        }
    }

    /// The password (surrounding whitespace removed), `None` when neither source is set. An
    /// unreadable or empty source is an error naming its key, never the password.
    pub(crate) fn password(&self) -> Result<Option<String>, String> {
        let Some((key, bytes)) = self.secret().read()? else {
            return Ok(None);
        };
        let text = String::from_utf8(bytes).map_err(|_| format!("{key}: not UTF-8"))?;
        let password = text.trim();
        if password.is_empty() {
            return Err(format!("{key}: the password is empty"));
        }
        Ok(Some(password.to_string()))
    }

    /// Whether the connections to Redis (and to the Sentinels) use TLS.
    pub(crate) fn tls(&self) -> bool {
        match &self.redis_url {
            Some(url) => url.tls(),
            None => self.nodes().first().is_some_and(|s| s.tls()),
        }
    }

    /// Whether the store is a Redis Cluster (then keys carry hash tags).
    pub(crate) fn is_redis_cluster(&self) -> bool {
        !self.cluster_nodes.is_empty()
    }

    /// The Sentinels or the Redis Cluster nodes, whichever is configured.
    fn nodes(&self) -> &[RedisUrl] {
        if self.sentinels.is_empty() {
            &self.cluster_nodes
        } else {
            &self.sentinels
        }
    }

    /// The database number (`redis_url`'s path; 0 under Sentinel).
    pub(crate) fn database(&self) -> i64 {
        let path = self
            .redis_url
            .as_ref()
            .map_or("", |u| u.path_and_query.as_str());
        path.trim_start_matches('/').parse().unwrap_or(0)
    }

    /// Where the store is, for logs (never a secret): the URL, or the master name and the
    /// Sentinels.
    pub(crate) fn describe(&self) -> String {
        match (&self.redis_url, &self.master_name) {
            (Some(url), _) => url.text.clone(),
            (None, None) => {
                let nodes: Vec<&str> = self.cluster_nodes.iter().map(|s| s.text.as_str()).collect();
                format!("the Redis Cluster of {}", nodes.join(", "))
            }
            (None, name) => {
                let sentinels: Vec<&str> = self.sentinels.iter().map(|s| s.text.as_str()).collect();
                format!(
                    "the primary {:?} of Sentinel {}",
                    name.as_deref().unwrap_or_default(),
                    sentinels.join(", ")
                )
            }
        }
    }

    /// The checks of where the store is.
    fn validate_address(&self) -> Result<(), String> {
        let given = [
            self.redis_url.is_some(),
            !self.sentinels.is_empty(),
            !self.cluster_nodes.is_empty(),
        ];
        match given.iter().filter(|g| **g).count() {
            1 => {}
            0 => {
                return Err(
                    "cluster: redis_url (one Redis), sentinels with master_name (Redis \
                     Sentinel) or cluster_nodes (Redis Cluster) is required"
                        .into(),
                )
            }
            _ => {
                return Err(
                    "cluster: set one of redis_url (one Redis), sentinels with master_name \
                     (Redis Sentinel) and cluster_nodes (Redis Cluster), not both"
                        .into(),
                )
            }
        }
        if self.master_name.is_some() && self.sentinels.is_empty() {
            return Err("cluster.master_name needs cluster.sentinels".into());
        }
        if let Some(url) = &self.redis_url {
            let path = url.path_and_query.as_str();
            let db = path.trim_start_matches('/');
            if !(db.is_empty() || db.parse::<u16>().is_ok()) {
                return Err(format!(
                    "cluster.redis_url: {path:?} is not a database number (e.g. \"redis://host:6379/0\")"
                ));
            }
        }
        if !self.sentinels.is_empty() {
            match &self.master_name {
                None => return Err("cluster.sentinels needs cluster.master_name".into()),
                Some(name) if name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic()) => {
                    return Err("cluster.master_name must be printable ASCII without spaces".into())
                }
                Some(_) => {}
            }
        }
        let key = if self.sentinels.is_empty() {
            "cluster.cluster_nodes"
        } else {
            "cluster.sentinels"
        };
        let tls = self.tls();
        for node in self.nodes() {
            if node.tls() != tls {
                return Err(format!("{key} must all be redis:// or all be rediss://"));
            }
            if !node.path_and_query.trim_start_matches('/').is_empty() {
                return Err(format!(
                    "{key}: {:?} must be redis://host:port, without a path (the database is 0)",
                    node.text
                ));
            }
        }
        if self.is_redis_cluster() && self.key_prefix.contains(['{', '}']) {
            return Err(
                "cluster.key_prefix may not contain { or } with cluster_nodes (the keys' hash \
                 tags are the gateway's)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The checks that need no file (validation).
    pub(crate) fn validate(&self) -> Result<(), String> {
        self.secret().validate()?;
        self.validate_address()?;
        if self.ca_file.is_some() && !self.tls() {
            return Err(
                "cluster.ca_file is set but cluster.redis_url (or cluster.sentinels, or \
                 cluster.cluster_nodes) is not rediss://"
                    .into(),
            );
        }
        if let Some(ca) = &self.ca_file {
            if !ca.is_file() {
                return Err(format!("cluster.ca_file: {} does not exist", ca.display()));
            }
        }
        if self.key_prefix.is_empty() || self.key_prefix.len() > 64 {
            return Err("cluster.key_prefix must be 1 to 64 characters".into());
        }
        if self.key_prefix.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err("cluster.key_prefix must be printable ASCII without spaces".into());
        }
        let t = self.timeout.0;
        if t < Duration::from_millis(1) || t > Duration::from_secs(5) {
            return Err("cluster.timeout must be between 1ms and 5s".into());
        }
        let ttl = self.lease_ttl.0;
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(3600) {
            return Err("cluster.lease_ttl must be between 1s and 1h".into());
        }
        let between = Duration::from_millis(100)..=Duration::from_secs(60);
        if !between.contains(&self.liveness_interval.0) {
            return Err("cluster.liveness_interval must be between 100ms and 60s".into());
        }
        if !between.contains(&self.liveness_timeout.0) {
            return Err("cluster.liveness_timeout must be between 100ms and 60s".into());
        }
        if ttl / 3 <= t * 2 {
            return Err(
                "cluster.lease_ttl must be more than six times cluster.timeout (slots are \
                 renewed every third of it)"
                    .into(),
            );
        }
        Ok(())
    }
}
