//! Why a call to the cluster store failed, classified by type (never by an error's text), with
//! the metric label of each kind.

use std::fmt;

/// A failed call to Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClusterError {
    /// No connection: Redis is down or being reconnected to (the call was not even tried).
    Unavailable,
    /// The call took longer than `[cluster] timeout`.
    Timeout,
    /// The connection broke during the call.
    Connection(String),
    /// Redis answered with an error (a script error, an ACL refusal, out of memory...), or with
    /// something the gateway cannot read.
    Response(String),
}

impl ClusterError {
    /// The `error` label of `portcullis_cluster_errors_total` (one of
    /// `obs::metrics::CLUSTER_ERROR_KINDS`).
    pub(crate) fn label(&self) -> &'static str {
        match self {
            ClusterError::Unavailable => "unavailable",
            ClusterError::Timeout => "timeout",
            ClusterError::Connection(_) => "connection",
            ClusterError::Response(_) => "response",
        }
    }

    /// Whether the connection must be dropped and made anew.
    pub(crate) fn breaks_link(&self) -> bool {
        matches!(self, ClusterError::Timeout | ClusterError::Connection(_))
    }
}

impl From<redis::RedisError> for ClusterError {
    fn from(e: redis::RedisError) -> ClusterError {
        if e.is_timeout() {
            ClusterError::Timeout
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
            ClusterError::Connection(e.to_string())
        } else {
            ClusterError::Response(e.to_string())
        }
    }
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::Unavailable => f.write_str("not connected"),
            ClusterError::Timeout => f.write_str("timed out"),
            ClusterError::Connection(e) => write!(f, "connection failed: {e}"),
            ClusterError::Response(e) => write!(f, "error answer: {e}"),
        }
    }
}
