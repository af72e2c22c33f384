//! Stamps: proof of work bound to a bucket and to a sealed link (PROTOCOL.md §16), so that a
//! client can count the real links around its own, and a server that fakes them pays for every
//! fake one. Pure: solving takes a nonce to start from and a budget of attempts; no clock, no
//! threads, no randomness.
//!
//! The puzzle is Equi-X (the asymmetric puzzle of Tor's onion-service proof of work: a few
//! milliseconds of CPU and 2 MB of memory per attempt to solve, about 50 µs to verify) with an
//! effort on top: a solution counts when `u32(SHA3-256(challenge || solution)[0..4]) * effort`
//! does not exceed `2^32 - 1`, which takes `effort` solutions on average. The challenge binds the
//! server's name (as the link writes it: a stamp made for one server proves nothing on another),
//! the bucket's locator, the bucket's seed (secret to the server until the bucket exists), the
//! sealed link's hash, a nonce and the effort.

use super::bucket::{BucketId, Locator};
use super::padding::FillerSecret;
use super::seal::SealedLink;
use serde::{Deserialize, Serialize};
use sha3::{Digest, Sha3_256};

/// Bytes of a stamp: nonce (16), solution (16), effort (4, big-endian).
pub const STAMP_LEN: usize = 36;
/// Domain label of the challenge.
const CHALLENGE_LABEL: &[u8; 12] = b"rdv stamp v1";
/// Domain label of a bucket's seed.
const SEED_LABEL: &[u8] = b"rdv stamp seed v1";
/// Domain label of a server's name.
const NAME_LABEL: &[u8] = b"rdv stamp server v1";
/// Bytes of a challenge: label, server name, locator, seed, link hash, nonce, effort.
pub const CHALLENGE_LEN: usize = 12 + 32 + 32 + 32 + 32 + 16 + 4;

/// A server's name as stamps bind it: `SHA3-256("rdv stamp server v1" || HOST:PORT)`, the
/// address as the link writes it (section 6 of PROTOCOL.md), so that a stamp made for one
/// server proves nothing when another server shows it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServerName(#[serde(with = "super::bytes")] pub [u8; 32]);

impl std::fmt::Debug for ServerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerName(..)")
    }
}

impl ServerName {
    /// The name of the server at `addr`.
    pub fn of(addr: &super::link::ServerAddr) -> Self {
        let mut h = Sha3_256::new();
        h.update(NAME_LABEL);
        h.update(addr.to_string().as_bytes());
        ServerName(h.finalize().into())
    }
}
/// The least effort a client counts by default, and the server's default effort: a stamp then
/// costs about 0.2 s of one core (docs/ANONYMITY.md, BENCHMARKS.md).
pub const DEFAULT_EFFORT: u32 = 64;
/// The most effort a client spends by default before it refuses a challenge (several seconds).
pub const DEFAULT_MAX_EFFORT: u32 = 1024;

/// How long after its open window a bucket still takes the stamped stores its challenges
/// announced, seconds (PROTOCOL.md §10.1): longer than any stamp takes to solve and the clock
/// skew clients allow together, so that an honest server says `BucketClosed` to a client that
/// stored soon after its challenge only when the bucket is full, which the client can check
/// (a server that said it of buckets with room could collect stamps for them).
pub const LATE_STORE_SECS: u64 = 300;

/// How many of a bucket's 64 stores may be missing from the verified count of a bucket a server
/// says is full before the client takes the server's word for a lie: deleted links (rare before
/// a bucket's window ends).
pub const FULL_SLACK: usize = 8;

/// A stamp: `nonce || solution || effort` (big-endian effort), as stored beside a link.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp(#[serde(with = "super::bytes")] pub [u8; STAMP_LEN]);

impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stamp(effort {})", self.effort())
    }
}

impl Stamp {
    /// The effort the stamp claims.
    pub fn effort(&self) -> u32 {
        u32::from_be_bytes([self.0[32], self.0[33], self.0[34], self.0[35]])
    }

    pub(crate) fn nonce(&self) -> [u8; 16] {
        let mut n = [0u8; 16];
        n.copy_from_slice(&self.0[..16]);
        n
    }

    fn solution(&self) -> [u8; 16] {
        let mut s = [0u8; 16];
        s.copy_from_slice(&self.0[16..32]);
        s
    }
}

