//! The `handshake_cluster_rc` section's Redis Cluster: three primaries on free loopback ports,
//! joined with `redis-cli --cluster create` (the slots spread evenly over them), kept for the
//! whole run and killed with it. No persistence: each node's `nodes-PORT.conf` lives in the
//! benchmark's temp folder.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::procs::{free_port, Proc};

/// Primaries in the cluster (`redis-cli --cluster create` wants at least three).
pub const NODES: usize = 3;

/// How long the nodes may take to start and the cluster to agree on its slots.
const START: Duration = Duration::from_secs(30);

/// A running Redis Cluster; its nodes are killed when it drops.
pub struct RedisCluster {
    /// Kept for their guards: each node's process group dies with it.
    _nodes: Vec<Proc>,
    pub ports: Vec<u16>,
}

impl RedisCluster {
    /// Start [`NODES`] nodes in `dir`, join them and wait until each says `cluster_state:ok`.
    pub fn start(server: &Path, cli: &Path, dir: &Path) -> Result<RedisCluster, String> {
        let dir = dir.join("redis-cluster");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut nodes = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..NODES {
            let port = free_port()?;
            // The bus port explicitly: the default, port + 10000, may not exist.
            let bus = free_port()?;
            let mut cmd = Command::new(server);
            cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .arg("--cluster-config-file")
                .arg(dir.join(format!("nodes-{port}.conf")))
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir)
                .current_dir(&dir);
            let mut proc = Proc::spawn(
                &format!("redis-server (cluster node {port})"),
                cmd,
                &dir.join(format!("redis-{port}.log")),
            )?;
            proc.wait_listening(port, START)?;
            nodes.push(proc);
            ports.push(port);
        }
        let mut create = Command::new(cli);
        create.args(["--cluster", "create"]);
        create.args(ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let (ok, text) = run_bounded(
            "redis-cli --cluster create",
            create,
            &dir.join("create.log"),
        )?;
        if !ok {
            return Err(format!("redis-cli --cluster create failed:\n{text}"));
        }
        let deadline = Instant::now() + START;
        for &port in &ports {
            loop {
                let mut info = Command::new(cli);
                info.args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "CLUSTER",
                    "INFO",
                ]);
                let log = dir.join(format!("info-{port}.log"));
                let (_, text) = run_bounded("redis-cli CLUSTER INFO", info, &log)?;
                if text.contains("cluster_state:ok") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "the Redis Cluster node on {port} did not reach cluster_state:ok within \
                         {START:?}:\n{text}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(RedisCluster {
            _nodes: nodes,
            ports,
        })
    }
}

/// Run `cmd` to its end within [`START`], its output into `log`: whether it succeeded, and
/// what it printed.
fn run_bounded(name: &str, cmd: Command, log: &Path) -> Result<(bool, String), String> {
    let mut proc = Proc::spawn(name, cmd, log)?;
    let deadline = Instant::now() + START;
    loop {
        if let Some(status) = proc.exited()? {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return Ok((status.success(), text));
        }
        if Instant::now() > deadline {
            return Err(format!("{name} did not finish within {START:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
