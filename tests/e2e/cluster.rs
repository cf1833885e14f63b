//! Cluster mode: two real gateway processes sharing one real Redis. Caps and rates hold across
//! both; slots come back when sockets end, and after `lease_ttl` when a replica dies; with Redis
//! gone, `on_error` decides (open: local limits, closed: 503), and once it returns, empty, the
//! replicas refill it and count together again.

use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::support::*;
use crate::tokens::*;

/// Short leases, so that a dead replica's slots expire within a test step.
const LEASE_TTL_SECS: u64 = 4;
/// A generous call timeout: on a loaded machine a timed-out call would be decided locally, by
/// design, and so could admit more than a shared cap.
const TIMEOUT_MS: u64 = 500;

/// The cluster tests' routes and policies, sharing the Redis at `url` with leases of
/// `lease_ttl_secs` and calls of at most `timeout_ms` in all per handshake.
fn cluster_config_with(url: &str, lease_ttl_secs: u64, timeout_ms: u64) -> String {
    format!(
        "[cluster]\nredis_url = \"{url}\"\nkey_prefix = \"test:\"\nlease_ttl = \"{lease_ttl_secs}s\"\n\
         timeout = \"{timeout_ms}ms\"\n\
         [[routes]]\npath = \"/ws/capped\"\nmode = \"echo\"\npolicy = \"capped\"\n\
         [policies.capped.jwt]\nkeys = [{{ alg = \"ES256\", pem_file = \"keys/ec.pub.pem\" }}]\n\
         [policies.capped.limits]\nconnections_per_subject = 3\n\
         [[routes]]\npath = \"/ws/rated\"\nmode = \"echo\"\npolicy = \"rated\"\n\
         [policies.rated.limits]\nhandshakes_per_ip = {{ per_minute = 6, burst = 4 }}\n\
         [[routes]]\npath = \"/ws/strict\"\nmode = \"echo\"\npolicy = \"strict\"\n\
         [policies.strict.jwt]\nkeys = [{{ alg = \"ES256\", pem_file = \"keys/ec.pub.pem\" }}]\n\
         [policies.strict.limits]\nconnections_per_subject = 3\n\
         [policies.strict.cluster]\non_error = \"closed\"\n\
         [[routes]]\npath = \"/ws/three\"\nmode = \"echo\"\npolicy = \"three\"\n\
         [policies.three.jwt]\nkeys = [{{ alg = \"ES256\", pem_file = \"keys/ec.pub.pem\" }}]\n\
         [policies.three.limits]\nhandshakes_per_ip = {{ per_second = 100, burst = 100 }}\n\
         handshakes_per_subject = {{ per_second = 100, burst = 100 }}\nconnections_per_subject = 100\n",
    )
}

fn cluster_config(redis: &Redis) -> String {
    cluster_config_with(&redis.url(), LEASE_TTL_SECS, TIMEOUT_MS)
}

/// The fallback counts in a replica's metrics.
async fn fallbacks(gw: &Gateway) -> Vec<String> {
    let scrape = gw.admin_get("/metrics").await;
    scrape
        .lines()
        .filter(|l| l.starts_with("portcullis_cluster_fallbacks_total{"))
        .map(String::from)
        .collect()
}

/// Two replicas sharing `redis`.
async fn replicas(redis: &Redis) -> (Gateway, Gateway) {
    let config = cluster_config(redis);
    (replica(&config).await, replica(&config).await)
}

/// One replica with `config`, connected to its Redis.
async fn replica(config: &str) -> Gateway {
    let gw = Gateway::start_prepared(true, config, write_keys).await;
    gw.wait_log("cluster: connected to").await;
    gw
}

fn bearer(subject: &str) -> String {
    let token = sign(Algorithm::ES256, None, &claims(json!({ "sub": subject })));
    format!("Authorization: Bearer {token}\r\n")
}

/// Handshakes on `path` as `subject`, spread over `gateways` in turn, all at once: the open
/// connections of those that got a 101, and the statuses of the others.
async fn spread(
    gateways: &[&Gateway],
    path: &str,
    subject: &str,
    n: usize,
) -> (
    Vec<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Vec<u16>,
) {
    let auth = bearer(subject);
    let attempts = futures_util::future::join_all(
        (0..n).map(|i| gateways[i % gateways.len()].handshake_open(path, &auth)),
    )
    .await;
    let mut open = Vec::new();
    let mut refused = Vec::new();
    for (status, head, tls) in attempts {
        match status {
            101 => open.push(tls),
            other => {
                assert!(
                    head.contains("too many connections for this subject"),
                    "{head}"
                );
                refused.push(other);
            }
        }
    }
    (open, refused)
}

/// How many of `n` handshakes (one at a time) `gw` admits; the admitted stay open in `keep`.
async fn admitted(
    gw: &Gateway,
    path: &str,
    subject: &str,
    n: usize,
    keep: &mut Vec<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
) -> usize {
    let mut count = 0;
    for _ in 0..n {
        let (status, _, tls) = gw.handshake_open(path, &bearer(subject)).await;
        if status == 101 {
            count += 1;
            keep.push(tls);
        }
    }
    count
}