/// A bucket's seed: 32 bytes the server derives from its secret and the bucket ID, the same for
/// every client (so it cannot single one out), unknown to anybody before the server hands out
/// the bucket (so nobody can stamp ahead for buckets to come).
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StampSeed(#[serde(with = "super::bytes")] pub [u8; 32]);

impl std::fmt::Debug for StampSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StampSeed([redacted])")
    }
}

/// The seed of bucket `id` on a server whose secret is `secret`:
/// `SHA3-256("rdv stamp seed v1" || secret || created (u64 BE) || seq (u16 BE))`.
pub fn bucket_seed(secret: &FillerSecret, id: BucketId) -> StampSeed {
    let mut h = Sha3_256::new();
    h.update(SEED_LABEL);
    h.update(secret.expose());
    h.update(id.created.to_be_bytes());
    h.update(id.seq.to_be_bytes());
    StampSeed(h.finalize().into())
}

/// What a challenge names: the bucket a store goes into, its seed and the effort asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// The bucket.
    pub id: BucketId,
    /// Its seed.
    pub seed: StampSeed,
    /// The effort the server asks for.
    pub effort: u32,
}

/// The Equi-X challenge of one attempt: `"rdv stamp v1" || server name || locator || seed ||
/// SHA3-256(sealed link) || nonce || effort (u32 BE)`.
pub fn challenge_bytes(
    name: &ServerName,
    locator: &Locator,
    seed: &StampSeed,
    link_hash: &[u8; 32],
    nonce: &[u8; 16],
    effort: u32,
) -> [u8; CHALLENGE_LEN] {
    concat([
        &CHALLENGE_LABEL[..],
        &name.0,
        &locator.0,
        &seed.0,
        link_hash,
        nonce,
        &effort.to_be_bytes(),
    ])
}

