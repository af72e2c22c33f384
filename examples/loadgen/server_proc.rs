//! `rdv serve` (or the library server) as a child process: spawn, log capture, /proc stats,
//! stop by PID.

use crate::START_TIMEOUT;
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// CPU time and memory of a process, from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ProcStats {
    pub(crate) cpu_secs: f64,
    pub(crate) rss_kib: u64,
    pub(crate) hwm_kib: u64,
}

pub(crate) fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

pub(crate) fn proc_stats(pid: u32) -> Result<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start with field 3, `state`.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(f.get(i)
            .ok_or_else(|| anyhow!("short /proc/{pid}/stat"))?
            .parse::<f64>()?)
    };
    // utime is field 14, stime field 15 (1-based): indices 11 and 12 after `state`.
    let cpu_secs = (ticks(11)? + ticks(12)?) / clock_ticks_per_sec();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcStats {
        cpu_secs,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}

pub(crate) type LogLines = Arc<Mutex<Vec<(Instant, String)>>>;

/// A `rdv serve` child process on 127.0.0.1.
pub(crate) struct ServerProc {
    pub(crate) name: String,
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    /// From spawn to the `listening on` line.
    pub(crate) startup: Duration,
    pub(crate) spawned: Instant,
    pub(crate) log: LogLines,
}

impl ServerProc {
    /// `rdv serve` on 127.0.0.1 with limits out of the way, plus `extra` options.
    pub(crate) fn spawn(
        name: &str,
        bin: &Path,
        data: &Path,
        extra: &[&str],
        verbose: bool,
    ) -> Result<Self> {
        ensure!(
            bin.exists(),
            "{} not found: build it with `cargo build --release` or pass --bin",
            bin.display()
        );
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--no-onion", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(["--rate", "1000000", "--max-connections", "4096"])
            .args(extra);
        Self::spawn_cmd(name, cmd, verbose)
    }

    /// Any command that prints `listening on ADDR` on standard output once it serves.
    pub(crate) fn spawn_cmd(name: &str, mut cmd: Command, verbose: bool) -> Result<Self> {
        let spawned = Instant::now();
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let (tx, rx) = mpsc::channel();
        // Both pipes are drained for the server's whole life, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send((Instant::now(), addr.trim().to_string()));
                    }
                }
            }
        });
        let log: LogLines = Arc::default();
        let log2 = log.clone();
        let tag = name.to_string();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if verbose {
                    eprintln!("[{tag}] {line}");
                }
                if let Ok(mut l) = log2.lock() {
                    l.push((Instant::now(), line));
                }
            }
        });
        let mut me = ServerProc {
            name: name.to_string(),
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            startup: Duration::ZERO,
            spawned,
            log,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok((at, addr)) => {
                me.startup = at - spawned;
                me.addr = addr.parse().context("parsing the listen address")?;
                Ok(me)
            }
            Err(_) => {
                let lines = me.log_lines();
                bail!(
                    "server {name} did not print `listening on` within {START_TIMEOUT:?}; log:\n{}",
                    lines.join("\n")
                )
            }
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn stats(&self) -> ProcStats {
        proc_stats(self.pid()).unwrap_or_default()
    }

    pub(crate) fn log_lines(&self) -> Vec<String> {
        self.log
            .lock()
            .map(|l| l.iter().map(|(_, s)| s.clone()).collect())
            .unwrap_or_default()
    }

    /// When a log line containing `needle` appeared, if it did.
    pub(crate) fn log_time(&self, needle: &str) -> Option<(Instant, String)> {
        self.log
            .lock()
            .ok()?
            .iter()
            .find(|(_, l)| l.contains(needle))
            .cloned()
    }

    /// SIGTERM by PID, wait for the exit (SIGKILL by PID after 20 s). Returns the stop time.
    pub(crate) fn stop(mut self) -> Result<Duration> {
        let t0 = Instant::now();
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        while t0.elapsed() < Duration::from_secs(20) {
            if self.child.try_wait()?.is_some() {
                return Ok(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!(
            "server {} did not stop after SIGTERM; killing it",
            self.name
        );
        self.child.kill()?;
        self.child.wait()?;
        Ok(t0.elapsed())
    }
}

impl ServerProc {
    /// SIGKILL by PID: a crash.
    pub(crate) fn kill_hard(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
