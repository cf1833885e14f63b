//! The wire below a WebSocket: listening addresses, server TLS (certificates, SNI, ALPN,
//! reload), the one builder of client TLS settings, the one outbound HTTP client, the HTTP/1.1
//! request head and short answers, HTTP/2 streams ([`http2`]), and the WebSocket protocol
//! itself ([`websocket`]).

pub(crate) mod answer;
pub(crate) mod bind;
pub(crate) mod client_tls;
pub(crate) mod fields;
pub(crate) mod http1;
pub(crate) mod http2;
pub(crate) mod http_client;
pub(crate) mod otlp_client;
pub(crate) mod peer_cert;
pub(crate) mod quiet_tls;
pub(crate) mod server_tls;
pub(crate) mod websocket;
