//! What the gateway reports: metrics (every name in `metrics::defs`), the access log, and the
//! process logger. They stand on the `core` vocabulary only.

pub(crate) mod access_log;
pub(crate) mod logger;
pub use logger::Logger;
pub mod metrics;
