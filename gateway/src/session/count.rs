//! The count of open WebSocket sessions, so that a graceful stop knows when the last one has gone,
//! and of the HTTP/2 connections that carry some: a stream's close is only queued when its session
//! ends, and the connection still has to write it, its GOAWAY and TLS's close_notify.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Counts open WebSocket sessions (and, for the drain only, open HTTP/2 connections).
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    open: AtomicUsize,
    connections: AtomicUsize,
    changed: Notify,
}

impl Sessions {
    /// Count a session as open until the returned guard is dropped.
    pub(crate) fn open(self: &Arc<Self>) -> SessionGuard {
        self.open.fetch_add(1, Ordering::SeqCst);
        SessionGuard(self.clone())
    }

    /// Count an HTTP/2 connection until the returned guard is dropped (when it has ended), so
    /// that a graceful stop does not exit under its last frames. Not a session: `count` leaves
    /// it out.
    pub(crate) fn open_connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::SeqCst);
        ConnectionGuard(self.clone())
    }

    pub(crate) fn count(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Resolves once no session is open and no HTTP/2 connection is still writing.
    pub(crate) async fn all_closed(&self) {
        loop {
            let notified = self.changed.notified();
            if self.count() == 0 && self.connections.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Keeps one session counted; dropping it (however the session ends) releases the count.
#[derive(Debug)]
pub(crate) struct SessionGuard(Arc<Sessions>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// Keeps one HTTP/2 connection counted for the drain until it has ended.
#[derive(Debug)]
pub(crate) struct ConnectionGuard(Arc<Sessions>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn guards_release_their_count() {
        let sessions = Arc::new(Sessions::default());
        let a = sessions.open();
        let b = sessions.open();
        assert_eq!(sessions.count(), 2);
        drop(a);
        let waiter = tokio::spawn({
            let s = sessions.clone();
            async move { s.all_closed().await }
        });
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sessions.count(), 0);
    }

    #[tokio::test]
    async fn a_connection_holds_the_drain_but_is_not_a_session() {
        let sessions = Arc::new(Sessions::default());
        let conn = sessions.open_connection();
        assert_eq!(sessions.count(), 0);
        let waiter = tokio::spawn({
            let s = sessions.clone();
            async move { s.all_closed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(conn);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
