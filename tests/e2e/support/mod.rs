//! Test support: start the real `portcullis` binary on kernel-chosen loopback ports with a
//! generated certificate, talk to it over real TLS and WebSocket clients, and run the servers
//! and tools the tests need around it. Everything is bounded in time: waits poll what they wait
//! for, with a deadline. Processes are killed and folders removed when their handles drop.

mod browser;
mod client;
mod gateway;
mod h2_ws;
mod otlp;
mod pipe;
mod process;
mod redis;
mod sentinel;
pub mod upstream;
mod wait;

pub use browser::*;
pub use client::*;
pub use gateway::*;
pub use h2_ws::*;
pub use otlp::*;
pub use pipe::*;
pub use process::*;
pub use redis::*;
pub use sentinel::*;
pub use wait::*;
