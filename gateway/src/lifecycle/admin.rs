//! The admin listener: `/metrics` (Prometheus text format), `/healthz` (the process is alive),
//! `/readyz` (listeners started, config loaded, every registered check passes) and the session
//! endpoints (`sessions_api`: `/sessions`, `/sessions/close`, `/revocations`) on their own
//! address, never on the public port (config validation refuses the same address). The
//! state-changing session endpoints exist only when an admin token is configured (otherwise
//! 403) and always need it; the listings need it when one is configured.
//!
//! With `[admin] token_file` or `token_env` set, `/metrics` and `/readyz` require
//! `Authorization: Bearer <token>` (compared in constant time) and answer 401 without it.
//! `/healthz` stays open: it says only "ok", and liveness probes rarely carry secrets.
//!
//! Warnings: a check registered with [`Readiness::add_warning`] (the cluster store under
//! `on_error = "open"`) only degrades: `/readyz` answers 200 and names it (`ready; cluster
//! degraded: ...`).
//!
//! Readiness checks: code that owns something the gateway needs to serve traffic (the relay's
//! upstream pools) registers a check with [`Readiness::add_check`]; `/readyz` answers 503 and
//! names every failing check until all pass.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::{ExecutionPhase, ShutdownWatch};
use tokio::sync::broadcast;

use subtle::ConstantTimeEq;

use super::control::Control;
use super::sessions_api;
use crate::core::credential::bearer_token;
use crate::net::answer::Answer;
use crate::net::http1::{self, HeadLimits, RequestHead};
use crate::obs::metrics::{self, Metrics};

/// Admin requests are small and local: tight limits.
const LIMITS: HeadLimits = HeadLimits {
    max_bytes: 8 * 1024,
    max_headers: 32,
};
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// A readiness check: `Ok(())` when ready, otherwise a short reason (shown in `/readyz`'s body,
/// so no secrets).
pub(crate) type Check = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Where the process is in its life, as `/readyz` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Config loaded, listeners not yet started.
    Starting = 0,
    /// pingora runs every service: the listeners accept connections.
    Running = 1,
    /// A graceful stop or upgrade is under way: stop sending traffic here.
    Stopping = 2,
}

/// What `/readyz` answers: the process phase plus the registered checks.
pub(crate) struct Readiness {
    phase: AtomicU8,
    checks: RwLock<Vec<(String, Check)>>,
    /// Checks that only degrade: a failing one is named in a `200` answer.
    warnings: RwLock<Vec<(String, Check)>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            phase: AtomicU8::new(Phase::Starting as u8),
            checks: RwLock::new(Vec::new()),
            warnings: RwLock::new(Vec::new()),
        }
    }
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("phase", &self.phase())
            .finish_non_exhaustive()
    }
}

