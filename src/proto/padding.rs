//! Fetch padding: every fetch answer holds a full bucket of 64 entries, and every mailbox fetch
//! one sealed answer's worth of bytes.
//!
//! The entries past the real links are filler derived from a server secret and the locator, so
//! the same bucket always gets the same filler and comparing two answers does not reveal which
//! entries are real. Entry `i` is bytes `256·i .. 256·(i+1)` of the ChaCha20 keystream (RFC 8439,
//! zero nonce) under `SHA3-256("rdv filler v1" || secret || locator)`: a fixed, standard function,
//! so the filler never changes with an upgrade, and seekable, so only the entries needed are
//! computed (none for a full bucket).

use super::answer::{MailboxAddr, SealedAnswer, SEALED_ANSWER_LEN};
use super::bucket::{Locator, MAX_LINKS_PER_BUCKET};
use super::seal::{SealedLink, SEALED_LINK_LEN};
use super::stamp::{Stamp, STAMP_LEN};
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use chacha20::ChaCha20;
use sha3::{Digest, Sha3_256};
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The server's secret behind fetch padding: 32 random bytes kept in its database. Zeroized on
/// drop; `Debug` is redacted.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct FillerSecret([u8; 32]);

impl FillerSecret {
    /// Wrap raw bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        FillerSecret(b)
    }
    /// The raw bytes (to store them).
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for FillerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FillerSecret([redacted])")
    }
}

/// The filler entries `have..64` for the bucket at `locator`.
pub fn filler(secret: &FillerSecret, locator: &Locator, have: usize) -> Vec<SealedLink> {
    if have >= MAX_LINKS_PER_BUCKET {
        return Vec::new();
    }
    let mut h = Sha3_256::new();
    h.update(b"rdv filler v1");
    h.update(secret.0);
    h.update(locator.0);
    let mut key: [u8; 32] = h.finalize().into();
    let mut stream = ChaCha20::new(&key.into(), &[0u8; 12].into());
    key.zeroize();
    stream.seek((have * SEALED_LINK_LEN) as u64);
    (have..MAX_LINKS_PER_BUCKET)
        .map(|_| {
            let mut b = [0u8; SEALED_LINK_LEN];
            stream.apply_keystream(&mut b);
            SealedLink(b)
        })
        .collect()
}

/// The stamp a server shows for entry `index` of the bucket at `locator` when the entry has
/// none (filler, or a link stored without a stamp): 36 bytes of the ChaCha20 keystream (zero
/// nonce) under `SHA3-256("rdv stamp filler v1" || secret || locator)`, from byte `36 * index`.
/// Stable per bucket and position, like the filler links, and no valid stamp.
pub fn stamp_filler(secret: &FillerSecret, locator: &Locator, index: usize) -> Stamp {
    let mut h = Sha3_256::new();
    h.update(b"rdv stamp filler v1");
    h.update(secret.0);
    h.update(locator.0);
    let mut key: [u8; 32] = h.finalize().into();
    let mut stream = ChaCha20::new(&key.into(), &[0u8; 12].into());
    key.zeroize();
    stream.seek((index * STAMP_LEN) as u64);
    let mut b = [0u8; STAMP_LEN];
    stream.apply_keystream(&mut b);
    Stamp(b)
}

/// The filler a server answers for an empty mailbox: the first 256 bytes of the ChaCha20
/// keystream (zero nonce) under `SHA3-256("rdv answer filler v1" || secret || mailbox)`. Stable,
/// so fetching twice does not tell an empty mailbox from a full one.
pub fn answer_filler(secret: &FillerSecret, mailbox: &MailboxAddr) -> SealedAnswer {
    let mut h = Sha3_256::new();
    h.update(b"rdv answer filler v1");
    h.update(secret.0);
    h.update(mailbox.0);
    let mut key: [u8; 32] = h.finalize().into();
    let mut stream = ChaCha20::new(&key.into(), &[0u8; 12].into());
    key.zeroize();
    let mut b = [0u8; SEALED_ANSWER_LEN];
    stream.apply_keystream(&mut b);
    SealedAnswer(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filler_is_stable_and_positional() {
        let (secret, loc) = (FillerSecret([9; 32]), Locator([3; 32]));
        let all = filler(&secret, &loc, 0);
        assert_eq!(all.len(), MAX_LINKS_PER_BUCKET);
        // Entry i is the same whatever the number of real links in front of it.
        assert_eq!(filler(&secret, &loc, 10), all[10..].to_vec());
        assert_eq!(filler(&secret, &loc, 63), all[63..].to_vec());
        assert!(filler(&secret, &loc, 64).is_empty());
        assert_ne!(filler(&secret, &Locator([4; 32]), 0)[0], all[0]);
        assert_ne!(filler(&FillerSecret([8; 32]), &loc, 0)[0], all[0]);
    }

    #[test]
    fn answer_filler_is_stable_and_per_mailbox() {
        let (secret, mb) = (FillerSecret([9; 32]), MailboxAddr([3; 32]));
        assert_eq!(answer_filler(&secret, &mb), answer_filler(&secret, &mb));
        assert_ne!(
            answer_filler(&secret, &mb),
            answer_filler(&secret, &MailboxAddr([4; 32]))
        );
        // Not the bucket filler under the same bytes: another label.
        assert_ne!(
            answer_filler(&secret, &mb).0,
            filler(&secret, &Locator([3; 32]), 0)[0].0
        );
    }
}
