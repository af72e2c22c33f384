//! The PostgreSQL store as a shared store: several frontends (store handles with connections of
//! their own) on one real database, started by the test. One open bucket per stream (stamped or
//! not) for all, one quota, one filler secret, IDs unique cluster-wide; the same settings
//! enforced; a database crash loses no acknowledged write; a lost database is an error, not a hang, and writes resume.

mod common;

use common::pg::Postgres;
use futures::future::join_all;
use rdv::proto::padding::FillerSecret;
use rdv::proto::{BucketId, DeleteToken, SealedLink};
use rdv::store::{BucketStore, PgStore, PgStoreConfig, StoreError, StoreParams};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// In the past: garbage collection never runs ahead of the database's own clock.
const T0: u64 = 1_700_000_000;

fn link(i: u32) -> (SealedLink, DeleteToken) {
    let mut b = [0u8; 256];
    b[..4].copy_from_slice(&i.to_be_bytes());
    let mut t = [0u8; 32];
    t[..4].copy_from_slice(&i.to_be_bytes());
    (SealedLink(b), DeleteToken::from_bytes(t))
}

/// Stores of links 0..n without a stamp, all at once, each through frontend i % 3.
async fn store_through(fronts: &[PgStore], n: u32) -> Vec<Result<BucketId, StoreError>> {
    join_all((0..n).map(|i| {
        let f = fronts[(i % 3) as usize].clone();
        async move {
            let (l, t) = link(i);
            f.store(l, t.check(), T0).await
        }
    }))
    .await
}

fn config(pg: &Postgres, db: &str, params: StoreParams) -> PgStoreConfig {
    let mut c = PgStoreConfig::new(&pg.url(db)).unwrap();
    c.params = params;
    c
}

