//! Reloading without dropping sockets, on SIGHUP and (when `[server] watch_interval` is set)
//! when the files change.
//!
//! - Configuration and policies: the new file is validated first (certificates, keys, every
//!   key); if it fails, the configuration in force stays and the failure is logged and counted.
//!   Otherwise it becomes the new generation (`edge::generation`): new handshakes follow it at once,
//!   open sockets keep the rules they were admitted under, and sockets on routes the reload
//!   removed are closed with 1001 `route removed` after `route_removal_grace`. The generation is
//!   built read-only, so a reload that fails writes nothing either: the development certificates
//!   it asks for are generated (and written) only once all the rest has loaded.
//! - Certificates: re-read and swapped into the listeners' resolvers; open connections keep
//!   their TLS sessions, new handshakes get the new certificate. A file that fails to load
//!   leaves the certificates in use untouched.
//!
//! Listener addresses and the admin listener are bound once: changing them needs a restart (or
//! a zero-downtime upgrade with SIGQUIT).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, Signal, SignalKind};

use super::listeners::Listeners;
use crate::config::{Config, Tls};
use crate::core::background;
use crate::core::labels::BackgroundTask;
use crate::edge::generation::{Files, Generation, InForce};
use crate::net::server_tls::dev_cert_sets;
use crate::obs::metrics::{supervised, Metrics};

/// What can be reloaded, and from where.
#[derive(Clone)]
pub(crate) struct Reloader {
    pub(crate) listeners: Arc<Listeners>,
    /// The file the gateway was started with; `None` for the embedded default.
    pub(crate) config_path: Option<PathBuf>,
    pub(crate) in_force: Arc<InForce>,
    pub(crate) metrics: Arc<Metrics>,
    /// Poll the files this often; `None`: only on SIGHUP.
    pub(crate) watch_interval: Option<Duration>,
}

impl Reloader {
    /// Reload the configuration file. Returns whether a new configuration is in force.
    fn reload_config(&self) -> bool {
        let Some(path) = &self.config_path else {
            log::info!("reload: running the embedded default configuration; nothing to reload");
            return false;
        };
        let old = self.in_force.get();
        let next = Config::load(path)
            .map_err(|e| e.to_string())
            .and_then(|config| {
                let source = config.source.clone();
                // Built read-only, so that a build failing halfway has written nothing; the
                // development certificates it asks for come last.
                Generation::build(config, Some(&old), Files::ReadOnly)
                    .and_then(with_dev_certs)
                    .map_err(|e| format!("{source}: {e}"))
            });
        let next = match next {
            Ok(next) => next,
            Err(e) => {
                self.metrics.config_reload(false);
                log::error!("reload failed, the configuration in force stays: {e}");
                return false;
            }
        };
        let listeners = |c: &Config| {
            c.listeners
                .iter()
                .map(|l| (l.address, l.tls.is_some()))
                .collect::<Vec<_>>()
        };
        if listeners(&next.config) != listeners(&old.config)
            || next.config.admin.address != old.config.admin.address
            || next.config.admin.enabled != old.config.admin.enabled
        {
            log::warn!(
                "reload: listener or admin address changes take effect after a restart (or a \
                 SIGQUIT upgrade); routes and policies are reloaded now"
            );
        }
        if next.config.tracing != old.config.tracing {
            log::warn!("reload: [tracing] changes take effect after a restart");
        }
        let routes = next.config.routes.len();
        let grace = next.config.server.route_removal_grace.0;
        let gone = self
            .listeners
            .put_in_force(&self.in_force, next, &self.metrics);
        if !gone.is_empty() {
            log::info!(
                "reload: {} route(s) removed; their open sockets close with 1001 in {:.1}s",
                gone.len(),
                grace.as_secs_f64()
            );
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                for removed in gone {
                    removed.send_replace(true);
                }
            });
        }
        self.metrics.config_reload(true);
        log::info!(
            "reload: configuration from {} in force ({routes} routes)",
            path.display()
        );
        true
    }

    fn reload_certs(&self, only_changed: bool) {
        for store in self.listeners.cert_stores() {
            let result = if only_changed {
                store.reload_if_changed()
            } else {
                store.reload().map(|()| true)
            };
            match result {
                Ok(true) => log::info!("reload: certificates of {} reloaded", store.describe()),
                Ok(false) => {}
                Err(e) => log::error!("reload: certificates kept, new ones failed: {e}"),
            }
        }
    }

    /// Modification times of the configuration's files.
    fn config_stamps(&self) -> Vec<Option<SystemTime>> {
        self.in_force
            .get()
            .config
            .files
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Start the reload thread. The SIGHUP handler is installed before this returns, so a
    /// SIGHUP can never fall through to the default action (terminating the process). The loop
    /// is supervised: a panic while reloading restarts it (logged and counted), so SIGHUP keeps
    /// working.
    pub(crate) fn spawn(self) {
        let rt = background::runtime();
        let hup = rt
            .block_on(async { signal(SignalKind::hangup()) })
            .expect("SIGHUP handler");
        let hup = Arc::new(tokio::sync::Mutex::new(hup));
        let run = supervised(BackgroundTask::Reload, move || {
            let (this, hup) = (self.clone(), hup.clone());
            async move { this.watch(&mut *hup.lock().await).await }
        });
        background::spawn_on("reload", rt, run);
    }

    /// Reload on every SIGHUP and, with a watch interval, when the files change.
    async fn watch(&self, hup: &mut Signal) {
        let mut stamps = self.config_stamps();
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    log::info!("SIGHUP: reloading");
                    // A new generation brings its certificates; otherwise re-read them.
                    if !self.reload_config() {
                        self.reload_certs(false);
                    }
                }
                _ = sleep_or_never(self.watch_interval) => {
                    let now = self.config_stamps();
                    if now != stamps {
                        log::info!("configuration files changed: reloading");
                        self.reload_config();
                    }
                    self.reload_certs(true);
                }
            }
            stamps = self.config_stamps();
        }
    }
}

/// Give the listeners of a generation built read-only the development certificates it left out
/// (`generate_self_signed` pairs whose files are missing): generated and loaded only now that
/// everything else has loaded, and written only if all of them load.
fn with_dev_certs(mut next: Generation) -> Result<Generation, String> {
    let config = next.config.clone();
    let left_out: Vec<(usize, &Tls)> = config
        .listeners
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.tls.as_ref().map(|tls| (i, tls)))
        .filter(|(i, _)| next.certs[*i].is_none())
        .collect();
    if left_out.is_empty() {
        return Ok(next);
    }
    let named: Vec<(String, &Tls)> = left_out
        .iter()
        .map(|(i, tls)| (format!("listeners[{i}].tls"), *tls))
        .collect();
    let sets = dev_cert_sets(&named)?;
    for ((i, tls), set) in left_out.into_iter().zip(sets) {
        log::warn!(
            "reload: generated a self-signed development certificate {} (key {}); clients must \
             trust it explicitly. Do not use it in production.",
            tls.cert.display(),
            tls.key.display()
        );
        next.certs[i] = Some(Arc::new(set));
    }
    Ok(next)
}

async fn sleep_or_never(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
