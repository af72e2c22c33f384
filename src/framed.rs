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
    let mut header = [0u8; FRAME_HEADER_LEN];
    // Distinguish a clean close between frames from a truncated frame.
    let n = r.read(&mut header).await?;
    if n == 0 {
        return Err(FrameIoError::Closed);
    }
    r.read_exact(&mut header[n..]).await?;
    let len = wire::parse_header(header, max)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(body)
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
