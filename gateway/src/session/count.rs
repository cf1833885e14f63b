//! The count of open WebSocket sessions, so that a graceful stop knows when the last one has gone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Counts open WebSocket sessions.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    open: AtomicUsize,
    changed: Notify,
}

impl Sessions {
    /// Count a session as open until the returned guard is dropped.
    pub(crate) fn open(self: &Arc<Self>) -> SessionGuard {
        self.open.fetch_add(1, Ordering::SeqCst);
        SessionGuard(self.clone())
    }

    pub(crate) fn count(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Resolves once no session is open.
    pub(crate) async fn all_closed(&self) {
        loop {
            let notified = self.changed.notified();
            if self.count() == 0 {
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
}
