//! Who the client is: the socket's peer, or — only when the peer is a configured trusted proxy —
//! the address that proxy reports in `Forwarded` or `X-Forwarded-For`.

use std::net::IpAddr;

use crate::core::cidr::{canonical, Cidr};
use crate::core::header;
use crate::net::http1::RequestHead;

/// The client address of a request that arrived from `peer`.
///
/// Forwarded chains are read right to left (nearest proxy first) and the first address that is
/// not itself a trusted proxy is the client; a client cannot spoof it by adding entries on the
/// left. `Forwarded` (RFC 7239) is preferred over `X-Forwarded-For`.
pub(crate) fn resolve(
    peer: Option<IpAddr>,
    head: &RequestHead,
    trusted: &[Cidr],
) -> Option<IpAddr> {
    let peer = canonical(peer?);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = {
        let from_forwarded: Vec<IpAddr> = header::items(head.headers.get_all("forwarded"))
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
            header::items(head.headers.get_all("x-forwarded-for"))
                .filter_map(parse_node)
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
