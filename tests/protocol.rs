//! The protocol end to end in memory: the library client against the server through in-memory
//! pipes, on tokio's paused clock with a manual wall clock, so timeouts and expiry are exact and
//! nothing waits in real time. `tests/tcp.rs` runs the same path over real TCP and the disk store.

mod common;

use common::*;
use rdv::client::{AcceptError, ConnectionError, DeleteError, ErrorKind, OfferError};
use rdv::clock::{Clock, ManualClock};
use rdv::framed::{read_msg, write_msg};
use rdv::proto::wire::{encode_frame, DEFAULT_MAX_FRAME};
use rdv::proto::{
    BucketId, DeleteToken, ErrorCode, KdfProfile, Passphrase, Request, Response, SealedLink,
};
use rdv::server::ServerConfig;
use rdv::store::{BucketStore, StoreParams};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

fn pass(i: usize) -> Passphrase {
    Passphrase::new(format!("initiator-{i}-correct-horse"))
}

fn code(r: Response) -> ErrorCode {
    match r {
        Response::Error { code, .. } => code,
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn hello<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
    assert!(raw_hello(s).await, "version exchange");
}

fn default_server(
    clock: &ManualClock,
) -> (
    Arc<rdv::server::Server<rdv::store::MemoryStore>>,
    rdv::client::Client,
) {
    pipe_server(
        StoreParams::default(),
        ServerConfig::default(),
        Arc::new(clock.clone()),
    )
}

#[tokio::test(start_paused = true)]
async fn sixty_four_initiators_fill_a_bucket_and_each_finds_only_its_own() {
    let clock = manual_clock();
    let (_server, client) = default_server(&clock);
    let client = Arc::new(client);
    let sa = pipe_addr();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (client, sa) = (client.clone(), sa.clone());
        tasks.push(tokio::spawn(async move {
            let payload = format!("smp://server-{i}.example/queue/{i}");
            client
                .offer(&sa, payload.as_bytes(), pass(i), KdfProfile::Test)
                .await
                .map(|o| (i, payload, o))
        }));
    }
    let mut offers = Vec::new();
    for t in tasks {
        offers.push(t.await.unwrap().expect("offer"));
    }
    let first = offers[0].2.bucket;
    assert!(
        offers.iter().all(|(_, _, o)| o.bucket == first),
        "all 64 in one bucket"
    );
    assert_eq!(
        first,
        BucketId {
            created: T0,
            seq: 0
        }
    );

    // Every accepter opens exactly its own payload among 63 others.
    let mut indices = std::collections::HashSet::new();
    for (i, payload, offer) in &offers {
        let link = offer.link.without_passphrase();
        let got = client.accept(&link, Some(pass(*i))).await.expect("accept");
        assert_eq!(&got.payload[..], payload.as_bytes());
        assert_eq!(got.tried, 64);
        indices.insert(got.index);
    }
    assert_eq!(indices.len(), 64, "each link sits at its own position");

    // The 65th store opens a new bucket.
    let o = client
        .offer(&sa, b"sixty-fifth", pass(64), KdfProfile::Test)
        .await
        .unwrap();
    assert_eq!(
        o.bucket,
        BucketId {
            created: T0,
            seq: 1
        }
    );
    assert_ne!(o.link.locator, offers[0].2.link.locator);
}

