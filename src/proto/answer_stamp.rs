//! Answer stamps (protocol version 4, PROTOCOL.md §17): the proof of work of a link's stamp
//! ([`super::stamp`]), bound to a mailbox and a sealed answer, so that an answer costs its
//! sender real work as a link does, and a flood of free answers fills only a small share of the
//! server's storage. Pure, like the link's stamps.
//!
//! There is no bucket to take a seed from: the seed is the server's for a ten-minute epoch of
//! its clock, asked for on the connection that then carries the answer, and a stamp counts for
//! that epoch and the next. The challenge binds the seed, the mailbox, the sealed answer's hash,
//! a nonce and the effort, under a label of its own, so that no link stamp verifies as an answer
//! stamp or the other way round.

use super::answer::{MailboxAddr, SealedAnswer};
use super::padding::FillerSecret;
use super::stamp::{self, Stamp, StampError, StampSeed};
use serde::{Deserialize, Serialize};
use sha3::{Digest, Sha3_256};

/// Length of an epoch of answer seeds, seconds of the server's clock.
pub const ANSWER_EPOCH_SECS: u64 = 600;
/// Domain label of the challenge.
const CHALLENGE_LABEL: &[u8; 19] = b"rdv answer stamp v1";
/// Domain label of an epoch's seed.
const SEED_LABEL: &[u8] = b"rdv answer seed v1";
/// Bytes of an answer challenge: label, seed, mailbox, answer hash, nonce, effort.
pub const ANSWER_CHALLENGE_LEN: usize = 19 + 32 + 32 + 32 + 16 + 4;

/// What an answer challenge names: the epoch, its seed and the effort asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerChallenge {
    /// The epoch: the server's clock divided by [`ANSWER_EPOCH_SECS`].
    pub epoch: u64,
    /// The epoch's seed.
    pub seed: StampSeed,
    /// The effort the server asks for.
    pub effort: u32,
}

/// The epoch of server time `now` (seconds since the Unix epoch).
pub fn epoch_of(now: u64) -> u64 {
    now / ANSWER_EPOCH_SECS
}

/// Whether a stamp of `epoch` still counts at server time `now`: the current epoch or the one
/// before (a stamp asked for at the end of an epoch arrives in the next).
pub fn epoch_is_fresh(epoch: u64, now: u64) -> bool {
    let current = epoch_of(now);
    epoch == current || epoch.checked_add(1) == Some(current)
}

/// The answer seed of `epoch` on a server whose secret is `secret`:
/// `SHA3-256("rdv answer seed v1" || secret || epoch (u64 BE))`.
pub fn answer_seed(secret: &FillerSecret, epoch: u64) -> StampSeed {
    let mut h = Sha3_256::new();
    h.update(SEED_LABEL);
    h.update(secret.expose());
    h.update(epoch.to_be_bytes());
    StampSeed(h.finalize().into())
}

/// SHA3-256 of a sealed answer, as the challenge takes it.
pub fn answer_hash(answer: &SealedAnswer) -> [u8; 32] {
    Sha3_256::digest(answer.0).into()
}

/// The Equi-X challenge of one attempt: `"rdv answer stamp v1" || seed || mailbox ||
/// SHA3-256(sealed answer) || nonce || effort (u32 BE)`.
pub fn answer_challenge_bytes(
    seed: &StampSeed,
    mailbox: &MailboxAddr,
    answer_hash: &[u8; 32],
    nonce: &[u8; 16],
    effort: u32,
) -> [u8; ANSWER_CHALLENGE_LEN] {
    stamp::concat([
        &CHALLENGE_LABEL[..],
        &seed.0,
        &mailbox.0,
        answer_hash,
        nonce,
        &effort.to_be_bytes(),
    ])
}

/// Look for a stamp for `answer` in `mailbox` under `challenge`, trying nonces from `start`
/// for at most `attempts` Equi-X solves, as [`stamp::solve`] does for a link.
pub fn solve_answer(
    challenge: &AnswerChallenge,
    mailbox: &MailboxAddr,
    answer: &SealedAnswer,
    start: [u8; 16],
    attempts: u64,
) -> Result<Stamp, [u8; 16]> {
    let hash = answer_hash(answer);
    stamp::solve_with(challenge.effort, start, attempts, |nonce| {
        answer_challenge_bytes(&challenge.seed, mailbox, &hash, nonce, challenge.effort)
    })
}

/// Verify `stamp` for `answer` in `mailbox` under `seed`, with an effort of at least
/// `min_effort` (the cheap effort check first, as for a link's stamp).
pub fn verify_answer(
    seed: &StampSeed,
    mailbox: &MailboxAddr,
    answer: &SealedAnswer,
    stamp: &Stamp,
    min_effort: u32,
) -> Result<(), StampError> {
    stamp::check_effort(stamp, min_effort)?;
    let c = answer_challenge_bytes(
        seed,
        mailbox,
        &answer_hash(answer),
        &stamp.nonce(),
        stamp.effort(),
    );
    stamp::verify_solution(&c, stamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::bucket::BucketId;
    use crate::proto::seal::SealedLink;

    #[test]
    fn an_answer_stamp_verifies_only_for_its_seed_mailbox_answer_and_effort() {
        let secret = FillerSecret::from_bytes([3; 32]);
        let ch = AnswerChallenge {
            epoch: 3_000_000,
            seed: answer_seed(&secret, 3_000_000),
            effort: 4,
        };
        let (mailbox, answer) = (MailboxAddr([1; 32]), SealedAnswer([2; 256]));
        let stamp = solve_answer(&ch, &mailbox, &answer, [0; 16], 10_000).expect("a stamp");
        assert_eq!(
            verify_answer(&ch.seed, &mailbox, &answer, &stamp, 4),
            Ok(())
        );
        assert!(verify_answer(&ch.seed, &mailbox, &answer, &stamp, 5).is_err());
        let next = answer_seed(&secret, 3_000_001);
        assert!(verify_answer(&next, &mailbox, &answer, &stamp, 4).is_err());
        assert!(verify_answer(&ch.seed, &MailboxAddr([9; 32]), &answer, &stamp, 4).is_err());
        assert!(verify_answer(&ch.seed, &mailbox, &SealedAnswer([3; 256]), &stamp, 4).is_err());
    }

    #[test]
    fn a_link_stamp_is_no_answer_stamp() {
        // The same seed, the mailbox's bytes as the locator, the same 32 bytes hashed: the
        // labels keep the puzzles apart.
        let seed = StampSeed([7; 32]);
        let ch = stamp::Challenge {
            id: BucketId {
                created: 1_800_000_000,
                seq: 1,
            },
            seed,
            effort: 2,
        };
        let name = stamp::ServerName([0; 32]);
        let link = SealedLink([4; 256]);
        let s = stamp::solve(&name, &ch, &link, [0; 16], 10_000).expect("a stamp");
        let mailbox = MailboxAddr(ch.id.locator().0);
        assert!(verify_answer(&seed, &mailbox, &SealedAnswer([4; 256]), &s, 2).is_err());
    }

    #[test]
    fn epochs_count_for_themselves_and_the_next() {
        let now = 1_800_000_000;
        let e = epoch_of(now);
        assert!(epoch_is_fresh(e, now));
        assert!(epoch_is_fresh(e - 1, now));
        assert!(!epoch_is_fresh(e - 2, now));
        assert!(!epoch_is_fresh(e + 1, now));
        assert!(!epoch_is_fresh(u64::MAX, now));
        assert!(epoch_is_fresh(0, 0));
    }
}
