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
    //! The layers' allow-matrix is the table in `docs/architecture.md`: these tests read it and
    //! check every `crate::` path under `src/` against it (comments and tests included).

    use std::path::{Path, PathBuf};

    /// The document that holds the matrix and its debts.
    const DOC: &str = "../docs/architecture.md";
    /// The first cell of the matrix's header row.
    const MATRIX_HEADER: &str = "| layer ↓ may import →";
    /// The first cells of the debts table's header row.
    const DEBTS_HEADER: &str = "| file | path |";

    /// What a cell of the matrix allows one layer to import from another.
    #[derive(Debug, PartialEq)]
    enum Cell {
        /// `✓`: anything (a layer below).
        May,
        /// Empty: nothing, the layer is not below.
        NotBelow,
        /// `✗`: nothing, whatever the order of the layers.
        Never,
        /// `only ...`: these names of the layer's root.
        Only(Vec<String>),
    }

    impl Cell {
        fn parse(text: &str) -> Cell {
            match text {
                "✓" => Cell::May,
                "" => Cell::NotBelow,
                "✗" => Cell::Never,
                _ => {
                    let names = text
                        .strip_prefix("only ")
                        .unwrap_or_else(|| panic!("{DOC}: a matrix cell reads {text:?}"));
                    Cell::Only(
                        names
                            .split(',')
                            .map(|n| n.trim().trim_matches('`').to_string())
                            .collect(),
                    )
                }
            }
        }
    }

    /// The matrix and the debts as the document states them.
    struct Rules {
        layers: Vec<String>,
        /// `cells[row][column]`: what layer `row` may import from layer `column`.
        cells: Vec<Vec<Cell>>,
        /// Imports allowed until removed: a file (relative to `src/`) and a path in it.
        debts: Vec<(String, Vec<String>)>,
    }

    /// The cells of a markdown table row.
    fn cells(line: &str) -> Vec<String> {
        let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
        inner.split('|').map(|c| c.trim().to_string()).collect()
    }

    /// The body rows of the table whose header row starts with `header`.
    fn table(doc: &str, header: &str) -> (Vec<String>, Vec<Vec<String>>) {
        let mut lines = doc.lines().skip_while(|l| !l.starts_with(header));
        let head = cells(
            lines
                .next()
                .unwrap_or_else(|| panic!("{DOC}: no {header:?} table")),
        );
        let rows = lines.skip(1).take_while(|l| l.starts_with('|')).map(cells);
        (head, rows.collect())
    }

    fn rules() -> Rules {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DOC);
        let doc = std::fs::read_to_string(&path).unwrap();
        let (head, rows) = table(&doc, MATRIX_HEADER);
        let layers: Vec<String> = head[1..].to_vec();
        let mut cells = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let name = row[0].trim_matches('`');
            assert_eq!(name, layers[i], "{DOC}: rows and columns in the same order");
            assert_eq!(row.len(), layers.len() + 1, "{DOC}: the row of {name}");
            cells.push(row[1..].iter().map(|c| Cell::parse(c)).collect());
        }
        assert_eq!(cells.len(), layers.len(), "{DOC}: one row per layer");
        let (_, rows) = table(&doc, DEBTS_HEADER);
        let debts = rows
            .iter()
            .map(|row| {
                let path = row[1].trim_matches('`').strip_prefix("crate::");
                let path = path.unwrap_or_else(|| panic!("{DOC}: a debt's path {:?}", row[1]));
                let segments = path.split("::").map(String::from).collect();
                (row[0].trim_matches('`').to_string(), segments)
            })
            .collect();
        Rules {
            layers,
            cells,
            debts,
        }
    }

    /// The paths a `crate::` path or use tree names, each as its segments: `a::{b, c::{d, e}}`
    /// gives `a::b`, `a::c::d`, `a::c::e`; `self` and a glob name the module before them.
    fn paths(after_crate: &str) -> Vec<Vec<String>> {
        fn tree(
            s: &mut std::iter::Peekable<std::str::Chars>,
            mut at: Vec<String>,
        ) -> Vec<Vec<String>> {
            loop {
                while s.next_if(|c| c.is_whitespace()).is_some() {}
                if s.next_if_eq(&'{').is_some() {
                    let mut out = Vec::new();
                    // Each item ends at a `,` (then another may follow) or at the group's end.
                    loop {
                        while s.next_if(|c| c.is_whitespace()).is_some() {}
                        if s.next_if_eq(&'}').is_some() || s.peek().is_none() {
                            return out;
                        }
                        out.extend(tree(s, at.clone()));
                        while s.next_if(|c| c.is_whitespace()).is_some() {}
                        if s.next_if_eq(&',').is_none() {
                            s.next_if_eq(&'}');
                            return out;
                        }
                    }
                }
                let mut ident = String::new();
                while let Some(c) = s.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
                    ident.push(c);
                }
                let named = !ident.is_empty();
                if named && ident != "self" {
                    at.push(ident);
                }
                let rest: String = s.clone().take(2).collect();
                if !named || rest != "::" {
                    s.next_if_eq(&'*');
                    return vec![at];
                }
                s.nth(1);
            }
        }
        tree(&mut after_crate.chars().peekable(), Vec::new())
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
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
    fn layers_matrix_allows_only_layers_below() {
        let rules = rules();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut folders: Vec<String> = std::fs::read_dir(&src)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        folders.sort();
        let mut layers = rules.layers.clone();
        layers.sort();
        assert_eq!(folders, layers, "every folder of src/ is a layer of {DOC}");
        for (i, row) in rules.cells.iter().enumerate() {
            for (j, cell) in row.iter().enumerate() {
                let (from, to) = (&rules.layers[i], &rules.layers[j]);
                if j >= i {
                    assert!(
                        matches!(cell, Cell::NotBelow) || (j > i && *cell == Cell::Never),
                        "{DOC}: {from} may import only layers below it, not {to}"
                    );
                } else {
                    assert_ne!(*cell, Cell::NotBelow, "{DOC}: {from} → {to} left empty");
                }
            }
        }
    }

    #[test]
    fn layers_import_only_what_the_matrix_allows() {
        let rules = rules();
        let layer = |name: &str| rules.layers.iter().position(|l| l == name);
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut wrong = Vec::new();
        let mut owed = vec![false; rules.debts.len()];
        for file in files {
            let rel = file.strip_prefix(&src).unwrap();
            let rel: Vec<_> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect();
            let Some(own) = layer(&rel[0]) else {
                continue;
            };
            let rel = rel.join("/");
            let text = std::fs::read_to_string(&file).unwrap();
            for (at, _) in text.match_indices("crate::") {
                let before = text[..at].chars().next_back();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    continue;
                }
                for path in paths(&text[at + "crate::".len()..]) {
                    let Some(used) = path.first().and_then(|p| layer(p)) else {
                        continue;
                    };
                    let allowed = match &rules.cells[own][used] {
                        _ if used == own => true,
                        Cell::May => true,
                        Cell::Only(names) => path.get(1).is_some_and(|n| names.contains(n)),
                        Cell::NotBelow | Cell::Never => false,
                    };
                    if allowed {
                        continue;
                    }
                    let debt = rules
                        .debts
                        .iter()
                        .position(|(f, p)| *f == rel && path.starts_with(p));
                    match debt {
                        Some(d) => owed[d] = true,
                        None => wrong.push(format!(
                            "{rel}: crate::{} ({} → {}: {:?})",
                            path.join("::"),
                            rules.layers[own],
                            rules.layers[used],
                            rules.cells[own][used]
                        )),
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "imports {DOC} does not allow: {wrong:#?}");
        let paid: Vec<_> = (rules.debts.iter().zip(owed))
            .filter(|(_, owed)| !owed)
            .map(|((file, path), _)| format!("{file}: crate::{}", path.join("::")))
            .collect();
        assert!(
            paid.is_empty(),
            "debts paid, strike them from {DOC}: {paid:#?}"
        );
    }

    #[test]
    fn layers_read_use_trees_path_by_path() {
        let strings = |paths: Vec<Vec<String>>| -> Vec<String> {
            paths.into_iter().map(|p| p.join("::")).collect()
        };
        assert_eq!(
            strings(paths("admission::Admitted;")),
            ["admission::Admitted"]
        );
        assert_eq!(
            strings(paths(
                "admission::{self, token::{extract::strip_cookie, Locator},\n  Rejection,};"
            )),
            [
                "admission",
                "admission::token::extract::strip_cookie",
                "admission::token::Locator",
                "admission::Rejection"
            ]
        );
        assert_eq!(strings(paths("{core, relay::*};")), ["core", "relay"]);
        assert_eq!(strings(paths("session`] runs")), ["session"]);
        assert_eq!(strings(paths("{net; edge::{")), ["net"]);
        assert_eq!(
            strings(paths("obs::metrics::Metrics::new(x)")),
            ["obs::metrics::Metrics::new"]
        );
    }
}
