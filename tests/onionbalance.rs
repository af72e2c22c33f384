//! Onionbalance in front of a cluster, over the private Tor network (scripts/tornet.sh): two
//! `rdv serve --no-onion --store postgres://…` frontends on one real PostgreSQL database, each
//! behind a C tor onion service that is an Onionbalance instance, published by Onionbalance
//! (v3, `--is-testnet`) under one front address. `rdv offer` and `rdv accept` (arti clients,
//! each run on fresh circuits) go to the front address only; the frontends' own metrics show
//! that both served requests, and every link offered is accepted whichever frontend answers.
//!
//! Needs Debian's `tor`, PostgreSQL and Onionbalance (scripts/onionbalance-install.sh; .ci/run
//! runs it). Fails, never skips, when one is missing.

mod common;

use common::pg::Postgres;
use common::tornet::{field, rdv, require_tor, script, Tornet};
use common::{free_port, metric, ServerProcess};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BASE_PORT: u16 = 16700;

/// The directory holding onionbalance and onionbalance-config.
fn onionbalance_bin() -> PathBuf {
    let dir = match std::env::var_os("ONIONBALANCE_BIN") {
        Some(d) => PathBuf::from(d),
        None => Path::new(&std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/rdv/onionbalance-0.2.4/bin"),
    };
    assert!(
        dir.join("onionbalance").exists() && dir.join("onionbalance-config").exists(),
        "Onionbalance is not installed in {}: run scripts/onionbalance-install.sh (or set ONIONBALANCE_BIN). Refusing to pass without running.",
        dir.display()
    );
    dir
}

fn tornet(args: &[&str], net: &Path) -> String {
    let out = Command::new("bash")
        .arg(script())
        .arg(args[0])
        .arg(net)
        .args(&args[1..])
        .env("ONIONBALANCE_BIN", onionbalance_bin())
        .stderr(Stdio::inherit())
        .output()
        .expect("run tornet.sh");
    assert!(out.status.success(), "tornet.sh {args:?} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The PID tornet.sh recorded last for process `name` of the network in `dir`.
fn recorded_pid(dir: &Path, name: &str) -> u32 {
    std::fs::read_to_string(dir.join("pids"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, n)| *n == name)
        .map(|(pid, _)| pid.parse().unwrap())
        .next_back()
        .unwrap_or_else(|| panic!("no {name} in the network's pid file"))
}

#[test]
fn offers_and_accepts_through_one_front_address_reach_both_frontends() {
    require_tor();
    onionbalance_bin();
    let tmp = tempfile::tempdir().unwrap();
    let t = |p: &str| tmp.path().join(p);
    let net = Tornet::start(&t("tornet"), BASE_PORT);
    let arti = net.arti_toml();
    let arti = arti.to_str().unwrap();
    let pg = Postgres::start();
    pg.create_db("front");
    let url = pg.url("front");

    // Two frontends on the shared store, each behind its own C tor instance of the front.
    let metrics: Vec<SocketAddr> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap())
        .collect();
    let fronts: Vec<ServerProcess> = (0..2)
        .map(|i| {
            let m = metrics[i].to_string();
            let log = std::fs::File::create(t(&format!("be{i}.log"))).unwrap();
            ServerProcess::start_with(
                &t(&format!("be{i}")),
                &["--store", &url, "--metrics", &m],
                &[],
                log.into(),
            )
        })
        .collect();
    for m in &metrics {
        assert_eq!(metric(*m, "rdv_stores_total{outcome=\"stored\"}"), 0.0);
    }
    let master = tornet(&["ob-key", "front"], &net.dir);
    assert!(master.ends_with(".onion"), "{master}");
    for (i, f) in fronts.iter().enumerate() {
        let host = tornet(
            &[
                "hs",
                &format!("be{i}"),
                &f.addr.port().to_string(),
                "7625",
                "--ob-master",
                &master,
            ],
            &net.dir,
        );
        assert_ne!(host, master);
    }
    let started = Instant::now();
    let front = tornet(
        &["ob", "front", &(BASE_PORT + 280).to_string(), "be0", "be1"],
        &net.dir,
    );
    assert_eq!(front, master);
    eprintln!(
        "Onionbalance published the front after {:?}",
        started.elapsed()
    );
    let server = format!("{master}:7625");

    // Offers through the front address, each a fresh client process (its own circuits and
    // introduction point choice), retried while the front descriptor is not yet found.
    let mut offers = Vec::new();
    let mut before = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    for i in 0..8 {
        let payload = format!("smp://front-{i}.example/q");
        loop {
            let t0 = Instant::now();
            let out = rdv(&[
                "offer",
                "--server",
                &server,
                "--payload",
                &payload,
                "--two-channel",
                "--kdf",
                "test",
                "--tor-config",
                arti,
                "--tor-dir",
                t(&format!("offerer{i}")).to_str().unwrap(),
                "--connect-timeout",
                "60s",
            ]);
            if out.status.success() {
                offers.push((payload, field(&out, "link:"), field(&out, "passphrase:")));
                before.push(t0.elapsed());
                break;
            }
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(
                Instant::now() < deadline,
                "offers through the front kept failing:\n{err}"
            );
            eprintln!(
                "offer {i} not through yet: {}",
                err.lines().last().unwrap_or("")
            );
            std::thread::sleep(Duration::from_secs(3));
        }
    }
    for (i, (payload, link, pass)) in offers.iter().enumerate() {
        let out = rdv(&[
            "accept",
            link,
            "--passphrase",
            pass,
            "--tor-config",
            arti,
            "--tor-dir",
            t(&format!("accepter{i}")).to_str().unwrap(),
            "--connect-timeout",
            "150s",
        ]);
        assert!(
            out.status.success(),
            "accept {i} through the front failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), payload);
    }
    let served: Vec<(f64, f64)> = metrics
        .iter()
        .map(|m| {
            (
                metric(*m, "rdv_stores_total{outcome=\"stored\"}"),
                metric(*m, "rdv_fetches_total{outcome=\"found\"}"),
            )
        })
        .collect();
    eprintln!("stores and fetches served by each frontend: {served:?}");
    assert!(
        served.iter().map(|(s, _)| s).sum::<f64>() >= 8.0
            && served.iter().map(|(_, f)| f).sum::<f64>() >= 8.0,
        "8 stores and 8 fetches at least, in all: {served:?}"
    );
    assert!(
        served.iter().all(|(s, f)| s + f > 0.0),
        "both frontends behind the front address served requests: {served:?}"
    );

    // A frontend machine dies (its C tor instance and its rdv serve, SIGKILL): offers through
    // the front address still succeed, on the other frontend; how long they take is printed
    // (the dead instance's introduction points stay in the front descriptor for a while, and a
    // client that picks one of them first has to try another).
    let be1_tor = recorded_pid(&net.dir, "hs-be1");
    let mut fronts = fronts;
    let dead = fronts.pop().unwrap();
    assert!(Command::new("kill")
        .args(["-KILL", &be1_tor.to_string()])
        .status()
        .unwrap()
        .success());
    dead.kill();
    let mut took = Vec::new();
    for i in 0..4 {
        let t0 = Instant::now();
        let out = rdv(&[
            "offer",
            "--server",
            &server,
            "--payload",
            &format!("smp://after-failover-{i}.example/q"),
            "--kdf",
            "test",
            "--tor-config",
            arti,
            "--tor-dir",
            t(&format!("failover{i}")).to_str().unwrap(),
            "--connect-timeout",
            "150s",
        ]);
        assert!(
            out.status.success(),
            "offer {i} after one frontend died:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        took.push(t0.elapsed());
    }
    eprintln!(
        "offers through the front with both frontends took {before:?}; after one died {took:?}"
    );
    for f in fronts {
        assert!(f.terminate().success());
    }
    // Stopping the network stops Onionbalance too (it renames its process, so the script must
    // recognise it another way than by its command line).
    let ob = recorded_pid(&net.dir, "ob-front");
    drop(net);
    let gone = Instant::now() + Duration::from_secs(30);
    // Gone, or a zombie (orphans are reaped by PID 1, which in a container may never do it).
    let running = || {
        std::fs::read_to_string(format!("/proc/{ob}/stat"))
            .map(|st| {
                st.rsplit_once(") ")
                    .is_some_and(|(_, rest)| !rest.starts_with('Z'))
            })
            .unwrap_or(false)
    };
    while running() {
        assert!(
            Instant::now() < gone,
            "Onionbalance (pid {ob}) still runs after tornet.sh stop"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
