//! [`Woken`]: a future that is polled only when something it waits on woke it. A session is one
//! task that waits on several things at once (each socket, its stop and expiry signals, its
//! timers); `select!` polls all of them whenever any one wakes the task, so each message would
//! also poll the other socket (a read attempt that finds nothing) and every watchdog. Wrapped,
//! each part is polled only when its own waker fired.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

pin_project_lite::pin_project! {
    /// `inner`, polled only when it was woken since its last poll (and on the first poll).
    pub(crate) struct Woken<F> {
        #[pin]
        inner: F,
        flag: Arc<Flag>,
        waker: Waker,
    }
}

/// Set when `inner` is woken; wakes the task that polls the [`Woken`].
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F> Woken<F> {
    pub(crate) fn new(inner: F) -> Woken<F> {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Woken {
            inner,
            waker: Waker::from(flag.clone()),
            flag,
        }
    }
}

impl<F> Woken<F> {
    /// A waker that makes the next poll reach `inner` (as if what it waits on had woken it).
    pub(crate) fn waker(&self) -> Waker {
        self.waker.clone()
    }
}

impl<F: Future> Future for Woken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Registered before the flag is read: a wake in between is seen now or wakes the task.
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::Acquire) {
            return Poll::Pending;
        }
        this.inner.poll(&mut Context::from_waker(this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn polled_only_when_woken() {
        let polls = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let counted = polls.clone();
        let inner = std::future::poll_fn(move |cx| {
            counted.fetch_add(1, Ordering::Relaxed);
            loop {
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(3)) => return Poll::Ready(3),
                    Poll::Ready(Some(_)) => continue,
                    _ => return Poll::Pending,
                }
            }
        });
        let woken = Woken::new(inner);
        tokio::pin!(woken);
        // The first poll reaches the inner future; repeated polls without a wake do not.
        for _ in 0..5 {
            assert!(futures_util::poll!(woken.as_mut()).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        tx.send(1).unwrap();
        assert!(futures_util::poll!(woken.as_mut()).is_pending());
        assert!(futures_util::poll!(woken.as_mut()).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
        tx.send(3).unwrap();
        assert_eq!(woken.await, 3);
    }
}
