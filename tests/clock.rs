//! Time is input, not truth: the server's wall clock jumps ±30 days and is corrected, while the
//! clients' clocks are right. After the correction the server hands out IDs the default policy
//! accepts within one open window, IDs stay unique, and no link is collected before its TTL has
//! passed in elapsed time. In memory, on tokio's paused clock, with two manual clocks (the
//! server's, which jumps, and the true one the clients use). `tests/clock_jump.rs` does it once
//! on the real binary with libfaketime.

mod common;

use common::*;
use rdv::client::pipe::PipeConnector;
use rdv::client::{AcceptError, Client, ClientConfig, OfferError};
use rdv::clock::ManualClock;
use rdv::framed::{read_msg, write_msg};
use rdv::proto::wire::DEFAULT_MAX_FRAME;
use rdv::proto::{
    BucketId, DeleteToken, KdfProfile, Passphrase, PolicyViolation, Request, Response, SealedLink,
};
use rdv::server::{Server, ServerConfig};
use rdv::store::{BucketStore, MemoryStore, StoreParams};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

const DAY: i64 = 86_400;
const TTL: u64 = 7 * 86_400;
const WINDOW: u64 = 600;

struct World {
    /// The server's wall clock (jumps).
    server_clock: ManualClock,
    /// True time (the clients').
    truth: ManualClock,
    server: Arc<Server<MemoryStore>>,
    client: Client,
    /// Every ID the server handed out, refused ones included.
    ids: BTreeSet<BucketId>,
    n: usize,
}

impl World {
    fn new() -> Self {
        let server_clock = manual_clock();
        let truth = manual_clock();
        let params = StoreParams {
            open_window_secs: WINDOW,
            ttl_secs: TTL,
            ..Default::default()
        };
        let server = Server::new(
            MemoryStore::new(params),
            ServerConfig::default(),
            Arc::new(server_clock.clone()),
        )
        .unwrap();
        let client = Client::new(
            Arc::new(PipeConnector::to_server(server.clone())),
            ClientConfig {
                retry_budget: Duration::ZERO,
                ..Default::default()
            },
            Arc::new(truth.clone()),
        );
        World {
            server_clock,
            truth,
            server,
            client,
            ids: BTreeSet::new(),
            n: 0,
        }
    }

    /// Time passes for everybody.
    fn advance(&self, secs: u64) {
        self.server_clock.advance(secs);
        self.truth.advance(secs);
    }

    /// A raw store: the ID exactly as the server hands it out.
    async fn raw_store(&mut self) -> BucketId {
        let mut s = raw_pipe(&self.server);
        assert!(raw_hello(&mut s).await);
        self.n += 1;
        let req = Request::Store {
            link: SealedLink([self.n as u8; 256]),
            delete_check: DeleteToken::from_bytes([self.n as u8; 32]).check(),
        };
        write_msg(&mut s, &req, DEFAULT_MAX_FRAME).await.unwrap();
        match read_msg::<Response, _>(&mut s, u32::MAX).await.unwrap() {
            Response::Stored { id } => {
                self.ids.insert(id);
                id
            }
            other => panic!("store: {other:?}"),
        }
    }

    async fn offer(&mut self, payload: &str) -> Result<rdv::client::Offer, OfferError> {
        self.n += 1;
        let r = self
            .client
            .offer(
                &pipe_addr(),
                payload.as_bytes(),
                Passphrase::new(format!("clock-pass-{}", self.n)),
                KdfProfile::Test,
            )
            .await;
        if let Ok(o) = &r {
            self.ids.insert(o.bucket);
        }
        r
    }
}

