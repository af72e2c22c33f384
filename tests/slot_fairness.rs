//! Honest clients paced like Tor against attackers that hold every connection slot, each attack
//! with more connections than slots (256), against the real server process:
//!
//! - **active**: 320 connections, each sending an Info every 0.2 s (under the rate limit) and
//!   reconnecting at once when closed;
//! - **stalled**: 320 connections that pipeline fetches and never read the answers, so that the
//!   server's writes to them block;
//! - **churn**: 256 active connections, and one more every 100 ms.
//!
//! The honest client goes through a proxy adding 150 ms each way (a Tor circuit's round trip
//! between an answer and its next request) and does Hello + Info + Store + Fetch on a fresh
//! connection without retrying anything: at least 95 % must succeed under each attack. Real
//! `rdv offer` processes through the same proxy (which retry a busy server) must succeed too.
//!
//! Every attack loop is bounded in time and count and stops by itself.

mod common;

use common::proxy::latency_proxy;
use common::*;
use rdv::client::{Client, ClientConfig};
use rdv::clock::SystemClock;
use rdv::framed::{read_msg, write_msg};
use rdv::proto::wire::DEFAULT_MAX_FRAME;
use rdv::proto::{DeleteCheck, Locator, Request, Response, SealedLink, ServerAddr};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// What the attackers do.
#[derive(Clone, Copy, Debug)]
enum Attack {
    Active,
    Stalled,
    Churn,
}

/// One attacking connection until it is closed: Hello, then per `attack`.
async fn attacker(addr: SocketAddr, stalled: bool, stop: &AtomicBool) {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
    else {
        tokio::time::sleep(Duration::from_millis(50)).await;
        return;
    };
    if !raw_hello(&mut s).await {
        return;
    }
    if stalled {
        // Fetches of a bucket that does not exist answer small errors; of the open bucket, 17 KiB
        // each. Either way nothing is read: the server's writes block once the buffers are full.
        let fetch = Request::Fetch {
            locator: Locator([9; 32]),
        };
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) && n < 100_000 {
            n += 1;
            match tokio::time::timeout(
                Duration::from_secs(1),
                write_msg(&mut s, &fetch, DEFAULT_MAX_FRAME),
            )
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                // The socket is full: hold it.
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        return;
    }
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) && n < 100_000 {
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
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

/// The attack, on a runtime of its own (a separate program, as far as the test's client goes),
/// until `stop` or `deadline`. Returns its thread and how many connections it opened.
fn spawn_attack(
    addr: SocketAddr,
    attack: Attack,
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
            let one = |stalled: bool| {
                let (stop, opened) = (stop.clone(), o.clone());
                tokio::spawn(async move {
                    let mut rounds = 0;
                    while !stop.load(Ordering::Relaxed)
                        && Instant::now() < deadline
                        && rounds < 10_000
                    {
                        rounds += 1;
                        opened.fetch_add(1, Ordering::Relaxed);
                        let until = tokio::time::Instant::from_std(deadline);
                        let _ =
                            tokio::time::timeout_at(until, attacker(addr, stalled, &stop)).await;
                    }
                })
            };
            let (n, stalled) = match attack {
                Attack::Active => (320, false),
                Attack::Stalled => (320, true),
                Attack::Churn => (256, false),
            };
            let mut tasks: Vec<_> = (0..n).map(|_| one(stalled)).collect();
            if let Attack::Churn = attack {
                while !stop.load(Ordering::Relaxed)
                    && Instant::now() < deadline
                    && tasks.len() < 1000
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    tasks.push(one(false));
                }
            }
            for t in tasks {
                let _ = t.await;
            }
        });
    });
    (thread, opened)
}

/// The honest session: Hello + Info + Store + Fetch on one fresh connection, nothing retried.
async fn session(c: &Client, sa: &ServerAddr, i: u64) -> Result<(), String> {
    let mut conn = c.connect(sa).await.map_err(|e| format!("hello: {e}"))?;
    match conn.request(&Request::Info).await {
        Ok(Response::Info(_)) => {}
        other => return Err(format!("info: {other:?}")),
    }
    // A link of its own every time (a server refuses a copy of a link its bucket holds).
    static LINKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut link = [0u8; 256];
    link[..8].copy_from_slice(&i.to_be_bytes());
    let n = LINKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    link[8..16].copy_from_slice(&n.to_be_bytes());
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

/// `n` honest sessions through `proxy`, one every 500 ms; (successes, first errors).
async fn honest(proxy: SocketAddr, n: u64) -> (u64, Vec<String>) {
    let c = Arc::new(Client::new(
        Arc::new(rdv::client::direct::DirectConnector::to(proxy.to_string())),
        ClientConfig {
            retry_budget: Duration::ZERO,
            connect_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            ..Default::default()
        },
        Arc::new(SystemClock),
    ));
    let sa = server_addr(proxy);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        tokio::time::sleep_until(start + Duration::from_millis(500 * i)).await;
        let (c, sa) = (c.clone(), sa.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(90), session(&c, &sa, i))
                .await
                .unwrap_or_else(|_| Err("timed out".into()))
        }));
    }
    let (mut ok, mut errors) = (0, Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) if errors.len() < 5 => errors.push(e),
            Err(_) => {}
        }
    }
    (ok, errors)
}

/// `n` real `rdv offer` processes through `proxy`, one every second; how many succeeded.
fn cli_offers(proxy: SocketAddr, n: usize) -> (usize, Vec<String>) {
    let addr = proxy.to_string();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(i as u64));
                run_rdv(
                    &[
                        "offer",
                        "--direct",
                        &addr,
                        "--payload",
                        "smp://honest",
                        "--kdf",
                        "test",
                    ],
                    None,
                    &[("RDV_PASSPHRASE", "tor-paced honest words x")],
                )
            })
        })
        .collect();
    let (mut ok, mut errors) = (0, Vec::new());
    for h in handles {
        let out = h.join().unwrap();
        if out.status.success() {
            ok += 1;
        } else if errors.len() < 3 {
            errors.push(String::from_utf8_lossy(&out.stderr).to_string());
        }
    }
    (ok, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tor_paced_clients_are_served_while_attackers_hold_every_slot() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let proxy = latency_proxy(server.addr, Duration::from_millis(150)).await;
    let (ok, errors) = honest(proxy, 5).await;
    assert_eq!(ok, 5, "without an attack: {errors:?}");
    for attack in [Attack::Active, Attack::Stalled, Attack::Churn] {
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + Duration::from_secs(120);
        let (thread, opened) = spawn_attack(server.addr, attack, stop.clone(), deadline);
        // Let the attackers take every slot first.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let cli = tokio::task::spawn_blocking(move || cli_offers(proxy, 10));
        let (ok, errors) = honest(proxy, 60).await;
        let (cli_ok, cli_errors) = cli.await.unwrap();
        stop.store(true, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
        let opened = opened.load(Ordering::Relaxed);
        eprintln!(
            "{attack:?} ({opened} connections opened): honest sessions {ok}/60, rdv offer {cli_ok}/10; errors: {errors:?} {cli_errors:?}"
        );
        assert!(
            opened >= 320,
            "{attack:?}: more attacking connections than slots"
        );
        assert!(
            ok >= 57,
            "{attack:?}: honest sessions {ok} of 60: {errors:?}"
        );
        assert!(
            cli_ok >= 10,
            "{attack:?}: rdv offer {cli_ok} of 10: {cli_errors:?}"
        );
        // Let the server drop what the attackers left behind.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
