//! End-to-end tests: the real `portcullis` binary over real sockets, real TLS and real
//! WebSocket clients. Each test starts its own gateway on free loopback ports.

mod clients;
mod config_check;
mod echo;
mod handshake;
mod lifecycle;
mod relay;
mod support;