#[tokio::test(start_paused = true)]
async fn forward_jump_of_30_days_then_correction() {
    let mut w = World::new();
    let before = w.offer("before the jump").await.unwrap();
    w.advance(10);

    // The server's clock jumps 30 days ahead: its new buckets lie in the future, and clients
    // refuse them at the challenge, before storing anything (unavoidable: the server cannot know
    // its clock is wrong)...
    w.server_clock.jump(30 * DAY);
    w.advance(WINDOW + 1); // the open bucket's window passes
    match w.offer("during the jump").await {
        Err(OfferError::RefusedChallenge(PolicyViolation::FromTheFuture { .. })) => {}
        other => panic!("expected a refusal of the future bucket, got {other:?}"),
    }
    let future = w.raw_store().await;
    assert!(future.created > w.truth.now_secs() + 29 * DAY as u64);
    // ... but nothing is collected or hidden: expiry follows elapsed time, not the jumped clock.
    assert_eq!(w.server.collect_expired().await.unwrap(), 0);
    let got = w.client.accept(&before.link, None).await.unwrap();
    assert_eq!(&got.payload[..], b"before the jump");

    // Corrected. The very next offer is accepted: the future bucket is closed at once.
    w.server_clock.jump(-30 * DAY);
    let after = w.offer("after the correction").await.unwrap();
    assert!(after.bucket.created <= w.truth.now_secs() + 60);
    assert_ne!(after.bucket, future);
    for i in 0..70 {
        w.offer(&format!("after {i}")).await.unwrap();
    }

    // A month later real time reaches the future bucket's second: its ID is not handed out to
    // a new bucket (the future bucket still exists, its TTL counts from its creation).
    w.advance(future.created - w.truth.now_secs());
    assert_eq!(w.server_clock.now_secs(), future.created);
    let id = w.raw_store().await;
    assert_eq!(
        id,
        BucketId {
            created: future.created,
            seq: future.seq + 1
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_jump_ahead_beyond_the_ttl_collects_nothing_early() {
    let mut w = World::new();
    let a = w.offer("must live its full ttl").await.unwrap();
    w.server_clock.jump(30 * DAY);
    // Many GC passes while the clock is wrong: the link stays, and stays fetchable.
    for _ in 0..10 {
        w.advance(3600);
        assert_eq!(w.server.collect_expired().await.unwrap(), 0);
    }
    assert_eq!(w.server.store().link_count(), 1);
    let got = w.client.accept(&a.link, None).await.unwrap();
    assert_eq!(&got.payload[..], b"must live its full ttl");
    // Its TTL passes in elapsed time: now it goes (the wall clock is still 30 days ahead).
    w.advance(TTL - 10 * 3600);
    assert_eq!(w.server.collect_expired().await.unwrap(), 1);
    assert!(matches!(
        w.client.accept(&a.link, None).await,
        Err(AcceptError::NotFound)
    ));
}

#[tokio::test(start_paused = true)]
async fn backward_jump_of_30_days_then_correction() {
    let mut w = World::new();
    let first: Vec<BucketId> = {
        let mut v = Vec::new();
        for _ in 0..70 {
            v.push(w.raw_store().await);
        }
        v
    };
    w.advance(5);
    w.server_clock.jump(-30 * DAY);
    // Buckets opened now are a month old to the clients: refused.
    w.advance(WINDOW + 1);
    match w.offer("during the backward jump").await {
        Err(OfferError::RefusedChallenge(PolicyViolation::TooOld { .. })) => {}
        other => panic!("expected a refusal of the stale bucket, got {other:?}"),
    }
    let stale = w.raw_store().await;
    // Nothing expires early either (the wall clock is behind: links live longer).
    assert_eq!(w.server.collect_expired().await.unwrap(), 0);
    // Corrected: accepted at once, and no ID from before is handed out again.
    w.server_clock.jump(30 * DAY);
    let after = w.offer("after the correction").await.unwrap();
    assert!(!first.contains(&after.bucket) && after.bucket != stale);
    let fresh = w.raw_store().await;
    assert!(!first.contains(&fresh));
}

trait NowSecs {
    fn now_secs(&self) -> u64;
}

impl NowSecs for ManualClock {
    fn now_secs(&self) -> u64 {
        rdv::clock::Clock::now(self)
    }
}
