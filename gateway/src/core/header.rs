//! Reading list-valued headers (`Connection`, `Upgrade`, `Sec-WebSocket-Protocol`,
//! `X-Forwarded-For`, ...): every value of the header, split at commas, trimmed, empty items
//! dropped. Values that are not text are skipped.

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
