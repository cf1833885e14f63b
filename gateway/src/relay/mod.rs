//! Upstreams of relay routes: the registry of a configuration generation ([`Relays`]), each
//! route's upstreams and their state ([`upstream`]), choosing one ([`balance`]), the handshake
//! request ([`forward`]), connecting ([`connect`]), typed failures ([`error`]) and active health
//! checks ([`health`]).
//!
//! Why not `pingora-load-balancing`: it was read first (0.9.1). Its `Backend` is a socket
//! address, while a relay upstream is a URL (scheme, host name for SNI and `Host`, path); it has
//! no least-connections selection (`selection/mod.rs`: "TODO: least conn"); its health is
//! active-only with consecutive-count thresholds, with no "take a refusing upstream out for a
//! while" from the request path; and selectors are rebuilt by background tasks that expect its
//! own service. The balancer here is small and has exactly the semantics the route keys
//! describe. pingora's connectors were not used either:
//! tokio-rustls is what pingora's rustls mode wraps anyway, and a relay needs the raw stream for
//! tungstenite, a per-route CA and client certificate, and one deadline over TCP + TLS + the
//! WebSocket handshake.

pub(crate) mod balance;
pub(crate) mod connect;
pub(crate) mod error;
pub(crate) mod forward;
pub(crate) mod health;
pub(crate) mod upstream;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::config::{Balancing, Config, Mode, RelaySettings, Route};
use crate::core::credential::PolicyCredentials;
use crate::net::client_tls::{client_config, have_system_roots, ClientTlsError, Identity};
use crate::obs::metrics::Metrics;
use balance::{Choice, Selection};
use forward::Forwarding;
use upstream::Upstream;

/// The relay routes of a configuration generation, by path.
#[derive(Default)]
pub(crate) struct Relays {
    by_path: HashMap<String, Arc<RelayRoute>>,
}

impl Relays {
    /// Build every relay route: its upstreams, CA file and client certificate. Errors name the
    /// route key, like configuration errors. With `previous` (a reload), a route that keeps its
    /// path keeps its rotation, and an upstream that keeps its URL and TLS settings keeps its
    /// health and open-socket count. Nothing live is touched: see [`Relays::publish`].
    /// `credentials` tells what of a client's request belongs to a route's policy (admission's
    /// answer, built once per generation): it never goes upstream as sent.
    pub(crate) fn build(
        config: &Config,
        previous: Option<&Relays>,
        credentials: impl Fn(&Route) -> PolicyCredentials,
    ) -> Result<Relays, String> {
        let mut by_path = HashMap::new();
        for (i, route) in config.routes.iter().enumerate() {
            if route.mode == Mode::Relay {
                let prev = previous.and_then(|p| p.by_path.get(&route.path));
                let relay = RelayRoute::build(route, prev.map(|p| &**p), credentials(route))
                    .map_err(|e| format!("routes[{i}].{e}"))?;
                by_path.insert(route.path.clone(), Arc::new(relay));
            }
        }
        Ok(Relays { by_path })
    }

    pub(crate) fn get(&self, path: &str) -> Option<&Arc<RelayRoute>> {
        self.by_path.get(path)
    }

    /// Publish every upstream's series and health (the generation goes into force).
    pub(crate) fn publish(&self, metrics: &Metrics) {
        for (path, route) in &self.by_path {
            if route.selection.wants_key() {
                metrics.init_hash_route(path);
            }
            for upstream in &route.upstreams {
                upstream.publish(metrics);
            }
        }
    }

    /// Readiness: every relay route has at least one upstream that takes new sockets.
    pub(crate) fn ready(&self) -> Result<(), String> {
        let now = Instant::now();
        let mut down: Vec<&str> = self
            .by_path
            .iter()
            .filter(|(_, r)| !r.upstreams.iter().any(|u| u.takes_new(now)))
            .map(|(path, _)| path.as_str())
            .collect();
        down.sort_unstable();
        match down.is_empty() {
            true => Ok(()),
            false => Err(format!("no healthy upstream for {}", down.join(", "))),
        }
    }
}

/// The route settings an upstream's state depends on besides its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TlsKeys {
    ca_file: Option<std::path::PathBuf>,
    client_cert: Option<std::path::PathBuf>,
    client_key: Option<std::path::PathBuf>,
    sni: Option<String>,
}

