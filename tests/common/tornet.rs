//! A private Tor network on loopback (scripts/tornet.sh) and `rdv serve` processes on it, for
//! the Tor end-to-end tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Fail (never skip) when the private network's programs are missing.
pub fn require_tor() {
    for bin in ["tor", "tor-gencert"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(found, "`{bin}` is not installed: the Tor end-to-end tests need Debian's `tor` package (apt-get install -y tor). Refusing to pass without running.");
    }
}

/// scripts/tornet.sh.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tornet.sh")
}

/// The private network; stopped (only the processes it started) when dropped.
pub struct Tornet {
    /// The network's directory.
    pub dir: PathBuf,
}

impl Tornet {
    /// Start on `dir`, its ports from `base_port` on.
    pub fn start(dir: &Path, base_port: u16) -> Self {
        let out = Command::new("bash")
            .arg(script())
            .args(["start"])
            .arg(dir)
            .args(["--base-port", &base_port.to_string(), "--timeout", "180"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run scripts/tornet.sh");
        let net = Tornet {
            dir: dir.to_path_buf(),
        };
        assert!(
            out.status.success(),
            "private Tor network did not start:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        net
    }
    /// The arti configuration that joins the network.
    pub fn arti_toml(&self) -> PathBuf {
        self.dir.join("arti.toml")
    }
}

impl Drop for Tornet {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}

/// A running `rdv serve` whose stdout lines arrive on a channel.
pub struct Serve {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Serve {
    /// `rdv serve --data DATA ARGS…`, standard error into `log`.
    pub fn start(args: &[&str], data: &Path, log: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rdv"))
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("start rdv serve");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Serve { child, lines }
    }

    /// Wait for a standard output line starting with `prefix`; the rest of it.
    pub fn wait_line(&self, prefix: &str, timeout: Duration, log: &Path) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l[prefix.len()..].trim().to_string(),
                Ok(_) => {}
                Err(_) => panic!(
                    "rdv serve printed no {prefix:?} line within {timeout:?}; its log:\n{}",
                    tail(log)
                ),
            }
        }
    }

    /// Wait (bounded) for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    /// SIGTERM, then SIGKILL after 20 s.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last 40 lines of a log.
pub fn tail(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Run the `rdv` binary with `args` (no standard input) and wait for it.
pub fn rdv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rdv"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rdv")
}

/// The rest of the first standard output line of `out` starting with `name`.
pub fn field(out: &Output, name: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| {
            panic!(
                "no {name:?} in output:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .trim()
        .to_string()
}
