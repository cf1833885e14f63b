//! Reloading without dropping sockets: on SIGHUP (and, when `[server] watch_interval` is set, when
//! the files change) certificates are re-read and swapped into the listeners' resolvers. Open
//! connections keep the TLS session they have; new handshakes get the new certificate. A file
//! that fails to load leaves the certificates in use untouched.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::tls::CertStore;

/// What can be reloaded.
pub struct Reloader {
    pub cert_stores: Vec<Arc<CertStore>>,
    /// Poll the files this often; `None`: only on SIGHUP.
    pub watch_interval: Option<Duration>,
}

impl Reloader {
    /// Reload everything now (SIGHUP).
    fn reload_all(&self) {
        for store in &self.cert_stores {
            match store.reload() {
                Ok(()) => log::info!("reload: certificates of {} reloaded", store.describe()),
                Err(e) => log::error!("reload: certificates kept, new ones failed: {e}"),
            }
        }
    }

    /// Reload what changed on disk.
    fn reload_changed(&self) {
        for store in &self.cert_stores {
            match store.reload_if_changed() {
                Ok(true) => log::info!(
                    "reload: certificates of {} changed on disk, reloaded",
                    store.describe()
                ),
                Ok(false) => {}
                Err(e) => log::error!("reload: certificates kept, changed files failed: {e}"),
            }
        }
    }

    /// Start the reload thread. The SIGHUP handler is installed before this returns, so a
    /// SIGHUP can never fall through to the default action (terminating the process).
    pub fn spawn(self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("reload runtime");
        let mut hup = rt
            .block_on(async { signal(SignalKind::hangup()) })
            .expect("SIGHUP handler");
        std::thread::Builder::new()
            .name("reload".into())
            .spawn(move || {
                rt.block_on(async move {
                    let watch = self.watch_interval;
                    loop {
                        tokio::select! {
                            _ = hup.recv() => {
                                log::info!("SIGHUP: reloading");
                                self.reload_all();
                            }
                            _ = sleep_or_never(watch) => self.reload_changed(),
                        }
                    }
                })
            })
            .expect("spawn reload thread");
    }
}

async fn sleep_or_never(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
