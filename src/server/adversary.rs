//! An adversarial server, for testing clients: ways a rendezvous server could misbehave to
//! fingerprint or isolate its users, done on purpose (`rdv serve --adversary MODE
//! --testing-only`). Never for a real deployment.

/// One way to misbehave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adversary {
    /// Every link in a bucket of its own (the store opened with a bucket capacity of 1): the
    /// accepter's fetch then names its initiator.
    Isolate,
    /// Bucket IDs an hour in the future.
    FutureIds,
    /// Bucket IDs two hours old.
    StaleIds,
    /// Sequence numbers raised by 40, as a server handing out one bucket per client at a high
    /// rate would need.
    SeqInflation,
    /// After each store, 63 dummy links (random bytes, which look like sealed links) fill the
    /// bucket: every real link is alone among dummies.
    Dummies,
    /// Fetch answers with 63 entries instead of 64.
    Truncate,
    /// Challenges ask each client for a different effort (within twice the server's own): a
    /// per-client choice a server could try to mark clients with.
    VaryEffort,
    /// Challenges give each client a seed of its own instead of the bucket's.
    VarySeed,
}

impl Adversary {
    /// Every mode.
    pub const ALL: [Adversary; 8] = [
        Adversary::Isolate,
        Adversary::FutureIds,
        Adversary::StaleIds,
        Adversary::SeqInflation,
        Adversary::Dummies,
        Adversary::Truncate,
        Adversary::VaryEffort,
        Adversary::VarySeed,
    ];

    /// The mode's name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Adversary::Isolate => "isolate",
            Adversary::FutureIds => "future-ids",
            Adversary::StaleIds => "stale-ids",
            Adversary::SeqInflation => "seq-inflation",
            Adversary::Dummies => "dummies",
            Adversary::Truncate => "truncate",
            Adversary::VaryEffort => "vary-effort",
            Adversary::VarySeed => "vary-seed",
        }
    }

    /// The mode for a name.
    pub fn parse(s: &str) -> Option<Self> {
        Adversary::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Links per bucket the store should be opened with, for a stamp budget of `budget` fakes
    /// per victim (`isolate` keeps room for them beside the victim).
    pub fn bucket_capacity(self, budget: usize) -> usize {
        match self {
            Adversary::Isolate => (1 + budget).min(crate::proto::MAX_LINKS_PER_BUCKET),
            _ => crate::proto::MAX_LINKS_PER_BUCKET,
        }
    }

    /// The bucket ID to answer for a link really stored in `id`.
    pub(crate) fn rewrite_id(self, id: crate::proto::BucketId) -> crate::proto::BucketId {
        let mut id = id;
        match self {
            Adversary::FutureIds => id.created = id.created.saturating_add(3600),
            Adversary::StaleIds => id.created = id.created.saturating_sub(7200),
            Adversary::SeqInflation => id.seq = id.seq.saturating_add(40),
            _ => {}
        }
        id
    }
}

impl std::fmt::Display for Adversary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
