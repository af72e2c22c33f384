//! Bucket identifiers, locators and deletion tokens.

use serde::{Deserialize, Serialize};
use sha3::{Digest, Sha3_256};
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The most links a bucket holds.
pub const MAX_LINKS_PER_BUCKET: usize = 64;

/// Domain separation label of the locator hash.
const LOCATOR_LABEL: &[u8] = b"rdv locator v1";
/// Domain separation label of the per-server deletion tokens of a multi-server link.
const SERVER_TOKEN_LABEL: &[u8] = b"rdv server token v1";
/// Domain separation label of the deletion check hash.
const DELETE_LABEL: &[u8] = b"rdv delete v1";

/// A bucket's identity: the second it was created and how many buckets were created before it in
/// that same second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BucketId {
    /// Creation time, unix seconds.
    pub created: u64,
    /// Sequence number among the buckets created in the same second, from 0.
    pub seq: u16,
}

impl BucketId {
    /// The locator a client uses to fetch this bucket: SHA3-256 over a label, `created` (8 bytes
    /// big-endian) and `seq` (2 bytes big-endian). It hides the creation time from whoever sees
    /// the link.
    pub fn locator(&self) -> Locator {
        let mut h = Sha3_256::new();
        h.update(LOCATOR_LABEL);
        h.update(self.created.to_be_bytes());
        h.update(self.seq.to_be_bytes());
        Locator(h.finalize().into())
    }
}

impl fmt::Display for BucketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.created, self.seq)
    }
}

/// The hash of a bucket ID: the name under which a bucket is fetched.
///
/// Its `Debug` output is redacted: a locator in a log line would tie that line to a link.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Locator(#[serde(with = "super::bytes")] pub [u8; 32]);

impl fmt::Debug for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Locator([redacted])")
    }
}

/// A 32-byte secret the initiator keeps to delete its link later. Only its hash, the
/// [`DeleteCheck`], is stored on the server.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct DeleteToken(#[serde(with = "super::bytes")] [u8; 32]);

impl DeleteToken {
    /// Length of the token's text form (unpadded base64url).
    pub const TEXT_LEN: usize = 43;

    /// Wrap raw token bytes (random in real use).
    pub fn from_bytes(b: [u8; 32]) -> Self {
        DeleteToken(b)
    }

    /// The raw bytes.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The token as text: 43 characters of unpadded base64url.
    pub fn to_text(&self) -> zeroize::Zeroizing<String> {
        use base64::Engine;
        zeroize::Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0))
    }

    /// Parse the text form; `None` unless it is exactly 43 canonical base64url characters.
    pub fn parse(text: &str) -> Option<Self> {
        use base64::Engine;
        if text.len() != Self::TEXT_LEN {
            return None;
        }
        let v = zeroize::Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text)
                .ok()?,
        );
        let b: [u8; 32] = v.as_slice().try_into().ok()?;
        let t = DeleteToken(b);
        (*t.to_text() == text).then_some(t)
    }

    /// The token for the `index`-th server of a multi-server link: the token itself for the
    /// first (so single-server links are unchanged), SHA3-256 over a label, the token and the
    /// index (one byte) for the others, so no two servers can match their links by token.
    pub fn for_server(&self, index: u8) -> DeleteToken {
        if index == 0 {
            return self.clone();
        }
        let mut h = Sha3_256::new();
        h.update(SERVER_TOKEN_LABEL);
        h.update(self.0);
        h.update([index]);
        DeleteToken(h.finalize().into())
    }

    /// The check value the server stores with the link.
    pub fn check(&self) -> DeleteCheck {
        let mut h = Sha3_256::new();
        h.update(DELETE_LABEL);
        h.update(self.0);
        DeleteCheck(h.finalize().into())
    }
}

impl fmt::Debug for DeleteToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeleteToken([redacted])")
    }
}

/// SHA3-256 of a [`DeleteToken`], stored next to a link.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteCheck(#[serde(with = "super::bytes")] pub [u8; 32]);

impl fmt::Debug for DeleteCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeleteCheck([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locator_depends_on_both_fields() {
        let a = BucketId { created: 1, seq: 0 }.locator();
        let b = BucketId { created: 1, seq: 1 }.locator();
        let c = BucketId { created: 2, seq: 0 }.locator();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, BucketId { created: 1, seq: 0 }.locator());
    }

    #[test]
    fn debug_is_redacted() {
        let l = BucketId { created: 1, seq: 0 }.locator();
        assert_eq!(format!("{l:?}"), "Locator([redacted])");
        assert!(!format!("{:?}", DeleteToken::from_bytes([7; 32])).contains('7'));
    }

    #[test]
    fn token_text_round_trip_is_canonical() {
        let t = DeleteToken::from_bytes([0xA7; 32]);
        let text = t.to_text();
        assert_eq!(text.len(), DeleteToken::TEXT_LEN);
        assert_eq!(DeleteToken::parse(&text), Some(t));
        assert_eq!(DeleteToken::parse(&text[1..]), None);
        // The last character carries 4 unused bits: a stray one is not canonical.
        let mut odd = text.to_string();
        odd.pop();
        odd.push('5');
        assert_eq!(DeleteToken::parse(&odd), None);
    }
}
