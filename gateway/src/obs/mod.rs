//! What the gateway reports: metrics (every name in `metrics::defs`), the access log, the
//! process logger, and the limit on warnings that outside events can repeat (`log_limit`).
//! They stand on the `core` vocabulary only.

pub(crate) mod access_log;
pub(crate) mod log_limit;
pub(crate) mod logger;
pub use logger::Logger;
pub mod metrics;
