//! Short HTTP answers (refusals, static routes, the admin API): status, extra headers and a
//! text body, written whole.

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// A short HTTP answer: status, extra headers and a text body.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn new(status: u16, body: impl Into<String>) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }

    /// Serialize; `head_only` for answers to `HEAD`. The content type is plain text unless a
    /// `Content-Type` header was added.
    pub(crate) fn to_bytes(&self, keep_alive: bool, head_only: bool) -> Vec<u8> {
        let typed = self
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
        let mut out =
            format!(
            "HTTP/1.1 {} {}\r\nServer: portcullis\r\n{}Content-Length: {}\r\nConnection: {}\r\n",
            self.status,
            reason_phrase(self.status),
            if typed { "" } else { "Content-Type: text/plain; charset=utf-8\r\n" },
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        );
        for (name, value) in &self.headers {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        if !head_only {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }

    /// Write and flush.
    pub(crate) async fn write<S: AsyncWrite + Unpin>(
        &self,
        io: &mut S,
        keep_alive: bool,
        head_only: bool,
    ) -> std::io::Result<()> {
        io.write_all(&self.to_bytes(keep_alive, head_only)).await?;
        io.flush().await
    }
}

/// The standard reason phrase of the statuses the gateway sends.
pub(crate) fn reason_phrase(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_status_headers_and_body() {
        let answer = Answer::new(404, "no route").to_bytes(false, false);
        let text = String::from_utf8(answer).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.ends_with("\r\n\r\nno route"));
    }
}
