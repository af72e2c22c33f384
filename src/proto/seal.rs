//! Sealed links: the fixed-size encrypted blobs the server stores.
//!
//! Layout (256 bytes): `nonce (24) || ciphertext (216) || tag (16)`, XChaCha20-Poly1305 with the
//! associated data [`AD`]. The 216-byte plaintext is, in format 1, `version 1 (1) || payload
//! length (2, big-endian) || payload || zero padding`; in format 2 (a link that expects an
//! answer, see [`super::answer`]) `version 2 (1) || the initiator's X25519 public key (32) ||
//! payload length (2) || payload || zero padding`; format 3 is format 2 with version 3, for a
//! multi-server link whose copies each have a mailbox of their own. To anyone without the key a
//! sealed link is indistinguishable from 256 random bytes, whatever the payload's length or
//! format.

use super::answer::MailboxNames;
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
/// Plaintext header of format 1: version and payload length.
const HEADER_LEN: usize = 3;
/// Plaintext header of format 2: version, the initiator's answer key and payload length.
const HEADER_LEN_V2: usize = 3 + 32;
/// The longest payload a sealed link carries.
pub const MAX_PAYLOAD: usize = PLAINTEXT_LEN - HEADER_LEN;
/// The longest payload of a link that expects an answer (the initiator's key takes 32 bytes).
pub const MAX_PAYLOAD_WITH_ANSWER: usize = PLAINTEXT_LEN - HEADER_LEN_V2;
/// Plaintext format 1: the payload alone.
const PLAINTEXT_VERSION: u8 = 1;
/// Plaintext format 2: the payload and the initiator's answer key.
const PLAINTEXT_VERSION_ANSWER: u8 = 2;
/// Plaintext format 3: as format 2, with a mailbox per copy of a multi-server link.
const PLAINTEXT_VERSION_ANSWER_PER_COPY: u8 = 3;
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
    #[error("payload is {len} bytes, a sealed link holds at most {max}{}", if *.max == MAX_PAYLOAD_WITH_ANSWER { " when it expects an answer (the answer key takes 32)" } else { "" })]
    PayloadTooLong {
        /// The payload's length.
        len: usize,
        /// The most that fits.
        max: usize,
    },
}

/// What an opened link holds.
pub struct OpenedLink {
    /// The payload.
    pub payload: Payload,
    /// The initiator's answer key, when the link expects an answer (format 2 or 3).
    pub answer_to: Option<super::answer::AnswerPublic>,
    /// How its mailboxes are named: per copy in format 3, shared otherwise.
    pub mailboxes: MailboxNames,
}

/// Why a sealed link did not open. Deliberately opaque: wrong key, corruption and a blob of
/// another protocol all look the same.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the sealed link does not open with this key")]
pub struct OpenError;

/// Seal `payload` under `key` with the given random nonce (format 1).
pub fn seal(
    key: &LinkKey,
    payload: &[u8],
    nonce: [u8; NONCE_LEN],
) -> Result<SealedLink, SealError> {
    seal_with(key, payload, None, nonce)
}

/// Seal `payload` with the initiator's answer key inside (format 2): the accepter can answer.
pub fn seal_expecting_answer(
    key: &LinkKey,
    payload: &[u8],
    answer_to: &super::answer::AnswerPublic,
    nonce: [u8; NONCE_LEN],
) -> Result<SealedLink, SealError> {
    seal_with(key, payload, Some((answer_to, MailboxNames::Shared)), nonce)
}

/// [`seal_expecting_answer`] with the mailboxes named as `mailboxes` says: format 3 for a
/// mailbox per copy, format 2 for a shared one.
pub fn seal_expecting_answer_in(
    key: &LinkKey,
    payload: &[u8],
    answer_to: &super::answer::AnswerPublic,
    mailboxes: MailboxNames,
    nonce: [u8; NONCE_LEN],
) -> Result<SealedLink, SealError> {
    seal_with(key, payload, Some((answer_to, mailboxes)), nonce)
}

fn seal_with(
    key: &LinkKey,
    payload: &[u8],
    answer_to: Option<(&super::answer::AnswerPublic, MailboxNames)>,
    nonce: [u8; NONCE_LEN],
) -> Result<SealedLink, SealError> {
    let (header, max) = match answer_to {
        None => (HEADER_LEN, MAX_PAYLOAD),
        Some(_) => (HEADER_LEN_V2, MAX_PAYLOAD_WITH_ANSWER),
    };
    if payload.len() > max {
        return Err(SealError::PayloadTooLong {
            len: payload.len(),
            max,
        });
    }
    let mut pt = Zeroizing::new([0u8; PLAINTEXT_LEN]);
    match answer_to {
        None => pt[0] = PLAINTEXT_VERSION,
        Some((pk, names)) => {
            pt[0] = match names {
                MailboxNames::Shared => PLAINTEXT_VERSION_ANSWER,
                MailboxNames::PerCopy => PLAINTEXT_VERSION_ANSWER_PER_COPY,
            };
            pt[1..33].copy_from_slice(pk.as_bytes());
        }
    }
    pt[header - 2..header].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    pt[header..header + payload.len()].copy_from_slice(payload);
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&key.0));
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), AD, &mut pt[..])
        .map_err(|_| SealError::PayloadTooLong {
            len: payload.len(),
            max,
        })?;
    let mut out = [0u8; SEALED_LINK_LEN];
    out[..NONCE_LEN].copy_from_slice(&nonce);
    out[NONCE_LEN..NONCE_LEN + PLAINTEXT_LEN].copy_from_slice(&pt[..]);
    out[NONCE_LEN + PLAINTEXT_LEN..].copy_from_slice(&tag);
    Ok(SealedLink(out))
}

