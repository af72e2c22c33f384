//! Which bucket a new link goes into. Pure: the caller passes the time.

use crate::proto::{BucketId, MAX_LINKS_PER_BUCKET};

/// Keeps the one open bucket and hands out bucket IDs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocator {
    open: Option<(BucketId, usize)>,
    last: Option<BucketId>,
}

impl Allocator {
    /// An allocator that continues after `last`, the newest bucket ever created (from storage).
    /// The first store after a restart opens a new bucket.
    pub fn resume(last: Option<BucketId>) -> Self {
        Allocator { open: None, last }
    }

    /// The newest bucket ID handed out.
    pub fn last(&self) -> Option<BucketId> {
        self.last
    }

    /// The bucket for one more link at `now`: the open bucket while it has room and is younger
    /// than `window_secs`, else a new one. IDs only ever grow, even if the clock steps back.
    pub fn assign(&mut self, now: u64, window_secs: u64) -> BucketId {
        if let Some((id, n)) = &mut self.open {
            if *n < MAX_LINKS_PER_BUCKET && now < id.created.saturating_add(window_secs) {
                *n += 1;
                return *id;
            }
        }
        let id = match self.last {
            Some(last) if now <= last.created => match last.seq.checked_add(1) {
                Some(seq) => BucketId {
                    created: last.created,
                    seq,
                },
                None => BucketId {
                    created: last.created + 1,
                    seq: 0,
                },
            },
            _ => BucketId {
                created: now,
                seq: 0,
            },
        };
        self.open = Some((id, 1));
        self.last = Some(id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_then_rolls_over() {
        let mut a = Allocator::default();
        let first = a.assign(100, 600);
        for _ in 1..64 {
            assert_eq!(a.assign(100, 600), first);
        }
        let second = a.assign(100, 600);
        assert_eq!(
            second,
            BucketId {
                created: 100,
                seq: 1
            }
        );
        assert_eq!(a.assign(101, 600), second);
    }

    #[test]
    fn window_closes_bucket() {
        let mut a = Allocator::default();
        assert_eq!(
            a.assign(100, 10),
            BucketId {
                created: 100,
                seq: 0
            }
        );
        assert_eq!(
            a.assign(109, 10),
            BucketId {
                created: 100,
                seq: 0
            }
        );
        assert_eq!(
            a.assign(110, 10),
            BucketId {
                created: 110,
                seq: 0
            }
        );
    }

    #[test]
    fn ids_grow_when_clock_steps_back_or_after_restart() {
        let id = |created, seq| BucketId { created, seq };
        let mut a = Allocator::resume(Some(id(200, 3)));
        assert_eq!(a.assign(150, 10), id(200, 4));
        // The clock is behind the open bucket: it stays open until the window has passed.
        assert_eq!(a.assign(150, 10), id(200, 4));
        assert_eq!(a.assign(210, 10), id(210, 0));
        let mut b = Allocator::resume(Some(BucketId {
            created: 200,
            seq: u16::MAX,
        }));
        assert_eq!(
            b.assign(200, 0),
            BucketId {
                created: 201,
                seq: 0
            }
        );
    }
}
