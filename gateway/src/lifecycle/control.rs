//! Live session control, behind the admin API (`sessions_api`): list the open sessions, close
//! them, revoke subjects and token ids. Each action applies to this process at once and, with
//! `[cluster]`, goes to every other replica through Redis (pub/sub, plus a key per revocation
//! for replicas that start later); closes that other replicas send arrive through
//! [`Control::follow_cluster`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::cluster::events::{revocation_close, Close, Target};
use crate::cluster::revocations::{Revocations, Revoked};
use crate::cluster::Cluster;
use crate::core::end::EndReason;
use crate::edge::generation::InForce;
use crate::session::registry::{CloseRequest, Filter, Registry};

/// The operator's handle on the open sessions and the revocations.
pub(crate) struct Control {
    registry: Arc<Registry>,
    in_force: Arc<InForce>,
}

/// An operator's action: `Ok` with the answer when it applied wherever it should, `Err` with
/// the answer when it applied on this replica only because publishing it to the others failed
/// (the admin API answers 503 then).
pub(crate) type Applied = Result<Value, Value>;

/// Add to `answer` what happened on the other replicas: `"cluster"` says `"published"`,
/// `"none"` (no `[cluster]`) or why it could not be sent, and with `[cluster]`, `"published"`
/// says whether it was.
fn with_publication(
    mut answer: Value,
    result: Option<Result<(), crate::cluster::ClusterError>>,
) -> Applied {
    let (cluster, published) = match &result {
        None => (json!("none"), None),
        Some(Ok(())) => (json!("published"), Some(true)),
        Some(Err(e)) => (
            json!(format!("not published ({e}): applied on this replica only")),
            Some(false),
        ),
    };
    answer["cluster"] = cluster;
    if let Some(published) = published {
        answer["published"] = json!(published);
    }
    match result {
        Some(Err(_)) => Err(answer),
        _ => Ok(answer),
    }
}

fn filter_of(target: &Target) -> Filter {
    Filter {
        id: target.id.clone(),
        route: target.route.clone(),
        subject: target.subject.clone(),
        jti: target.jti.clone(),
        client: None,
    }
}

impl Control {
    pub(crate) fn new(registry: Arc<Registry>, in_force: Arc<InForce>) -> Control {
        Control { registry, in_force }
    }

    fn cluster(&self) -> Option<Arc<Cluster>> {
        self.in_force.get().admission.cluster().cloned()
    }

    /// The open sessions that match, paged.
    pub(crate) fn list(&self, filter: &Filter, offset: usize, limit: usize) -> Value {
        let (total, sessions) = self.registry.list(filter, offset, limit);
        json!({ "total": total, "offset": offset, "limit": limit, "sessions": sessions })
    }

    /// Close the matching sessions here, and ask the other replicas to.
    pub(crate) async fn close(&self, target: Target, code: u16, reason: String) -> Applied {
        let request = CloseRequest {
            code,
            reason: reason.clone(),
            cause: EndReason::Admin,
        };
        let closed = self.registry.close(&filter_of(&target), &request);
        let published = match self.cluster() {
            Some(c) => Some(
                c.publish_close(Close {
                    target,
                    code,
                    reason,
                    revoked: false,
                    started_before_ms: None,
                })
                .await,
            ),
            None => None,
        };
        with_publication(json!({ "closed": closed }), published)
    }

    /// Revoke `who` for `ttl`: close its open sessions with 1008 `revoked` and refuse its
    /// handshakes (here, and on every replica through the cluster).
    pub(crate) async fn revoke(&self, who: Revoked, ttl: Duration) -> Applied {
        Revocations::global().revoke_here(who.clone(), ttl);
        let closed = self.apply(&revocation_close(who.clone()));
        let published = match self.cluster() {
            Some(c) => Some(c.revoke(who.clone(), ttl).await),
            None => None,
        };
        let answer = json!({ "revoked": describe(&who, ttl), "closed": closed });
        with_publication(answer, published)
    }

    /// Lift a revocation (here and everywhere).
    pub(crate) async fn lift(&self, who: Revoked) -> Applied {
        let (lifted, tombstone) = Revocations::global().lift_here(who.clone());
        let published = match self.cluster() {
            Some(c) => Some(c.lift(who, tombstone).await),
            None => None,
        };
        with_publication(json!({ "lifted": lifted }), published)
    }

    /// The revocations in force.
    pub(crate) fn revocations(&self) -> Value {
        let list: Vec<Value> = Revocations::global()
            .list()
            .into_iter()
            .map(|(who, left)| describe(&who, left))
            .collect();
        json!({ "revocations": list })
    }

    /// Apply a close (ours or another replica's) to this process's sessions: the matching
    /// ones, and of a replayed close only those that started before it was made.
    fn apply(&self, close: &Close) -> usize {
        let request = CloseRequest {
            code: close.code,
            reason: close.reason.clone(),
            cause: if close.revoked {
                EndReason::Revoked
            } else {
                EndReason::Admin
            },
        };
        let filter = filter_of(&close.target);
        let Some(before_ms) = close.started_before_ms else {
            return self.registry.close(&filter, &request);
        };
        let (_, sessions) = self.registry.list(&filter, 0, usize::MAX);
        let before = before_ms as f64 / 1000.0;
        sessions
            .iter()
            .filter(|s| s["started_at"].as_f64().is_some_and(|at| at < before))
            .filter_map(|s| s["id"].as_str())
            .map(|id| {
                let one = Filter {
                    id: Some(id.to_string()),
                    ..filter.clone()
                };
                self.registry.close(&one, &request)
            })
            .sum()
    }

    /// Close every open session of a revocation in force.
    fn close_revoked(&self) -> usize {
        Revocations::global()
            .list()
            .into_iter()
            .map(|(who, _)| self.apply(&revocation_close(who)))
            .sum()
    }

    /// Apply the closes other replicas publish, following the cluster in force across
    /// reloads. Runs until the process ends (on a background thread).
    pub(crate) async fn follow_cluster(self: Arc<Self>) {
        loop {
            let Some(cluster) = self.cluster() else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            let mut closes = cluster.closes();
            loop {
                tokio::select! {
                    got = closes.recv() => match got {
                        Ok(close) => {
                            let n = self.apply(&close);
                            log::info!(
                                "cluster: closing {n} session(s) as another replica asked ({} {})",
                                close.code, close.reason
                            );
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            // Revocations are state: their closes can be made again (the lost
                            // operator closes cannot).
                            let again = self.close_revoked();
                            log::warn!(
                                "cluster: {n} close event(s) were dropped (too many at once); \
                                 closed {again} revoked session(s) again"
                            );
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        let same = self.cluster().is_some_and(|c| Arc::ptr_eq(&c, &cluster));
                        if !same {
                            break;
                        }
                    }
                }
            }
        }
    }
}

fn describe(who: &Revoked, left: Duration) -> Value {
    let (kind, value) = match who {
        Revoked::Subject(s) => ("subject", s),
        Revoked::Jti(j) => ("jti", j),
    };
    json!({ kind: value, "ttl_s": (left.as_secs_f64() * 10.0).round() / 10.0 })
}
