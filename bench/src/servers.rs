//! The servers under test: their configurations (written into the benchmark's temp folder) and
//! how each is started on a free loopback port.
//!
//! Fairness: one certificate, TLS 1.3 only, the same number of workers each (`--workers`: NGINX
//! `worker_processes`, HAProxy `nbthread`, Portcullis `[server] threads`), no access logs, the
//! same upstream, and the open-file limit raised to the hard limit for all of them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;

use crate::certs::Material;
use crate::grid::{Section, Subject};
use crate::load::Target;
use crate::procs::{free_port, Proc};
use crate::write_file as write;

/// Threads of the benchmark's own servers (the upstream echo), whatever `--workers` says of the
/// proxies: the machine's core count, so that the upstream is never what limits a proxy.
pub const HELPER_THREADS: usize = 2;

/// How long a server may take to start listening.
const START: Duration = Duration::from_secs(30);

/// The path every client and upstream uses.
pub const PATH: &str = "/ws";

/// How a Portcullis configuration admits clients (each a handshake section of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Admit {
    /// Public: no policy.
    Public,
    /// An ES256 JWT verified locally.
    Jwt,
    /// An external authorizer, the same token every time: all but the first are cache hits.
    AuthzHit,
    /// An external authorizer with its cache on, a new token every handshake: every one a miss.
    AuthzMiss,
    /// An opaque token checked by introspection on every handshake (no cache).
    Introspection,
    /// A per-IP handshake rate and per-IP and per-route caps, none reached, counted locally.
    LocalLimits,
    /// The same, counted through Redis (`[cluster]`).
    ClusterLimits,
    /// The same, counted through a Redis Cluster (`[cluster] cluster_nodes`).
    RedisClusterLimits,
    /// Public, over three upstream URLs (of the one echo server) by round robin.
    RoundRobin3,
    /// Public, over the same three by `balance = "hash"` of the client address (the clients
    /// come from 16 loopback addresses: 16 keys).
    Hash3,
    /// Public, with `[tracing]`: every handshake and session recorded (ratio 1.0) and exported
    /// to the identity server's sink (`POST /v1/traces`).
    Traced,
}

impl Admit {
    /// The admission a section measures.
    pub fn of(section: Section) -> Admit {
        match section {
            Section::HandshakeJwt => Admit::Jwt,
            Section::HandshakeAuthzHit => Admit::AuthzHit,
            Section::HandshakeAuthzMiss => Admit::AuthzMiss,
            Section::HandshakeIntrospection => Admit::Introspection,
            Section::HandshakeLimits => Admit::LocalLimits,
            Section::HandshakeCluster => Admit::ClusterLimits,
            Section::HandshakeClusterRc => Admit::RedisClusterLimits,
            Section::BalanceRoundRobin => Admit::RoundRobin3,
            Section::BalanceHash => Admit::Hash3,
            Section::TracesOn => Admit::Traced,
            Section::TracesOff
            | Section::Load
            | Section::Idle
            | Section::Handshake
            | Section::Sweep(_)
            | Section::Burst
            | Section::Hold
            | Section::Compressed
            | Section::Uncompressed
            | Section::CompressedIdle
            | Section::CompressedIdleNoTakeover
            | Section::Http2 => Admit::Public,
        }
    }

    fn key(self) -> &'static str {
        match self {
            Admit::Public => "",
            Admit::Jwt => "_jwt",
            Admit::AuthzHit => "_authz_hit",
            Admit::AuthzMiss => "_authz_miss",
            Admit::Introspection => "_introspection",
            Admit::LocalLimits => "_limits",
            Admit::ClusterLimits => "_cluster",
            Admit::RedisClusterLimits => "_cluster_rc",
            Admit::RoundRobin3 => "_round_robin3",
            Admit::Hash3 => "_hash3",
            Admit::Traced => "_traced",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Admit::Public => "",
            Admit::Jwt => " with a JWT policy",
            Admit::AuthzHit | Admit::AuthzMiss => " with an ext_authz policy",
            Admit::Introspection => " with an introspection policy",
            Admit::LocalLimits => " with rate and cap limits",
            Admit::ClusterLimits => " with rate and cap limits in [cluster]",
            Admit::RedisClusterLimits => {
                " with rate and cap limits in [cluster] on a Redis Cluster"
            }
            Admit::RoundRobin3 => " over three upstreams by round robin",
            Admit::Hash3 => " over three upstreams by hash of the client address",
            Admit::Traced => " with [tracing] (sample ratio 1.0)",
        }
    }
}

