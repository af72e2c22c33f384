//! A server that starts with its wall clock off collects no link before its TTL has passed by
//! every measure it has: its own store's last expiry time (redb), and for a cluster the database
//! server's clock (PostgreSQL). Both directions: a clock ahead at boot (which used to wipe the
//! store at the first garbage collection), and one behind at boot that is corrected while the
//! server runs (which used to stop expiry until a restart). And links and answers stored while
//! the clock runs behind keep their whole TTL once it is corrected (they used to be collected at
//! the correction), on one server across a restart and on a cluster.

mod common;

use common::pg::Postgres;
use common::{manual_clock, raw_pipe, T0};
use rdv::clock::{Clock, ManualClock, SystemClock, RESTART_CREDIT};
use rdv::framed::{read_msg, write_msg};
use rdv::proto::padding::FillerSecret;
use rdv::proto::wire::DEFAULT_MAX_FRAME;
use rdv::proto::{BucketId, DeleteToken, SealedLink};
use rdv::proto::{MailboxAddr, Request, Response, SealedAnswer};
use rdv::server::{Server, ServerConfig};
use rdv::store::{BucketStore, DiskStore, DiskStoreConfig, PgStore, PgStoreConfig, StoreParams};
use std::path::Path;
use std::sync::Arc;

const TTL: u64 = 86_400;
const DAY: i64 = 86_400;

fn params() -> StoreParams {
    StoreParams {
        ttl_secs: TTL,
        ..Default::default()
    }
}

fn open(dir: &Path) -> DiskStore {
    DiskStore::open(
        dir,
        DiskStoreConfig {
            params: params(),
            ..Default::default()
        },
        FillerSecret::from_bytes([1; 32]),
    )
    .unwrap()
}

fn link(i: u8) -> (SealedLink, DeleteToken) {
    (SealedLink([i; 256]), DeleteToken::from_bytes([i; 32]))
}

fn server<S: BucketStore>(store: S, clock: &ManualClock, trust_clock: bool) -> Arc<Server<S>> {
    Server::new(
        store,
        ServerConfig {
            trust_clock,
            ..Default::default()
        },
        Arc::new(clock.clone()),
    )
    .unwrap()
}

/// Store a link at the clock's time, collect garbage once (the store records its expiry time),
/// and close the store: a server that ran for a while and stopped.
async fn a_server_ran(dir: &Path, clock: &ManualClock) -> BucketId {
    let s = server(open(dir), clock, false);
    let (l, t) = link(1);
    let id = s.store().store(l, t.check(), clock.now()).await.unwrap();
    clock.advance(120);
    assert_eq!(s.collect_expired().await.unwrap(), 0);
    s.shutdown();
    id
}

async fn present<S: BucketStore>(s: &Server<S>, id: BucketId, now: u64) -> bool {
    s.store().fetch(id.locator(), now).await.unwrap().is_some()
}

#[tokio::test]
async fn a_clock_ahead_at_boot_collects_nothing_early() {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let id = a_server_ran(dir.path(), &clock).await;
    // The server comes back a minute later, its clock two days ahead.
    clock.advance(60);
    clock.jump(2 * DAY);
    let s = server(open(dir.path()), &clock, false);
    assert_eq!(
        s.collect_expired().await.unwrap(),
        0,
        "nothing is collected"
    );
    assert!(present(&s, id, T0).await);
    // Expiry goes on from the store's last expiry time: the link goes once its TTL has passed
    // in elapsed time (and the restart's credit), not before.
    clock.advance(TTL - 120 - 60 - RESTART_CREDIT.as_secs() - 61);
    assert_eq!(s.collect_expired().await.unwrap(), 0, "not a second early");
    clock.advance(2 * RESTART_CREDIT.as_secs() + 120);
    assert_eq!(
        s.collect_expired().await.unwrap(),
        1,
        "collected once its TTL passed"
    );
    // Restarting again changes nothing: the mark moved on with elapsed time.
    s.shutdown();
    drop(s);
    let (l, t) = link(2);
    let s = server(open(dir.path()), &clock, false);
    let id2 = s.store().store(l, t.check(), clock.now()).await.unwrap();
    assert_eq!(s.collect_expired().await.unwrap(), 0);
    assert!(present(&s, id2, T0 + TTL).await);
}

#[tokio::test]
async fn trust_clock_takes_the_wall_clock_after_a_long_downtime() {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let id = a_server_ran(dir.path(), &clock).await;
    // Really down for two days (wall and elapsed time both move), restarted with --trust-clock:
    // the link, past its TTL, goes at the first collection.
    clock.advance(2 * TTL);
    let s = server(open(dir.path()), &clock, true);
    assert_eq!(s.collect_expired().await.unwrap(), 1);
    assert!(!present(&s, id, clock.now()).await);
}

