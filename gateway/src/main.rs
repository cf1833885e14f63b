//! The command line: `portcullis [--config FILE] [--check]`, and `portcullis sessions ...`.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use portcullis::config::Config;
use portcullis::lifecycle;
use portcullis::obs::Logger;

/// jemalloc gives memory back after bursts (lifecycle/allocator.rs sets how soon).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const USAGE_TEMPLATE: &str = "\
portcullis - a security-focused WebSocket gateway

USAGE:
    portcullis                      run the embedded default configuration
                                    (wss://127.0.0.1:8443, admin http://127.0.0.1:9090)
    portcullis --config FILE        run FILE (TOML; see policies/example.toml)
    portcullis --check [--config FILE]
                                    validate the configuration and exit (0 when valid)
    portcullis --upgrade [--config FILE]
                                    take over the listening sockets of a running gateway
                                    (then send the old one SIGQUIT; it hands them over and
                                    drains its sockets)

{SESSIONS}

OPTIONS:
    -c, --config FILE   configuration file
    -t, --check         validate only
    -u, --upgrade       zero-downtime upgrade: take the sockets of a running gateway
    -h, --help          this text
    -V, --version       version

Logging: RUST_LOG (default \"info\").";

fn usage() -> String {
    USAGE_TEMPLATE.replace("{SESSIONS}", lifecycle::sessions_cli::USAGE)
}

struct Args {
    config: Option<PathBuf>,
    check: bool,
    upgrade: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        config: None,
        check: false,
        upgrade: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-c" | "--config" => {
                let file = it.next().ok_or("--config needs a file")?;
                args.config = Some(PathBuf::from(file));
            }
            s if s.starts_with("--config=") => {
                args.config = Some(PathBuf::from(&s["--config=".len()..]));
            }
            "-t" | "--check" => args.check = true,
            "-u" | "--upgrade" => args.upgrade = true,
            "-h" | "--help" => {
                println!("{}", usage());
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("portcullis {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(args))
}

/// `portcullis sessions [--config FILE] [--admin ADDRESS] COMMAND ...`.
fn sessions(args: Vec<String>) -> ExitCode {
    let mut config_path = None;
    let mut admin = None;
    let mut rest = args.as_slice();
    while let [flag, value, tail @ ..] = rest {
        match flag.as_str() {
            "-c" | "--config" => config_path = Some(PathBuf::from(value)),
            "--admin" => admin = Some(value.clone()),
            _ => break,
        }
        rest = tail;
    }
    let config = match &config_path {
        Some(path) => Config::load(path),
        None => Config::embedded(),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("portcullis: configuration error: {e}");
            return ExitCode::from(1);
        }
    };
    match lifecycle::sessions_cli::run(&config, admin.as_deref(), rest) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis sessions: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn main() -> ExitCode {
    lifecycle::allocator::configure();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().is_some_and(|a| a == "sessions") {
        return sessions(argv[1..].to_vec());
    }
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e}\n\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let config = match &args.config {
        Some(path) => Config::load(path),
        None => Config::embedded(),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("portcullis: configuration error: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = Logger::install(&config) {
        eprintln!("portcullis: cannot install the logger: {e}");
        return ExitCode::from(1);
    }
    if args.check {
        let source = config.source().to_string();
        return match lifecycle::check(config) {
            Ok(notes) => {
                for note in notes {
                    println!("portcullis: {note}");
                }
                println!("portcullis: configuration OK: {source}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis: configuration error: {source}: {e}");
                ExitCode::from(1)
            }
        };
    }
    if let Err(e) = lifecycle::run(config, args.upgrade) {
        eprintln!("portcullis: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