impl Readiness {
    pub(crate) fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Starting,
            1 => Phase::Running,
            _ => Phase::Stopping,
        }
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    /// Register a check, e.g. one per relay route: "at least one healthy upstream".
    /// `name` appears in `/readyz`'s body next to the check's failure reason.
    pub(crate) fn add_check(
        &self,
        name: impl Into<String>,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.checks
            .write()
            .expect("readiness lock")
            .push((name.into(), Box::new(check)));
    }

    /// Register a check whose failure degrades the gateway without making it unready (the
    /// cluster store with `on_error = "open"`): `/readyz` still answers 200 and names it.
    pub(crate) fn add_warning(
        &self,
        name: impl Into<String>,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.warnings
            .write()
            .expect("readiness lock")
            .push((name.into(), Box::new(check)));
    }

    /// What degrades the gateway now (failing warnings), each as `name: reason`.
    pub(crate) fn degraded(&self) -> Vec<String> {
        self.warnings
            .read()
            .expect("readiness lock")
            .iter()
            .filter_map(|(name, check)| check().err().map(|why| format!("{name}: {why}")))
            .collect()
    }

    /// `Ok(())` when ready, otherwise every reason why not.
    pub(crate) fn check(&self) -> Result<(), Vec<String>> {
        let mut why = Vec::new();
        match self.phase() {
            Phase::Running => {}
            Phase::Starting => why.push("listeners not started".to_string()),
            Phase::Stopping => why.push("shutting down".to_string()),
        }
        for (name, check) in self.checks.read().expect("readiness lock").iter() {
            if let Err(reason) = check() {
                why.push(format!("{name}: {reason}"));
            }
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
    }

    /// Follow pingora's execution phases (on a thread of its own) until the process ends.
    pub(crate) fn follow(self: &Arc<Self>, mut phases: broadcast::Receiver<ExecutionPhase>) {
        let readiness = self.clone();
        std::thread::Builder::new()
            .name("readiness".into())
            .spawn(move || loop {
                let phase = match phases.blocking_recv() {
                    Ok(ExecutionPhase::Running) => Phase::Running,
                    Ok(ExecutionPhase::Setup)
                    | Ok(ExecutionPhase::Bootstrap)
                    | Ok(ExecutionPhase::BootstrapComplete) => Phase::Starting,
                    Ok(_) => Phase::Stopping,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                readiness.set_phase(phase);
            })
            .expect("spawn readiness thread");
    }
}

/// The admin listener's shared state.
pub(crate) struct Admin {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    /// The bearer token `/metrics` and `/readyz` require, when one is configured.
    token: Option<String>,
    /// The session endpoints (`sessions_api`), when the server wires them.
    control: Option<Arc<Control>>,
}

impl Admin {
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
        token: Option<String>,
    ) -> Admin {
        Admin {
            metrics,
            readiness,
            token,
            control: None,
        }
    }

    /// Serve the session endpoints too.
    pub(crate) fn with_control(mut self, control: Arc<Control>) -> Admin {
        self.control = Some(control);
        self
    }

    /// The session endpoints: `None` when `head` is not for them.
    async fn session_api<S>(
        &self,
        io: &mut S,
        buf: &mut BytesMut,
        head: &RequestHead,
    ) -> Option<Answer>
    where
        S: tokio::io::AsyncRead + Unpin,
    {
        let control = self.control.as_ref()?;
        if !sessions_api::handles(head.path()) {
            return None;
        }
        // These endpoints answer JSON, refusals included.
        if sessions_api::changes_state(head) && self.token.is_none() {
            return Some(sessions_api::refusal(
                403,
                "state-changing admin endpoints need an admin token ([admin] token_file or \
                 token_env)",
            ));
        }
        if let Some(challenge) = self.challenge(head) {
            return Some(
                sessions_api::refusal(401, challenge.why)
                    .header("WWW-Authenticate", challenge.header),
            );
        }
        let body = match read_body(io, buf, head).await {
            Ok(body) => body,
            Err(answer) => return Some(answer),
        };
        Some(sessions_api::answer(control, head, &body).await)
    }

    /// The answer to one admin request.
    pub(crate) fn answer(&self, head: &RequestHead) -> Answer {
        if head.method != "GET" && head.method != "HEAD" {
            return Answer::new(405, "method not allowed\n").header("Allow", "GET, HEAD");
        }
        let path = head.path();
        if path == "/healthz" {
            return Answer::new(200, "ok\n");
        }
        if !matches!(path, "/metrics" | "/readyz") {
            return Answer::new(404, "not found\n");
        }
        if let Some(challenge) = self.challenge(head) {
            return Answer::new(401, "unauthorized\n").header("WWW-Authenticate", challenge.header);
        }
        match path {
            "/metrics" => Answer::new(200, self.metrics.render())
                .header("Content-Type", metrics::CONTENT_TYPE),
            _ => {
                let degraded = self.readiness.degraded();
                match self.readiness.check() {
                    Ok(()) if degraded.is_empty() => Answer::new(200, "ready\n"),
                    Ok(()) => Answer::new(200, format!("ready; {}\n", degraded.join("; "))),
                    Err(mut why) => {
                        why.extend(degraded);
                        Answer::new(503, format!("not ready: {}\n", why.join("; ")))
                    }
                }
            }
        }
    }

    /// `None` when the request may proceed (no token configured, or the right one presented),
    /// else the challenge of its 401.
    fn challenge(&self, head: &RequestHead) -> Option<Challenge> {
        let expected = self.token.as_deref()?;
        let Some(value) = head.header("authorization") else {
            return Some(Challenge {
                header: "Bearer realm=\"portcullis-admin\"",
                why: "unauthorized: send Authorization: Bearer <admin token>",
            });
        };
        match bearer_token(value) {
            Some(token) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => None,
            _ => Some(Challenge {
                header: "Bearer realm=\"portcullis-admin\", error=\"invalid_token\"",
                why: "unauthorized: not the admin token",
            }),
        }
    }
}

/// Why a request is refused with 401: its `WWW-Authenticate` value and a short reason (the
/// JSON endpoints' `error`; `/metrics` and `/readyz` answer plain `unauthorized`).
struct Challenge {
    header: &'static str,
    why: &'static str,
}

/// A request's body (`Content-Length` only, at most `sessions_api::MAX_BODY`), within the head
/// timeout; refusals are the session endpoints' JSON.
async fn read_body<S>(io: &mut S, buf: &mut BytesMut, head: &RequestHead) -> Result<Vec<u8>, Answer>
where
    S: tokio::io::AsyncRead + Unpin,
{
    use sessions_api::refusal;
    use tokio::io::AsyncReadExt;
    if head.headers.contains_key(http::header::TRANSFER_ENCODING) {
        return Err(refusal(411, "send the body with Content-Length"));
    }
    let len: usize = match head.header("content-length") {
        None => return Ok(Vec::new()),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| refusal(400, "bad Content-Length"))?,
    };
    if len > sessions_api::MAX_BODY {
        return Err(refusal(
            413,
            format!("body too large (at most {} bytes)", sessions_api::MAX_BODY),
        ));
    }
    let read = async {
        while buf.len() < len {
            if io.read_buf(buf).await.map_err(|_| ())? == 0 {
                return Err(());
            }
        }
        Ok(())
    };
    match tokio::time::timeout(HEAD_TIMEOUT, read).await {
        Ok(Ok(())) => Ok(buf.split_to(len).to_vec()),
        _ => Err(refusal(400, "incomplete body")),
    }
}

