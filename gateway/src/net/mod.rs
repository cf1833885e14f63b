//! The wire below a WebSocket: listening addresses, server TLS (certificates, SNI, reload), the
//! one builder of client TLS settings, the one outbound HTTP client, and the HTTP/1.1 request
//! head and short answers, and the WebSocket protocol itself ([`websocket`]).

pub(crate) mod answer;
pub(crate) mod bind;
pub(crate) mod client_tls;
pub(crate) mod fields;
pub(crate) mod http1;
pub(crate) mod http_client;
pub(crate) mod otlp_client;
pub(crate) mod peer_cert;
pub(crate) mod quiet_tls;
pub(crate) mod server_tls;
pub(crate) mod websocket;