async fn open(pg: &Postgres, db: &str, params: StoreParams, seed: u8) -> PgStore {
    PgStore::open(config(pg, db, params), FillerSecret::from_bytes([seed; 32]))
        .await
        .expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontends_share_one_open_bucket_one_quota_and_one_filler_secret() {
    let pg = Postgres::start();
    pg.create_db("shared");
    let params = StoreParams::default();
    // Three frontends opening at once (the tables are created once, under a lock).
    let fronts = join_all((0..3u8).map(|i| open(&pg, "shared", params, i + 1))).await;
    let secret = fronts[0].filler_secret();
    assert!(
        fronts.iter().all(|f| f.filler_secret() == secret),
        "every frontend pads fetches with the same secret"
    );
    let n = 300u32;
    let ids = join_all((0..n).map(|i| {
        let f = fronts[(i % 3) as usize].clone();
        async move {
            let (l, t) = link(i);
            (i, f.store(l, t.check(), T0).await.expect("store"))
        }
    }))
    .await;
    let buckets: BTreeSet<BucketId> = ids.iter().map(|(_, id)| *id).collect();
    assert_eq!(
        buckets.len(),
        n.div_ceil(64) as usize,
        "links from every frontend fill one open bucket after the other: {buckets:?}"
    );
    assert_eq!(
        buckets.iter().map(|b| b.seq).collect::<Vec<_>>(),
        (0..buckets.len() as u16).collect::<Vec<_>>(),
        "IDs unique and consecutive cluster-wide"
    );
    // Every link through every frontend.
    for f in &fronts {
        for (i, id) in &ids {
            let links = f.fetch(id.locator(), T0).await.unwrap().expect("bucket");
            assert!(links.contains(&link(*i).0));
        }
    }
    assert_eq!(
        fronts[0].verify().await.unwrap(),
        (buckets.len() as u64, n as u64)
    );
    // Those were stores without a stamp. Challenges through every frontend name one bucket of
    // the stamped stream, never the free stream's; the free stores that follow, through another
    // frontend (and one opened after them), still fill the free stream's open bucket
    // (PROTOCOL §10.1: each stream's open bucket is kept in the database).
    let named: BTreeSet<BucketId> = join_all(fronts.iter().map(|f| f.challenge(T0)))
        .await
        .into_iter()
        .map(|r| r.expect("challenge"))
        .collect();
    assert_eq!(named.len(), 1, "{named:?}");
    assert!(buckets.is_disjoint(&named));
    let fourth = open(&pg, "shared", params, 9).await;
    for (i, f) in [&fronts[1], &fourth].into_iter().enumerate() {
        let (l, t) = link(n + i as u32);
        let id = f.store(l, t.check(), T0).await.unwrap();
        assert_eq!(Some(&id), buckets.last(), "the free stream's open bucket");
    }
    assert_eq!(
        fronts[2].challenge(T0).await.unwrap(),
        *named.first().unwrap()
    );
    // A later frontend continues after every ID handed out.
    let (l, t) = link(9_999);
    let later = fronts[1].store(l, t.check(), T0 + 700).await.unwrap();
    assert!(buckets.iter().all(|b| *b < later));

    // One quota for the cluster: 90 concurrent stores through three frontends, 50 allowed.
    pg.create_db("quota");
    let params = StoreParams {
        max_links: Some(50),
        unstamped_share: 100,
        ..Default::default()
    };
    let fronts = join_all((0..3u8).map(|i| open(&pg, "quota", params, i))).await;
    let results = store_through(&fronts, 90).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::QuotaExceeded { max: 50 })))
        .count();
    assert_eq!((ok, refused), (50, 40), "{results:?}");
    assert_eq!(fronts[2].verify().await.unwrap().1, 50);

    // Its shares too, checked in each write transaction against the cluster's counts: 90
    // answers and 90 links without a stamp, each 90 at once through three frontends, fill
    // exactly their shares of a quota of 100, not that plus what each frontend had in flight.
    use rdv::proto::{MailboxAddr, SealedAnswer};
    use rdv::store::WriteKind;
    pg.create_db("shares");
    let params = StoreParams {
        max_links: Some(100),
        unstamped_share: 50,
        answer_share: 25,
        ..Default::default()
    };
    let fronts = join_all((0..3u8).map(|i| open(&pg, "shares", params, i))).await;
    let share_full = |kind, percent| move |r: &StoreError| matches!(r, StoreError::ShareFull { kind: k, max: 100, percent: p } if *k == kind && *p == percent);
    // Answers without a stamp first: a quarter of the answers' quarter, ceil(6.25) = 7.
    let results = join_all((0..90u8).map(|i| {
        let f = fronts[usize::from(i % 3)].clone();
        async move {
            let (m, a) = (MailboxAddr([i + 100; 32]), SealedAnswer([i; 256]));
            f.put_answer_as(m, a, T0, WriteKind::UnstampedAnswer).await
        }
    }))
    .await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| {
            r.as_ref()
                .is_err_and(share_full(WriteKind::UnstampedAnswer, 7))
        })
        .count();
    assert_eq!((ok, refused), (7, 83), "{results:?}");
    let results = store_through(&fronts, 90).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| r.as_ref().is_err_and(share_full(WriteKind::Unstamped, 50)))
        .count();
    // Links without a stamp then: with those answers, half of the quota (43 more).
    assert_eq!((ok, refused), (43, 47), "{results:?}");
    // Stamped ones fill the rest of the quarter.
    let results = join_all((0..90u8).map(|i| {
        let f = fronts[usize::from(i % 3)].clone();
        async move {
            f.put_answer(MailboxAddr([i; 32]), SealedAnswer([i; 256]), T0)
                .await
        }
    }))
    .await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| r.as_ref().is_err_and(share_full(WriteKind::Answer, 25)))
        .count();
    assert_eq!((ok, refused), (18, 72), "{results:?}");
    assert_eq!(fronts[1].verify().await.unwrap(), (1, 43));
    let mut held = 0;
    for i in 0..90u8 {
        held += usize::from(
            fronts[2]
                .fetch_answer(MailboxAddr([i; 32]), T0)
                .await
                .unwrap()
                .is_some(),
        );
    }
    assert_eq!(held, 18);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_with_other_store_settings_is_refused() {
    let pg = Postgres::start();
    let first = StoreParams {
        ttl_secs: 1000,
        ..Default::default()
    };
    let _a = open(&pg, "postgres", first, 1).await;
    let other = StoreParams {
        ttl_secs: 2000,
        ..Default::default()
    };
    let e = PgStore::open(
        config(&pg, "postgres", other),
        FillerSecret::from_bytes([2; 32]),
    )
    .await
    .err()
    .expect("refused");
    match &e {
        StoreError::Config(c) => {
            assert_eq!(c.key, "ttl");
            assert!(
                c.reason.contains("2000 s") && c.reason.contains("1000 s"),
                "{}",
                c.reason
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Every frontend asks the stamp effort the first one recorded: one asking another is refused,
/// naming the setting (a client counts a bucket shown full at the effort its challenge asked,
/// so stamps made for a frontend asking less would count as unproven through another).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_with_another_stamp_effort_is_refused() {
    let pg = Postgres::start();
    let params = StoreParams::default();
    let with = |effort: Option<u32>| {
        let mut c = config(&pg, "postgres", params);
        c.stamp_effort = effort;
        PgStore::open(c, FillerSecret::from_bytes([1; 32]))
    };
    let _unchecked = with(None).await.expect("no effort given: nothing recorded");
    let _first = with(Some(64)).await.expect("the first effort is recorded");
    let _same = with(Some(64)).await.expect("the same effort");
    let _library = with(None).await.expect("a library caller that gives none");
    match with(Some(128)).await.err().expect("refused") {
        StoreError::Config(c) => {
            assert_eq!(c.key, "stamp_effort");
            assert!(
                c.reason.contains("128") && c.reason.contains("64"),
                "{}",
                c.reason
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_a_clear_error_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://rdv:s3cretpass@127.0.0.1:{port}/rdv");
    let e = PgStore::open(
        PgStoreConfig::new(&url).unwrap(),
        FillerSecret::from_bytes([0; 32]),
    )
    .await
    .err()
    .expect("no database there");
    let text = rdv::config::report(&e).to_string();
    assert!(
        text.contains(&format!(
            "cannot connect to PostgreSQL at postgres://rdv@127.0.0.1:{port}/rdv"
        )),
        "{text}"
    );
    assert!(!text.contains("s3cretpass"), "{text}");
    assert!(!format!("{e:?}").contains("s3cretpass"));
}

/// Stores from many tasks while the database crashes (immediate shutdown: no checkpoint, WAL
/// recovery at the restart) and comes back: every acknowledged store is there afterwards,
/// failures during the outage are errors (never a hang), and writes resume by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_crash_loses_no_acknowledged_store_and_writes_resume() {
    let pg = Postgres::start();
    let store = open(&pg, "postgres", StoreParams::default(), 1).await;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..8u32)
        .map(|w| {
            let (store, acked, stop) = (store.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                let mut failed = 0u32;
                // Bounded: at most 400 stores per task, and 3 000 failures (a minute of the
                // outage at 20 ms apart): failures must not use up the stores, or none would be
                // left for after the database is back.
                let (mut stored, mut attempt) = (0u32, 0u32);
                while stored < 400 && failed < 3_000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    // Every attempt a link of its own (a failed store may have committed
                    // without being acknowledged: that is checked below).
                    let i = w * 10_000 + attempt;
                    attempt += 1;
                    let (l, t) = link(i);
                    match store.store(l, t.check(), T0).await {
                        Ok(id) => {
                            acked.lock().unwrap().push((i, id));
                            stored += 1;
                        }
                        Err(StoreError::Backend(_)) => {
                            failed += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                failed
            })
        })
        .collect();
    // Let some stores land, then crash the database.
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.lock().unwrap().len() < 200 {
        assert!(Instant::now() < deadline, "no progress before the crash");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pg.crash();
    let during = acked.lock().unwrap().len();
    // A write while it is down ends (an error, or stored once the database is back) instead of
    // hanging; it comes back a few seconds later, as after a crash with a supervisor.
    let (l, t) = link(999_999);
    let (down, ()) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(60), store.store(l, t.check(), T0)),
        async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            pg.restart();
        }
    );
    let down = down.expect("a write to a lost database ends instead of hanging");
    assert!(
        matches!(down, Ok(_) | Err(StoreError::Backend(_))),
        "{down:?}"
    );
    let mut other_acked = u64::from(down.is_ok());
    // Writes resume by themselves.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (l, t) = link(888_888);
        if store.store(l, t.check(), T0).await.is_ok() {
            other_acked += 1;
            break;
        }
        assert!(Instant::now() < deadline, "writes did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The writers' stores go on too (waited for, not assumed: they may be pausing after a
    // failure when the first store after the outage goes through).
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() <= during && !writers.iter().all(|w| w.is_finished()) {
        assert!(
            Instant::now() < deadline,
            "the writers' stores did not resume"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut failed = 0;
    for w in writers {
        failed += w.await.unwrap();
    }
    // Stores in flight at the crash either failed or waited for the database to come back.
    eprintln!("{failed} stores failed during the outage");
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > during, "stores went on after the crash");
    for (i, id) in &acked {
        let links = store
            .fetch(id.locator(), T0)
            .await
            .unwrap()
            .expect("acknowledged bucket");
        assert!(links.contains(&link(*i).0), "acknowledged link {i} lost");
    }
    // And nothing stored was answered as a failure: the batch in flight at the crash is asked
    // about again until the database is back (it used to be asked once, while it was down).
    let (_, stored) = store.verify().await.unwrap();
    assert_eq!(
        stored,
        acked.len() as u64 + other_acked,
        "links stored but reported as failed"
    );
}

/// A frontend frozen while it holds the meta-row lock (here: a session that locked it and went
/// silent) does not stop the cluster: the database ends the idle transaction, and the other
/// frontends' stores go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_lock_holder_does_not_stop_the_cluster() {
    let pg = Postgres::start();
    let store = open(&pg, "postgres", StoreParams::default(), 1).await;
    let (mut frozen, conn) = tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    // As a frontend's writer would, with the idle limit rdv sets for its own sessions.
    frozen
        .batch_execute("SET idle_in_transaction_session_timeout = '15s'")
        .await
        .unwrap();
    let t = frozen.transaction().await.unwrap();
    t.query_one("SELECT links FROM rdv_meta WHERE id = 1 FOR UPDATE", &[])
        .await
        .unwrap();
    let started = Instant::now();
    let (l, tok) = link(1);
    let stored = tokio::time::timeout(Duration::from_secs(120), store.store(l, tok.check(), T0))
        .await
        .expect("the store waits for the lock, but not forever");
    // Bounded by the session limits (15 s), whichever way it ended: the store went through
    // once the frozen transaction was ended, or failed on the lock timeout and the next works.
    if stored.is_err() {
        let (l, tok) = link(2);
        store
            .store(l, tok.check(), T0)
            .await
            .expect("after the lock is gone");
    }
    eprintln!("stores resumed after {:?}", started.elapsed());
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "the lock was really held"
    );
    drop(t);
    drop(frozen);
    let _ = conn.await;
}

/// A delete that has nothing to delete (a wrong token, an unknown bucket) is answered without
/// the cluster's write lock: a flood of them cannot queue behind, or hold up, the cluster's
/// writes. Here another session holds the lock the whole time; the no-op deletes still answer,
/// and a real delete waits for the lock and then goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_with_nothing_to_delete_do_not_take_the_cluster_lock() {
    let pg = Postgres::start();
    let store = open(&pg, "postgres", StoreParams::default(), 1).await;
    let (l, tok) = link(1);
    let id = store.store(l, tok.check(), T0).await.unwrap();
    let (holder, conn) = tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    holder
        .batch_execute("BEGIN; SELECT links FROM rdv_meta WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    let (_, wrong) = link(2);
    for (what, locator) in [
        ("a wrong token", id.locator()),
        (
            "an unknown bucket",
            BucketId {
                created: T0,
                seq: 9,
            }
            .locator(),
        ),
    ] {
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            store.delete(locator, wrong.check(), T0),
        )
        .await
        .unwrap_or_else(|_| panic!("a delete with {what} waited for the lock"));
        assert!(matches!(r, Ok(false)), "{what}: {r:?}");
    }
    // The real delete needs the lock: it goes through once the holder lets go.
    let check = tok.check();
    let real = tokio::spawn(async move {
        let r = store.delete(id.locator(), check, T0).await;
        (r, store)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!real.is_finished(), "a real delete waits for the lock");
    holder.batch_execute("ROLLBACK").await.unwrap();
    let (r, store) = real.await.unwrap();
    assert!(matches!(r, Ok(true)), "{r:?}");
    assert!(matches!(
        store.delete(id.locator(), check, T0).await,
        Ok(false)
    ));
    drop(holder);
    let _ = conn.await;
}

/// The database server stops answering altogether (every one of its processes SIGSTOPped: TCP
/// stays up, nothing replies): stores and fetches fail after a bounded time instead of hanging,
/// and work again once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_stops_answering_is_an_error_not_a_hang() {
    let pg = Postgres::start();
    let store = open(&pg, "postgres", StoreParams::default(), 1).await;
    let (l, tok) = link(1);
    let id = store.store(l, tok.check(), T0).await.unwrap();
    assert!(store.fetch(id.locator(), T0).await.unwrap().is_some());
    pg.freeze();
    let started = Instant::now();
    // Each operation fails within the documented limit from its own start, one that queues
    // behind a hanging batch included (it used to wait for that batch and then for a reconnect
    // attempt that hung as long again: 40-60 s).
    let limit = 2 * rdv::store::pg::SESSION_TIMEOUT + Duration::from_secs(3);
    let timed = |f| async move {
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(120), f)
            .await
            .expect("an operation on a silent database ends");
        (r, t.elapsed())
    };
    let (l, tok) = link(2);
    let (l2, tok2) = link(4);
    let later = async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        timed(store.store(l2, tok2.check(), T0)).await
    };
    let ((stored, t_stored), (fetched, t_fetched), (queued, t_queued)) = tokio::join!(
        timed(store.store(l, tok.check(), T0)),
        async {
            let t = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(120), store.fetch(id.locator(), T0))
                .await
                .expect("a fetch from a silent database ends");
            (r, t.elapsed())
        },
        later,
    );
    // And one more right after: a reconnect attempt is under way, and hangs.
    let (l3, tok3) = link(5);
    let (again, t_again) = timed(store.store(l3, tok3.check(), T0)).await;
    pg.thaw();
    assert!(matches!(stored, Err(StoreError::Backend(_))), "{stored:?}");
    assert!(
        matches!(fetched, Err(StoreError::Backend(_))),
        "{fetched:?}"
    );
    assert!(matches!(queued, Err(StoreError::Backend(_))), "{queued:?}");
    assert!(matches!(again, Err(StoreError::Backend(_))), "{again:?}");
    for (what, t) in [
        ("store", t_stored),
        ("fetch", t_fetched),
        ("store queued behind it", t_queued),
        ("store after", t_again),
    ] {
        assert!(t <= limit, "{what} failed after {t:?}, more than {limit:?}");
    }
    eprintln!("failed after {:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (l, tok) = link(3);
        if store.store(l, tok.check(), T0).await.is_ok()
            && store.fetch(id.locator(), T0).await.is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the store did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A bucket whose stored body no longer decodes (damaged by hand, a bad restore): a fetch of it
/// is a clear error, stores go on, and garbage collection still removes it once it expires
/// (it reads only the ID and link-count columns), so it cannot block every frontend's GC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_bucket_neither_panics_nor_blocks_garbage_collection() {
    let pg = Postgres::start();
    let params = StoreParams {
        open_window_secs: 5,
        ttl_secs: 100,
        ..Default::default()
    };
    let store = open(&pg, "postgres", params, 1).await;
    let (l, tok) = link(1);
    let damaged = store.store(l, tok.check(), T0).await.unwrap();
    let (l, tok) = link(2);
    let fine = store.store(l, tok.check(), T0 + 10).await.unwrap();
    assert_ne!(damaged, fine);
    pg.psql(
        "postgres",
        &format!(
            "UPDATE rdv_buckets SET body = '\\xdeadbeef' WHERE created = {} AND seq = {}",
            damaged.created, damaged.seq
        ),
    );
    let e = store.fetch(damaged.locator(), T0 + 20).await.unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
    assert!(store
        .fetch(fine.locator(), T0 + 20)
        .await
        .unwrap()
        .is_some());
    let (l, tok) = link(3);
    store.store(l, tok.check(), T0 + 20).await.unwrap();
    // Expired: collected like any other, with its link counted off.
    assert_eq!(store.collect_garbage(T0 + 100, 10).await.unwrap(), 1);
    assert_eq!(store.link_count(), 2);
    store.verify().await.unwrap();
}

