//! One handshake's time for the cluster store. A handshake may ask Redis up to three times (its
//! rate per client IP, its rate per subject, its connection slots); together they never wait
//! longer than `[cluster] timeout`, counted from the first call: each call gets what is left.
//! Once a call has failed, the rest of the handshake is decided without asking (Redis has just
//! failed; asking again would only make the client wait, or hold a slot Redis may not count).

use std::time::Duration;

use tokio::time::Instant;

use super::ClusterError;

/// What is left of one handshake's time for Redis.
#[derive(Debug)]
pub(crate) struct Budget {
    timeout: Duration,
    /// Set by the first call.
    deadline: Option<Instant>,
    /// The first failure; every later call gives it again without being sent.
    failed: Option<ClusterError>,
}

impl Budget {
    pub(crate) fn new(timeout: Duration) -> Budget {
        Budget {
            timeout,
            deadline: None,
            failed: None,
        }
    }

    /// Make one call with what is left (`call` gets how long it may take) and record how it
    /// ended; after an earlier failure, that failure, without calling.
    pub(crate) async fn spend<T, F, Fut>(&mut self, call: F) -> Result<T, ClusterError>
    where
        F: FnOnce(Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClusterError>>,
    {
        let within = self.allowance()?;
        let result = call(within).await;
        self.settle(&result);
        result
    }

    /// What the next call may take (zero once the time is spent: the call then fails without
    /// being sent), or the earlier failure.
    fn allowance(&mut self) -> Result<Duration, ClusterError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let now = Instant::now();
        let deadline = *self.deadline.get_or_insert(now + self.timeout);
        Ok(deadline.saturating_duration_since(now))
    }

    /// Record how a call ended.
    fn settle<T>(&mut self, result: &Result<T, ClusterError>) {
        if let (Err(e), None) = (result, &self.failed) {
            self.failed = Some(e.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_deadline_from_the_first_call_and_no_call_after_a_failure() {
        let timeout = Duration::from_millis(200);
        let mut budget = Budget::new(timeout);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            budget.allowance(),
            Ok(timeout),
            "the clock starts at the first call"
        );
        std::thread::sleep(Duration::from_millis(30));
        let left = budget.allowance().unwrap();
        assert!(left <= timeout - Duration::from_millis(30), "{left:?}");
        budget.settle(&Ok::<(), ClusterError>(()));
        budget.settle(&Err::<(), _>(ClusterError::Timeout));
        budget.settle(&Err::<(), _>(ClusterError::Unavailable));
        assert_eq!(
            budget.allowance(),
            Err(ClusterError::Timeout),
            "the first failure"
        );
        let mut spent = Budget::new(Duration::from_millis(1));
        spent.allowance().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(spent.allowance(), Ok(Duration::ZERO));
    }
}
