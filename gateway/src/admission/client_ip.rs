//! Who the client is: the socket's peer, or — only when the peer is a configured trusted proxy —
//! the address that proxy reports in `Forwarded` or `X-Forwarded-For`.

use std::net::IpAddr;

use crate::http1::RequestHead;

/// A network in CIDR notation (`10.0.0.0/8`, `::1/128`; a bare address means a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network (e.g. \"10.0.0.0/8\")"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client address of a request that arrived from `peer`.
///
/// Forwarded chains are read right to left (nearest proxy first) and the first address that is
/// not itself a trusted proxy is the client; a client cannot spoof it by adding entries on the
/// left. `Forwarded` (RFC 7239) is preferred over `X-Forwarded-For`.
pub fn resolve(peer: Option<IpAddr>, head: &RequestHead, trusted: &[Cidr]) -> Option<IpAddr> {
    let peer = canonical(peer?);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = {
        let from_forwarded: Vec<IpAddr> = head
            .headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| parse_node(v.trim().trim_matches('"')))?
                })
            })
            .collect();
        if !from_forwarded.is_empty() {
            from_forwarded
        } else {
            head.headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|v| parse_node(v.trim()))
                .collect()
        }
    };
    let client = forwarded
        .iter()
        .rev()
        .map(|ip| canonical(*ip))
        .find(|ip| !is_trusted(*ip));
    Some(client.unwrap_or(peer))
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `[::1]`, `[::1]:80`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    s.parse()
        .ok()
        .or_else(|| s.rsplit_once(':').and_then(|(a, _)| a.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        RequestHead::for_test("GET", "/", headers)
    }

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
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nonsense").is_err());
    }

    #[test]
    fn forwarded_only_from_trusted_proxies() {
        let trusted = [Cidr::parse("127.0.0.0/8").unwrap()];
        let peer = Some("127.0.0.1".parse().unwrap());
        let stranger = Some("203.0.113.9".parse().unwrap());
        let h = head(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7")]);
        assert_eq!(resolve(peer, &h, &trusted), "198.51.100.7".parse().ok());
        // An untrusted peer's header is ignored.
        assert_eq!(resolve(stranger, &h, &trusted), stranger);
        // Forwarded wins; quoted IPv6 with port.
        let h = head(&[
            ("forwarded", "for=\"[2001:db8::1]:4711\";proto=https"),
            ("x-forwarded-for", "6.6.6.6"),
        ]);
        assert_eq!(resolve(peer, &h, &trusted), "2001:db8::1".parse().ok());
        // Trusted hops are skipped from the right.
        let h = head(&[("x-forwarded-for", "198.51.100.7, 127.0.0.5")]);
        assert_eq!(resolve(peer, &h, &trusted), "198.51.100.7".parse().ok());
        // No header: the proxy itself.
        assert_eq!(resolve(peer, &head(&[]), &trusted), peer);
    }
}
