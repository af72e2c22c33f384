//! The answer channel: the accepter's sealed reply to a link that expects one.
//!
//! A link sealed in format 2 carries the initiator's X25519 public key `I` (fresh for each
//! offer). The accepter, having opened it with the link key `K`, draws an ephemeral key pair
//! `(b, B)`, seals its answer under a key that needs both `K` and the X25519 secret `X25519(b, I)`,
//! and leaves it in a mailbox whose address only holders of `K` and `I` can compute. The
//! initiator fetches the mailbox and opens the answer with `i`. Once the initiator has dropped
//! `i` and the accepter `b` (both are zeroized), nobody — not even someone who later learns the
//! passphrase, the link and everything the server ever stored — can open the answer: it is
//! forward-secret.
//!
//! ```text
//! mailbox    = SHA3-256("rdv mailbox v1"       || K || I)
//! header key = SHA3-256("rdv answer header v1" || K || I)
//! answer key = SHA3-256("rdv answer key v1"    || K || X25519(b, I) || I || B)
//! sealed answer (256) = nonce (24) || B XOR ChaCha20(header key, nonce[0..12]) (32)
//!                       || XChaCha20-Poly1305(answer key, nonce, AD) ciphertext (184) || tag (16)
//! AD = "rdv sealed answer v1" || mailbox || the 32 hidden bytes of B
//! plaintext (184) = version 1 (1) || length (2, big-endian) || payload || zero padding
//! ```
//!
//! `B` is hidden because an X25519 public key is recognisable: hidden, a sealed answer is 256
//! bytes that look random to anyone without `K`, like the filler a server returns for an empty
//! mailbox. An X25519 result of all zeros (a low-order point chosen by a forger) is refused.
//!
//! A multi-server link sealed in format 3 has a mailbox of its own on each server, named after
//! that copy's place `j` in the link (0 for the link's own server, then its mirrors in order; one
//! byte), and an answer sealed for each (its own `b` and nonce): servers that compare notes see
//! neither a name nor 256 bytes in common. (Not after the copy's bucket: two servers' buckets
//! created in the same second have the same ID.)
//!
//! ```text
//! mailbox of copy j = SHA3-256("rdv mailbox per copy v1" || K || I || j)
//! ```

use super::kdf::LinkKey;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha3::{Digest, Sha3_256};
use std::fmt;
use zeroize::{Zeroize, Zeroizing};

/// Length of a sealed answer.
pub const SEALED_ANSWER_LEN: usize = 256;
/// Length of the hidden public key in a sealed answer.
const HIDDEN_KEY_LEN: usize = 32;
/// Offset of the ciphertext.
const CT_START: usize = super::seal::NONCE_LEN + HIDDEN_KEY_LEN;
/// Plaintext length.
pub const ANSWER_PLAINTEXT_LEN: usize =
    SEALED_ANSWER_LEN - super::seal::NONCE_LEN - HIDDEN_KEY_LEN - super::seal::TAG_LEN;
/// Plaintext header: version and length.
const HEADER_LEN: usize = 3;
/// The longest answer payload.
pub const MAX_ANSWER: usize = ANSWER_PLAINTEXT_LEN - HEADER_LEN;
/// Plaintext format version.
const ANSWER_VERSION: u8 = 1;

const MAILBOX_LABEL: &[u8] = b"rdv mailbox v1";
const COPY_MAILBOX_LABEL: &[u8] = b"rdv mailbox per copy v1";
const HEADER_LABEL: &[u8] = b"rdv answer header v1";
const KEY_LABEL: &[u8] = b"rdv answer key v1";
/// Associated data label of a sealed answer.
pub const ANSWER_AD: &[u8] = b"rdv sealed answer v1";

/// The initiator's answer secret: an X25519 secret key, fresh for each offer, kept until the
/// answer is collected. Zeroized on drop; `Debug` is redacted.
pub struct AnswerSecret(x25519_dalek::StaticSecret);

impl AnswerSecret {
    /// Wrap 32 random bytes (clamped as X25519 requires when used).
    pub fn from_bytes(mut b: [u8; 32]) -> Self {
        let s = AnswerSecret(x25519_dalek::StaticSecret::from(b));
        b.zeroize();
        s
    }

    /// The raw secret bytes (to keep them in a state file; a secret).
    pub fn expose(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// The matching public key, which goes into the sealed link.
    pub fn public(&self) -> AnswerPublic {
        AnswerPublic(*x25519_dalek::PublicKey::from(&self.0).as_bytes())
    }
}

impl fmt::Debug for AnswerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AnswerSecret([redacted])")
    }
}

/// The initiator's answer public key, carried inside a format-2 sealed link.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AnswerPublic([u8; 32]);

