//! Work outside the request path — JWKS fetches, reloads, the cluster store's connection and
//! heartbeat, the exit monitor — runs on threads of its own, each with a small single-threaded
//! tokio runtime: it exists before pingora's runtimes start and never competes with their
//! workers.
//!
//! Work that must outlive a bug runs [`supervise`]d (every `core::labels::BackgroundTask`): a
//! panic is logged, counted and recorded (for `/readyz`), and the work starts again after a
//! pause, instead of its thread ending silently (a JWKS fetcher that died would never refresh a
//! key again; a lease heartbeat that died would let every slot of this replica expire). A
//! restarted task starts from what `make` hands it, so whatever it must not lose (a channel's
//! receiving end, the state it keeps) lives outside the future, in shared state.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt;

/// A single-threaded runtime for one background thread.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("background runtime")
}

/// Run `work` to completion on a new thread named `name`.
pub(crate) fn spawn<F>(name: &str, work: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    spawn_on(name, runtime(), work)
}

/// Like [`spawn`], on a runtime the caller already used (e.g. to install signal handlers before
/// the thread starts).
pub(crate) fn spawn_on<F>(name: &str, rt: tokio::runtime::Runtime, work: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || rt.block_on(work))
        .unwrap_or_else(|e| panic!("cannot start the {name} thread: {e}"));
}

/// The pause before a panicked task starts again: doubling with each panic in a row, from
/// `first` to `max`, so a task that panics at once does not spin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub(crate) first: Duration,
    pub(crate) max: Duration,
}

/// The backoff of the gateway's own tasks.
pub(crate) const BACKOFF: Backoff = Backoff {
    first: Duration::from_secs(1),
    max: Duration::from_secs(60),
};

/// A task that panicked this often within [`FAILING_WINDOW`] keeps failing: `/readyz` says so.
const FAILING_AFTER: usize = 3;
const FAILING_WINDOW: Duration = Duration::from_secs(600);

/// Run the future `make` returns until it ends; when it panics, log the panic, record it,
/// call `on_panic` (the restart metric), wait the backoff and run a new one.
pub(crate) async fn supervise<F, Fut>(
    name: &'static str,
    backoff: Backoff,
    on_panic: fn(&'static str),
    mut make: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut pause = backoff.first;
    loop {
        let started = Instant::now();
        // Nothing of the panicked run is used again but what `make` hands the next one, and
        // that is shared state the task keeps consistent between awaits.
        let Err(panic) = AssertUnwindSafe(make()).catch_unwind().await else {
            return;
        };
        let why = panic_message(&*panic);
        let restarts = Tasks::global().record(name, &why, Instant::now());
        on_panic(name);
        // A run that lasted a while was not the same tight failure again.
        if started.elapsed() > backoff.max {
            pause = backoff.first;
        }
        log::error!(
            "background task {name} panicked ({why}); restarting it in {:.1}s (restart {restarts})",
            pause.as_secs_f64()
        );
        tokio::time::sleep(pause).await;
        pause = pause.saturating_mul(2).min(backoff.max);
    }
}

/// A panic payload as text.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// The panics of the supervised tasks, by task name.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    by_name: Mutex<BTreeMap<&'static str, Panics>>,
}

#[derive(Debug, Default)]
struct Panics {
    total: u64,
    /// The moments of the last [`FAILING_AFTER`] panics.
    recent: VecDeque<Instant>,
    last: String,
}

impl Tasks {
    /// The process's record, which `/readyz` reads.
    pub(crate) fn global() -> &'static Tasks {
        static GLOBAL: OnceLock<Tasks> = OnceLock::new();
        GLOBAL.get_or_init(Tasks::default)
    }

    /// Record a panic of `name` at `at`; returns its panics so far.
    fn record(&self, name: &'static str, why: &str, at: Instant) -> u64 {
        let mut tasks = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        let task = tasks.entry(name).or_default();
        task.total += 1;
        task.last = why.chars().take(200).collect();
        if task.recent.len() == FAILING_AFTER {
            task.recent.pop_front();
        }
        task.recent.push_back(at);
        task.total
    }

    /// `Err` naming every task that keeps failing at `now` ([`FAILING_AFTER`] panics within
    /// [`FAILING_WINDOW`]) and its last panic; a task is fine again once its panics stop.
    pub(crate) fn check(&self, now: Instant) -> Result<(), String> {
        let tasks = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        let failing: Vec<String> = tasks
            .iter()
            .filter(|(_, p)| {
                p.recent.len() == FAILING_AFTER
                    && p.recent
                        .front()
                        .is_some_and(|first| now.saturating_duration_since(*first) < FAILING_WINDOW)
            })
            .map(|(name, p)| {
                format!(
                    "{name} keeps panicking ({} restarts, last: {})",
                    p.total, p.last
                )
            })
            .collect();
        if failing.is_empty() {
            Ok(())
        } else {
            Err(failing.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;

    static RESTARTS: AtomicU32 = AtomicU32::new(0);

    fn count_restart(name: &'static str) {
        assert_eq!(name, "test-restarts");
        RESTARTS.fetch_add(1, Ordering::SeqCst);
    }

    #[tokio::test]
    async fn a_panicking_task_restarts_until_it_ends() {
        let runs = Arc::new(AtomicU32::new(0));
        let quick = Backoff {
            first: Duration::from_millis(1),
            max: Duration::from_millis(4),
        };
        let counted = runs.clone();
        let supervised = supervise("test-restarts", quick, count_restart, move || {
            let runs = counted.clone();
            async move {
                tokio::task::yield_now().await;
                if runs.fetch_add(1, Ordering::SeqCst) < 3 {
                    panic!("run {} fails", runs.load(Ordering::SeqCst));
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(5), supervised)
            .await
            .expect("the fourth run ends the task");
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        assert_eq!(RESTARTS.load(Ordering::SeqCst), 3);
        let e = Tasks::global().check(Instant::now()).unwrap_err();
        assert!(
            e.contains("test-restarts keeps panicking (3 restarts, last: run 3 fails)"),
            "{e}"
        );
    }

    #[test]
    fn failing_means_often_and_recently() {
        let tasks = Tasks::default();
        let t0 = Instant::now();
        assert!(tasks.check(t0).is_ok());
        tasks.record("jwks", "a", t0);
        tasks.record("jwks", "b", t0 + Duration::from_secs(1));
        assert!(tasks.check(t0).is_ok(), "two panics are not yet failing");
        tasks.record("jwks", "c", t0 + Duration::from_secs(2));
        let e = tasks.check(t0 + Duration::from_secs(3)).unwrap_err();
        assert_eq!(e, "jwks keeps panicking (3 restarts, last: c)");
        // Ten quiet minutes after the first of the three: fine again.
        assert!(tasks.check(t0 + FAILING_WINDOW).is_ok());
        // Three spread over more than the window are not "keeps failing" either.
        tasks.record("jwks", "d", t0 + FAILING_WINDOW * 2);
        assert!(tasks.check(t0 + FAILING_WINDOW * 2).is_ok());
    }
}
