//! What the gateway reports: metrics (every name in `metrics::defs`), the access log, the
//! process logger, the limit on warnings that outside events can repeat (`log_limit`), and
//! OpenTelemetry traces (`trace`, configured by `[tracing]`). They stand on the `core`
//! vocabulary (and the `[tracing]` table) only.

pub(crate) mod access_log;
pub(crate) mod log_limit;
pub(crate) mod logger;
pub use logger::Logger;
pub mod metrics;
pub(crate) mod trace;
