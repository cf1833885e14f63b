//! What a check does when what it asks cannot answer, as the configuration writes it: the
//! cluster store (`[cluster] on_error`, `[policies.NAME.cluster] on_error`) and an external
//! authorizer (`[policies.NAME.ext_authz] on_error`). Their values are also metric labels.

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

/// What an external authorizer that cannot be asked means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AuthzOnError {
    /// `503` + `Retry-After` (fail closed).
    #[default]
    Deny,
    /// Admit as if it had said yes (fail open): counted and logged.
    Allow,
}

impl AuthzOnError {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AuthzOnError::Deny => "deny",
            AuthzOnError::Allow => "allow",
        }
    }
}