#[tokio::test]
async fn caps_and_rates_hold_across_two_replicas() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    // Leases of a minute: slots that come back within a test step were given back, not
    // expired.
    let config = cluster_config_with(&redis.url(), 60, TIMEOUT_MS);
    let (a, b) = (replica(&config).await, replica(&config).await);
    // A per-subject cap of 3 under 20 parallel handshakes over both replicas: exactly 3.
    // (A generous call timeout: on a loaded machine a timed-out call would be decided locally,
    // by design, and so could admit more than the shared cap.)
    let (open, refused) = spread(&[&a, &b], "/ws/capped", "alice", 20).await;
    assert_eq!(
        (open.len(), refused.len()),
        (3, 17),
        "{refused:?}; fallbacks: {:?} {:?}",
        fallbacks(&a).await,
        fallbacks(&b).await
    );
    assert!(refused.iter().all(|s| *s == 429), "{refused:?}");
    assert_eq!(
        redis.cli(&["ZCARD", "test:conn:capped:sub:alice"]).await,
        "3"
    );
    // Another subject is not affected.
    let (others, _) = spread(&[&a, &b], "/ws/capped", "bob", 2).await;
    assert_eq!(others.len(), 2);
    // Closing the sockets frees the slots on both replicas, long before they could expire.
    drop(open);
    let closed = Instant::now();
    eventually(STEP, "alice's slots released in Redis", || async {
        let n = redis.cli(&["ZCARD", "test:conn:capped:sub:alice"]).await;
        done_or(n == "0", n)
    })
    .await;
    assert!(closed.elapsed() < Duration::from_secs(60) / 4);
    let (again, _) = spread(&[&a, &b], "/ws/capped", "alice", 6).await;
    assert_eq!(again.len(), 3);
    a.wait_metric("portcullis_cluster_connected 1").await;

    // A per-IP handshake rate (burst 4) across both: 2 + 2 admitted, the fifth refused on
    // either replica, with Retry-After.
    for gw in [&a, &b, &a, &b] {
        assert_eq!(gw.try_handshake("/ws/rated", "").await.0, 101);
    }
    for gw in [&a, &b] {
        let (status, head) = gw.try_handshake("/ws/rated", "").await;
        assert_eq!(status, 429, "{head}");
        assert!(head.contains("Retry-After: "), "{head}");
    }
    // Decided in Redis, not as a fallback.
    let scrape = a.admin_get("/metrics").await;
    assert!(
        scrape.contains("portcullis_cluster_fallbacks_total{result=\"local\"} 0"),
        "{scrape}"
    );

    // A reload with [cluster] unchanged keeps the connection (and the counts): no new
    // connection, and alice is still at her cap.
    a.signal("HUP");
    a.wait_log("reload: configuration from").await;
    let (status, _) = a.try_handshake("/ws/capped", &bearer("alice")).await;
    assert_eq!(status, 429);
    let log = a.log();
    assert_eq!(log.matches("cluster: connected to").count(), 1, "{log}");
    assert_eq!(log.matches("cluster: replica ").count(), 1, "{log}");
}

#[tokio::test]
async fn a_killed_replica_frees_its_slots_after_the_lease_ttl() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let (mut a, b) = replicas(&redis).await;
    let mut keep_a = Vec::new();
    assert_eq!(admitted(&a, "/ws/capped", "carol", 3, &mut keep_a).await, 3);
    let mut keep_b = Vec::new();
    assert_eq!(admitted(&b, "/ws/capped", "carol", 1, &mut keep_b).await, 0);
    // kill -9: no release, no renewal. Its slots expire within lease_ttl of its last renewal,
    // which was before the kill (and B's own renewals do not keep them). How soon within it
    // depends on that renewal, which a busy machine delays: only the upper bound is asserted.
    let killed = Instant::now();
    a.signal("KILL");
    a.wait_killed(libc::SIGKILL, STEP).await;
    drop(keep_a);
    let bound = Duration::from_secs(LEASE_TTL_SECS) + Duration::from_secs(2);
    let _carol = eventually(
        bound.saturating_sub(killed.elapsed()),
        "carol admitted on B once A's leases expired",
        || async {
            let (status, _, tls) = b.handshake_open("/ws/capped", &bearer("carol")).await;
            done_or(
                status == 101,
                format!("{:?} after the kill", killed.elapsed()),
            )
            .map(|()| tls)
        },
    )
    .await;
    assert!(killed.elapsed() <= bound, "{:?}", killed.elapsed());
}

/// The lease heartbeat: a socket held for more than twice `lease_ttl` stays counted, because
/// its replica renews it every third of the ttl. Its member never leaves Redis, its expiry
/// stays ahead of Redis's clock, and the other replica keeps refusing.
#[tokio::test]
async fn a_long_lived_socket_stays_counted_through_renewals() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let ttl = Duration::from_secs(2);
    let config = cluster_config_with(&redis.url(), ttl.as_secs(), 300);
    let (a, b) = (replica(&config).await, replica(&config).await);
    let mut keep = Vec::new();
    assert_eq!(admitted(&a, "/ws/capped", "nina", 3, &mut keep).await, 3);
    let key = "test:conn:capped:sub:nina";
    // The subject of this test is time passing: watch the set for 2.5 lease ttls.
    let held = Instant::now();
    while held.elapsed() < ttl * 5 / 2 {
        let n = redis.cli(&["ZCARD", key]).await;
        assert_eq!(n, "3", "after {:?}", held.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = redis.cli(&["TIME"]).await;
    let now: Vec<u64> = now.lines().map(|l| l.trim().parse().unwrap()).collect();
    let now_ms = now[0] * 1000 + now[1] / 1000;
    let scored = redis.cli(&["ZRANGE", key, "0", "-1", "WITHSCORES"]).await;
    let expiries: Vec<u64> = scored
        .lines()
        .skip(1)
        .step_by(2)
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(expiries.len(), 3, "{scored}");
    assert!(
        expiries.iter().all(|at| *at > now_ms),
        "expiries {expiries:?} not ahead of {now_ms}"
    );
    // Decided in Redis: B holds nothing of nina's, so only the shared count refuses her.
    let mut keep_b = Vec::new();
    assert_eq!(admitted(&b, "/ws/capped", "nina", 2, &mut keep_b).await, 0);
    let scrape = b.admin_get("/metrics").await;
    assert!(
        scrape.contains("portcullis_cluster_fallbacks_total{result=\"local\"} 0"),
        "{scrape}"
    );
}

#[tokio::test]
async fn redis_down_open_and_closed_then_refilled_and_shared_again() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let (a, b) = replicas(&redis).await;
    let mut keep = Vec::new();
    assert_eq!(admitted(&a, "/ws/strict", "dave", 1, &mut keep).await, 1);

    redis.stop().await;
    // Open (the [cluster] default): admitted under A's own cap of 3, and said so.
    assert_eq!(admitted(&a, "/ws/capped", "erin", 4, &mut keep).await, 3);
    // The access log says so (a session's line is written at its end).
    let mut frank = Vec::new();
    assert_eq!(admitted(&a, "/ws/capped", "frank", 1, &mut frank).await, 1);
    drop(frank);
    a.wait_log_line("frank's session line, marked as a fallback", |l| {
        l.contains("subject=frank") && l.contains(" cluster=local_fallback")
    })
    .await;
    let scrape = a.wait_metric("portcullis_cluster_connected 0").await;
    assert!(
        !scrape.contains("portcullis_cluster_fallbacks_total{result=\"local\"} 0"),
        "{scrape}"
    );
    // Closed (the strict policy): 503 + Retry-After, counted, logged.
    let (status, head) = b.try_handshake("/ws/strict", &bearer("dave")).await;
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("Retry-After: 1"), "{head}");
    let refused = b
        .wait_log_line("the refusal's access-log line", |l| {
            l.contains("reason=cluster_unavailable status=503")
        })
        .await;
    assert!(
        !refused.contains("cluster="),
        "nothing was decided locally: {refused}"
    );
    // /readyz: degraded but ready (the [cluster] on_error is open).
    let (status, body) = a.admin_request("/readyz", "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("cluster degraded"), "{body}");

    // Redis returns, empty: A's renewals refill it with its 3 (fallback) sockets for erin and
    // dave's one, and counting is shared again: B admits no erin.
    redis.restart().await;
    eventually(STEP, "Redis refilled by A's renewals", || async {
        let erin = redis.cli(&["ZCARD", "test:conn:capped:sub:erin"]).await;
        let dave = redis.cli(&["ZCARD", "test:conn:strict:sub:dave"]).await;
        done_or(
            erin == "3" && dave == "1",
            format!("erin {erin}, dave {dave}"),
        )
    })
    .await;
    for gw in [&a, &b] {
        eventually(STEP, "ready without degradation", || async {
            let (status, body) = gw.admin_request("/readyz", "").await;
            done_or(status == 200 && body == "ready\n", body)
        })
        .await;
    }
    let mut keep_b = Vec::new();
    assert_eq!(admitted(&b, "/ws/capped", "erin", 1, &mut keep_b).await, 0);
    assert_eq!(admitted(&b, "/ws/strict", "dave", 3, &mut keep_b).await, 2);
}

