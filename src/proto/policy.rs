//! The client's anti-fingerprinting policy (step 3 of the protocol).
//!
//! A server could put every client into a bucket of its own and so tell which accepter fetches
//! which initiator's link. Bucket IDs are a creation second and a sequence number within that
//! second, so the client can check that the bucket it was given is plausibly the one open for
//! everybody: created recently (not in the future, not older than the open window) and not one of
//! very many buckets created in the same second.

use super::bucket::BucketId;

/// The longest bucket lifetime a client accepts: ten years ([`super::schedule::MAX_SPAN`],
/// which `rdv serve --ttl` cannot exceed either).
pub const MAX_TTL_SECS: u64 = super::schedule::MAX_SPAN.as_secs();

/// What a client accepts as a bucket ID after a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientPolicy {
    /// Tolerated clock difference between client and server, seconds.
    pub max_skew_secs: u64,
    /// The longest open window the client accepts from a server, seconds. Default: 600 (10 min,
    /// a server's default window). A server advertising a longer one could hand out old buckets
    /// it prepared per client. It is also when a bucket counts as closed
    /// ([`ClientPolicy::closed_to_all`]), whatever window the server advertised.
    pub max_open_window_secs: u64,
    /// The highest sequence number accepted.
    pub max_seq: u16,
    /// The least effort a stamp must show to be counted as a real link (protocol version 3).
    /// Default: 64. (A client stamps its own links with the effort the server asks: a server
    /// that asks for less gets links that clients with this floor do not count.)
    pub min_effort: u32,
    /// The most effort the client spends on a stamp: a challenge asking for more is refused
    /// before anything is stored. Default: 1024.
    pub max_effort: u32,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        ClientPolicy {
            max_skew_secs: 120,
            max_open_window_secs: 600,
            max_seq: 32,
            min_effort: super::stamp::DEFAULT_EFFORT,
            max_effort: super::stamp::DEFAULT_MAX_EFFORT,
        }
    }
}

/// Why a bucket ID was refused. Neither the message nor `Debug` names the ID: it is the
/// locator's preimage, as sensitive as the link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyViolation {
    /// The bucket claims to be created in the future.
    #[error("the bucket was created {ahead} s in the future (allowed skew {skew} s)")]
    FromTheFuture {
        /// Seconds ahead of the client clock.
        ahead: u64,
        /// Allowed skew.
        skew: u64,
    },
    /// The bucket is older than the open window allows.
    #[error("the bucket is {age} s old, but buckets stay open for at most {allowed} s (window plus skew)")]
    TooOld {
        /// Age by the client clock.
        age: u64,
        /// Allowed age.
        allowed: u64,
    },
    /// Too many buckets in one second.
    #[error("the bucket has sequence number {seq}, above the allowed {max}")]
    SeqTooHigh {
        /// Its sequence number.
        seq: u16,
        /// Allowed maximum.
        max: u16,
    },
    /// The server advertises an open window longer than the client accepts.
    #[error("the server keeps buckets open for {advertised} s, longer than the allowed {max} s")]
    WindowTooLong {
        /// Advertised window.
        advertised: u64,
        /// Allowed maximum.
        max: u64,
    },
    /// The server advertises a bucket lifetime no longer than its open window: a bucket would
    /// be gone while still open (the protocol forbids it).
    #[error(
        "the server keeps buckets for {ttl} s, not longer than their open window ({window} s)"
    )]
    TtlNotPastWindow {
        /// Advertised TTL.
        ttl: u64,
        /// Advertised open window.
        window: u64,
    },
    /// The server advertises a bucket lifetime longer than any server keeps buckets
    /// ([`MAX_TTL_SECS`]): a link's end would be past every date a state file can hold.
    #[error("the server keeps buckets for {ttl} s, longer than the ten years any server may")]
    TtlTooLong {
        /// Advertised TTL.
        ttl: u64,
    },
    /// A challenge asks for more work than the client spends.
    #[error("the server asks for a stamp of effort {asked}, more than the allowed {max}")]
    EffortTooHigh {
        /// The effort asked.
        asked: u32,
        /// Allowed maximum.
        max: u32,
    },
}

impl ClientPolicy {
    /// Check the server's advertised open window.
    pub fn check_window(&self, advertised_window_secs: u64) -> Result<(), PolicyViolation> {
        if advertised_window_secs > self.max_open_window_secs {
            return Err(PolicyViolation::WindowTooLong {
                advertised: advertised_window_secs,
                max: self.max_open_window_secs,
            });
        }
        Ok(())
    }

    /// Check the server's advertised open window and bucket lifetime, before anything is stored
    /// there: the window as [`ClientPolicy::check_window`] does, and the lifetime against the
    /// window (it must be longer, or a bucket would be gone while still open). Neither decides
    /// when the client acts (a server could advertise them per connection): the close comes
    /// from the policy ([`ClientPolicy::closed_to_all`]), and how long an answer is looked for
    /// from the client's own setting.
    pub fn check_lifetimes(&self, window_secs: u64, ttl_secs: u64) -> Result<(), PolicyViolation> {
        self.check_window(window_secs)?;
        if ttl_secs <= window_secs {
            return Err(PolicyViolation::TtlNotPastWindow {
                ttl: ttl_secs,
                window: window_secs,
            });
        }
        if ttl_secs > MAX_TTL_SECS {
            return Err(PolicyViolation::TtlTooLong { ttl: ttl_secs });
        }
        Ok(())
    }

