//! `scale`: fetch latency, RSS and restart time with 10^4 .. 10^7 preloaded links.

use crate::data::*;
use crate::ops::{fetch, random_link, store};
use crate::report::*;
use crate::runner::*;
use crate::server_proc::*;
use crate::{OpKind, ScaleArgs, DISK_BYTES_PER_LINK};
use anyhow::{anyhow, ensure, Context, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rdv::clock::{Clock, SystemClock};
use std::time::Duration;

pub(crate) async fn run(a: ScaleArgs) -> Result<()> {
    let c = &a.common;
    ensure!(!a.sizes.is_empty(), "--sizes is empty");
    std::fs::create_dir_all(&c.data_root)?;
    let need: u64 = a.sizes.iter().map(|n| n * DISK_BYTES_PER_LINK).sum();
    let free = free_bytes(&c.data_root)?;
    ensure!(
        free > need + (2 << 30),
        "{} has {} GiB free, the preloads need about {} GiB",
        c.data_root.display(),
        free >> 30,
        need >> 30
    );
    // Preload every size first.
    let mut sets = Vec::new();
    for &n in &a.sizes {
        let dir = fresh_dir(&c.data_root, &format!("rdv-loadgen-scale-{n}"))?;
        let now = SystemClock.now();
        eprintln!("preloading {n} links into {}", dir.display());
        let p = preload(&dir, n, now, a.chunk).await?;
        eprintln!(
            "  {n} links in {:.1} s ({:.0} links/s), {:.1} MiB on disk",
            p.elapsed.as_secs_f64(),
            per_sec(n, p.elapsed),
            db_bytes(&dir) as f64 / (1 << 20) as f64
        );
        sets.push((n, dir, p));
    }
    // A server on each; the first start after the preload.
    let mut servers = Vec::new();
    for (n, dir, _) in &sets {
        servers.push(ServerProc::spawn(
            &format!("{n} links"),
            &c.bin,
            dir,
            &[],
            c.verbose,
        )?);
    }
    let rss_idle: Vec<ProcStats> = servers.iter().map(ServerProc::stats).collect();
    println!(
        "{} rounds × {} sizes, each measurement: {} fetch clients, at most {} fetches / {:?}, random existing buckets",
        a.rounds,
        a.sizes.len(),
        c.clients,
        c.ops,
        c.duration
    );
    let mut samples: Vec<Vec<Sample>> = sets.iter().map(|_| Vec::new()).collect();
    let mut secs = vec![0f64; sets.len()];
    let mut cpu = vec![0f64; sets.len()];
    for round in 1..=a.rounds {
        for (i, ((n, _, p), srv)) in sets.iter().zip(&servers).enumerate() {
            let spec = LoadSpec {
                persistent: false,
                clients: c.clients,
                ops: c.ops,
                duration: c.duration,
                mix: [0, 1, 0],
                targets: p.targets(),
            };
            let s0 = srv.stats();
            let r = run_load(srv.addr, spec).await;
            let s1 = srv.stats();
            let sm = summarize(&r.samples, OpKind::Fetch);
            eprintln!(
                "  round {round}, {n} links: {:.0} fetches/s, p50 {}, p99 {}",
                per_sec(sm.ok, r.elapsed),
                ms(sm.p50),
                ms(sm.p99)
            );
            print_errors(&r.errors);
            cpu[i] += s1.cpu_secs - s0.cpu_secs;
            secs[i] += r.elapsed.as_secs_f64();
            samples[i].extend(r.samples);
        }
    }
    let after: Vec<ProcStats> = servers.iter().map(ServerProc::stats).collect();
    let first_start: Vec<Duration> = servers.iter().map(|s| s.startup).collect();
    // Restart: stop (SIGTERM) and start again on the same data.
    let mut stop = Vec::new();
    let mut restart = Vec::new();
    let mut restart_rss = Vec::new();
    let mut crash_restart = Vec::new();
    for (srv, (n, dir, p)) in servers.into_iter().zip(&sets) {
        let name = format!("{n} links");
        stop.push(srv.stop()?);
        let srv = ServerProc::spawn(&name, &c.bin, dir, &[], c.verbose)?;
        restart.push(srv.startup);
        // The restarted server still serves the old buckets.
        let mut rng = StdRng::from_entropy();
        let loc = p
            .targets()
            .pick(&mut rng)
            .ok_or_else(|| anyhow!("no targets"))?;
        fetch(&crate::ops::client(srv.addr), loc)
            .await
            .context("fetch after restart")?;
        restart_rss.push(srv.stats());
        // A crash right after a few acknowledged stores: SIGKILL, then start again.
        for _ in 0..3 {
            let (link, check) = random_link(&mut rng);
            store(&crate::ops::client(srv.addr), link, check).await?;
        }
        srv.kill_hard()?;
        let srv = ServerProc::spawn(&name, &c.bin, dir, &[], c.verbose)?;
        crash_restart.push(srv.startup);
        fetch(&crate::ops::client(srv.addr), loc)
            .await
            .context("fetch after a crash restart")?;
        srv.stop()?;
    }
    let mut rows = Vec::new();
    let mut mem_rows = Vec::new();
    let mut p99s = Vec::new();
    for (i, (n, dir, p)) in sets.iter().enumerate() {
        let s = summarize(&samples[i], OpKind::Fetch);
        p99s.push(s.p99);
        rows.push(vec![
            n.to_string(),
            p.buckets.to_string(),
            format!("{:.0} MiB", db_bytes(dir) as f64 / (1 << 20) as f64),
            format!("{:.1} s", p.elapsed.as_secs_f64()),
            s.ok.to_string(),
            s.failed.to_string(),
            format!("{:.0}", per_sec(s.ok, Duration::from_secs_f64(secs[i]))),
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            format!("{:.0}", cpu[i] * 1e6 / s.ok.max(1) as f64),
        ]);
        mem_rows.push(vec![
            n.to_string(),
            mib(rss_idle[i].rss_kib),
            mib(after[i].rss_kib),
            mib(after[i].hwm_kib),
            ms(first_start[i]),
            ms(restart[i]),
            ms(crash_restart[i]),
            mib(restart_rss[i].rss_kib),
        ]);
    }
    println!();
    table(
        &[
            "links",
            "buckets",
            "db file",
            "preload",
            "fetches",
            "failed",
            "fetches/s",
            "p50",
            "p99",
            "max",
            "server CPU µs/fetch",
        ],
        &rows,
    );
    println!();
    table(
        &[
            "links",
            "RSS idle",
            "RSS after load",
            "peak RSS",
            "first start",
            "restart (after SIGTERM)",
            "restart (after SIGKILL)",
            "RSS after restart",
        ],
        &mem_rows,
    );
    println!();
    let base = p99s[0].as_secs_f64().max(1e-9);
    for (i, (n, _, _)) in sets.iter().enumerate().skip(1) {
        let r = p99s[i].as_secs_f64() / base;
        println!(
            "fetch p99 ratio {n} / {} links: {r:.2}× (target ≤ 1.5×: {})",
            sets[0].0,
            if r <= 1.5 { "met" } else { "MISSED" }
        );
    }
    println!(
        "stop (SIGTERM to exit): {}",
        stop.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
    );
    for (_, dir, _) in &sets {
        remove_dir(dir, c.keep);
    }
    Ok(())
}