/// Open a sealed link (either format) and return its payload. Fails opaquely on a wrong key, any
/// corruption, or a malformed plaintext.
pub fn open(key: &LinkKey, link: &SealedLink) -> Result<Payload, OpenError> {
    open_link(key, link).map(|o| o.payload)
}

/// Open a sealed link (either format): the payload and, in format 2, the answer key.
pub fn open_link(key: &LinkKey, link: &SealedLink) -> Result<OpenedLink, OpenError> {
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&key.0));
    open_with(&cipher, link)
}

fn open_with(cipher: &XChaCha20Poly1305, link: &SealedLink) -> Result<OpenedLink, OpenError> {
    let b = &link.0;
    let nonce = XNonce::from_slice(&b[..NONCE_LEN]);
    let tag = Tag::from_slice(&b[NONCE_LEN + PLAINTEXT_LEN..]);
    let mut pt = Zeroizing::new([0u8; PLAINTEXT_LEN]);
    pt.copy_from_slice(&b[NONCE_LEN..NONCE_LEN + PLAINTEXT_LEN]);
    cipher
        .decrypt_in_place_detached(nonce, AD, &mut pt[..], tag)
        .map_err(|_| OpenError)?;
    let mailboxes = match pt[0] {
        PLAINTEXT_VERSION_ANSWER_PER_COPY => MailboxNames::PerCopy,
        _ => MailboxNames::Shared,
    };
    let (header, max, answer_to) = match pt[0] {
        PLAINTEXT_VERSION => (HEADER_LEN, MAX_PAYLOAD, None),
        PLAINTEXT_VERSION_ANSWER | PLAINTEXT_VERSION_ANSWER_PER_COPY => {
            let mut pk = [0u8; 32];
            pk.copy_from_slice(&pt[1..33]);
            (
                HEADER_LEN_V2,
                MAX_PAYLOAD_WITH_ANSWER,
                Some(super::answer::AnswerPublic::from_bytes(pk)),
            )
        }
        _ => return Err(OpenError),
    };
    let len = usize::from(u16::from_be_bytes([pt[header - 2], pt[header - 1]]));
    if len > max || pt[header + len..].iter().any(|&z| z != 0) {
        return Err(OpenError);
    }
    Ok(OpenedLink {
        payload: Zeroizing::new(pt[header..header + len].to_vec()),
        answer_to,
        mailboxes,
    })
}

/// Try every link of a bucket with one key; return the index and contents of the first that
/// opens. The cipher is keyed once for the whole bucket.
pub fn trial_open<'a>(
    key: &LinkKey,
    links: impl IntoIterator<Item = &'a SealedLink>,
) -> Option<(usize, OpenedLink)> {
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
                len: MAX_PAYLOAD + 1,
                max: MAX_PAYLOAD
            })
        );
        let pk = crate::proto::answer::AnswerSecret::from_bytes([9; 32]).public();
        assert_eq!(
            seal_expecting_answer(&key(1), &[0; MAX_PAYLOAD_WITH_ANSWER + 1], &pk, [0; 24]),
            Err(SealError::PayloadTooLong {
                len: MAX_PAYLOAD_WITH_ANSWER + 1,
                max: MAX_PAYLOAD_WITH_ANSWER
            })
        );
    }

    #[test]
    fn both_formats_open_and_only_format_2_carries_an_answer_key() {
        let pk = crate::proto::answer::AnswerSecret::from_bytes([9; 32]).public();
        for len in [0, 1, MAX_PAYLOAD_WITH_ANSWER] {
            let s = seal_expecting_answer(&key(1), &vec![0x5a; len], &pk, [4; 24]).unwrap();
            let o = open_link(&key(1), &s).unwrap();
            assert_eq!(o.payload.len(), len);
            assert_eq!(
                o.answer_to.as_ref().map(|k| *k.as_bytes()),
                Some(*pk.as_bytes())
            );
            assert_eq!(&open(&key(1), &s).unwrap()[..], &vec![0x5a; len][..]);
        }
        let v1 = seal(&key(1), b"x", [4; 24]).unwrap();
        assert!(open_link(&key(1), &v1).unwrap().answer_to.is_none());
        assert_eq!(
            open_link(&key(1), &v1).unwrap().mailboxes,
            MailboxNames::Shared
        );
    }

    /// Format 3 carries the answer key as format 2 does, and says the mailboxes are per copy;
    /// format 2 says they are shared.
    #[test]
    fn format_3_says_the_mailboxes_are_per_copy() {
        let pk = crate::proto::answer::AnswerSecret::from_bytes([9; 32]).public();
        for names in [MailboxNames::Shared, MailboxNames::PerCopy] {
            let s = seal_expecting_answer_in(&key(1), b"q", &pk, names, [4; 24]).unwrap();
            let o = open_link(&key(1), &s).unwrap();
            assert_eq!(o.mailboxes, names);
            assert_eq!(&o.payload[..], b"q");
            assert_eq!(o.answer_to.map(|k| *k.as_bytes()), Some(*pk.as_bytes()));
        }
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
        assert_eq!((i, &p.payload[..]), (37, &b"mine"[..]));
        assert!(trial_open(&key(2), &links).is_none());
    }
}
