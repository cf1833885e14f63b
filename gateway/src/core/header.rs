//! Reading list-valued headers (`Connection`, `Upgrade`, `Sec-WebSocket-Protocol`,
//! `X-Forwarded-For`, ...): every value of the header, split at commas, trimmed, empty items
//! dropped. Values that are not text are skipped. Also the headers the relay sets itself
//! (configuration validation and the protocol's header rules, `net::websocket::headers`, share
//! them).

use http::header::GetAll;
use http::HeaderValue;

/// The comma-separated items of every value of a header.
pub(crate) fn items<'a>(values: GetAll<'a, HeaderValue>) -> impl Iterator<Item = &'a str> + 'a {
    values
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// Request headers the relay sets itself; a route cannot name them in `forward_claims`.
pub(crate) const RELAY_RESERVED_HEADERS: [&str; 16] = [
    "host",
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "content-length",
    "transfer-encoding",
    "te",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "authorization",
];

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    #[test]
    fn items_of_every_value() {
        let mut h = HeaderMap::new();
        h.append(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.append("connection", HeaderValue::from_static(" ,x"));
        let got: Vec<&str> = items(h.get_all("connection")).collect();
        assert_eq!(got, ["keep-alive", "Upgrade", "x"]);
    }
}
