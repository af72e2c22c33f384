//! The metrics endpoint against a real server on disk: a known sequence of stores, fetches and
//! deletes over raw connections, then every count checked exactly in what `GET /metrics` answers;
//! and none of the locators, bucket IDs, tokens or links of that sequence appears in it.

mod common;

use common::{manual_clock, raw_hello, start_default, start_server, T0};
use rdv::framed::{read_msg, write_msg};
use rdv::proto::wire::DEFAULT_MAX_FRAME;
use rdv::proto::{BucketId, DeleteToken, Locator, Request, Response, SealedLink, SEALED_LINK_LEN};
use rdv::server::ServerConfig;
use rdv::store::StoreParams;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert!(raw_hello(&mut s).await);
    s
}

async fn ask(s: &mut TcpStream, req: Request) -> Response {
    write_msg(s, &req, DEFAULT_MAX_FRAME).await.unwrap();
    read_msg(s, u32::MAX).await.unwrap()
}

fn token(n: u8) -> DeleteToken {
    DeleteToken::from_bytes([n; 32])
}

async fn store(s: &mut TcpStream, n: u8) -> BucketId {
    let req = Request::Store {
        link: SealedLink([n; SEALED_LINK_LEN]),
        delete_check: token(n).check(),
    };
    match ask(s, req).await {
        Response::Stored { id } => id,
        r => panic!("{r:?}"),
    }
}

async fn fetch(s: &mut TcpStream, locator: Locator) -> Response {
    ask(s, Request::Fetch { locator }).await
}

async fn delete(s: &mut TcpStream, locator: Locator, n: u8) -> Response {
    ask(
        s,
        Request::Delete {
            locator,
            token: token(n),
        },
    )
    .await
}

async fn scrape(addr: SocketAddr, path: &str) -> (String, String) {
    scrape_with(
        addr,
        path,
        "Host: 127.0.0.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n",
    )
    .await
}