impl AnswerPublic {
    /// Wrap raw key bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        AnswerPublic(b)
    }
    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for AnswerPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not a secret, but it ties a log line to one offer.
        f.write_str("AnswerPublic([redacted])")
    }
}

/// Where an answer is left: a 32-byte address computed from the link key and the initiator's
/// answer key. `Debug` is redacted: it ties the accepter's and the initiator's requests together.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MailboxAddr(#[serde(with = "super::bytes")] pub [u8; 32]);

impl fmt::Debug for MailboxAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MailboxAddr([redacted])")
    }
}

/// A sealed answer: 256 bytes that look random to anyone without the link key.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedAnswer(#[serde(with = "super::bytes")] pub [u8; SEALED_ANSWER_LEN]);

impl fmt::Debug for SealedAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealedAnswer(..)")
    }
}

/// Why an answer could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerSealError {
    /// The answer does not fit; it is never truncated.
    #[error("the answer is {len} bytes, an answer holds at most {MAX_ANSWER}")]
    TooLong {
        /// The answer's length.
        len: usize,
    },
    /// The initiator's key in the link is a low-order point: no secret can be agreed with it.
    /// Only a forged link carries one.
    #[error("the link's answer key is invalid (a forged link?)")]
    BadKey,
}

/// Why a sealed answer did not open. Deliberately opaque: a forged, corrupted or substituted
/// answer, filler from an empty mailbox and a wrong key all look the same.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the answer does not open with this offer's keys")]
pub struct AnswerOpenError;

fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha3_256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// How a link's mailboxes are named: one name on every server (format 2), or a name of its
/// own for each copy of a multi-server link (format 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailboxNames {
    /// One mailbox name, [`mailbox`], on every server of the link.
    Shared,
    /// A mailbox per copy, [`copy_mailbox`], each with its own sealed answer.
    PerCopy,
}

/// The mailbox address for a link key and the initiator's answer key.
pub fn mailbox(key: &LinkKey, to: &AnswerPublic) -> MailboxAddr {
    MailboxAddr(hash(&[MAILBOX_LABEL, &key.0, &to.0]))
}

/// The mailbox address of copy `index` of a multi-server link (its place in the link: 0 for
/// the link's own server, then the mirrors in order).
pub fn copy_mailbox(key: &LinkKey, to: &AnswerPublic, index: u8) -> MailboxAddr {
    MailboxAddr(hash(&[COPY_MAILBOX_LABEL, &key.0, &to.0, &[index]]))
}

/// The mailbox address of copy `index`, named as `names` says.
pub fn mailbox_of(key: &LinkKey, to: &AnswerPublic, names: MailboxNames, index: u8) -> MailboxAddr {
    match names {
        MailboxNames::Shared => mailbox(key, to),
        MailboxNames::PerCopy => copy_mailbox(key, to, index),
    }
}

/// XOR the 32 header bytes with the keystream that hides the accepter's key.
fn mask_header(key: &LinkKey, to: &AnswerPublic, nonce: &[u8], header: &mut [u8]) {
    let hk = Zeroizing::new(hash(&[HEADER_LABEL, &key.0, &to.0]));
    let mut stream = ChaCha20::new(
        chacha20::Key::from_slice(&hk[..]),
        chacha20::Nonce::from_slice(&nonce[..12]),
    );
    stream.apply_keystream(header);
}

fn answer_key(
    key: &LinkKey,
    shared: &x25519_dalek::SharedSecret,
    to: &AnswerPublic,
    from: &[u8; 32],
) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(hash(&[KEY_LABEL, &key.0, shared.as_bytes(), &to.0, from]))
}

fn ad(mailbox: &MailboxAddr, hidden: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(ANSWER_AD.len() + 64);
    ad.extend_from_slice(ANSWER_AD);
    ad.extend_from_slice(&mailbox.0);
    ad.extend_from_slice(hidden);
    ad
}

/// Seal `answer` for the initiator whose key `to` came in the link sealed under `key`.
/// `ephemeral` (the accepter's secret `b`) and `nonce` are random; `ephemeral` is consumed and
/// zeroized. Returns the mailbox to leave it in and the sealed answer.
pub fn seal_answer(
    key: &LinkKey,
    to: &AnswerPublic,
    answer: &[u8],
    ephemeral: [u8; 32],
    nonce: [u8; super::seal::NONCE_LEN],
) -> Result<(MailboxAddr, SealedAnswer), AnswerSealError> {
    let mb = mailbox(key, to);
    seal_answer_for(key, to, mb, answer, ephemeral, nonce).map(|sealed| (mb, sealed))
}