#[tokio::test(start_paused = true)]
async fn wrong_passphrase_finds_nothing() {
    let clock = manual_clock();
    let (_s, c) = default_server(&clock);
    let o = c
        .offer(&pipe_addr(), b"payload", pass(1), KdfProfile::Test)
        .await
        .unwrap();
    let link = o.link.without_passphrase();
    let e = c.accept(&link, Some(pass(2))).await.unwrap_err();
    assert!(matches!(e, AcceptError::NoMatch { tried: 64 }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::BadInput);
    assert!(
        e.to_string()
            .contains("no link in this bucket opens with this passphrase"),
        "{e}"
    );
    // Without any passphrase: a clear error before any network traffic.
    assert!(matches!(
        c.accept(&link, None).await,
        Err(AcceptError::PassphraseRequired)
    ));
    // The one-channel link carries its passphrase.
    assert_eq!(
        &c.accept(&o.link, None).await.unwrap().payload[..],
        b"payload"
    );
}

/// Two-channel mode against a link-channel attacker: the accepter has the right passphrase (from
/// the other channel), the attacker swaps in a one-channel link of its own offer. The accepter
/// must not open the attacker's payload.
#[tokio::test(start_paused = true)]
async fn a_swapped_one_channel_link_never_overrides_the_given_passphrase() {
    let clock = manual_clock();
    let (_s, c) = default_server(&clock);
    let real = c
        .offer(
            &pipe_addr(),
            b"smp://real-server/queue",
            pass(1),
            KdfProfile::Test,
        )
        .await
        .unwrap();
    let evil = c
        .offer(
            &pipe_addr(),
            b"smp://attacker-server/queue",
            Passphrase::new("attacker-chosen-passphrase"),
            KdfProfile::Test,
        )
        .await
        .unwrap();
    // The accepter receives the attacker's one-channel link and types the real passphrase.
    let r = c.accept(&evil.link, Some(pass(1))).await;
    match r {
        Err(e @ AcceptError::PassphraseConflict) => {
            assert_eq!(e.kind(), ErrorKind::BadInput);
            assert!(e.to_string().contains("refusing to choose"), "{e}");
        }
        Ok(a) => panic!(
            "opened a payload of {} bytes instead of refusing",
            a.payload.len()
        ),
        Err(e) => panic!("expected PassphraseConflict, got {e:?}"),
    }
    // The same passphrase as the link's own is still a conflict: there is no silent choice.
    let own = evil.link.passphrase.clone();
    assert!(matches!(
        c.accept(&evil.link, own).await,
        Err(AcceptError::PassphraseConflict)
    ));
    // The genuine two-channel link still works.
    let got = c
        .accept(&real.link.without_passphrase(), Some(pass(1)))
        .await
        .unwrap();
    assert_eq!(&got.payload[..], b"smp://real-server/queue");
}

#[tokio::test(start_paused = true)]
async fn deleted_link_is_gone() {
    let clock = manual_clock();
    let (server, c) = default_server(&clock);
    let sa = pipe_addr();
    let keep = c
        .offer(&sa, b"keep", pass(1), KdfProfile::Test)
        .await
        .unwrap();
    let gone = c
        .offer(&sa, b"gone", pass(2), KdfProfile::Test)
        .await
        .unwrap();
    assert_eq!(server.store().link_count(), 2);
    // A wrong token deletes nothing.
    assert!(matches!(
        c.delete(&gone.link, &DeleteToken::from_bytes([0; 32]))
            .await,
        Err(DeleteError::NothingToDelete)
    ));
    c.delete(&gone.link, &gone.delete_token).await.unwrap();
    assert!(matches!(
        c.accept(&gone.link, None).await,
        Err(AcceptError::NoMatch { .. })
    ));
    let again = c.delete(&gone.link, &gone.delete_token).await.unwrap_err();
    assert!(matches!(again, DeleteError::NothingToDelete));
    assert!(again.to_string().contains("nothing to delete"), "{again}");
    assert_eq!(
        &c.accept(&keep.link, None).await.unwrap().payload[..],
        b"keep"
    );
    assert_eq!(server.store().link_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn expired_buckets_are_gone_and_collected() {
    let clock = manual_clock();
    let params = StoreParams {
        open_window_secs: 10,
        ttl_secs: 100,
        max_links: None,
        ..Default::default()
    };
    let (server, c) = pipe_server(params, ServerConfig::default(), Arc::new(clock.clone()));
    let sa = pipe_addr();
    let old = c
        .offer(&sa, b"old", pass(1), KdfProfile::Test)
        .await
        .unwrap();
    clock.advance(50);
    let young = c
        .offer(&sa, b"young", pass(2), KdfProfile::Test)
        .await
        .unwrap();
    assert_ne!(
        old.bucket, young.bucket,
        "the open window closed the first bucket"
    );
    clock.advance(50); // old is exactly 100 s old: expired
    assert!(matches!(
        c.accept(&old.link, None).await,
        Err(AcceptError::NotFound)
    ));
    assert_eq!(
        &c.accept(&young.link, None).await.unwrap().payload[..],
        b"young"
    );
    assert_eq!(
        server
            .store()
            .collect_garbage(clock.now(), 1000)
            .await
            .unwrap(),
        1
    );
    assert_eq!(server.store().link_count(), 1);
    clock.advance(50);
    assert!(matches!(
        c.accept(&young.link, None).await,
        Err(AcceptError::NotFound)
    ));
    assert_eq!(
        server
            .store()
            .collect_garbage(clock.now(), 1000)
            .await
            .unwrap(),
        1
    );
    assert_eq!(server.store().link_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn quota_refuses_new_stores_and_keeps_old_ones() {
    let clock = manual_clock();
    let params = StoreParams {
        max_links: Some(3),
        ..Default::default()
    };
    let (_s, c) = pipe_server(params, ServerConfig::default(), Arc::new(clock.clone()));
    let sa = pipe_addr();
    let mut offers = Vec::new();
    for i in 0..3 {
        offers.push(
            c.offer(&sa, format!("p{i}").as_bytes(), pass(i), KdfProfile::Test)
                .await
                .unwrap(),
        );
    }
    match c.offer(&sa, b"p3", pass(3), KdfProfile::Test).await {
        Err(OfferError::Connection(ConnectionError::Server {
            code: ErrorCode::QuotaExceeded,
            message,
        })) => assert!(message.contains("quota"), "{message}"),
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    for (i, o) in offers.iter().enumerate() {
        assert_eq!(
            &c.accept(&o.link, None).await.unwrap().payload[..],
            format!("p{i}").as_bytes()
        );
    }
    // Deleting frees a slot, once the bucket takes no more stores: before, the deleted link's
    // mark (which keeps it from being stored there again) holds the place until it expires.
    c.delete(&offers[0].link, &offers[0].delete_token)
        .await
        .unwrap();
    assert!(matches!(
        c.offer(&sa, b"p3", pass(3), KdfProfile::Test).await,
        Err(OfferError::Connection(ConnectionError::Server {
            code: ErrorCode::QuotaExceeded,
            ..
        }))
    ));
    clock.advance(params.open_window_secs + rdv::proto::stamp::LATE_STORE_SECS);
    c.delete(&offers[1].link, &offers[1].delete_token)
        .await
        .unwrap();
    c.offer(&sa, b"p3", pass(3), KdfProfile::Test)
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn limits_give_clear_errors_and_others_keep_being_served() {
    let clock = manual_clock();
    let config = ServerConfig {
        max_connections: 4,
        idle_timeout: Duration::from_secs(5),
        rate_per_sec: 2,
        rate_burst: 3,
        ..Default::default()
    };
    let (server, _) = pipe_server(StoreParams::default(), config, Arc::new(clock.clone()));
    let sa = pipe_addr();

    // No Hello first.
    let mut s = raw_pipe(&server);
    write_msg(&mut s, &Request::Info, DEFAULT_MAX_FRAME)
        .await
        .unwrap();
    assert_eq!(
        code(read_msg(&mut s, u32::MAX).await.unwrap()),
        ErrorCode::HelloRequired
    );

    // Unsupported version.
    let mut s = raw_pipe(&server);
    let hello79 = Request::Hello {
        min_version: 7,
        max_version: 9,
    };
    write_msg(&mut s, &hello79, DEFAULT_MAX_FRAME)
        .await
        .unwrap();
    assert_eq!(
        code(read_msg(&mut s, u32::MAX).await.unwrap()),
        ErrorCode::UnsupportedVersion
    );

    // Oversize length prefix: refused before the body is read.
    let mut s = raw_pipe(&server);
    hello(&mut s).await;
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert_eq!(
        code(read_msg(&mut s, u32::MAX).await.unwrap()),
        ErrorCode::FrameTooLarge
    );

    // Garbage body.
    let mut s = raw_pipe(&server);
    hello(&mut s).await;
    s.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
    assert_eq!(
        code(read_msg(&mut s, u32::MAX).await.unwrap()),
        ErrorCode::Malformed
    );

    // Truncated frame then silence: times out after exactly the idle timeout.
    let mut s = raw_pipe(&server);
    hello(&mut s).await;
    s.write_all(&[0, 0, 1, 0, 1, 2]).await.unwrap();
    let t = tokio::time::Instant::now();
    assert_eq!(
        code(read_msg(&mut s, u32::MAX).await.unwrap()),
        ErrorCode::TimedOut
    );
    assert_eq!(t.elapsed(), Duration::from_secs(5));

    // A slowloris trickle (one byte a second) does not extend the timeout either.
    let s = raw_pipe(&server);
    let frame = encode_frame(
        &Request::Hello {
            min_version: 1,
            max_version: 1,
        },
        DEFAULT_MAX_FRAME,
    )
    .unwrap();
    let (mut rd, mut wr) = tokio::io::split(s);
    let trickle = tokio::spawn(async move {
        for b in frame {
            if wr.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    assert_eq!(
        code(read_msg(&mut rd, u32::MAX).await.unwrap()),
        ErrorCode::TimedOut
    );
    trickle.abort();

    // Rate limit: burst of 3, then RateLimited, and the connection stays usable.
    let mut s = raw_pipe(&server);
    hello(&mut s).await; // uses one token
    for _ in 0..2 {
        write_msg(&mut s, &Request::Info, DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        assert!(matches!(
            read_msg(&mut s, u32::MAX).await.unwrap(),
            Response::Info(_)
        ));
    }
    write_msg(&mut s, &Request::Info, DEFAULT_MAX_FRAME)
        .await
        .unwrap();
    assert_eq!(
        code(read_msg(&mut s, u32::MAX).await.unwrap()),
        ErrorCode::RateLimited
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    write_msg(&mut s, &Request::Info, DEFAULT_MAX_FRAME)
        .await
        .unwrap();
    assert!(matches!(
        read_msg(&mut s, u32::MAX).await.unwrap(),
        Response::Info(_)
    ));
    drop(s);

    // Connection flood: 4 idle connections hold every slot (of a server whose idle timeout is
    // longer than the slot quantum); a newcomer waits in line until the longest-serving holder
    // has had its slot for the quantum, then takes it.
    let config = ServerConfig {
        max_connections: 4,
        ..Default::default()
    };
    let (server, c) = pipe_server(StoreParams::default(), config, Arc::new(clock.clone()));
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = raw_pipe(&server);
        hello(&mut s).await;
        held.push(s);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.open_connections(), 4);
    let t = tokio::time::Instant::now();
    c.info(&sa).await.expect("a newcomer gets a slot");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(9_950) && waited < Duration::from_secs(11),
        "the newcomer waited {waited:?}: a holder keeps its slot for 10 s"
    );
    let mut oldest = held.remove(0);
    let r = read_msg::<Response, _>(&mut oldest, u32::MAX)
        .await
        .unwrap();
    match r {
        Response::Error {
            code: ErrorCode::Busy,
            message,
        } => assert!(message.contains("closed to make room"), "{message}"),
        other => panic!("expected the eviction notice, got {other:?}"),
    }
    // The others were not touched: each still answers.
    for s in &mut held {
        write_msg(&mut *s, &Request::Info, DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        assert!(matches!(
            read_msg(&mut *s, u32::MAX).await.unwrap(),
            Response::Info(_)
        ));
    }
    drop(held);
    drop(oldest);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(server.open_connections(), 0);
}

/// Connections in line get slots in their order, each when a holder has had its own for the
/// quantum (10 s); a busy holder never yields; one that waits longer than the line's limit (45 s)
/// is refused with `Busy`.
#[tokio::test(start_paused = true)]
async fn connections_in_line_get_slots_in_order_and_are_refused_after_the_wait() {
    let clock = manual_clock();
    let config = ServerConfig {
        max_connections: 1,
        rate_per_sec: 1000,
        rate_burst: 1000,
        ..Default::default()
    };
    let (server, _c) = pipe_server(StoreParams::default(), config, Arc::new(clock.clone()));
    let t0 = tokio::time::Instant::now();
    let mut holder = raw_pipe(&server);
    hello(&mut holder).await;
    // Six newcomers speak at once: the first gets in at 10 s, the second at 20 s, …; the fifth
    // and sixth would have to wait past 45 s.
    let mut tasks = Vec::new();
    for i in 0..6u64 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10 * (i + 1))).await;
            let mut s = raw_pipe(&server);
            let ok = raw_hello(&mut s).await;
            (ok, tokio::time::Instant::now() - t0, s)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    for (i, (ok, at, _)) in results.iter().enumerate() {
        let i = i as u64;
        if i < 4 {
            assert!(*ok, "newcomer {i} got a slot");
            assert!(
                *at >= Duration::from_secs(10 * (i + 1))
                    && *at < Duration::from_secs(10 * (i + 1) + 1),
                "newcomer {i} got its slot at {at:?}"
            );
        } else {
            assert!(!*ok, "newcomer {i} is refused after the line's wait");
            assert!(*at >= Duration::from_secs(45), "refused at {at:?}");
        }
    }
    assert_eq!(server.slot_holders(), 1);
}

/// A server that took the connection's slot back answers the next request `Busy` without
/// executing it: every client operation tries again on a fresh connection instead of failing.
/// Here every other connection is such a one (it answers the version exchange, then `Busy`).
#[tokio::test(start_paused = true)]
async fn a_busy_answer_after_the_version_exchange_is_retried_on_a_fresh_connection() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let clock = manual_clock();
    let server = rdv::server::Server::new(
        rdv::store::MemoryStore::new(StoreParams::default()),
        ServerConfig::default(),
        Arc::new(clock.clone()),
    )
    .unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let busy = Arc::new(AtomicUsize::new(0));
    let (n2, busy2) = (n.clone(), busy.clone());
    let connector = rdv::client::pipe::PipeConnector::new(move |mut s| {
        if n2.fetch_add(1, Ordering::SeqCst) % 2 == 1 {
            tokio::spawn(server.clone().serve_stream(s));
            return;
        }
        let busy = busy2.clone();
        tokio::spawn(async move {
            let Ok(Request::Hello { max_version, .. }) =
                read_msg::<Request, _>(&mut s, 1 << 20).await
            else {
                return;
            };
            let hello = Response::Hello {
                version: max_version,
            };
            let _ = write_msg(&mut s, &hello, DEFAULT_MAX_FRAME).await;
            if read_msg::<Request, _>(&mut s, 1 << 20).await.is_ok() {
                busy.fetch_add(1, Ordering::SeqCst);
                let no = Response::Error {
                    code: ErrorCode::Busy,
                    message: "this idle connection was closed to make room".into(),
                };
                let _ = write_msg(&mut s, &no, DEFAULT_MAX_FRAME).await;
            }
        });
    });
    let c = rdv::client::Client::new(
        Arc::new(connector),
        rdv::client::ClientConfig::default(),
        Arc::new(clock),
    );
    let (offer, pending) = c
        .offer_expecting_answer(&pipe_addr(), b"busy", pass(1), KdfProfile::Test)
        .await
        .expect("offer");
    let found = c.accept(&offer.link, None).await.expect("accept");
    assert_eq!(&found.payload[..], b"busy");
    c.answer(&found.reply.unwrap(), b"back")
        .await
        .expect("answer");
    assert_eq!(
        &c.collect(&pending)
            .await
            .expect("look")
            .expect("the answer")[..],
        b"back"
    );
    c.delete(&offer.link, &offer.delete_token)
        .await
        .expect("delete");
    c.info(&pipe_addr()).await.expect("info");
    assert_eq!(
        busy.load(Ordering::SeqCst),
        6,
        "each operation met one Busy"
    );
}

/// Stores that find no bucket ID the client policy accepts (here: one bucket a second, and the
/// clock stands still) wait their turn and give up after the server's wait with the documented
/// transient code; nothing was stored.
#[tokio::test(start_paused = true)]
async fn stores_without_room_wait_then_get_overloaded() {
    let clock = manual_clock();
    let config = ServerConfig {
        rate_per_sec: 1000,
        rate_burst: 1000,
        ..Default::default()
    };
    let params = StoreParams {
        max_seq: 0,
        ..Default::default()
    };
    let (server, c) = pipe_server(params, config, Arc::new(clock.clone()));
    for i in 0..64 {
        c.offer(&pipe_addr(), b"x", pass(i), KdfProfile::Test)
            .await
            .unwrap();
    }
    let mut waiting = Vec::new();
    for _ in 0..4 {
        let mut s = raw_pipe(&server);
        hello(&mut s).await;
        let store = Request::Store {
            link: SealedLink([7; 256]),
            delete_check: DeleteToken::from_bytes([1; 32]).check(),
        };
        write_msg(&mut s, &store, DEFAULT_MAX_FRAME).await.unwrap();
        waiting.push(s);
    }
    let t = tokio::time::Instant::now();
    for s in &mut waiting {
        assert_eq!(
            code(read_msg(&mut *s, u32::MAX).await.unwrap()),
            ErrorCode::Overloaded
        );
    }
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(server.store().link_count(), 64);
}

/// A memory store whose deletes wait at a gate, counting how many are inside at once.
struct GatedDeletes {
    inner: rdv::store::MemoryStore,
    inside: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    gate: tokio::sync::Semaphore,
}

impl BucketStore for GatedDeletes {
    async fn store_in(
        &self,
        link: SealedLink,
        check: rdv::proto::DeleteCheck,
        target: Option<(BucketId, rdv::proto::stamp::Stamp)>,
        now: u64,
    ) -> Result<BucketId, rdv::store::StoreError> {
        self.inner.store_in(link, check, target, now).await
    }
    async fn challenge(&self, now: u64) -> Result<BucketId, rdv::store::StoreError> {
        self.inner.challenge(now).await
    }
    async fn fetch_entries(
        &self,
        locator: rdv::proto::Locator,
        now: u64,
    ) -> Result<Option<(BucketId, Vec<rdv::store::Entry>)>, rdv::store::StoreError> {
        self.inner.fetch_entries(locator, now).await
    }
    async fn delete(
        &self,
        locator: rdv::proto::Locator,
        check: rdv::proto::DeleteCheck,
        now: u64,
    ) -> Result<bool, rdv::store::StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.inside.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(n, SeqCst);
        let _pass = self.gate.acquire().await;
        self.inside.fetch_sub(1, SeqCst);
        self.inner.delete(locator, check, now).await
    }
    async fn put_answer_as(
        &self,
        mailbox: rdv::proto::MailboxAddr,
        answer: rdv::proto::SealedAnswer,
        now: u64,
        kind: rdv::store::WriteKind,
    ) -> Result<rdv::store::PutAnswer, rdv::store::StoreError> {
        self.inner.put_answer_as(mailbox, answer, now, kind).await
    }
    async fn fetch_answer(
        &self,
        mailbox: rdv::proto::MailboxAddr,
        now: u64,
    ) -> Result<Option<rdv::proto::SealedAnswer>, rdv::store::StoreError> {
        self.inner.fetch_answer(mailbox, now).await
    }
    async fn collect_garbage(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<usize, rdv::store::StoreError> {
        self.inner.collect_garbage(now, limit).await
    }
    fn expiry_hold(&self) -> Option<rdv::store::ExpiryHold> {
        self.inner.expiry_hold()
    }
    async fn hold_expiry(
        &self,
        hold: rdv::store::ExpiryHold,
    ) -> Result<(), rdv::store::StoreError> {
        self.inner.hold_expiry(hold).await
    }
    fn take_opened(&self) -> Vec<BucketId> {
        self.inner.take_opened()
    }

    fn params(&self) -> StoreParams {
        self.inner.params()
    }
    fn filler_secret(&self) -> &rdv::proto::padding::FillerSecret {
        self.inner.filler_secret()
    }
    fn link_count(&self) -> u64 {
        self.inner.link_count()
    }
    fn answer_count(&self) -> u64 {
        self.inner.answer_count()
    }
    fn mark_count(&self) -> u64 {
        self.inner.mark_count()
    }
}

/// Deletes are writes: like stores they are admitted fairly, one per source at a time. A
/// flooder with many streams on one circuit (one source) has one delete in the store at once,
/// not one per stream, so it cannot crowd out other sources' writes.
#[tokio::test(start_paused = true)]
async fn deletes_are_admitted_one_per_source_like_stores() {
    let clock = manual_clock();
    let store = GatedDeletes {
        inner: rdv::store::MemoryStore::new(StoreParams::default()),
        inside: Default::default(),
        most: Default::default(),
        gate: tokio::sync::Semaphore::new(0),
    };
    let config = ServerConfig {
        max_connections: 64,
        ..Default::default()
    };
    let server = rdv::server::Server::new(store, config, Arc::new(clock)).unwrap();
    let source = rdv::server::Source::new();
    const STREAMS: usize = 20;
    let mut tasks = Vec::new();
    for i in 0..STREAMS {
        let (mut s, end) = tokio::io::duplex(64 * 1024);
        tokio::spawn(server.clone().serve_stream_from(end, source.clone()));
        tasks.push(tokio::spawn(async move {
            hello(&mut s).await;
            let mut token = [0u8; 32];
            token[0] = i as u8;
            let req = Request::Delete {
                locator: BucketId {
                    created: T0,
                    seq: 0,
                }
                .locator(),
                token: DeleteToken::from_bytes(token),
            };
            write_msg(&mut s, &req, DEFAULT_MAX_FRAME).await.unwrap();
            read_msg::<Response, _>(&mut s, u32::MAX).await.unwrap()
        }));
    }
    // Everything that can run runs (paused time moves on only when all tasks wait).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let most = || {
        server
            .store()
            .most
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    assert_eq!(most(), 1, "deletes of one source inside the store at once");
    server.store().gate.add_permits(STREAMS);
    for t in tasks {
        assert_eq!(code(t.await.unwrap()), ErrorCode::NotFound);
    }
    assert_eq!(most(), 1);
}
