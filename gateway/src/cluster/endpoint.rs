//! Where the store is: one configured address (`redis_url`); whichever server the Sentinels
//! name (`sentinels`, `master_name`), asked again for every new connection (the command link's
//! and the subscription's), so that after a failover the next connection reaches the new
//! primary; or a Redis Cluster (`cluster_nodes`), whose client learns the nodes and slots and
//! routes each command. A single server is checked as usual (`HELLO` must say primary, `link`).
//!
//! The subscription of a Redis Cluster is an ordinary one, on one of the configured nodes in
//! turn: a message published on any node reaches the subscribers of every node.

use std::sync::atomic::{AtomicUsize, Ordering};

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, TlsCertificates};

use super::ClusterError;
use crate::config::cluster as settings;
use crate::config::defaults;

/// How to reach the primary.
pub(crate) enum Endpoint {
    /// One address.
    Direct(redis::Client),
    /// Ask the Sentinels (one at a time, in order, under a lock: redis-rs caches its
    /// connections to them).
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    /// A Redis Cluster, and a client for each configured node (for the subscription).
    Cluster {
        client: ClusterClient,
        nodes: Vec<redis::Client>,
        next: AtomicUsize,
    },
}

impl Endpoint {
    /// The target for the settings, with the password; TLS trusting `ca_file` or the system
    /// roots.
    pub(crate) fn new(
        config: &settings::Cluster,
        password: Option<&str>,
    ) -> Result<Endpoint, String> {
        if config.is_redis_cluster() {
            return redis_cluster(config, password);
        }
        match &config.redis_url {
            Some(_) => direct(config, password).map(Endpoint::Direct),
            None => sentinel(config, password)
                .map(|client| Endpoint::Sentinel(tokio::sync::Mutex::new(client))),
        }
    }

    /// The Redis Cluster client, if the store is one.
    pub(crate) fn redis_cluster(&self) -> Option<&ClusterClient> {
        match self {
            Endpoint::Cluster { client, .. } => Some(client),
            _ => None,
        }
    }

    /// A client for the primary now: the configured one, or the one the Sentinels name
    /// (asking them takes at most [`defaults::CLUSTER_CONNECT_TIMEOUT`]); of a Redis Cluster,
    /// the next configured node (for a subscription).
    pub(crate) async fn primary(&self) -> Result<redis::Client, ClusterError> {
        match self {
            Endpoint::Direct(client) => Ok(client.clone()),
            Endpoint::Cluster { nodes, next, .. } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                Ok(nodes[i % nodes.len()].clone())
            }
            Endpoint::Sentinel(sentinels) => {
                let ask = async { sentinels.lock().await.async_get_client().await };
                tokio::time::timeout(defaults::CLUSTER_CONNECT_TIMEOUT, ask)
                    .await
                    .map_err(|_| ClusterError::Timeout)?
                    .map_err(|e| ClusterError::Connection(format!("asking the Sentinels: {e}")))
            }
        }
    }
}

/// The CA to trust for `rediss://`, if one is configured.
fn root_cert(config: &settings::Cluster) -> Result<Option<Vec<u8>>, String> {
    config
        .ca_file
        .as_ref()
        .map(|ca| {
            std::fs::read(ca)
                .map_err(|e| format!("cluster.ca_file: cannot read {}: {e}", ca.display()))
        })
        .transpose()
}

/// The client of one address: address, database, user and password.
fn direct(config: &settings::Cluster, password: Option<&str>) -> Result<redis::Client, String> {
    use redis::IntoConnectionInfo;
    let url = config.redis_url.as_ref().expect("a redis_url");
    let scheme = if url.tls() { "rediss" } else { "redis" };
    let info = format!(
        "{scheme}://{}:{}/{}",
        bracketed(&url.host),
        url.port,
        config.database()
    )
    .into_connection_info()
    .map_err(|e| format!("cluster.redis_url: {e}"))?;
    let info = with_credentials(info, config, password);
    match root_cert(config)? {
        Some(root) => redis::Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(root),
            },
        )
        .map_err(|e| format!("cluster.ca_file: {e}")),
        None => redis::Client::open(info).map_err(|e| format!("cluster.redis_url: {e}")),
    }
}

