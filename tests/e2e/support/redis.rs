//! A real `redis-server` (Debian's, installed by `scripts/bootstrap --test`) on a free loopback
//! port, without persistence, killed when the handle drops. Redis cannot take a kernel-chosen
//! port, so a free one is found by binding port 0 and handed to Redis; should another process
//! take it in between, Redis fails to bind, exits, and the next free port is tried.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{output_within_async, text_of, tool, Reaper};
use super::wait::*;

/// A running Redis; stopped (and its folder removed) on drop.
pub struct Redis {
    child: Option<Reaper>,
    pub port: u16,
    server: PathBuf,
    cli: PathBuf,
    dir: tempfile::TempDir,
    /// `rediss://`: the certificate (its own CA) and key Redis serves TLS with.
    tls: Option<(PathBuf, PathBuf)>,
    /// A replica of the Redis on this loopback port.
    replica_of: Option<u16>,
    /// A Redis Cluster node: the port of its cluster bus.
    bus: Option<u16>,
}

impl Redis {
    /// Start one on a free port; `None` when redis-server is not installed (outside CI; under
    /// CI that is a failure, see `tool`).
    pub async fn start() -> Option<Redis> {
        Redis::start_with(false).await
    }

    /// Start one that speaks only TLS, with a self-signed certificate for `localhost`
    /// ([`Redis::ca_pem`] trusts it).
    pub async fn start_tls() -> Option<Redis> {
        Redis::start_with(true).await
    }

    /// Start one as a replica of `primary` (`--replicaof`), once its replication link is up.
    pub async fn start_replica_of(primary: &Redis) -> Option<Redis> {
        let redis = Redis::start_as(false, Some(primary.port)).await?;
        redis.wait_link_up().await;
        Some(redis)
    }

    /// Wait until this replica's link to its primary is up.
    pub async fn wait_link_up(&self) {
        eventually(START, "the replication link up", || async {
            let info = self.cli(&["INFO", "replication"]).await;
            done_or(info.contains("master_link_status:up"), info)
        })
        .await
    }

    async fn start_with(tls: bool) -> Option<Redis> {
        Redis::start_as(tls, None).await
    }

    /// Start one as a Redis Cluster node (not yet in a cluster: [`RedisCluster`] joins them).
    async fn start_cluster_node() -> Option<Redis> {
        Redis::start_node(false, None, true).await
    }

    async fn start_as(tls: bool, replica_of: Option<u16>) -> Option<Redis> {
        Redis::start_node(tls, replica_of, false).await
    }

    async fn start_node(tls: bool, replica_of: Option<u16>, cluster: bool) -> Option<Redis> {
        let server = tool("redis-server")?;
        let cli = tool("redis-cli")?;
        let dir = tempfile::tempdir().unwrap();
        let tls = tls.then(|| {
            let (cert, key) = super::client::self_signed(&["localhost"]);
            let (c, k) = (dir.path().join("redis.crt"), dir.path().join("redis.key"));
            std::fs::write(&c, cert).unwrap();
            std::fs::write(&k, key).unwrap();
            (c, k)
        });
        let mut redis = Redis {
            child: None,
            port: 0,
            server,
            cli,
            dir,
            tls,
            replica_of,
            bus: None,
        };
        for _ in 0..5 {
            redis.port = free_port();
            redis.bus = cluster.then(free_port);
            if redis.launch().await {
                return Some(redis);
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://localhost:PORT` for a TLS one.
    pub fn url(&self) -> String {
        match self.tls {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some(_) => format!("rediss://localhost:{}", self.port),
        }
    }

    /// The certificate a TLS Redis serves (it is its own CA), as PEM.
    pub fn ca_pem(&self) -> String {
        let (cert, _) = self.tls.as_ref().expect("a TLS Redis");
        std::fs::read_to_string(cert).unwrap()
    }

    /// Start redis-server on `self.port`; false if it exited (the port was taken).
    async fn launch(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        let mut cmd = Command::new(&self.server);
        cmd.args(["--bind", "127.0.0.1"]);
        match &self.tls {
            None => cmd.args(["--port", &self.port.to_string()]),
            Some((cert, key)) => cmd
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .args(["--tls-auth-clients", "no"]),
        };
        if let Some(primary) = self.replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        if let Some(bus) = self.bus {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
            ])
            .arg("--cluster-config-file")
            .arg(self.dir.path().join("nodes.conf"))
            .args(["--cluster-node-timeout", "2000"]);
        }
        let child = cmd
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("redis-server starts");
        let child = std::sync::Mutex::new(Reaper(child));
        let started = eventually(START, "redis-server answering PING", || async {
            if child.lock().unwrap().0.try_wait().unwrap().is_some() {
                return Ok(false);
            }
            let pong = self.try_cli(&["PING"]).await;
            done_or(pong.as_deref() == Some("PONG"), format!("{pong:?}")).map(|()| true)
        })
        .await;
        if started {
            self.child = Some(child.into_inner().unwrap());
        }
        started
    }

    /// Stop it (its data is gone: it keeps none).
    pub async fn stop(&mut self) {
        drop(self.child.take());
    }

    /// Freeze it (SIGSTOP): it keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.send(libc::SIGSTOP);
    }