/// [`seal_answer`] for the mailbox `mb` (bound into the sealed answer: it opens from that
/// mailbox only), such as a copy's own ([`copy_mailbox`]).
pub fn seal_answer_for(
    key: &LinkKey,
    to: &AnswerPublic,
    mb: MailboxAddr,
    answer: &[u8],
    ephemeral: [u8; 32],
    nonce: [u8; super::seal::NONCE_LEN],
) -> Result<SealedAnswer, AnswerSealError> {
    let b = AnswerSecret::from_bytes(ephemeral);
    if answer.len() > MAX_ANSWER {
        return Err(AnswerSealError::TooLong { len: answer.len() });
    }
    let from = b.public();
    let shared = b.0.diffie_hellman(&x25519_dalek::PublicKey::from(to.0));
    if !shared.was_contributory() {
        return Err(AnswerSealError::BadKey);
    }
    let mut out = [0u8; SEALED_ANSWER_LEN];
    out[..super::seal::NONCE_LEN].copy_from_slice(&nonce);
    out[super::seal::NONCE_LEN..CT_START].copy_from_slice(&from.0);
    mask_header(key, to, &nonce, &mut out[super::seal::NONCE_LEN..CT_START]);
    let mut pt = Zeroizing::new([0u8; ANSWER_PLAINTEXT_LEN]);
    pt[0] = ANSWER_VERSION;
    pt[1..3].copy_from_slice(&(answer.len() as u16).to_be_bytes());
    pt[HEADER_LEN..HEADER_LEN + answer.len()].copy_from_slice(answer);
    let ak = answer_key(key, &shared, to, &from.0);
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&ak[..]));
    let tag = cipher
        .encrypt_in_place_detached(
            XNonce::from_slice(&nonce),
            &ad(&mb, &out[super::seal::NONCE_LEN..CT_START]),
            &mut pt[..],
        )
        .map_err(|_| AnswerSealError::TooLong { len: answer.len() })?;
    out[CT_START..CT_START + ANSWER_PLAINTEXT_LEN].copy_from_slice(&pt[..]);
    out[CT_START + ANSWER_PLAINTEXT_LEN..].copy_from_slice(&tag);
    Ok(SealedAnswer(out))
}

/// Open a sealed answer with the initiator's secret and the link key it offered under.
pub fn open_answer(
    key: &LinkKey,
    secret: &AnswerSecret,
    sealed: &SealedAnswer,
) -> Result<Zeroizing<Vec<u8>>, AnswerOpenError> {
    open_answer_from(key, secret, mailbox(key, &secret.public()), sealed)
}

