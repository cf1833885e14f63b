//! Socket addresses as the configuration writes them (`"127.0.0.1:8443"`, `"[::1]:9090"`).

use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;

/// An IP address with a port. Port 0 asks for a free port at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Addr(pub(crate) SocketAddr);

impl Addr {
    pub(crate) fn parse(s: &str) -> Result<Addr, String> {
        s.parse().map(Addr).map_err(|_| {
            format!("{s:?} is not an IP address with a port (e.g. \"127.0.0.1:8443\")")
        })
    }

    /// Whether a fixed port is asked for (not 0).
    pub(crate) fn is_fixed(&self) -> bool {
        self.0.port() != 0
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Addr::parse(&text).map_err(serde::de::Error::custom)
    }
}