    /// Let it answer again (SIGCONT).
    pub fn resume(&self) {
        self.send(libc::SIGCONT);
    }

    fn send(&self, signal: i32) {
        let pid = self.child.as_ref().expect("redis is running").0.id() as i32;
        // SAFETY: kill(2) on our own child, not yet reaped (so the pid is its own).
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({signal}) failed");
    }

    /// Start it again, empty, on the same port (the gateways know that one). Bounded: the port
    /// was just released, so another process taking it would be a rare accident.
    pub async fn restart(&mut self) {
        self.stop().await;
        for _ in 0..50 {
            if self.launch().await {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("redis-server could not take port {} again", self.port);
    }

    /// Run `redis-cli` with `args`: its answer, trimmed; `None` when it fails.
    async fn try_cli(&self, args: &[&str]) -> Option<String> {
        let mut cmd = Command::new(&self.cli);
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some((cert, _)) = &self.tls {
            cmd.args(["--tls", "--sni", "localhost", "--cacert"])
                .arg(cert);
        }
        cmd.args(args);
        let out = output_within_async(cmd, b"", Duration::from_secs(10)).await;
        let text = text_of(&out);
        (out.status.success() && !text.starts_with("Could not connect"))
            .then(|| text.trim().to_string())
    }

    /// Run `redis-cli` with `args`, which must succeed: its answer, trimmed.
    pub async fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .await
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }

    /// Wait until `n` clients listen on `channel` (`PUBSUB NUMSUB`): a replica subscribes
    /// right after it connects, and an event published before that is not heard.
    pub async fn wait_subscribers(&self, channel: &str, n: usize) {
        let want = format!("\n{n}");
        eventually(STEP, format!("{n} subscriber(s) of {channel}"), || async {
            let got = self.cli(&["PUBSUB", "NUMSUB", channel]).await;
            done_or(got.ends_with(&want), got)
        })
        .await
    }
}

/// A port nobody listens on right now.
pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Redis Cluster of real `redis-server` nodes on loopback, all primaries, joined with
/// `redis-cli --cluster create` (the slots spread evenly over them); stopped on drop.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    /// `n` primaries (at least 3, as `redis-cli --cluster create` wants), once every node says
    /// `cluster_state:ok`; `None` when redis-server is not installed.
    pub async fn start(n: usize) -> Option<RedisCluster> {
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(Redis::start_cluster_node().await?);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|r| format!("127.0.0.1:{}", r.port))
            .collect();
        let mut create = Command::new(&nodes[0].cli);
        create
            .args(["--cluster", "create"])
            .args(&addresses)
            .arg("--cluster-yes");
        let out = output_within_async(create, b"", Duration::from_secs(60)).await;
        assert!(out.status.success(), "{}", text_of(&out));
        for node in &nodes {
            eventually(START, "cluster_state:ok", || async {
                let info = node.cli(&["CLUSTER", "INFO"]).await;
                done_or(info.contains("cluster_state:ok"), info)
            })
            .await;
        }
        Some(RedisCluster { nodes })
    }

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::url).collect()
    }

    /// Run `redis-cli -c` (following redirections to the node of the key's slot) with `args`,
    /// which must succeed: its answer, trimmed.
    pub async fn cli(&self, args: &[&str]) -> String {
        let mut cluster_args = vec!["-c"];
        cluster_args.extend_from_slice(args);
        self.nodes[0].cli(&cluster_args).await
    }
}
