//! One connection's IO: read frames, feed them to the [`Session`], do what it says. Every decision
//! is the session's; this file only reads, writes, waits and logs.

use super::limits::{NoSlot, Slot, Source};
use super::session::{self, Session, Step};
use super::Server;
use crate::framed::{read_frame_body, write_msg, FrameIoError};
use crate::proto::wire::FrameError;
use crate::proto::Response;
use crate::store::BucketStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// How long a refused connection gets to read its `Busy` answer.
const BUSY_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

impl<S: BucketStore> Server<S> {
    /// Serve one stream to its end, as a source of its own. The stream waits in the waiting room
    /// until its first complete request, then takes a connection slot, waiting in line while
    /// every slot is taken (see `limits.rs`); when none comes in time the peer gets `Busy` and
    /// the stream is closed.
    pub async fn serve_stream<T: AsyncRead + AsyncWrite + Unpin + Send>(
        self: Arc<Self>,
        stream: T,
    ) {
        self.serve_stream_from(stream, Source::new()).await
    }

    /// Serve one stream of `source` (every stream of one onion circuit shares one source).
    pub async fn serve_stream_from<T: AsyncRead + AsyncWrite + Unpin + Send>(
        self: Arc<Self>,
        mut stream: T,
        source: Source,
    ) {
        self.metrics.connection();
        let slot = self.slots.arrive();
        if !slot.admitted() {
            tracing::debug!("connection closed: the waiting room is full of connections in line");
            return;
        }
        if let Err(e) = self.connection_loop(&mut stream, &source, &slot).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }

    /// Tell a connection that yields its slot to a newcomer, and close it. A peer that does not
    /// read gets little time: its slot is somebody else's already.
    async fn send_evicted<T: AsyncWrite + Unpin>(
        &self,
        stream: &mut T,
    ) -> Result<(), FrameIoError> {
        let _ = tokio::time::timeout(
            BUSY_WRITE_TIMEOUT,
            write_msg(stream, &session::evicted(), u32::MAX),
        )
        .await;
        Ok(())
    }

    /// Write one response, giving a peer that does not read at most the idle timeout; a peer
    /// that has not taken it after [`super::limits::STALL`] loses its slot to a connection in
    /// line, if there is one.
    async fn send<T: AsyncWrite + Unpin>(
        &self,
        stream: &mut T,
        msg: &Response,
        slot: &Slot<'_>,
    ) -> Result<(), FrameIoError> {
        slot.sending();
        let write =
            tokio::time::timeout(self.config.idle_timeout, write_msg(stream, msg, u32::MAX));
        let gone = || {
            FrameIoError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the peer does not read its answers",
            ))
        };
        tokio::select! {
            r = write => r.unwrap_or_else(|_| Err(gone())),
            _ = slot.evicted() => Err(gone()),
        }
    }

    async fn connection_loop<T: AsyncRead + AsyncWrite + Unpin + Send>(
        &self,
        stream: &mut T,
        source: &Source,
        slot: &Slot<'_>,
    ) -> Result<(), FrameIoError> {
        let mut session = Session::new(
            self.config.rate_per_sec,
            self.config.rate_burst,
            Instant::now(),
        );
        let mut shutdown = self.shutdown_rx.clone();
        loop {
            let step = if *shutdown.borrow() {
                session.on_shutdown()
            } else {
                slot.idle();
                // The whole frame must arrive within the idle timeout: trickling bytes does not
                // keep a connection alive.
                let read = tokio::time::timeout(
                    self.config.idle_timeout,
                    read_frame_body(stream, self.config.max_frame),
                );
                let read = tokio::select! {
                    r = read => r,
                    _ = shutdown.changed() => continue,
                    _ = slot.evicted() => return self.send_evicted(stream).await,
                };
                match read {
                    Err(_elapsed) => session.on_idle_timeout(),
                    Ok(Err(FrameIoError::Frame(FrameError::TooLarge { len, max }))) => {
                        session.on_too_large(len, max)
                    }
                    // Closed between frames, or broken in the middle of one: nobody to answer.
                    Ok(Err(e)) => return Err(e),
                    Ok(Ok(body)) => {
                        match slot.busy().await {
                            Ok(true) => {}
                            Ok(false) => return self.send_evicted(stream).await,
                            Err(NoSlot) => {
                                tracing::debug!(
                                    "connection refused: no connection slot came free in time"
                                );
                                let _ = tokio::time::timeout(
                                    BUSY_WRITE_TIMEOUT,
                                    write_msg(stream, &session::busy(), u32::MAX),
                                )
                                .await;
                                return Ok(());
                            }
                        }
                        let step = session.on_frame(&body, Instant::now());
                        log_step(&step, body.len());
                        step
                    }
                }
            };
            match step {
                Step::Reply(r) => self.send(stream, &r, slot).await?,
                Step::ReplyAndClose(r) => return self.send(stream, &r, slot).await,
                Step::Handle(req) => {
                    let kind = req.kind();
                    let resp = self.handle(req, session.version(), source).await;
                    match &resp {
                        Response::Error { code, .. } => {
                            tracing::debug!(request = kind, ?code, "request refused")
                        }
                        r => {
                            tracing::debug!(request = kind, response = r.kind(), "request answered")
                        }
                    }
                    self.send(stream, &resp, slot).await?;
                }
            }
        }
    }
}

/// Log what the session decided about a frame: request kinds and error codes, never contents.
fn log_step(step: &Step, bytes: usize) {
    match step {
        Step::Handle(req) => tracing::trace!(request = req.kind(), bytes, "request received"),
        Step::Reply(Response::Error { code, .. })
        | Step::ReplyAndClose(Response::Error { code, .. }) => {
            tracing::debug!(?code, bytes, "frame refused")
        }
        Step::Reply(r) | Step::ReplyAndClose(r) => {
            tracing::trace!(response = r.kind(), bytes, "frame answered")
        }
    }
}
