//! What a cluster check does when the store fails, as the configuration writes it
//! (`[cluster] on_error`, `[policies.NAME.cluster] on_error`).

use serde::Deserialize;

/// What a check does when the cluster store cannot answer (down, slow, refusing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OnError {
    /// Decide under this process's own limits, and count the fallback.
    Open,
    /// Refuse the handshake with `503` + `Retry-After`.
    Closed,
}

impl OnError {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OnError::Open => "open",
            OnError::Closed => "closed",
        }
    }
}
