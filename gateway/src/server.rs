//! Wiring: turn a validated [`Config`] into a running pingora server.

use std::net::TcpListener;
use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::session::Sessions;
use crate::shutdown::{spawn_exit_monitor, Signals};
use crate::tls;
use crate::upstream::{HealthChecks, Relays};

/// Everything that can be checked before the server starts, with errors a user can act on:
/// certificates load and match their keys, and the addresses can be bound.
pub fn preflight(config: &Config, bind: bool) -> Result<(), String> {
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
            tls::load_certified_key(tls_conf).map_err(|e| format!("listeners[{i}].tls: {e}"))?;
        }
    }
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

/// Run the gateway until it is stopped. Does not return.
pub fn run(config: Config) -> Result<(), String> {
    preflight(&config, true)?;
    let config = Arc::new(config);
    let grace = config.server.shutdown_grace.0;

    let conf = ServerConf {
        threads: config.server.threads,
        // A backstop only: the exit monitor ends the process as soon as the drain is done.
        grace_period_seconds: Some(grace.as_secs() + 2),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let sessions = Arc::new(Sessions::default());
    let gateway = Gateway::new(config.clone(), sessions.clone());
    let relays = gateway.relays();
    let mut public = Service::new("portcullis".to_string(), gateway);
    for listener in &config.listeners {
        match &listener.tls {
            Some(tls_conf) => {
                let key = tls::load_certified_key(tls_conf)?;
                let mut settings = TlsSettings::intermediate(
                    &tls_conf.cert.to_string_lossy(),
                    &tls_conf.key.to_string_lossy(),
                )
                .map_err(|e| format!("TLS settings for {}: {e}", listener.address))?;
                settings.set_cert_resolver(Arc::new(tls::StaticCert(key)));
                public.add_tls_with_settings(&listener.address, None, settings);
                log::info!("listening on wss://{}", listener.address);
            }
            None => {
                public.add_tcp(&listener.address);
                log::warn!(
                    "listening on ws://{} without TLS (local development only)",
                    listener.address
                );
            }
        }
    }
    server.add_service(public);
    if relays.has_health_checks() {
        server.add_service(background_service("upstream health", HealthChecks(relays)));
    }

    if config.admin.enabled {
        let mut admin = Service::new("portcullis-admin".to_string(), Admin);
        admin.threads = Some(1);
        admin.add_tcp(&config.admin.address);
        server.add_service(admin);
        log::info!("admin listener on http://{}", config.admin.address);
    }

    spawn_exit_monitor(server.watch_execution_phase(), sessions, grace);
    log::info!(
        "portcullis {} running with {}",
        env!("CARGO_PKG_VERSION"),
        config.source
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals),
    });
    std::process::exit(0)
}
