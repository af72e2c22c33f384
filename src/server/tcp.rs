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
/// Longest time a scrape may take, request and answer.
const SCRAPE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Longest HTTP request head read.
const MAX_REQUEST_HEAD: usize = 8192;

impl<S: BucketStore> Server<S> {
    /// Serve the metrics over HTTP on `listener` until shutdown: `GET /metrics` answers the
    /// text of [`Server::metrics_text`]; anything else gets 404 (or 405 for another method).
    /// Bounded: at most 4 scrapes at once, 5 s each, 8 KiB of request head.
    pub async fn run_metrics(self: Arc<Self>, listener: TcpListener) {
        let scrapes = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = self.shutdown_requested() => return,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let Ok(permit) = scrapes.clone().try_acquire_owned() else {
                continue;
            };
            let server = self.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(SCRAPE_TIMEOUT, server.scrape(stream)).await;
                drop(permit);
            });
        }
    }

    async fn scrape(&self, mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 || head.len() + n > MAX_REQUEST_HEAD {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
        let mut words = line.split(|b| *b == b' ');
        let (method, path) = (
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default(),
        );
        let (status, ctype, body) = match (method, path) {
            (b"GET", b"/metrics") => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics_text(),
            ),
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
