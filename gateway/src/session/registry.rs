//! The open WebSockets of this process, for the operator: each has an id, what it was admitted
//! as (route, subject, client, upstream, subprotocol, start) and its message and byte counters,
//! which the session itself updates (relaxed atomics: one add per message) and the admin API
//! reads while it runs. An operator's close reaches a session through its entry's close signal
//! ([`CloseRequest`]); the session closes itself. An entry leaves the registry when its
//! [`Registered`] guard drops, however the session ends. Never a token in here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::core::end::{EndReason, SessionEnd};

/// A session's counters, client-centric (`in`: from the client).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Counters {
    /// A data message from the client, of `len` payload bytes.
    pub(crate) fn count_in(&self, len: usize) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// A data message to the client.
    pub(crate) fn count_out(&self, len: usize) {
        self.messages_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// Copy the counts into a session's end.
    pub(crate) fn load_into(&self, end: &mut SessionEnd) {
        end.messages_in = self.messages_in.load(Ordering::Relaxed);
        end.messages_out = self.messages_out.load(Ordering::Relaxed);
        end.bytes_in = self.bytes_in.load(Ordering::Relaxed);
        end.bytes_out = self.bytes_out.load(Ordering::Relaxed);
    }

    fn json(&self) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "messages_in": get(&self.messages_in),
            "messages_out": get(&self.messages_out),
            "bytes_in": get(&self.bytes_in),
            "bytes_out": get(&self.bytes_out),
        })
    }
}

/// A request, from outside the session, to close it with this code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloseRequest {
    pub(crate) code: u16,
    pub(crate) reason: String,
    /// Reported as the session's end reason (admin, revoked, lifetime).
    pub(crate) cause: EndReason,
}

/// What a session was admitted as.
#[derive(Debug, Clone)]
pub(crate) struct SessionInfo {
    pub(crate) route: String,
    pub(crate) subject: Option<String>,
    /// The token id (`jti`), so that a revoked one can be found; not listed.
    pub(crate) jti: Option<String>,
    pub(crate) client: Option<IpAddr>,
    /// The upstream as configured (relay routes).
    pub(crate) upstream: Option<String>,
    pub(crate) subprotocol: Option<String>,
}

/// Which sessions a list or a close means; every field set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    pub(crate) id: Option<String>,
    pub(crate) route: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) jti: Option<String>,
    pub(crate) client: Option<IpAddr>,
}

impl Filter {
    fn matches(&self, id: &str, a: &SessionInfo) -> bool {
        let same = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| Some(w) == have)
        };
        same(&self.id, Some(id))
            && same(&self.route, Some(&a.route))
            && same(&self.subject, a.subject.as_deref())
            && same(&self.jti, a.jti.as_deref())
            && self.client.is_none_or(|c| Some(c) == a.client)
    }
}

struct Entry {
    admitted: SessionInfo,
    started: SystemTime,
    counters: Arc<Counters>,
    close: watch::Sender<Option<CloseRequest>>,
}

/// The open sessions of this process.
pub(crate) struct Registry {
    /// Makes ids unique across replicas (random per process).
    prefix: String,
    next: AtomicU64,
    sessions: Mutex<HashMap<String, Entry>>,
}

impl Default for Registry {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        Registry {
            prefix: format!("{:06x}", h.finish() & 0xff_ffff),
            next: AtomicU64::new(1),
            sessions: Mutex::new(HashMap::new()),
        }
    }
}

/// What a registered session holds: its counters, its close signal, and the guard that takes
/// it out of the registry when dropped.
pub(crate) struct Registered {
    registry: Arc<Registry>,
    pub(crate) id: String,
    pub(crate) counters: Arc<Counters>,
    pub(crate) close: watch::Receiver<Option<CloseRequest>>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry
            .sessions
            .lock()
            .expect("registry lock")
            .remove(&self.id);
    }
}

