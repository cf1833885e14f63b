//! The ground floor: the words every part of the gateway shares, and the parsed value types of
//! the configuration. Nothing here imports anything above it (only other `core` modules), so
//! metrics, the access log and the configuration can all stand on it without reaching up.
//!
//! | module | owns |
//! | --- | --- |
//! | [`reason`] | why a handshake was refused (the `reason` label) |
//! | [`close`] | close codes and the reasons the gateway sends with them |
//! | [`end`] | how a session ended, who closed it, why the gateway stopped it |
//! | [`labels`] | the other metric label values (handshake result, direction, class, upstream error kind) |
//! | [`duration`], [`url`], [`cidr`], [`name`], [`glob`], [`addr`], [`log_format`], [`on_error`] | parsed configuration values |
//! | [`header`] | reading comma-separated header values |
//! | [`credential`] | where browsers put a token (the `bearer.` subprotocol entry) |
//! | [`background`], [`shutdown`] | threads for work outside the request path; pingora's shutdown broadcast |

pub(crate) mod addr;
pub(crate) mod background;
pub(crate) mod cidr;
pub(crate) mod close;
pub(crate) mod credential;
pub(crate) mod duration;
pub(crate) mod end;
pub(crate) mod glob;
pub(crate) mod header;
pub(crate) mod labels;
pub(crate) mod log_format;
pub(crate) mod name;
pub(crate) mod on_error;
pub(crate) mod reason;
pub(crate) mod shutdown;
pub(crate) mod url;