#[async_trait]
impl ServerApp for Admin {
    async fn process_new(
        self: &Arc<Self>,
        mut io: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut buf = BytesMut::new();
        match http1::read_head(&mut io, &mut buf, LIMITS, HEAD_TIMEOUT).await {
            Ok(Some(head)) => {
                let answer = match self.session_api(&mut io, &mut buf, &head).await {
                    Some(answer) => answer,
                    None => self.answer(&head),
                };
                let _ = answer.write(&mut io, false, head.method == "HEAD").await;
            }
            Ok(None) => {}
            Err(e) => {
                if let Some((status, why)) = e.answer() {
                    let _ = Answer::new(status, format!("{why}\n"))
                        .write(&mut io, false, false)
                        .await;
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    fn get(path: &str, auth: Option<&str>) -> RequestHead {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        RequestHead::for_test("GET", path, &headers)
    }

    fn admin(token: Option<&str>) -> (Admin, Arc<Readiness>) {
        let readiness = Arc::new(Readiness::default());
        let admin = Admin::new(
            Arc::new(Metrics::new()),
            readiness.clone(),
            token.map(String::from),
        );
        (admin, readiness)
    }

    #[test]
    fn readiness_follows_phase_and_checks() {
        let (admin, readiness) = admin(None);
        let r = admin.answer(&get("/readyz", None));
        assert_eq!(r.status, 503);
        assert!(r.body.contains("listeners not started"), "{}", r.body);
        readiness.set_phase(Phase::Running);
        assert_eq!(admin.answer(&get("/readyz", None)).status, 200);

        // The relay registers "at least one healthy upstream" per route; it flips.
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        readiness.add_check("route /ws/relay", move || {
            if flag.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("no healthy upstream".into())
            }
        });
        assert_eq!(admin.answer(&get("/readyz", None)).status, 200);
        up.store(false, Ordering::SeqCst);
        let r = admin.answer(&get("/readyz", None));
        assert_eq!(r.status, 503);
        assert_eq!(r.body, "not ready: route /ws/relay: no healthy upstream\n");
        up.store(true, Ordering::SeqCst);
        assert_eq!(admin.answer(&get("/readyz", None)).status, 200);

        // A warning degrades without failing.
        let redis = Arc::new(AtomicBool::new(true));
        let flag = redis.clone();
        readiness.add_warning("cluster degraded", move || {
            if flag.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("connection refused".into())
            }
        });
        assert_eq!(admin.answer(&get("/readyz", None)).body, "ready\n");
        redis.store(false, Ordering::SeqCst);
        let r = admin.answer(&get("/readyz", None));
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "ready; cluster degraded: connection refused\n")
        );
        redis.store(true, Ordering::SeqCst);
        readiness.set_phase(Phase::Stopping);
        assert!(admin
            .answer(&get("/readyz", None))
            .body
            .contains("shutting down"));
    }

    #[test]
    fn bearer_token_guards_metrics_and_readyz_only() {
        let (admin, readiness) = admin(Some("t0ken"));
        readiness.set_phase(Phase::Running);
        for path in ["/metrics", "/readyz"] {
            let r = admin.answer(&get(path, None));
            assert_eq!(r.status, 401, "{path}");
            assert!(r
                .headers
                .iter()
                .any(|(k, v)| *k == "WWW-Authenticate" && v.starts_with("Bearer")));
            for wrong in [
                "Bearer t0ke",
                "Bearer t0kenX",
                "Basic t0ken",
                "t0ken",
                "Bearer ",
            ] {
                assert_eq!(admin.answer(&get(path, Some(wrong))).status, 401, "{wrong}");
            }
            assert_eq!(admin.answer(&get(path, Some("Bearer t0ken"))).status, 200);
            assert_eq!(admin.answer(&get(path, Some("bearer t0ken"))).status, 200);
            assert_eq!(admin.answer(&get(path, Some("BEARER\tt0ken"))).status, 200);
        }
        assert_eq!(admin.answer(&get("/healthz", None)).status, 200);
        assert_eq!(admin.answer(&get("/nope", None)).status, 404);
        let m = admin.answer(&get("/metrics?x=1", Some("Bearer t0ken")));
        assert!(m.body.contains("portcullis_build_info"));
        assert!(m
            .headers
            .iter()
            .any(|(k, v)| *k == "Content-Type" && v == metrics::CONTENT_TYPE));
    }
}
