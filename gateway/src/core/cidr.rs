//! Networks in CIDR notation (`10.0.0.0/8`, `::1/128`; a bare address is a single host), as
//! `[server] trusted_proxies` writes them. IPv4-mapped IPv6 addresses match as IPv4.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

/// A network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr(IpNet);

impl Cidr {
    pub(crate) fn parse(s: &str) -> Result<Cidr, String> {
        let text = s.trim();
        if let Ok(addr) = text.parse::<IpAddr>() {
            return Ok(Cidr(IpNet::from(canonical(addr))));
        }
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an IP network (e.g. \"10.0.0.0/8\")"))?;
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network (e.g. \"10.0.0.0/8\")"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?;
        IpNet::new(addr, prefix)
            .map(|net| Cidr(net.trunc()))
            .map_err(|e| format!("{s:?}: {e}"))
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&canonical(ip))
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Cidr::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("10.1.2.3/8")
            .unwrap()
            .contains("10.9.9.9".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nonsense").is_err());
    }
}
