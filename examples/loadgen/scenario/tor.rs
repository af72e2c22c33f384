//! `tor`: capacity over the private Tor network (scripts/tornet.sh): the embedded arti onion
//! service against a C tor onion service in front of `rdv serve --listen`, in the same run.
//!
//! For each service and each concurrency level: that many offers, then that many accepts all at
//! once (each on its own isolated circuit, from one arti client in this process), then offers at
//! that concurrency for a fixed time. Latencies (p50/p99) and the server side's CPU: the `rdv
//! serve` process, plus the C tor process for the C tor service.

use crate::report::{ms, table};
use crate::server_proc::proc_stats;
use crate::TorArgs;
use anyhow::{anyhow, bail, ensure, Context, Result};
use rdv::client::tor::TorConnector;
use rdv::client::{Client, ClientConfig};
use rdv::clock::SystemClock;
use rdv::proto::{KdfProfile, Passphrase, ServerAddr};
use rdv::tor::{TorSettings, Vanguards};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The private network; stopped (only the processes it started) when dropped.
pub(crate) struct Tornet {
    script: PathBuf,
    dir: PathBuf,
}

impl Tornet {
    pub(crate) fn start(script: &Path, dir: &Path, base_port: u16) -> Result<Self> {
        let out = Command::new("bash")
            .arg(script)
            .arg("start")
            .arg(dir)
            .args(["--base-port", &base_port.to_string(), "--timeout", "180"])
            .output()
            .context("running scripts/tornet.sh")?;
        ensure!(
            out.status.success(),
            "the private Tor network did not start:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Tornet {
            script: script.to_path_buf(),
            dir: dir.to_path_buf(),
        })
    }

    fn hs(&self, name: &str, target: u16) -> Result<String> {
        let out = Command::new("bash")
            .arg(&self.script)
            .arg("hs")
            .arg(&self.dir)
            .args([name, &target.to_string(), "7625"])
            .stderr(Stdio::inherit())
            .output()?;
        ensure!(
            out.status.success(),
            "the C tor onion service did not start"
        );
        Ok(format!(
            "{}:7625",
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }

    /// Start a C tor client `name` with a SOCKS port at `port`.
    pub(crate) fn client(&self, name: &str, port: u16) -> Result<()> {
        let out = Command::new("bash")
            .arg(&self.script)
            .arg("client")
            .arg(&self.dir)
            .args([name, &port.to_string()])
            .stderr(Stdio::inherit())
            .output()?;
        ensure!(out.status.success(), "the C tor client did not start");
        Ok(())
    }

    /// PID of the C tor process of onion service `name`.
    fn hs_pid(&self, name: &str) -> Result<u32> {
        let pids = std::fs::read_to_string(self.dir.join("pids"))?;
        pids.lines()
            .find_map(|l| {
                let (pid, n) = l.split_once(' ')?;
                (n == format!("hs-{name}")).then(|| pid.parse().ok())?
            })
            .ok_or_else(|| anyhow!("no pid recorded for hs-{name}"))
    }
}

impl Drop for Tornet {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}

/// An `rdv serve` child whose stdout lines arrive on a channel; killed when dropped.
pub(crate) struct Serve {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Serve {
    pub(crate) fn start(bin: &Path, args: &[&str], data: &Path, log: &Path) -> Result<Self> {
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(args)
            .args(["--rate", "1000000", "--max-connections", "4096"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .context("starting rdv serve")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Serve { child, lines })
    }

    pub(crate) fn wait_line(&self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(l[prefix.len()..].trim().to_string()),
                Ok(_) => {}
                Err(_) => bail!("rdv serve printed no {prefix:?} within {timeout:?}"),
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// CPU seconds of the server side so far.
fn cpu(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|p| proc_stats(*p).map(|s| s.cpu_secs).unwrap_or(0.0))
        .sum()
}

struct Row {
    service: String,
    what: String,
    ok: usize,
    failed: usize,
    rate: Option<f64>,
    p50: Duration,
    p99: Duration,
    cpu_ms_per_op: f64,
}

/// One measurement round against `onion`.
async fn measure(
    client: &Arc<Client>,
    onion: &str,
    service: &str,
    pids: &[u32],
    concurrency: usize,
    offer_secs: u64,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let server = ServerAddr::parse(onion)?;
    // Offers to accept.
    let mut links = Vec::new();
    for i in 0..concurrency {
        let o = client
            .offer(
                &server,
                format!("torbench {i}").as_bytes(),
                Passphrase::new(format!("torbench-pass-{i}-x")),
                KdfProfile::Test,
            )
            .await
            .map_err(|e| anyhow!("offer: {}", rdv::config::report(&e)))?;
        links.push(o.link);
    }
    // All accepts at once.
    let c0 = cpu(pids);
    let tasks: Vec<_> = links
        .into_iter()
        .map(|link| {
            let c = client.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                let began = rdv::clock::Clock::now_precise(&SystemClock);
                let r = c.accept(&link, None).await;
                (t.elapsed(), began, r.is_ok())
            })
        })
        .collect();
    let (mut lat, mut failed) = (Vec::new(), 0);
    for t in tasks {
        let (d, began, ok) = t.await?;
        // The tail, with its wall-clock start, to find in the services' logs (`--keep`).
        if d > Duration::from_secs(5) || !ok {
            eprintln!(
                "{service}: an accept begun at {} took {d:.1?} ({})",
                humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + began),
                if ok { "ok" } else { "failed" }
            );
        }
        if ok {
            lat.push(d);
        } else {
            failed += 1;
        }
    }
    let spent = cpu(pids) - c0;
    rows.push(Row {
        service: service.to_string(),
        what: format!("{concurrency} concurrent accepts"),
        ok: lat.len(),
        failed,
        rate: None,
        p50: pct(&mut lat, 0.5),
        p99: pct(&mut lat, 0.99),
        cpu_ms_per_op: spent * 1e3 / (lat.len() + failed).max(1) as f64,
    });
    // Offers at this concurrency for a while.
    let c0 = cpu(pids);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(offer_secs);
    let tasks: Vec<_> = (0..concurrency)
        .map(|w| {
            let (c, server) = (client.clone(), server.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                let mut i = 0;
                while Instant::now() < deadline && i < 10_000 {
                    i += 1;
                    let t = Instant::now();
                    let r = c
                        .offer(
                            &server,
                            b"torbench offer",
                            Passphrase::new(format!("torbench-{w}-{i}-pass")),
                            KdfProfile::Test,
                        )
                        .await;
                    out.push((t.elapsed(), r.is_ok()));
                }
                out
            })
        })
        .collect();
    let (mut lat, mut failed) = (Vec::new(), 0);
    for t in tasks {
        for (d, ok) in t.await? {
            if ok {
                lat.push(d);
            } else {
                failed += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let spent = cpu(pids) - c0;
    rows.push(Row {
        service: service.to_string(),
        what: format!("offers, {concurrency} at a time"),
        ok: lat.len(),
        failed,
        rate: Some(lat.len() as f64 / secs),
        p50: pct(&mut lat, 0.5),
        p99: pct(&mut lat, 0.99),
        cpu_ms_per_op: spent * 1e3 / (lat.len() + failed).max(1) as f64,
    });
    Ok(())
}

pub(crate) async fn run(a: TorArgs) -> Result<()> {
    rdv::tor::install_crypto_provider();
    // With RUST_LOG set, the client's own log (arti's among it) on stderr.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let mut root = tempfile::Builder::new()
        .prefix("rdv-torbench-")
        .tempdir_in(&a.common.data_root)?;
    if a.common.keep {
        // The services' logs (`srv-*.log`) and the network's directories stay for a look.
        root.disable_cleanup(true);
        eprintln!("keeping {}", root.path().display());
    }
    let t = |p: &str| root.path().join(p);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tornet.sh");
    eprintln!("starting the private Tor network");
    let net = Tornet::start(&script, &t("net"), a.base_port)?;
    let arti = t("net").join("arti.toml");
    let arti_s = arti.to_str().ok_or_else(|| anyhow!("path"))?.to_string();

    // One arti service per rendezvous bound compared, started together.
    let mut arti_srvs = Vec::new();
    for &n in &a.arti_max_rendezvous {
        let bound = n.to_string();
        let srv = Serve::start(
            &a.common.bin,
            &["--tor-config", &arti_s, "--max-rendezvous", &bound],
            &t(&format!("srv-arti-{n}")),
            &t(&format!("srv-arti-{n}.log")),
        )?;
        arti_srvs.push((n, srv));
    }
    let mut artis = Vec::new();
    for (n, srv) in &arti_srvs {
        let onion = srv.wait_line("onion address:", Duration::from_secs(120))?;
        srv.wait_line("onion service reachable:", Duration::from_secs(300))?;
        artis.push((
            format!("arti onion service (--max-rendezvous {n})"),
            onion,
            vec![srv.pid()],
        ));
    }
    let port = a.base_port + 280;
    let ctor_srv = Serve::start(
        &a.common.bin,
        &["--no-onion", "--listen", &format!("127.0.0.1:{port}")],
        &t("srv-ctor"),
        &t("srv-ctor.log"),
    )?;
    ctor_srv.wait_line("listening on", Duration::from_secs(30))?;
    let ctor_onion = net.hs("bench", port)?;
    let ctor_pids = vec![ctor_srv.pid(), net.hs_pid("bench")?];

    let settings = TorSettings {
        config_file: Some(arti.clone()),
        state_dir: t("client/state"),
        cache_dir: t("client/cache"),
        bootstrap_timeout: Duration::from_secs(180),
        vanguards: Vanguards::Lite,
        client_auth_dir: None,
    };
    let tor = rdv::tor::bootstrap(&settings, |_, _| {}).await?;
    let client = Arc::new(Client::new(
        Arc::new({
            // The service's capacity is measured, not the client's patience with a descriptor
            // that directories lose at the end of each (short, private-network) time period.
            let mut c = TorConnector::new(tor);
            c.absent_grace = Duration::from_secs(150);
            c
        }),
        ClientConfig {
            connect_timeout: Duration::from_secs(150),
            ..Default::default()
        },
        Arc::new(SystemClock),
    ));
    // Both services answer before anything is measured.
    // (A service that has just started may not have published its descriptor yet, and a client
    // says so at once rather than waiting: try again for a while.)
    for onion in artis.iter().map(|(_, o, _)| o).chain([&ctor_onion]) {
        let addr = ServerAddr::parse(onion)?;
        let until = Instant::now() + Duration::from_secs(180);
        loop {
            match client.info(&addr).await {
                Ok(_) => break,
                Err(e) if Instant::now() < until => {
                    eprintln!("warm-up {onion}: {}; trying again", rdv::config::report(&e));
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                Err(e) => bail!("warm-up {onion}: {}", rdv::config::report(&e)),
            }
        }
    }
    let mut rows = Vec::new();
    for &n in &a.concurrency {
        let ctor = (
            "C tor onion service".to_string(),
            ctor_onion.clone(),
            ctor_pids.clone(),
        );
        for (service, onion, pids) in artis.iter().chain([&ctor]) {
            eprintln!("{service}: {n} at a time");
            measure(&client, onion, service, pids, n, a.offer_secs, &mut rows).await?;
        }
    }
    println!();
    table(
        &[
            "service",
            "measurement",
            "ok",
            "failed",
            "offers/s",
            "p50",
            "p99",
            "server CPU ms/op",
        ],
        &rows
            .iter()
            .map(|r| {
                vec![
                    r.service.clone(),
                    r.what.clone(),
                    r.ok.to_string(),
                    r.failed.to_string(),
                    r.rate.map_or("-".into(), |x| format!("{x:.1}")),
                    ms(r.p50),
                    ms(r.p99),
                    format!("{:.1}", r.cpu_ms_per_op),
                ]
            })
            .collect::<Vec<_>>(),
    );
    println!("(server CPU: the rdv serve process; for the C tor service plus its tor process)");
    drop(arti_srvs);
    drop(ctor_srv);
    drop(net);
    Ok(())
}
