//! The stored form of buckets and answers (postcard), the same in every backend.
//!
//! A bucket is `(id, [(link, check)])` as protocol version 2 stored it, followed, when any of
//! its links came with a stamp, by `[Option<stamp>]` with one element per link. A bucket stored
//! before stamps existed ends after its links: it decodes with no stamps, so no migration is
//! needed.

use crate::proto::{BucketId, DeleteCheck, SealedLink, Stamp};
use crate::store::{StoreError, StoredAnswer, StoredBucket, StoredLink};
use serde::{Deserialize, Serialize};

/// The part of a stored bucket that every version has.
#[derive(Serialize, Deserialize)]
struct Head {
    id: BucketId,
    links: Vec<HeadLink>,
}

#[derive(Serialize, Deserialize)]
struct HeadLink {
    link: SealedLink,
    check: DeleteCheck,
}

/// Decode one stored bucket.
pub(crate) fn decode(bytes: &[u8]) -> Result<StoredBucket, StoreError> {
    let (head, rest): (Head, &[u8]) = postcard::take_from_bytes(bytes)?;
    let stamps: Vec<Option<Stamp>> = if rest.is_empty() {
        vec![None; head.links.len()]
    } else {
        let (stamps, tail): (Vec<Option<Stamp>>, &[u8]) = postcard::take_from_bytes(rest)?;
        if stamps.len() != head.links.len() || !tail.is_empty() {
            return Err(StoreError::Corrupt {
                what: "a stored bucket's stamps do not match its links",
                source: None,
            });
        }
        stamps
    };
    Ok(StoredBucket {
        id: head.id,
        links: head
            .links
            .into_iter()
            .zip(stamps)
            .map(|(l, stamp)| StoredLink {
                link: l.link,
                check: l.check,
                stamp,
            })
            .collect(),
    })
}

/// Encode one bucket for storage.
pub(crate) fn encode(b: &StoredBucket) -> Result<Vec<u8>, StoreError> {
    let fail = |e| StoreError::corrupt("a bucket does not encode", e);
    let head = Head {
        id: b.id,
        links: b
            .links
            .iter()
            .map(|l| HeadLink {
                link: l.link.clone(),
                check: l.check,
            })
            .collect(),
    };
    let mut out = postcard::to_allocvec(&head).map_err(fail)?;
    if b.links.iter().any(|l| l.stamp.is_some()) {
        let stamps: Vec<Option<Stamp>> = b.links.iter().map(|l| l.stamp).collect();
        out.extend(postcard::to_allocvec(&stamps).map_err(fail)?);
    }
    Ok(out)
}

/// Decode one stored answer.
pub(crate) fn decode_answer(bytes: &[u8]) -> Result<StoredAnswer, StoreError> {
    postcard::from_bytes(bytes)
        .map_err(|e| StoreError::corrupt("a stored answer does not decode", e))
}

/// Encode one answer for storage.
pub(crate) fn encode_answer(a: &StoredAnswer) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(a).map_err(|e| StoreError::corrupt("an answer does not encode", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(i: u8, stamp: Option<Stamp>) -> StoredLink {
        StoredLink {
            link: SealedLink([i; 256]),
            check: DeleteCheck([i; 32]),
            stamp,
        }
    }

    #[test]
    fn buckets_round_trip_and_old_ones_decode_without_stamps() {
        let id = BucketId {
            created: 1_800_000_000,
            seq: 2,
        };
        let old = StoredBucket {
            id,
            links: vec![link(1, None), link(2, None)],
        };
        let bytes = encode(&old).unwrap();
        // Without stamps the bytes are exactly what version 2 stored.
        let v2 = postcard::to_allocvec(&(
            id,
            vec![
                (SealedLink([1; 256]), DeleteCheck([1; 32])),
                (SealedLink([2; 256]), DeleteCheck([2; 32])),
            ],
        ))
        .unwrap();
        assert_eq!(bytes, v2);
        assert_eq!(decode(&bytes).unwrap(), old);
        let new = StoredBucket {
            id,
            links: vec![link(1, None), link(2, Some(Stamp([7; 36])))],
        };
        assert_eq!(decode(&encode(&new).unwrap()).unwrap(), new);
        // Stamps that do not match the links are corrupt data, not a silent mismatch.
        let mut bad = encode(&new).unwrap();
        bad.extend([0u8]);
        assert!(decode(&bad).is_err());
    }
}
