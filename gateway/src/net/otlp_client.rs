//! The gateway's HTTP client as the transport of the OTLP trace exporter
//! (`opentelemetry-http`'s `HttpClient`), so traces leave through the same pooled hyper client
//! and rustls settings as every other outbound call, each export bounded in time.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Response};

use super::client_tls::ClientTlsError;
use super::http_client::HttpClient;

/// The largest answer read from a collector (it answers an export with a small status).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// One collector's client: `https://` trusts `ca_file` or the system roots.
#[derive(Debug, Clone)]
pub(crate) struct OtlpClient {
    client: HttpClient,
    /// One export, connect to last byte (the exporter itself does not bound it).
    timeout: Duration,
}

impl OtlpClient {
    pub(crate) fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<Self, ClientTlsError> {
        Ok(OtlpClient {
            client: HttpClient::new(ca_file)?,
            timeout,
        })
    }
}

#[async_trait]
impl opentelemetry_http::HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: Request<Bytes>,
    ) -> Result<Response<Bytes>, opentelemetry_http::HttpError> {
        let reply = self
            .client
            .send_request(request, self.timeout, MAX_ANSWER_BYTES)
            .await?;
        let mut response = Response::new(reply.body);
        *response.status_mut() = reply.status;
        *response.headers_mut() = reply.headers;
        Ok(response)
    }
}
