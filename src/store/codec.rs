//! The stored form of buckets and answers (postcard), the same in every backend.
//!
//! A bucket is `(id, [(link, check)])` as protocol version 2 stored it, followed, when any of
//! its links came with a stamp or any was deleted, by `[Option<stamp>]` with one element per
//! link, followed, when any was deleted, by `[mark]` (the deleted links' marks, 32 bytes each).
//! A bucket stored before stamps existed ends after its links, one stored before deletes were
//! marked after its stamps: each decodes with what it has, so no migration is needed.

use crate::proto::{BucketId, DeleteCheck, SealedLink, Stamp, MAX_LINKS_PER_BUCKET};
use crate::store::{LinkMark, StoreError, StoredAnswer, StoredBucket, StoredLink};
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
    let (stamps, gone): (Vec<Option<Stamp>>, Vec<LinkMark>) = if rest.is_empty() {
        (vec![None; head.links.len()], Vec::new())
    } else {
        let (stamps, tail): (Vec<Option<Stamp>>, &[u8]) = postcard::take_from_bytes(rest)?;
        if stamps.len() != head.links.len() {
            return Err(StoreError::Corrupt {
                what: "a stored bucket's stamps do not match its links",
                source: None,
            });
        }
        let gone = if tail.is_empty() {
            Vec::new()
        } else {
            let (gone, tail): (Vec<LinkMark>, &[u8]) = postcard::take_from_bytes(tail)?;
            // Never written empty: an empty list is a stray byte.
            let stores = gone.len() + head.links.len();
            if !tail.is_empty() || gone.is_empty() || stores > MAX_LINKS_PER_BUCKET {
                return Err(StoreError::Corrupt {
                    what: "a stored bucket has stray bytes after its stamps, or more stores than a bucket takes",
                    source: None,
                });
            }
            gone
        };
        (stamps, gone)
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
        gone,
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
    if b.links.iter().any(|l| l.stamp.is_some()) || !b.gone.is_empty() {
        let stamps: Vec<Option<Stamp>> = b.links.iter().map(|l| l.stamp).collect();
        out.extend(postcard::to_allocvec(&stamps).map_err(fail)?);
    }
    if !b.gone.is_empty() {
        out.extend(postcard::to_allocvec(&b.gone).map_err(fail)?);
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
            gone: Vec::new(),
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
            gone: Vec::new(),
        };
        let before_marks = encode(&new).unwrap();
        assert_eq!(decode(&before_marks).unwrap(), new);
        // A deleted link's mark follows the stamps; a bucket with stamps and no marks is
        // stored as before marks existed.
        let mut deleted = new.clone();
        assert_eq!(
            deleted.delete(DeleteCheck([1; 32]), id.created, 600),
            Some(1)
        );
        assert_eq!(deleted.gone.len(), 1);
        assert!(deleted.holds(&SealedLink([1; 256])), "marked");
        assert_eq!(decode(&encode(&deleted).unwrap()).unwrap(), deleted);
        let mut only_plain = old.clone();
        assert_eq!(
            only_plain.delete(DeleteCheck([2; 32]), id.created, 600),
            Some(1)
        );
        // After the bucket's store window a delete leaves no mark (no store can come).
        let mut late = new.clone();
        let after = id.created + 600 + crate::proto::stamp::LATE_STORE_SECS;
        assert_eq!(late.delete(DeleteCheck([1; 32]), after, 600), Some(0));
        assert!(late.gone.is_empty());
        assert_eq!(decode(&encode(&only_plain).unwrap()).unwrap(), only_plain);
        // More stores than a bucket takes is corrupt data.
        let mut over = StoredBucket::new(id);
        over.links.push(link(1, None));
        over.gone = vec![[0; 32]; 64];
        assert!(decode(&encode(&over).unwrap()).is_err());
        // Stamps that do not match the links are corrupt data, not a silent mismatch.
        let mut bad = encode(&new).unwrap();
        bad.extend([0u8]);
        assert!(decode(&bad).is_err());
    }
}
