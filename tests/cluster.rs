//! A cluster: three real `rdv serve --store postgres://…` processes on one real PostgreSQL
//! database (started by the test). Many concurrent offers through all three; one frontend
//! SIGKILLed mid-load; then every acknowledged link is accepted through every frontend, and the
//! database shows one open bucket (of links with stamps) for the whole cluster (every bucket but
//! the newest full).

mod common;

use common::pg::Postgres;
use common::*;
use rdv::client::OfferError;
use rdv::clock::{Clock, SystemClock};
use rdv::proto::{KdfProfile, Passphrase};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_frontends_one_database_nothing_acknowledged_lost_when_one_is_killed() {
    let pg = Postgres::start();
    pg.create_db("cluster");
    let url = pg.url("cluster");
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let args = ["--store", url.as_str()];
    let mut fronts: Vec<Option<ServerProcess>> = dirs
        .iter()
        .map(|d| Some(ServerProcess::start(d.path(), &args)))
        .collect();
    let addrs: Vec<_> = fronts.iter().map(|f| f.as_ref().unwrap().addr).collect();
    // A cluster is reached under one address (Onionbalance, or one onion service key): links
    // name it, and stamps are bound to it, whichever frontend a client's connection reaches.
    // (Under an address each, every client would count only the stamps made for its own.)
    let cluster = server_addr(addrs[0]);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let killed = Arc::new(AtomicBool::new(false));
    // Two offering tasks per frontend, each bounded to 60 offers.
    let tasks: Vec<_> = (0..6usize)
        .map(|t| {
            let (addr, clock, acked, killed, cluster) = (
                addrs[t % 3],
                clock.clone(),
                acked.clone(),
                killed.clone(),
                cluster.clone(),
            );
            tokio::spawn(async move {
                let c = client(addr, clock);
                let mut failed_after_kill = 0;
                for k in 0..60 {
                    let payload = format!("task {t} offer {k}");
                    let r = c
                        .offer(
                            &cluster,
                            payload.as_bytes(),
                            Passphrase::new(format!("pass-{t}-{k}-cluster")),
                            KdfProfile::Test,
                        )
                        .await;
                    match r {
                        Ok(o) => acked.lock().unwrap().push((payload, o.link)),
                        Err(e) => {
                            // Only the killed frontend may fail, and only once it is killed.
                            assert!(
                                t % 3 == 2 && killed.load(Ordering::SeqCst),
                                "offer through frontend {} failed: {e}",
                                t % 3
                            );
                            assert!(matches!(e, OfferError::Connection(_)), "{e}");
                            failed_after_kill += 1;
                        }
                    }
                }
                failed_after_kill
            })
        })
        .collect();
    // Mid-load: SIGKILL the third frontend.
    let deadline = Instant::now() + Duration::from_secs(300);
    while acked.lock().unwrap().len() < 90 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    killed.store(true, Ordering::SeqCst);
    fronts[2].take().unwrap().kill();
    let mut failed = 0;
    for t in tasks {
        failed += t.await.expect("offering task");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(failed > 0, "offers to the killed frontend failed");
    assert!(
        acked.len() >= 240,
        "the other frontends kept working: {}",
        acked.len()
    );

    // The killed frontend comes back on the same database.
    fronts[2] = Some(ServerProcess::start(dirs[2].path(), &args));
    let addrs: Vec<_> = fronts.iter().map(|f| f.as_ref().unwrap().addr).collect();
    let mut most = 0;
    for addr in &addrs {
        let c = client(*addr, clock.clone());
        for (payload, link) in &acked {
            let got = c
                .accept(link, None)
                .await
                .unwrap_or_else(|e| panic!("acknowledged {payload:?} through {addr}: {e}"));
            assert_eq!(&got.payload[..], payload.as_bytes());
            most = most.max(got.links_verified.unwrap_or(0));
        }
    }
    // A full bucket, filled through three frontends, proves all 64 links through any of them.
    assert_eq!(most, 64);
    // One open bucket for the cluster: every bucket but the newest holds 64 links.
    let links: u64 = pg
        .psql("cluster", "SELECT links FROM rdv_meta")
        .parse()
        .unwrap();
    let buckets: u64 = pg
        .psql("cluster", "SELECT count(*) FROM rdv_buckets")
        .parse()
        .unwrap();
    eprintln!(
        "cluster: {} acknowledged, {failed} failed, {links} links, {buckets} buckets",
        acked.len()
    );
    assert!(links >= acked.len() as u64);
    assert_eq!(
        buckets,
        links.div_ceil(64),
        "{links} links from three frontends in {buckets} buckets"
    );
    for f in fronts.into_iter().flatten() {
        assert!(f.terminate().success());
    }
}
