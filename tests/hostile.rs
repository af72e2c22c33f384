//! Hostile clients against the real server process: slowloris, idle connections, oversize length
//! prefixes, garbage, truncated frames, store and fetch floods, and a connection flood beyond the
//! limit. Each attacker gets a clear error or a disconnect, the server's memory stays bounded, and
//! a well-behaved client keeps being served; its latency before and during the attack is printed
//! (timing targets belong in benchmarks, not in assertions).

mod common;

use common::*;
use rdv::client::ErrorKind;
use rdv::clock::{Clock, SystemClock};
use rdv::framed::{read_msg, write_msg};
use rdv::proto::wire::DEFAULT_MAX_FRAME;
use rdv::proto::{
    DeleteCheck, ErrorCode, KdfProfile, Locator, Passphrase, Request, Response, SealedLink,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const MAX_CONN: usize = 64;

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

#[derive(Default)]
struct Tally {
    timed_out: AtomicUsize,
    too_large: AtomicUsize,
    malformed: AtomicUsize,
    busy: AtomicUsize,
    not_found: AtomicUsize,
    stored: AtomicUsize,
    closed: AtomicUsize,
}

fn count(t: &Tally, r: Result<Response, rdv::framed::FrameIoError>) {
    match r {
        Ok(Response::Error {
            code: ErrorCode::TimedOut,
            ..
        }) => t.timed_out.fetch_add(1, Ordering::Relaxed),
        Ok(Response::Error {
            code: ErrorCode::FrameTooLarge,
            ..
        }) => t.too_large.fetch_add(1, Ordering::Relaxed),
        Ok(Response::Error {
            code: ErrorCode::Malformed,
            ..
        }) => t.malformed.fetch_add(1, Ordering::Relaxed),
        Ok(Response::Error {
            code: ErrorCode::Busy,
            ..
        }) => t.busy.fetch_add(1, Ordering::Relaxed),
        Ok(Response::Error {
            code: ErrorCode::NotFound,
            ..
        }) => t.not_found.fetch_add(1, Ordering::Relaxed),
        Ok(Response::Stored { .. }) => t.stored.fetch_add(1, Ordering::Relaxed),
        _ => t.closed.fetch_add(1, Ordering::Relaxed),
    };
}

/// Offer then accept; retries when the server says Busy (as a real client would).
async fn rendezvous(c: &rdv::client::Client, sa: &rdv::proto::ServerAddr, i: usize) -> Duration {
    let start = Instant::now();
    for _attempt in 0..50 {
        let r = async {
            let o = c
                .offer(
                    sa,
                    format!("legit {i}").as_bytes(),
                    Passphrase::new(format!("legit-pass-{i}")),
                    KdfProfile::Test,
                )
                .await
                .map_err(|e| (e.kind(), e.to_string()))?;
            let got = c
                .accept(&o.link, None)
                .await
                .map_err(|e| (e.kind(), e.to_string()))?;
            assert_eq!(&got.payload[..], format!("legit {i}").as_bytes());
            Ok::<_, (ErrorKind, String)>(())
        }
        .await;
        match r {
            Ok(()) => return start.elapsed(),
            Err((ErrorKind::Transient, _)) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err((_, e)) => panic!("well-behaved client failed: {e}"),
        }
    }
    panic!("well-behaved client was not served after 50 attempts");
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_get_errors_memory_stays_bounded_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let max_conn = MAX_CONN.to_string();
    let server = ServerProcess::start(
        dir.path(),
        &[
            "--idle-timeout",
            "1s",
            "--rate",
            "1000",
            "--max-connections",
            &max_conn,
        ],
    );
    let pid = server.pid();
    let addr = server.addr;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let c = client(addr, clock);
    let sa = server_addr(addr);

    // Baseline, same run.
    let mut base = Vec::new();
    for i in 0..30 {
        base.push(rendezvous(&c, &sa, i).await);
    }
    let rss_before = rss_kib(pid);

    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut attackers = Vec::new();
    let spawn = |attackers: &mut Vec<tokio::task::JoinHandle<()>>, n: usize, kind: u8| {
        for _ in 0..n {
            let tally = tally.clone();
            attackers.push(tokio::spawn(async move {
                let mut rounds = 0;
                while Instant::now() < deadline && rounds < 10_000 {
                    rounds += 1;
                    let Ok(mut s) = TcpStream::connect(addr).await else {
                        continue;
                    };
                    match kind {
                        // slowloris: a Hello trickled one byte every 300 ms
                        0 => {
                            let f = rdv::proto::wire::encode_frame(
                                &Request::Hello {
                                    min_version: 1,
                                    max_version: 1,
                                },
                                DEFAULT_MAX_FRAME,
                            )
                            .unwrap();
                            for b in f {
                                if s.write_all(&[b]).await.is_err() {
                                    break;
                                }
                                tokio::time::sleep(Duration::from_millis(300)).await;
                            }
                            count(&tally, read_msg(&mut s, u32::MAX).await);
                        }
                        // idle: connect and say nothing
                        1 => count(&tally, read_msg(&mut s, u32::MAX).await),
                        // oversize length prefix
                        2 => {
                            if raw_hello(&mut s).await {
                                let _ = s.write_all(&0xffff_fff0u32.to_be_bytes()).await;
                                count(&tally, read_msg(&mut s, u32::MAX).await);
                            }
                        }
                        // garbage
                        3 => {
                            let junk: Vec<u8> = (0..64).map(|_| rand::random()).collect();
                            let _ = s.write_all(&[0, 0, 0, 64]).await;
                            let _ = s.write_all(&junk).await;
                            count(&tally, read_msg(&mut s, u32::MAX).await);
                        }
                        // truncated frame, then hang up
                        4 => {
                            let _ = s.write_all(&[0, 0, 1, 0, 1, 2, 3]).await;
                            drop(s);
                            tally.closed.fetch_add(1, Ordering::Relaxed);
                        }
                        // store flood: fills bucket after bucket
                        5 => {
                            if raw_hello(&mut s).await {
                                for _ in 0..50 {
                                    let link = SealedLink(std::array::from_fn(|_| rand::random()));
                                    if write_msg(
                                        &mut s,
                                        &Request::Store {
                                            link,
                                            delete_check: DeleteCheck([0; 32]),
                                        },
                                        DEFAULT_MAX_FRAME,
                                    )
                                    .await
                                    .is_err()
                                    {
                                        break;
                                    }
                                    count(&tally, read_msg(&mut s, u32::MAX).await);
                                }
                            }
                        }
                        // fetch flood of random locators
                        _ => {
                            if raw_hello(&mut s).await {
                                for _ in 0..50 {
                                    let locator = Locator(rand::random());
                                    if write_msg(
                                        &mut s,
                                        &Request::Fetch { locator },
                                        DEFAULT_MAX_FRAME,
                                    )
                                    .await
                                    .is_err()
                                    {
                                        break;
                                    }
                                    count(&tally, read_msg(&mut s, u32::MAX).await);
                                }
                            }
                        }
                    }
                }
            }));
        }
    };
    spawn(&mut attackers, 16, 0);
    spawn(&mut attackers, 8, 1);
    spawn(&mut attackers, 2, 2);
    spawn(&mut attackers, 2, 3);
    spawn(&mut attackers, 2, 4);
    spawn(&mut attackers, 3, 5);
    spawn(&mut attackers, 3, 6);

    let mut during = Vec::new();
    let mut i = 100;
    while Instant::now() < deadline {
        during.push(rendezvous(&c, &sa, i).await);
        i += 1;
    }
    let rss_during = rss_kib(pid);
    for a in attackers {
        a.await.unwrap();
    }
    let t = &*tally;
    let (to, tl, ma, nf, st) = (
        t.timed_out.load(Ordering::Relaxed),
        t.too_large.load(Ordering::Relaxed),
        t.malformed.load(Ordering::Relaxed),
        t.not_found.load(Ordering::Relaxed),
        t.stored.load(Ordering::Relaxed),
    );
    eprintln!("attack answers: timed out {to}, frame too large {tl}, malformed {ma}, not found {nf}, stored {st}, busy {}, closed {}", t.busy.load(Ordering::Relaxed), t.closed.load(Ordering::Relaxed));
    assert!(
        to > 0 && tl > 0 && ma > 0 && nf > 0 && st > 0,
        "every attack got its answer"
    );
    assert!(
        during.len() >= 5,
        "the well-behaved client completed {} rendezvous during the attack",
        during.len()
    );
    eprintln!(
        "well-behaved rendezvous latency (offer+accept, 5 connections): baseline p50 {:.1} ms / max {:.1} ms; under attack p50 {:.1} ms / p90 {:.1} ms / max {:.1} ms ({} ops)",
        pct(&mut base, 0.5), pct(&mut base, 1.0), pct(&mut during, 0.5), pct(&mut during, 0.9), pct(&mut during, 1.0), during.len()
    );
    eprintln!("server RSS: {rss_before} KiB before, {rss_during} KiB during the attack");
    assert!(
        rss_during < rss_before + 64 * 1024,
        "memory bounded: {rss_before} -> {rss_during} KiB"
    );

    // Connection flood beyond the limit: the surplus is told Busy, and service resumes after.
    let mut held = Vec::new();
    let mut busy = 0;
    for _ in 0..3 * MAX_CONN {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if raw_hello(&mut s).await {
            held.push(s);
        } else {
            busy += 1;
        }
    }
    assert!(
        held.len() <= MAX_CONN,
        "at most {MAX_CONN} served at once, got {}",
        held.len()
    );
    assert!(busy >= 2 * MAX_CONN, "the surplus was refused: {busy}");
    let rss_flood = rss_kib(pid);
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    rendezvous(&c, &sa, 9999).await;
    eprintln!("connection flood: {busy} refused with Busy, RSS {rss_flood} KiB");
    assert!(rss_flood < rss_before + 64 * 1024);
}
