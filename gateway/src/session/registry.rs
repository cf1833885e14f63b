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
use tokio::sync::Notify;

use crate::config::Route;
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

    /// Data messages both ways so far.
    pub(crate) fn messages(&self) -> u64 {
        self.messages_in.load(Ordering::Relaxed) + self.messages_out.load(Ordering::Relaxed)
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

/// How a close request reaches a session: the first request is kept (later ones are ignored)
/// and wakes the session. Lighter than a `watch` channel, which every open socket would hold.
#[derive(Debug, Default)]
pub(crate) struct CloseSignal {
    request: Mutex<Option<CloseRequest>>,
    notify: Notify,
}

impl CloseSignal {
    /// Ask the session to close; `false` when it was asked before.
    pub(crate) fn request(&self, request: &CloseRequest) -> bool {
        let mut current = self.request.lock().expect("close signal lock");
        if current.is_some() {
            return false;
        }
        *current = Some(request.clone());
        // A stored permit: the session sees it even if it is not waiting yet.
        self.notify.notify_one();
        true
    }

    /// The request made, if any.
    pub(crate) fn current(&self) -> Option<CloseRequest> {
        self.request.lock().expect("close signal lock").clone()
    }

    /// Resolves with the first request. Cancel-safe.
    pub(crate) async fn wait(&self) -> CloseRequest {
        loop {
            if let Some(request) = self.current() {
                return request;
            }
            self.notify.notified().await;
        }
    }
}

/// What a session was admitted as.
#[derive(Debug, Clone)]
pub(crate) struct SessionInfo {
    pub(crate) route: Arc<Route>,
    pub(crate) subject: Option<String>,
    /// The token id (`jti`), so that a revoked one can be found; not listed.
    pub(crate) jti: Option<String>,
    pub(crate) client: Option<IpAddr>,
    /// The upstream as configured (relay routes).
    pub(crate) upstream: Option<String>,
    pub(crate) subprotocol: Option<String>,
    /// What the session runs over: `h1` (its own connection) or `h2` (a stream of one).
    pub(crate) protocol: &'static str,
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
        let route = Some(a.route.path.as_str());
        let same = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| Some(w) == have)
        };
        same(&self.id, Some(id))
            && same(&self.route, route)
            && same(&self.subject, a.subject.as_deref())
            && same(&self.jti, a.jti.as_deref())
            && self.client.is_none_or(|c| Some(c) == a.client)
    }
}

struct Entry {
    admitted: SessionInfo,
    started: SystemTime,
    counters: Arc<Counters>,
    close: Arc<CloseSignal>,
}

/// The open sessions of this process, by the number in their id.
pub(crate) struct Registry {
    /// Makes ids unique across replicas (random per process): an id is `PREFIX-NUMBER`.
    prefix: String,
    next: AtomicU64,
    sessions: Mutex<HashMap<u64, Entry>>,
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
    number: u64,
    pub(crate) counters: Arc<Counters>,
    pub(crate) close: Arc<CloseSignal>,
}

impl Registered {
    /// The session's id, as the admin API shows it.
    #[cfg(test)]
    pub(crate) fn id(&self) -> String {
        self.registry.id(self.number)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut sessions = self.registry.sessions.lock().expect("registry lock");
        sessions.remove(&self.number);
        // A table never shrinks by itself: give back what a burst of sessions grew it to.
        if sessions.capacity() > 64 && sessions.len() < sessions.capacity() / 4 {
            let keep = sessions.len() * 2;
            sessions.shrink_to(keep);
        }
    }
}

impl Registry {
    /// Register an open session.
    pub(crate) fn register(self: &Arc<Self>, admitted: SessionInfo) -> Registered {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let counters = Arc::new(Counters::default());
        let close = Arc::new(CloseSignal::default());
        let entry = Entry {
            admitted,
            started: SystemTime::now(),
            counters: counters.clone(),
            close: close.clone(),
        };
        self.sessions
            .lock()
            .expect("registry lock")
            .insert(number, entry);
        Registered {
            registry: self.clone(),
            number,
            counters,
            close,
        }
    }

    /// The id of the session numbered `number`.
    fn id(&self, number: u64) -> String {
        format!("{}-{number}", self.prefix)
    }

    /// The sessions that match, oldest first, as JSON (`total` before paging).
    pub(crate) fn list(&self, filter: &Filter, offset: usize, limit: usize) -> (usize, Vec<Value>) {
        let sessions = self.sessions.lock().expect("registry lock");
        let mut matching: Vec<(String, &Entry)> = sessions
            .iter()
            .map(|(number, e)| (self.id(*number), e))
            .filter(|(id, e)| filter.matches(id, &e.admitted))
            .collect();
        matching.sort_by(|(a_id, a), (b_id, b)| (a.started, a_id).cmp(&(b.started, b_id)));
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
                    "route": a.route.path,
                    "subject": a.subject,
                    "client": a.client.map(|c| c.to_string()),
                    "upstream": a.upstream,
                    "subprotocol": a.subprotocol,
                    "protocol": a.protocol,
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
        for (number, entry) in sessions.iter() {
            if filter.matches(&self.id(*number), &entry.admitted) {
                n += usize::from(entry.close.request(request));
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(route: &str, subject: Option<&str>) -> SessionInfo {
        let route: Route = toml::from_str(&format!("path = \"{route}\"\nmode = \"echo\"")).unwrap();
        SessionInfo {
            route: Arc::new(route),
            subject: subject.map(String::from),
            jti: None,
            client: Some("127.0.0.1".parse().unwrap()),
            upstream: None,
            subprotocol: None,
            protocol: "h1",
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
        assert_eq!(a.close.current().as_ref(), Some(&req));
        assert!(c.close.current().is_none());
        let by_id = Filter {
            id: Some(c.id()),
            ..Filter::default()
        };
        assert_eq!(r.close(&by_id, &req), 1);
        drop((a, b));
        assert_eq!(r.list(&Filter::default(), 0, 10).0, 1);
    }
}