/// A handshake on `path` as `subject` that must get a 101: how long it took, and its stream.
async fn timed_handshake(
    gw: &Gateway,
    path: &str,
    subject: &str,
) -> (
    Duration,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) {
    let started = Instant::now();
    let (status, head, tls) = gw.handshake_open(path, &bearer(subject)).await;
    let took = started.elapsed();
    assert_eq!(status, 101, "{head}");
    (took, tls)
}

/// A Redis that accepts but does not answer (SIGSTOP): calls time out after `[cluster]
/// timeout`, and the handshakes are decided locally all the same, none waiting much longer than
/// the timeout although its policy asks Redis three times.
#[tokio::test]
async fn a_hung_redis_times_out_into_the_fallback() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let (a, _b) = replicas(&redis).await;
    redis.pause();
    let mut keep = Vec::new();
    let bound = Duration::from_millis(TIMEOUT_MS) + HANDSHAKE_MARGIN;
    for _ in 0..3 {
        let (took, tls) = timed_handshake(&a, "/ws/three", "hugo").await;
        assert!(
            took <= bound,
            "a handshake took {took:?}, more than {bound:?}"
        );
        keep.push(tls);
    }
    assert_eq!(admitted(&a, "/ws/capped", "hugo", 3, &mut keep).await, 3);
    let scrape = a.wait_metric("portcullis_cluster_connected 0").await;
    assert!(
        !scrape.contains("portcullis_cluster_errors_total{error=\"timeout\",operation=\"rate\"} 0"),
        "{scrape}"
    );
    redis.resume();
    a.wait_metric("portcullis_cluster_connected 1").await;
}

/// What a handshake may take beyond its Redis time (TLS, a token check, a loaded machine).
const HANDSHAKE_MARGIN: Duration = Duration::from_millis(1000);

/// A slow Redis whose answers all come, each within the call timeout, but later than half of
/// it: a handshake that asks three times (rate per IP, rate per subject, slots) still waits at
/// most one timeout in all. Its first call takes most of it, the second gets what is left and
/// times out, and the third is decided locally without being sent.
#[tokio::test]
async fn a_slow_redis_costs_a_handshake_one_timeout_in_all() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let pipe = Pipe::to(redis.port);
    let timeout = Duration::from_millis(1000);
    // The liveness pings are slowed down and given time: every answer is delayed by 900 ms
    // below, and a ping timing out would drop the link and change what the handshakes count.
    let config = cluster_config_with(&pipe.redis_url(), 15, 1000).replace(
        "[cluster]\n",
        "[cluster]\nliveness_interval = \"60s\"\nliveness_timeout = \"10s\"\n",
    );
    let gw = replica(&config).await;
    // Fast first: the three calls are made and counted.
    let (_, _first) = timed_handshake(&gw, "/ws/three", "ida").await;
    let scrape = gw.admin_get("/metrics").await;
    assert!(
        scrape.contains(
            "portcullis_cluster_call_duration_seconds_count{operation=\"take\",result=\"ok\"} 1"
        ),
        "{scrape}"
    );
    // Then 900 ms per answer: three answers in turn would take 2.7 s.
    pipe.set_delay(Duration::from_millis(900));
    let mut keep = Vec::new();
    for _ in 0..2 {
        let (took, tls) = timed_handshake(&gw, "/ws/three", "ida").await;
        assert!(
            took <= timeout + HANDSHAKE_MARGIN,
            "a handshake took {took:?} with a {timeout:?} timeout"
        );
        keep.push(tls);
    }
    let scrape = gw.admin_get("/metrics").await;
    // No take after the subject rate's timeout: still the first handshake's one.
    assert!(
        scrape.contains(
            "portcullis_cluster_call_duration_seconds_count{operation=\"take\",result=\"ok\"} 1"
        ),
        "{scrape}"
    );
    assert!(
        !scrape.contains(
            "portcullis_cluster_call_duration_seconds_count{operation=\"take\",result=\"error\"}"
        ),
        "{scrape}"
    );
    assert!(
        scrape.contains("portcullis_cluster_fallbacks_total{result=\"local\"} 4"),
        "two checks of each of the two handshakes decided locally:\n{scrape}"
    );
    // The connection was not dropped for a call that had only what was left of a timeout.
    assert!(
        scrape.contains("portcullis_cluster_connected 1\n"),
        "{scrape}"
    );
}

