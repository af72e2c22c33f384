//! `group-commit`: durable stores/s with group commit against commit-per-store, in one run.

use crate::data::*;
use crate::report::*;
use crate::runner::*;
use crate::server_proc::*;
use crate::{GroupCommitArgs, OpKind};
use anyhow::{anyhow, Result};
use std::path::Path;
use std::time::{Duration, Instant};

pub(crate) async fn run(a: GroupCommitArgs) -> Result<()> {
    let c = &a.common;
    let dir_g = fresh_dir(&c.data_root, "rdv-loadgen-group")?;
    let dir_s = fresh_dir(&c.data_root, "rdv-loadgen-single")?;
    // The store's own capacity: the admission cap (33 buckets a second, what clients accept)
    // is lifted on both servers, and the IDs are not checked against the client policy.
    crate::ops::skip_policy_check();
    let uncapped = ["--max-seq", "65535"];
    let servers = [
        ServerProc::spawn("group commit", &c.bin, &dir_g, &uncapped, c.verbose)?,
        ServerProc::spawn(
            "commit per store",
            &c.bin,
            &dir_s,
            &["--commit-per-store", "--max-seq", "65535"],
            c.verbose,
        )?,
    ];
    let modes: Vec<bool> = a
        .connections
        .iter()
        .map(|m| match m.as_str() {
            "op" => Ok(false),
            "client" => Ok(true),
            other => Err(anyhow!(
                "--connections takes op and/or client, not {other:?}"
            )),
        })
        .collect::<Result<_>>()?;
    println!(
        "{} concurrent store clients; at most {} stores / {:?} per measurement; connections: {}",
        c.clients,
        c.ops,
        c.duration,
        a.connections.join(", ")
    );
    let floor_before = fsync_floor(&dir_s, 300)?;
    let mut spec = LoadSpec {
        persistent: false,
        clients: c.clients,
        ops: c.ops,
        duration: c.duration,
        mix: [1, 0, 0],
        targets: Targets::None,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    // Per server: acknowledged stores, seconds, CPU seconds.
    let mut totals = vec![[(0u64, 0f64, 0f64); 2]; modes.len()];
    let mut rows = Vec::new();
    for (m, &persistent) in modes.iter().enumerate() {
        spec.persistent = persistent;
        for round in 1..=a.rounds {
            for (i, srv) in servers.iter().enumerate() {
                let s0 = srv.stats();
                let me0 = proc_stats(std::process::id())?;
                let r = run_load(srv.addr, spec.clone()).await;
                let me1 = proc_stats(std::process::id())?;
                let s1 = srv.stats();
                let s = summarize(&r.samples, OpKind::Store);
                let cpu = s1.cpu_secs - s0.cpu_secs;
                let own = me1.cpu_secs - me0.cpu_secs;
                let busy = (cpu + own) / (cores * r.elapsed.as_secs_f64().max(1e-9));
                totals[m][i].0 += s.ok;
                totals[m][i].1 += r.elapsed.as_secs_f64();
                totals[m][i].2 += cpu;
                rows.push(vec![
                    srv.name.clone(),
                    (if persistent {
                        "per client"
                    } else {
                        "per store"
                    })
                    .to_string(),
                    round.to_string(),
                    s.ok.to_string(),
                    s.failed.to_string(),
                    format!("{:.0}", per_sec(s.ok, r.elapsed)),
                    ms(s.p50),
                    ms(s.p99),
                    ms(s.max),
                    format!("{:.0}", cpu * 1e6 / s.ok.max(1) as f64),
                    format!("{cpu:.2}"),
                    format!("{own:.2}"),
                    format!("{:.0} %", busy * 100.0),
                    mib(s1.hwm_kib),
                ]);
                print_errors(&r.errors);
            }
        }
    }
    let floor_after = fsync_floor(&dir_s, 300)?;
    println!();
    table(
        &[
            "server",
            "connection",
            "round",
            "durable stores",
            "failed",
            "stores/s",
            "p50",
            "p99",
            "max",
            "server CPU µs/store",
            "server CPU s",
            "loadgen CPU s",
            "all cores busy",
            "peak RSS",
        ],
        &rows,
    );
    println!();
    for (when, (p50, p99)) in [("before", floor_before), ("after", floor_after)] {
        println!(
            "disk {when}: 4 KiB write + fdatasync p50 {}, p99 {} (one such flush per commit caps commit-per-store near {:.0}/s)",
            ms(p50),
            ms(p99),
            1.0 / p50.as_secs_f64().max(1e-9)
        );
    }
    let rate = |t: (u64, f64, f64)| t.0 as f64 / t.1.max(1e-9);
    println!();
    for (m, &persistent) in modes.iter().enumerate() {
        let (g, s) = (rate(totals[m][0]), rate(totals[m][1]));
        println!(
            "durable stores/s, {}: group commit {g:.0}, commit per store {s:.0}, ratio {:.1}× (target ≥ 10×: {})",
            if persistent { "one connection per client" } else { "one connection per store" },
            g / s.max(1e-9),
            if g >= 10.0 * s { "met" } else { "MISSED" }
        );
    }
    for srv in servers {
        srv.stop()?;
    }
    remove_dir(&dir_g, c.keep);
    remove_dir(&dir_s, c.keep);
    Ok(())
}

/// The disk's durable-write latency next to the store: `n` × (append 4 KiB, fdatasync); p50, p99.
pub(crate) fn fsync_floor(dir: &Path, n: usize) -> Result<(Duration, Duration)> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let buf = [0x5a_u8; 4096];
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        lat.push(t.elapsed());
    }
    drop(f);
    std::fs::remove_file(&path)?;
    lat.sort_unstable();
    let at = |p: f64| lat[((p * n as f64) as usize).min(n - 1)];
    Ok((at(0.5), at(0.99)))
}
