//! The protocol core: sealed links and sealed answers, key derivation, bucket IDs and locators,
//! wire frames, the client's anti-fingerprinting policy and the `rdv1:` link format.
//!
//! Nothing in here performs IO, reads a clock or draws randomness: the current time and any random
//! bytes are arguments. That keeps the core deterministic, testable against golden vectors and
//! fuzzable.

pub mod answer;
pub mod answer_stamp;
pub mod bucket;
pub(crate) mod bytes;
pub mod kdf;
pub mod link;
pub mod padding;
pub mod policy;
pub mod schedule;
pub mod seal;
pub mod stamp;
pub mod wire;
pub mod words;

pub use answer::{AnswerPublic, AnswerSecret, MailboxAddr, SealedAnswer};
pub use bucket::{BucketId, DeleteCheck, DeleteToken, Locator, MAX_LINKS_PER_BUCKET};
pub use kdf::{KdfLimits, KdfParams, KdfProfile, LinkKey, Passphrase, Salt};
pub use link::{RdvLink, ServerAddr};
pub use policy::{ClientPolicy, PolicyViolation};
pub use seal::{OpenError, Payload, SealError, SealedLink, MAX_PAYLOAD, SEALED_LINK_LEN};
pub use stamp::{Stamp, StampSeed};
pub use wire::{ErrorCode, Request, Response, ServerInfo, PROTOCOL_VERSION};
