//! The admin listener: health (and, as they land, metrics and readiness) on its own address,
//! never on the public port.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::http1::{self, Answer, HeadLimits};

/// Admin requests are small and local: tight limits.
const LIMITS: HeadLimits = HeadLimits {
    max_bytes: 8 * 1024,
    max_headers: 32,
};
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `/healthz`: the process is alive and its runtime answers.
pub struct Admin;

impl Admin {
    fn answer(path: &str, method: &str) -> Answer {
        if method != "GET" && method != "HEAD" {
            return Answer::new(405, "method not allowed\n").header("Allow", "GET, HEAD");
        }
        match path {
            "/healthz" => Answer::new(200, "ok\n"),
            _ => Answer::new(404, "not found\n"),
        }
    }
}

#[async_trait]
impl ServerApp for Admin {
    async fn process_new(
        self: &Arc<Self>,
        mut io: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut buf = BytesMut::new();
        match http1::read_head(&mut io, &mut buf, LIMITS, HEAD_TIMEOUT).await {
            Ok(Some(head)) => {
                let answer = Admin::answer(head.path(), &head.method);
                let _ = answer.write(&mut io, false, head.method == "HEAD").await;
            }
            Ok(None) => {}
            Err(e) => {
                if let Some((status, why)) = e.answer() {
                    let _ = Answer::new(status, format!("{why}\n"))
                        .write(&mut io, false, false)
                        .await;
                }
            }
        }
        None
    }
}
