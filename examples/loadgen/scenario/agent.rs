//! `agent`: what a running `rdv agent` saves, over the private Tor network (scripts/tornet.sh).
//!
//! One arti onion service (`rdv serve`). Three ways of running the client, each an `rdv` process
//! as a user starts it, timed from its start to its exit: a fresh process with the embedded Tor
//! (its directory cache on disk from the previous runs, as a user's `~/.local/share/rdv/arti`),
//! `--socks` through a C tor client that is already running, and `--agent` through one running
//! agent; and a second agent with spares (`--spares 4 --spare-every 1s`: connections made ahead
//! that keep the onion service's descriptor, at a cost in anonymity, docs/AGENT.md), to measure
//! how much of the agent's gap to `--socks` is the descriptor download. Rounds alternate between
//! the four, so that the network's state is shared. Then many operations at once through each
//! agent, and as many through `--socks` for comparison.

use super::tor::{pct, Serve, Tornet};
use crate::report::table;
use crate::AgentArgs;
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `rdv agent`; SIGTERM when dropped.
struct Agent(Child);

impl Agent {
    fn start(bin: &Path, arti: &Path, dir: &Path, socket: &Path, extra: &[&str]) -> Result<Self> {
        let mut child = Command::new(bin)
            .arg("agent")
            .args(extra)
            .arg("--tor-config")
            .arg(arti)
            .arg("--tor-dir")
            .arg(dir.join("tor"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("agent.log"))?)
            .spawn()
            .context("starting rdv agent")?;
        let out = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = std::io::BufReader::new(out).lines();
        match lines.next() {
            Some(Ok(l)) if l.starts_with("agent listening on") => {}
            other => bail!("the agent did not start: {other:?}"),
        }
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Ok(Agent(child))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// How an `rdv` command reaches the network.
#[derive(Clone)]
enum Way {
    Fresh { arti: PathBuf, tor_dir: PathBuf },
    Socks(String),
    Agent(PathBuf),
    AgentSpares(PathBuf),
}

/// The spares of the second agent: four per server, a warm-up every second on average (a
/// bench's rate, so that each operation of the rounds finds one; the default is none).
const SPARES: [&str; 4] = ["--spares", "4", "--spare-every", "1s"];

impl Way {
    fn name(&self) -> &'static str {
        match self {
            Way::Fresh { .. } => "fresh process, embedded Tor",
            Way::Socks(_) => "--socks (a running C tor)",
            Way::Agent(_) => "--agent (a running rdv agent)",
            Way::AgentSpares(_) => "--agent, spares (--spares 4 --spare-every 1s)",
        }
    }

    fn args(&self) -> Vec<String> {
        match self {
            Way::Fresh { arti, tor_dir } => vec![
                "--tor-config".into(),
                arti.display().to_string(),
                "--tor-dir".into(),
                tor_dir.display().to_string(),
            ],
            Way::Socks(p) => vec!["--socks".into(), p.clone()],
            Way::Agent(s) | Way::AgentSpares(s) => {
                vec!["--agent".into(), s.display().to_string()]
            }
        }
    }
}

/// The `spares` object of the status of the agent at `socket`.
fn spares_of(bin: &Path, socket: &Path) -> Result<String> {
    let args = ["agent", "--status", "--json", "--socket"].map(String::from);
    let mut args = args.to_vec();
    args.push(socket.display().to_string());
    let (_, status) = timed(bin, &args, &[])?;
    Ok(serde_json::from_str::<serde_json::Value>(&status)
        .map(|v| v["spares"].to_string())
        .unwrap_or_default())
}

/// Run one `rdv` command to its end: its wall time and its standard output.
fn timed(bin: &Path, args: &[String], env: &[(&str, &str)]) -> Result<(Duration, String)> {
    let t = Instant::now();
    let out = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()?;
    let took = t.elapsed();
    ensure!(
        out.status.success(),
        "rdv {}: {}",
        args.first().map_or("", String::as_str),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or_default()
    );
    Ok((took, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn link_of(stdout: &str) -> Result<String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("link: "))
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no link in {stdout:?}"))
}

/// One offer through `way`: its time and the link.
fn offer(bin: &Path, way: &Way, onion: &str, i: usize) -> Result<(Duration, String)> {
    let mut args: Vec<String> = ["offer", "--server", onion, "--kdf", "test", "--payload"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(format!("smp://bench/{i}"));
    args.extend(way.args());
    let pass = format!("bench passphrase number {i}");
    let (d, out) = timed(bin, &args, &[("RDV_PASSPHRASE", &pass)])?;
    Ok((d, link_of(&out)?))
}

/// One accept of `link` through `way`.
fn accept(bin: &Path, way: &Way, link: &str) -> Result<Duration> {
    let mut args = vec!["accept".to_string()];
    args.extend(way.args());
    let (d, _) = timed(bin, &args, &[("RDV_LINK", link)])?;
    Ok(d)
}

struct Row {
    way: &'static str,
    what: String,
    ok: usize,
    failed: usize,
    times: Vec<Duration>,
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// `n` at once: offers, then accepts of the links they gave, each an `rdv` process.
fn at_once(bin: &Path, way: &Way, onion: &str, n: usize, base: usize) -> Result<[Row; 2]> {
    let offers: Vec<_> = (0..n)
        .map(|i| {
            let (bin, way, onion) = (bin.to_path_buf(), way.clone(), onion.to_string());
            std::thread::spawn(move || offer(&bin, &way, &onion, base + i))
        })
        .collect();
    let mut links = Vec::new();
    let mut o = Row {
        way: way.name(),
        what: format!("{n} offers at once"),
        ok: 0,
        failed: 0,
        times: Vec::new(),
    };
    for t in offers {
        match t.join().map_err(|_| anyhow!("a thread panicked"))? {
            Ok((d, link)) => {
                o.ok += 1;
                o.times.push(d);
                links.push(link);
            }
            Err(e) => {
                eprintln!("  offer failed: {e:#}");
                o.failed += 1;
            }
        }
    }
    let accepts: Vec<_> = links
        .into_iter()
        .map(|link| {
            let (bin, way) = (bin.to_path_buf(), way.clone());
            std::thread::spawn(move || accept(&bin, &way, &link))
        })
        .collect();
    let mut a = Row {
        way: way.name(),
        what: format!("{n} accepts at once"),
        ok: 0,
        failed: 0,
        times: Vec::new(),
    };
    for t in accepts {
        match t.join().map_err(|_| anyhow!("a thread panicked"))? {
            Ok(d) => {
                a.ok += 1;
                a.times.push(d);
            }
            Err(e) => {
                eprintln!("  accept failed: {e:#}");
                a.failed += 1;
            }
        }
    }
    Ok([o, a])
}

pub(crate) async fn run(a: AgentArgs) -> Result<()> {
    let root = tempfile::Builder::new()
        .prefix("rdv-agentbench-")
        .tempdir_in(&a.common.data_root)?;
    let t = |p: &str| root.path().join(p);
    let bin = std::fs::canonicalize(&a.common.bin).context("--bin")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tornet.sh");
    eprintln!("starting the private Tor network");
    let net = Tornet::start(&script, &t("net"), a.base_port)?;
    let arti = t("net").join("arti.toml");
    let arti_s = arti.to_str().ok_or_else(|| anyhow!("path"))?.to_string();
    let srv = Serve::start(&bin, &["--tor-config", &arti_s], &t("srv"), &t("srv.log"))?;
    let onion = srv.wait_line("onion address:", Duration::from_secs(120))?;
    srv.wait_line("onion service reachable:", Duration::from_secs(300))?;
    let socks_port = a.base_port + 250;
    net.client("bench", socks_port)?;
    std::fs::create_dir_all(t("agent"))?;
    // In a directory the agent creates (private): it refuses one others may enter.
    let socket = t("agent").join("run").join("agent.sock");
    let started = Instant::now();
    let agent = Agent::start(&bin, &arti, &t("agent"), &socket, &[])?;
    eprintln!(
        "agent up after {:.1} s (bootstrap from nothing)",
        started.elapsed().as_secs_f64()
    );
    std::fs::create_dir_all(t("agent-spares"))?;
    let spare_socket = t("agent-spares").join("run").join("agent.sock");
    let spare_agent = Agent::start(&bin, &arti, &t("agent-spares"), &spare_socket, &SPARES)?;
    let ways = [
        Way::Fresh {
            arti: arti.clone(),
            tor_dir: t("cli-tor"),
        },
        Way::Socks(format!("127.0.0.1:{socks_port}")),
        Way::Agent(socket.clone()),
        Way::AgentSpares(spare_socket.clone()),
    ];
    // Warm-up: every way once (the fresh process's directory cache is filled here).
    for (i, way) in ways.iter().enumerate() {
        let (_, link) = offer(&bin, way, &onion, 1_000_000 + i)
            .with_context(|| format!("warm-up offer, {}", way.name()))?;
        accept(&bin, way, &link).with_context(|| format!("warm-up accept, {}", way.name()))?;
    }
    let mut offers: Vec<Vec<Duration>> = vec![Vec::new(); ways.len()];
    let mut accepts: Vec<Vec<Duration>> = vec![Vec::new(); ways.len()];
    let mut failed = vec![0usize; ways.len()];
    for r in 0..a.rounds {
        eprintln!("round {} of {}", r + 1, a.rounds);
        for (w, way) in ways.iter().enumerate() {
            let run = offer(&bin, way, &onion, r * 10 + w).and_then(|(d, link)| {
                offers[w].push(d);
                accept(&bin, way, &link)
            });
            match run {
                Ok(d) => accepts[w].push(d),
                Err(e) => {
                    eprintln!("  {}: {e:#}", way.name());
                    failed[w] += 1;
                }
            }
        }
    }
    let mut rows = Vec::new();
    for (w, way) in ways.iter().enumerate() {
        for (what, times) in [("offer", &offers[w]), ("accept", &accepts[w])] {
            rows.push(Row {
                way: way.name(),
                what: format!("{what}, one at a time"),
                ok: times.len(),
                failed: failed[w],
                times: times.clone(),
            });
        }
    }
    // How many operations of the second agent found a spare: after the rounds, and at the end.
    let spares_after_rounds = spares_of(&bin, &spare_socket)?;
    for way in &ways[1..] {
        eprintln!("{} at once: {}", a.at_once, way.name());
        rows.extend(at_once(&bin, way, &onion, a.at_once, 2_000_000)?);
    }
    let spares_at_end = spares_of(&bin, &spare_socket)?;
    drop(agent);
    drop(spare_agent);
    drop(srv);
    drop(net);
    // The baseline of the ratio column: `--socks`, the same operation, one at a time.
    let base = |what: &str| {
        rows.iter()
            .find(|r| r.way == ways[1].name() && r.what == format!("{what}, one at a time"))
            .map(|r| pct(&mut r.times.clone(), 0.5))
    };
    println!();
    table(
        &[
            "client",
            "measurement",
            "ok",
            "failed",
            "p50",
            "p90",
            "max",
            "p50 / --socks p50",
        ],
        &rows
            .iter()
            .map(|r| {
                let mut v = r.times.clone();
                let p50 = pct(&mut v, 0.5);
                let kind = if r.what.contains("offer") {
                    "offer"
                } else {
                    "accept"
                };
                let ratio = base(kind).filter(|b| !b.is_zero()).map_or("-".into(), |b| {
                    format!("{:.2}", p50.as_secs_f64() / b.as_secs_f64())
                });
                vec![
                    r.way.to_string(),
                    r.what.clone(),
                    r.ok.to_string(),
                    r.failed.to_string(),
                    secs(p50),
                    secs(pct(&mut v, 0.9)),
                    secs(v.iter().copied().max().unwrap_or_default()),
                    ratio,
                ]
            })
            .collect::<Vec<_>>(),
    );
    println!("(each operation an rdv process, timed from its start to its exit; --kdf test, stamps at the server's default effort)");
    println!("spares of the second agent after the rounds (one at a time): {spares_after_rounds}");
    println!("spares of the second agent at the end: {spares_at_end}");
    Ok(())
}
