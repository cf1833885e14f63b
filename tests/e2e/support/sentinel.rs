//! A real `redis-sentinel` (Debian's, installed by `scripts/bootstrap --test`) watching a
//! primary on loopback under a master name, with a quorum of one and a down-after of one second
//! (so that a failover, asked for or caused by a dead primary, takes a few seconds); killed
//! when the handle drops. Like Redis it cannot take a kernel-chosen port, so a free one is
//! found first and another is tried if it was taken meanwhile.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{output_within_async, text_of, tool, Reaper};
use super::redis::{free_port, Redis};
use super::wait::*;

/// A running Sentinel; stopped (and its folder removed) on drop.
pub struct Sentinel {
    _child: Reaper,
    pub port: u16,
    pub master: String,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    /// Watch `primary` as `master`, once the Sentinel knows `replicas` replicas of it (a
    /// failover needs one to promote); `None` when redis-sentinel is not installed.
    pub async fn start(master: &str, primary: &Redis, replicas: usize) -> Option<Sentinel> {
        let binary = tool("redis-sentinel")?;
        tool("redis-cli")?;
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = free_port();
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {master} 127.0.0.1 {} 1\n\
                     sentinel down-after-milliseconds {master} 1000\n\
                     sentinel failover-timeout {master} 10000\n",
                    dir.path().display(),
                    primary.port
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.path().join("sentinel.log")).unwrap();
            let child = Command::new(&binary)
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("redis-sentinel starts");
            let child = std::sync::Mutex::new(Reaper(child));
            let up = eventually(START, "redis-sentinel answering PING", || async {
                if child.lock().unwrap().0.try_wait().unwrap().is_some() {
                    return Ok(false);
                }
                let pong = try_cli(port, &["PING"]).await;
                done_or(pong.as_deref() == Some("PONG"), format!("{pong:?}")).map(|()| true)
            })
            .await;
            if !up {
                continue;
            }
            let sentinel = Sentinel {
                _child: child.into_inner().unwrap(),
                port,
                master: master.to_string(),
                _dir: dir,
            };
            let want = format!("num-slaves\n{replicas}");
            eventually(
                START,
                format!("the Sentinel knows {replicas} replica(s)"),
                || async {
                    let info = sentinel.cli(&["SENTINEL", "master", master]).await;
                    done_or(info.contains(&want), info)
                },
            )
            .await;
            return Some(sentinel);
        }
        panic!("redis-sentinel did not start on any of 5 free ports");
    }

    /// `redis://127.0.0.1:PORT`: this Sentinel's address.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port of the primary the Sentinel names now.
    pub async fn primary_port(&self) -> u16 {
        let addr = self
            .cli(&["SENTINEL", "get-master-addr-by-name", &self.master])
            .await;
        addr.lines().nth(1).unwrap().trim().parse().unwrap()
    }

    /// Wait until the Sentinel names the primary on `port` (after a failover).
    pub async fn wait_primary(&self, port: u16, limit: Duration) {
        eventually(
            limit,
            format!("the Sentinel naming :{port} the primary"),
            || async {
                let now = self.primary_port().await;
                done_or(now == port, now)
            },
        )
        .await
    }

    /// Run `redis-cli` against the Sentinel, which must succeed: its answer, trimmed.
    pub async fn cli(&self, args: &[&str]) -> String {
        try_cli(self.port, args)
            .await
            .unwrap_or_else(|| panic!("redis-cli -p {} {args:?} failed", self.port))
    }
}

async fn try_cli(port: u16, args: &[&str]) -> Option<String> {
    let mut cmd = Command::new(tool("redis-cli")?);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    let out = output_within_async(cmd, b"", Duration::from_secs(10)).await;
    let text = text_of(&out);
    (out.status.success() && !text.starts_with("Could not connect"))
        .then(|| text.trim().to_string())
}
