//! End-to-end over a real private Tor network on loopback (scripts/tornet.sh, Debian's `tor`):
//! (a) the server as an arti onion service, offer and accept as separate arti clients, a wrong
//!     passphrase fails;
//! (b) the torrc-example path: C tor hosts the service in front of the TCP listener;
//! (c) the server restarts on its data dir and the same onion address serves the earlier links.
//!
//! Needs `tor` and `tor-gencert` on PATH; without them this test FAILS (it never skips).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BASE_PORT: u16 = 16300;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tornet.sh")
}

/// The private network; stopped (only the processes it started) when dropped.
struct Tornet {
    dir: PathBuf,
}

impl Tornet {
    fn start(dir: &Path) -> Self {
        let out = Command::new("bash")
            .arg(script())
            .args(["start"])
            .arg(dir)
            .args(["--base-port", &BASE_PORT.to_string(), "--timeout", "180"])
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
    fn arti_toml(&self) -> PathBuf {
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
struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Serve {
    fn start(args: &[&str], data: &Path, log: &Path) -> Self {
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

    fn wait_line(&self, prefix: &str, timeout: Duration, log: &Path) -> String {
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

    fn stop(mut self) {
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

fn tail(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn rdv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rdv"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rdv")
}

fn field(out: &Output, name: &str) -> String {
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

struct Offered {
    link: String,
    passphrase: String,
}

/// Offer over Tor, retrying while the onion service's descriptor is not yet reachable.
fn offer(onion: &str, payload: &str, arti: &Path, tor_dir: &Path, patience: Duration) -> Offered {
    let deadline = Instant::now() + patience;
    loop {
        let out = rdv(&[
            "offer",
            "--server",
            onion,
            "--payload",
            payload,
            "--two-channel",
            "--kdf",
            "moderate",
            "--tor-config",
            arti.to_str().unwrap(),
            "--tor-dir",
            tor_dir.to_str().unwrap(),
            "--connect-timeout",
            "30s",
        ]);
        if out.status.success() {
            return Offered {
                link: field(&out, "link:"),
                passphrase: field(&out, "passphrase:"),
            };
        }
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            Instant::now() < deadline,
            "offer over Tor kept failing:\n{err}"
        );
        eprintln!(
            "offer not yet through, retrying: {}",
            err.lines().last().unwrap_or("")
        );
        std::thread::sleep(Duration::from_secs(3));
    }
}

fn accept(link: &str, pass: &str, arti: &Path, tor_dir: &Path) -> Output {
    rdv(&[
        "accept",
        link,
        "--passphrase",
        pass,
        "--tor-config",
        arti.to_str().unwrap(),
        "--tor-dir",
        tor_dir.to_str().unwrap(),
        "--connect-timeout",
        "60s",
    ])
}

fn assert_accepts(link: &str, pass: &str, payload: &str, arti: &Path, tor_dir: &Path) {
    let out = accept(link, pass, arti, tor_dir);
    assert!(
        out.status.success(),
        "accept failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), payload);
}

#[test]
fn offer_and_accept_over_a_private_tor_network() {
    for bin in ["tor", "tor-gencert"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(found, "`{bin}` is not installed: the Tor end-to-end tests need Debian's `tor` package (apt-get install -y tor). Refusing to pass without running.");
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = |p: &str| tmp.path().join(p);
    let mut times = Vec::new();

    let t0 = Instant::now();
    let net = Tornet::start(&t("tornet"));
    times.push(("private network start", t0.elapsed()));
    let arti = net.arti_toml();

    // (a) arti onion service; offer and accept as separate arti clients.
    let t1 = Instant::now();
    let serve = Serve::start(
        &["--tor-config", arti.to_str().unwrap()],
        &t("srv"),
        &t("srv.log"),
    );
    let onion = serve.wait_line("onion address:", Duration::from_secs(120), &t("srv.log"));
    serve.wait_line(
        "onion service reachable:",
        Duration::from_secs(240),
        &t("srv.log"),
    );
    times.push(("arti onion service launch to reachable", t1.elapsed()));
    assert!(onion.ends_with(".onion:7625"), "{onion}");

    let t2 = Instant::now();
    let payload = "simplex:/contact#/?v=2&smp=smp%3A%2F%2Fhidden.example%2Fabc";
    let o = offer(
        &onion,
        payload,
        &arti,
        &t("offerer"),
        Duration::from_secs(120),
    );
    times.push(("offer over Tor", t2.elapsed()));
    assert!(
        o.link.starts_with("rdv1:") && o.link.contains(".onion:7625?") && !o.link.contains("&p="),
        "{}",
        o.link
    );
    let t3 = Instant::now();
    assert_accepts(&o.link, &o.passphrase, payload, &arti, &t("accepter"));
    times.push(("accept over Tor", t3.elapsed()));

    let wrong = accept(&o.link, "not-the-passphrase", &arti, &t("accepter"));
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        err.contains("no link in this bucket opens with this passphrase"),
        "{err}"
    );

    // Only the advertised virtual port is served: `rdv info` works on it, not on another port.
    let probe = |target: &str| {
        rdv(&[
            "info",
            target,
            "--tor-config",
            arti.to_str().unwrap(),
            "--tor-dir",
            t("prober").to_str().unwrap(),
            "--connect-timeout",
            "20s",
        ])
    };
    let right = probe(&onion);
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
    assert!(String::from_utf8_lossy(&right.stdout).contains("links per bucket: 64"));
    let host = onion.rsplit_once(':').unwrap().0;
    let other = probe(&format!("{host}:81"));
    assert!(
        !other.status.success(),
        "a stream to port 81 must be refused"
    );

    // (c) restart on the same data dir: same onion address, earlier link still there.
    serve.stop();
    let t4 = Instant::now();
    let serve = Serve::start(
        &["--tor-config", arti.to_str().unwrap()],
        &t("srv"),
        &t("srv2.log"),
    );
    let onion2 = serve.wait_line("onion address:", Duration::from_secs(120), &t("srv2.log"));
    assert_eq!(onion2, onion, "the onion address survives a restart");
    serve.wait_line(
        "onion service reachable:",
        Duration::from_secs(240),
        &t("srv2.log"),
    );
    times.push(("restart to reachable", t4.elapsed()));
    assert_accepts(&o.link, &o.passphrase, payload, &arti, &t("accepter2"));
    serve.stop();

    // (b) torrc-example path: C tor hosts the onion service in front of `--no-onion --listen`.
    let port = BASE_PORT + 250;
    let listen = format!("127.0.0.1:{port}");
    let serve = Serve::start(
        &["--no-onion", "--listen", &listen],
        &t("srv-ctor"),
        &t("srv-ctor.log"),
    );
    serve.wait_line("listening on", Duration::from_secs(30), &t("srv-ctor.log"));
    let t5 = Instant::now();
    let hs = Command::new("bash")
        .arg(script())
        .arg("hs")
        .arg(&net.dir)
        .args(["rdvctor", &port.to_string(), "7625"])
        .stderr(Stdio::inherit())
        .output()
        .expect("start C tor onion service");
    assert!(hs.status.success(), "C tor onion service did not start");
    let host = String::from_utf8_lossy(&hs.stdout).trim().to_string();
    assert!(host.ends_with(".onion"), "{host}");
    let ctor_onion = format!("{host}:7625");
    let payload2 = "smp://via-c-tor.example/q";
    let o2 = offer(
        &ctor_onion,
        payload2,
        &arti,
        &t("offerer-ctor"),
        Duration::from_secs(180),
    );
    times.push(("C tor service start to first offer", t5.elapsed()));
    assert_accepts(
        &o2.link,
        &o2.passphrase,
        payload2,
        &arti,
        &t("accepter-ctor"),
    );
    serve.stop();

    eprintln!("wall times:");
    for (what, d) in &times {
        eprintln!("  {what:<42} {:>6.1} s", d.as_secs_f64());
    }
    drop(net);
}