/// `parts` one after the other in `N` bytes (the challenge layouts, whose lengths add up to
/// `N` by construction).
pub(crate) fn concat<const N: usize, const P: usize>(parts: [&[u8]; P]) -> [u8; N] {
    let mut c = [0u8; N];
    let mut at = 0;
    for part in parts {
        c[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    debug_assert_eq!(at, N);
    c
}

/// SHA3-256 of a sealed link, as the challenge takes it.
pub fn link_hash(link: &SealedLink) -> [u8; 32] {
    Sha3_256::digest(link.0).into()
}

/// Whether `solution` meets `effort` for `challenge`: `u32(SHA3-256(challenge || solution)[0..4])
/// * effort <= 2^32 - 1` (with effort 0 taken as 1).
pub fn meets_effort(challenge: &[u8], solution: &[u8; 16], effort: u32) -> bool {
    let mut h = Sha3_256::new();
    h.update(challenge);
    h.update(solution);
    let d = h.finalize();
    let r = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    r.checked_mul(effort.max(1)).is_some()
}

/// Why a stamp does not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StampError {
    /// The solution does not meet the effort it claims.
    #[error("the stamp does not meet its effort")]
    Effort,
    /// The solution is not an Equi-X solution of the challenge.
    #[error("the stamp's solution does not solve its challenge")]
    Solution,
    /// The stamp claims less effort than asked for.
    #[error("the stamp's effort {claimed} is below the {required} required")]
    TooCheap {
        /// The effort the stamp claims.
        claimed: u32,
        /// The effort asked for.
        required: u32,
    },
}

/// Verify `stamp` for `link` in the bucket at `locator` with `seed` on the server named `name`,
/// and that its effort is at least `min_effort`. The cheap effort check comes first, so that
/// random bytes (filler) cost a hash, not an Equi-X verification. Never compiles code (the
/// interpreter is as fast for one verification and needs no executable memory).
pub fn verify(
    name: &ServerName,
    locator: &Locator,
    seed: &StampSeed,
    link: &SealedLink,
    stamp: &Stamp,
    min_effort: u32,
) -> Result<(), StampError> {
    check_effort(stamp, min_effort)?;
    let c = challenge_bytes(
        name,
        locator,
        seed,
        &link_hash(link),
        &stamp.nonce(),
        stamp.effort(),
    );
    verify_solution(&c, stamp)
}

/// That `stamp` claims at least `min_effort`.
pub(crate) fn check_effort(stamp: &Stamp, min_effort: u32) -> Result<(), StampError> {
    let effort = stamp.effort();
    if effort < min_effort {
        return Err(StampError::TooCheap {
            claimed: effort,
            required: min_effort,
        });
    }
    Ok(())
}

/// That `stamp`'s solution meets its effort for challenge bytes `c`, and solves it.
pub(crate) fn verify_solution(c: &[u8], stamp: &Stamp) -> Result<(), StampError> {
    let solution = stamp.solution();
    if !meets_effort(c, &solution, stamp.effort()) {
        return Err(StampError::Effort);
    }
    equix::EquiXBuilder::new()
        .runtime(equix::RuntimeOption::InterpretOnly)
        .verify_bytes(c, &solution)
        .map_err(|_| StampError::Solution)
}

/// Look for a stamp for `link` in `challenge`'s bucket on the server named `name`, trying nonces
/// from `start` (counted up as a little-endian integer) for at most `attempts` Equi-X solves.
/// `Err` with the next nonce when the budget ran out: call again with it. Each attempt takes a
/// few milliseconds; about `effort / 2` attempts are needed on average.
pub fn solve(
    name: &ServerName,
    challenge: &Challenge,
    link: &SealedLink,
    start: [u8; 16],
    attempts: u64,
) -> Result<Stamp, [u8; 16]> {
    let locator = challenge.id.locator();
    let hash = link_hash(link);
    solve_with(challenge.effort, start, attempts, |nonce| {
        challenge_bytes(
            name,
            &locator,
            &challenge.seed,
            &hash,
            nonce,
            challenge.effort,
        )
    })
}

/// The search of [`solve`] over the challenge bytes `challenge(nonce)` makes of each nonce.
pub(crate) fn solve_with<C: AsRef<[u8]>>(
    effort: u32,
    start: [u8; 16],
    attempts: u64,
    challenge: impl Fn(&[u8; 16]) -> C,
) -> Result<Stamp, [u8; 16]> {
    let mut nonce = start;
    let mut memory = equix::SolverMemory::new();
    for _ in 0..attempts {
        let c = challenge(&nonce);
        let c = c.as_ref();
        // A challenge whose hash program is unusable (about 2 in 100 000) has no solution.
        if let Ok(e) = equix::EquiX::new(c) {
            for s in e.solve_with_memory(&mut memory) {
                let bytes = s.to_bytes();
                if meets_effort(c, &bytes, effort) {
                    let mut stamp = [0u8; STAMP_LEN];
                    stamp[..16].copy_from_slice(&nonce);
                    stamp[16..32].copy_from_slice(&bytes);
                    stamp[32..].copy_from_slice(&effort.to_be_bytes());
                    return Ok(Stamp(stamp));
                }
            }
        }
        next_nonce(&mut nonce);
    }
    Err(nonce)
}

/// The next nonce: the 16 bytes counted up as a little-endian integer.
fn next_nonce(n: &mut [u8; 16]) {
    for b in n.iter_mut() {
        *b = b.wrapping_add(1);
        if *b != 0 {
            return;
        }
    }
}

/// How many of a bucket's entries carry a valid stamp of at least `min_effort` for the server
/// named `name`, counting each sealed link once (a copy of an entry proves nothing new).
pub fn count_verified<'a>(
    name: &ServerName,
    locator: &Locator,
    seed: &StampSeed,
    entries: impl IntoIterator<Item = (&'a SealedLink, &'a Stamp)>,
    min_effort: u32,
) -> usize {
    let mut seen = std::collections::HashSet::new();
    entries
        .into_iter()
        .filter(|(link, stamp)| verify(name, locator, seed, link, stamp, min_effort).is_ok())
        .filter(|(link, _)| seen.insert(link.0))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> ServerName {
        ServerName::of(&crate::proto::ServerAddr::parse("10.0.0.1:7625").unwrap())
    }

    fn challenge(effort: u32) -> Challenge {
        Challenge {
            id: BucketId {
                created: 1_800_000_000,
                seq: 3,
            },
            seed: StampSeed([5; 32]),
            effort,
        }
    }

    #[test]
    fn a_stamp_verifies_only_for_its_bucket_seed_link_and_effort() {
        let ch = challenge(4);
        let link = SealedLink([9; 256]);
        let n = name();
        let stamp = solve(&n, &ch, &link, [0; 16], 10_000).expect("a stamp");
        let loc = ch.id.locator();
        assert_eq!(stamp.effort(), 4);
        assert_eq!(verify(&n, &loc, &ch.seed, &link, &stamp, 4), Ok(()));
        assert_eq!(verify(&n, &loc, &ch.seed, &link, &stamp, 1), Ok(()));
        assert_eq!(
            verify(&n, &loc, &ch.seed, &link, &stamp, 5),
            Err(StampError::TooCheap {
                claimed: 4,
                required: 5
            })
        );
        // Another bucket, another seed, another link: no.
        let other = BucketId {
            created: 1_800_000_000,
            seq: 4,
        };
        assert!(verify(&n, &other.locator(), &ch.seed, &link, &stamp, 1).is_err());
        assert!(verify(&n, &loc, &StampSeed([6; 32]), &link, &stamp, 1).is_err());
        assert!(verify(&n, &loc, &ch.seed, &SealedLink([8; 256]), &stamp, 1).is_err());
        // The same bucket, seed and link shown by another server: no.
        let elsewhere = ServerName::of(&crate::proto::ServerAddr::parse("10.0.0.2:7625").unwrap());
        assert!(verify(&elsewhere, &loc, &ch.seed, &link, &stamp, 1).is_err());
        // Every bit of the stamp matters: a flipped nonce or solution bit fails, and so does a
        // higher effort claimed for the same work (with overwhelming probability).
        for bit in 0..(32 * 8) {
            let mut s = stamp;
            s.0[bit / 8] ^= 1 << (bit % 8);
            assert!(
                verify(&n, &loc, &ch.seed, &link, &s, 1).is_err(),
                "bit {bit}"
            );
        }
        let mut dear = stamp;
        dear.0[32..].copy_from_slice(&1_000_000u32.to_be_bytes());
        assert!(verify(&n, &loc, &ch.seed, &link, &dear, 1).is_err());
    }

    #[test]
    fn counting_takes_each_link_once_and_skips_filler() {
        let ch = challenge(2);
        let loc = ch.id.locator();
        let links: Vec<SealedLink> = (0..3u8).map(|i| SealedLink([i; 256])).collect();
        let stamps: Vec<Stamp> = links
            .iter()
            .map(|l| solve(&name(), &ch, l, [0; 16], 10_000).expect("a stamp"))
            .collect();
        let filler = (SealedLink([0xee; 256]), Stamp([0x5a; STAMP_LEN]));
        let mut entries: Vec<(&SealedLink, &Stamp)> = links.iter().zip(&stamps).collect();
        entries.push((&links[0], &stamps[0]));
        entries.push((&filler.0, &filler.1));
        assert_eq!(
            count_verified(&name(), &loc, &ch.seed, entries.clone(), 2),
            3
        );
        assert_eq!(
            count_verified(&name(), &loc, &ch.seed, entries, 3),
            0,
            "below the floor"
        );
    }

    #[test]
    fn a_small_budget_hands_back_where_to_go_on() {
        let ch = challenge(1 << 20);
        let link = SealedLink([1; 256]);
        let next = solve(
            &name(),
            &ch,
            &link,
            [0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            2,
        )
        .expect_err("a million-fold effort is not met in two attempts");
        assert_eq!(next[..3], [1, 0, 1]);
    }

    #[test]
    fn seeds_differ_per_bucket_and_secret() {
        let a = FillerSecret::from_bytes([1; 32]);
        let b = FillerSecret::from_bytes([2; 32]);
        let id = challenge(1).id;
        let id2 = BucketId { seq: 4, ..id };
        assert_ne!(bucket_seed(&a, id), bucket_seed(&a, id2));
        assert_ne!(bucket_seed(&a, id), bucket_seed(&b, id));
        assert_eq!(bucket_seed(&a, id), bucket_seed(&a, id));
    }

    #[test]
    fn debug_says_nothing_secret() {
        assert_eq!(format!("{:?}", StampSeed([7; 32])), "StampSeed([redacted])");
        assert!(!format!("{:?}", Stamp([7; STAMP_LEN])).contains("7, 7"));
    }
}
