//! Hostile clients against the real server process, each attack beyond the limit it targets:
//!
//! - slot holders (more keep-alive connections than slots, 2 000 idle sockets that reconnect as
//!   soon as they are closed, more slowloris connections than slots) against a normal client
//!   that does Hello + Info + Store + Fetch on a fresh connection every 100 ms: it must keep at
//!   least 95 % success;
//! - a store flood from 64 connections (pipelined, far above the 2 112 stores/s the default
//!   client policy allows a server to acknowledge) against 48 honest offers: none may be refused
//!   by the policy, at least 90 % must succeed within 60 s;
//! - malformed input (oversize length prefixes, garbage, truncated frames) and a fetch flood:
//!   each gets its error, the server's memory stays bounded.
//!
//! Every attack loop is bounded in time and count and stops by itself. Latencies are printed
//! (targets for speed belong in benchmarks, not assertions). The three tests share the machine's
//! two cores, so they take turns.

mod common;

use common::*;
use rdv::client::{Client, ClientConfig, ErrorKind, OfferError};
use rdv::clock::SystemClock;
use rdv::framed::{read_msg, write_msg};
use rdv::proto::wire::{encode_frame, DEFAULT_MAX_FRAME};
use rdv::proto::{
    ClientPolicy, DeleteCheck, ErrorCode, KdfProfile, Locator, Passphrase, Request, Response,
    SealedLink, ServerAddr,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// One test at a time: they measure the same two cores.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap()
}

/// A client that does not retry on its own: every `Busy` counts.
fn strict_client(addr: SocketAddr) -> Client {
    Client::new(
        Arc::new(rdv::client::direct::DirectConnector::to(addr.to_string())),
        ClientConfig {
            retry_budget: Duration::ZERO,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            ..Default::default()
        },
        Arc::new(SystemClock),
    )
}

/// The normal client of the issue: Hello + Info + Store + Fetch on a fresh connection.
async fn normal_op(c: &Client, sa: &ServerAddr, i: u64) -> Result<(), String> {
    let mut conn = c.connect(sa).await.map_err(|e| e.to_string())?;
    match conn.request(&Request::Info).await {
        Ok(Response::Info(_)) => {}
        other => return Err(format!("info: {other:?}")),
    }
    // A link of its own every time, across the test's phases (a server refuses a copy of a
    // link its bucket holds, as a real client's random bytes never are).
    static LINKS: AtomicU64 = AtomicU64::new(0);
    let mut link = [0u8; 256];
    link[..8].copy_from_slice(&i.to_be_bytes());
    link[8..16].copy_from_slice(&LINKS.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    let store = Request::Store {
        link: SealedLink(link),
        delete_check: DeleteCheck([1; 32]),
    };
    let id = match conn.request(&store).await {
        Ok(Response::Stored { id }) => id,
        other => return Err(format!("store: {other:?}")),
    };
    match conn
        .request(&Request::Fetch {
            locator: id.locator(),
        })
        .await
    {
        Ok(Response::Bucket { links }) if links.len() == 64 => Ok(()),
        Ok(Response::StampedBucket { entries, .. }) if entries.len() == 64 => Ok(()),
        other => Err(format!("fetch: {other:?}")),
    }
}

/// Run the normal client every 100 ms, `n` times; (successes, latencies, first errors).
async fn normal_client(addr: SocketAddr, n: u64) -> (u64, Vec<Duration>, Vec<String>) {
    let c = Arc::new(strict_client(addr));
    let sa = server_addr(addr);
    let mut tasks = Vec::new();
    let start = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(start + Duration::from_millis(100 * i)).await;
        let (c, sa) = (c.clone(), sa.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(20), normal_op(&c, &sa, i)).await;
            (t.elapsed(), r.unwrap_or_else(|_| Err("timed out".into())))
        }));
    }
    let (mut ok, mut lat, mut errors) = (0, Vec::new(), Vec::new());
    for t in tasks {
        let (d, r) = t.await.unwrap();
        match r {
            Ok(()) => {
                ok += 1;
                lat.push(d);
            }
            Err(e) if errors.len() < 5 => errors.push(e),
            Err(_) => {}
        }
    }
    (ok, lat, errors)
}

#[derive(Clone, Copy, Debug)]
enum Holder {
    /// Hello, then one Info every 4 s, inside the idle timeout.
    KeepAlive,
    /// Connect and say nothing.
    Idle,
    /// A Hello trickled one byte a second.
    Slowloris,
}

