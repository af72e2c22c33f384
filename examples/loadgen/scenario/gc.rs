//! `gc`: fetch and store latency while garbage collection removes millions of expired links.

use crate::data::*;
use crate::ops::random_link;
use crate::report::*;
use crate::runner::*;
use crate::server_proc::*;
use crate::{GcArgs, OpKind, DISK_BYTES_PER_LINK};
use anyhow::{ensure, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rdv::clock::{Clock, SystemClock};
use rdv::proto::padding::FillerSecret;
use rdv::proto::{BucketId, Locator, MAX_LINKS_PER_BUCKET};
use rdv::store::{BucketStore, DiskStore, DiskStoreConfig};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The samples that ended before (or after) `at`.
pub(crate) fn split_at(r: &LoadResult, at: Instant, before: bool) -> Vec<&Sample> {
    r.samples
        .iter()
        .filter(|x| (x.end <= at) == before)
        .collect()
}

/// The log line a server writes after a GC pass that removed something.
pub(crate) const GC_DONE: &str = "expired buckets collected";

/// Preload `links` links created two days ago into a fresh directory, plus one fresh bucket;
/// returns the fresh bucket's locator.
pub(crate) async fn prepare_gc_data(dir: &Path, links: u64, chunk: usize) -> Result<Locator> {
    let now = SystemClock.now();
    let old = now - 2 * 86_400;
    eprintln!(
        "preloading {links} links created two days ago into {}",
        dir.display()
    );
    let p = preload(dir, links, old, chunk).await?;
    let store = DiskStore::open(
        dir,
        DiskStoreConfig::default(),
        FillerSecret::from_bytes(rand::random()),
    )?;
    let mut rng = StdRng::from_entropy();
    let fresh = (0..MAX_LINKS_PER_BUCKET)
        .map(|_| random_link(&mut rng))
        .collect();
    store.bulk_store(fresh, now).await?;
    let id = BucketId {
        created: now,
        seq: 0,
    };
    ensure!(
        store.fetch(id.locator(), now).await?.map(|l| l.len()) == Some(MAX_LINKS_PER_BUCKET),
        "the fresh bucket is not {id}"
    );
    drop(store);
    eprintln!(
        "  {} links in {} buckets ({:.1} s), {:.0} MiB on disk",
        p.links,
        p.buckets,
        p.elapsed.as_secs_f64(),
        db_bytes(dir) as f64 / (1 << 20) as f64
    );
    Ok(id.locator())
}

pub(crate) struct GcPhase {
    pub(crate) name: String,
    pub(crate) fetch: LoadResult,
    pub(crate) store: LoadResult,
    /// When the first GC pass that removed something reported, and its log line.
    pub(crate) gc: Option<(Instant, String)>,
    pub(crate) spawned: Instant,
    pub(crate) stats: ProcStats,
}

/// Fetch and store load against a freshly started server; waits for its GC report if one is due.
pub(crate) async fn gc_phase(
    name: &str,
    srv: ServerProc,
    fetch_spec: &LoadSpec,
    store_spec: &LoadSpec,
    expect_gc: bool,
) -> Result<GcPhase> {
    let (fetch, store) = tokio::join!(
        run_load(srv.addr, fetch_spec.clone()),
        run_load(srv.addr, store_spec.clone())
    );
    print_errors(&fetch.errors);
    print_errors(&store.errors);
    let wait_from = Instant::now();
    while expect_gc
        && srv.log_time(GC_DONE).is_none()
        && wait_from.elapsed() < Duration::from_secs(600)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gc = srv.log_time(GC_DONE);
    ensure!(
        !expect_gc || gc.is_some(),
        "server {name} never reported a GC pass"
    );
    let (stats, spawned) = (srv.stats(), srv.spawned);
    srv.stop()?;
    Ok(GcPhase {
        name: name.to_string(),
        fetch,
        store,
        gc,
        spawned,
        stats,
    })
}

pub(crate) async fn run(a: GcArgs) -> Result<()> {
    let c = &a.common;
    std::fs::create_dir_all(&c.data_root)?;
    let free = free_bytes(&c.data_root)?;
    ensure!(
        free > a.links * DISK_BYTES_PER_LINK + (2 << 30),
        "not enough free space under {}",
        c.data_root.display()
    );
    let dir = fresh_dir(&c.data_root, "rdv-loadgen-gc")?;
    let fresh = prepare_gc_data(&dir, a.links, a.chunk).await?;
    let fetch_spec = LoadSpec {
        persistent: false,
        clients: c.clients,
        ops: c.ops,
        duration: c.duration,
        mix: [0, 1, 0],
        targets: Targets::Fixed(fresh),
    };
    let store_spec = LoadSpec {
        persistent: false,
        clients: a.store_clients,
        ops: c.ops,
        duration: c.duration,
        mix: [1, 0, 0],
        targets: Targets::None,
    };
    println!(
        "{} fetch clients (one fresh bucket) and {} store clients, at most {} ops each / {:?} per phase",
        c.clients, a.store_clients, c.ops, c.duration
    );
    // The same data with nothing expired (GC runs every second but finds nothing), then with
    // everything preloaded expired: GC starts right after startup.
    let srv = ServerProc::spawn(
        "no expiry",
        &c.bin,
        &dir,
        &["--ttl", "30d", "--gc-interval", "1s"],
        c.verbose,
    )?;
    let base = gc_phase(
        "no GC (nothing expired)",
        srv,
        &fetch_spec,
        &store_spec,
        false,
    )
    .await?;
    let gc_args = ["--ttl", "1d", "--gc-interval", "1s"];
    let srv = ServerProc::spawn("gc", &c.bin, &dir, &gc_args, c.verbose)?;
    let mut phases = vec![gc_phase("rdv serve", srv, &fetch_spec, &store_spec, true).await?];
    // The same with the library's server and other GC transaction sizes (`rdv serve` has no flag
    // for it): what a smaller `ServerConfig::gc_batch` would do.
    for &batch in &a.lib_gc_batches {
        let dir = fresh_dir(&c.data_root, "rdv-loadgen-gc")?;
        let fresh = prepare_gc_data(&dir, a.links, a.chunk).await?;
        let fetch_spec = LoadSpec {
            targets: Targets::Fixed(fresh),
            ..fetch_spec.clone()
        };
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("lib-serve")
            .arg("--data")
            .arg(&dir)
            .args(gc_args)
            .args(["--gc-batch", &batch.to_string()]);
        let name = format!("library server, gc_batch {batch}");
        let srv = ServerProc::spawn_cmd(&name, cmd, c.verbose)?;
        phases.push(gc_phase(&name, srv, &fetch_spec, &store_spec, true).await?);
    }

    let row = |name: String, fs: Vec<&Sample>, ss: Vec<&Sample>, stats: ProcStats| {
        let f = summarize(fs, OpKind::Fetch);
        let s = summarize(ss, OpKind::Store);
        vec![
            name,
            (f.ok + f.failed).to_string(),
            f.failed.to_string(),
            ms(f.p50),
            ms(f.p99),
            ms(f.max),
            (s.ok + s.failed).to_string(),
            s.failed.to_string(),
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            mib(stats.hwm_kib),
        ]
    };
    let mut rows = vec![row(
        base.name.clone(),
        base.fetch.samples.iter().collect(),
        base.store.samples.iter().collect(),
        base.stats,
    )];
    let base_fetch = summarize(&base.fetch.samples, OpKind::Fetch);
    let base_store = summarize(&base.store.samples, OpKind::Store);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    let mut notes = Vec::new();
    for p in &phases {
        let Some((done, line)) = &p.gc else { continue };
        let during = |r| split_at(r, *done, true);
        let after = |r| split_at(r, *done, false);
        rows.push(row(
            format!("{}: during GC", p.name),
            during(&p.fetch),
            during(&p.store),
            p.stats,
        ));
        rows.push(row(
            format!("{}: after GC", p.name),
            after(&p.fetch),
            after(&p.store),
            p.stats,
        ));
        let gf = summarize(during(&p.fetch), OpKind::Fetch);
        let gs = summarize(during(&p.store), OpKind::Store);
        let what = line.split_once("INFO").map_or(line.as_str(), |(_, r)| r);
        notes.push(format!(
            "{}: GC pass `{}` finished {:.2} s after spawn; p99 during GC / without GC: fetch {:.2}×, store {:.2}×",
            p.name,
            what.trim(),
            (*done - p.spawned).as_secs_f64(),
            ratio(gf.p99, base_fetch.p99),
            ratio(gs.p99, base_store.p99)
        ));
    }
    println!();
    table(
        &[
            "phase",
            "fetches",
            "failed",
            "fetch p50",
            "fetch p99",
            "fetch max",
            "stores",
            "failed",
            "store p50",
            "store p99",
            "store max",
            "server peak RSS",
        ],
        &rows,
    );
    println!();
    for n in notes {
        println!("{n}");
    }
    remove_dir(&dir, c.keep);
    Ok(())
}