/// The Portcullis configurations the benchmark needs: a relay or an echo route, admitted one
/// of the [`Admit`] ways; a binary may lack some (a build without relay routes, or without
/// JWT, ext_authz or introspection policies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortcullisRoute {
    pub echo: bool,
    pub admit: Admit,
    /// The compression sections' route (public): `[routes.compression]` named (so a build
    /// without permessage-deflate rejects it and the sections are reported as not measured),
    /// and a relay's upstream is the compressing echo.
    pub compressed: bool,
    /// The HTTP/2 phase's route (public): `[listeners.tls] http2 = true` and an `[http2]` table
    /// (a build without HTTP/2 rejects them; the phase then runs on the plain route, its
    /// HTTP/1.1 figures only: [`Env::route`]).
    pub http2: bool,
}

impl PortcullisRoute {
    pub const ADMITS: [Admit; 11] = [
        Admit::Public,
        Admit::Jwt,
        Admit::AuthzHit,
        Admit::AuthzMiss,
        Admit::Introspection,
        Admit::LocalLimits,
        Admit::ClusterLimits,
        Admit::RedisClusterLimits,
        Admit::RoundRobin3,
        Admit::Hash3,
        Admit::Traced,
    ];

    /// Every configuration: the relay ones, then the echo ones (each kind's compressed and
    /// HTTP/2 routes last).
    pub fn all() -> impl Iterator<Item = PortcullisRoute> {
        [false, true].into_iter().flat_map(|echo| {
            let public = PortcullisRoute {
                echo,
                admit: Admit::Public,
                compressed: false,
                http2: false,
            };
            Self::ADMITS
                .into_iter()
                .map(move |admit| PortcullisRoute { admit, ..public })
                .chain([
                    PortcullisRoute {
                        compressed: true,
                        ..public
                    },
                    PortcullisRoute {
                        http2: true,
                        ..public
                    },
                ])
        })
    }

    pub fn of(subject: Subject, section: Section) -> PortcullisRoute {
        PortcullisRoute {
            echo: subject == Subject::PortcullisEcho,
            admit: Admit::of(section),
            compressed: compresses(section),
            http2: section == Section::Http2,
        }
    }

    /// The key in the JSON output (`relay`, `relay_jwt`, `echo_authz_hit`, `relay_compressed`,
    /// ...).
    pub fn key(self) -> String {
        let kind = if self.echo { "echo" } else { "relay" };
        let compressed = if self.compressed { "_compressed" } else { "" };
        let http2 = if self.http2 { "_http2" } else { "" };
        format!("{kind}{}{compressed}{http2}", self.admit.key())
    }

    pub fn describe(self) -> String {
        let kind = if self.echo {
            "an echo route"
        } else {
            "a relay route"
        };
        let compressed = if self.compressed {
            " with [routes.compression]"
        } else {
            ""
        };
        let http2 = if self.http2 {
            " on a listener with http2"
        } else {
            ""
        };
        format!("{kind}{}{compressed}{http2}", self.admit.describe())
    }
}

/// Whether a section's clients offer compression (and a relay's upstream accepts it).
pub fn compresses(section: Section) -> bool {
    matches!(
        section,
        Section::Compressed | Section::CompressedIdle | Section::CompressedIdleNoTakeover
    )
}

/// Streams one HTTP/2 connection may carry in the HTTP/2 phase (`[http2]
/// max_concurrent_streams`): the idle streams share connections of up to this many.
pub const H2_STREAMS_PER_CONNECTION: usize = 1000;

/// Limits far above what the benchmark reaches: what is measured is the cost of counting.
const UNREACHED_LIMITS: &str = "[policies.limits.limits]\n\
     handshakes_per_ip = { per_second = 1000000, burst = 1000000 }\n\
     connections_per_ip = 1000000\nconnections_per_route = 1000000\n";

/// The ports of the benchmark's own servers behind the proxies.
pub struct Backends {
    pub upstream_port: u16,
    /// The compressing upstream echo (`upstream-deflate-echo`), for the compression sections;
    /// 0 when they do not run.
    pub deflate_upstream_port: u16,
    pub identity_port: u16,
}

