//! The stored form of buckets and answers (postcard), the same in every backend.

use crate::store::{StoreError, StoredAnswer, StoredBucket};

/// Decode one stored bucket.
pub(crate) fn decode(bytes: &[u8]) -> Result<StoredBucket, StoreError> {
    Ok(postcard::from_bytes(bytes)?)
}

/// Encode one bucket for storage.
pub(crate) fn encode(b: &StoredBucket) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(b).map_err(|e| StoreError::corrupt("a bucket does not encode", e))
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
