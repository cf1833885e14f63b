//! Portcullis: a security-focused, TLS-terminating WebSocket gateway.
//!
//! A connection travels: pingora listener and TLS → `http1` head → `route` → `admission` →
//! `101` → `session`. `server` wires the pieces into a pingora server; `main.rs` is the command
//! line only.

pub mod access_log;
pub mod admin;
pub mod admission;
pub mod background;
pub mod config;
pub mod gateway;
pub mod http1;
pub mod live;
pub mod metrics;
pub mod reload;
pub mod route;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod tls;
pub mod upstream;