impl TlsKeys {
    fn of(route: &Route) -> TlsKeys {
        TlsKeys {
            ca_file: route.upstream_ca_file.clone(),
            client_cert: route.upstream_client_cert.clone(),
            client_key: route.upstream_client_key.clone(),
            sni: route.upstream_sni.clone(),
        }
    }
}

/// A relay route: its upstreams, how it balances over them, TLS client settings, and
/// forwarding rules.
pub(crate) struct RelayRoute {
    pub(crate) path: String,
    pub(crate) settings: RelaySettings,
    pub(crate) balancing: Balancing,
    selection: Box<dyn Selection>,
    pub(crate) upstreams: Vec<Upstream>,
    tls: Option<TlsConnector>,
    tls_keys: TlsKeys,
    sni: Option<ServerName<'static>>,
    forwarding: Forwarding,
    /// The round-robin rotation.
    next: Arc<AtomicUsize>,
}

impl RelayRoute {
    /// Build from a validated route. Errors start with the key (the caller adds `routes[i].`).
    fn build(
        route: &Route,
        previous: Option<&RelayRoute>,
        credentials: PolicyCredentials,
    ) -> Result<RelayRoute, String> {
        let entries = route.upstreams.clone().unwrap_or_default();
        if entries.is_empty() {
            return Err("upstreams: a relay route needs at least one upstream".into());
        }
        let tls = if entries.iter().any(|u| u.tls()) {
            Some(TlsConnector::from(client_tls(route)?))
        } else {
            None
        };
        let sni = match &route.upstream_sni {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|_| format!("upstream_sni: {name:?} is not a valid name"))?,
            ),
            None => None,
        };
        let tls_keys = TlsKeys::of(route);
        let kept = previous.filter(|p| p.tls_keys == tls_keys);
        // On a reload, an upstream the route did not take new sockets to before (new, or out
        // of drain) joins now: slow start applies to it.
        let upstreams = entries
            .iter()
            .map(|entry| {
                let before = kept.and_then(|p| p.upstreams.iter().find(|u| u.url == entry.url));
                match before {
                    Some(b) => {
                        let u = Upstream::with_state(entry, b.state.clone());
                        if b.drain && !u.drain {
                            u.joins();
                        }
                        u
                    }
                    None => Upstream::new(entry, previous.map(|_| Instant::now())),
                }
            })
            .collect();
        let next: Arc<AtomicUsize> = previous.map_or_else(Arc::default, |p| p.next.clone());
        let balancing = route.balancing();
        Ok(RelayRoute {
            path: route.path.clone(),
            settings: route.relay(),
            selection: balance::selection(&balancing, next.clone()),
            balancing,
            upstreams,
            tls,
            tls_keys,
            sni,
            forwarding: Forwarding::of(route, credentials)?,
            next,
        })
    }

    /// The upstreams that take new sockets, in the order a handshake with `key` tries them.
    pub(crate) fn choose(&self, key: Option<&[u8]>) -> Choice {
        let pool = balance::pool(&self.upstreams, Instant::now(), self.balancing.slow_start);
        self.selection.select(&pool, key)
    }

    /// Whether the route's balancing reads a key from the handshake.
    pub(crate) fn wants_key(&self) -> bool {
        self.selection.wants_key()
    }

    #[cfg(test)]
    fn candidates(&self) -> Vec<usize> {
        self.choose(None).order
    }
}

