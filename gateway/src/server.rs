//! Wiring: turn a validated [`Config`] into a running pingora server.

use std::net::TcpListener;
use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{ListenerConfig, TcpSocketOptions};
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::{Admin, Readiness};
use crate::admission::Admission;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::live::{Live, LiveConfig};
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::route::Router;
use crate::session::Sessions;
use crate::shutdown::{spawn_exit_monitor, Signals};
use crate::tls;
use crate::upstream::{HealthChecks, Relays};

/// Everything that can be checked before the server starts, with errors a user can act on:
/// certificates load and match their keys, policy keys load, and the addresses can be bound.
pub fn preflight(config: &Config, bind: bool) -> Result<(), String> {
    if config.admin.enabled {
        config.admin.token()?;
    }
    for (i, listener) in config.listeners.iter().enumerate() {
        if let Some(tls_conf) = &listener.tls {
            if tls::ensure_dev_pair(tls_conf).map_err(|e| format!("listeners[{i}].tls: {e}"))? {
                log::warn!(
                    "generated a self-signed development certificate {} (key {}); clients must \
                     trust it explicitly. Do not use it in production.",
                    tls_conf.cert.display(),
                    tls_conf.key.display()
                );
            }
            tls::CertStore::load(tls_conf).map_err(|e| format!("listeners[{i}].tls: {e}"))?;
        }
    }
    Admission::new(config)?;
    // Relay routes: upstream URLs, CA files and client certificates load (upstreams need not
    // be up).
    Relays::build(config)?;
    if bind {
        let admin = config.admin.enabled.then_some(&config.admin.address);
        for addr in config.listeners.iter().map(|l| &l.address).chain(admin) {
            TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        }
    }
    Ok(())
}

/// Listener addresses with port 0 get a free port from the kernel, race-free: a placeholder
/// socket is bound to port 0 with `SO_REUSEPORT` (the kernel never autobinds a port another
/// socket holds), and pingora then binds and listens on that concrete port with `SO_REUSEPORT`
/// too. The placeholder never listens, so it never receives a connection; it is kept until the
/// process exits. Addresses with a port keep pingora's usual bind.
pub struct BoundAddr {
    /// The address pingora binds (the concrete port).
    pub address: String,
    /// Set for a port-0 address: the reservation to keep, and the socket option to bind with.
    reserved: Option<tokio::net::TcpSocket>,
}

impl BoundAddr {
    pub fn resolve(address: &str) -> Result<BoundAddr, String> {
        let addr: std::net::SocketAddr = address
            .parse()
            .map_err(|_| format!("{address:?} is not an IP address with a port"))?;
        if addr.port() != 0 {
            return Ok(BoundAddr {
                address: address.to_string(),
                reserved: None,
            });
        }
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(|e| format!("cannot reserve a port on {address}: {e}"))?;
        socket
            .set_reuseport(true)
            .and_then(|()| socket.bind(addr))
            .map_err(|e| format!("cannot reserve a port on {address}: {e}"))?;
        let local = socket
            .local_addr()
            .map_err(|e| format!("cannot reserve a port on {address}: {e}"))?;
        Ok(BoundAddr {
            address: local.to_string(),
            reserved: Some(socket),
        })
    }

    /// pingora's listener settings for this address.
    pub fn listener(&self) -> ListenerConfig {
        let config = ListenerConfig::tcp(&self.address);
        match self.reserved {
            Some(_) => {
                let mut options = TcpSocketOptions::default();
                options.so_reuseport = Some(true);
                config.tcp_socket_options(options)
            }
            None => config,
        }
    }
}

/// pingora's own buffers between the socket and TLS. Its default gives every connection a 64 KiB
/// read buffer; rustls and tungstenite buffer already, so the gateway turns them off. Measured
/// with `examples/idle_memory.rs` at 5,000 idle `wss` sockets: 42.5 KiB per connection with the
/// default, 34.3 KiB without, and 93 KiB with the default when glibc reuses (and so must keep)
/// memory instead of handing out fresh zero pages (`MALLOC_ARENA_MAX=1`).
fn socket_buffers() -> L4BufferSettings {
    L4BufferSettings::unbuffered()
}

