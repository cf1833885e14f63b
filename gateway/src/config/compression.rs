//! `[routes.compression]`: permessage-deflate (RFC 7692) on echo and relay routes, negotiated
//! by the gateway with each side on its own (`net::websocket::deflate`).

use serde::Deserialize;

use super::defaults;

/// `[routes.compression]` as written; every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompressionConfig {
    /// Negotiate permessage-deflate at all (default on).
    pub(crate) enabled: Option<bool>,
    /// Largest LZ77 window (bits, 9-15) the gateway compresses with.
    pub(crate) server_max_window_bits: Option<u8>,
    /// Largest window (bits, 9-15) the gateway asks a client to compress with.
    pub(crate) client_max_window_bits: Option<u8>,
    /// The gateway resets its compressor after each message.
    pub(crate) server_no_context_takeover: Option<bool>,
    /// The gateway asks clients to reset theirs after each message.
    pub(crate) client_no_context_takeover: Option<bool>,
    /// zlib level (1-9) of messages the gateway compresses itself.
    pub(crate) level: Option<u32>,
    /// Messages shorter than this are sent uncompressed.
    pub(crate) min_bytes: Option<usize>,
}

/// The compression settings of a route, defaults applied. The names are the RFC's as seen by
/// a client of the gateway ("server" is the gateway); toward an upstream the gateway is the
/// client and applies the same limits in the mirrored roles: it sends with
/// `server_max_window_bits` and asks the upstream for `client_max_window_bits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Compression {
    pub(crate) enabled: bool,
    pub(crate) server_max_window_bits: u8,
    pub(crate) client_max_window_bits: u8,
    pub(crate) server_no_context_takeover: bool,
    pub(crate) client_no_context_takeover: bool,
    pub(crate) level: u32,
    pub(crate) min_bytes: usize,
}

impl Default for Compression {
    fn default() -> Self {
        CompressionConfig::default().resolve()
    }
}

impl CompressionConfig {
    /// Defaults applied.
    pub(crate) fn resolve(&self) -> Compression {
        Compression {
            enabled: self.enabled.unwrap_or(defaults::COMPRESSION),
            server_max_window_bits: self
                .server_max_window_bits
                .unwrap_or(defaults::DEFLATE_WINDOW_BITS),
            client_max_window_bits: self
                .client_max_window_bits
                .unwrap_or(defaults::DEFLATE_WINDOW_BITS),
            server_no_context_takeover: self.server_no_context_takeover.unwrap_or(false),
            client_no_context_takeover: self.client_no_context_takeover.unwrap_or(false),
            level: self.level.unwrap_or(defaults::DEFLATE_LEVEL),
            min_bytes: self.min_bytes.unwrap_or(defaults::DEFLATE_MIN_BYTES),
        }
    }

    /// Range checks; errors name the key under `compression.`.
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (key, bits) in [
            ("server_max_window_bits", self.server_max_window_bits),
            ("client_max_window_bits", self.client_max_window_bits),
        ] {
            if let Some(b) = bits {
                if !(9..=15).contains(&b) {
                    return Err(format!("compression.{key}: must be from 9 to 15, not {b}"));
                }
            }
        }
        if let Some(level) = self.level {
            if !(1..=9).contains(&level) {
                return Err(format!(
                    "compression.level: must be from 1 to 9, not {level}"
                ));
            }
        }
        Ok(())
    }
}