#[tokio::test]
async fn a_clock_behind_at_boot_resumes_expiry_once_corrected() {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let id = a_server_ran(dir.path(), &clock).await;
    // Back a minute later with the clock a day behind; an hour later NTP corrects it.
    clock.advance(60);
    clock.jump(-DAY);
    let s = server(open(dir.path()), &clock, false);
    clock.advance(3600);
    clock.jump(DAY);
    assert_eq!(s.collect_expired().await.unwrap(), 0);
    // Expiry is not stuck a day behind: the link goes when its TTL has passed (within the
    // tolerance of a jump), without a restart.
    clock.advance(TTL - 120 - 60 - 3600 + 120);
    assert_eq!(s.collect_expired().await.unwrap(), 1);
    assert!(!present(&s, id, clock.now()).await);
}

/// A frontend of a cluster on database `db` (TTL one hour).
async fn open_frontend(
    pg: &Postgres,
    db: &str,
    seed: u8,
) -> Result<PgStore, rdv::store::StoreError> {
    let mut c = PgStoreConfig::new(&pg.url(db)).unwrap();
    c.params = StoreParams {
        ttl_secs: 3600,
        ..Default::default()
    };
    PgStore::open(c, FillerSecret::from_bytes([seed; 32])).await
}

/// A cluster: three frontends on one PostgreSQL, one of them with its clock two hours ahead
/// (TTL one hour). Its garbage collection and its expiry checks follow the database server's
/// clock too, so the links stored through the others stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_with_its_clock_ahead_does_not_wipe_the_cluster() {
    let pg = Postgres::start();
    pg.create_db("skew");
    let open = |seed: u8| open_frontend(&pg, "skew", seed);
    let honest: Vec<PgStore> = vec![open(1).await.unwrap(), open(2).await.unwrap()];
    let now = SystemClock.now();
    let mut ids = Vec::new();
    for (i, f) in honest.iter().enumerate() {
        let (l, t) = link(i as u8 + 10);
        ids.push(f.store(l, t.check(), now).await.unwrap());
    }
    let skewed_clock = ManualClock::new(now + 2 * 3600);
    let skewed = server(open(3).await.unwrap(), &skewed_clock, false);
    // Straight at the store, with its own (wrong) time: the database's clock says no.
    assert_eq!(
        skewed
            .store()
            .collect_garbage(now + 2 * 3600, 1000)
            .await
            .unwrap(),
        0
    );
    // Through the server: its expiry clock starts from the database's clock, not its own.
    assert_eq!(skewed.collect_expired().await.unwrap(), 0);
    for id in &ids {
        for f in &honest {
            assert!(f.fetch(id.locator(), now).await.unwrap().is_some());
        }
        assert!(present(&skewed, *id, now).await);
    }
}

/// One request on a fresh raw stream to `s`, after a version 2 Hello.
async fn ask<S: BucketStore>(s: &Arc<Server<S>>, req: Request) -> Response {
    let mut p = raw_pipe(s);
    let hello = Request::Hello {
        min_version: 2,
        max_version: 2,
    };
    write_msg(&mut p, &hello, DEFAULT_MAX_FRAME).await.unwrap();
    let r: Response = read_msg(&mut p, u32::MAX).await.unwrap();
    assert!(matches!(r, Response::Hello { version: 2 }), "{r:?}");
    write_msg(&mut p, &req, DEFAULT_MAX_FRAME).await.unwrap();
    read_msg(&mut p, u32::MAX).await.unwrap()
}

/// A store through the server's request path (no client policy: a client whose clock is as
/// wrong as the server's would take the ID; one with a correct clock refuses it).
async fn raw_store<S: BucketStore>(s: &Arc<Server<S>>, i: u8) -> BucketId {
    let (link, t) = link(i);
    match ask(
        s,
        Request::Store {
            link,
            delete_check: t.check(),
        },
    )
    .await
    {
        Response::Stored { id } => id,
        other => panic!("store: {other:?}"),
    }
}

async fn put_answer<S: BucketStore>(s: &Arc<Server<S>>, mailbox: MailboxAddr) {
    let answer = SealedAnswer([7; rdv::proto::answer::SEALED_ANSWER_LEN]);
    let r = ask(s, Request::PutAnswer { mailbox, answer }).await;
    assert!(matches!(r, Response::AnswerStored), "{r:?}");
}

