//! The wire below a WebSocket: listening addresses, server TLS (certificates, SNI, reload), the
//! one builder of client TLS settings, and the HTTP/1.1 request head and short answers.

pub(crate) mod answer;
pub(crate) mod bind;
pub(crate) mod client_tls;
pub(crate) mod http1;
pub(crate) mod server_tls;
