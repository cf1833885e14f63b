//! Work outside the request path — JWKS fetches, reloads, the exit monitor — runs on threads of
//! its own, each with a small single-threaded tokio runtime: it exists before pingora's runtimes
//! start and never competes with their workers.

use std::future::Future;

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
