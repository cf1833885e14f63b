//! The `Sec-WebSocket-Extensions` grammar (RFC 6455 section 9.1, RFC 7692 section 5): a list of
//! extensions, each a token with `;`-separated parameters, each parameter a token with an
//! optional value (a token or a quoted string).

/// One element of an extension list: its name and parameters, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Extension {
    pub(crate) name: String,
    pub(crate) params: Vec<(String, Option<String>)>,
}

/// Parse every value of the header (comma-separated lists, over any number of header lines).
/// `None` when the syntax is broken anywhere: the caller declines (server) or fails (client).
pub(crate) fn parse<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<Extension>> {
    let mut out = Vec::new();
    for value in values {
        let text = std::str::from_utf8(value).ok()?;
        for element in split_outside_quotes(text, ',') {
            let element = element.trim();
            if element.is_empty() {
                // Empty list elements are allowed (RFC 9110 section 5.6.1).
                continue;
            }
            let mut parts = split_outside_quotes(element, ';').into_iter();
            let name = parts.next()?.trim();
            if !is_token(name) {
                return None;
            }
            let mut params = Vec::new();
            for param in parts {
                let (key, value) = match param.split_once('=') {
                    Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
                    None => (param.trim(), None),
                };
                if !is_token(key) {
                    return None;
                }
                params.push((key.to_ascii_lowercase(), value));
            }
            out.push(Extension {
                name: name.to_ascii_lowercase(),
                params,
            });
        }
    }
    Some(out)
}

/// A value as its text: a token as it is, a quoted string unquoted (RFC 7692 section 5: the
/// value must be a token after unquoting).
fn unquote(v: &str) -> Option<String> {
    let inner = match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?.replace("\\", ""),
        None => v.to_string(),
    };
    is_token(&inner).then_some(inner)
}

/// `s` split at `sep`, except inside a quoted string.
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// An HTTP token (RFC 9110 section 5.6.2).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(v: &str) -> Option<Vec<Extension>> {
        parse([v.as_bytes()])
    }

    #[test]
    fn parses_the_rfc_examples() {
        let e = one("permessage-deflate; client_max_window_bits, permessage-deflate; server_max_window_bits=\"10\"").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].name, "permessage-deflate");
        assert_eq!(e[0].params, [("client_max_window_bits".into(), None)]);
        assert_eq!(
            e[1].params,
            [("server_max_window_bits".into(), Some("10".into()))]
        );
        assert_eq!(one("").unwrap(), []);
        assert_eq!(one(" , foo ,").unwrap().len(), 1);
    }

    #[test]
    fn refuses_broken_syntax() {
        for bad in [
            "permessage-deflate; =1",
            "permessage-deflate; a=\"unterminated",
            "permessage-deflate; a=\"\"",
            "perm essage",
            "permessage-deflate; a=b c",
            "; a",
        ] {
            assert_eq!(one(bad), None, "{bad}");
        }
        assert_eq!(parse([&[0xff_u8][..]]), None);
    }
}
