//! The processes the benchmark starts, and what `/proc` says about them.
//!
//! Every process is started in a process group of its own (NGINX's master and workers share
//! it), registered, and killed with its whole group when its [`Proc`] guard drops: at the end of
//! a phase, on an error, on a panic, and on SIGINT/SIGTERM/SIGHUP through a signal handler that
//! kills every registered group. The direct children also die with the benchmark
//! (`PR_SET_PDEATHSIG`) should it be killed outright.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Process groups that are alive, for the signal handler.
static GROUPS: [AtomicI32; 32] = [const { AtomicI32::new(0) }; 32];

fn register(pgid: i32) {
    for slot in &GROUPS {
        if slot
            .compare_exchange(0, pgid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
    }
    eprintln!("portcullis-bench: more than {} processes at once; {pgid} is not covered by the signal handler", GROUPS.len());
}

fn unregister(pgid: i32) {
    for slot in &GROUPS {
        let _ = slot.compare_exchange(pgid, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe calls: kill, signal, raise.
    for slot in &GROUPS {
        let pgid = slot.load(Ordering::SeqCst);
        if pgid > 0 {
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Kill every started process group when the benchmark is interrupted.
pub fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        unsafe { libc::signal(sig, handler) };
    }
}

/// Raise this process's open-file limit to its hard limit (the children inherit it); returns
/// the limit now in force.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// CPU time and memory of a process group at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// utime + stime of every process of the group, in seconds.
    pub cpu_secs: f64,
    /// The sum of their VmRSS, in bytes.
    pub rss_bytes: u64,
}

/// A started process and its group; the group is killed when this drops.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pgid: i32,
    pub log: PathBuf,
}

impl Proc {
    /// Start `cmd` in a new process group, with stdout and stderr going to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc, String> {
        let out = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        let pgid = child.id() as i32;
        register(pgid);
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            pgid,
            log: log.to_path_buf(),
        })
    }

    /// The last lines of the process's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// How the process ended, if it has.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>, String> {
        let child = self.child.as_mut().expect("running");
        child.try_wait().map_err(|e| format!("{}: {e}", self.name))
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.exited()? {
            None => Ok(()),
            Some(status) => Err(format!(
                "{} exited ({status}); its log {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            )),
        }
    }

    /// Wait (at most `limit`) until `port` accepts connections and the process still runs.
    pub fn wait_listening(&mut self, port: u16, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        loop {
            self.check_alive()?;
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                // A listener bound by another process would also accept: make sure ours is
                // still alive (a failed bind makes these servers exit).
                std::thread::sleep(Duration::from_millis(50));
                return self.check_alive();
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "{} did not listen on port {port} within {limit:?}; its log:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every process of the group (NGINX: the master and its workers).
    pub fn pids(&self) -> Vec<i32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| stat_fields(pid).is_some_and(|f| f.pgrp == self.pgid))
            .collect()
    }

    /// CPU time and RSS of the whole group now.
    pub fn usage(&self) -> Usage {
        let mut usage = Usage::default();
        for pid in self.pids() {
            if let Some(f) = stat_fields(pid) {
                usage.cpu_secs += f.cpu_ticks as f64 / clock_ticks();
            }
            usage.rss_bytes += vm_rss(pid).unwrap_or(0);
        }
        usage
    }

    /// Open descriptors of the whole group (the entries of `/proc/<pid>/fd`): sockets, and the
    /// few files a server keeps open.
    pub fn open_fds(&self) -> usize {
        self.pids()
            .into_iter()
            .filter_map(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).ok())
            .map(|dir| dir.count())
            .sum()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        unregister(self.pgid);
    }
}

struct StatFields {
    pgrp: i32,
    cpu_ticks: u64,
}

/// The process group and utime + stime of `pid`, from `/proc/<pid>/stat`.
fn stat_fields(pid: i32) -> Option<StatFields> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After comm: state is field 3 of proc(5), so field n is fields[n - 3].
    let pgrp = fields.get(5 - 3)?.parse().ok()?;
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(StatFields {
        pgrp,
        cpu_ticks: utime + stime,
    })
}

/// VmRSS of `pid` in bytes, from `/proc/<pid>/status`.
fn vm_rss(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn clock_ticks() -> f64 {
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The number of CPUs and the memory of this machine, for the report.
pub fn machine() -> (usize, f64) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    (cpus, mem_kib / 1024.0 / 1024.0)
}
