//! `load`: store / fetch / rendezvous / mixed load against one server.

use crate::data::*;
use crate::report::*;
use crate::runner::*;
use crate::server_proc::*;
use crate::{LoadArgs, Mode, OpKind};
use anyhow::{ensure, Context, Result};
use rdv::clock::{Clock, SystemClock};
use std::process::Command;

pub(crate) fn parse_mix(s: &str) -> Result<[u32; 3]> {
    let v: Vec<u32> = s
        .split(':')
        .map(|x| x.trim().parse())
        .collect::<Result<_, _>>()
        .context("--mix is STORE:FETCH:RENDEZVOUS, e.g. 1:8:1")?;
    ensure!(
        v.len() == 3 && v.iter().sum::<u32>() > 0,
        "--mix needs three weights"
    );
    Ok([v[0], v[1], v[2]])
}

pub(crate) async fn run(a: LoadArgs) -> Result<()> {
    let c = &a.common;
    let mix = parse_mix(&a.mix)?;
    let dir = fresh_dir(&c.data_root, "rdv-loadgen-load")?;
    let now = SystemClock.now();
    let needs_targets = a.modes.iter().any(|m| matches!(m, Mode::Fetch | Mode::Mix));
    let targets = if a.preload > 0 {
        let p = preload(&dir, a.preload, now, 100_000).await?;
        eprintln!(
            "preloaded {} links in {} buckets ({:.1} s)",
            p.links,
            p.buckets,
            p.elapsed.as_secs_f64()
        );
        p.targets()
    } else {
        ensure!(!needs_targets, "fetch and mix modes need --preload > 0");
        Targets::None
    };
    let srv = match a.lib_backlog {
        None => ServerProc::spawn("server", &c.bin, &dir, &[], c.verbose)?,
        Some(b) => {
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.arg("lib-serve")
                .arg("--data")
                .arg(&dir)
                .args(["--backlog", &b.to_string()]);
            println!("library server with accept backlog {b}");
            ServerProc::spawn_cmd("library server", cmd, c.verbose)?
        }
    };
    println!(
        "server pid {} on {} (started in {}), {} clients, at most {} ops / {:?} per mode",
        srv.pid(),
        srv.addr,
        ms(srv.startup),
        c.clients,
        c.ops,
        c.duration
    );
    let mut rows = Vec::new();
    for mode in &a.modes {
        let (weights, kinds): ([u32; 3], &[OpKind]) = match mode {
            Mode::Store => ([1, 0, 0], &[OpKind::Store]),
            Mode::Fetch => ([0, 1, 0], &[OpKind::Fetch]),
            Mode::Rendezvous => ([0, 0, 1], &[OpKind::Rendezvous]),
            Mode::Mix => (mix, &[OpKind::Store, OpKind::Fetch, OpKind::Rendezvous]),
        };
        let spec = LoadSpec {
            persistent: false,
            clients: c.clients,
            ops: c.ops,
            duration: c.duration,
            mix: weights,
            targets: targets.clone(),
        };
        let s0 = srv.stats();
        let r = run_load(srv.addr, spec).await;
        let s1 = srv.stats();
        let cpu = s1.cpu_secs - s0.cpu_secs;
        let total_ok = r.samples.iter().filter(|s| s.ok).count() as u64;
        for &k in kinds {
            let s = summarize(&r.samples, k);
            let label = if *mode == Mode::Mix {
                format!("mix {} ({}): {}", a.mix, "s:f:r", k.name())
            } else {
                k.name().to_string()
            };
            rows.push(vec![
                label,
                s.ok.to_string(),
                s.failed.to_string(),
                format!("{:.0}", per_sec(s.ok, r.elapsed)),
                ms(s.p50),
                ms(s.p99),
                ms(s.max),
                format!("{cpu:.2}"),
                format!("{:.0}", cpu * 1e6 / total_ok.max(1) as f64),
                mib(s1.rss_kib),
                mib(s1.hwm_kib),
            ]);
        }
        print_errors(&r.errors);
    }
    println!();
    table(
        &[
            "mode",
            "ok",
            "failed",
            "ops/s",
            "p50",
            "p99",
            "max",
            "server CPU s",
            "CPU µs/op",
            "RSS",
            "peak RSS",
        ],
        &rows,
    );
    println!("(a rendezvous is one store and one fetch connection plus a 64-link trial decryption; KDF excluded)");
    srv.stop()?;
    remove_dir(&dir, c.keep);
    Ok(())
}
