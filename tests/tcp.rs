//! Smoke test over real loopback TCP and the on-disk store: the path a `--direct` user and the
//! C tor `HiddenServicePort` set-up take. The protocol's details are in `tests/protocol.rs`.

mod common;

use common::*;
use rdv::client::{AcceptError, DeleteError};
use rdv::clock::{Clock, SystemClock};
use rdv::framed::read_msg;
use rdv::proto::{ErrorCode, KdfProfile, Passphrase, Response};
use rdv::server::ServerConfig;
use rdv::store::{BucketStore, StoreParams};
use std::sync::Arc;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_accept_delete_over_tcp_with_the_disk_store() {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (server, addr) = start_default(dir.path(), clock.clone()).await;
    let c = client(addr, clock);
    let sa = server_addr(addr);
    let pass = Passphrase::new("tcp-smoke-correct-horse-battery");
    let o = c
        .offer(&sa, b"smp://over-tcp/queue", pass.clone(), KdfProfile::Test)
        .await
        .unwrap();
    let link = o.link.without_passphrase();
    let got = c.accept(&link, Some(pass.clone())).await.unwrap();
    assert_eq!(&got.payload[..], b"smp://over-tcp/queue");
    assert_eq!(got.tried, 64);
    assert!(matches!(
        c.accept(&link, Some(Passphrase::new("wrong"))).await,
        Err(AcceptError::NoMatch { tried: 64 })
    ));
    c.delete(&link, &o.delete_token).await.unwrap();
    assert!(matches!(
        c.delete(&link, &o.delete_token).await,
        Err(DeleteError::NothingToDelete)
    ));
    assert_eq!(server.store().link_count(), 0);
    assert_eq!(server.store().verify().unwrap(), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_gives_the_longest_serving_idle_slot_to_a_newcomer_after_its_quantum() {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let config = ServerConfig {
        max_connections: 3,
        ..Default::default()
    };
    let (server, addr) =
        start_server(dir.path(), StoreParams::default(), config, clock.clone()).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert!(raw_hello(&mut s).await);
        held.push(s);
    }
    client(addr, clock.clone())
        .info(&server_addr(addr))
        .await
        .expect("the newcomer is served");
    let r = read_msg::<Response, _>(&mut held[0], u32::MAX)
        .await
        .unwrap();
    assert!(
        matches!(
            r,
            Response::Error {
                code: ErrorCode::Busy,
                ..
            }
        ),
        "the oldest idle connection was told: {r:?}"
    );
    drop(held);
    // At most 30 s (a loaded machine), not 2.
    for _ in 0..1500 {
        if server.open_connections() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(server.open_connections(), 0);
}