/// `rediss://`: TLS to Redis, trusting `ca_file`; caps count there as over plain TCP.
#[tokio::test]
async fn rediss_with_a_private_ca() {
    let Some(redis) = Redis::start_tls().await else {
        return;
    };
    let config = format!(
        "[cluster]\nredis_url = \"{}\"\nca_file = \"redis-ca.pem\"\nkey_prefix = \"tls:\"\ntimeout = \"500ms\"\n\
         [[routes]]\npath = \"/ws/one\"\nmode = \"echo\"\npolicy = \"one\"\n\
         [policies.one.limits]\nconnections_per_route = 1\n",
        redis.url()
    );
    let ca = redis.ca_pem();
    let gw = Gateway::start_prepared(true, &config, |dir| {
        std::fs::write(dir.join("redis-ca.pem"), &ca).unwrap();
    })
    .await;
    gw.wait_log("cluster: connected to rediss://").await;
    let (status, _, _first) = gw.handshake_open("/ws/one", "").await;
    assert_eq!(status, 101);
    assert_eq!(redis.cli(&["ZCARD", "tls:conn:route:/ws/one"]).await, "1");
    // Held in Redis: a second replica is refused too.
    let other = Gateway::start_prepared(true, &config, |dir| {
        std::fs::write(dir.join("redis-ca.pem"), &ca).unwrap();
    })
    .await;
    other.wait_log("cluster: connected to rediss://").await;
    assert_eq!(other.try_handshake("/ws/one", "").await.0, 429);
}

/// `/readyz` of `gw`, awaited until `done` holds for its status and body.
async fn await_readyz(gw: &Gateway, what: &str, done: impl Fn(u16, &str) -> bool) -> String {
    eventually(STEP, what, || async {
        let (status, body) = gw.admin_request("/readyz", "").await;
        done_or(done(status, &body), format!("{status} {body}")).map(|()| body)
    })
    .await
}

/// A failover demotes the Redis the replicas use (`REPLICAOF` another one): it keeps the
/// connection and answers every script with `READONLY`. A replica drops that connection, will
/// not take the demoted server for the primary when reconnecting, says `cluster degraded` and
/// decides per `on_error`; once the server is a primary again (`REPLICAOF NO ONE`) counting is
/// shared again, without a restart. An error answer that is not about the connection (out of
/// memory) leaves it connected but degraded while the calls fail.
#[tokio::test]
async fn a_redis_demoted_to_replica_is_left_until_it_is_the_primary_again() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let Some(new_primary) = Redis::start().await else {
        return;
    };
    let (a, b) = replicas(&redis).await;
    let ready = |status: u16, body: &str| status == 200 && body == "ready\n";
    await_readyz(&a, "A ready", ready).await;

    let port = new_primary.port.to_string();
    redis.cli(&["REPLICAOF", "127.0.0.1", &port]).await;
    // Open (the [cluster] default): the first call meets READONLY, the handshake is decided
    // under A's own cap; then A has no connection and says why.
    let mut keep = Vec::new();
    assert_eq!(admitted(&a, "/ws/capped", "jill", 4, &mut keep).await, 3);
    let body = await_readyz(&a, "A degraded: the server is a replica", |status, body| {
        status == 200 && body.contains("cluster degraded") && body.contains("replica")
    })
    .await;
    assert!(body.starts_with("ready; "), "{body}");
    let scrape = a.wait_metric("portcullis_cluster_connected 0").await;
    assert!(
        !scrape.contains("portcullis_cluster_errors_total{error=\"replica\",operation=\"take\"} 0"),
        "{scrape}"
    );
    assert!(
        !scrape.contains("portcullis_cluster_fallbacks_total{result=\"local\"} 0"),
        "{scrape}"
    );
    // Closed (the strict policy): 503.
    let (status, head) = a.try_handshake("/ws/strict", &bearer("jill")).await;
    assert_eq!(status, 503, "{head}");
    // It stays so: every reconnection finds a replica.
    assert!(a.log().contains("not the primary"), "{}", a.log());

    // The server is the primary again: A reconnects by itself, refills it with jill's three
    // sockets, and counting is shared: B admits no more jill.
    redis.cli(&["REPLICAOF", "NO", "ONE"]).await;
    await_readyz(&a, "A ready again", ready).await;
    eventually(STEP, "jill's sockets in Redis", || async {
        let n = redis.cli(&["ZCARD", "test:conn:capped:sub:jill"]).await;
        done_or(n == "3", n)
    })
    .await;
    let mut keep_b = Vec::new();
    assert_eq!(admitted(&b, "/ws/capped", "jill", 1, &mut keep_b).await, 0);

    // Out of memory: the server answers, but every write fails. Degraded while it lasts, and
    // three failed calls in a row (one per handshake here) drop the connection for a new one.
    redis.cli(&["CONFIG", "SET", "maxmemory", "1"]).await;
    assert_eq!(admitted(&b, "/ws/capped", "kim", 1, &mut keep_b).await, 1);
    let body = await_readyz(&b, "B degraded by failing calls", |status, body| {
        status == 200 && body.contains("cluster degraded") && body.contains("OOM")
    })
    .await;
    assert!(body.contains("1 call(s) in a row failed"), "{body}");
    assert!(!b.log().contains("calls in a row failed"), "{}", b.log());
    assert_eq!(admitted(&b, "/ws/capped", "kim", 2, &mut keep_b).await, 2);
    b.wait_log("3 calls in a row failed").await;
    // The server checks fine, so B connects again (and drops each new connection at its first
    // failure, with a growing pause between, until a call succeeds).
    eventually(STEP, "B connected anew", || async {
        let log = b.log();
        done_or(log.matches("cluster: connected to").count() >= 2, log)
    })
    .await;
    redis.cli(&["CONFIG", "SET", "maxmemory", "0"]).await;
    assert_eq!(admitted(&b, "/ws/capped", "lou", 1, &mut keep_b).await, 1);
    await_readyz(&b, "B ready once a call succeeds", ready).await;
}