/// [`open_answer`] for an answer fetched from the mailbox `mb` (a copy's own, for a link with a
/// mailbox per copy): an answer sealed for another mailbox does not open.
pub fn open_answer_from(
    key: &LinkKey,
    secret: &AnswerSecret,
    mb: MailboxAddr,
    sealed: &SealedAnswer,
) -> Result<Zeroizing<Vec<u8>>, AnswerOpenError> {
    let to = secret.public();
    let b = &sealed.0;
    let nonce = &b[..super::seal::NONCE_LEN];
    let hidden = &b[super::seal::NONCE_LEN..CT_START];
    let mut from = [0u8; 32];
    from.copy_from_slice(hidden);
    mask_header(key, &to, nonce, &mut from);
    let shared = secret
        .0
        .diffie_hellman(&x25519_dalek::PublicKey::from(from));
    if !shared.was_contributory() {
        return Err(AnswerOpenError);
    }
    let ak = answer_key(key, &shared, &to, &from);
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&ak[..]));
    let mut pt = Zeroizing::new([0u8; ANSWER_PLAINTEXT_LEN]);
    pt.copy_from_slice(&b[CT_START..CT_START + ANSWER_PLAINTEXT_LEN]);
    let tag = Tag::from_slice(&b[CT_START + ANSWER_PLAINTEXT_LEN..]);
    cipher
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            &ad(&mb, hidden),
            &mut pt[..],
            tag,
        )
        .map_err(|_| AnswerOpenError)?;
    if pt[0] != ANSWER_VERSION {
        return Err(AnswerOpenError);
    }
    let len = usize::from(u16::from_be_bytes([pt[1], pt[2]]));
    if len > MAX_ANSWER || pt[HEADER_LEN + len..].iter().any(|&z| z != 0) {
        return Err(AnswerOpenError);
    }
    Ok(Zeroizing::new(pt[HEADER_LEN..HEADER_LEN + len].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> LinkKey {
        LinkKey::from_bytes([b; 32])
    }

    #[test]
    fn answer_round_trips_at_every_edge_length() {
        let i = AnswerSecret::from_bytes([7; 32]);
        for len in [0, 1, 100, MAX_ANSWER] {
            let msg = vec![0xa5; len];
            let (mb, s) = seal_answer(&key(1), &i.public(), &msg, [8; 32], [9; 24]).unwrap();
            assert_eq!(mb, mailbox(&key(1), &i.public()));
            assert_eq!(&open_answer(&key(1), &i, &s).unwrap()[..], &msg[..]);
        }
        assert_eq!(
            seal_answer(&key(1), &i.public(), &[0; MAX_ANSWER + 1], [8; 32], [9; 24]),
            Err(AnswerSealError::TooLong {
                len: MAX_ANSWER + 1
            })
        );
    }

    #[test]
    fn wrong_secret_wrong_link_key_and_every_bit_flip_fail() {
        let i = AnswerSecret::from_bytes([7; 32]);
        let (_, s) = seal_answer(&key(1), &i.public(), b"hi", [8; 32], [9; 24]).unwrap();
        assert!(open_answer(&key(2), &i, &s).is_err());
        assert!(open_answer(&key(1), &AnswerSecret::from_bytes([6; 32]), &s).is_err());
        for bit in 0..SEALED_ANSWER_LEN * 8 {
            let mut t = s;
            t.0[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                open_answer(&key(1), &i, &t),
                Err(AnswerOpenError),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn debug_is_redacted() {
        let i = AnswerSecret::from_bytes([0xab; 32]);
        let (mb, s) = seal_answer(&key(1), &i.public(), b"hi", [8; 32], [9; 24]).unwrap();
        for shown in [
            format!("{i:?}"),
            format!("{:?}", i.public()),
            format!("{mb:?}"),
            format!("{s:?}"),
        ] {
            // No byte string of any of them: no run of hex digits or of the raw numbers.
            assert!(
                !shown.contains("171") && !shown.contains("ab, ab"),
                "{shown}"
            );
            assert!(shown.len() < 40, "{shown}");
        }
    }

    #[test]
    fn mailbox_depends_on_both_link_key_and_initiator_key() {
        let (a, b) = (
            AnswerSecret::from_bytes([1; 32]).public(),
            AnswerSecret::from_bytes([2; 32]).public(),
        );
        assert_ne!(mailbox(&key(1), &a), mailbox(&key(2), &a));
        assert_ne!(mailbox(&key(1), &a), mailbox(&key(1), &b));
    }

    /// Each copy of a format-3 link has a mailbox of its own, none of them the shared one, and
    /// an answer sealed for one copy's mailbox opens from that mailbox only: moved to another
    /// server's mailbox (or read as a shared-mailbox answer) it does not.
    #[test]
    fn copies_have_mailboxes_of_their_own_and_answers_bound_to_them() {
        let i = AnswerSecret::from_bytes([7; 32]);
        let (m1, m2) = (
            copy_mailbox(&key(1), &i.public(), 0),
            copy_mailbox(&key(1), &i.public(), 1),
        );
        assert_ne!(m1, m2);
        assert_ne!(m1, mailbox(&key(1), &i.public()));
        assert_ne!(m1, copy_mailbox(&key(2), &i.public(), 0));
        assert_eq!(
            m1,
            mailbox_of(&key(1), &i.public(), MailboxNames::PerCopy, 0)
        );
        assert_eq!(
            mailbox_of(&key(1), &i.public(), MailboxNames::Shared, 0),
            mailbox(&key(1), &i.public())
        );
        let s = seal_answer_for(&key(1), &i.public(), m1, b"hi", [8; 32], [9; 24]).unwrap();
        assert_eq!(&open_answer_from(&key(1), &i, m1, &s).unwrap()[..], b"hi");
        assert_eq!(open_answer_from(&key(1), &i, m2, &s), Err(AnswerOpenError));
        assert_eq!(open_answer(&key(1), &i, &s), Err(AnswerOpenError));
    }

    #[test]
    fn the_accepter_key_is_hidden_and_low_order_keys_are_refused() {
        let i = AnswerSecret::from_bytes([7; 32]);
        let e = AnswerSecret::from_bytes([8; 32]).public();
        let (_, s) = seal_answer(&key(1), &i.public(), b"hi", [8; 32], [9; 24]).unwrap();
        assert_ne!(&s.0[24..56], e.as_bytes());
        // The identity point: X25519 with it gives all zeros.
        let zero = AnswerPublic::from_bytes([0; 32]);
        assert_eq!(
            seal_answer(&key(1), &zero, b"hi", [8; 32], [9; 24]),
            Err(AnswerSealError::BadKey)
        );
        // A forged answer whose hidden key unmasks to the identity point is refused too.
        let mut forged = [0u8; SEALED_ANSWER_LEN];
        mask_header(&key(1), &i.public(), &[0; 24], &mut forged[24..56]);
        assert!(open_answer(&key(1), &i, &SealedAnswer(forged)).is_err());
    }
}
