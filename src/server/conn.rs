//! One connection: version exchange, then requests until the peer leaves, idles out, breaks a
//! limit or the server shuts down.

use super::Server;
use crate::io::{read_frame_body, write_msg, FrameIoError};
use crate::proto::wire::{self, negotiate, sanitize_message, FrameError};
use crate::proto::{
    ErrorCode, Request, Response, ServerInfo, MAX_LINKS_PER_BUCKET, PROTOCOL_VERSION,
};
use crate::store::{BucketStore, StoreError};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// A token bucket: `rate` tokens per second up to `burst`.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }
    /// Take a token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn error(code: ErrorCode, message: impl AsRef<str>) -> Response {
    Response::Error {
        code,
        message: sanitize_message(message.as_ref()),
    }
}

impl<S: BucketStore> Server<S> {
    /// Serve one stream to its end. Takes a connection slot; when none is free the peer gets a
    /// `Busy` error and the stream is closed.
    pub async fn serve_stream<T: AsyncRead + AsyncWrite + Unpin + Send>(
        self: Arc<Self>,
        mut stream: T,
    ) {
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            tracing::debug!("connection refused: too many connections");
            let msg = error(ErrorCode::Busy, "too many connections, try again later");
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                write_msg(&mut stream, &msg, u32::MAX),
            )
            .await;
            return;
        };
        if let Err(e) = self.connection_loop(&mut stream).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }

    /// Write one response, giving a peer that does not read at most the idle timeout.
    async fn send<T: AsyncWrite + Unpin>(
        &self,
        stream: &mut T,
        msg: &Response,
    ) -> Result<(), FrameIoError> {
        match tokio::time::timeout(self.config.idle_timeout, write_msg(stream, msg, u32::MAX)).await
        {
            Ok(r) => r,
            Err(_) => Err(FrameIoError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the peer does not read its answers",
            ))),
        }
    }

    async fn connection_loop<T: AsyncRead + AsyncWrite + Unpin + Send>(
        &self,
        stream: &mut T,
    ) -> Result<(), FrameIoError> {
        let mut limiter = RateLimiter::new(
            self.config.rate_per_sec,
            self.config.rate_burst,
            Instant::now(),
        );
        let mut greeted = false;
        let mut shutdown = self.shutdown_rx.clone();
        loop {
            if *shutdown.borrow() {
                return self
                    .send(
                        stream,
                        &error(ErrorCode::ShuttingDown, "server is shutting down"),
                    )
                    .await;
            }
            // The whole frame must arrive within the idle timeout: trickling bytes does not help.
            let read = tokio::time::timeout(
                self.config.idle_timeout,
                read_frame_body(stream, self.config.max_frame),
            );
            let body = tokio::select! {
                r = read => r,
                _ = shutdown.changed() => continue,
            };
            let body = match body {
                Err(_elapsed) => {
                    return self
                        .send(stream, &error(ErrorCode::TimedOut, "idle timeout"))
                        .await;
                }
                Ok(Err(FrameIoError::Frame(FrameError::TooLarge { len, max }))) => {
                    let msg = format!("frame of {len} bytes exceeds the maximum of {max}");
                    return self
                        .send(stream, &error(ErrorCode::FrameTooLarge, msg))
                        .await;
                }
                Ok(Err(e)) => return Err(e),
                Ok(Ok(b)) => b,
            };
            let req: Request = match wire::decode_body(&body) {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(bytes = body.len(), "malformed request frame");
                    return self
                        .send(stream, &error(ErrorCode::Malformed, e.to_string()))
                        .await;
                }
            };
            let kind = req.kind();
            tracing::trace!(request = kind, bytes = body.len(), "request received");
            if !limiter.allow(Instant::now()) {
                tracing::debug!(request = kind, "rate limited");
                self.send(
                    stream,
                    &error(
                        ErrorCode::RateLimited,
                        "too many requests on this connection, slow down",
                    ),
                )
                .await?;
                continue;
            }
            let resp = match (greeted, req) {
                (
                    false,
                    Request::Hello {
                        min_version,
                        max_version,
                    },
                ) => match negotiate(min_version, max_version) {
                    Some(version) => {
                        greeted = true;
                        Response::Hello { version }
                    }
                    None => {
                        let msg = format!("this server speaks version {PROTOCOL_VERSION}, the client {min_version}..={max_version}");
                        return self
                            .send(stream, &error(ErrorCode::UnsupportedVersion, msg))
                            .await;
                    }
                },
                (false, _) => {
                    return self
                        .send(stream, &error(ErrorCode::HelloRequired, "send Hello first"))
                        .await;
                }
                (true, req) => self.handle(req).await,
            };
            match &resp {
                Response::Error { code, .. } => {
                    tracing::debug!(request = kind, ?code, "request refused")
                }
                r => tracing::debug!(request = kind, response = r.kind(), "request answered"),
            }
            self.send(stream, &resp).await?;
        }
    }

    /// Answer one request (after the version exchange).
    pub async fn handle(&self, req: Request) -> Response {
        let now = self.clock.now();
        match req {
            Request::Hello { .. } => error(ErrorCode::Malformed, "Hello was already exchanged"),
            Request::Info => {
                let p = self.store.params();
                Response::Info(ServerInfo {
                    version: PROTOCOL_VERSION,
                    max_links_per_bucket: MAX_LINKS_PER_BUCKET as u16,
                    open_window_secs: p.open_window_secs,
                    ttl_secs: p.ttl_secs,
                    server_time: now,
                    max_frame: self.config.max_frame,
                })
            }
            Request::Store { link, delete_check } => {
                match self.store.store(link, delete_check, now).await {
                    Ok(id) => Response::Stored { id },
                    Err(e) => store_error(e),
                }
            }
            Request::Fetch { locator } => match self.store.fetch(locator, now).await {
                Ok(Some(mut links)) => {
                    links.truncate(MAX_LINKS_PER_BUCKET);
                    let filler = self.filler(&locator, links.len());
                    links.extend(filler);
                    Response::Bucket { links }
                }
                Ok(None) => error(
                    ErrorCode::NotFound,
                    "no such bucket (never existed, or expired)",
                ),
                Err(e) => store_error(e),
            },
            Request::Delete { locator, token } => {
                match self.store.delete(locator, token.check(), now).await {
                    Ok(true) => Response::Deleted,
                    Ok(false) => error(
                        ErrorCode::NotFound,
                        "no link with this deletion token in this bucket",
                    ),
                    Err(e) => store_error(e),
                }
            }
        }
    }
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::QuotaExceeded { .. } => error(ErrorCode::QuotaExceeded, e.to_string()),
        StoreError::Storage(_) => {
            tracing::warn!(error = %e, "storage failure");
            error(
                ErrorCode::StorageFailure,
                "storage failure on the server; nothing was stored",
            )
        }
        StoreError::Closed => error(ErrorCode::ShuttingDown, "server is shutting down"),
        _ => {
            tracing::error!(error = %e, "store error");
            error(ErrorCode::Internal, "internal server error")
        }
    }
}