/// Run the gateway until it is stopped. Does not return. With `upgrade`, the listening sockets
/// are taken over from a running gateway (which hands them over on SIGQUIT and then drains)
/// instead of being bound anew.
pub fn run(config: Config, upgrade: bool) -> Result<(), String> {
    preflight(&config, !upgrade)?;
    let config = Arc::new(config);
    let grace = config.server.shutdown_grace.0;

    let conf = ServerConf {
        threads: config.server.threads,
        // A backstop only: the exit monitor ends the process as soon as the drain is done.
        grace_period_seconds: Some(grace.as_secs() + 2),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: config.server.upgrade_sock.to_string_lossy().into_owned(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    if upgrade {
        log::info!(
            "upgrade: waiting for the running gateway's sockets on {} (send it SIGQUIT)",
            config.server.upgrade_sock.display()
        );
    }
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let metrics = Metrics::global().clone();
    // `/readyz`: the listeners run once pingora reaches its Running phase. Code that needs more
    // before traffic may come (the relay's upstreams) adds checks with `readiness.add_check`.
    let readiness = Arc::new(Readiness::default());
    readiness.follow(server.watch_execution_phase());

    let admission = Arc::new(Admission::new(&config)?);
    admission.start_background();
    let live = Arc::new(LiveConfig::new(Live {
        router: Router::new(&config),
        config: config.clone(),
        admission,
        relays: Arc::new(Relays::build(&config)?),
    }));
    // Ready only while every relay route has an upstream in the rotation.
    let relays_live = live.clone();
    readiness.add_check("relay upstreams", move || relays_live.get().relays.ready());
    metrics.set_connection_limit(
        crate::metrics::ALL_ROUTES,
        config.limits.max_connections as u64,
    );
    for route in &config.routes {
        if let Some(cap) = config
            .policies
            .get(route.policy_name())
            .and_then(|p| p.limits.connections_per_route)
        {
            metrics.set_connection_limit(&route.path, cap as u64);
        }
    }
    let sessions = Arc::new(Sessions::default());
    let mut public = Service::new(
        "portcullis".to_string(),
        Gateway::new(live.clone(), sessions.clone(), metrics.clone()),
    );
    let mut cert_stores = Vec::new();
    // Port-0 reservations, held until the process exits.
    let mut bound = Vec::new();
    for listener in &config.listeners {
        let addr = BoundAddr::resolve(&listener.address)?;
        match &listener.tls {
            Some(tls_conf) => {
                let store = tls::CertStore::load(tls_conf)?;
                cert_stores.push(store.clone());
                let mut settings = TlsSettings::intermediate(
                    &tls_conf.cert.to_string_lossy(),
                    &tls_conf.key.to_string_lossy(),
                )
                .map_err(|e| format!("TLS settings for {}: {e}", listener.address))?;
                settings.set_cert_resolver(store);
                public.add_listener(addr.listener().tls(settings).l4_buffer(socket_buffers()));
                log::info!("listening on wss://{}", addr.address);
            }
            None => {
                public.add_listener(addr.listener().l4_buffer(socket_buffers()));
                log::warn!(
                    "listening on ws://{} without TLS (local development only)",
                    addr.address
                );
            }
        }
        bound.push(addr);
    }
    server.add_service(public);
    server.add_service(background_service(
        "upstream health",
        HealthChecks(live.clone()),
    ));

    if config.admin.enabled {
        let token = config.admin.token()?;
        if token.is_none() {
            log::info!(
                "admin listener has no token: /metrics and /readyz are open to whoever reaches it"
            );
        }
        let app = Admin::new(metrics.clone(), readiness.clone(), token);
        let mut admin = Service::new("portcullis-admin".to_string(), app);
        admin.threads = Some(1);
        let addr = BoundAddr::resolve(&config.admin.address)?;
        admin.add_listener(addr.listener());
        server.add_service(admin);
        log::info!("admin listener on http://{}", addr.address);
        bound.push(addr);
    }

    Reloader {
        cert_stores,
        config_path: config.files.first().cloned(),
        live,
        metrics: metrics.clone(),
        watch_interval: config.server.watch_interval.map(|d| d.0),
    }
    .spawn();
    spawn_exit_monitor(server.watch_execution_phase(), sessions, grace);
    log::info!(
        "portcullis {} running with {}",
        env!("CARGO_PKG_VERSION"),
        config.source
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals),
    });
    drop(bound);
    std::process::exit(0)
}
