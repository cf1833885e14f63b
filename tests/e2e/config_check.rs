//! `portcullis --check`: good configs pass, broken ones fail naming the file and the key; and a
//! broken config stops start-up with the same clear error.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::*;

/// Run the binary with `args` in `dir` (bounded: a start-up that should fail and does not is
/// killed, and the test fails).
fn portcullis(dir: &Path, args: &[&str]) -> Output {
    output_within(
        Command::new(binary()).args(args).current_dir(dir),
        b"",
        STEP,
    )
}

fn check(dir: &Path, text: &str) -> (bool, String) {
    let path = dir.join("candidate.toml");
    std::fs::write(&path, text).unwrap();
    let out = portcullis(dir, &["--check", "--config", path.to_str().unwrap()]);
    (out.status.success(), text_of(&out))
}

#[test]
fn good_configs_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = check(dir.path(), &config_text(true, ""));
    assert!(ok, "{out}");
    assert!(out.contains("configuration OK"), "{out}");

    // The shipped, commented example is valid as it is.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/example.toml");
    let out = portcullis(dir.path(), &["--check", "--config", example]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // No --config: the embedded default.
    let out = portcullis(dir.path(), &["--check"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("<embedded default>"));
}

#[test]
fn bad_configs_fail_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = config_text(true, "");
    let cases = [
        (
            format!("{base}\n[limits]\nmax_mesage_bytes = 5\n"),
            "max_mesage_bytes",
        ),
        (
            base.replacen("address = \"127.0.0.1:", "address = \"nowhere:", 1),
            "listeners[0].address",
        ),
        (
            format!("{base}\n[[routes]]\npath = \"/x\"\nmode = \"echo\"\npolicy = \"chat\"\n"),
            "routes[2].policy",
        ),
        (
            format!("{base}\n[[routes]]\npath = \"/x\"\nmode = \"teleport\"\n"),
            "teleport",
        ),
        (
            format!("{base}\n[[routes]]\npath = \"/ws/echo\"\nmode = \"echo\"\n"),
            "routes[2].path",
        ),
        (
            base.replace(
                "generate_self_signed = true",
                "generate_self_signed = false",
            ),
            "listeners[0].tls.cert",
        ),
        ("[[listeners]\naddress = ".to_string(), "candidate.toml"),
        (
            format!("{base}\n[limits]\nmax_message_bytes = 0\n"),
            "limits.max_message_bytes",
        ),
    ];
    for (text, key) in cases {
        let (ok, out) = check(dir.path(), &text);
        assert!(!ok, "should fail: {text}");
        assert!(
            out.contains("candidate.toml"),
            "error should name the file: {out}"
        );
        assert!(out.contains(key), "error should name {key}: {out}");
    }
}

#[test]
fn mismatched_key_is_reported_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // Two pairs, then crossed.
    for sub in ["a", "b"] {
        let (cert, key) = self_signed(&["localhost"]);
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        std::fs::write(dir.path().join(sub).join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join(sub).join("key.pem"), key).unwrap();
    }
    let crossed = "[[listeners]]\naddress = \"127.0.0.1:1\"\n[listeners.tls]\ncert = \"a/cert.pem\"\nkey = \"b/key.pem\"\n[admin]\nenabled = false\n";
    let (ok, out) = check(dir.path(), crossed);
    assert!(!ok);
    assert!(
        out.contains("listeners[0].tls") && out.contains("do not form a usable pair"),
        "{out}"
    );
    assert!(!out.contains("panicked"), "{out}");

    // Starting with it fails the same way, promptly, with a non-zero exit.
    let path = dir.path().join("candidate.toml");
    let out = portcullis(dir.path(), &["--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("do not form a usable pair"));
}

/// `--check` validates and writes nothing: a development certificate it would generate is
/// reported, not written; starting generates it.
#[test]
fn check_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[[listeners]]\naddress = \"127.0.0.1:0\"\n[listeners.tls]\ncert = \"dev/cert.pem\"\nkey = \"dev/key.pem\"\ngenerate_self_signed = true\n[admin]\nenabled = false\n";
    let (ok, out) = check(dir.path(), text);
    assert!(ok, "{out}");
    assert!(
        out.contains("listeners[0].tls: a self-signed development certificate would be generated")
            && out.contains("configuration OK"),
        "{out}"
    );
    assert!(!dir.path().join("dev").exists(), "--check wrote files");
    // Without --config: the embedded default's certificate is not generated either.
    let out = portcullis(dir.path(), &["--check"]);
    assert!(out.status.success(), "{}", text_of(&out));
    assert!(!dir.path().join("certs").exists(), "--check wrote files");
}

