//! A real PostgreSQL server for a test: `initdb` into a temporary directory and `pg_ctl` on a
//! free loopback port, as the `postgres` user when the tests run as root (PostgreSQL refuses to
//! run as root). Stopped (only the server it started) when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory of PostgreSQL's server programs: Debian's /usr/lib/postgresql/N/bin (newest),
/// else whatever `initdb` is on the PATH. Fails, never skips, when there is none.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(p) = found.pop() {
        return p;
    }
    let which = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match which {
        Some(p) if !p.is_empty() => Path::new(&p).parent().expect("bin dir").to_path_buf(),
        _ => panic!("PostgreSQL's server programs (initdb, pg_ctl) are not installed: the PostgreSQL store tests need Debian's `postgresql` package (apt-get install -y postgresql). Refusing to pass without running."),
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The uid and gid of the `postgres` user.
fn postgres_ids() -> (u32, u32) {
    let out = |flag: &str| {
        let o = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        assert!(
            o.status.success(),
            "the tests run as root and need a `postgres` user to run PostgreSQL as (Debian's postgresql package creates it)"
        );
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<u32>()
            .expect("numeric id")
    };
    (out("-u"), out("-g"))
}

/// A free loopback port (bound and released: the program that needs it binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A running PostgreSQL server of this test.
pub struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
}

impl Postgres {
    /// initdb and start a server (fsync on, as in production: a commit is durable).
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("pgdata");
        let log = dir.path().join("postgres.log");
        std::fs::create_dir(&data).expect("mkdir pgdata");
        std::fs::write(&log, b"").expect("log file");
        if is_root() {
            use std::os::unix::fs::PermissionsExt;
            let (uid, gid) = postgres_ids();
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
            for p in [&data, &log] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
            }
        }
        let pg = Postgres {
            _dir: dir,
            data,
            log,
            bin,
            port: free_port(),
        };
        let init = pg
            .command("initdb")
            .arg("-D")
            .arg(&pg.data)
            .args(["-U", "rdv", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            init.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        pg.pg_ctl_start();
        pg
    }

    /// A command of PostgreSQL's, as `postgres` when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn pg_ctl_start(&self) {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=on -c max_connections=200",
                self.port
            ))
            .arg("start")
            .output()
            .expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "PostgreSQL did not start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }

    /// Stop the server (fast shutdown), keeping its data.
    pub fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "60", "-m", "fast", "stop"])
            .output();
    }

    /// Crash the server: immediate shutdown, no checkpoint; the restart recovers from the WAL.
    pub fn crash(&self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "60", "-m", "immediate", "stop"])
            .output();
    }

    /// The server's processes: the postmaster (first line of postmaster.pid) and its children.
    fn pids(&self) -> Vec<u32> {
        let Ok(text) = std::fs::read_to_string(self.data.join("postmaster.pid")) else {
            return Vec::new();
        };
        let Some(main) = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u32>().ok())
        else {
            return Vec::new();
        };
        let mut pids = vec![main];
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // Field 4, after the parenthesised command name.
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(main) {
                pids.push(pid);
            }
        }
        pids
    }

    fn signal(&self, sig: &str) {
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args([sig, &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }

    /// Stop every process of the server (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Let it run again after [`Postgres::freeze`].
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    /// Start it again after [`Postgres::stop`] or [`Postgres::crash`], on the same port.
    pub fn restart(&self) {
        self.pg_ctl_start();
    }

    /// A connection URL for database `db` ("postgres" always exists).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://rdv@127.0.0.1:{}/{db}", self.port)
    }

    /// Create a database.
    pub fn create_db(&self, name: &str) {
        let out = self
            .command("createdb")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "rdv",
                name,
            ])
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Run one SQL statement with psql; its output, unaligned.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .command("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "rdv"])
            .args([
                "-d",
                db,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The end of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.thaw();
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "30", "-m", "immediate", "stop"])
            .output();
    }
}