/// A database of a version before marks were counted and the stamp effort recorded gets their
/// columns at the next start, with the marks it holds counted then, and its frontends count
/// marks from then on: the count is in the shared database, so a second frontend sees the
/// first one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_before_marks_were_counted_counts_them_from_the_next_start() {
    let pg = Postgres::start();
    let params = StoreParams {
        open_window_secs: 600,
        ttl_secs: 3600,
        ..Default::default()
    };
    let store = open(&pg, "postgres", params, 1).await;
    let (l, tok) = link(1);
    store.store(l, tok.check(), T0).await.unwrap();
    let (l, tok) = link(3);
    let id = store.store(l, tok.check(), T0).await.unwrap();
    assert!(store.delete(id.locator(), tok.check(), T0).await.unwrap());
    drop(store);
    pg.psql(
        "postgres",
        "ALTER TABLE rdv_meta DROP COLUMN marks, DROP COLUMN stamp_effort; \
         ALTER TABLE rdv_buckets DROP COLUMN marks",
    );
    let mut c = config(&pg, "postgres", params);
    c.stamp_effort = Some(64);
    let store = PgStore::open(c, FillerSecret::from_bytes([1; 32]))
        .await
        .expect("open");
    let (l, tok) = link(2);
    let id = store.store(l, tok.check(), T0).await.unwrap();
    assert!(store.delete(id.locator(), tok.check(), T0).await.unwrap());
    assert_eq!((store.link_count(), store.mark_count()), (1, 2));
    store.verify().await.unwrap();
    let other = open(&pg, "postgres", params, 1).await;
    assert_eq!(other.mark_count(), 2);
}

