//! The process around the connections: wiring a generation into a pingora server ([`server`]),
//! checking a configuration ([`check`]), reloading it ([`reload`]), signals and the drain
//! ([`signals`]), and the admin listener ([`admin`]).

pub(crate) mod admin;
mod listeners;
mod reload;
mod server;
mod signals;

pub use server::{check, run};
