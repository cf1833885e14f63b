//! The session endpoints of the admin listener, JSON in and out:
//!
//! | request | does |
//! | --- | --- |
//! | `GET /sessions?route=&subject=&client=&offset=&limit=` | the open WebSockets, paged |
//! | `POST /sessions/close` `{"id"|"subject"|"route": ..., "code"?, "reason"?}` | close them (default 1008 `closed by operator`); `{"closed": N}` |
//! | `POST /revocations` `{"subject"|"jti": ..., "ttl": "1h"}` | close with 1008 `revoked` and refuse new handshakes until the ttl ends |
//! | `GET /revocations` | the revocations in force |
//! | `DELETE /revocations?subject=...` (or `jti=`, or the same JSON body) | lift one |
//!
//! The admin listener decides who may call them (`admin`): the state-changing ones exist only
//! with an admin token, and always need it. With `[cluster]`, a state-changing one that could
//! not be published to the other replicas answers 503 with what it did on this one.
//!
//! Every answer of these endpoints is JSON, refusals too: `{"error": "..."}`, where a `400` names
//! the field and what it may be (`ttl: duration -5 is negative; give a duration greater than zero
//! and at most one year ...`), never a parser's internals.

use std::time::Duration;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::control::{Applied, Control};
use crate::cluster::events::Target;
use crate::cluster::revocations::Revoked;
use crate::core::close;
use crate::core::duration::{self, HumanDuration};
use crate::net::answer::Answer;
use crate::net::http1::RequestHead;
use crate::session::registry::Filter;

/// The largest request body the endpoints read.
pub(crate) const MAX_BODY: usize = 16 * 1024;
/// Sessions per page unless `limit` says otherwise, and the most a page may hold.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// Whether `path` is one of these endpoints.
pub(crate) fn handles(path: &str) -> bool {
    matches!(path, "/sessions" | "/sessions/close" | "/revocations")
}

/// Whether the request would change state (needs the admin token, which must be configured).
pub(crate) fn changes_state(head: &RequestHead) -> bool {
    !matches!(head.method.as_str(), "GET" | "HEAD")
}

fn json_answer(status: u16, value: Value) -> Answer {
    Answer::new(status, format!("{value}\n")).header("Content-Type", "application/json")
}

/// The answer to an operator's action: 200 when it applied wherever it should, 503 when it
/// applied on this replica only because it could not be published to the others (the body
/// says what was done here, and why it was not published).
fn applied(result: Applied) -> Answer {
    match result {
        Ok(body) => json_answer(200, body),
        Err(body) => json_answer(503, body),
    }
}

/// A refusal of these endpoints: `{"error": why}` with `status`.
pub(crate) fn refusal(status: u16, why: impl std::fmt::Display) -> Answer {
    json_answer(status, json!({ "error": why.to_string() }))
}

fn bad(why: impl std::fmt::Display) -> Answer {
    refusal(400, why)
}

/// The query parameters of the request target.
fn query(head: &RequestHead) -> Vec<(String, String)> {
    let q = head.target.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    id: Option<String>,
    subject: Option<String>,
    route: Option<String>,
    jti: Option<String>,
    code: Option<SendableCode>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    subject: Option<String>,
    jti: Option<String>,
    ttl: Option<Ttl>,
}

/// A close code an operator may ask for: one a gateway may send (`close::sendable`). Any JSON
/// value is read, so that a wrong one (`70000`, `-1`, `1000.5`, `"1000"`) is named in the error.
struct SendableCode(u16);

impl<'de> Deserialize<'de> for SendableCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        match value.as_u64().and_then(|c| u16::try_from(c).ok()) {
            Some(code) if close::sendable(code) => Ok(SendableCode(code)),
            _ => Err(D::Error::custom(format!(
                "{value} cannot be sent in a close frame (use {})",
                close::SENDABLE
            ))),
        }
    }
}

/// A revocation's lifetime: a duration (as configuration writes one) greater than zero.
struct Ttl(Duration);

/// What a `ttl` may be, as every error about one says.
fn ttl_range() -> String {
    format!(
        "give a duration greater than zero and at most one year ({} seconds): {}",
        duration::MAX_SECS,
        duration::FORMS
    )
}

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let HumanDuration(ttl) = HumanDuration::deserialize(d)
            .map_err(|e| D::Error::custom(format!("{e}; {}", ttl_range())))?;
        if ttl.is_zero() {
            return Err(D::Error::custom(format!("zero; {}", ttl_range())));
        }
        Ok(Ttl(ttl))
    }
}