/// rustls client settings of a route: trust its CA file or the system roots, present its
/// client certificate if it has one, and speak HTTP/1.1 (WebSocket needs it).
fn client_tls(route: &Route) -> Result<Arc<rustls::ClientConfig>, String> {
    if route.upstream_ca_file.is_none() && !have_system_roots() {
        log::warn!(
            "route {}: no system CA certificates found; wss:// upstreams will fail \
             verification (set upstream_ca_file)",
            route.path
        );
    }
    let identity = match (&route.upstream_client_cert, &route.upstream_client_key) {
        (Some(cert), Some(key)) => Some(Identity { cert, key }),
        _ => None,
    };
    client_config(route.upstream_ca_file.as_deref(), identity, &[b"http/1.1"]).map_err(
        |e| match e {
            ClientTlsError::Roots(e) => format!("upstream_ca_file: {e}"),
            ClientTlsError::Cert(e) | ClientTlsError::Mismatch(e) => {
                format!("upstream_client_cert: {e}")
            }
            ClientTlsError::Key(e) => format!("upstream_client_key: {e}"),
            ClientTlsError::Settings(e) => format!("upstreams: TLS settings: {e}"),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[routes]]\npath = \"/r\"\nmode = \"relay\"\n{extra}"
        );
        Config::parse(&text, "t", None).unwrap()
    }

    fn route(extra: &str) -> Arc<RelayRoute> {
        Relays::build(&config(extra), None, |_| PolicyCredentials::default())
            .unwrap()
            .get("/r")
            .unwrap()
            .clone()
    }

    #[test]
    fn round_robin_and_ejection() {
        let r = route("upstreams = [\"ws://127.0.0.1:1/a\", \"ws://127.0.0.1:2/b\"]");
        let firsts: Vec<usize> = (0..4).map(|_| r.candidates()[0]).collect();
        assert_eq!(firsts, [0, 1, 0, 1]);
        r.upstreams[0].eject(std::time::Duration::from_secs(60));
        assert_eq!(r.candidates(), [1]);
        assert_eq!(r.candidates(), [1]);
        r.upstreams[1].mark_checked(false);
        assert!(r.candidates().is_empty());
        r.upstreams[0].mark_checked(true);
        assert_eq!(r.candidates(), [0]);
    }

    #[test]
    fn least_connections_prefers_the_idle_upstream() {
        let r = route(
            "upstreams = [\"ws://127.0.0.1:1/\", \"ws://127.0.0.1:2/\"]\nbalance = \"least_connections\"",
        );
        let held = r.upstreams[0].hold();
        for _ in 0..3 {
            assert_eq!(r.candidates(), [1, 0]);
        }
        drop(held);
        assert_eq!(r.upstreams[0].active(), 0);
    }

    #[test]
    fn a_reload_keeps_health_and_counts_of_unchanged_upstreams() {
        let two = "upstreams = [\"ws://127.0.0.1:1/a\", \"ws://127.0.0.1:2/b\"]\nbalance = \"least_connections\"";
        let old = Relays::build(&config(two), None, |_| PolicyCredentials::default()).unwrap();
        let r = old.get("/r").unwrap();
        r.upstreams[0].eject(std::time::Duration::from_secs(60));
        let held = r.upstreams[1].hold();

        // The same upstreams (and one more): state carried over.
        let three = "upstreams = [\"ws://127.0.0.1:1/a\", \"ws://127.0.0.1:2/b\", \"ws://127.0.0.1:3/c\"]\nbalance = \"least_connections\"";
        let new =
            Relays::build(&config(three), Some(&old), |_| PolicyCredentials::default()).unwrap();
        let n = new.get("/r").unwrap();
        assert_eq!(n.upstreams[1].active(), 1);
        assert_eq!(n.candidates(), [2, 1], "the ejected upstream stays out");
        drop(held);
        assert_eq!(
            n.upstreams[1].active(),
            0,
            "a socket from before counts down"
        );

        // A changed TLS setting starts the route's upstreams afresh.
        let tls = |sni: &str| {
            format!("upstreams = [\"wss://127.0.0.1:1/a\", \"wss://127.0.0.1:2/b\"]\nupstream_sni = \"{sni}\"")
        };
        let old = Relays::build(&config(&tls("a.test")), None, |_| {
            PolicyCredentials::default()
        })
        .unwrap();
        old.get("/r").unwrap().upstreams[0].eject(std::time::Duration::from_secs(60));
        let same = Relays::build(&config(&tls("a.test")), Some(&old), |_| {
            PolicyCredentials::default()
        })
        .unwrap();
        assert_eq!(same.get("/r").unwrap().candidates().len(), 1);
        let changed = Relays::build(&config(&tls("b.test")), Some(&old), |_| {
            PolicyCredentials::default()
        })
        .unwrap();
        assert_eq!(changed.get("/r").unwrap().candidates().len(), 2);
    }

    #[test]
    fn weights_drain_and_round_robin_turns() {
        let r = route(
            "upstreams = [{ url = \"ws://127.0.0.1:1/a\", weight = 2 }, \"ws://127.0.0.1:2/b\", \
             { url = \"ws://127.0.0.1:3/c\", drain = true }]",
        );
        assert_eq!(r.upstreams[0].weight, 2);
        assert!(r.upstreams[2].drain);
        // The drained upstream takes no turn; the weight-2 one takes two in a row.
        let firsts: Vec<usize> = (0..6).map(|_| r.candidates()[0]).collect();
        assert_eq!(firsts, [0, 0, 1, 0, 0, 1]);
        assert!(!r.candidates().contains(&2));

        // Least connections counts sockets per unit of weight.
        let lc = route(
            "upstreams = [{ url = \"ws://127.0.0.1:1/a\", weight = 3 }, \"ws://127.0.0.1:2/b\"]\n\
             balance = \"least_connections\"",
        );
        let held: Vec<_> = (0..2).map(|_| lc.upstreams[0].hold()).collect();
        assert_eq!(
            lc.candidates()[0],
            0,
            "2 of weight 3 is less loaded than 0 of weight 1"
        );
        let one = lc.upstreams[1].hold();
        assert_eq!(lc.candidates()[0], 0);
        drop((held, one));
    }

    #[test]
    fn a_drained_upstream_keeps_its_open_sockets_and_takes_no_new_ones() {
        let up =
            "upstreams = [\"ws://127.0.0.1:1/a\", \"ws://127.0.0.1:2/b\"]\nbalance = \"hash\"\n\
                  hash_key = \"header:x-room\"";
        let old = Relays::build(&config(up), None, |_| PolicyCredentials::default()).unwrap();
        let room = |r: &RelayRoute, i: usize| r.choose(Some(format!("room-{i}").as_bytes())).order;
        let r = old.get("/r").unwrap();
        let on_a = (0..100).find(|&i| room(r, i)[0] == 0).expect("a room on a");
        let held = r.upstreams[0].hold();

        let drained = "upstreams = [{ url = \"ws://127.0.0.1:1/a\", drain = true }, \"ws://127.0.0.1:2/b\"]\n\
                       balance = \"hash\"\nhash_key = \"header:x-room\"";
        let new = Relays::build(&config(drained), Some(&old), |_| {
            PolicyCredentials::default()
        })
        .unwrap();
        let n = new.get("/r").unwrap();
        assert_eq!(n.upstreams[0].active(), 1, "the open socket stays counted");
        for i in 0..100 {
            assert_eq!(room(n, i), [1], "room-{i}");
        }
        assert!(new.ready().is_ok());
        drop(held);
        assert_eq!(n.upstreams[0].active(), 0);

        // Out of drain by the next reload: back, its rooms with it (no slow start configured).
        let back =
            Relays::build(&config(up), Some(&new), |_| PolicyCredentials::default()).unwrap();
        assert_eq!(room(back.get("/r").unwrap(), on_a)[0], 0);
    }

    #[test]
    fn slow_start_ramps_a_joining_or_returning_upstream() {
        let window = Some(std::time::Duration::from_secs(100));
        let r = route("upstreams = [\"ws://127.0.0.1:1/a\", { url = \"ws://127.0.0.1:2/b\", weight = 4 }]\nslow_start = \"100s\"");
        let now = Instant::now();
        // There from the start: full weight.
        assert_eq!(r.upstreams[1].weight_now(now, window), 4.0);
        // Back from an ejection: from the end of the ejection, a linear climb.
        r.upstreams[1].eject(std::time::Duration::ZERO);
        let at = |secs: u64| {
            r.upstreams[1].weight_now(
                Instant::now() + std::time::Duration::from_secs(secs),
                window,
            )
        };
        assert!(at(0) <= 0.05, "{}", at(0));
        assert!((at(50) - 2.0).abs() < 0.05, "{}", at(50));
        assert_eq!(at(100), 4.0);
        assert_eq!(at(1000), 4.0);
        // Without slow start, full weight at once.
        assert_eq!(r.upstreams[1].weight_now(Instant::now(), None), 4.0);

        // Joined by a reload: ramps; the upstream that stayed does not.
        let old = Relays::build(
            &config("upstreams = [\"ws://127.0.0.1:1/a\"]\nslow_start = \"100s\""),
            None,
            |_| PolicyCredentials::default(),
        )
        .unwrap();
        let new = Relays::build(
            &config("upstreams = [\"ws://127.0.0.1:1/a\", \"ws://127.0.0.1:2/b\"]\nslow_start = \"100s\""),
            Some(&old),
            |_| PolicyCredentials::default(),
        )
        .unwrap();
        let n = new.get("/r").unwrap();
        assert_eq!(n.upstreams[0].weight_now(Instant::now(), window), 1.0);
        assert!(n.upstreams[1].weight_now(Instant::now(), window) < 0.05);
        // In slow start, round robin gives it few of the first turns.
        let to_b = (0..1000).filter(|_| n.candidates()[0] == 1).count();
        assert!(to_b < 50, "{to_b} of 1000 turns to the joining upstream");
    }
}
