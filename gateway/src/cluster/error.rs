//! Why a call to the cluster store failed, classified by type (never by an error's text), with
//! the metric label of each kind, and what each kind means for the connection.

use std::fmt;

use redis::{ErrorKind, ServerErrorKind};

/// A failed call to Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClusterError {
    /// No connection: Redis is down or being reconnected to (the call was not even tried).
    Unavailable,
    /// The call took longer than it was allowed (`[cluster] timeout`, or what was left of a
    /// handshake's time for Redis).
    Timeout,
    /// The connection broke during the call.
    Connection(String),
    /// The server is a replica, not the primary: `READONLY` (a primary demoted by a failover)
    /// or `MASTERDOWN` (a replica that lost its primary). Every script writes, so nothing can
    /// succeed there until the address names a primary again.
    Replica(String),
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
            ClusterError::Replica(_) => "replica",
            ClusterError::Response(_) => "response",
        }
    }

    /// Whether the connection must be dropped and made anew at once. A timeout or a broken
    /// connection leaves the connection in an unknown state; a replica keeps refusing every
    /// write on the same connection (redis-rs keeps it, as for any error answer), while a new
    /// connection to the same address reaches whichever server holds it after a failover.
    /// Other error answers drop it only when they come in a run (`link`).
    pub(crate) fn breaks_link(&self) -> bool {
        matches!(
            self,
            ClusterError::Timeout | ClusterError::Connection(_) | ClusterError::Replica(_)
        )
    }

    /// Whether the call may have run in Redis although it failed (its answer was lost), so
    /// that what it wrote may have to be undone.
    pub(crate) fn may_have_run(&self) -> bool {
        matches!(self, ClusterError::Timeout | ClusterError::Connection(_))
    }
}

impl From<redis::RedisError> for ClusterError {
    fn from(e: redis::RedisError) -> ClusterError {
        if e.is_timeout() {
            ClusterError::Timeout
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
            ClusterError::Connection(e.to_string())
        } else if matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        ) {
            ClusterError::Replica(e.to_string())
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
            ClusterError::Replica(e) => write!(f, "not the primary: {e}"),
            ClusterError::Response(e) => write!(f, "error answer: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error redis-rs makes of an error answer on the wire.
    fn answer(wire: &str) -> ClusterError {
        match redis::parse_redis_value(wire.as_bytes()).unwrap() {
            redis::Value::ServerError(e) => redis::RedisError::from(e).into(),
            other => panic!("not an error answer: {other:?}"),
        }
    }

    #[test]
    fn replicas_break_the_link_other_error_answers_do_not() {
        let readonly = answer("-READONLY You can't write against a read only replica.\r\n");
        assert!(matches!(readonly, ClusterError::Replica(_)), "{readonly:?}");
        let masterdown = answer("-MASTERDOWN Link with MASTER is down\r\n");
        assert!(
            matches!(masterdown, ClusterError::Replica(_)),
            "{masterdown:?}"
        );
        assert!(readonly.breaks_link() && masterdown.breaks_link());
        assert_eq!(readonly.label(), "replica");
        let oom = answer("-OOM command not allowed when used memory > 'maxmemory'.\r\n");
        assert!(matches!(oom, ClusterError::Response(_)), "{oom:?}");
        assert!(!oom.breaks_link());
        let noperm = answer("-NOPERM this user has no permissions\r\n");
        assert!(!noperm.breaks_link());
        assert!(ClusterError::Timeout.breaks_link() && ClusterError::Timeout.may_have_run());
        assert!(!readonly.may_have_run() && !ClusterError::Unavailable.may_have_run());
    }
}
