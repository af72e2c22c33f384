//! `cluster`: the shared PostgreSQL store against redb, and several frontends on one database.
//! Starts its own PostgreSQL server (as tests/common/pg.rs does: initdb and pg_ctl into a
//! temporary directory, as the `postgres` user when run as root; fsync on) and its own `rdv serve`
//! processes, all on 127.0.0.1.
//!
//! 1. The store's own capacity, redb against PostgreSQL in one run: concurrent stores with the
//!    admission cap lifted (`--max-seq 65535`), rounds alternating between the two servers.
//! 2. End to end at the admission cap (the default `--max-seq 32`: 2112 links a second).
//! 3. Fetches/s through one frontend against three frontends on one database (the clients split
//!    over them), on buckets preloaded through the library's PgStore.
//! 4. Failover: store clients spread over three frontends, each moving to the next frontend when
//!    an operation fails; one frontend SIGKILLed: how long its clients need to succeed elsewhere.

#[path = "../../../tests/common/pg.rs"]
#[allow(dead_code)]
mod pg;

use crate::data::*;
use crate::ops::{self, random_link};
use crate::report::*;
use crate::runner::*;
use crate::server_proc::*;
use crate::{ClusterArgs, OpKind};
use anyhow::{Context, Result};
use futures::future::join_all;
use rdv::clock::{Clock, SystemClock};
use rdv::proto::padding::FillerSecret;
use rdv::proto::Locator;
use rdv::store::{BucketStore, PgStore, PgStoreConfig, StoreParams};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) async fn run(a: ClusterArgs) -> Result<()> {
    let c = &a.common;
    let pg = pg::Postgres::start();
    println!(
        "PostgreSQL {} on 127.0.0.1:{} (fsync on)",
        pg.psql("postgres", "SHOW server_version"),
        pg.port
    );
    for db in ["cap", "capped", "fetch", "failover"] {
        pg.create_db(db);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{cores} cores; loadgen, PostgreSQL and every server share them\n");

    // 1 and 2: redb against PostgreSQL, lifted cap then the default cap.
    let mut rows = Vec::new();
    for (label, db, extra) in [
        (
            "store capacity (cap lifted)",
            "cap",
            &["--max-seq", "65535"][..],
        ),
        ("at the admission cap", "capped", &[][..]),
    ] {
        if db == "cap" {
            ops::skip_policy_check();
        }
        let dir = fresh_dir(&c.data_root, &format!("rdv-loadgen-{db}-redb"))?;
        let dir_pg = fresh_dir(&c.data_root, &format!("rdv-loadgen-{db}-pg"))?;
        let url = pg.url(db);
        let mut pg_args = vec!["--store", url.as_str()];
        pg_args.extend_from_slice(extra);
        let servers = [
            ServerProc::spawn("redb", &c.bin, &dir, extra, c.verbose)?,
            ServerProc::spawn("PostgreSQL", &c.bin, &dir_pg, &pg_args, c.verbose)?,
        ];
        let spec = LoadSpec {
            persistent: false,
            clients: c.clients,
            ops: c.ops,
            duration: c.duration,
            mix: [1, 0, 0],
            targets: Targets::None,
        };
        let mut totals = [(0u64, 0f64); 2];
        for round in 1..=a.rounds {
            for (i, srv) in servers.iter().enumerate() {
                let s0 = srv.stats();
                let r = run_load(srv.addr, spec.clone()).await;
                let s1 = srv.stats();
                let s = summarize(&r.samples, OpKind::Store);
                totals[i].0 += s.ok;
                totals[i].1 += r.elapsed.as_secs_f64();
                rows.push(vec![
                    label.to_string(),
                    srv.name.clone(),
                    round.to_string(),
                    s.ok.to_string(),
                    s.failed.to_string(),
                    format!("{:.0}", per_sec(s.ok, r.elapsed)),
                    ms(s.p50),
                    ms(s.p99),
                    format!(
                        "{:.0}",
                        (s1.cpu_secs - s0.cpu_secs) * 1e6 / s.ok.max(1) as f64
                    ),
                ]);
                print_errors(&r.errors);
            }
        }
        let rate = |t: (u64, f64)| t.0 as f64 / t.1.max(1e-9);
        println!(
            "{label}: durable stores/s redb {:.0}, PostgreSQL {:.0}: PostgreSQL/redb {:.2}×",
            rate(totals[0]),
            rate(totals[1]),
            rate(totals[1]) / rate(totals[0]).max(1e-9)
        );
        for srv in servers {
            srv.stop()?;
        }
        remove_dir(&dir, c.keep);
        remove_dir(&dir_pg, c.keep);
    }
    println!();
    table(
        &[
            "load",
            "store",
            "round",
            "durable stores",
            "failed",
            "stores/s",
            "p50",
            "p99",
            "server CPU µs/store",
        ],
        &rows,
    );

    // 3: fetches through one frontend against three.
    println!();
    let url = pg.url("fetch");
    let targets = preload(&url, a.preload).await?;
    println!("preloaded {} full buckets through PgStore", targets.len());
    let (dirs, fronts) = three_frontends(c, &url, "front")?;
    let fetch_spec = |clients: usize| LoadSpec {
        persistent: false,
        clients,
        ops: c.ops,
        duration: c.duration,
        mix: [0, 1, 0],
        targets: Targets::List(targets.clone()),
    };
    let mut rows = Vec::new();
    let mut rates = [(0u64, 0f64); 2];
    for round in 1..=a.rounds {
        for (k, n) in [1usize, 3].into_iter().enumerate() {
            let per = (c.clients / n).max(1);
            let results = join_all(
                fronts[..n]
                    .iter()
                    .map(|f| run_load(f.addr, fetch_spec(per))),
            )
            .await;
            let elapsed = results.iter().map(|r| r.elapsed).max().unwrap_or_default();
            let all: Vec<&Sample> = results.iter().flat_map(|r| &r.samples).collect();
            let s = summarize(all.iter().copied(), OpKind::Fetch);
            for r in &results {
                print_errors(&r.errors);
            }
            rates[k].0 += s.ok;
            rates[k].1 += elapsed.as_secs_f64();
            rows.push(vec![
                format!("{n}"),
                round.to_string(),
                s.ok.to_string(),
                s.failed.to_string(),
                format!("{:.0}", per_sec(s.ok, elapsed)),
                ms(s.p50),
                ms(s.p99),
            ]);
        }
    }
    table(
        &[
            "frontends",
            "round",
            "fetches",
            "failed",
            "fetches/s",
            "p50",
            "p99",
        ],
        &rows,
    );
    let rate = |t: (u64, f64)| t.0 as f64 / t.1.max(1e-9);
    println!(
        "fetches/s: one frontend {:.0}, three frontends {:.0}: {:.2}× ({} clients in all)",
        rate(rates[0]),
        rate(rates[1]),
        rate(rates[1]) / rate(rates[0]).max(1e-9),
        c.clients
    );
    for f in fronts {
        f.stop()?;
    }
    for d in &dirs {
        remove_dir(d, c.keep);
    }

    // 4: failover.
    println!();
    let url = pg.url("failover");
    let (dirs, fronts) = three_frontends(c, &url, "fail")?;
    let mut fronts: Vec<Option<ServerProc>> = fronts.into_iter().map(Some).collect();
    let addrs: Vec<_> = fronts.iter().flatten().map(|f| f.addr).collect();
    let killed_at = Arc::new(std::sync::OnceLock::<Instant>::new());
    let end = Instant::now() + c.duration;
    let tasks: Vec<_> = (0..c.clients.min(48))
        .map(|t| {
            let (addrs, killed_at) = (addrs.clone(), killed_at.clone());
            tokio::spawn(async move {
                let mut rng = rand::SeedableRng::seed_from_u64(t as u64);
                let mut at = t % 3;
                let mut failed_since: Option<Instant> = None;
                let mut recovered = None;
                let mut n = 0u64;
                while Instant::now() < end && n < 100_000 {
                    n += 1;
                    let (link, check) = random_link(&mut rng);
                    let r = tokio::time::timeout(
                        crate::OP_TIMEOUT,
                        ops::store(&ops::client(addrs[at]), link, check),
                    )
                    .await;
                    match r {
                        Ok(Ok(_)) => {
                            if let (Some(_), Some(k), None) =
                                (failed_since, killed_at.get(), recovered)
                            {
                                recovered = Some(Instant::now() - *k);
                            }
                            failed_since = None;
                        }
                        _ => {
                            failed_since.get_or_insert_with(Instant::now);
                            // Another frontend, as a client of a multi-server link or of an
                            // Onionbalance front would.
                            at = (at + 1) % addrs.len();
                        }
                    }
                }
                recovered
            })
        })
        .collect();
    tokio::time::sleep(c.duration / 3).await;
    let victim = fronts[2].take().context("frontend 2")?;
    killed_at.set(Instant::now()).ok();
    victim.kill_hard()?;
    let mut times: Vec<Duration> = Vec::new();
    for t in tasks {
        if let Some(d) = t.await? {
            times.push(d);
        }
    }
    times.sort_unstable();
    if times.is_empty() {
        println!("failover: no client was using the killed frontend when it died");
    } else {
        println!(
            "failover over loopback TCP: {} clients of the SIGKILLed frontend succeeded elsewhere after p50 {}, max {} (from the kill to their next acknowledged store)",
            times.len(),
            ms(times[times.len() / 2]),
            ms(*times.last().unwrap_or(&Duration::ZERO))
        );
    }
    for f in fronts.into_iter().flatten() {
        f.stop()?;
    }
    for d in &dirs {
        remove_dir(d, c.keep);
    }
    Ok(())
}

/// Three `rdv serve --store URL` frontends, each on a fresh data directory.
fn three_frontends(
    c: &crate::Common,
    url: &str,
    name: &str,
) -> Result<(Vec<std::path::PathBuf>, Vec<ServerProc>)> {
    let dirs: Vec<_> = (0..3)
        .map(|i| fresh_dir(&c.data_root, &format!("rdv-loadgen-{name}{i}")))
        .collect::<Result<_>>()?;
    let fronts = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            ServerProc::spawn(
                &format!("frontend {i}"),
                &c.bin,
                d,
                &["--store", url],
                c.verbose,
            )
        })
        .collect::<Result<_>>()?;
    Ok((dirs, fronts))
}

