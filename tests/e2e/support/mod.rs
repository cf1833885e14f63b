//! Test support: start the real `portcullis` binary on free loopback ports with a generated
//! certificate, and talk to it over real TLS and WebSocket clients; the upstream servers the
//! relay tests put behind it. Everything is bounded in time and processes are killed when their
//! handles drop.

use std::time::Duration;

mod client;
mod gateway;
mod process;
pub mod upstream;

pub use client::*;
pub use gateway::*;
pub use process::*;

/// Upper bound for any single step of a test.
pub const STEP: Duration = Duration::from_secs(10);
