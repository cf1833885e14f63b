//! Portcullis: a security-focused, TLS-terminating WebSocket gateway.
//!
//! The house follows a connection's path; each layer imports only the layers below it:
//!
//! | layer | owns |
//! | --- | --- |
//! | [`core`] | the shared vocabulary and the parsed configuration value types |
//! | [`config`] | the configuration: plain data, defaults, validation |
//! | [`obs`] | metrics, the access log, the logger |
//! | [`net`] | listening addresses, server and client TLS, the HTTP/1.1 head and answers |
//! | [`cluster`] | the Redis-backed store replicas share: rates, connection leases |
//! | [`admission`] | the checks before the `101` |
//! | [`relay`] | upstreams: registry, balancing, health, connecting, forwarding, typed errors |
//! | [`session`] | after the `101`: echo, relay pumps, guards, close handling, stop signals |
//! | [`edge`] | one connection's life: route → admission → upstream first → 101 → session → report |
//! | [`lifecycle`] | the server wiring, `--check`, reload, signals and drain, the admin listener |
//!
//! `main.rs` is the command line only.

#![forbid(unsafe_code)]

pub(crate) mod admission;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod core;
pub(crate) mod edge;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod lifecycle;
pub(crate) mod net;
pub mod obs;
pub(crate) mod relay;
pub(crate) mod session;

#[cfg(test)]
mod tests {
    /// The layers in the order of the table above: each may import only the ones before it.
    const LAYERS: [&str; 10] = [
        "core",
        "config",
        "obs",
        "net",
        "cluster",
        "admission",
        "relay",
        "session",
        "edge",
        "lifecycle",
    ];

    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn layers_import_only_the_layers_below() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut wrong = Vec::new();
        for file in files {
            let rel = file.strip_prefix(&src).unwrap();
            let Some(own) = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .and_then(|top| LAYERS.iter().position(|l| *l == top))
            else {
                continue;
            };
            let text = std::fs::read_to_string(&file).unwrap();
            for (at, _) in text.match_indices("crate::") {
                let name: String = text[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if let Some(used) = LAYERS.iter().position(|l| *l == name) {
                    if used > own {
                        wrong.push(format!("{} uses {name}", rel.display()));
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "imports up the layers: {wrong:#?}");
    }
}
