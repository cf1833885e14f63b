//! Wiring: turn a validated [`Config`] into a running pingora server, and `--check`.

use std::net::TcpListener;
use std::sync::Arc;

use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use super::admin::{Admin, Readiness};
use super::control::Control;
use super::listeners::Listeners;
use super::reload::Reloader;
use super::signals::{spawn_exit_monitor, Signals};
use super::sockets::{Plan, PublicService};
use crate::config::cluster::OnError;
use crate::config::Config;
use crate::core::background::Tasks;
use crate::core::labels::BackgroundTask;
use crate::edge::accept::EdgeListener;
use crate::edge::generation::{Files, Generation, InForce};
use crate::edge::{Edge, EdgeApp};
use crate::net::bind::BoundAddr;
use crate::net::otlp_client::OtlpClient;
use crate::net::server_tls::CertStore;
use crate::obs::metrics::{supervised, Metrics};
use crate::relay::health::HealthChecks;
use crate::session::count::Sessions;
use crate::session::registry::Registry;

/// Validate a configuration as a start would, loading every certificate and key, without
/// writing, binding or starting anything (`portcullis --check`). `Ok` holds what a start would
/// do besides (a development certificate it would generate).
pub fn check(config: Config) -> Result<Vec<String>, String> {
    Generation::build(config, None, Files::ReadOnly).map(|g| g.notes)
}

/// The addresses can be bound (a clear error now rather than pingora's panic later).
fn check_bindable(config: &Config) -> Result<(), String> {
    let admin = config.admin.enabled.then_some(config.admin.address);
    for addr in config.listeners.iter().map(|l| l.address).chain(admin) {
        TcpListener::bind(addr.0).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    }
    Ok(())
}

