//! Sealed links: the fixed-size encrypted blobs the server stores.
//!
//! Layout (256 bytes): `nonce (24) || ciphertext (216) || tag (16)`, XChaCha20-Poly1305 with the
//! associated data [`AD`]. The 216-byte plaintext is `version (1) || payload length (2, big-endian)
//! || payload || zero padding`. To anyone without the key a sealed link is indistinguishable from
//! 256 random bytes, whatever the payload's length.

use super::kdf::LinkKey;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroizing;

/// Size of a sealed link on the wire and on disk.
pub const SEALED_LINK_LEN: usize = 256;
/// Nonce length (XChaCha20).
pub const NONCE_LEN: usize = 24;
/// Authentication tag length (Poly1305).
pub const TAG_LEN: usize = 16;
/// Plaintext length.
pub const PLAINTEXT_LEN: usize = SEALED_LINK_LEN - NONCE_LEN - TAG_LEN;
/// Plaintext header: format version and payload length.
const HEADER_LEN: usize = 3;
/// The longest payload a sealed link carries.
pub const MAX_PAYLOAD: usize = PLAINTEXT_LEN - HEADER_LEN;
/// Plaintext format version.
const PLAINTEXT_VERSION: u8 = 1;
/// Associated data: binds the blob to this protocol and version.
pub const AD: &[u8] = b"rdv sealed link v1";

/// A sealed link: 256 opaque bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedLink(#[serde(with = "super::bytes")] pub [u8; SEALED_LINK_LEN]);

impl fmt::Debug for SealedLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealedLink(256 bytes)")
    }
}

/// An opened payload. Zeroized on drop.
pub type Payload = Zeroizing<Vec<u8>>;

/// Why a payload could not be sealed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    /// The payload does not fit; it is never truncated.
    #[error("payload is {len} bytes, a sealed link holds at most {MAX_PAYLOAD}")]
    PayloadTooLong {
        /// The payload's length.
        len: usize,
    },
}

/// Why a sealed link did not open. Deliberately opaque: wrong key, corruption and a blob of
/// another protocol all look the same.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the sealed link does not open with this key")]
pub struct OpenError;

/// Seal `payload` under `key` with the given random nonce.
pub fn seal(
    key: &LinkKey,
    payload: &[u8],
    nonce: [u8; NONCE_LEN],
) -> Result<SealedLink, SealError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(SealError::PayloadTooLong { len: payload.len() });
    }
    let mut pt = Zeroizing::new([0u8; PLAINTEXT_LEN]);
    pt[0] = PLAINTEXT_VERSION;
    pt[1..3].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    pt[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&key.0));
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), AD, &mut pt[..])
        .map_err(|_| SealError::PayloadTooLong { len: payload.len() })?;
    let mut out = [0u8; SEALED_LINK_LEN];
    out[..NONCE_LEN].copy_from_slice(&nonce);
    out[NONCE_LEN..NONCE_LEN + PLAINTEXT_LEN].copy_from_slice(&pt[..]);
    out[NONCE_LEN + PLAINTEXT_LEN..].copy_from_slice(&tag);
    Ok(SealedLink(out))
}

/// Open a sealed link. Fails opaquely on a wrong key, any corruption, or a malformed plaintext.
pub fn open(key: &LinkKey, link: &SealedLink) -> Result<Payload, OpenError> {
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&key.0));
    open_with(&cipher, link)
}

fn open_with(cipher: &XChaCha20Poly1305, link: &SealedLink) -> Result<Payload, OpenError> {
    let b = &link.0;
    let nonce = XNonce::from_slice(&b[..NONCE_LEN]);
    let tag = Tag::from_slice(&b[NONCE_LEN + PLAINTEXT_LEN..]);
    let mut pt = Zeroizing::new([0u8; PLAINTEXT_LEN]);
    pt.copy_from_slice(&b[NONCE_LEN..NONCE_LEN + PLAINTEXT_LEN]);
    cipher
        .decrypt_in_place_detached(nonce, AD, &mut pt[..], tag)
        .map_err(|_| OpenError)?;
    if pt[0] != PLAINTEXT_VERSION {
        return Err(OpenError);
    }
    let len = usize::from(u16::from_be_bytes([pt[1], pt[2]]));
    if len > MAX_PAYLOAD || pt[HEADER_LEN + len..].iter().any(|&z| z != 0) {
        return Err(OpenError);
    }
    Ok(Zeroizing::new(pt[HEADER_LEN..HEADER_LEN + len].to_vec()))
}

/// Try every link of a bucket with one key; return the index and payload of the first that opens.
/// The cipher is keyed once for the whole bucket.
pub fn trial_open<'a>(
    key: &LinkKey,
    links: impl IntoIterator<Item = &'a SealedLink>,
) -> Option<(usize, Payload)> {
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&key.0));
    links
        .into_iter()
        .enumerate()
        .find_map(|(i, l)| open_with(&cipher, l).ok().map(|p| (i, p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> LinkKey {
        LinkKey::from_bytes([b; 32])
    }

    #[test]
    fn seal_open_round_trip_all_lengths() {
        for len in [0, 1, 100, MAX_PAYLOAD] {
            let payload = vec![0xA5; len];
            let s = seal(&key(1), &payload, [9; 24]).unwrap();
            assert_eq!(&open(&key(1), &s).unwrap()[..], &payload[..]);
        }
    }

    #[test]
    fn too_long_is_an_error() {
        assert_eq!(
            seal(&key(1), &[0; MAX_PAYLOAD + 1], [0; 24]),
            Err(SealError::PayloadTooLong {
                len: MAX_PAYLOAD + 1
            })
        );
    }

    #[test]
    fn wrong_key_and_any_bit_flip_fail() {
        let s = seal(&key(1), b"hello", [3; 24]).unwrap();
        assert_eq!(open(&key(2), &s), Err(OpenError));
        for i in [0, 23, 24, 100, 239, 240, 255] {
            let mut c = s.clone();
            c.0[i] ^= 1;
            assert_eq!(open(&key(1), &c), Err(OpenError), "flip at {i}");
        }
    }

    #[test]
    fn trial_open_finds_the_one() {
        let mut links: Vec<_> = (0..64u8)
            .map(|i| seal(&key(i + 10), b"other", [i; 24]).unwrap())
            .collect();
        links[37] = seal(&key(1), b"mine", [0; 24]).unwrap();
        let (i, p) = trial_open(&key(1), &links).unwrap();
        assert_eq!((i, &p[..]), (37, &b"mine"[..]));
        assert!(trial_open(&key(2), &links).is_none());
    }
}
