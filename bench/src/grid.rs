//! The two axes of a run: what serves the clients ([`Subject`]) and what is measured on it
//! ([`Section`]). Every figure belongs to one cell of that grid; the servers, the phases and the
//! report all speak of both, so both live here, below all of them.

/// What serves the clients in one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    /// Portcullis with a relay route to the upstream.
    Portcullis,
    Nginx,
    Haproxy,
    /// Portcullis answering itself (`mode = "echo"`, `prefix = ""`), over wss.
    PortcullisEcho,
    /// The upstream echo server reached directly, over plain ws.
    UpstreamDirect,
    /// Another Portcullis build (`--baseline PATH`) with the same relay route, for before/after
    /// comparisons in one run.
    Baseline,
}

impl Subject {
    pub const ALL: [Subject; 6] = [
        Subject::Portcullis,
        Subject::Baseline,
        Subject::Nginx,
        Subject::Haproxy,
        Subject::PortcullisEcho,
        Subject::UpstreamDirect,
    ];

    /// The key in the JSON output.
    pub fn key(self) -> &'static str {
        match self {
            Subject::Portcullis => "portcullis",
            Subject::Nginx => "nginx",
            Subject::Haproxy => "haproxy",
            Subject::PortcullisEcho => "portcullis_echo",
            Subject::UpstreamDirect => "upstream_direct",
            Subject::Baseline => "portcullis_baseline",
        }
    }

    /// The `--only` name that selects it.
    pub fn only_name(self) -> &'static str {
        match self {
            Subject::Nginx => "nginx",
            Subject::Haproxy => "haproxy",
            _ => "portcullis",
        }
    }

    /// Portcullis serves it (so it has the admission variants: JWT, ext_authz, introspection).
    pub fn is_portcullis(self) -> bool {
        matches!(
            self,
            Subject::Portcullis | Subject::PortcullisEcho | Subject::Baseline
        )
    }
}

/// The phases, each a section of a subject's results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    /// Closed-loop message load.
    Load,
    /// Idle connections held.
    Idle,
    /// Handshakes (TLS + upgrade, and the upstream's handshake behind a relay).
    Handshake,
    /// The same with a JWT to verify (Portcullis only).
    HandshakeJwt,
    /// With an external authorizer whose cached decision admits (Portcullis only).
    HandshakeAuthzHit,
    /// With an external authorizer asked for every handshake (a new token each: cache misses).
    HandshakeAuthzMiss,
    /// With an opaque token introspected for every handshake.
    HandshakeIntrospection,
    /// Plain handshakes under a policy with a per-IP handshake rate and per-IP and per-route
    /// connection caps, counted by this process (none of them is reached).
    HandshakeLimits,
    /// The same limits counted across replicas through Redis (`[cluster]`).
    HandshakeCluster,
    /// The same limits through a Redis Cluster of three primaries (`cluster_nodes`).
    HandshakeClusterRc,
    /// The closed-loop load at one message size of `--sizes` (bytes).
    Sweep(usize),
    /// Retention: RSS before, at the peak of and after a burst of connections (`--burst`).
    Burst,
    /// A large number of connections held, and the handshake rate at that size (`--hold-*`).
    Hold,
    /// `--balance`: relay handshakes over three upstreams by round robin...
    BalanceRoundRobin,
    /// ... and by `balance = "hash"` of the client address (Portcullis's relay only).
    BalanceHash,
    /// `--tracing`: relay handshakes without `[tracing]`...
    TracesOff,
    /// ... and with it, every handshake and session recorded (ratio 1.0) and exported to the
    /// benchmark's sink collector (Portcullis's relay only).
    TracesOn,
    /// `--compression`: closed-loop load of the JSON chat corpus, the client offering
    /// permessage-deflate as a browser does (a relay's upstream compressing too).
    Compressed,
    /// The same corpus with nothing offered (a relay's upstream plain): the reference.
    Uncompressed,
    /// Idle compressed sockets with context takeover, quiet after a few messages.
    CompressedIdle,
    /// The same without context takeover (either way).
    CompressedIdleNoTakeover,
    /// `--http2`: on one Portcullis process, new `wss` connections against new WebSocket
    /// streams on an open HTTP/2 connection (RFC 8441), the marginal memory of an idle stream on
    /// shared connections, and messages over `wss` connections against streams of one
    /// connection. A build that does not serve HTTP/2 gives the HTTP/1.1 figures only.
    Http2,
}

impl Section {
    /// The sections every run has (the opt-in ones come after them, in `report::RunInfo::extra`).
    pub const ALL: [Section; 10] = [
        Section::Load,
        Section::Idle,
        Section::Handshake,
        Section::HandshakeJwt,
        Section::HandshakeAuthzHit,
        Section::HandshakeAuthzMiss,
        Section::HandshakeIntrospection,
        Section::HandshakeLimits,
        Section::HandshakeCluster,
        Section::HandshakeClusterRc,
    ];

