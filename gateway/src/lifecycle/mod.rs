//! The process around the connections: wiring a generation into a pingora server ([`server`]),
//! checking a configuration ([`check`]), reloading it ([`reload`]), signals and the drain
//! ([`signals`]), the admin listener ([`admin`]) with its session endpoints ([`sessions_api`],
//! over [`control`]), and the `portcullis sessions` client ([`sessions_cli`]).

pub(crate) mod admin;
pub mod allocator;
pub(crate) mod control;
mod listeners;
mod reload;
mod server;
mod sessions_api;
pub mod sessions_cli;
mod signals;
mod sockets;

pub use server::{check, run};