/// `/readyz` follows the configuration in force: a reload that makes `[cluster] on_error`
/// "closed" makes a replica whose Redis is down unready (it refuses what it cannot count),
/// where under "open" it was ready and degraded.
#[tokio::test]
async fn readiness_follows_on_error_across_reloads() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let gw = replica(&cluster_config(&redis)).await;
    redis.stop().await;
    let (status, _) = gw.try_handshake("/ws/capped", &bearer("olga")).await;
    assert_eq!(status, 101, "open: decided locally");
    await_readyz(&gw, "degraded but ready", |status, body| {
        status == 200 && body.contains("cluster degraded")
    })
    .await;
    let path = gw.dir.path().join("portcullis.toml");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "key_prefix = \"test:\"\n",
        "key_prefix = \"test:\"\non_error = \"closed\"\n",
        1,
    );
    std::fs::write(&path, text).unwrap();
    gw.signal("HUP");
    gw.wait_log("reload: configuration from").await;
    await_readyz(&gw, "unready under on_error = closed", |status, body| {
        status == 503 && body.contains("cluster degraded")
    })
    .await;
}

// --- Faults of the links: liveness, write-back, replay -----------------------------------------

use crate::sessions::{admin, chat, cluster_table, gateway, token_for, TOKEN};
use tokio_tungstenite::tungstenite::Message;

/// How soon a dead link must be noticed: `liveness_interval` + `liveness_timeout` (2 s by
/// default), plus room for a loaded machine. Without the checks it took minutes (TCP) or for
/// ever (a Redis killed while nothing asked it).
const NOTICED: Duration = Duration::from_secs(6);

/// The admin token's header, for `/readyz` and `/metrics` of the session-control gateways.
fn admin_auth() -> String {
    format!("Authorization: Bearer {TOKEN}\r\n")
}

fn chat_bearer(subject: &str, jti: &str) -> String {
    format!("Authorization: Bearer {}\r\n", token_for(subject, jti))
}

/// Wait until `/readyz` of a session-control gateway satisfies `done`; its body.
async fn readyz_until(
    gw: &Gateway,
    limit: Duration,
    what: &str,
    done: impl Fn(u16, &str) -> bool,
) -> String {
    eventually(limit, what, || async {
        let (status, body) = gw.admin_request("/readyz", &admin_auth()).await;
        done_or(done(status, &body), format!("{status} {body}")).map(|()| body)
    })
    .await
}

/// Finding 1: Redis killed while a replica is idle (no handshake in flight, no slot held).
/// The liveness checks notice it within seconds: `/readyz` says degraded (503 under
/// `on_error = "closed"`), and both gauges drop to 0; once Redis is back, all is well again.
#[tokio::test]
async fn an_idle_replica_notices_a_killed_redis_within_seconds() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let config = format!(
        "{}on_error = \"closed\"\n",
        cluster_table(&redis.url(), "idle-test:")
    );
    let gw = gateway(&config).await;
    let ready = |status: u16, body: &str| status == 200 && body == "ready\n";
    readyz_until(&gw, START, "ready", ready).await;
    gw.wait_metric_with("portcullis_cluster_subscribed 1", &admin_auth())
        .await;

    redis.stop().await;
    let killed = Instant::now();
    let body = readyz_until(
        &gw,
        NOTICED,
        "unready once Redis is gone",
        |status, body| status == 503 && body.contains("cluster degraded"),
    )
    .await;
    assert!(
        body.contains("not hearing closes and revocations from other replicas"),
        "{body}"
    );
    eventually(NOTICED, "both gauges at 0", || async {
        let (_, scrape) = gw.admin_request("/metrics", &admin_auth()).await;
        done_or(
            scrape.contains("portcullis_cluster_connected 0\n")
                && scrape.contains("portcullis_cluster_subscribed 0\n"),
            scrape,
        )
    })
    .await;
    assert!(killed.elapsed() < NOTICED, "{:?}", killed.elapsed());
    assert!(
        gw.log().contains("PING"),
        "noticed by a liveness check: {}",
        gw.log()
    );

    redis.restart().await;
    readyz_until(&gw, STEP, "ready again", ready).await;
    gw.wait_metric_with("portcullis_cluster_subscribed 1", &admin_auth())
        .await;
}

