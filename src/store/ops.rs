//! The write operations a backend's writer takes off its queue, and their answers held back
//! until the batch that holds them has committed (group commit, shared by every backend).

use crate::proto::{BucketId, DeleteCheck, Locator, MailboxAddr, SealedAnswer, SealedLink, Stamp};
use crate::store::{ExpiryHold, PutAnswer, StoreError, WriteKind};
use tokio::sync::oneshot;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One queued write.
#[allow(clippy::large_enum_variant)] // a store carries its 256-byte link inline on purpose
pub(crate) enum Op {
    Store {
        link: SealedLink,
        check: DeleteCheck,
        /// A stamped store: the bucket its challenge named, and the stamp.
        target: Option<(BucketId, Stamp)>,
        now: u64,
        reply: Reply<BucketId>,
    },
    Challenge {
        now: u64,
        reply: Reply<BucketId>,
    },
    Delete {
        locator: Locator,
        check: DeleteCheck,
        now: u64,
        reply: Reply<bool>,
    },
    PutAnswer {
        mailbox: MailboxAddr,
        answer: SealedAnswer,
        now: u64,
        kind: WriteKind,
        reply: Reply<PutAnswer>,
    },
    Gc {
        now: u64,
        limit: usize,
        reply: Reply<usize>,
    },
    /// Widen the store's expiry hold ([`crate::store::hold`]).
    Hold {
        hold: ExpiryHold,
        reply: Reply<()>,
    },
}

/// The answer to a queued operation.
pub(crate) type Answer<T> = oneshot::Receiver<Result<T, StoreError>>;

impl Op {
    /// A store, and where its answer comes.
    pub(crate) fn store(
        link: SealedLink,
        check: DeleteCheck,
        target: Option<(BucketId, Stamp)>,
        now: u64,
    ) -> (Op, Answer<BucketId>) {
        let (reply, rx) = oneshot::channel();
        let op = Op::Store {
            link,
            check,
            target,
            now,
            reply,
        };
        (op, rx)
    }

    /// A challenge, and where its bucket comes.
    pub(crate) fn challenge(now: u64) -> (Op, Answer<BucketId>) {
        let (reply, rx) = oneshot::channel();
        (Op::Challenge { now, reply }, rx)
    }

    /// A delete, and where its answer comes.
    pub(crate) fn delete(locator: Locator, check: DeleteCheck, now: u64) -> (Op, Answer<bool>) {
        let (reply, rx) = oneshot::channel();
        let op = Op::Delete {
            locator,
            check,
            now,
            reply,
        };
        (op, rx)
    }

    /// An answer to put, and where the result comes.
    pub(crate) fn put_answer(
        mailbox: MailboxAddr,
        answer: SealedAnswer,
        now: u64,
        kind: WriteKind,
    ) -> (Op, Answer<PutAnswer>) {
        let (reply, rx) = oneshot::channel();
        let op = Op::PutAnswer {
            mailbox,
            answer,
            now,
            kind,
            reply,
        };
        (op, rx)
    }

    /// A garbage collection, and where its count comes.
    pub(crate) fn gc(now: u64, limit: usize) -> (Op, Answer<usize>) {
        let (reply, rx) = oneshot::channel();
        (Op::Gc { now, limit, reply }, rx)
    }

    /// An expiry hold to make durable, and where the result comes.
    pub(crate) fn hold(hold: ExpiryHold) -> (Op, Answer<()>) {
        let (reply, rx) = oneshot::channel();
        (Op::Hold { hold, reply }, rx)
    }

    /// Answer with an error without doing anything.
    pub(crate) fn fail(self, e: &StoreError) {
        // A caller that went away does not mind.
        match self {
            Op::Store { reply, .. } | Op::Challenge { reply, .. } => {
                drop(reply.send(Err(e.clone())))
            }
            Op::Delete { reply, .. } => drop(reply.send(Err(e.clone()))),
            Op::PutAnswer { reply, .. } => drop(reply.send(Err(e.clone()))),
            Op::Gc { reply, .. } => drop(reply.send(Err(e.clone()))),
            Op::Hold { reply, .. } => drop(reply.send(Err(e.clone()))),
        }
    }
}

/// The answer to one operation, held back until its batch has committed.
pub(crate) enum Outcome {
    Store(Reply<BucketId>, Result<BucketId, StoreError>),
    Delete(Reply<bool>, Result<bool, StoreError>),
    PutAnswer(Reply<PutAnswer>, Result<PutAnswer, StoreError>),
    Gc(Reply<usize>, Result<usize, StoreError>),
    Hold(Reply<()>, Result<(), StoreError>),
}

impl Outcome {
    pub(crate) fn send(self) {
        match self {
            Outcome::Store(tx, r) => drop(tx.send(r)),
            Outcome::Delete(tx, r) => drop(tx.send(r)),
            Outcome::PutAnswer(tx, r) => drop(tx.send(r)),
            Outcome::Gc(tx, r) => drop(tx.send(r)),
            Outcome::Hold(tx, r) => drop(tx.send(r)),
        }
    }

    /// The batch did not commit: what would have succeeded fails with `e`; refusals (quota) stay
    /// what they were, they are still true.
    pub(crate) fn fail(self, e: &StoreError) {
        match self {
            Outcome::Store(tx, Ok(_)) => drop(tx.send(Err(e.clone()))),
            Outcome::Delete(tx, Ok(_)) => drop(tx.send(Err(e.clone()))),
            Outcome::PutAnswer(tx, Ok(_)) => drop(tx.send(Err(e.clone()))),
            Outcome::Gc(tx, Ok(_)) => drop(tx.send(Err(e.clone()))),
            Outcome::Hold(tx, Ok(_)) => drop(tx.send(Err(e.clone()))),
            other => other.send(),
        }
    }
}

/// Record one operation's result in `outcomes`. `r`'s outer error aborts the batch: it becomes
/// the operation's answer too (so its caller hears it, not a dropped reply) and is returned;
/// its inner result (a refusal included) is the operation's own. `outcome` pairs a result
/// with the operation's reply.
pub(crate) fn settle<T>(
    outcomes: &mut Vec<Outcome>,
    outcome: impl FnOnce(Result<T, StoreError>) -> Outcome,
    r: Result<Result<T, StoreError>, StoreError>,
) -> Result<(), StoreError> {
    match r {
        Ok(r) => {
            outcomes.push(outcome(r));
            Ok(())
        }
        Err(e) => {
            outcomes.push(outcome(Err(e.clone())));
            Err(e)
        }
    }
}

/// A delete's result, for [`settle`]: a damaged bucket (it does not decode) is that delete's
/// failure, not the batch's (nothing was changed before the bucket failed to decode); any other
/// error aborts the batch.
pub(crate) fn delete_result(
    r: Result<bool, StoreError>,
) -> Result<Result<bool, StoreError>, StoreError> {
    match r {
        Ok(found) => Ok(Ok(found)),
        Err(e @ StoreError::Corrupt { .. }) => Ok(Err(e)),
        Err(e) => Err(e),
    }
}