#[tokio::test]
async fn what_is_stored_while_the_clock_is_behind_keeps_its_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    a_server_ran(dir.path(), &clock).await;
    let s = server(open(dir.path()), &clock, false);
    // The clock falls a day behind; a link and an answer are stored, dated a day early.
    clock.advance(60);
    clock.jump(-DAY);
    let b = raw_store(&s, 7).await;
    assert!(b.created <= T0 - TTL + 300, "{b:?}");
    let mailbox = MailboxAddr([9; 32]);
    put_answer(&s, mailbox).await;
    let stored_at = clock.now() + DAY as u64; // true time
                                              // An hour later NTP corrects the clock: nothing goes, both are still there.
    clock.advance(3600);
    clock.jump(DAY);
    assert_eq!(
        s.collect_expired().await.unwrap(),
        0,
        "nothing at the correction"
    );
    assert!(present(&s, b, clock.now()).await);
    assert!(s
        .store()
        .fetch_answer(mailbox, clock.now())
        .await
        .unwrap()
        .is_some());
    // A restart keeps the hold.
    s.shutdown();
    drop(s);
    let s = server(open(dir.path()), &clock, false);
    assert_eq!(s.collect_expired().await.unwrap(), 0);
    assert!(present(&s, b, clock.now()).await);
    // Just before their TTL has passed in true time: still there.
    clock.advance(stored_at + TTL - 120 - clock.now());
    assert_eq!(s.collect_expired().await.unwrap(), 0, "not before the TTL");
    assert!(present(&s, b, clock.now()).await);
    assert!(s
        .store()
        .fetch_answer(mailbox, clock.now())
        .await
        .unwrap()
        .is_some());
    // They do go, at most the hold's credit (the day behind, rounded up) later.
    clock.advance(TTL + 3600);
    assert!(s.collect_expired().await.unwrap() >= 2);
    assert!(!present(&s, b, clock.now()).await);
    assert!(s
        .store()
        .fetch_answer(mailbox, clock.now())
        .await
        .unwrap()
        .is_none());
    // The hold has ended with them.
    assert!(s.store().expiry_hold().is_none());
}

/// A cluster: one frontend's clock two hours behind the database's (TTL one hour). A link stored
/// through it is dated two hours early; the other frontends neither hide it nor collect it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_stored_through_a_frontend_behind_is_kept_by_the_cluster() {
    let pg = Postgres::start();
    pg.create_db("behind");
    let open = |seed: u8| open_frontend(&pg, "behind", seed);
    let honest = open(1).await.unwrap();
    let now = SystemClock.now();
    let behind_clock = ManualClock::new(now - 2 * 3600);
    let behind = server(open(2).await.unwrap(), &behind_clock, false);
    let b = raw_store(&behind, 3).await;
    assert!(b.created <= now - 2 * 3600 + 5, "{b:?}");
    // The honest frontend, with the right time: the link is there, and its GC leaves it.
    assert!(honest.fetch(b.locator(), now).await.unwrap().is_some());
    assert_eq!(honest.collect_garbage(now, 1000).await.unwrap(), 0);
    assert!(honest.fetch(b.locator(), now).await.unwrap().is_some());
    let h = honest.expiry_hold().expect("the cluster's hold");
    assert!(h.from <= b.created && h.to >= b.created && h.credit >= 2 * 3600);
}

/// A wall clock that is stepped back two hours before each reading, while `slipping` is on:
/// every reading a request takes is early, and differs from the one before.
struct Slipping {
    clock: ManualClock,
    slipping: Arc<std::sync::atomic::AtomicBool>,
}

impl Clock for Slipping {
    fn now(&self) -> u64 {
        if self.slipping.load(std::sync::atomic::Ordering::SeqCst) {
            self.clock.jump(-2 * 3600);
        }
        self.clock.now()
    }

    fn elapsed(&self) -> std::time::Duration {
        self.clock.elapsed()
    }
}

/// The clock is stepped back while a store is on its way: the time the server checks for a hold
/// is the time it dates the link with (one reading), so the link keeps its TTL however far the
/// clock moved between two readings. (With two readings, a check on time and a store two hours
/// behind stored the link two hours early without a hold, and it was collected early.)
#[tokio::test]
async fn a_store_is_dated_with_the_reading_its_hold_was_checked_with() {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let slipping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = Server::new(
        open(dir.path()),
        ServerConfig::default(),
        Arc::new(Slipping {
            clock: clock.clone(),
            slipping: slipping.clone(),
        }),
    )
    .unwrap();
    clock.advance(60);
    slipping.store(true, std::sync::atomic::Ordering::SeqCst);
    let b = raw_store(&s, 7).await;
    slipping.store(false, std::sync::atomic::Ordering::SeqCst);
    // True time: the start plus what has elapsed.
    let stored_at = T0 + clock.elapsed().as_secs();
    assert!(b.created < stored_at - 3600, "dated early: {b:?}");
    clock.jump(-clock.jumped());
    assert_eq!(clock.now(), stored_at);
    clock.advance(TTL - 120);
    assert_eq!(s.collect_expired().await.unwrap(), 0, "not before the TTL");
    assert!(present(&s, b, clock.now()).await);
    clock.advance(2 * 3600 + 3600);
    assert_eq!(s.collect_expired().await.unwrap(), 1);
}
