//! `portcullis --check`: good configs pass, broken ones fail naming the file and the key; and a
//! broken config stops start-up with the same clear error.

use std::process::Command;

use crate::support::*;

fn check(dir: &std::path::Path, text: &str) -> (bool, String) {
    let path = dir.join("candidate.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(binary())
        .args(["--check", "--config", path.to_str().unwrap()])
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn good_configs_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = check(dir.path(), &config_text(free_port(), free_port(), true, ""));
    assert!(ok, "{out}");
    assert!(out.contains("configuration OK"), "{out}");

    // The shipped, commented example is valid as it is.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/example.toml");
    let out = Command::new(binary())
        .args(["--check", "--config", example])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // No --config: the embedded default.
    let out = Command::new(binary())
        .arg("--check")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("<embedded default>"));
}

#[test]
fn bad_configs_fail_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = config_text(free_port(), free_port(), true, "");
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
    // Generate two pairs via --check, then cross them.
    for sub in ["a", "b"] {
        let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[listeners.tls]\ncert = \"{sub}/cert.pem\"\nkey = \"{sub}/key.pem\"\ngenerate_self_signed = true\n[admin]\nenabled = false\n"
        );
        assert!(check(dir.path(), &text).0);
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
    let out = Command::new(binary())
        .args(["--config", path.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("do not form a usable pair"));
}

#[test]
fn busy_port_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config_text(port, free_port(), true, "")).unwrap();
    let out = Command::new(binary())
        .args(["--config", path.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}
