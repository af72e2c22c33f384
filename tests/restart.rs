//! The real `rdv serve` process: restart on the same data dir (after SIGTERM and after SIGKILL)
//! keeps every acknowledged link.

mod common;

use common::*;
use rdv::clock::{Clock, SystemClock};
use rdv::proto::{KdfProfile, Passphrase};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_every_acknowledged_link() {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut offers = Vec::new();
    let srv = ServerProcess::start(dir.path(), &[]);
    let c = client(srv.addr, clock.clone());
    for i in 0..70 {
        let o = c
            .offer(
                &server_addr(srv.addr),
                format!("link {i}").as_bytes(),
                Passphrase::new(format!("p{i}-xyz")),
                KdfProfile::Test,
            )
            .await
            .unwrap();
        offers.push((i, o));
    }
    assert!(srv.terminate().success(), "graceful shutdown exits 0");

    let srv = ServerProcess::start(dir.path(), &[]);
    let c = client(srv.addr, clock.clone());
    for (i, o) in &offers {
        // The links name the first server's port; the direct connector goes to the new one.
        let got = c.accept(&o.link, None).await.unwrap();
        assert_eq!(&got.payload[..], format!("link {i}").as_bytes());
    }
    // Acknowledged stores survive SIGKILL too.
    let o = c
        .offer(
            &server_addr(srv.addr),
            b"just before the crash",
            Passphrase::new("crash-pass"),
            KdfProfile::Test,
        )
        .await
        .unwrap();
    srv.kill();
    let srv = ServerProcess::start(dir.path(), &[]);
    let c = client(srv.addr, clock);
    assert_eq!(
        &c.accept(&o.link, None).await.unwrap().payload[..],
        b"just before the crash"
    );
    assert_eq!(
        &c.accept(&offers[0].1.link, None).await.unwrap().payload[..],
        b"link 0"
    );
    // After a restart a store opens a new bucket, never reusing an ID.
    let n = c
        .offer(
            &server_addr(srv.addr),
            b"after",
            Passphrase::new("after-pass"),
            KdfProfile::Test,
        )
        .await
        .unwrap();
    assert!(offers.iter().all(|(_, x)| x.bucket < n.bucket));
}
