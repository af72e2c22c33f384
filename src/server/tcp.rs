//! The plain TCP listener (for loopback, tests, and C tor's `HiddenServicePort`).

use super::Server;
use crate::store::BucketStore;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpSocket};

/// Bind a listener with an accept backlog of `backlog` (the std/tokio default of 128 overflows
/// when many clients, or C tor's per-stream connections, arrive at once: `rdv serve` asks for at
/// least 1024).
pub async fn bind(addr: &str, backlog: usize) -> std::io::Result<TcpListener> {
    let mut last = None;
    for sa in tokio::net::lookup_host(addr).await? {
        let socket = if sa.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        if let Err(e) = socket.bind(sa) {
            last = Some(e);
            continue;
        }
        return socket.listen(u32::try_from(backlog.max(1)).unwrap_or(u32::MAX));
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "address resolves to nothing",
        )
    }))
}

impl<S: BucketStore> Server<S> {
    /// Accept TCP connections until shutdown; each is served on its own task.
    pub async fn run_tcp(self: Arc<Self>, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = self.shutdown_requested() => return,
            };
            match accepted {
                Ok((stream, _peer)) => {
                    // The peer address is deliberately not logged.
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(self.clone().serve_stream(stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // Out of file descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Scrapes served at once; more are closed unanswered.
const MAX_SCRAPES: usize = 4;
/// Most connections to the metrics endpoint open at once (scraping or waiting for a turn).
const MAX_SCRAPES_IN_LINE: usize = 256;
/// Longest time a scrape may take, request and answer.
const SCRAPE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Longest wait for a scrape's request head (a scraper sends it at once).
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest a scrape waits for the metrics to be brought up to date.
const REFRESH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How often the metrics are brought up to date between scrapes.
const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest HTTP request head read.
const MAX_REQUEST_HEAD: usize = 8192;

impl<S: BucketStore> Server<S> {
    /// Serve the metrics over HTTP on `listener` until shutdown: `GET /metrics` answers the
    /// text of [`Server::metrics_text`]; anything else gets 404 (or 405 for another method).
    /// Bounded: at most 4 scrapes at once (others wait their turn, at most 256 connections in
    /// all: more are closed at once), 1 s for the request head, 5 s in all, 8 KiB of request
    /// head. OpenMetrics to a scraper that asks for it (Prometheus),
    /// the classic text format to others; a `Host` that is not an address or localhost gets 421.
    pub async fn run_metrics(self: Arc<Self>, listener: TcpListener) {
        let scrapes = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
        let in_line = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES_IN_LINE));
        // Windows are counted as they end, not only when someone scrapes.
        let server = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        // Bounded, so that a store that hangs does not hold up shutdown.
                        let _ = tokio::time::timeout(REFRESH_WAIT * 15, server.refresh_metrics()).await;
                    }
                    _ = server.shutdown_requested() => return,
                }
            }
        });
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = self.shutdown_requested() => return,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            // In line for a place (first come, first served) rather than turned away: a few
            // idle connections cannot make every scrape fail; each holds its place for at most
            // HEAD_TIMEOUT before its request is in.
            // A bounded line: beyond it a connection is closed at once, so a flood of
            // connections costs a task each only up to that bound.
            let Ok(place) = in_line.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let scrapes = scrapes.clone();
            let server = self.clone();
            tokio::spawn(async move {
                let _place = place;
                let _ = tokio::time::timeout(SCRAPE_TIMEOUT, async {
                    let Ok(_permit) = scrapes.acquire_owned().await else {
                        return;
                    };
                    let _ = server.scrape(stream).await;
                })
                .await;
            });
        }
    }

    async fn scrape(&self, mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        let head_by = tokio::time::Instant::now() + HEAD_TIMEOUT;
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
            let Ok(read) = tokio::time::timeout_at(head_by, stream.read(&mut buf)).await else {
                return Ok(());
            };
            let n = read?;
            if n == 0 || head.len() + n > MAX_REQUEST_HEAD {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
        }
        let mut lines = head.split(|b| *b == b'\n');
        let line = lines.next().unwrap_or_default();
        let mut words = line.split(|b| *b == b' ');
        let (method, path) = (
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default(),
        );
        let header = |name: &str| {
            head.split(|b| *b == b'\n').skip(1).find_map(|l| {
                let l = std::str::from_utf8(l).ok()?;
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let (status, ctype, body) = match (method, path) {
            // A page in a browser that a hostile site's name was made to point at this address
            // (DNS rebinding) names that site as its Host: only an address or localhost is served.
            _ if !header("host").is_none_or(|h| host_is_local_name(&h)) => (
                "421 Misdirected Request",
                "text/plain",
                "the Host must be an IP address or localhost\n".into(),
            ),
            (b"GET", b"/metrics") => {
                // Up to date, within a bounded wait (a slow database leaves the rest to the
                // refresh loop; nothing is lost by giving up early).
                let _ = tokio::time::timeout(REFRESH_WAIT, self.refresh_metrics()).await;
                let text = self.metrics_text();
                // Prometheus asks for OpenMetrics; anything else (curl, promtool) gets the
                // classic text format.
                if header("accept").is_some_and(|a| a.contains("application/openmetrics-text")) {
                    (
                        "200 OK",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        text,
                    )
                } else {
                    (
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        classic_text(&text),
                    )
                }
            }
            (b"GET", _) => (
                "404 Not Found",
                "text/plain",
                "not found: try /metrics\n".into(),
            ),
            _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await
    }
}

/// Whether an HTTP `Host` value names this machine by address (or as localhost), not by a name
/// someone else's DNS controls.
fn host_is_local_name(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => {
            return rest
                .split_once(']')
                .is_some_and(|(a, _)| a.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

/// OpenMetrics text as the classic Prometheus text format (0.0.4): a counter's `HELP` and
/// `TYPE` lines name its `_total` sample, and there is no `# EOF`.
pub fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}
