//! A JWKS URL fetched in the background: refreshed periodically and, rate-limited, when a token
//! names an unknown `kid`; the last good copy is kept when a fetch fails.

use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::keys::{keys_from_jwks, VerifyKey};
use crate::config::defaults;
use crate::config::policy::Jwt;
use crate::core::url::HttpUrl;
use crate::net::http_client::{Call, HttpClient};
use crate::obs::trace;

/// A JWKS URL, its last good keys and its refresh schedule.
pub(crate) struct RemoteJwks {
    url: HttpUrl,
    client: HttpClient,
    allowed: Vec<Algorithm>,
    refresh_every: Duration,
    min_refresh: Duration,
    keys: RwLock<Arc<Vec<VerifyKey>>>,
    /// When the last fetch caused by an unknown `kid` was allowed.
    last_on_demand: Mutex<Option<Instant>>,
    /// Wakes the fetch loop for an on-demand refresh.
    wake: Notify,
    /// Keys were taken over from the previous configuration's fetcher of the same URL.
    inherited: bool,
    /// Signalled after every fetch attempt.
    fetched: Notify,
}

impl RemoteJwks {
    /// Prepare (not start) the fetcher of `url`; `key` names the policy's `jwt` table.
    pub(crate) fn new(
        jwt: &Jwt,
        url: &HttpUrl,
        allowed: Vec<Algorithm>,
        key: &str,
    ) -> Result<RemoteJwks, String> {
        let client = HttpClient::new(jwt.jwks_ca_file.as_deref())
            .map_err(|e| format!("{key}.jwks_ca_file: {e}"))?;
        Ok(RemoteJwks {
            url: url.clone(),
            client,
            allowed,
            refresh_every: jwt.jwks_refresh.map_or(defaults::JWKS_REFRESH, |d| d.0),
            min_refresh: jwt
                .jwks_min_refresh
                .map_or(defaults::JWKS_MIN_REFRESH, |d| d.0),
            keys: RwLock::new(Arc::new(Vec::new())),
            last_on_demand: Mutex::new(None),
            wake: Notify::new(),
            fetched: Notify::new(),
            inherited: false,
        })
    }

    /// After a reload: start from the previous fetcher's keys when it fetched the same URL, so
    /// tokens keep verifying while this fetcher's first fetch is under way.
    pub(crate) fn inherit(&mut self, old: &RemoteJwks) {
        if self.url == old.url {
            *self.keys.get_mut().expect("jwks lock") = old.snapshot();
            self.inherited = true;
        }
    }

    pub(crate) fn snapshot(&self) -> Arc<Vec<VerifyKey>> {
        self.keys.read().expect("jwks lock").clone()
    }

    /// One fetch; on success the keys are replaced, on failure the last good copy stays.
    async fn fetch_once(&self) {
        let call = Call::get(&self.url, defaults::JWKS_TIMEOUT, defaults::JWKS_MAX_BYTES);
        let body = match self.client.send(call).await {
            Ok(reply) if reply.status == http::StatusCode::OK => Ok(reply.body),
            Ok(reply) => Err(format!("HTTP status {}", reply.status.as_u16())),
            Err(e) => Err(e.to_string()),
        };
        match body {
            Ok(body) => match keys_from_jwks(&body, &self.allowed) {
                Ok(keys) => {
                    log::info!("jwks: {} key(s) from {}", keys.len(), self.url.text);
                    *self.keys.write().expect("jwks lock") = Arc::new(keys);
                }
                Err(e) => log::warn!("jwks: {}: {e}; keeping the last good keys", self.url.text),
            },
            Err(e) => log::warn!(
                "jwks: fetching {} failed: {e}; keeping the last good keys",
                self.url.text
            ),
        }
        self.fetched.notify_waiters();
    }

    /// The background loop: fetch now (unless keys were inherited from the previous
    /// configuration), then periodically and when woken. It ends once the policy that owns
    /// these keys is gone (replaced by a reload and no longer used).
    pub(crate) async fn run(me: Weak<Self>) {
        let mut first = true;
        loop {
            let Some(this) = me.upgrade() else { return };
            if !(first && this.inherited) {
                this.fetch_once().await;
            }
            first = false;
            tokio::select! {
                _ = tokio::time::sleep(this.refresh_every) => {}
                _ = this.wake.notified() => {}
            }
        }
    }

    /// Ask for a refresh because a token named an unknown `kid`, and wait (bounded) for it.
    /// Returns false when a refresh happened too recently to allow another.
    pub(crate) async fn refresh_for_unknown_kid(&self) -> bool {
        {
            let mut last = self.last_on_demand.lock().expect("jwks lock");
            let now = Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < self.min_refresh) {
                return false;
            }
            *last = Some(now);
        }
        let fetched = self.fetched.notified();
        self.wake.notify_one();
        let wait = tokio::time::timeout(defaults::JWKS_TIMEOUT + Duration::from_secs(1), fetched);
        let waited = async { wait.await.map_err(|_| "no answer in time") };
        let _ = trace::step("jwks.fetch", &self.url.text, waited).await;
        true
    }
}
