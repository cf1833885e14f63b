//! Portcullis: a security-focused, TLS-terminating WebSocket gateway.
//!
//! The house follows a connection's path; each layer imports only the layers below it:
//!
//! | layer | owns |
//! | --- | --- |
//! | [`core`] | the shared vocabulary and the parsed configuration value types |
//! | [`config`] | the configuration: plain data, defaults, validation |
//! | [`obs`] | metrics, the access log, the logger |
//! | [`net`] | listening addresses, server and client TLS, the HTTP/1.1 head and answers |
//! | [`admission`] | the checks before the `101` |
//! | [`relay`] | upstreams: registry, balancing, health, connecting, forwarding, typed errors |
//! | [`session`] | after the `101`: echo, relay pumps, guards, close handling, stop signals |
//! | [`edge`] | one connection's life: route → admission → upstream first → 101 → session → report |
//! | [`lifecycle`] | the server wiring, `--check`, reload, signals and drain, the admin listener |
//!
//! `main.rs` is the command line only.

#![forbid(unsafe_code)]

pub(crate) mod admission;
pub mod config;
pub(crate) mod core;
pub(crate) mod edge;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod lifecycle;
pub(crate) mod net;
pub mod obs;
pub(crate) mod relay;
pub(crate) mod session;
