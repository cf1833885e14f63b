//! `portcullis sessions ...`: the admin API's session endpoints from the command line, so an
//! operator needs no curl. The admin address and token come from the configuration file
//! (`[admin] address`, `token_file`/`token_env`); `--admin ADDRESS` names another address (for a
//! listener on port 0, or one reached through a tunnel).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::config::Config;

/// The subcommand's usage, for `portcullis --help`.
pub const USAGE: &str = "\
    portcullis sessions [--config FILE] [--admin ADDRESS] COMMAND
                                    the admin API's session endpoints:
        list [--route PATH] [--subject SUB] [--client IP] [--offset N] [--limit N]
        close (--id ID | --subject SUB | --route PATH | --jti JTI) [--code N] [--reason TEXT]
        revoke (--subject SUB | --jti JTI) --ttl DURATION
        unrevoke (--subject SUB | --jti JTI)
        revocations";

/// Limit for the whole exchange with the admin listener.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why `portcullis sessions` did not fully succeed, and so its exit status.
#[derive(Debug)]
pub enum Failure {
    /// Nothing was done: a usage error, no answer, or a refusal (exit status 1).
    Failed(String),
    /// The action applied on the replica asked, but could not be published to the other
    /// replicas (the admin API's 503 with `"published": false`; exit status 2).
    NotPublished(String),
}

impl Failure {
    /// The process's exit status.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Failed(_) => 1,
            Failure::NotPublished(_) => 2,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Failed(why) => f.write_str(why),
            Failure::NotPublished(answer) => write!(
                f,
                "applied on this replica only: it could not be published to the others \
                 (try again):\n{answer}"
            ),
        }
    }
}

impl From<String> for Failure {
    fn from(why: String) -> Failure {
        Failure::Failed(why)
    }
}

impl From<&str> for Failure {
    fn from(why: &str) -> Failure {
        Failure::Failed(why.to_string())
    }
}

/// One parsed command: method, path (with query) and JSON body.
struct Request {
    method: &'static str,
    target: String,
    body: Option<Value>,
}

fn parse(args: &[String]) -> Result<Request, String> {
    let (command, rest) = args
        .split_first()
        .ok_or("sessions: name a command (list, close, revoke, unrevoke, revocations)")?;
    let mut options = Map::new();
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or_else(|| format!("sessions {command}: unexpected argument {flag:?}"))?;
        let value = it
            .next()
            .ok_or_else(|| format!("sessions {command}: {flag} needs a value"))?;
        options.insert(name.replace('-', "_"), Value::from(value.as_str()));
    }
    let allowed: &[&str] = match command.as_str() {
        "list" => &["route", "subject", "client", "offset", "limit"],
        "close" => &["id", "subject", "route", "jti", "code", "reason"],
        "revoke" => &["subject", "jti", "ttl"],
        "unrevoke" => &["subject", "jti"],
        "revocations" => &[],
        other => return Err(format!("sessions: unknown command {other:?}")),
    };
    if let Some(bad) = options.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("sessions {command}: unknown option --{bad}"));
    }
    let query = |options: &Map<String, Value>| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in options {
            q.append_pair(k, v.as_str().unwrap_or_default());
        }
        let q = q.finish();
        if q.is_empty() {
            q
        } else {
            format!("?{q}")
        }
    };
    Ok(match command.as_str() {
        "list" => Request {
            method: "GET",
            target: format!("/sessions{}", query(&options)),
            body: None,
        },
        "close" => {
            if let Some(code) = options.get("code").and_then(Value::as_str) {
                let code: u16 = code
                    .parse()
                    .map_err(|_| format!("sessions close: --code {code:?} is not a number"))?;
                options.insert("code".into(), json!(code));
            }
            Request {
                method: "POST",
                target: "/sessions/close".into(),
                body: Some(Value::Object(options)),
            }
        }
        "revoke" => Request {
            method: "POST",
            target: "/revocations".into(),
            body: Some(Value::Object(options)),
        },
        "unrevoke" => Request {
            method: "DELETE",
            target: format!("/revocations{}", query(&options)),
            body: None,
        },
        _ => Request {
            method: "GET",
            target: "/revocations".into(),
            body: None,
        },
    })
}

/// Where to reach the admin listener: `--admin`, else `[admin] address` (an unspecified IP
/// means this machine).
fn address(config: &Config, admin: Option<&str>) -> Result<SocketAddr, String> {
    if let Some(a) = admin {
        return a
            .parse()
            .map_err(|_| format!("--admin {a:?} is not an IP address with a port"));
    }
    if !config.admin.enabled {
        return Err("the admin listener is disabled ([admin] enabled = false)".into());
    }
    let mut addr = config.admin.address.0;
    if addr.port() == 0 {
        return Err(
            "[admin] address has port 0 (chosen at start): name it with --admin ADDRESS".into(),
        );
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(addr)
}

/// Run `portcullis sessions ARGS` against the admin listener of `config`: the answer's JSON,
/// pretty-printed, or why not (the answer's status and body for a refusal, the body for an
/// action that applied on that replica only).
pub fn run(config: &Config, admin: Option<&str>, args: &[String]) -> Result<String, Failure> {
    let request = parse(args)?;
    let addr = address(config, admin)?;
    let token = config.admin.token()?;
    let body = request
        .body
        .as_ref()
        .map(|b| b.to_string())
        .unwrap_or_default();
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n",
        request.method,
        request.target,
        body.len()
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|e| format!("cannot reach the admin listener at {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("{head}{body}").as_bytes())
        .map_err(|e| format!("sending to {addr}: {e}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("reading from {addr}: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer from {addr}"))?;
    let json = serde_json::from_str::<Value>(body).ok();
    let shown = json
        .as_ref()
        .and_then(|v| serde_json::to_string_pretty(v).ok())
        .unwrap_or_else(|| body.trim_end().to_string());
    let published = json.as_ref().and_then(|v| v["published"].as_bool());
    match (status, published) {
        (503, Some(false)) => Err(Failure::NotPublished(shown)),
        (400.., _) => Err(Failure::Failed(format!("{status}: {shown}"))),
        _ => Ok(shown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn commands_become_requests() {
        let r = parse(&args(&["list", "--subject", "a b", "--limit", "5"])).unwrap();
        assert_eq!(
            (r.method, r.target.as_str()),
            ("GET", "/sessions?limit=5&subject=a+b")
        );
        let r = parse(&args(&["close", "--id", "x-1", "--code", "4000"])).unwrap();
        assert_eq!(r.body.unwrap(), json!({"id": "x-1", "code": 4000}));
        let r = parse(&args(&["revoke", "--subject", "eve", "--ttl", "1h"])).unwrap();
        assert_eq!((r.method, r.target.as_str()), ("POST", "/revocations"));
        let r = parse(&args(&["unrevoke", "--jti", "t1"])).unwrap();
        assert_eq!(
            (r.method, r.target.as_str()),
            ("DELETE", "/revocations?jti=t1")
        );
        assert!(parse(&args(&["close", "--nope", "1"])).is_err());
        assert!(parse(&args(&["frobnicate"])).is_err());
        assert!(parse(&args(&["list", "--route"])).is_err());
    }
}
