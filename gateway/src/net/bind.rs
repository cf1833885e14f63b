//! Listening addresses handed to pingora, with port 0 made race-free.
//!
//! An address with port 0 gets a free port from the kernel: a placeholder socket is bound to
//! port 0 with `SO_REUSEPORT` (the kernel never autobinds a port another socket holds), and
//! the listening sockets are then bound to that concrete port with `SO_REUSEPORT` too. The
//! placeholder never listens, so it never receives a connection; it is kept for the life of
//! the process. The public listeners' sockets are bound here ([`listen_shared`], always with
//! `SO_REUSEPORT`: one per worker thread may share a port); the admin listener's by pingora,
//! with its usual bind for an address with a port.

use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};

use pingora::listeners::{ListenerConfig, TcpSocketOptions};
use tokio::net::TcpSocket;

/// One address pingora will listen on.
pub(crate) struct BoundAddr {
    /// The address pingora binds (the concrete port).
    pub(crate) address: SocketAddr,
    /// Set for a port-0 address: the reservation to keep while the process lives.
    reserved: Option<TcpSocket>,
}

impl BoundAddr {
    pub(crate) fn resolve(address: SocketAddr) -> Result<BoundAddr, String> {
        if address.port() != 0 {
            return Ok(BoundAddr {
                address,
                reserved: None,
            });
        }
        let fail = |e: std::io::Error| format!("cannot reserve a port on {address}: {e}");
        let socket = reuseport_socket(address).map_err(fail)?;
        socket.bind(address).map_err(fail)?;
        let local = socket.local_addr().map_err(fail)?;
        Ok(BoundAddr {
            address: local,
            reserved: Some(socket),
        })
    }

    /// pingora's listener settings for this address.
    pub(crate) fn listener(&self) -> ListenerConfig {
        let config = ListenerConfig::tcp(self.address.to_string());
        match self.reserved {
            Some(_) => {
                let mut options = TcpSocketOptions::default();
                options.so_reuseport = Some(true);
                config.tcp_socket_options(options)
            }
            None => config,
        }
    }
}

/// A listening TCP socket on `address` with `SO_REUSEPORT`, so that several (one per worker
/// thread) can share the port and the kernel spreads new connections over them. Its raw
/// descriptor, owned by the caller (pingora takes it over from its table of listening
/// sockets). Call within a tokio runtime.
pub(crate) fn listen_shared(address: SocketAddr) -> std::io::Result<RawFd> {
    let socket = reuseport_socket(address)?;
    // As pingora binds: `SO_REUSEADDR` (a restart does not wait out TIME_WAIT), its backlog.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    let listener = socket.listen(LISTEN_BACKLOG)?;
    Ok(listener.into_std()?.into_raw_fd())
}

/// pingora's backlog for the listening sockets it binds (`listeners/l4.rs`).
const LISTEN_BACKLOG: u32 = 65535;

/// An unbound TCP socket of `address`'s family with `SO_REUSEPORT`: the port-0 reservation and
/// every public listening socket share a port this way.
fn reuseport_socket(address: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    socket.set_reuseport(true)?;
    Ok(socket)
}
