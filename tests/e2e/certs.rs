//! Certificates: several on one listener chosen by SNI, and rotation without a restart (SIGHUP or
//! file watch) while old sockets stay open.

use std::path::Path;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// Write a fresh self-signed pair for `names` at `dir/stem.{cert,key}.pem`.
fn pair(dir: &Path, stem: &str, names: &[&str]) {
    let (cert, key) = self_signed(names);
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    std::fs::write(dir.join(format!("certs/{stem}.cert.pem")), cert).unwrap();
    std::fs::write(dir.join(format!("certs/{stem}.key.pem")), key).unwrap();
}

#[tokio::test]
async fn sni_picks_the_certificate_by_name() {
    let dir = tempfile::tempdir().unwrap();
    pair(dir.path(), "alpha", &["alpha.test"]);
    pair(dir.path(), "beta", &["x.beta.test", "y.beta.test"]);
    let config = format!(
        "[[listeners]]\naddress = \"{ANY_PORT}\"\n\
         [listeners.tls]\ncert = \"certs/cert.pem\"\nkey = \"certs/key.pem\"\ngenerate_self_signed = true\n\
         [[listeners.tls.sni]]\nnames = [\"alpha.test\"]\ncert = \"certs/alpha.cert.pem\"\nkey = \"certs/alpha.key.pem\"\n\
         [[listeners.tls.sni]]\nnames = [\"*.beta.test\"]\ncert = \"certs/beta.cert.pem\"\nkey = \"certs/beta.key.pem\"\n\
         [admin]\naddress = \"{ANY_PORT}\"\n\
         [[routes]]\npath = \"/ws/echo\"\nmode = \"echo\"\n"
    );
    std::fs::write(dir.path().join("c.toml"), config).unwrap();
    let cert = dir.path().join("certs/cert.pem");
    let gw = Gateway::run(dir, &["--config", "c.toml"], cert, true).await;
    let port = gw.port;
    let certs = gw.dir.path().join("certs");
    let alpha = certs.join("alpha.cert.pem");
    let beta = certs.join("beta.cert.pem");
    assert!(try_tls_connect(port, &alpha, "alpha.test").await.is_ok());
    assert!(try_tls_connect(port, &beta, "x.beta.test").await.is_ok());
    assert!(try_tls_connect(port, &beta, "y.beta.test").await.is_ok());
    // Each name gets its own certificate, not another's.
    assert!(try_tls_connect(port, &beta, "alpha.test").await.is_err());
    assert!(try_tls_connect(port, &alpha, "x.beta.test").await.is_err());
    // Unknown names get the default.
    assert!(try_tls_connect(port, &gw.cert, "localhost").await.is_ok());
    assert!(try_tls_connect(port, &alpha, "other.test").await.is_err());
}

/// certbot/cert-manager style rotation: the files are replaced, then SIGHUP (or the watcher)
/// reloads; a new client sees the new certificate while an old socket stays open; a broken
/// replacement keeps the old certificate.
async fn rotation(trigger: &str) {
    let extra = if trigger == "watch" {
        "[server]\nwatch_interval = \"200ms\"\n"
    } else {
        ""
    };
    let mut gw = Gateway::start(extra).await;
    let old_cert = gw.dir.path().join("old.pem");
    std::fs::copy(&gw.cert, &old_cert).unwrap();
    let mut old = gw.ws("/ws/echo").await;

    // Replace with a new pair (new key too), as certbot does.
    let (fresh_cert, fresh_key) = self_signed(&["localhost"]);
    let key_path = gw.dir.path().join("certs/key.pem");
    std::fs::write(&key_path, fresh_key).unwrap();
    std::fs::write(&gw.cert, &fresh_cert).unwrap();
    if trigger == "hup" {
        gw.signal("HUP");
    }
    eventually(STEP, "the new certificate served", || async {
        let served = try_tls_connect(gw.port, &gw.cert, "localhost").await;
        done_or(served.is_ok(), gw.log())
    })
    .await;
    assert!(try_tls_connect(gw.port, &old_cert, "localhost")
        .await
        .is_err());
    assert_eq!(
        roundtrip(&mut old, Message::text("still open")).await,
        Message::text("echo: still open")
    );

    // A broken replacement: the certificate in use stays. (A watcher may have seen the new key
    // before the new certificate and kept the old pair once already: count from here.)
    let kept = "certificates kept";
    let kept_before = gw.log().matches(kept).count();
    std::fs::write(&gw.cert, "garbage").unwrap();
    if trigger == "hup" {
        gw.signal("HUP");
    }
    eventually(STEP, "the broken certificate refused", || async {
        let log = gw.log();
        done_or(log.matches(kept).count() > kept_before, log)
    })
    .await;
    std::fs::write(&gw.cert, &fresh_cert).unwrap();
    // The serving certificate is still the fresh one.
    let fresh_copy = gw.dir.path().join("fresh.pem");
    std::fs::write(&fresh_copy, &fresh_cert).unwrap();
    assert!(try_tls_connect(gw.port, &fresh_copy, "localhost")
        .await
        .is_ok());
    assert!(gw.is_running(), "the gateway exited:\n{}", gw.log());
}

#[tokio::test]
async fn certificate_swap_on_sighup_keeps_old_sockets() {
    rotation("hup").await;
}

#[tokio::test]
async fn certificate_swap_on_file_change_keeps_old_sockets() {
    rotation("watch").await;
}
