//! Reading and writing frames on any async byte stream.

use crate::proto::wire::{self, FrameError, FRAME_HEADER_LEN};
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Errors of frame IO.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameIoError {
    /// The peer closed the stream between frames.
    #[error("connection closed")]
    Closed,
    /// Transport error (including a close in the middle of a frame).
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The frame was too large or malformed.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Read one frame body: the length is checked against `max` before the body is read.
pub async fn read_frame_body<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> Result<Vec<u8>, FrameIoError> {
    let mut body = Vec::new();
    read_frame_body_into(r, max, &mut body).await?;
    Ok(body)
}

/// Room reserved for a body before its bytes arrive: every request but a batch fits.
const FIRST_RESERVE: usize = 512;

/// [`read_frame_body`] into `body` (cleared first). The buffer grows with the bytes that
/// arrive, not with the length the header announces: a peer that announces the largest frame
/// and then sends a byte a second holds a few hundred bytes, not `max`.
pub async fn read_frame_body_into<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
    body: &mut Vec<u8>,
) -> Result<(), FrameIoError> {
    body.clear();
    let mut header = [0u8; FRAME_HEADER_LEN];
    // Distinguish a clean close between frames from a truncated frame.
    let n = r.read(&mut header).await?;
    if n == 0 {
        return Err(FrameIoError::Closed);
    }
    r.read_exact(&mut header[n..]).await?;
    let len = wire::parse_header(header, max)?;
    while body.len() < len {
        if body.len() == body.capacity() {
            // Double what arrived (512 bytes first), never past the announced length.
            let more = body.len().max(FIRST_RESERVE).min(len - body.len());
            body.reserve_exact(more);
        }
        let room = body.capacity().min(len) - body.len();
        let n = (&mut *r).take(room as u64).read_buf(body).await?;
        if n == 0 {
            return Err(FrameIoError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    Ok(())
}

/// Read and decode one message.
pub async fn read_msg<T: DeserializeOwned, R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> Result<T, FrameIoError> {
    let body = read_frame_body(r, max).await?;
    Ok(wire::decode_body(&body)?)
}

/// Encode and write one message.
pub async fn write_msg<T: Serialize, W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &T,
    max: u32,
) -> Result<(), FrameIoError> {
    let frame = wire::encode_frame(msg, max)?;
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::ReadBuf;

    /// Gives `data`, then nothing, ever (a slow-drip peer).
    struct Drip {
        data: Vec<u8>,
    }

    impl AsyncRead for Drip {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if self.data.is_empty() {
                return Poll::Pending;
            }
            let n = self.data.len().min(buf.remaining());
            buf.put_slice(&self.data[..n]);
            self.data.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    /// A peer announces the largest frame and sends ten bytes of it: what it holds on the
    /// server is about those bytes, not the announced size.
    #[tokio::test]
    async fn an_announced_frame_costs_only_what_arrived() {
        let max = wire::DEFAULT_MAX_FRAME;
        let mut data = max.to_be_bytes()[4 - FRAME_HEADER_LEN..].to_vec();
        data.extend_from_slice(&[0x42; 10]);
        let mut peer = Drip { data };
        let mut body = Vec::new();
        let r = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            read_frame_body_into(&mut peer, max, &mut body),
        )
        .await;
        assert!(r.is_err(), "the frame never completes");
        assert_eq!(body.len(), 10);
        assert!(body.capacity() <= 1024, "{} bytes held", body.capacity());
    }

    /// A whole frame read in small pieces ends in a buffer no larger than the frame.
    #[tokio::test]
    async fn a_frame_read_in_pieces_is_exact_and_holds_no_more_than_it() {
        let len = 20_000u32;
        let mut data = len.to_be_bytes().to_vec();
        data.extend((0..len).map(|i| i as u8));
        let (mut w, mut r) = tokio::io::duplex(97);
        let writer = tokio::spawn(async move { w.write_all(&data).await.unwrap() });
        let mut body = Vec::new();
        read_frame_body_into(&mut r, wire::DEFAULT_MAX_FRAME, &mut body)
            .await
            .unwrap();
        writer.await.unwrap();
        assert_eq!(body.len(), len as usize);
        assert!(body.iter().enumerate().all(|(i, b)| *b == i as u8));
        assert!(body.capacity() <= len as usize, "{}", body.capacity());
    }

    /// A frame cut short by the peer is an error, not a short body.
    #[tokio::test]
    async fn a_truncated_frame_is_an_error() {
        let mut data = 300u32.to_be_bytes()[4 - FRAME_HEADER_LEN..].to_vec();
        data.extend_from_slice(&[1; 100]);
        let r = read_frame_body(&mut &data[..], 1000).await;
        assert!(matches!(r, Err(FrameIoError::Io(_))), "{r:?}");
    }
}
