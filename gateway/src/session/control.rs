//! What ends a session from outside besides the gateway's stop: an operator's close or
//! revocation (through the session's registry entry) and the route's `max_session_duration`,
//! reached at a jittered moment so that clients admitted together do not all reconnect at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::registry::{CloseRequest, CloseSignal};
use crate::core::close;
use crate::core::end::EndReason;

/// The operator's close signal and the lifetime deadline of one session.
pub(crate) struct Control {
    close: Option<Arc<CloseSignal>>,
    lifetime: Option<Instant>,
}

impl Control {
    /// Nothing but the gateway's stop ends the session from outside.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn none() -> Control {
        Control {
            close: None,
            lifetime: None,
        }
    }

    /// Follow `close`; with `max_lifetime`, end the session at a random moment in its last
    /// tenth (so at most `max_lifetime` after now).
    pub(crate) fn new(close: Arc<CloseSignal>, max_lifetime: Option<Duration>) -> Control {
        Control {
            close: Some(close),
            lifetime: max_lifetime.map(|d| {
                crate::core::duration::deadline(Instant::now(), d - super::stop::jitter(d / 10))
            }),
        }
    }

    /// Resolves with the close to send when the session must end. Cancel-safe (a request stays
    /// in the channel; the deadline is fixed).
    pub(crate) async fn wait(&mut self) -> CloseRequest {
        let lifetime = async {
            match self.lifetime {
                Some(at) => super::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let operator = async {
            match &self.close {
                Some(signal) => signal.wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            request = operator => request,
            _ = lifetime => CloseRequest {
                code: close::LIFETIME.code,
                reason: close::LIFETIME.reason.into(),
                cause: EndReason::Lifetime,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lifetime_and_operator_close() {
        let started = Instant::now();
        let mut c = Control::new(Arc::default(), Some(Duration::from_millis(200)));
        let req = c.wait().await;
        assert_eq!((req.code, req.cause), (1001, EndReason::Lifetime));
        let t = started.elapsed();
        assert!(
            t >= Duration::from_millis(175) && t < Duration::from_secs(2),
            "{t:?}"
        );

        let signal = Arc::new(CloseSignal::default());
        let mut c = Control::new(signal.clone(), None);
        let want = CloseRequest {
            code: 4000,
            reason: "bye".into(),
            cause: EndReason::Admin,
        };
        assert!(signal.request(&want));
        let other = CloseRequest {
            code: 1008,
            ..want.clone()
        };
        assert!(!signal.request(&other), "the first request is kept");
        assert_eq!(c.wait().await, want);
    }

    #[test]
    fn lifetimes_are_spread_over_the_last_tenth() {
        let max = Duration::from_secs(10);
        let now = Instant::now();
        let at: Vec<Duration> = (0..100)
            .map(|_| Control::new(Arc::default(), Some(max)).lifetime.unwrap() - now)
            .collect();
        let (first, last) = (at.iter().min().unwrap(), at.iter().max().unwrap());
        assert!(*first >= Duration::from_secs(9), "{first:?}");
        assert!(*last <= max + Duration::from_millis(50), "{last:?}");
        assert!(
            *last - *first > Duration::from_millis(300),
            "{first:?}..{last:?}"
        );
    }
}