/// Write-once across frontends: many accepters racing to answer one mailbox through different
/// frontends get exactly one `Stored`; every frontend then returns that one answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_answer_per_mailbox_across_frontends() {
    use rdv::proto::{MailboxAddr, SealedAnswer};
    use rdv::store::PutAnswer;
    let pg = Postgres::start();
    let fronts = join_all((0..3u8).map(|i| open(&pg, "postgres", StoreParams::default(), i))).await;
    let mailbox = MailboxAddr([9; 32]);
    let results = join_all((0..30u8).map(|i| {
        let f = fronts[usize::from(i % 3)].clone();
        async move {
            let mut a = [0u8; 256];
            a[0] = i;
            (a, f.put_answer(mailbox, SealedAnswer(a), T0).await.unwrap())
        }
    }))
    .await;
    let stored: Vec<_> = results
        .iter()
        .filter(|(_, r)| *r == PutAnswer::Stored)
        .map(|(a, _)| *a)
        .collect();
    assert_eq!(stored.len(), 1, "exactly one answer wins: {results:?}");
    for f in &fronts {
        assert_eq!(
            f.fetch_answer(mailbox, T0).await.unwrap(),
            Some(SealedAnswer(stored[0]))
        );
    }
    assert_eq!(fronts[0].verify().await.unwrap(), (0, 0));
}