    /// The handshake sections only Portcullis has (it checks a credential or counts limits
    /// before its 101).
    pub const PORTCULLIS_ONLY: [Section; 7] = [
        Section::HandshakeJwt,
        Section::HandshakeAuthzHit,
        Section::HandshakeAuthzMiss,
        Section::HandshakeIntrospection,
        Section::HandshakeLimits,
        Section::HandshakeCluster,
        Section::HandshakeClusterRc,
    ];

    /// The sections of `--compression`, in the order they run.
    pub const COMPRESSION: [Section; 4] = [
        Section::Compressed,
        Section::Uncompressed,
        Section::CompressedIdle,
        Section::CompressedIdleNoTakeover,
    ];

    pub fn portcullis_only(self) -> bool {
        Self::PORTCULLIS_ONLY.contains(&self)
    }

    /// The key in the JSON output (`sweep.<size>` for a size of the sweep, as in the ratios).
    pub fn key(self) -> String {
        match self {
            Section::Load => "load",
            Section::Idle => "idle",
            Section::Handshake => "handshake",
            Section::HandshakeJwt => "handshake_jwt",
            Section::HandshakeAuthzHit => "handshake_authz_hit",
            Section::HandshakeAuthzMiss => "handshake_authz_miss",
            Section::HandshakeIntrospection => "handshake_introspection",
            Section::HandshakeLimits => "handshake_limits",
            Section::HandshakeCluster => "handshake_cluster",
            Section::HandshakeClusterRc => "handshake_cluster_rc",
            Section::Sweep(size) => return format!("sweep.{size}"),
            Section::Burst => "burst",
            Section::Hold => "hold",
            Section::BalanceRoundRobin => "balance_round_robin",
            Section::BalanceHash => "balance_hash",
            Section::TracesOff => "traces_off",
            Section::TracesOn => "traces_on",
            Section::Compressed => "compression",
            Section::Uncompressed => "compression_plain",
            Section::CompressedIdle => "compression_idle",
            Section::CompressedIdleNoTakeover => "compression_idle_no_takeover",
            Section::Http2 => "http2",
        }
        .to_string()
    }

    /// Every figure the section reports.
    pub fn figures(self) -> &'static [&'static str] {
        match self {
            Section::Load | Section::Sweep(_) => &[
                "messages_per_second",
                "latency_p50_us",
                "latency_p99_us",
                "cpu_us_per_message",
            ],
            Section::Compressed | Section::Uncompressed => &[
                "messages_per_second",
                "latency_p50_us",
                "latency_p99_us",
                "cpu_us_per_message",
                "wire_bytes_per_message",
                "plain_bytes_per_message",
            ],
            Section::Idle | Section::CompressedIdle | Section::CompressedIdleNoTakeover => {
                &["connections", "rss_bytes_per_connection"]
            }
            Section::Burst => &[
                "connections",
                "rss_pre_burst_bytes",
                "rss_peak_bytes",
                "rss_after_5s_bytes",
                "rss_end_bytes",
                "secs_to_within_25pct",
            ],
            Section::Hold => &[
                "connections",
                "rss_bytes",
                "rss_bytes_per_connection",
                "handshakes_per_second",
                "cpu_us_per_handshake",
                "errors",
            ],
            Section::Handshake
            | Section::HandshakeJwt
            | Section::HandshakeAuthzHit
            | Section::HandshakeAuthzMiss
            | Section::HandshakeIntrospection
            | Section::HandshakeLimits
            | Section::HandshakeCluster
            | Section::HandshakeClusterRc
            | Section::BalanceRoundRobin
            | Section::BalanceHash
            | Section::TracesOff
            | Section::TracesOn => &["handshakes_per_second", "cpu_us_per_handshake", "errors"],
            Section::Http2 => &[
                "wss_handshakes_per_second",
                "wss_cpu_us_per_handshake",
                "h2_handshakes_per_second",
                "h2_cpu_us_per_handshake",
                "h1_messages_per_second",
                "h1_cpu_us_per_message",
                "h2_messages_per_second",
                "h2_cpu_us_per_message",
                "idle_streams",
                "h2_rss_bytes_per_idle_stream",
                "errors",
            ],
        }
    }

    /// What a subject of this section is compared with: the same section, except that
    /// handshakes with a credential are compared with the other side's plain handshakes.
    pub fn reference(self) -> Section {
        if self.portcullis_only() {
            Section::Handshake
        } else {
            self
        }
    }

    /// Whether its figures are put side by side in ratios. A burst's are not: each server is
    /// judged against its own figure before the burst.
    pub fn compared(self) -> bool {
        !matches!(
            self,
            Section::Burst
                | Section::BalanceRoundRobin
                | Section::BalanceHash
                | Section::TracesOff
                | Section::TracesOn
        )
    }
}
