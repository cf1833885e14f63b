//! End-to-end tests: the real `portcullis` binary over real sockets, real TLS and real
//! WebSocket clients. Each test starts its own gateway on kernel-chosen loopback ports.

mod admission;
mod affinity;
mod browser;
mod certs;
mod clients;
mod cluster;
mod compression;
mod config_check;
mod deploy;
mod echo;
mod handshake;
mod hardening;
mod http2;
mod http2_attacks;
mod identity;
mod lifecycle;
mod metrics;
mod relay;
mod reload;
mod sessions;
mod support;
mod tokens;
mod traces;