/// A testing-only isolating frontend (`--adversary isolate`: one link per bucket) cannot join a
/// database honest frontends use, nor the reverse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolating_frontend_cannot_join_an_honest_cluster() {
    let pg = Postgres::start();
    let _honest = open(&pg, "postgres", StoreParams::default(), 1).await;
    let mut c = config(&pg, "postgres", StoreParams::default());
    c.bucket_capacity = 1;
    let e = PgStore::open(c, FillerSecret::from_bytes([2; 32]))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&e, StoreError::Config(c) if c.key == "bucket_capacity"),
        "{e:?}"
    );
}

/// A failover: the primary becomes read-only (SQLSTATE 25006 for every write) and another server
/// takes writes. With both in the connection string and target_session_attrs=read-write, the
/// writer reconnects to the one that takes writes (it used to keep its read-only connection,
/// and every store failed, until a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_writes_go_to_the_new_primary() {
    let old = Postgres::start();
    let new = Postgres::start();
    // The new primary has the schema already (it was a replica).
    drop(open(&new, "postgres", StoreParams::default(), 1).await);
    let url = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=rdv dbname=postgres target_session_attrs=read-write",
        old.port, new.port
    );
    let mut c = PgStoreConfig::new(&url).unwrap();
    c.params = StoreParams::default();
    let store = PgStore::open(c, FillerSecret::from_bytes([1; 32]))
        .await
        .unwrap();
    let (l, tok) = link(1);
    let first = store.store(l, tok.check(), T0).await.unwrap();
    // Every read connection open, to the old primary.
    for _ in 0..8 {
        assert!(store.fetch(first.locator(), T0).await.unwrap().is_some());
    }
    old.psql(
        "postgres",
        "ALTER SYSTEM SET default_transaction_read_only = on",
    );
    old.psql("postgres", "SELECT pg_reload_conf()");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refused = 0;
    let second = loop {
        let (l, tok) = link(2);
        match store.store(l, tok.check(), T0 + 1).await {
            Ok(id) => break id,
            Err(e) => {
                refused += 1;
                if refused < 4 {
                    eprintln!("refused: {}", rdv::config::report(&e));
                }
                assert!(matches!(e, StoreError::Backend(_)), "{e:?}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "writes never moved to the new primary"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        refused <= 3,
        "{refused} stores refused before the reconnect"
    );
    // Reads follow the writes: every read connection (the old primary's, still up and
    // read-only) is replaced, so the new link is found through each of them.
    for _ in 0..8 {
        assert!(
            store
                .fetch(second.locator(), T0 + 1)
                .await
                .unwrap()
                .is_some(),
            "a read went to the old primary after the failover"
        );
    }
    assert_eq!(
        new.psql("postgres", "SELECT count(*) FROM rdv_buckets")
            .trim(),
        "1",
        "the store went to the new primary"
    );
}

/// A database error reaches messages and logs with its SQLSTATE and primary message only: the
/// DETAIL of a key violation quotes the key (for rdv's tables, a locator), and it never shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_error_details_never_reach_messages() {
    let pg = Postgres::start();
    let (c, conn) = tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    c.batch_execute(
        "CREATE TEMP TABLE t (k bytea PRIMARY KEY); INSERT INTO t VALUES ('\\xc0ffee15')",
    )
    .await
    .unwrap();
    let e = c
        .batch_execute("INSERT INTO t VALUES ('\\xc0ffee15')")
        .await
        .unwrap_err();
    assert!(
        e.as_db_error()
            .unwrap()
            .detail()
            .unwrap()
            .contains("c0ffee15"),
        "PostgreSQL's own detail names the key: {e:?}"
    );
    let e: StoreError = e.into();
    let text = rdv::config::report(&e).to_string();
    assert!(text.contains("23505"), "{text}");
    assert!(!text.contains("c0ffee15"), "{text}");
    assert!(!format!("{e:?}").contains("c0ffee15"), "{e:?}");
    drop(c);
    let _ = conn.await;
}

/// #21 Medium 4: summed over a cluster's frontends, the anonymity metrics are the cluster's. A
/// bucket filled 10/10/10 through three frontends is opened once and counted once, with its 30
/// links, when its window ends; a delete through one frontend after fetches through the two
/// others is timed from the latest of those fetches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_metrics_sum_to_the_clusters_figures() {
    use common::raw_pipe;
    use rdv::clock::{Clock, ManualClock, SystemClock};
    use rdv::framed::{read_msg, write_msg};
    use rdv::proto::wire::DEFAULT_MAX_FRAME;
    use rdv::proto::{Request, Response};
    use rdv::server::{Server, ServerConfig};
    use std::sync::Arc;

    async fn ask(s: &mut tokio::io::DuplexStream, req: Request) -> Response {
        write_msg(s, &req, DEFAULT_MAX_FRAME).await.unwrap();
        read_msg(s, u32::MAX).await.unwrap()
    }
    fn value(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    let pg = Postgres::start();
    pg.create_db("metrics");
    let start = SystemClock.now();
    let clock = ManualClock::new(start);
    let params = StoreParams::default();
    let mut fronts = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..3 {
        let store = open(&pg, "metrics", params, 1).await;
        let config = ServerConfig {
            metrics_batch: 1,
            ..ServerConfig::default()
        };
        let server = Server::new(store, config, Arc::new(clock.clone())).unwrap();
        let mut c = raw_pipe(&server);
        assert!(common::raw_hello(&mut c).await);
        conns.push(c);
        fronts.push(server);
    }
    // 30 links, 10 through each frontend, into one bucket.
    let mut ids = BTreeSet::new();
    for i in 0..30u32 {
        let (l, t) = link(i);
        let r = ask(
            &mut conns[i as usize % 3],
            Request::Store {
                link: l,
                delete_check: t.check(),
            },
        )
        .await;
        let Response::Stored { id } = r else {
            panic!("{r:?}")
        };
        ids.insert(id);
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let bucket = *ids.first().unwrap();

    // The window ends: each frontend counts what is its own to count.
    clock.advance(params.open_window_secs + 1);
    let mut texts = Vec::new();
    for f in &fronts {
        f.refresh_metrics().await;
        texts.push(f.metrics_text());
    }
    let sum = |name: &str| -> f64 { texts.iter().map(|t| value(t, name)).sum() };
    assert_eq!(sum("rdv_buckets_opened_total"), 1.0);
    assert_eq!(sum("rdv_bucket_links_at_close_count"), 1.0);
    assert_eq!(sum("rdv_bucket_links_at_close_sum"), 30.0);

    // Fetches through frontends 0 (at +10 s) and 2 (at +20 s), the delete through 1 at +25 s.
    let fetch = Request::Fetch {
        locator: bucket.locator(),
    };
    clock.advance(10);
    assert!(matches!(
        ask(&mut conns[0], fetch.clone()).await,
        Response::Bucket { .. }
    ));
    clock.advance(10);
    assert!(matches!(
        ask(&mut conns[2], fetch).await,
        Response::Bucket { .. }
    ));
    let latest = clock.now();
    // Frontend 1 hears of both (bounded wait: the exchange sends every 250 ms).
    let deadline = Instant::now() + Duration::from_secs(30);
    while fronts[1].latest_fetch_known(&bucket.locator()) != Some(latest) {
        assert!(
            Instant::now() < deadline,
            "frontend 1 never heard of the fetch through frontend 2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    clock.advance(5);
    let (_, token) = link(7);
    assert_eq!(
        ask(
            &mut conns[1],
            Request::Delete {
                locator: bucket.locator(),
                token,
            },
        )
        .await,
        Response::Deleted
    );
    let texts: Vec<_> = fronts.iter().map(|f| f.metrics_text()).collect();
    let sum = |name: &str| -> f64 { texts.iter().map(|t| value(t, name)).sum() };
    assert_eq!(
        value(&texts[1], "rdv_delete_after_fetch_seconds_count"),
        1.0
    );
    assert_eq!(sum("rdv_delete_after_fetch_seconds_count"), 1.0);
    assert_eq!(sum("rdv_delete_after_fetch_seconds_sum"), 5.0);
    assert_eq!(sum("rdv_fetch_candidates_count"), 2.0);
    assert_eq!(sum("rdv_fetch_candidates_sum"), 60.0);
}

/// A frontend refuses a write past its share early (before the write's turn in the store) only
/// on counts that are current: once another frontend has made room (deletes, once the bucket no
/// longer takes stores: a delete before leaves a mark that holds the place), the next write
/// through the first one is stored, not refused on the counts of its last transaction until its
/// next garbage-collection pass (a minute by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_admits_a_write_once_another_frontend_made_room() {
    use common::raw_pipe;
    use rdv::framed::{read_msg, write_msg};
    use rdv::proto::wire::DEFAULT_MAX_FRAME;
    use rdv::proto::{Request, Response};
    use rdv::server::{Server, ServerConfig};
    use std::sync::Arc;

    async fn ask(s: &mut tokio::io::DuplexStream, req: Request) -> Response {
        write_msg(s, &req, DEFAULT_MAX_FRAME).await.unwrap();
        read_msg(s, u32::MAX).await.unwrap()
    }
    let pg = Postgres::start();
    pg.create_db("room");
    // Links without a stamp may fill 10 % of a quota of 100.
    let params = StoreParams {
        max_links: Some(100),
        unstamped_share: 10,
        ..Default::default()
    };
    let mut conns = Vec::new();
    let mut fronts = Vec::new();
    // The wall clock's time (a time ahead of the database's is taken for a clock set ahead, and
    // expiry follows the time elapsed instead), moved on by hand.
    let clock = rdv::clock::ManualClock::new(rdv::clock::Clock::now(&rdv::clock::SystemClock));
    for _ in 0..2 {
        let store = open(&pg, "room", params, 1).await;
        let server = Server::new(store, ServerConfig::default(), Arc::new(clock.clone())).unwrap();
        let mut c = raw_pipe(&server);
        assert!(common::raw_hello(&mut c).await);
        conns.push(c);
        fronts.push(server);
    }
    let store = |i: u32| {
        let (l, t) = link(i);
        Request::Store {
            link: l,
            delete_check: t.check(),
        }
    };
    let mut stored = Vec::new();
    for i in 0..10u32 {
        match ask(&mut conns[0], store(i)).await {
            Response::Stored { id } => stored.push((i, id)),
            r => panic!("store {i}: {r:?}"),
        }
    }
    let full = ask(&mut conns[0], store(10)).await;
    assert!(
        matches!(full, Response::Error { .. }),
        "the share was not full: {full:?}"
    );
    // Frontend 1 deletes five of them, once their bucket takes no more stores.
    clock.advance(params.open_window_secs + rdv::proto::stamp::LATE_STORE_SECS);
    for (i, id) in &stored[..5] {
        let (_, token) = link(*i);
        let r = ask(
            &mut conns[1],
            Request::Delete {
                locator: id.locator(),
                token,
            },
        )
        .await;
        assert_eq!(r, Response::Deleted);
    }
    // Frontend 0 has room again, and knows it at the latest after a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for i in 11..16u32 {
        let r = ask(&mut conns[0], store(i)).await;
        assert!(
            matches!(r, Response::Stored { .. }),
            "store {i} through the first frontend after the deletes through the second: {r:?}"
        );
    }
    let r = ask(&mut conns[0], store(16)).await;
    assert!(matches!(r, Response::Error { .. }), "{r:?}");
    drop(fronts);
}

/// A frontend finds the cluster's expiry hold in its own copy only once the hold has committed:
/// a request that finds it there stores a link dated early without writing the hold again, so a
/// copy set before a commit that then fails would leave such a link without its hold. Here the
/// database refuses the hold at commit, after a pause (a deferred trigger): the frontend's copy
/// never shows it, before or after, and it shows once a commit succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_hold_counts_only_once_committed() {
    use rdv::store::ExpiryHold;
    use std::sync::atomic::{AtomicBool, Ordering};
    let pg = Postgres::start();
    let store = open(&pg, "postgres", StoreParams::default(), 1).await;
    pg.psql(
        "postgres",
        "CREATE FUNCTION refuse_hold() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM pg_sleep(2); RAISE EXCEPTION 'refused at commit'; END $$; \
         CREATE CONSTRAINT TRIGGER refuse_hold AFTER INSERT OR UPDATE ON rdv_expiry_hold \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_hold();",
    );
    let hold = ExpiryHold::new(T0, T0 + 3600, 86_400);
    let done = AtomicBool::new(false);
    let mut seen = false;
    let (result, ()) = tokio::join!(
        async {
            let r = store.hold_expiry(hold).await;
            done.store(true, Ordering::SeqCst);
            r
        },
        async {
            while !done.load(Ordering::SeqCst) {
                seen |= store.expiry_hold().is_some();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    );
    assert!(result.is_err(), "the database refused the hold");
    assert!(!seen, "the hold showed before its commit");
    assert_eq!(store.expiry_hold(), None);
    assert_eq!(
        pg.psql("postgres", "SELECT count(*) FROM rdv_expiry_hold"),
        "0"
    );

    pg.psql("postgres", "DROP TRIGGER refuse_hold ON rdv_expiry_hold");
    store.hold_expiry(hold).await.expect("hold");
    assert_eq!(store.expiry_hold(), Some(hold));
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT hold_from, hold_to, credit FROM rdv_expiry_hold"
        ),
        format!("{}|{}|{}", T0, T0 + 3600, 86_400)
    );
}