impl Registry {
    /// Register an open session.
    pub(crate) fn register(self: &Arc<Self>, admitted: SessionInfo) -> Registered {
        let id = format!(
            "{}-{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let counters = Arc::new(Counters::default());
        let (close, rx) = watch::channel(None);
        let entry = Entry {
            admitted,
            started: SystemTime::now(),
            counters: counters.clone(),
            close,
        };
        self.sessions
            .lock()
            .expect("registry lock")
            .insert(id.clone(), entry);
        Registered {
            registry: self.clone(),
            id,
            counters,
            close: rx,
        }
    }

    /// The sessions that match, oldest first, as JSON (`total` before paging).
    pub(crate) fn list(&self, filter: &Filter, offset: usize, limit: usize) -> (usize, Vec<Value>) {
        let sessions = self.sessions.lock().expect("registry lock");
        let mut matching: Vec<(&String, &Entry)> = sessions
            .iter()
            .filter(|(id, e)| filter.matches(id, &e.admitted))
            .collect();
        matching.sort_by_key(|(id, e)| (e.started, id.to_string()));
        let total = matching.len();
        let page = matching
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(id, e)| {
                let a = &e.admitted;
                let started = e
                    .started
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let mut v = json!({
                    "id": id,
                    "route": a.route,
                    "subject": a.subject,
                    "client": a.client.map(|c| c.to_string()),
                    "upstream": a.upstream,
                    "subprotocol": a.subprotocol,
                    "started_at": (started.as_millis() as f64) / 1000.0,
                    "age_s": e.started.elapsed().map_or(0.0, |d| d.as_secs_f64()),
                });
                if let (Value::Object(v), Value::Object(c)) = (&mut v, e.counters.json()) {
                    v.extend(c);
                }
                v
            })
            .collect();
        (total, page)
    }

    /// Ask every matching session to close; how many were asked (a session asked before keeps
    /// its first request).
    pub(crate) fn close(&self, filter: &Filter, request: &CloseRequest) -> usize {
        let sessions = self.sessions.lock().expect("registry lock");
        let mut n = 0;
        for (id, entry) in sessions.iter() {
            if filter.matches(id, &entry.admitted) {
                let fresh = entry.close.send_if_modified(|current| {
                    if current.is_none() {
                        *current = Some(request.clone());
                        true
                    } else {
                        false
                    }
                });
                n += usize::from(fresh);
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(route: &str, subject: Option<&str>) -> SessionInfo {
        SessionInfo {
            route: route.into(),
            subject: subject.map(String::from),
            jti: None,
            client: Some("127.0.0.1".parse().unwrap()),
            upstream: None,
            subprotocol: None,
        }
    }

    #[test]
    fn list_filter_close_and_leave() {
        let r = Arc::new(Registry::default());
        let a = r.register(admitted("/a", Some("alice")));
        let b = r.register(admitted("/b", Some("alice")));
        let c = r.register(admitted("/a", None));
        a.counters.count_in(5);
        let (total, page) = r.list(&Filter::default(), 0, 10);
        assert_eq!((total, page.len()), (3, 3));
        assert_eq!(page[0]["bytes_in"], 5);
        let (total, page) = r.list(&Filter::default(), 1, 1);
        assert_eq!((total, page.len()), (3, 1));
        let alice = Filter {
            subject: Some("alice".into()),
            ..Filter::default()
        };
        assert_eq!(r.list(&alice, 0, 10).0, 2);
        let req = CloseRequest {
            code: 1008,
            reason: "x".into(),
            cause: EndReason::Admin,
        };
        assert_eq!(r.close(&alice, &req), 2);
        assert_eq!(r.close(&alice, &req), 0, "asked once");
        assert_eq!(a.close.borrow().as_ref(), Some(&req));
        assert!(c.close.borrow().is_none());
        let by_id = Filter {
            id: Some(c.id.clone()),
            ..Filter::default()
        };
        assert_eq!(r.close(&by_id, &req), 1);
        drop((a, b));
        assert_eq!(r.list(&Filter::default(), 0, 10).0, 1);
    }
}