/// The Sentinel client: the Sentinels' addresses, the master name, and for the primary the
/// user and password (the Sentinels themselves are asked without); TLS to both with
/// `rediss://`.
fn sentinel(config: &settings::Cluster, password: Option<&str>) -> Result<SentinelClient, String> {
    let addresses = config.sentinels.iter().map(|s| {
        let host = s.host.clone();
        match s.tls() {
            true => ConnectionAddr::TcpTls {
                host,
                port: s.port,
                insecure: false,
                tls_params: None,
            },
            false => ConnectionAddr::Tcp(host, s.port),
        }
    });
    let name = config.master_name.as_deref().expect("a master_name");
    let mut builder = SentinelClientBuilder::new(addresses, name, SentinelServerType::Master)
        .map_err(|e| format!("cluster.sentinels: {e}"))?;
    if config.tls() {
        builder = builder
            .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
        if let Some(root) = root_cert(config)? {
            let certificates = || TlsCertificates {
                client_tls: None,
                root_cert: Some(root.clone()),
            };
            builder = builder
                .set_client_to_redis_certificates(certificates())
                .set_client_to_sentinel_certificates(certificates());
        }
    }
    if let Some(user) = &config.username {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = password {
        builder = builder.set_client_to_redis_password(password);
    }
    builder
        .build()
        .map_err(|e| format!("cluster.sentinels: {e}"))
}

/// The Redis Cluster client and a client per configured node: user, password, TLS.
fn redis_cluster(config: &settings::Cluster, password: Option<&str>) -> Result<Endpoint, String> {
    use redis::IntoConnectionInfo;
    let root = root_cert(config)?;
    let certificates = || TlsCertificates {
        client_tls: None,
        root_cert: root.clone(),
    };
    let mut infos = Vec::new();
    let mut nodes = Vec::new();
    for url in &config.cluster_nodes {
        let scheme = if url.tls() { "rediss" } else { "redis" };
        let info = format!("{scheme}://{}:{}", bracketed(&url.host), url.port)
            .into_connection_info()
            .map_err(|e| format!("cluster.cluster_nodes: {e}"))?;
        let info = with_credentials(info, config, password);
        let node = match root {
            Some(_) => redis::Client::build_with_tls(info.clone(), certificates()),
            None => redis::Client::open(info.clone()),
        };
        nodes.push(node.map_err(|e| format!("cluster.cluster_nodes: {e}"))?);
        infos.push(info);
    }
    let mut builder =
        ClusterClientBuilder::new(infos).connection_timeout(defaults::CLUSTER_CONNECT_TIMEOUT);
    if let Some(user) = &config.username {
        builder = builder.username(user);
    }
    if let Some(password) = password {
        builder = builder.password(password);
    }
    if config.tls() {
        builder = builder.tls(redis::TlsMode::Secure);
        if root.is_some() {
            builder = builder.certs(certificates());
        }
    }
    let client = builder
        .build()
        .map_err(|e| format!("cluster.cluster_nodes: {e}"))?;
    Ok(Endpoint::Cluster {
        client,
        nodes,
        next: AtomicUsize::new(0),
    })
}

/// A host as it goes in a URL (an IPv6 address in brackets).
/// A server's connection settings with the configured user and password, the library name not
/// set (`set_skip_set_lib_name`): one place for the direct and the Redis Cluster endpoints.
fn with_credentials(
    info: redis::ConnectionInfo,
    config: &settings::Cluster,
    password: Option<&str>,
) -> redis::ConnectionInfo {
    let mut redis_settings = info.redis_settings().clone().set_skip_set_lib_name();
    if let Some(user) = &config.username {
        redis_settings = redis_settings.set_username(user);
    }
    if let Some(password) = password {
        redis_settings = redis_settings.set_password(password);
    }
    info.set_redis_settings(redis_settings)
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}
