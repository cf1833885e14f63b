//! The public listeners' pingora services and their listening sockets.
//!
//! With `[server] work_stealing = false` each worker thread is a pingora service of its own (a
//! runtime of one thread) with a listening socket of its own per address, all bound with
//! `SO_REUSEPORT`: the kernel spreads new connections over the sockets, so over the threads,
//! and a connection stays on the thread that accepted it (NGINX's `listen ... reuseport`).
//! pingora cannot do this within one service: it spawns each accept loop, and each accepted
//! connection, on a thread of the service's runtime picked at random (pingora-core 0.9.1
//! `services/listening.rs` 232 and 309, through `pingora_runtime::current_handle`), and the
//! table of listening sockets it hands over on upgrade has one socket per address (it is keyed
//! by the address, `listeners/l4.rs` 362). So the sockets are bound here and entered in that
//! table as `ADDRESS#N`, and each thread's service gets a table of its own that maps the
//! address to its own socket. With work stealing one service (every thread) accepts on one
//! socket per address, `ADDRESS#0`, bound the same way.
//!
//! An upgrade takes over every socket the old process had and binds the ones it lacks (more
//! threads now); pingora closes the ones no service claims (fewer threads now:
//! `server/bootstrap_services.rs` 157, with the keys of `Plan::claims`),
//! which the kernel would otherwise go on giving connections that nobody accepts. pingora
//! passes at most 32 sockets on an upgrade (`server/transfer_fd/mod.rs` 138), so with more
//! threads × listeners than that, each address gets fewer sockets than threads (dealt out so
//! that every thread accepts on some address). A socket handed over by an older build, which
//! bound it without `SO_REUSEPORT` and entered it as `ADDRESS`, cannot be joined: the first
//! thread accepts from it alone until the gateway is restarted.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::{Fds, ListenFds, ShutdownWatch};
use pingora::services::listening::Service;
use pingora::services::Service as ServiceTrait;

use crate::edge::EdgeApp;
use crate::net::bind;

/// pingora's limit on the sockets one upgrade hands over.
const MAX_HANDED_OVER: usize = 32;

/// The public listening sockets of every thread, resolved once by whichever service starts
/// first (under the lock of pingora's table, so the threads agree).
pub(crate) struct Plan {
    addresses: Vec<SocketAddr>,
    /// Services that accept: one per thread, or one for all (work stealing).
    services: usize,
    /// Sockets per address (at most `services`).
    sockets: usize,
    /// Per service, its sockets.
    resolved: OnceLock<Result<Vec<Vec<Socket>>, String>>,
}

/// One listening socket of a service.
#[derive(Debug, Clone)]
struct Socket {
    address: SocketAddr,
    fd: RawFd,
}

impl Plan {
    /// `services` accepting services over `addresses`, leaving `reserved` of the sockets an
    /// upgrade hands over to other listeners (the admin one).
    pub(crate) fn new(addresses: Vec<SocketAddr>, services: usize, reserved: usize) -> Plan {
        let fit = MAX_HANDED_OVER.saturating_sub(reserved) / addresses.len().max(1);
        let sockets = services.min(fit).max(1);
        if sockets < services {
            log::warn!(
                "{services} threads, but an upgrade hands over at most {MAX_HANDED_OVER} \
                 listening sockets: {sockets} threads accept on each public address"
            );
        }
        Plan {
            sockets,
            addresses,
            services,
            resolved: OnceLock::new(),
        }
    }

    /// The key of an address's `index`th socket in pingora's table. Older builds entered their
    /// one socket (without `SO_REUSEPORT`) under the bare address.
    fn key(address: SocketAddr, index: usize) -> String {
        format!("{address}#{index}")
    }

    /// The service that accepts on an address's `index`th socket: the addresses' sockets are
    /// dealt out in turn, so that every service has one when there are fewer than services.
    fn owner(&self, address: usize, index: usize) -> usize {
        (address * self.sockets + index) % self.services
    }

    /// The keys of every socket service `index` may claim (pingora closes the others it was
    /// handed): its share of each address's, and for the first service an older build's.
    fn claims(&self, index: usize) -> Vec<String> {
        let own = (0..self.addresses.len())
            .flat_map(|a| (0..self.sockets).map(move |i| (a, i)))
            .filter(|&(a, i)| self.owner(a, i) == index)
            .map(|(a, i)| Self::key(self.addresses[a], i));
        let legacy = self.addresses.iter().map(|a| a.to_string());
        match index {
            0 => own.chain(legacy).collect(),
            _ => own.collect(),
        }
    }

