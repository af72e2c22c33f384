//! Data directories and bulk preloading.

use crate::ops::random_link;
use crate::report::per_sec;
use crate::runner::{preloaded_id, Targets};
use crate::SEQS_PER_SECOND;
use anyhow::{anyhow, ensure, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdv::proto::padding::FillerSecret;
use rdv::proto::MAX_LINKS_PER_BUCKET;
use rdv::store::{BucketStore, DiskStore, DiskStoreConfig, StoreParams};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub(crate) fn fresh_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let dir = root.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

pub(crate) fn remove_dir(dir: &Path, keep: bool) {
    if keep {
        println!("kept {}", dir.display());
    } else if let Err(e) = std::fs::remove_dir_all(dir) {
        eprintln!("could not remove {}: {e}", dir.display());
    }
}

/// Free space under `dir` in bytes, from `df`.
pub(crate) fn free_bytes(dir: &Path) -> Result<u64> {
    let out = Command::new("df").arg("-Pk").arg(dir).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let avail: u64 = text
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("cannot parse df output: {text}"))?;
    Ok(avail * 1024)
}

pub(crate) fn db_bytes(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(rdv::store::db::DB_FILE)).map_or(0, |m| m.len())
}

pub(crate) struct Preloaded {
    pub(crate) links: u64,
    pub(crate) buckets: u64,
    pub(crate) first_created: u64,
    pub(crate) elapsed: Duration,
}

impl Preloaded {
    pub(crate) fn targets(&self) -> Targets {
        Targets::Preloaded {
            first_created: self.first_created,
            buckets: self.buckets,
        }
    }
}

/// Bulk-load `links` random links at the fixed time `now` into the empty store in `dir`, through
/// `DiskStore::bulk_store` (the store's own writer, the same on-disk format as served stores), and
/// check the predicted bucket IDs against what the store holds.
pub(crate) async fn preload(dir: &Path, links: u64, now: u64, chunk: usize) -> Result<Preloaded> {
    let config = DiskStoreConfig {
        // Bigger transactions than a server uses: fewer fsyncs while loading.
        max_batch: 16 * 1024,
        // Every sequence number of a second, so that millions of links fit in few seconds (a
        // server caps it at 32 for its clients; the preloaded IDs are only ever fetched).
        params: StoreParams {
            max_seq: u16::MAX,
            ..Default::default()
        },
        ..Default::default()
    };
    let store = DiskStore::open(dir, config, FillerSecret::from_bytes(rand::random()))?;
    ensure!(
        store.link_count() == 0,
        "{} is not empty: preloading needs an empty store",
        dir.display()
    );
    let t0 = Instant::now();
    let mut rng = StdRng::from_entropy();
    let mut done = 0u64;
    let mut next_report = links / 10;
    // One second holds 65 536 full buckets; the next links go into the next second.
    let per_second = SEQS_PER_SECOND * MAX_LINKS_PER_BUCKET as u64;
    while done < links {
        let left_in_second = per_second - done % per_second;
        let n = (chunk as u64).min(links - done).min(left_in_second);
        let batch: Vec<_> = (0..n).map(|_| random_link(&mut rng)).collect();
        store.bulk_store(batch, now + done / per_second).await?;
        done += n;
        if done >= next_report && links >= 1_000_000 {
            eprintln!(
                "  preload {}: {done} links ({:.0} links/s)",
                dir.display(),
                per_sec(done, t0.elapsed())
            );
            next_report += links / 10;
        }
    }
    let elapsed = t0.elapsed();
    let buckets = links.div_ceil(MAX_LINKS_PER_BUCKET as u64);
    ensure!(store.link_count() == links, "link counter disagrees");
    // The predicted IDs must be the ones the store assigned: the first, the last, a few random
    // ones hold the expected number of links, and the one after the last does not exist.
    let full = MAX_LINKS_PER_BUCKET as u64;
    let mut check = vec![0, buckets / 2, buckets - 1];
    check.extend((0..20).map(|_| rng.gen_range(0..buckets)));
    for k in check {
        let id = preloaded_id(now, k);
        let expect = if k == buckets - 1 {
            links - k * full
        } else {
            full
        };
        let got = store
            .fetch(id.locator(), now)
            .await?
            .map(|l| l.len() as u64);
        ensure!(
            got == Some(expect),
            "bucket {k} ({id}) holds {got:?} links, expected {expect}: the ID prediction is wrong"
        );
    }
    let after = preloaded_id(now, buckets);
    ensure!(
        store.fetch(after.locator(), now).await?.is_none(),
        "bucket {after} exists although the preload should have stopped before it"
    );
    drop(store);
    Ok(Preloaded {
        links,
        buckets,
        first_created: now,
        elapsed,
    })
}