/// A JSON body as `T`. Bad JSON says so; a field of the wrong kind is named (`code: ...`,
/// `ttl: ...`) with what it may be.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Answer> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." => bad(e.into_inner()),
            _ => bad(format!("{path}: {}", e.into_inner())),
        }
    })
}

fn who(subject: Option<String>, jti: Option<String>) -> Result<Revoked, Answer> {
    match (subject, jti) {
        (Some(s), None) if !s.is_empty() => Ok(Revoked::Subject(s)),
        (None, Some(j)) if !j.is_empty() => Ok(Revoked::Jti(j)),
        _ => Err(bad("name exactly one of \"subject\" and \"jti\"")),
    }
}

/// The answer to one request to these endpoints (already authorized).
pub(crate) async fn answer(control: &Control, head: &RequestHead, body: &[u8]) -> Answer {
    let result = match (head.method.as_str(), head.path()) {
        ("GET", "/sessions") => list(control, head),
        ("POST", "/sessions/close") => close(control, body).await,
        ("GET", "/revocations") => Ok(json_answer(200, control.revocations())),
        ("POST", "/revocations") => revoke(control, body).await,
        ("DELETE", "/revocations") => lift(control, head, body).await,
        (method, path) => {
            let allow = match path {
                "/sessions" => "GET",
                "/sessions/close" => "POST",
                _ => "GET, POST, DELETE",
            };
            Ok(refusal(
                405,
                format!("{method} {path}: method not allowed (use {allow})"),
            )
            .header("Allow", allow))
        }
    };
    result.unwrap_or_else(|a| a)
}

fn list(control: &Control, head: &RequestHead) -> Result<Answer, Answer> {
    let mut filter = Filter::default();
    let (mut offset, mut limit) = (0, PAGE);
    for (key, value) in query(head) {
        match key.as_str() {
            "route" => filter.route = Some(value),
            "subject" => filter.subject = Some(value),
            "id" => filter.id = Some(value),
            "client" => {
                filter.client = Some(
                    value
                        .parse()
                        .map_err(|_| bad(format!("client: {value:?} is not an IP address")))?,
                )
            }
            "offset" => {
                offset = value
                    .parse()
                    .map_err(|_| bad("offset: a whole number from 0 on"))?
            }
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=MAX_PAGE).contains(l))
                    .ok_or_else(|| bad(format!("limit: a number from 1 to {MAX_PAGE}")))?
            }
            other => return Err(bad(format!("unknown parameter {other:?}"))),
        }
    }
    Ok(json_answer(200, control.list(&filter, offset, limit)))
}

async fn close(control: &Control, body: &[u8]) -> Result<Answer, Answer> {
    let b: CloseBody = parse(body)?;
    let target = Target {
        id: b.id,
        route: b.route,
        subject: b.subject,
        jti: b.jti,
    };
    if target == Target::default() {
        return Err(bad(
            "name the sessions to close: \"id\", \"subject\", \"route\" or \"jti\"",
        ));
    }
    let code = b.code.map_or(close::OPERATOR.code, |c| c.0);
    let reason = b
        .reason
        .unwrap_or_else(|| close::OPERATOR.reason.to_string());
    if reason.len() > 123 {
        return Err(bad("reason: at most 123 bytes (a close frame's limit)"));
    }
    Ok(applied(control.close(target, code, reason).await))
}

async fn revoke(control: &Control, body: &[u8]) -> Result<Answer, Answer> {
    let b: RevokeBody = parse(body)?;
    let who = who(b.subject, b.jti)?;
    let Ttl(ttl) = b
        .ttl
        .ok_or_else(|| bad(format!("ttl: required; {}", ttl_range())))?;
    Ok(applied(control.revoke(who, ttl).await))
}

async fn lift(control: &Control, head: &RequestHead, body: &[u8]) -> Result<Answer, Answer> {
    let (mut subject, mut jti) = (None, None);
    for (key, value) in query(head) {
        match key.as_str() {
            "subject" => subject = Some(value),
            "jti" => jti = Some(value),
            other => return Err(bad(format!("unknown parameter {other:?}"))),
        }
    }
    if subject.is_none() && jti.is_none() && !body.is_empty() {
        let b: RevokeBody = parse(body)?;
        (subject, jti) = (b.subject, b.jti);
    }
    let who = who(subject, jti)?;
    Ok(applied(control.lift(who).await))
}