    /// Every service's sockets, taken from the table (an upgrade) or bound, the table updated.
    fn resolve(&self, table: &ListenFds) -> Result<Vec<Vec<Socket>>, String> {
        let mut table = table.lock();
        let mut per_service = vec![Vec::new(); self.services];
        for (a, &address) in self.addresses.iter().enumerate() {
            let legacy = address.to_string();
            if let Some(&fd) = table.get(&legacy) {
                if self.services > 1 {
                    log::warn!(
                        "{address}: the listening socket taken over from an older build cannot \
                         be shared; one thread accepts from it until the gateway is restarted"
                    );
                }
                per_service[0].push(Socket { address, fd });
                continue;
            }
            for index in 0..self.sockets {
                let key = Self::key(address, index);
                let fd = match table.get(&key) {
                    Some(&fd) => fd,
                    None => {
                        let fd = bind::listen_shared(address)
                            .map_err(|e| format!("cannot listen on {address}: {e}"))?;
                        table.add(key, fd);
                        fd
                    }
                };
                per_service[self.owner(a, index)].push(Socket { address, fd });
            }
        }
        Ok(per_service)
    }
}

/// One service that accepts on the public listeners: a thread's own (`threads = Some(1)`), or
/// every thread's.
pub(crate) struct PublicService {
    name: String,
    index: usize,
    threads: Option<usize>,
    plan: Arc<Plan>,
    app: Option<EdgeApp>,
    buffers: L4BufferSettings,
}

impl PublicService {
    /// The `index`th of the plan's services, serving `app` with pingora's socket buffers
    /// `buffers`; `threads`: `Some(1)` for a thread's own service.
    pub(crate) fn new(
        plan: Arc<Plan>,
        index: usize,
        threads: Option<usize>,
        app: EdgeApp,
        buffers: L4BufferSettings,
    ) -> PublicService {
        let name = match threads {
            Some(1) => format!("portcullis-{index}"),
            _ => "portcullis".to_string(),
        };
        PublicService {
            name,
            index,
            threads,
            plan,
            app: Some(app),
            buffers,
        }
    }
}

#[async_trait]
impl ServiceTrait for PublicService {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let table = fds.unwrap_or_else(|| Arc::new(Mutex::new(Fds::new())));
        let resolved = self.plan.resolved.get_or_init(|| self.plan.resolve(&table));
        let own = match resolved {
            Ok(per_service) => &per_service[self.index],
            Err(e) => {
                log::error!("{e}");
                std::process::exit(1);
            }
        };
        let Some(app) = self.app.take() else {
            return;
        };
        // pingora's listener finds its address in this table and takes the socket over.
        let mut inner = Service::new(self.name.clone(), app);
        let mut mine = Fds::new();
        for socket in own {
            let address = socket.address.to_string();
            inner.add_listener(ListenerConfig::tcp(address.clone()).l4_buffer(self.buffers));
            mine.add(address, socket.fd);
        }
        inner
            .start_service(Some(Arc::new(Mutex::new(mine))), shutdown, listeners_per_fd)
            .await;
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        self.threads
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(self.plan.claims(self.index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(services: usize, listeners: usize, reserved: usize) -> Plan {
        let addresses = (0..listeners)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)))
            .collect();
        Plan::new(addresses, services, reserved)
    }

    #[test]
    fn sockets_fit_one_upgrade() {
        assert_eq!(plan(2, 1, 1).sockets, 2);
        assert_eq!(plan(1, 3, 1).sockets, 1);
        // 64 threads, 2 listeners and the admin one: 15 sockets per address (31 in all).
        assert_eq!(plan(64, 2, 1).sockets, 15);
        assert_eq!(plan(4, 40, 1).sockets, 1);
    }

    #[test]
    fn every_service_accepts_somewhere() {
        // 3 addresses, one socket each fits: the three go to three different services.
        let p = plan(3, 3, 29);
        assert_eq!(p.sockets, 1);
        let owners: std::collections::HashSet<usize> = (0..3).map(|a| p.owner(a, 0)).collect();
        assert_eq!(owners.len(), 3);
        // Enough sockets: thread i has the ith socket of every address.
        let p = plan(4, 2, 1);
        assert!((0..4).all(|i| p.owner(0, i) == i && p.owner(1, i) == i));
    }

    #[test]
    fn each_service_claims_its_own_keys() {
        let p = plan(2, 1, 1);
        assert_eq!(p.claims(0), ["127.0.0.1:1000#0", "127.0.0.1:1000"]);
        assert_eq!(p.claims(1), ["127.0.0.1:1000#1"]);
    }
}