/// Finding 2: a Redis restarted without persistence lifts nothing. The replicas write their
/// revocations back (with what they had left) and their tombstones too, so a revocation lifted
/// before the restart stays lifted; a replica started afterwards honours them; and a lift made
/// after that is not undone by the next restart.
#[tokio::test]
async fn a_revocation_survives_a_redis_restart_and_a_lift_survives_the_next() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let cluster = cluster_table(&redis.url(), "restart-test:");
    let (a, b) = (gateway(&cluster).await, gateway(&cluster).await);
    redis.wait_subscribers("restart-test:events", 2).await;
    let revoke = |subject: &str| json!({"subject": subject, "ttl": "120s"});
    for subject in ["trudy", "ursula"] {
        let (status, body) = admin(&a, "POST", "/revocations", Some(revoke(subject))).await;
        assert_eq!((status, &body["published"]), (200, &json!(true)), "{body}");
    }
    let (status, body) = admin(&b, "DELETE", "/revocations?subject=ursula", None).await;
    assert_eq!((status, &body["lifted"]), (200, &json!(true)), "{body}");
    let trudy = chat_bearer("trudy", "t1");
    let ursula = chat_bearer("ursula", "u1");
    for gw in [&a, &b] {
        eventually(STEP, "trudy refused, ursula admitted", || async {
            let t = gw.try_handshake("/ws/chat", &trudy).await.0;
            let u = gw.try_handshake("/ws/chat", &ursula).await.0;
            done_or((t, u) == (401, 101), format!("{t} {u}"))
        })
        .await;
    }

    // Restarted empty (it keeps nothing); the replicas reconnect and write back.
    redis.restart().await;
    eventually(
        STEP,
        "the revocation and the tombstone written back",
        || async {
            let revoked = redis.cli(&["PTTL", "restart-test:revoked:sub:trudy"]).await;
            let lifted = redis
                .cli(&["EXISTS", "restart-test:lifted:sub:ursula"])
                .await;
            let back = redis
                .cli(&["EXISTS", "restart-test:revoked:sub:ursula"])
                .await;
            let left: i64 = revoked.parse().unwrap_or(-2);
            done_or(
                left > 60_000 && left <= 120_000 && lifted == "1" && back == "0",
                format!("trudy's pttl {revoked}, ursula lifted {lifted}, revoked {back}"),
            )
        },
    )
    .await;
    for gw in [&a, &b] {
        assert_eq!(gw.try_handshake("/ws/chat", &trudy).await.0, 401);
        assert_eq!(gw.try_handshake("/ws/chat", &ursula).await.0, 101);
        let (_, listed) = admin(gw, "GET", "/revocations", None).await;
        let list = listed["revocations"].as_array().unwrap();
        assert_eq!(list.len(), 1, "{listed}");
        assert_eq!(list[0]["subject"], "trudy", "{listed}");
    }
    let late = gateway(&cluster).await;
    eventually(
        STEP,
        "a replica started after the restart refuses trudy",
        || async {
            let (status, head) = late.try_handshake("/ws/chat", &trudy).await;
            done_or(status == 401, head)
        },
    )
    .await;
    assert_eq!(late.try_handshake("/ws/chat", &ursula).await.0, 101);

    // A lift after the restart, then another restart: nobody brings trudy back.
    let (status, body) = admin(&b, "DELETE", "/revocations?subject=trudy", None).await;
    assert_eq!((status, &body["published"]), (200, &json!(true)), "{body}");
    redis.restart().await;
    eventually(STEP, "trudy's tombstone written back", || async {
        let lifted = redis
            .cli(&["EXISTS", "restart-test:lifted:sub:trudy"])
            .await;
        done_or(lifted == "1", lifted)
    })
    .await;
    redis.wait_subscribers("restart-test:events", 3).await;
    for gw in [&a, &b, &late] {
        eventually(STEP, "trudy admitted everywhere", || async {
            let (status, head) = gw.try_handshake("/ws/chat", &trudy).await;
            done_or(status == 101, head)
        })
        .await;
    }
    assert_eq!(
        redis
            .cli(&["EXISTS", "restart-test:revoked:sub:trudy"])
            .await,
        "0"
    );
}

/// A store that lost its state while only the command connections broke (`FLUSHALL`, then
/// `CLIENT KILL TYPE normal`, which leaves subscriptions alone, as a failover to a replica that
/// had not caught up may): the new connection is enough for the replicas to write their
/// revocations back.
#[tokio::test]
async fn a_new_command_connection_writes_revocations_back_while_the_subscription_stays() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let cluster = cluster_table(&redis.url(), "flush-test:");
    let gw = gateway(&cluster).await;
    redis.wait_subscribers("flush-test:events", 1).await;
    let revoke = json!({"subject": "victor", "ttl": "1h"});
    let (status, body) = admin(&gw, "POST", "/revocations", Some(revoke)).await;
    assert_eq!((status, &body["published"]), (200, &json!(true)), "{body}");
    redis.cli(&["FLUSHALL"]).await;
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]).await;
    eventually(STEP, "victor's revocation written back", || async {
        let n = redis
            .cli(&["EXISTS", "flush-test:revoked:sub:victor"])
            .await;
        done_or(n == "1", n)
    })
    .await;
    let log = gw.log();
    assert!(log.contains("on a new connection"), "{log}");
    assert_eq!(
        log.matches("the event subscription").count(),
        0,
        "the subscription stayed: {log}"
    );
}

/// Finding 3: a close published while one replica's links are reset (RST) reaches that
/// replica once it is connected again: the socket that was open when the close was made is
/// closed, once; a socket opened afterwards (while the replica was cut off) is not.
#[tokio::test]
async fn a_close_made_while_a_replica_was_cut_off_is_replayed_to_it_once() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let pipe = Pipe::to(redis.port);
    let a = gateway(&cluster_table(&redis.url(), "replay-test:")).await;
    let b = gateway(&cluster_table(&pipe.redis_url(), "replay-test:")).await;
    redis.wait_subscribers("replay-test:events", 2).await;
    let mut before = chat(&b, "oscar", "o1").await;

    pipe.reset();
    redis.wait_subscribers("replay-test:events", 1).await;
    let close = json!({"subject": "oscar", "code": 4003, "reason": "moved"});
    let (status, body) = admin(&a, "POST", "/sessions/close", Some(close)).await;
    assert_eq!(
        (status, &body["closed"], &body["published"]),
        (200, &json!(0), &json!(true)),
        "{body}"
    );
    // Made after the close (B's clock and Redis's are the same machine's).
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut after = chat(&b, "oscar", "o2").await;
    let echo = roundtrip(&mut before, Message::text("deaf")).await;
    assert_eq!(
        echo,
        Message::text("echo: deaf"),
        "B did not hear the close"
    );

    pipe.restore();
    assert_eq!(expect_close(&mut before).await, (4003, "moved".into()));
    b.wait_log("1 close(s) replayed").await;
    let echo = roundtrip(&mut after, Message::text("still open")).await;
    assert_eq!(echo, Message::text("echo: still open"));
    // Another break and return: the close is replayed no more.
    pipe.reset();
    redis.wait_subscribers("replay-test:events", 1).await;
    pipe.restore();
    redis.wait_subscribers("replay-test:events", 2).await;
    b.wait_metric_with("portcullis_cluster_subscribed 1", &admin_auth())
        .await;
    let echo = roundtrip(&mut after, Message::text("and now")).await;
    assert_eq!(echo, Message::text("echo: and now"));
    assert_eq!(
        b.log().matches("close(s) replayed").count(),
        1,
        "{}",
        b.log()
    );
}