/// A scrape with the given header lines (each ending in CRLF).
async fn scrape_with(addr: SocketAddr, path: &str, headers: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\n{headers}\r\n").as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// The value of the sample `name` (with its labels, if any), which must be present.
fn value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

#[tokio::test]
async fn every_count_is_exact_and_nothing_identifies_a_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    // Each value released at once, for exact counts (the default batch is tested in
    // src/server/metrics.rs).
    let config = ServerConfig {
        metrics_batch: 1,
        ..Default::default()
    };
    let (server, addr) = start_server(
        dir.path(),
        StoreParams::default(),
        config,
        Arc::new(clock.clone()),
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let maddr = listener.local_addr().unwrap();
    tokio::spawn(server.clone().run_metrics(listener));

    // Bucket A: three links from three connections, fetched at +10 s, one link deleted at
    // +70 s (60 s after the fetch), a second fetch at +80 s sees two.
    let (mut c1, mut c2, mut c3) = (
        connect(addr).await,
        connect(addr).await,
        connect(addr).await,
    );
    let a = store(&mut c1, 1).await;
    assert_eq!(store(&mut c2, 2).await, a);
    assert_eq!(store(&mut c3, 3).await, a);
    clock.advance(10);
    let mut reader = connect(addr).await;
    assert!(matches!(
        fetch(&mut reader, a.locator()).await,
        Response::Bucket { .. }
    ));
    clock.advance(60);
    // Deleted from another connection than the one it was stored on: not a refusal.
    assert_eq!(delete(&mut reader, a.locator(), 2).await, Response::Deleted);
    clock.advance(10);
    assert!(matches!(
        fetch(&mut reader, a.locator()).await,
        Response::Bucket { .. }
    ));
    // A wrong token deletes nothing; a fetch of a bucket that does not exist finds nothing.
    assert!(matches!(
        delete(&mut reader, a.locator(), 9).await,
        Response::Error { .. }
    ));
    assert!(matches!(
        fetch(&mut reader, Locator([0xAB; 32])).await,
        Response::Error { .. }
    ));

    // Past A's window (10 min): bucket B. A client that refuses its bucket stores and deletes
    // on one connection: a refusal the server can see.
    clock.advance(600);
    let mut refuser = connect(addr).await;
    let b = store(&mut refuser, 4).await;
    assert_ne!(b, a);
    assert_eq!(
        delete(&mut refuser, b.locator(), 4).await,
        Response::Deleted
    );
    // Another store into B from a fresh connection, which stays.
    let mut c5 = connect(addr).await;
    assert_eq!(store(&mut c5, 5).await, b);

    let (head, text) = scrape(maddr, "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    // k_close: A closed with 2 real links (B is still open).
    assert_eq!(value(&text, "rdv_bucket_links_at_close_count"), 1.0);
    assert_eq!(value(&text, "rdv_bucket_links_at_close_sum"), 2.0);
    assert_eq!(
        value(&text, "rdv_bucket_links_at_close_bucket{le=\"1.0\"}"),
        0.0
    );
    assert_eq!(
        value(&text, "rdv_bucket_links_at_close_bucket{le=\"2.0\"}"),
        1.0
    );
    // k_fetch: two fetches of A, with 3 then 2 real links.
    assert_eq!(value(&text, "rdv_fetch_candidates_count"), 2.0);
    assert_eq!(value(&text, "rdv_fetch_candidates_sum"), 5.0);
    assert_eq!(value(&text, "rdv_fetch_candidates_bucket{le=\"2.0\"}"), 1.0);
    assert_eq!(value(&text, "rdv_fetch_candidates_bucket{le=\"4.0\"}"), 2.0);
    // One delete after a fetch, 60 s later (B's delete had no fetch before it).
    assert_eq!(value(&text, "rdv_delete_after_fetch_seconds_count"), 1.0);
    assert_eq!(value(&text, "rdv_delete_after_fetch_seconds_sum"), 60.0);
    assert_eq!(
        value(&text, "rdv_delete_after_fetch_seconds_bucket{le=\"10.0\"}"),
        0.0
    );
    assert_eq!(
        value(&text, "rdv_delete_after_fetch_seconds_bucket{le=\"60.0\"}"),
        1.0
    );
    // Counts by outcome.
    assert_eq!(value(&text, "rdv_buckets_opened_total"), 2.0);
    assert_eq!(value(&text, "rdv_stores_total{outcome=\"stored\"}"), 5.0);
    assert_eq!(value(&text, "rdv_fetches_total{outcome=\"found\"}"), 2.0);
    assert_eq!(
        value(&text, "rdv_fetches_total{outcome=\"not_found\"}"),
        1.0
    );
    assert_eq!(value(&text, "rdv_deletes_total{outcome=\"deleted\"}"), 2.0);
    assert_eq!(value(&text, "rdv_deletes_total{outcome=\"nothing\"}"), 1.0);
    assert_eq!(value(&text, "rdv_refusals_seen_total"), 1.0);
    assert_eq!(value(&text, "rdv_connections_total"), 6.0);
    assert_eq!(value(&text, "rdv_connections_open"), 6.0);
    assert_eq!(value(&text, "rdv_slots_in_use"), 6.0);
    assert_eq!(value(&text, "rdv_links_stored"), 3.0);
    // Both deletes came while their buckets could still take a store: each left a mark.
    assert_eq!(value(&text, "rdv_link_marks"), 2.0);
    assert!(value(&text, "rdv_links_quota") >= 0.0);

    // Nothing that names a bucket, a link or a time of a request.
    let b64 = |b: &[u8]| {
        use base64::Engine;
        (
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
            base64::engine::general_purpose::STANDARD.encode(b),
        )
    };
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    for id in [a, b] {
        let loc = id.locator().0;
        let (u, s) = b64(&loc);
        for needle in [u, s, hex(&loc), hex(&loc[..8]), id.created.to_string()] {
            assert!(!text.contains(&needle), "{needle} in the metrics");
        }
    }
    for n in 1..=5u8 {
        let t = token(n);
        let (u, s) = b64(t.expose());
        assert!(!text.contains(&u) && !text.contains(&s) && !text.contains(&hex(t.expose())));
    }
    assert!(!text.contains(&T0.to_string()) && !text.contains("127.0.0.1"));

    // Other paths and methods.
    let (head, _) = scrape(maddr, "/").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let mut s = TcpStream::connect(maddr).await.unwrap();
    s.write_all(b"POST /metrics HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut t = String::new();
    s.read_to_string(&mut t).await.unwrap();
    assert!(t.starts_with("HTTP/1.1 405"), "{t}");
}

/// Many scrapers at once, some that never finish their request: the endpoint stays bounded and
/// answers the next honest scrape.
#[tokio::test]
async fn stuck_scrapers_do_not_block_the_endpoint_forever() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = start_default(dir.path(), Arc::new(manual_clock())).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let maddr = listener.local_addr().unwrap();
    tokio::spawn(server.clone().run_metrics(listener));
    // 300 connections (more than the 256 the endpoint holds at once, 75 times the concurrent
    // scrapes) that send half a request and stall.
    let mut stuck = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(maddr).await.unwrap();
        s.write_all(b"GET /metr").await.unwrap();
        stuck.push(s);
    }
    // Within the scrape timeout (5 s) they are dropped and an honest scrape gets through.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut s = TcpStream::connect(maddr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        let mut t = String::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_string(&mut t))
            .await;
        if t.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the endpoint stayed blocked"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    drop(stuck);
}

/// What Prometheus asks for (OpenMetrics) it gets; anything else, the classic text format,
/// which `promtool check metrics` accepts (it found four counters without HELP before); a Host
/// that is not an address or localhost (DNS rebinding from a browser) is refused.
#[tokio::test]
async fn scrapes_get_the_format_they_ask_for_and_only_by_address() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start_default(dir.path(), Arc::new(manual_clock())).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let maddr = listener.local_addr().unwrap();
    tokio::spawn(server.clone().run_metrics(listener));
    // Samples in every family: a store, a fetch, a delete.
    let mut c = connect(addr).await;
    let a = store(&mut c, 1).await;
    fetch(&mut c, a.locator()).await;
    delete(&mut c, a.locator(), 1).await;

    let (head, open) = scrape(maddr, "/metrics").await;
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(open.ends_with("# EOF\n"));
    let (head, classic) = scrape_with(maddr, "/metrics", "Host: localhost:9100\r\n").await;
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(!classic.contains("# EOF"));
    assert!(
        classic.contains("# TYPE rdv_buckets_opened_total counter"),
        "{classic}"
    );
    assert_eq!(
        value(&classic, "rdv_buckets_opened_total"),
        value(&open, "rdv_buckets_opened_total")
    );
    // Every sample's family has its HELP and TYPE, by the classic format's naming.
    for sample in classic.lines().filter(|l| !l.starts_with('#')) {
        let name = sample.split(['{', ' ']).next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                let f = name.strip_suffix(s)?;
                classic
                    .contains(&format!("# TYPE {f} histogram"))
                    .then_some(f)
            })
            .unwrap_or(name);
        assert!(
            classic.contains(&format!("# HELP {family} "))
                && classic.contains(&format!("# TYPE {family} ")),
            "{name} has no HELP or TYPE in\n{classic}"
        );
    }
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is missing: install Debian's prometheus package (scripts/test does)");
    let mut child = promtool;
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(classic.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    for host in [
        "Host: attacker.example\r\n",
        "Host: attacker.example:80\r\n",
    ] {
        let (head, body) = scrape_with(maddr, "/metrics", host).await;
        assert!(head.starts_with("HTTP/1.1 421"), "{head}");
        assert!(!body.contains("rdv_"));
    }
    for host in ["Host: [::1]:9100\r\n", "Host: 127.0.0.1\r\n", ""] {
        let (head, _) = scrape_with(maddr, "/metrics", host).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{host}: {head}");
    }
}
