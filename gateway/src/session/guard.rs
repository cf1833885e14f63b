//! Per-connection, per-direction message policy applied inside a session (echo and relay alike):
//! message size (close 1009), message rate and byte rate (close 1008), and the token's expiry
//! (close 1008 `token expired`). The codes and reasons are `core::close`'s.

use std::num::NonZeroU32;

use governor::clock::DefaultClock;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use crate::config::policy::PolicyLimits;
use crate::core::close::{self, Violation};

type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;

/// Rates for one direction of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Rates {
    /// Data messages per second (burst = one second's worth); `None`: unlimited.
    pub(crate) messages_per_second: Option<NonZeroU32>,
    /// Payload bytes per second (burst = one second's worth); `None`: unlimited.
    pub(crate) bytes_per_second: Option<NonZeroU32>,
}

impl Rates {
    /// The per-connection rates of a policy, for messages from the client.
    pub(crate) fn of(limits: &PolicyLimits) -> Rates {
        Rates {
            messages_per_second: limits.messages_per_second.and_then(NonZeroU32::new),
            bytes_per_second: limits.bytes_per_second.and_then(NonZeroU32::new),
        }
    }
}

/// The policy of one direction of one connection. The limiters are boxed: most sessions have
/// none, and every open socket holds its guards.
pub(crate) struct Guard {
    max_message_bytes: usize,
    messages: Option<Box<Direct>>,
    bytes: Option<Box<Direct>>,
}

impl Guard {
    pub(crate) fn new(max_message_bytes: usize, rates: Rates) -> Guard {
        let limiter =
            |per_second: NonZeroU32| Box::new(RateLimiter::direct(Quota::per_second(per_second)));
        Guard {
            max_message_bytes,
            messages: rates.messages_per_second.map(limiter),
            bytes: rates.bytes_per_second.map(limiter),
        }
    }

    /// Account for one data message of `len` payload bytes.
    /// The largest message this direction may carry (a compressed one is inflated up to this).
    pub(crate) fn max_message(&self) -> usize {
        self.max_message_bytes
    }

    pub(crate) fn on_message(&self, len: usize) -> Result<(), Violation> {
        if len > self.max_message_bytes {
            return Err(close::MESSAGE_TOO_BIG_CLOSE);
        }
        if let Some(limiter) = &self.messages {
            if limiter.check().is_err() {
                return Err(close::MESSAGE_RATE);
            }
        }
        if let Some(limiter) = &self.bytes {
            let n = NonZeroU32::new(u32::try_from(len).unwrap_or(u32::MAX));
            if let Some(n) = n {
                if !matches!(limiter.check_n(n), Ok(Ok(()))) {
                    return Err(close::BYTE_RATE);
                }
            }
        }
        Ok(())
    }
}

/// When an admitted token stops being valid for the open socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expiry {
    /// The moment the session must close (the token's `exp` plus any grace).
    pub(crate) at: Instant,
}

impl Expiry {
    /// Resolves at the expiry, or never when there is none. (An `async` block rather than an
    /// `async fn`, whose state would keep a second copy of `expiry`: every open socket holds it.)
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    pub(crate) fn wait(expiry: Option<Expiry>) -> impl std::future::Future<Output = ()> {
        async move {
            match expiry {
                Some(e) => super::sleep_until(e.at).await,
                None => std::future::pending().await,
            }
        }
    }

    /// The expiry of an admitted token, if it has one.
    pub(crate) fn at(at: Option<Instant>) -> Option<Expiry> {
        at.map(|at| Expiry { at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_rates() {
        let g = Guard::new(10, Rates::default());
        assert!(g.on_message(10).is_ok());
        assert_eq!(g.on_message(11).unwrap_err().code, close::MESSAGE_TOO_BIG);

        let g = Guard::new(
            1000,
            Rates {
                messages_per_second: NonZeroU32::new(3),
                bytes_per_second: None,
            },
        );
        for _ in 0..3 {
            g.on_message(1).unwrap();
        }
        assert_eq!(g.on_message(1).unwrap_err().reason, "message rate exceeded");

        let g = Guard::new(
            1000,
            Rates {
                messages_per_second: None,
                bytes_per_second: NonZeroU32::new(100),
            },
        );
        g.on_message(60).unwrap();
        assert_eq!(g.on_message(60).unwrap_err().reason, "byte rate exceeded");
        // Empty messages cost no bytes.
        g.on_message(0).unwrap();
    }
}