/// Finding 4: a replica whose flows to Redis are silently dropped (no FIN, no RST, as a NAT
/// forgetting them) notices within seconds, connects anew, and then applies a revocation made
/// meanwhile: the open socket is closed and the subject refused. While nothing gets through at
/// all, `/readyz` says that closes and revocations are not being heard.
#[tokio::test]
async fn a_silently_dropped_subscription_is_noticed_and_the_revocation_applied() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let pipe = Pipe::to(redis.port);
    let a = gateway(&cluster_table(&redis.url(), "silent-test:")).await;
    let b = gateway(&cluster_table(&pipe.redis_url(), "silent-test:")).await;
    redis.wait_subscribers("silent-test:events", 2).await;
    let mut mallory = chat(&b, "mallory", "m1").await;

    pipe.forget();
    let forgotten = Instant::now();
    let revoke = json!({"subject": "mallory", "ttl": "1h"});
    let (status, body) = admin(&a, "POST", "/revocations", Some(revoke)).await;
    assert_eq!((status, &body["published"]), (200, &json!(true)), "{body}");
    let closed = tokio::time::timeout(NOTICED, expect_close(&mut mallory))
        .await
        .expect("the revocation reached B after it noticed its dead subscription");
    assert_eq!(closed, (1008, "revoked".into()));
    assert!(forgotten.elapsed() < NOTICED, "{:?}", forgotten.elapsed());
    assert_eq!(
        b.try_handshake("/ws/chat", &chat_bearer("mallory", "m2"))
            .await
            .0,
        401
    );
    let log = b.log();
    assert!(log.contains("answered no PING within"), "{log}");

    // Nothing gets through at all: B says it is not hearing, and comes back once the line does.
    pipe.blackhole();
    readyz_until(&b, NOTICED, "B degraded and deaf", |status, body| {
        status == 200
            && body.contains("cluster degraded")
            && body.contains("not hearing closes and revocations from other replicas")
    })
    .await;
    b.wait_metric_with("portcullis_cluster_subscribed 0", &admin_auth())
        .await;
    pipe.restore();
    readyz_until(&b, STEP, "B ready again", |status, body| {
        status == 200 && body == "ready\n"
    })
    .await;
}

// --- Redis Sentinel ----------------------------------------------------------------------------

use std::sync::atomic::{AtomicBool, Ordering};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

/// A route for a steady stream of handshakes that no limit refuses (but that asks Redis for
/// its rate and its slot).
const LOAD_ROUTE: &str = "[[routes]]\npath = \"/ws/load\"\nmode = \"echo\"\npolicy = \"load\"\n\
     [policies.load.limits]\nhandshakes_per_ip = { per_second = 100000, burst = 100000 }\n\
     connections_per_route = 100000\n";

/// Handshakes on `/ws/load`, over `gateways` in turn, until `stop`: the statuses other than
/// 101, and how many there were in all.
async fn handshake_load(gateways: &[&Gateway], stop: &AtomicBool) -> (Vec<u16>, usize) {
    let mut refused = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let (status, _) = gateways[n % gateways.len()]
            .try_handshake("/ws/load", "")
            .await;
        if status != 101 {
            refused.push(status);
        }
        n += 1;
    }
    (refused, n)
}

/// Both replicas ready (connected to the primary, calls succeeding, subscribed), and then
/// alice's cap of 3 (held by sockets open on both) refuses a fourth on either.
async fn caps_hold_again(a: &Gateway, b: &Gateway) {
    for gw in [a, b] {
        await_readyz(gw, "ready on the new primary", |status, body| {
            status == 200 && body == "ready\n"
        })
        .await;
    }
    for gw in [a, b] {
        let (status, head) = gw.try_handshake("/ws/capped", &bearer("alice")).await;
        assert_eq!(status, 429, "{head}");
    }
}

/// Redis Sentinel: the replicas find the primary through the Sentinel and follow its
/// failovers, one asked for (`SENTINEL FAILOVER`) and one forced (`kill -9` of the primary),
/// under a steady stream of handshakes. No handshake fails (with `on_error = "open"` a replica
/// decides locally while the primary changes), no established socket is dropped, and once
/// both replicas use the new primary the caps hold across them again.
#[tokio::test]
async fn sentinel_failovers_keep_caps_and_established_sockets() {
    let Some(first) = Redis::start().await else {
        return;
    };
    let Some(mut second) = Redis::start_replica_of(&first).await else {
        return;
    };
    let master = "portcullis-test";
    let Some(sentinel) = Sentinel::start(master, &first, 1).await else {
        return;
    };
    let config = cluster_config_with("SENTINELS", 60, TIMEOUT_MS).replacen(
        "redis_url = \"SENTINELS\"",
        &format!(
            "sentinels = [\"{}\"]\nmaster_name = \"{master}\"",
            sentinel.url()
        ),
        1,
    ) + LOAD_ROUTE;
    let (a, b) = (replica(&config).await, replica(&config).await);
    let both = [&a, &b];
    let (open, refused) = spread(&both, "/ws/capped", "alice", 5).await;
    assert_eq!((open.len(), refused.len()), (3, 2), "{refused:?}");
    let mut sockets = Vec::new();
    for tls in open {
        sockets.push(WebSocketStream::from_raw_socket(tls, Role::Client, None).await);
    }
    assert_eq!(
        first.cli(&["ZCARD", "test:conn:capped:sub:alice"]).await,
        "3"
    );

    // Asked for: the Sentinel promotes the replica and demotes the old primary.
    let stop = AtomicBool::new(false);
    let failover = async {
        // Refused (NOGOODSLAVE) until the Sentinel has judged the replica fit: asked again.
        eventually(START, "the Sentinel starting a failover", || async {
            let answer = sentinel.cli(&["SENTINEL", "FAILOVER", master]).await;
            done_or(answer == "OK", answer)
        })
        .await;
        sentinel.wait_primary(second.port, START).await;
        caps_hold_again(&a, &b).await;
        stop.store(true, Ordering::SeqCst);
    };
    let ((failed, made), ()) = tokio::join!(handshake_load(&both, &stop), failover);
    assert!(failed.is_empty(), "{failed:?} of {made}");
    assert!(made > 0);
    assert_eq!(
        second.cli(&["ZCARD", "test:conn:capped:sub:alice"]).await,
        "3"
    );
    for ws in &mut sockets {
        let echo = roundtrip(ws, Message::text("after the failover")).await;
        assert_eq!(echo, Message::text("echo: after the failover"));
    }

    // Forced: the new primary is killed; the Sentinel promotes the old one back.
    first.wait_link_up().await;
    let stop = AtomicBool::new(false);
    let failover = async {
        second.stop().await;
        sentinel.wait_primary(first.port, START).await;
        caps_hold_again(&a, &b).await;
        stop.store(true, Ordering::SeqCst);
    };
    let ((failed, made), ()) = tokio::join!(handshake_load(&both, &stop), failover);
    assert!(failed.is_empty(), "{failed:?} of {made}");
    assert_eq!(
        first.cli(&["ZCARD", "test:conn:capped:sub:alice"]).await,
        "3"
    );
    for ws in &mut sockets {
        let echo = roundtrip(ws, Message::text("after the kill")).await;
        assert_eq!(echo, Message::text("echo: after the kill"));
    }
    // Found through the Sentinel each time: the first primary, the second, the first again.
    for gw in both {
        let log = gw.log();
        let connected = log
            .matches("cluster: connected to the primary \"portcullis-test\" of Sentinel redis://")
            .count();
        assert!(connected >= 3, "{log}");
    }
}