/// The peers' binaries, where they are installed and asked for.
pub struct Peers {
    pub nginx: Option<PathBuf>,
    pub haproxy: Option<PathBuf>,
}

/// Everything needed to start servers.
pub struct Env {
    pub dir: PathBuf,
    pub material: Material,
    pub client_tls: Arc<rustls::ClientConfig>,
    /// The shared upstream echo server's port.
    pub upstream_port: u16,
    /// The compressing upstream echo's (see [`Backends`]).
    pub deflate_upstream_port: u16,
    /// The authorizer and introspection endpoint's port (`identity-server`).
    pub identity_port: u16,
    pub nofile: u64,
    /// Worker processes or threads of every proxy (`--workers`).
    pub workers: usize,
    pub nginx: Option<PathBuf>,
    pub haproxy: Option<PathBuf>,
    /// The port of the benchmark's redis-server (the cluster section), if there is one.
    pub redis: Option<u16>,
    /// The ports of the benchmark's Redis Cluster nodes (the `_rc` section), if there is one.
    pub redis_cluster: Vec<u16>,
    /// The Portcullis binary for each configuration it was found to accept.
    pub portcullis: Vec<(PortcullisRoute, PathBuf)>,
    /// `--baseline`: the routes it accepts, with its path.
    pub baseline: Vec<(PortcullisRoute, PathBuf)>,
    instances: std::cell::Cell<u32>,
}

impl Env {
    /// The Portcullis binaries are found afterwards (see [`accepts`]).
    pub fn new(
        dir: PathBuf,
        material: Material,
        client_tls: Arc<rustls::ClientConfig>,
        backends: Backends,
        nofile: u64,
        workers: usize,
        peers: Peers,
    ) -> Env {
        Env {
            dir,
            material,
            client_tls,
            upstream_port: backends.upstream_port,
            deflate_upstream_port: backends.deflate_upstream_port,
            identity_port: backends.identity_port,
            nofile,
            workers,
            nginx: peers.nginx,
            haproxy: peers.haproxy,
            redis: None,
            redis_cluster: Vec::new(),
            portcullis: Vec::new(),
            baseline: Vec::new(),
            instances: std::cell::Cell::new(0),
        }
    }

    pub fn portcullis_for(&self, route: PortcullisRoute) -> Option<&Path> {
        Self::find(&self.portcullis, route)
    }

    /// The binary that serves `route` for `subject` (the baseline's own for [`Subject::Baseline`]).
    pub fn binary_for(&self, subject: Subject, route: PortcullisRoute) -> Option<&Path> {
        match subject {
            Subject::Baseline => Self::find(&self.baseline, route),
            _ => self.portcullis_for(route),
        }
    }

    /// The route `subject` serves `section` on: the HTTP/2 phase's falls back to the plain
    /// route when no binary of the subject accepts `http2` (its HTTP/1.1 figures only).
    pub fn route(&self, subject: Subject, section: Section) -> PortcullisRoute {
        let route = PortcullisRoute::of(subject, section);
        if route.http2 && self.binary_for(subject, route).is_none() {
            PortcullisRoute {
                http2: false,
                ..route
            }
        } else {
            route
        }
    }

    fn find(list: &[(PortcullisRoute, PathBuf)], route: PortcullisRoute) -> Option<&Path> {
        list.iter()
            .find(|(r, _)| *r == route)
            .map(|(_, p)| p.as_path())
    }

