//! URLs in the configuration: upstreams (`ws://`, `wss://`) and identity-provider endpoints
//! (`http://`, `https://`), one parser for both with the schemes each place allows.

use std::fmt;

use serde::Deserialize;

/// A URL scheme the gateway speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Ws,
    Wss,
    Http,
    Https,
    Redis,
    Rediss,
}

impl Scheme {
    fn parse(s: &str) -> Option<Scheme> {
        match s {
            "ws" => Some(Scheme::Ws),
            "wss" => Some(Scheme::Wss),
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            "redis" => Some(Scheme::Redis),
            "rediss" => Some(Scheme::Rediss),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Redis => "redis",
            Scheme::Rediss => "rediss",
        }
    }

    /// Whether the scheme runs over TLS.
    pub(crate) fn tls(self) -> bool {
        matches!(self, Scheme::Wss | Scheme::Https | Scheme::Rediss)
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Redis | Scheme::Rediss => 6379,
            _ if self.tls() => 443,
            _ => 80,
        }
    }
}

/// A parsed absolute URL without credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    /// The URL as configured (for logs and metric labels).
    pub(crate) text: String,
    pub(crate) scheme: Scheme,
    /// Host name or IP address (IPv6 without brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Path and query, as sent in a request line (at least `/`).
    pub(crate) path_and_query: String,
}

impl Url {
    /// Parse `scheme://host[:port][/path][?query]` where the scheme is one of `allowed`.
    pub(crate) fn parse(url: &str, allowed: &[Scheme]) -> Result<Url, String> {
        let wanted = || {
            allowed
                .iter()
                .map(|s| format!("{}://", s.as_str()))
                .collect::<Vec<_>>()
                .join(" or ")
        };
        let uri: http::Uri = url.parse().map_err(|_| {
            format!(
                "{url:?} is not a URL (e.g. \"{}://127.0.0.1:9001/chat\")",
                allowed.first().map_or("ws", |s| s.as_str())
            )
        })?;
        let scheme = uri
            .scheme_str()
            .and_then(Scheme::parse)
            .filter(|s| allowed.contains(s))
            .ok_or_else(|| format!("{url:?} must start with {}", wanted()))?;
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{url:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("{url:?}: credentials in the URL are not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let port = authority.port_u16().unwrap_or(scheme.default_port());
        if port == 0 {
            return Err(format!("{url:?}: port 0 is not a port"));
        }
        let path_and_query = uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        let path_and_query = if path_and_query.starts_with('/') {
            path_and_query
        } else {
            format!("/{path_and_query}")
        };
        Ok(Url {
            text: url.to_string(),
            scheme,
            host: host.to_string(),
            port,
            path_and_query,
        })
    }

    pub(crate) fn tls(&self) -> bool {
        self.scheme.tls()
    }

    /// The URL as configured without its query string (or fragment), for wherever a URL is
    /// shown rather than used: a query may carry a key or a token.
    pub(crate) fn shown(&self) -> &str {
        self.text.split(['?', '#']).next().unwrap_or_default()
    }

    /// The `Host` header value: brackets around IPv6, the port unless it is the default.
    pub(crate) fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Config values of URL types that allow only some schemes.
macro_rules! scheme_url {
    ($name:ident, $doc:literal, [$($scheme:expr),+]) => {
        #[doc = $doc]
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub(crate) struct $name(pub(crate) Url);

        impl $name {
            pub(crate) const SCHEMES: &'static [Scheme] = &[$($scheme),+];

            pub(crate) fn parse(url: &str) -> Result<$name, String> {
                Url::parse(url, Self::SCHEMES).map($name)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                $name::parse(&text).map_err(serde::de::Error::custom)
            }
        }

        impl std::ops::Deref for $name {
            type Target = Url;
            fn deref(&self) -> &Url {
                &self.0
            }
        }
    };
}

scheme_url!(
    WsUrl,
    "A WebSocket upstream: `ws://` or `wss://`.",
    [Scheme::Ws, Scheme::Wss]
);
scheme_url!(
    HttpUrl,
    "An HTTP endpoint (JWKS): `http://` or `https://`.",
    [Scheme::Http, Scheme::Https]
);
scheme_url!(
    RedisUrl,
    "The cluster store: `redis://` or `rediss://` (TLS), with an optional `/DB` path.",
    [Scheme::Redis, Scheme::Rediss]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let u = WsUrl::parse("wss://[::1]/a?b=1").unwrap();
        assert_eq!((u.tls(), u.host.as_str(), u.port), (true, "::1", 443));
        assert_eq!(
            (u.path_and_query.as_str(), u.shown()),
            ("/a?b=1", "wss://[::1]/a")
        );
        assert_eq!(u.path_and_query, "/a?b=1");
        assert_eq!(u.host_header(), "[::1]");
        let keyed = WsUrl::parse("ws://h:9001/chat?key=s3cret#x").unwrap();
        assert_eq!(keyed.shown(), "ws://h:9001/chat");
        assert_eq!(WsUrl::parse("ws://h").unwrap().shown(), "ws://h");
        let u = WsUrl::parse("ws://backend:9001").unwrap();
        assert_eq!(u.path_and_query, "/");
        assert_eq!(u.host_header(), "backend:9001");
        assert!(WsUrl::parse("http://x/").is_err());
        assert!(WsUrl::parse("ws://a@x/")
            .unwrap_err()
            .contains("credentials"));
        assert!(WsUrl::parse("ws://x:0/").is_err());
    }

    #[test]
    fn http_urls() {
        let u = HttpUrl::parse("https://idp.example.com/.well-known/jwks.json").unwrap();
        assert_eq!(
            (u.tls(), u.port, u.path_and_query.as_str()),
            (true, 443, "/.well-known/jwks.json")
        );
        let u = HttpUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path_and_query.as_str()),
            ("127.0.0.1", 8080, "/")
        );
        let u = HttpUrl::parse("http://[::1]:81/k").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 81));
        assert_eq!(u.host_header(), "[::1]:81");
        let e = HttpUrl::parse("ftp://x").unwrap_err();
        assert!(e.contains("must start with http:// or https://"), "{e}");
    }

    #[test]
    fn redis_urls() {
        let u = RedisUrl::parse("redis://127.0.0.1/2").unwrap();
        assert_eq!(
            (u.tls(), u.port, u.path_and_query.as_str()),
            (false, 6379, "/2")
        );
        let u = RedisUrl::parse("rediss://cache.internal:6380").unwrap();
        assert_eq!((u.tls(), u.port), (true, 6380));
        assert!(RedisUrl::parse("redis://:secret@x/")
            .unwrap_err()
            .contains("credentials"));
        assert!(RedisUrl::parse("http://x/").is_err());
    }
}
