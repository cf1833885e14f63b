//! `[server] log_format`.

use serde::Deserialize;

/// The format of every log line, access lines included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// `key=value` text after env_logger's usual `[time LEVEL target]` prefix.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}