    /// When bucket `id` is closed to every client that keeps to this policy (unix seconds, on the
    /// client's clock): its creation time plus the longest window the policy accepts plus the
    /// allowed skew, the oldest such a client stores into ([`ClientPolicy::check`]) when a server
    /// advertises that window to it. It depends on nothing the server says but the bucket's
    /// creation, which every link of the bucket shares: not on the server's claim about its own
    /// time, and not on the window it advertised, which it can set per connection: a close taken
    /// from it would give each link of the bucket a close, and so a first look, of its own.
    pub fn closed_to_all(&self, id: BucketId) -> u64 {
        id.created
            .saturating_add(self.max_open_window_secs)
            .saturating_add(self.max_skew_secs)
            .saturating_add(1)
    }

    /// Check a bucket ID returned by a store, against the client's clock `now` (unix seconds) and
    /// the window the server advertised.
    pub fn check(
        &self,
        id: BucketId,
        now: u64,
        advertised_window_secs: u64,
    ) -> Result<(), PolicyViolation> {
        self.check_window(advertised_window_secs)?;
        if id.created > now.saturating_add(self.max_skew_secs) {
            return Err(PolicyViolation::FromTheFuture {
                ahead: id.created - now,
                skew: self.max_skew_secs,
            });
        }
        let age = now.saturating_sub(id.created);
        let allowed = advertised_window_secs.saturating_add(self.max_skew_secs);
        if age > allowed {
            return Err(PolicyViolation::TooOld { age, allowed });
        }
        if id.seq > self.max_seq {
            return Err(PolicyViolation::SeqTooHigh {
                seq: id.seq,
                max: self.max_seq,
            });
        }
        Ok(())
    }

    /// Check a challenge (protocol version 3) before anything is stored: its bucket ID as
    /// [`ClientPolicy::check`] does, and the effort it asks for.
    pub fn check_challenge(
        &self,
        challenge: &super::stamp::Challenge,
        now: u64,
        advertised_window_secs: u64,
    ) -> Result<(), PolicyViolation> {
        self.check(challenge.id, now, advertised_window_secs)?;
        if challenge.effort > self.max_effort {
            return Err(PolicyViolation::EffortTooHigh {
                asked: challenge.effort,
                max: self.max_effort,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn id(created: u64, seq: u16) -> BucketId {
        BucketId { created, seq }
    }

    /// The close a client counts on is the first second in which the policy refuses the
    /// bucket: before it another client may still store into it.
    #[test]
    fn a_bucket_is_closed_to_all_once_the_policy_refuses_it() {
        let p = ClientPolicy::default();
        let b = id(NOW, 3);
        let closed = p.closed_to_all(b);
        assert_eq!(closed, NOW + 600 + 120 + 1);
        // Handed to a client that was told the longest window the policy accepts, the bucket
        // is taken until then; a client told a shorter one refuses it earlier.
        assert!(p.check(b, closed - 1, 600).is_ok());
        assert!(matches!(
            p.check(b, closed, 600),
            Err(PolicyViolation::TooOld { .. })
        ));
        assert!(p.check(b, closed - 1, 60).is_err());
        let longer = ClientPolicy {
            max_open_window_secs: 3600,
            ..p
        };
        assert_eq!(longer.closed_to_all(b), NOW + 3600 + 120 + 1);
    }

    #[test]
    fn lifetimes_within_the_window_are_refused() {
        let p = ClientPolicy::default();
        assert_eq!(p.check_lifetimes(600, 7 * 86_400), Ok(()));
        assert_eq!(p.check_lifetimes(600, MAX_TTL_SECS), Ok(()));
        // Longer than ten years: the link's end would be past every date a state file holds
        // (a server claiming so made `rdv offer --state` write a file nothing could read).
        assert_eq!(
            p.check_lifetimes(600, MAX_TTL_SECS + 1),
            Err(PolicyViolation::TtlTooLong {
                ttl: MAX_TTL_SECS + 1
            })
        );
        assert!(p.check_lifetimes(600, u64::MAX).is_err());
        assert_eq!(p.check_lifetimes(600, 601), Ok(()));
        assert_eq!(
            p.check_lifetimes(600, 600),
            Err(PolicyViolation::TtlNotPastWindow {
                ttl: 600,
                window: 600
            })
        );
        assert!(matches!(
            p.check_lifetimes(7200, 86_400),
            Err(PolicyViolation::WindowTooLong { .. })
        ));
    }

    #[test]
    fn fresh_ids_pass() {
        let p = ClientPolicy::default();
        assert_eq!(p.check(id(NOW, 0), NOW, 600), Ok(()));
        assert_eq!(p.check(id(NOW - 600 - 120, 32), NOW, 600), Ok(()));
        assert_eq!(p.check(id(NOW + 120, 0), NOW, 600), Ok(()));
    }

    #[test]
    fn suspicious_ids_fail() {
        let p = ClientPolicy::default();
        assert!(matches!(
            p.check(id(NOW + 121, 0), NOW, 600),
            Err(PolicyViolation::FromTheFuture { .. })
        ));
        assert!(matches!(
            p.check(id(NOW - 721, 0), NOW, 600),
            Err(PolicyViolation::TooOld { .. })
        ));
        assert!(matches!(
            p.check(id(NOW, 33), NOW, 600),
            Err(PolicyViolation::SeqTooHigh { .. })
        ));
        assert!(matches!(
            p.check(id(NOW, 0), NOW, 3601),
            Err(PolicyViolation::WindowTooLong { .. })
        ));
        assert!(matches!(
            p.check(id(u64::MAX, 0), 0, 0),
            Err(PolicyViolation::FromTheFuture { .. })
        ));
        assert!(matches!(
            p.check(id(0, 0), u64::MAX, u64::MAX - 1),
            Err(PolicyViolation::WindowTooLong { .. })
        ));
    }
}