// --- Redis Cluster -----------------------------------------------------------------------------

/// A policy whose three caps (per IP, per subject, per route) one script takes together: on a
/// Redis Cluster they must be in one slot.
const ALL_CAPS_ROUTE: &str = "[[routes]]\npath = \"/ws/all\"\nmode = \"echo\"\npolicy = \"all\"\n\
     [policies.all.jwt]\nkeys = [{ alg = \"ES256\", pem_file = \"keys/ec.pub.pem\" }]\n\
     [policies.all.limits]\nconnections_per_ip = 10\nconnections_per_subject = 2\n\
     connections_per_route = 10\n";

/// Redis Cluster, three primaries made by the test: caps (one key or three, each script in
/// one slot thanks to the policy's hash tag), rates, renewals and releases across two replicas
/// all decided in Redis (no fallback, so no CROSSSLOT); revocations and closes reach the other
/// replica, and the revocation keys share their own slot.
#[tokio::test]
async fn a_redis_cluster_of_three_primaries_counts_for_every_replica() {
    let Some(cluster) = RedisCluster::start(3).await else {
        return;
    };
    let nodes: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let nodes = format!("cluster_nodes = [{}]", nodes.join(", "));
    let config = cluster_config_with("NODES", 2, 300).replacen("redis_url = \"NODES\"", &nodes, 1)
        + ALL_CAPS_ROUTE;
    let (a, b) = (replica(&config).await, replica(&config).await);
    let (open, refused) = spread(&[&a, &b], "/ws/capped", "alice", 20).await;
    assert_eq!((open.len(), refused.len()), (3, 17), "{refused:?}");
    let key = "test:conn:{capped}:sub:alice";
    assert_eq!(cluster.cli(&["ZCARD", key]).await, "3");
    let (all, refused) = spread(&[&a, &b], "/ws/all", "bob", 6).await;
    assert_eq!((all.len(), refused.len()), (2, 4), "{refused:?}");
    assert_eq!(
        cluster
            .cli(&["ZCARD", "test:conn:{all}:route:/ws/all"])
            .await,
        "2"
    );
    // Renewed across the slots: held for more than two lease ttls (2 s), still counted.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(cluster.cli(&["ZCARD", key]).await, "3");
    assert_eq!(a.try_handshake("/ws/capped", &bearer("alice")).await.0, 429);
    // Released on close, per slot.
    drop(all);
    eventually(STEP, "bob's slots released", || async {
        let n = cluster.cli(&["ZCARD", "test:conn:{all}:sub:bob"]).await;
        done_or(n == "0", n)
    })
    .await;
    // A handshake rate across both.
    for gw in [&a, &b, &a, &b] {
        assert_eq!(gw.try_handshake("/ws/rated", "").await.0, 101);
    }
    assert_eq!(b.try_handshake("/ws/rated", "").await.0, 429);
    for gw in [&a, &b] {
        let scrape = gw.admin_get("/metrics").await;
        assert!(
            scrape.contains("portcullis_cluster_fallbacks_total{result=\"local\"} 0"),
            "{scrape}"
        );
        assert!(
            scrape.contains("portcullis_cluster_subscribed 1\n"),
            "{scrape}"
        );
    }

    // Revocations and closes (session-control replicas on the same Redis Cluster).
    let table = format!(
        "[cluster]\n{nodes}\nkey_prefix = \"rc:\"\nlease_ttl = \"4s\"\ntimeout = \"500ms\"\n"
    );
    let (c, d) = (gateway(&table).await, gateway(&table).await);
    for gw in [&c, &d] {
        gw.wait_metric_with("portcullis_cluster_subscribed 1", &admin_auth())
            .await;
    }
    let mut mallory = chat(&d, "mallory", "m1").await;
    let mut oscar = chat(&d, "oscar", "o1").await;
    let revoke = json!({"subject": "mallory", "ttl": "1h"});
    let (status, body) = admin(&c, "POST", "/revocations", Some(revoke)).await;
    assert_eq!((status, &body["published"]), (200, &json!(true)), "{body}");
    assert_eq!(expect_close(&mut mallory).await, (1008, "revoked".into()));
    let close = json!({"subject": "oscar", "code": 4004});
    let (status, body) = admin(&c, "POST", "/sessions/close", Some(close)).await;
    assert_eq!((status, &body["published"]), (200, &json!(true)), "{body}");
    assert_eq!(expect_close(&mut oscar).await.0, 4004);
    assert_eq!(
        cluster
            .cli(&["EXISTS", "rc:{revocations}revoked:sub:mallory"])
            .await,
        "1"
    );
    // A replica started later reads it (a SCAN on the node of the revocations' slot).
    let late = gateway(&table).await;
    eventually(STEP, "the late replica refuses mallory", || async {
        let (status, head) = late
            .try_handshake("/ws/chat", &chat_bearer("mallory", "m2"))
            .await;
        done_or(status == 401, head)
    })
    .await;
}