/// `n` attackers holding connections in `mode`, each reconnecting at once when closed, until
/// `stop`, on a runtime of their own (so that the test's client is scheduled like a separate
/// program would be). Returns the attack's thread and how many connections it opened.
fn spawn_holders(
    addr: SocketAddr,
    n: usize,
    mode: Holder,
    stop: Arc<AtomicBool>,
    deadline: Instant,
) -> (std::thread::JoinHandle<()>, Arc<AtomicU64>) {
    let opened = Arc::new(AtomicU64::new(0));
    let o = opened.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (tasks, _) = holders(addr, n, mode, stop, deadline, o);
            for t in tasks {
                let _ = t.await;
            }
        });
    });
    (thread, opened)
}

fn holders(
    addr: SocketAddr,
    n: usize,
    mode: Holder,
    stop: Arc<AtomicBool>,
    deadline: Instant,
    opened: Arc<AtomicU64>,
) -> (Vec<tokio::task::JoinHandle<()>>, Arc<AtomicU64>) {
    let hello = encode_frame(
        &Request::Hello {
            min_version: 1,
            max_version: 1,
        },
        DEFAULT_MAX_FRAME,
    )
    .unwrap();
    let tasks = (0..n)
        .map(|_| {
            let (stop, opened, hello) = (stop.clone(), opened.clone(), hello.clone());
            tokio::spawn(async move {
                let mut rounds = 0u32;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && rounds < 100_000
                {
                    rounds += 1;
                    let Ok(Ok(mut s)) =
                        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
                            .await
                    else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    opened.fetch_add(1, Ordering::Relaxed);
                    let until = tokio::time::Instant::from_std(deadline);
                    let hold = async {
                        match mode {
                            Holder::KeepAlive => {
                                if !raw_hello(&mut s).await {
                                    return;
                                }
                                loop {
                                    tokio::time::sleep(Duration::from_secs(4)).await;
                                    if write_msg(&mut s, &Request::Info, DEFAULT_MAX_FRAME)
                                        .await
                                        .is_err()
                                    {
                                        return;
                                    }
                                    match read_msg::<Response, _>(&mut s, u32::MAX).await {
                                        Ok(Response::Info(_)) => {}
                                        _ => return,
                                    }
                                }
                            }
                            Holder::Idle => {
                                let _ = read_msg::<Response, _>(&mut s, u32::MAX).await;
                            }
                            Holder::Slowloris => {
                                for b in &hello {
                                    if s.write_all(&[*b]).await.is_err() {
                                        return;
                                    }
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                }
                                let _ = read_msg::<Response, _>(&mut s, u32::MAX).await;
                            }
                        }
                    };
                    tokio::select! {
                        _ = tokio::time::timeout_at(until, hold) => {}
                        _ = async {
                            while !stop.load(Ordering::Relaxed) {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        } => return,
                    }
                }
            })
        })
        .collect();
    (tasks, opened)
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
}

/// Raise this process's open-files limit to the hard limit: the attacks need over 10 000 sockets
/// (and the server, a child, inherits the limit).
fn raise_file_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        },
    );
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_holders_beyond_the_limit_cannot_starve_a_normal_client() {
    let _turn = TURN.lock().await;
    let files = raise_file_limit();
    assert!(
        files >= 12_000,
        "this test needs an open-files limit of at least 12 000 (ulimit -Hn is {files})"
    );
    let dir = tempfile::tempdir().unwrap();
    // Default limits: 256 slots, 30 s idle timeout; the rate limit out of the normal client's way.
    let server = ServerProcess::start(dir.path(), &["--rate", "1000"]);
    let addr = server.addr;
    let (base_ok, mut base_lat, _) = normal_client(addr, 20).await;
    assert_eq!(base_ok, 20, "the normal client works without an attack");
    eprintln!(
        "baseline: p50 {:.1} ms, p99 {:.1} ms",
        pct(&mut base_lat, 0.5),
        pct(&mut base_lat, 0.99)
    );
    // 10 000 idle sockets also exceed the server's waiting room (8 192), so they churn.
    for (mode, n) in [
        (Holder::KeepAlive, 320),
        (Holder::Idle, 2000),
        (Holder::Idle, 10_000),
        (Holder::Slowloris, 320),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + Duration::from_secs(60);
        let (thread, opened) = spawn_holders(addr, n, mode, stop.clone(), deadline);
        // Let the attackers take every slot first.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (ok, mut lat, errors) = normal_client(addr, 100).await;
        stop.store(true, Ordering::Relaxed);
        // The attackers notice within their hold time (at most a few seconds).
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
        eprintln!(
            "{n} × {mode:?} ({} connections opened): normal client {ok}/100 ok, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; errors: {errors:?}",
            opened.load(Ordering::Relaxed),
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99),
            pct(&mut lat, 1.0)
        );
        assert!(
            opened.load(Ordering::Relaxed) as usize >= n,
            "{mode:?}: the attack held more connections than there are slots"
        );
        assert!(
            ok >= 95,
            "{mode:?}: the normal client succeeded {ok} of 100 times: {errors:?}"
        );
        // Let the server drop what the aborted attackers left behind.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A flood of stores without stamps, far beyond what the server acknowledges, while 48 honest
/// clients offer (each solving a stamp at the default effort between its challenge and its
/// store): the flood fills buckets faster than a stamp is solved, and when the flood's stores
/// shared the bucket challenges name no honest offer got in (0 of 48). They now fill buckets of
/// their own (PROTOCOL §10.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_flood_cannot_push_honest_offers_into_refused_buckets() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--rate", "1000000"]);
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let bad_ids = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(90);
    // 64 flooders, each pipelining stores on its connection as fast as the socket takes them;
    // every ID they get back is checked against the default client policy.
    let mut flood = Vec::new();
    for _ in 0..64 {
        let (stop, sent, acked, bad) = (stop.clone(), sent.clone(), acked.clone(), bad_ids.clone());
        flood.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    continue;
                };
                if !raw_hello(&mut s).await {
                    continue;
                }
                let (mut rd, mut wr) = s.into_split();
                let writer = {
                    let (stop, sent) = (stop.clone(), sent.clone());
                    tokio::spawn(async move {
                        // Links of their own across connections: copies are refused, and a
                        // flood must fill buckets.
                        static FLOOD: AtomicU64 = AtomicU64::new(0);
                        let mut i = 0u64;
                        while !stop.load(Ordering::Relaxed) && i < 10_000_000 {
                            i += 1;
                            let mut link = [0u8; 256];
                            let n = FLOOD.fetch_add(1, Ordering::Relaxed);
                            link[..8].copy_from_slice(&n.to_be_bytes());
                            let req = Request::Store {
                                link: SealedLink(link),
                                delete_check: DeleteCheck([2; 32]),
                            };
                            if write_msg(&mut wr, &req, DEFAULT_MAX_FRAME).await.is_err() {
                                return;
                            }
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                };
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(
                        Duration::from_secs(10),
                        read_msg::<Response, _>(&mut rd, u32::MAX),
                    )
                    .await
                    {
                        Ok(Ok(Response::Stored { id })) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            let now = rdv::clock::Clock::now(&SystemClock);
                            if ClientPolicy::default().check(id, now, 600).is_err() {
                                bad.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(Ok(_)) => {}
                        _ => break,
                    }
                }
                writer.abort();
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t_flood = Instant::now();
    let acked0 = acked.load(Ordering::Relaxed);

    // 48 honest offers (the library client, default policy, retrying a busy server with backoff).
    let honest = Arc::new(client(addr, Arc::new(SystemClock)));
    let sa = server_addr(addr);
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..48 {
        let (c, sa, refused) = (honest.clone(), sa.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100 * i)).await;
            let t = Instant::now();
            let r = c
                .offer(
                    &sa,
                    format!("honest {i}").as_bytes(),
                    Passphrase::new(format!("honest-pass-{i}")),
                    KdfProfile::Test,
                )
                .await;
            match r {
                Ok(_) => Some(t.elapsed()),
                Err(OfferError::Refused { .. } | OfferError::RefusedChallenge(_)) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                    None
                }
                Err(e) => {
                    eprintln!("honest offer {i} failed: {e} ({:?})", e.kind());
                    assert_ne!(e.kind(), ErrorKind::ServerMisbehaved, "{e}");
                    None
                }
            }
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        if let Some(d) = t.await.unwrap() {
            lat.push(d);
        }
    }
    let secs = t_flood.elapsed().as_secs_f64();
    let (sent1, acked1) = (sent.load(Ordering::Relaxed), acked.load(Ordering::Relaxed));
    let flood_secs = (t_flood.elapsed() + Duration::from_secs(2)).as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.abort();
    }
    let within = lat
        .iter()
        .filter(|d| **d <= Duration::from_secs(60))
        .count();
    eprintln!(
        "flood: {sent1} stores sent by 64 connections in {flood_secs:.0} s ({:.0}/s, most of them queued in socket buffers), {:.0} acknowledged/s; honest offers: {} ok ({within} within 60 s), {} refused, p50 {:.0} ms, p99 {:.0} ms",
        sent1 as f64 / flood_secs,
        (acked1 - acked0) as f64 / secs,
        lat.len(),
        refused.load(Ordering::Relaxed),
        pct(&mut lat.clone(), 0.5),
        pct(&mut lat, 0.99),
    );
    assert_eq!(
        bad_ids.load(Ordering::Relaxed),
        0,
        "the server handed the flood IDs the default client policy refuses"
    );
    assert_eq!(
        refused.load(Ordering::Relaxed),
        0,
        "honest offers refused by the policy"
    );
    assert!(
        within >= 44,
        "only {within} of 48 honest offers succeeded within 60 s"
    );
    assert!(
        acked1 - acked0 > 0,
        "the flood was admitted too (it is a flood, not a lockout)"
    );
    assert!(
        sent1 as f64 / flood_secs >= 10_000.0,
        "the flood must exceed 10 000 stores/s: {sent1} in {flood_secs:.0} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_its_error_and_memory_stays_bounded() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        dir.path(),
        &[
            "--idle-timeout",
            "1s",
            "--rate",
            "1000",
            "--max-connections",
            "64",
        ],
    );
    let pid = server.pid();
    let addr = server.addr;
    let rss_before = rss_kib(pid);
    let deadline = Instant::now() + Duration::from_secs(4);
    let answers = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let mut attackers = Vec::new();
    // 100 attackers against 64 slots: oversize prefixes, garbage, truncated frames, fetch floods.
    for k in 0..100u32 {
        let answers = answers.clone();
        attackers.push(tokio::spawn(async move {
            let mut rounds = 0;
            while Instant::now() < deadline && rounds < 10_000 {
                rounds += 1;
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    continue;
                };
                let got = match k % 4 {
                    0 => {
                        if !raw_hello(&mut s).await {
                            continue;
                        }
                        let _ = s.write_all(&0xffff_fff0u32.to_be_bytes()).await;
                        read_msg::<Response, _>(&mut s, u32::MAX).await
                    }
                    1 => {
                        let junk: Vec<u8> = (0..64).map(|_| rand::random()).collect();
                        let _ = s.write_all(&[0, 0, 0, 64]).await;
                        let _ = s.write_all(&junk).await;
                        read_msg::<Response, _>(&mut s, u32::MAX).await
                    }
                    2 => {
                        let _ = s.write_all(&[0, 0, 1, 0, 1, 2, 3]).await;
                        read_msg::<Response, _>(&mut s, u32::MAX).await
                    }
                    _ => {
                        if !raw_hello(&mut s).await {
                            continue;
                        }
                        let mut last = None;
                        for _ in 0..50 {
                            let locator = Locator(rand::random());
                            if write_msg(&mut s, &Request::Fetch { locator }, DEFAULT_MAX_FRAME)
                                .await
                                .is_err()
                            {
                                break;
                            }
                            last = Some(read_msg::<Response, _>(&mut s, u32::MAX).await);
                        }
                        match last {
                            Some(r) => r,
                            None => continue,
                        }
                    }
                };
                let name = match got {
                    Ok(Response::Error { code, .. }) => format!("{code:?}"),
                    Ok(r) => r.kind().to_string(),
                    Err(_) => "closed".into(),
                };
                *answers.lock().unwrap().entry((k % 4, name)).or_insert(0u64) += 1;
            }
        }));
    }
    for a in attackers {
        a.await.unwrap();
    }
    let rss_during = rss_kib(pid);
    let answers = answers.lock().unwrap().clone();
    eprintln!("answers (attack, answer) → count: {answers:?}");
    eprintln!("server RSS: {rss_before} KiB before, {rss_during} KiB after the attack");
    let got = |attack: u32, code: ErrorCode| {
        answers
            .get(&(attack, format!("{code:?}")))
            .copied()
            .unwrap_or(0)
            > 0
    };
    assert!(
        got(0, ErrorCode::FrameTooLarge),
        "oversize prefixes get FrameTooLarge"
    );
    assert!(got(1, ErrorCode::Malformed), "garbage gets Malformed");
    assert!(got(2, ErrorCode::TimedOut), "truncated frames time out");
    assert!(got(3, ErrorCode::NotFound), "a fetch flood gets NotFound");
    assert!(
        rss_during < rss_before + 64 * 1024,
        "memory bounded: {rss_before} -> {rss_during} KiB"
    );
    // And the server still serves.
    normal_op(&strict_client(addr), &server_addr(addr), 1)
        .await
        .unwrap();
}
