//! Crash consistency: the real server process under concurrent stores is killed with SIGKILL at
//! random moments, many times, and restarted on the same data directory. Every store that was
//! acknowledged must still fetch and open, and the database must open cleanly and pass its
//! consistency check.

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use rdv::clock::{Clock, SystemClock};
use rdv::proto::padding::FillerSecret;
use rdv::proto::{KdfProfile, Passphrase, RdvLink};
use rdv::store::{DiskStore, DiskStoreConfig};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_stores_survive_sigkill() {
    const CYCLES: usize = 12;
    let seed: u64 = rand::random();
    eprintln!("crash test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let acked: Arc<Mutex<Vec<(RdvLink, String)>>> = Arc::default();
    let mut counter = 0usize;

    // At least CYCLES kills, and more (bounded) until enough stores were acknowledged for the
    // check to mean something: a slow disk on a loaded machine acknowledges fewer per cycle.
    for cycle in 0..CYCLES * 4 {
        if cycle >= CYCLES && acked.lock().unwrap().len() > 100 {
            break;
        }
        // Stamps at the least effort, the client's too: the test needs many stores in a short
        // time, and is about what survives a kill, not about proof of work.
        let srv = ServerProcess::start(dir.path(), &["--rate", "100000", "--stamp-effort", "1"]);
        let addr = srv.addr;
        let client = Arc::new(cheap_client(addr, clock.clone()));
        // Everything acknowledged in earlier cycles is still there (a sample, all at the end).
        let sample: Vec<_> = {
            let a = acked.lock().unwrap();
            (0..a.len().min(25))
                .map(|_| a[rng.gen_range(0..a.len())].clone())
                .collect()
        };
        for (link, payload) in &sample {
            let got = client
                .accept(link, None)
                .await
                .unwrap_or_else(|e| panic!("cycle {cycle}: acknowledged link lost: {e}"));
            assert_eq!(&got.payload[..], payload.as_bytes());
        }
        // Concurrent writers until the server dies (bounded in count and time).
        let mut writers = Vec::new();
        for w in 0..4 {
            let (client, acked) = (client.clone(), acked.clone());
            let base = counter + w * 100_000;
            writers.push(tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(5);
                for i in 0..5_000 {
                    if Instant::now() > deadline {
                        break;
                    }
                    let payload = format!("link {}", base + i);
                    let pass = Passphrase::new(format!("pass-{}", base + i));
                    match client
                        .offer(
                            &server_addr(addr),
                            payload.as_bytes(),
                            pass,
                            KdfProfile::Test,
                        )
                        .await
                    {
                        Ok(o) => acked.lock().unwrap().push((o.link, payload)),
                        Err(_) => break, // the server is gone
                    }
                }
            }));
        }
        counter += 1_000_000;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..600))).await;
        srv.kill(); // SIGKILL
        for w in writers {
            w.await.unwrap();
        }
    }

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "the load produced too few stores to mean anything: {}",
        acked.len()
    );
    let srv = ServerProcess::start(dir.path(), &[]);
    let c = client(srv.addr, clock);
    for (link, payload) in &acked {
        let got = c
            .accept(link, None)
            .await
            .unwrap_or_else(|e| panic!("acknowledged link lost: {e}"));
        assert_eq!(&got.payload[..], payload.as_bytes());
    }
    srv.kill();
    let store = DiskStore::open(
        dir.path(),
        DiskStoreConfig::default(),
        FillerSecret::from_bytes([0; 32]),
    )
    .expect("the database opens cleanly");
    let (_buckets, links) = store.verify().expect("consistent after crashes");
    assert!(
        links >= acked.len() as u64,
        "{links} stored, {} acknowledged",
        acked.len()
    );
    eprintln!(
        "{} acknowledged stores over {CYCLES} SIGKILL cycles, all present",
        acked.len()
    );
}
