//! The WebSocket protocol's one owner (RFC 6455, RFC 7692): the client's opening handshake
//! ([`request`]) and the gateway's `101` ([`answer`]), the extension grammar ([`extensions`])
//! and permessage-deflate ([`deflate`]), tungstenite's settings for a socket ([`config`]), the upstream handshake the gateway makes as a client
//! and the checks on its answer ([`upstream`]), the header rules of both ([`headers`]), and a
//! refused handshake ([`Rejection`]).
//!
//! Frames themselves are tungstenite's (the vendored crate, `vendor/README.md`); what is here
//! decides what both sides agreed to, so that the sessions only apply it.

pub(crate) mod answer;
pub(crate) mod config;
pub(crate) mod deflate;
pub(crate) mod extensions;
pub(crate) mod headers;
mod rejection;
pub(crate) mod request;
pub(crate) mod upstream;

use std::time::Duration;

pub(crate) use rejection::Rejection;

/// How long a socket must be quiet before it gives back what it only needs while busy:
/// tungstenite's buffers (`release_idle_buffers`) and the deflate codec's zlib state.
pub(crate) const QUIET: Duration = Duration::from_secs(1);