    /// A fresh folder for one server instance.
    fn instance_dir(&self, name: &str) -> Result<PathBuf, String> {
        let n = self.instances.get() + 1;
        self.instances.set(n);
        let dir = self.dir.join(format!("{n:03}-{name}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(dir)
    }

    /// Start a fresh instance of `subject` for `section` (with the policy it measures), ready
    /// for clients.
    pub fn start(&self, subject: Subject, section: Section) -> Result<(Proc, Target), String> {
        let dir = self.instance_dir(subject.key())?;
        let port = free_port()?;
        let (name, cmd) = match subject {
            Subject::Portcullis | Subject::PortcullisEcho | Subject::Baseline => {
                let route = self.route(subject, section);
                let bin = self
                    .binary_for(subject, route)
                    .ok_or_else(|| format!("no Portcullis binary accepts {}", route.describe()))?;
                let config = dir.join("portcullis.toml");
                write(&config, &self.portcullis_config(route, port))?;
                let mut cmd = Command::new(bin);
                cmd.arg("--config").arg(&config).current_dir(&dir);
                // Warnings only: no access log line per session (NGINX and HAProxy log nothing
                // either).
                cmd.env("RUST_LOG", "warn");
                ("portcullis", cmd)
            }
            Subject::Nginx => {
                let bin = self.nginx.as_ref().ok_or("nginx is not installed")?;
                let config = dir.join("nginx.conf");
                write(
                    &config,
                    &self.nginx_config(&dir, port, self.upstream_for(section)),
                )?;
                let mut cmd = Command::new(bin);
                cmd.arg("-p")
                    .arg(&dir)
                    .arg("-c")
                    .arg(&config)
                    .arg("-e")
                    .arg(dir.join("error.log"));
                ("nginx", cmd)
            }
            Subject::Haproxy => {
                let bin = self.haproxy.as_ref().ok_or("haproxy is not installed")?;
                let config = dir.join("haproxy.cfg");
                write(&config, &self.haproxy_config(port))?;
                let mut cmd = Command::new(bin);
                cmd.arg("-db").arg("-f").arg(&config);
                ("haproxy", cmd)
            }
            Subject::UpstreamDirect => ("upstream-echo", upstream_command(port)?),
        };
        let mut proc = Proc::spawn(name, cmd, &dir.join("server.log"))?;
        proc.wait_listening(port, START)?;
        let token = match Admit::of(section) {
            Admit::Public => None,
            Admit::Jwt => Some(self.material.token.clone()),
            Admit::AuthzHit | Admit::AuthzMiss | Admit::Introspection => {
                Some(crate::identity::TOKEN.to_string())
            }
            Admit::LocalLimits
            | Admit::ClusterLimits
            | Admit::RedisClusterLimits
            | Admit::RoundRobin3
            | Admit::Hash3
            | Admit::Traced => None,
        };
        let target = Target {
            port,
            tls: (subject != Subject::UpstreamDirect).then(|| self.client_tls.clone()),
            path: PATH.to_string(),
            token,
            unique_tokens: (Admit::of(section) == Admit::AuthzMiss)
                .then(|| Arc::new(std::sync::atomic::AtomicU64::new(0))),
        };
        Ok((proc, target))
    }

    /// The upstream a relay uses in `section`: the compressing echo where the clients offer
    /// compression, the plain one elsewhere.
    fn upstream_for(&self, section: Section) -> u16 {
        if compresses(section) {
            self.deflate_upstream_port
        } else {
            self.upstream_port
        }
    }

    /// A Portcullis configuration; every key in it is known to both the relay and the
    /// admission builds (but for the compressed route's `[routes.compression]`).
    pub fn portcullis_config(&self, route: PortcullisRoute, port: u16) -> String {
        let m = &self.material;
        let up = if route.compressed {
            self.deflate_upstream_port
        } else {
            self.upstream_port
        };
        let workers = self.workers;
        let mut text = format!(
            "[server]\nthreads = {workers}\nshutdown_grace = \"1s\"\n\n\
             [admin]\nenabled = false\n\n\
             [[listeners]]\naddress = \"127.0.0.1:{port}\"\n\n\
             [listeners.tls]\ncert = {}\nkey = {}\n{}\n\
             [[routes]]\npath = \"{PATH}\"\n",
            toml_str(&m.cert),
            toml_str(&m.key),
            if route.http2 { "http2 = true\n" } else { "" },
        );
        if route.echo {
            text.push_str("mode = \"echo\"\nprefix = \"\"\n");
        } else {
            // No pings: NGINX and HAProxy send none either, and the idle phase's clients do not
            // read, so they would not answer them.
            let upstreams = match route.admit {
                // Three URLs of the one echo server: three upstreams to choose among.
                Admit::RoundRobin3 | Admit::Hash3 => (1..=3)
                    .map(|i| format!("\"ws://127.0.0.1:{up}{PATH}/{i}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => format!("\"ws://127.0.0.1:{up}{PATH}\""),
            };
            text.push_str(&format!(
                "mode = \"relay\"\nupstreams = [{upstreams}]\nping_interval = \"0s\"\n"
            ));
            if route.admit == Admit::Hash3 {
                text.push_str("balance = \"hash\"\nhash_key = \"client_ip\"\n");
            }
        }
        // The authorizer's and the endpoint's timeouts are generous: 50 handshakes at a time on
        // two shared cores must not time out, since an error is not a figure.
        let id = self.identity_port;
        match route.admit {
            Admit::Public => {}
            Admit::Jwt => text.push_str(&format!(
                "policy = \"jwt\"\n\n[policies.jwt.jwt]\nsources = [\"header\"]\n\
                 keys = [{{ alg = \"ES256\", pem_file = {} }}]\n",
                toml_str(&m.jwt_public)
            )),
            Admit::AuthzHit | Admit::AuthzMiss => text.push_str(&format!(
                "policy = \"authz\"\n\n[policies.authz.ext_authz]\n\
                 url = \"http://127.0.0.1:{id}{}\"\ntimeout = \"2s\"\ncache_ttl = \"1h\"\n\
                 copy_headers = [\"x-user\"]\n",
                crate::identity::AUTHZ_PATH
            )),
            Admit::Introspection => text.push_str(&format!(
                "policy = \"intro\"\n\n[policies.intro.introspection]\n\
                 url = \"http://127.0.0.1:{id}{}\"\ntimeout = \"2s\"\nsources = [\"header\"]\n\
                 client_id = \"bench\"\nclient_secret_file = {}\n\
                 [policies.intro.introspection.claims]\nscope = \"bench\"\n",
                crate::identity::INTROSPECT_PATH,
                toml_str(&m.client_secret)
            )),
            Admit::LocalLimits | Admit::ClusterLimits | Admit::RedisClusterLimits => {
                text.push_str(&format!("policy = \"limits\"\n\n{UNREACHED_LIMITS}"))
            }
            Admit::RoundRobin3 | Admit::Hash3 => {}
            Admit::Traced => text.push_str(&format!(
                "\n[tracing]\nendpoint = \"http://127.0.0.1:{id}{}\"\nsample_ratio = 1.0\n",
                crate::identity::TRACES_PATH
            )),
        }
        if route.admit == Admit::ClusterLimits {
            // A prefix per instance: each starts with empty counts. Without a redis-server the
            // section is skipped; the URL still lets `--check` judge the configuration.
            let redis = self.redis.unwrap_or(6379);
            let n = self.instances.get();
            text.push_str(&format!(
                "\n[cluster]\nredis_url = \"redis://127.0.0.1:{redis}\"\nkey_prefix = \"bench{n}:\"\n"
            ));
        }
        if route.compressed {
            // The defaults (12-bit windows each way, context takeover), named: the route's last
            // table, since the compressed route has no policy.
            text.push_str("\n[routes.compression]\nenabled = true\n");
        }
        if route.http2 {
            // Room for the idle streams on few connections; the other bounds are the defaults.
            text.push_str(&format!(
                "\n[http2]\nmax_concurrent_streams = {H2_STREAMS_PER_CONNECTION}\n"
            ));
        }
        if route.admit == Admit::RedisClusterLimits {
            // Every node, though one would do (the client learns the others and the slots).
            // Without a Redis Cluster the section is skipped; `--check` connects to none.
            let ports = match self.redis_cluster.as_slice() {
                [] => vec![7000, 7001, 7002],
                ports => ports.to_vec(),
            };
            let nodes: Vec<String> = ports
                .iter()
                .map(|p| format!("\"redis://127.0.0.1:{p}\""))
                .collect();
            let n = self.instances.get();
            text.push_str(&format!(
                "\n[cluster]\ncluster_nodes = [{}]\nkey_prefix = \"bench{n}:\"\n",
                nodes.join(", ")
            ));
        }
        text
    }

    fn nginx_config(&self, dir: &Path, port: u16, up: u16) -> String {
        let m = &self.material;
        let (nofile, workers) = (self.nofile, self.workers);
        // Each relayed socket holds two connections (client and upstream) in one worker.
        let worker_connections = nofile.saturating_sub(64).max(1024);
        let tmp = dir.display();
        format!(
            "daemon off;\nmaster_process on;\nworker_processes {workers};\n\
             worker_rlimit_nofile {nofile};\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log warn;\n\n\
             events {{\n    worker_connections {worker_connections};\n}}\n\n\
             http {{\n    access_log off;\n\
             \x20   client_body_temp_path {tmp}/client_body;\n    proxy_temp_path {tmp}/proxy;\n\
             \x20   fastcgi_temp_path {tmp}/fastcgi;\n    uwsgi_temp_path {tmp}/uwsgi;\n\
             \x20   scgi_temp_path {tmp}/scgi;\n\n\
             \x20   upstream echo {{\n        server 127.0.0.1:{up};\n    }}\n\n\
             \x20   server {{\n        listen 127.0.0.1:{port} ssl;\n\
             \x20       ssl_certificate {};\n        ssl_certificate_key {};\n\
             \x20       ssl_protocols TLSv1.3;\n\n\
             \x20       location / {{\n            proxy_pass http://echo;\n\
             \x20           proxy_http_version 1.1;\n\
             \x20           proxy_set_header Upgrade $http_upgrade;\n\
             \x20           proxy_set_header Connection \"upgrade\";\n\
             \x20           proxy_set_header Host $host;\n\
             \x20           proxy_read_timeout 1h;\n            proxy_send_timeout 1h;\n\
             \x20       }}\n    }}\n}}\n",
            m.cert.display(),
            m.key.display(),
        )
    }

    fn haproxy_config(&self, port: u16) -> String {
        let (up, workers) = (self.upstream_port, self.workers);
        // HAProxy needs two descriptors per relayed socket plus a few of its own. The frontend
        // gets the same cap as the process (`defaults`), so that only the descriptors limit it.
        let maxconn = haproxy_maxconn(self.nofile);
        format!(
            "global\n    nbthread {workers}\n    maxconn {maxconn}\n\
             \x20   ssl-default-bind-options ssl-min-ver TLSv1.3\n\n\
             defaults\n    mode http\n    maxconn {maxconn}\n    timeout connect 5s\n    timeout client 1h\n\
             \x20   timeout server 1h\n    timeout tunnel 1h\n\n\
             frontend wss\n    bind 127.0.0.1:{port} ssl crt {}\n    default_backend echo\n\n\
             backend echo\n    server up 127.0.0.1:{up}\n",
            self.material.combined.display()
        )
    }
}

/// HAProxy's `maxconn` for an open-file limit of `nofile`: relayed connections it may hold.
pub fn haproxy_maxconn(nofile: u64) -> u64 {
    (nofile.saturating_sub(500) / 2).max(256)
}

/// The benchmark itself as the upstream echo server on `port`.
pub fn upstream_command(port: u16) -> Result<Command, String> {
    own_command("upstream-echo", port, HELPER_THREADS)
}

/// The benchmark itself as the compressing upstream echo server on `port`.
pub fn deflate_upstream_command(port: u16) -> Result<Command, String> {
    own_command("upstream-deflate-echo", port, HELPER_THREADS)
}

/// The benchmark itself as the authorizer and introspection endpoint on `port` (one thread:
/// a small service that answers at once).
pub fn identity_command(port: u16) -> Result<Command, String> {
    own_command("identity-server", port, 1)
}

fn own_command(role: &str, port: u16, threads: usize) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args([
        role,
        "--port",
        &port.to_string(),
        "--threads",
        &threads.to_string(),
    ]);
    Ok(cmd)
}

/// Whether `bin --check` accepts the configuration for `route` (a build may lack relay routes
/// or some kind of policy). Bounded in time.
pub fn accepts(env: &Env, bin: &Path, route: PortcullisRoute) -> Result<bool, String> {
    let dir = env.instance_dir("check")?;
    let config = dir.join("portcullis.toml");
    write(&config, &env.portcullis_config(route, free_port()?))?;
    let mut cmd = Command::new(bin);
    cmd.arg("--check").arg("--config").arg(&config);
    let mut proc = Proc::spawn("portcullis --check", cmd, &dir.join("check.log"))?;
    let deadline = std::time::Instant::now() + START;
    loop {
        if let Some(status) = proc.exited()? {
            return Ok(status.success());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("{} --check did not finish", bin.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A path as a TOML basic string.
fn toml_str(path: &Path) -> String {
    let s = path.display().to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
