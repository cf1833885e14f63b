//! `[http2]`: the bounds of HTTP/2 connections (TLS listeners offer HTTP/2 unless
//! `[listeners.tls] http2 = false`).
//! The header list is bounded by `[limits] max_head_bytes`, the first request by
//! `head_timeout` and an idle connection by `keepalive_timeout`, as on HTTP/1.1.

use serde::Deserialize;

use super::defaults;
use crate::core::duration::HumanDuration;

/// `[http2]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Http2 {
    pub(crate) max_concurrent_streams: u32,
    pub(crate) stream_window_bytes: u32,
    pub(crate) max_send_buffer_bytes: usize,
    pub(crate) send_stall_timeout: HumanDuration,
    pub(crate) max_pending_accept_reset_streams: usize,
    pub(crate) max_local_error_reset_streams: usize,
    pub(crate) max_control_frames_per_second: u32,
}

impl Default for Http2 {
    fn default() -> Self {
        Http2 {
            max_concurrent_streams: defaults::H2_MAX_CONCURRENT_STREAMS,
            stream_window_bytes: defaults::H2_STREAM_WINDOW_BYTES,
            max_send_buffer_bytes: defaults::H2_MAX_SEND_BUFFER_BYTES,
            send_stall_timeout: HumanDuration(defaults::H2_SEND_STALL_TIMEOUT),
            max_pending_accept_reset_streams: defaults::H2_MAX_PENDING_ACCEPT_RESET_STREAMS,
            max_local_error_reset_streams: defaults::H2_MAX_LOCAL_ERROR_RESET_STREAMS,
            max_control_frames_per_second: defaults::H2_MAX_CONTROL_FRAMES_PER_SECOND,
        }
    }
}

impl Http2 {
    /// Ranges that keep every bound meaningful; errors name the key.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let ranges: [(&str, usize, usize, usize); 6] = [
            (
                "http2.max_concurrent_streams",
                self.max_concurrent_streams as usize,
                1,
                10_000,
            ),
            // 2^31 - 1 is HTTP/2's largest window (RFC 9113 section 6.9.1).
            (
                "http2.stream_window_bytes",
                self.stream_window_bytes as usize,
                1024,
                (1 << 31) - 1,
            ),
            (
                "http2.max_send_buffer_bytes",
                self.max_send_buffer_bytes,
                1024,
                1 << 30,
            ),
            (
                "http2.max_pending_accept_reset_streams",
                self.max_pending_accept_reset_streams,
                1,
                100_000,
            ),
            (
                "http2.max_local_error_reset_streams",
                self.max_local_error_reset_streams,
                1,
                100_000,
            ),
            (
                "http2.max_control_frames_per_second",
                self.max_control_frames_per_second as usize,
                10,
                1_000_000,
            ),
        ];
        for (key, value, min, max) in ranges {
            if value < min || value > max {
                return Err(format!("{key} must be between {min} and {max}"));
            }
        }
        if self.send_stall_timeout.0.is_zero() {
            return Err("http2.send_stall_timeout must be greater than zero".into());
        }
        Ok(())
    }

    /// The connection's receive window: every stream's window at once, at most 2^31 - 1.
    pub(crate) fn connection_window(&self) -> u32 {
        let all = u64::from(self.stream_window_bytes) * u64::from(self.max_concurrent_streams);
        all.min((1 << 31) - 1) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_hold_and_a_bad_control_frame_rate_is_named() {
        assert_eq!(Http2::default().validate(), Ok(()));
        let zero = Http2 {
            max_control_frames_per_second: 0,
            ..Http2::default()
        };
        let e = zero.validate().unwrap_err();
        assert!(e.contains("http2.max_control_frames_per_second"), "{e}");
    }
}
