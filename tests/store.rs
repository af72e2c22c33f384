//! The on-disk store directly: group commit, durability across reopen, model agreement with the
//! in-memory store.

use futures::future::join_all;
use rdv::proto::padding::FillerSecret;
use rdv::proto::{DeleteToken, SealedLink};
use rdv::store::{BucketStore, DiskStore, DiskStoreConfig, MemoryStore, StoreParams};

const T0: u64 = 1_800_000_000;

fn link(i: u32) -> (SealedLink, DeleteToken) {
    let mut b = [0u8; 256];
    b[..4].copy_from_slice(&i.to_be_bytes());
    let mut t = [0u8; 32];
    t[..4].copy_from_slice(&i.to_be_bytes());
    (SealedLink(b), DeleteToken::from_bytes(t))
}

async fn concurrent_stores(commit_per_store: bool) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(
        dir.path(),
        DiskStoreConfig {
            commit_per_store,
            ..Default::default()
        },
        FillerSecret::from_bytes([0; 32]),
    )
    .unwrap();
    let ids = join_all((0..200).map(|i| {
        let s = store.clone();
        async move {
            let (l, t) = link(i);
            s.store(l, t.check(), T0).await.unwrap()
        }
    }))
    .await;
    assert_eq!(ids.len(), 200);
    assert_eq!(store.link_count(), 200);
    assert_eq!(
        store.verify().unwrap(),
        (4, 200),
        "200 links in ceil(200/64) buckets"
    );
    store.commits()
}

/// Concurrent stores through the public API: every one is acknowledged and stored, in either
/// commit mode. (How batches form depends on scheduling; the exact batching is pinned
/// deterministically by `src/store/db/tests.rs::queued_stores_share_commits_batch_by_batch`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_stores_all_land_in_either_commit_mode() {
    let grouped = concurrent_stores(false).await;
    let single = concurrent_stores(true).await;
    assert_eq!(single, 200, "commit-per-store mode commits every store");
    assert!((1..=200).contains(&grouped), "{grouped} commits");
}

#[tokio::test]
async fn reopen_keeps_everything_and_continues_ids() {
    let dir = tempfile::tempdir().unwrap();
    let params = StoreParams {
        open_window_secs: 60,
        ttl_secs: 1000,
        max_links: None,
        ..Default::default()
    };
    let mut ids = Vec::new();
    {
        let store = DiskStore::open(
            dir.path(),
            DiskStoreConfig {
                params,
                ..Default::default()
            },
            FillerSecret::from_bytes([1; 32]),
        )
        .unwrap();
        for i in 0..100 {
            let (l, t) = link(i);
            ids.push(store.store(l, t.check(), T0).await.unwrap());
        }
    }
    let store = DiskStore::open(
        dir.path(),
        DiskStoreConfig {
            params,
            ..Default::default()
        },
        FillerSecret::from_bytes([2; 32]),
    )
    .unwrap();
    assert_eq!(
        store.filler_secret(),
        &FillerSecret::from_bytes([1; 32]),
        "the filler secret persists"
    );
    assert_eq!(store.verify().unwrap(), (2, 100));
    for (i, id) in ids.iter().enumerate() {
        let links = store.fetch(id.locator(), T0).await.unwrap().unwrap();
        assert!(links.contains(&link(i as u32).0));
    }
    let (l, t) = link(1000);
    let next = store.store(l, t.check(), T0).await.unwrap();
    assert!(
        ids.iter().all(|id| *id < next),
        "new bucket after reopen, IDs keep growing"
    );
}

/// The disk store and the in-memory store agree on a mixed sequence of operations.
#[tokio::test]
async fn disk_store_matches_memory_model() {
    let dir = tempfile::tempdir().unwrap();
    let params = StoreParams {
        open_window_secs: 5,
        ttl_secs: 40,
        max_links: Some(150),
        ..Default::default()
    };
    let disk = DiskStore::open(
        dir.path(),
        DiskStoreConfig {
            params,
            ..Default::default()
        },
        FillerSecret::from_bytes([0; 32]),
    )
    .unwrap();
    let mem = MemoryStore::new(params);
    let mut now = T0;
    let mut stored = Vec::new();
    let mut seed = 0x1234_5678u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..600u32 {
        match rnd() % 10 {
            0..=5 => {
                let (l, t) = link(i);
                let a = disk.store(l.clone(), t.check(), now).await;
                let b = mem.store(l, t.check(), now).await;
                assert_eq!(a.as_ref().ok(), b.as_ref().ok(), "store {i}");
                if let Ok(id) = a {
                    stored.push((id, t));
                }
            }
            6 if !stored.is_empty() => {
                let (id, t) = &stored[(rnd() as usize) % stored.len()];
                assert_eq!(
                    disk.delete(id.locator(), t.check(), now).await.unwrap(),
                    mem.delete(id.locator(), t.check(), now).await.unwrap()
                );
            }
            7 if !stored.is_empty() => {
                let (id, _) = &stored[(rnd() as usize) % stored.len()];
                assert_eq!(
                    disk.fetch(id.locator(), now).await.unwrap(),
                    mem.fetch(id.locator(), now).await.unwrap()
                );
            }
            8 => {
                assert_eq!(
                    disk.collect_garbage(now, 3).await.unwrap(),
                    mem.collect_garbage(now, 3).await.unwrap()
                );
            }
            _ => now += rnd() % 4,
        }
        assert_eq!(disk.link_count(), mem.link_count(), "after op {i}");
    }
    disk.verify().unwrap();
}