#[test]
fn busy_port_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let path = dir.path().join("c.toml");
    let address = format!("127.0.0.1:{port}");
    std::fs::write(&path, config_text_at(&address, ANY_PORT, true, "", "")).unwrap();
    let out = portcullis(dir.path(), &["--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

/// Every shipped policy file passes `--check` when included (internal.toml with its key file).
#[test]
fn shipped_policy_files_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let policies = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(
        dir.path().join("keys/ops-2026.pub.pem"),
        key.public_key_pem(),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
    std::fs::write(
        dir.path().join("secrets/introspection-client.secret"),
        "s3cret\n",
    )
    .unwrap();
    let files = [
        ("public", "public-echo.toml"),
        ("chat", "chat.toml"),
        ("internal", "internal.toml"),
        ("services", "services-mtls.toml"),
        ("authz", "forward-auth.toml"),
        ("api", "opaque-tokens.toml"),
    ];
    let mut text = config_text(true, "");
    for (i, (name, file)) in files.iter().enumerate() {
        std::fs::copy(format!("{policies}/{file}"), dir.path().join(file)).unwrap();
        text.push_str(&format!(
            "\n[policies.{name}]\ninclude = \"{file}\"\n\
             [[routes]]\npath = \"/p{i}\"\nmode = \"echo\"\npolicy = \"{name}\"\n"
        ));
    }
    let (ok, out) = check(dir.path(), &text);
    assert!(ok, "{out}");
}

#[test]
fn bad_policies_fail_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = config_text(true, "");
    std::fs::write(dir.path().join("ec.pem"), "not a key").unwrap();
    std::fs::write(dir.path().join("short.secret"), "tooshort").unwrap();
    std::fs::write(
        dir.path().join("inc.toml"),
        "[origin]\nallow = [\"ftp://x\"]\n",
    )
    .unwrap();
    let cases = [
        ("[policies.p.jwt]\nissuers = [\"x\"]\n", "policies.p.jwt: no verification keys"),
        (
            "[policies.p.jwt]\nkeys = [{ alg = \"RS256\", secret_env = \"S\" }]\n",
            "policies.p.jwt.keys[0]",
        ),
        (
            "[policies.p.jwt]\nkeys = [{ alg = \"HS256\", pem_file = \"ec.pem\" }]\n",
            "policies.p.jwt.keys[0]",
        ),
        (
            "[policies.p.jwt]\nkeys = [{ alg = \"ES256\", pem_file = \"ec.pem\" }]\n",
            "policies.p.jwt.keys[0]: ",
        ),
        (
            "[policies.p.jwt]\nkeys = [{ alg = \"HS256\", secret_file = \"short.secret\" }]\n",
            "at least 32",
        ),
        (
            "[policies.p.jwt]\nkeys = [{ alg = \"HS256\", secret_env = \"PORTCULLIS_TEST_UNSET_VAR\" }]\n",
            "PORTCULLIS_TEST_UNSET_VAR",
        ),
        ("[policies.p.jwt]\nkeys = [{ alg = \"none\" }]\n", "none"),
        ("[policies.p.origin]\nallow = [\"https://a.com/\"]\n", "policies.p.origin.allow[0]"),
        ("[policies.p.origin]\nallow = [\"https://a.*.com\"]\n", "policies.p.origin.allow[0]"),
        ("[policies.p.limits]\nhandshakes_per_ip = { burst = 3 }\n", "policies.p.limits.handshakes_per_ip"),
        ("[policies.p.limits]\nconnections_per_subject = 3\n", "per-subject limits need"),
        ("[policies.p.limits]\nconnections_per_ip = 0\n", "policies.p.limits.connections_per_ip"),
        (
            "[policies.p.introspection]\nurl = \"http://127.0.0.1:9/i\"\nclient_id = \"gw\"\nclient_secret_env = \"PORTCULLIS_TEST_UNSET_VAR\"\n",
            "policies.p.introspection.client_secret_env",
        ),
        (
            "[policies.p.ext_authz]\nurl = \"http://127.0.0.1:9/a\"\ncopy_headers = [\"Host\"]\n",
            "policies.p.ext_authz.copy_headers[0]",
        ),
        ("[policies.p]\ninclude = \"inc.toml\"\n", "inc.toml"),
        ("[policies.p]\ninclude = \"inc.toml\"\n[policies.p.limits]\nconnections_per_ip = 1\n", "cannot be combined"),
        ("[server]\ntrusted_proxies = [\"10.0.0.0/40\"]\n", "server.trusted_proxies[0]"),
    ];
    for (policy, key) in cases {
        let text = format!("{base}\n{policy}");
        let (ok, out) = check(dir.path(), &text);
        assert!(!ok, "should fail: {policy}");
        assert!(out.contains(key), "error should name {key:?}: {out}");
    }
}

/// `[cluster]` under `--check`: validated (a bad URL or a missing password file names its key),
/// and nothing connects (a Redis that is not there does not matter).
#[test]
fn cluster_table_is_checked_without_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = |table: &str| config_text(true, &format!("[cluster]\n{table}\n"));
    let (ok, out) = check(
        dir.path(),
        &cluster("redis_url = \"redis://127.0.0.1:1/0\"\ntimeout = \"20ms\""),
    );
    assert!(ok, "{out}");
    assert!(!out.contains("cluster: connected"), "{out}");
    for (table, key) in [
        ("redis_url = \"http://127.0.0.1:1\"", "cluster.redis_url"),
        (
            "redis_url = \"redis://127.0.0.1:1\"\npassword_file = \"nope.password\"",
            "cluster.password_file",
        ),
        (
            "redis_url = \"redis://127.0.0.1:1\"\non_error = \"sometimes\"",
            "on_error",
        ),
    ] {
        let (ok, out) = check(dir.path(), &cluster(table));
        assert!(!ok, "{table}: {out}");
        assert!(out.contains(key), "{table}: {out} should name {key}");
    }
}