/// pingora's own buffers on the accepted socket. Its default gives every connection a 64 KiB
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
    let mut generation = Generation::build(config, None, Files::MayWrite)?;
    if !upgrade {
        check_bindable(&generation.config)?;
    }
    let config = generation.config.clone();
    let grace = config.server.shutdown_grace.0;

    let threads = config.server.threads.resolve();
    let conf = ServerConf {
        threads,
        // `false`: one single-threaded runtime per thread (pingora's no-steal runtime), as
        // NGINX runs one process per worker; the public listeners are then a service per
        // thread, each accepting on its own `SO_REUSEPORT` socket, and a connection, its
        // session task and its upstream stay on the thread that accepted it (`sockets`,
        // README "Threads").
        work_stealing: config.server.work_stealing,
        // A backstop only: the exit monitor ends the process as soon as the drain is done.
        grace_period_seconds: Some(grace.as_secs().saturating_add(2)),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: config.server.upgrade_sock.to_string_lossy().into_owned(),
        // pingora's own timeouts over a second (its 60 s accept timeout) on tokio's timer,
        // which frees a timer when its future is dropped: its "fast" timers stay allocated
        // until they expire (375 B per connection for a minute after accept), and they need a
        // clock thread that wakes every few milliseconds.
        fast_timeout_to_tokio_threshold_seconds: Some(1),
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
    // Traces start after pingora's bootstrap (their export runs on a thread of their own).
    if let Some(tracing) = &config.tracing {
        let client = OtlpClient::new(tracing.ca_file.as_deref(), tracing.timeout.0)
            .map_err(|e| format!("{}: tracing.ca_file: {e}", config.source))?;
        crate::obs::trace::install(tracing, client)
            .map_err(|e| format!("{}: {e}", config.source))?;
        log::info!(
            "tracing: spans to {} (sample ratio {})",
            tracing.endpoint.0.text,
            tracing.sample_ratio
        );
    }
    // `/readyz`: the listeners run once pingora reaches its Running phase. Code that needs more
    // before traffic may come (the relay's upstreams) adds checks with `readiness.add_check`.
    let readiness = Arc::new(Readiness::default());
    readiness.follow(server.watch_execution_phase());

    let admin_token = generation.admin_token.clone();
    let mut stores = Vec::new();
    let mut public_addresses = Vec::new();
    let mut edge_listeners = Vec::new();
    // Port-0 reservations, held until the process exits.
    let mut bound = Vec::new();
    for (listener, set) in config.listeners.iter().zip(&generation.certs) {
        let addr = BoundAddr::resolve(listener.address.0)?;
        let store = set.clone().map(CertStore::new).transpose()?;
        public_addresses.push(addr.address);
        let tls = match &store {
            Some(store) => {
                log::info!("listening on wss://{}", addr.address);
                Some(store.clone())
            }
            None => {
                log::warn!(
                    "listening on ws://{} without TLS (local development only)",
                    addr.address
                );
                None
            }
        };
        edge_listeners.push(EdgeListener {
            address: addr.address,
            tls,
        });
        stores.push((listener.address, store));
        bound.push(addr);
    }
    let listeners = Arc::new(Listeners::new(stores));
    listeners.activate(&mut generation, &metrics);
    let in_force = Arc::new(InForce::new(generation));

    // Ready only while every relay route has an upstream in the rotation.
    let relays_in_force = in_force.clone();
    readiness.add_check("relay upstreams", move || {
        relays_in_force.get().relays.ready()
    });
    // The cluster store: `/readyz` says `cluster degraded` while Redis fails. With
    // `on_error = "closed"` the gateway refuses what it cannot count, so it is not ready;
    // with "open" it serves under its own limits, so it stays ready (and says so). Both are
    // registered and each asks the configuration in force, so a reload that adds, removes or
    // changes `[cluster]` changes what `/readyz` says.
    let cluster_in_force = in_force.clone();
    let cluster_degraded = move |on_error: OnError| match cluster_in_force.get().admission.cluster()
    {
        Some(cluster) if cluster.on_error() == on_error => cluster.degraded().map_or(Ok(()), Err),
        _ => Ok(()),
    };
    let unready = cluster_degraded.clone();
    readiness.add_check("cluster degraded", move || unready(OnError::Closed));
    readiness.add_warning("cluster degraded", move || cluster_degraded(OnError::Open));
    // A background task that keeps panicking (it is restarted each time) is worth an alert.
    readiness.add_check("background tasks", || {
        Tasks::global().check(std::time::Instant::now())
    });
    let sessions = Arc::new(Sessions::default());
    let registry = Arc::new(Registry::default());
    let control = Arc::new(Control::new(registry.clone(), in_force.clone()));
    // Follows whichever cluster a reload puts in force (idle while there is none); supervised,
    // so a panic while applying a close does not end the following.
    let follower = control.clone();
    crate::core::background::spawn(
        "cluster closes",
        supervised(BackgroundTask::ClusterCloses, move || {
            follower.clone().follow_cluster()
        }),
    );
    let edge = Arc::new(Edge::new(
        in_force.clone(),
        sessions.clone(),
        registry,
        metrics.clone(),
        edge_listeners,
    ));
    // A service per thread, or one for all of them with work stealing (`sockets`).
    let (services, service_threads) = match config.server.work_stealing {
        true => (1, None),
        false => (threads, Some(1)),
    };
    let plan = Arc::new(Plan::new(
        public_addresses,
        services,
        usize::from(config.admin.enabled),
    ));
    for index in 0..services {
        server.add_service(PublicService::new(
            plan.clone(),
            index,
            service_threads,
            EdgeApp(edge.clone()),
            socket_buffers(),
        ));
    }
    let health_in_force = in_force.clone();
    server.add_service(background_service(
        "upstream health",
        HealthChecks(move || health_in_force.get().relays.clone()),
    ));

    if config.admin.enabled {
        if admin_token.is_none() {
            log::info!(
                "admin listener has no token: /metrics, /readyz and /sessions are open to whoever \
                 reaches it, and the state-changing session endpoints are off"
            );
        }
        let app = Admin::new(metrics.clone(), readiness.clone(), admin_token).with_control(control);
        let mut admin = Service::new("portcullis-admin".to_string(), app);
        admin.threads = Some(1);
        let addr = BoundAddr::resolve(config.admin.address.0)?;
        admin.add_listener(addr.listener());
        server.add_service(admin);
        log::info!("admin listener on http://{}", addr.address);
        bound.push(addr);
    }

    Reloader {
        listeners,
        config_path: config.files.first().cloned(),
        in_force,
        metrics: metrics.clone(),
        watch_interval: config.server.watch_interval.map(|d| d.0),
    }
    .spawn();
    spawn_exit_monitor(server.watch_execution_phase(), sessions, grace);
    log::info!(
        "portcullis {} running with {} ({}, {threads} thread{})",
        env!("CARGO_PKG_VERSION"),
        config.source,
        super::allocator::name(),
        if threads == 1 { "" } else { "s" }
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals),
    });
    drop(bound);
    std::process::exit(0)
}
