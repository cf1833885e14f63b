//! pingora's shutdown broadcast, as the parts that wait on it read it.

use pingora::server::ShutdownWatch;

/// Resolves once the gateway is shutting down; never, if the shutdown sender is gone without one.
pub(crate) async fn shutting_down(watch: &mut ShutdownWatch) {
    if watch.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}