/// `n` links (rounded down to full buckets) stored through the library's PgStore with the
/// settings `rdv serve --store` uses by default; the full buckets' locators.
async fn preload(url: &str, n: u64) -> Result<Arc<Vec<Locator>>> {
    let mut config = PgStoreConfig::new(url)?;
    config.params = StoreParams {
        max_links: Some(10_000_000),
        // The quota alone (no shares for links without a stamp or answers).
        unstamped_share: 100,
        answer_share: 100,
        ..StoreParams::default()
    };
    let store = PgStore::open(config, FillerSecret::from_bytes(rand::random())).await?;
    let per_second = 33 * 64;
    let now = SystemClock.now();
    let seconds = n.div_ceil(per_second);
    let mut ids = Vec::new();
    let mut rng: rand::rngs::StdRng = rand::SeedableRng::seed_from_u64(7);
    for s in 0..seconds {
        let batch = (n - s * per_second).min(per_second);
        let at = now - seconds + s;
        let links: Vec<_> = (0..batch).map(|_| random_link(&mut rng)).collect();
        for r in join_all(links.into_iter().map(|(l, ch)| store.store(l, ch, at))).await {
            ids.push(r?);
        }
    }
    let mut count = std::collections::BTreeMap::new();
    for id in ids {
        *count.entry(id).or_insert(0u32) += 1;
    }
    Ok(Arc::new(
        count
            .into_iter()
            .filter(|(_, n)| *n == 64)
            .map(|(id, _)| id.locator())
            .collect(),
    ))
}
