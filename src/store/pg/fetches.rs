//! Fetch times passed between the frontends of a cluster, for the delete-after-fetch metric: a
//! client's fetch and its delete may go through different frontends, and the one that serves the
//! delete must know the bucket's latest fetch, wherever it was served.
//!
//! They go through PostgreSQL's notifications (`NOTIFY` on one channel, every frontend
//! `LISTEN`s on a connection of its own), never into a table or the write-ahead log: the
//! database server holds them only until every listening frontend has read them. Each frontend
//! sends what it served every [`SEND_EVERY`], as `CREATED.SEQ@TIME` words (the bucket ID and
//! the fetch's unix second) separated by spaces, at most [`MAX_PAYLOAD`] bytes a notification.
//! A frontend also hears its own (harmless: the latest fetch of a bucket is a maximum). When the
//! database cannot be reached, what waits is kept (at most [`MAX_QUEUED`] buckets) and sent
//! once it can.

use crate::proto::BucketId;
use crate::store::StoreError;
use futures::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio_postgres::{AsyncMessage, NoTls};

/// The notification channel.
pub(super) const CHANNEL: &str = "rdv_fetches";
/// How often a frontend sends the fetches it served.
pub(super) const SEND_EVERY: Duration = Duration::from_millis(250);
/// Longest notification payload sent (PostgreSQL takes up to 8000 bytes).
const MAX_PAYLOAD: usize = 7_900;
/// Most buckets waiting to be sent, and most heard fetches waiting to be taken.
const MAX_QUEUED: usize = 65_536;
/// Pause before connecting again after the connection failed.
const RETRY: Duration = Duration::from_secs(1);

/// What one store handle sends and hears.
#[derive(Debug, Default)]
pub(super) struct Shared {
    outgoing: Mutex<HashMap<BucketId, u64>>,
    heard: Mutex<VecDeque<(BucketId, u64)>>,
}

impl Shared {
    /// This frontend served a fetch of bucket `id` at `at`.
    pub(super) fn served(&self, id: BucketId, at: u64) {
        let mut o = self.outgoing.lock().unwrap_or_else(|p| p.into_inner());
        if o.len() >= MAX_QUEUED && !o.contains_key(&id) {
            return;
        }
        let last = o.entry(id).or_insert(at);
        *last = (*last).max(at);
    }

    /// Fetches heard since the last call (every frontend's, this one's included).
    pub(super) fn take_heard(&self) -> Vec<(BucketId, u64)> {
        let mut h = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        h.drain(..).collect()
    }

    fn hear(&self, items: impl IntoIterator<Item = (BucketId, u64)>) {
        let mut h = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        h.extend(items);
        let over = h.len().saturating_sub(MAX_QUEUED);
        h.drain(..over);
    }

    fn take_outgoing(&self) -> Vec<(BucketId, u64)> {
        let mut o = self.outgoing.lock().unwrap_or_else(|p| p.into_inner());
        o.drain().collect()
    }

    /// Put back what could not be sent (newer fetches of the same bucket win).
    fn restore(&self, items: Vec<(BucketId, u64)>) {
        for (id, at) in items {
            self.served(id, at);
        }
    }
}

/// The payloads that carry `items`, each at most [`MAX_PAYLOAD`] bytes.
pub(super) fn payloads(items: &[(BucketId, u64)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for (id, at) in items {
        let word = format!("{}.{}@{}", id.created, id.seq, at);
        if !cur.is_empty() && cur.len() + 1 + word.len() > MAX_PAYLOAD {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(&word);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The fetches in a payload; words that do not parse are skipped (whoever can notify on the
/// channel can already write to the database, but a malformed word must not stop the rest).
pub(super) fn parse(payload: &str) -> Vec<(BucketId, u64)> {
    payload
        .split(' ')
        .filter_map(|w| {
            let (id, at) = w.split_once('@')?;
            let (created, seq) = id.split_once('.')?;
            Some((
                BucketId {
                    created: created.parse().ok()?,
                    seq: seq.parse().ok()?,
                },
                at.parse().ok()?,
            ))
        })
        .collect()
}

/// Send and hear fetches until the store handle is gone, connecting again after failures and
/// after a failover (the writer's count of them is in `counters`).
pub(super) async fn run(
    database: tokio_postgres::Config,
    shared: Weak<Shared>,
    counters: Arc<super::writer::Counters>,
) {
    while shared.strong_count() > 0 {
        if let Err(e) = session(&database, &shared, &counters).await {
            tracing::debug!(error = %crate::config::report(&e), "the fetch exchange with the other frontends is interrupted; connecting again");
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// One connection: listen, and send what this frontend served every [`SEND_EVERY`].
async fn session(
    database: &tokio_postgres::Config,
    shared: &Weak<Shared>,
    counters: &super::writer::Counters,
) -> Result<(), StoreError> {
    let failovers = counters.failovers.load(Ordering::Acquire);
    let (client, mut conn) =
        tokio::time::timeout(2 * super::SESSION_TIMEOUT, database.connect(NoTls))
            .await
            .map_err(|_| StoreError::backend(super::TimedOut))?
            .map_err(super::PgError::from)
            .map_err(StoreError::backend)?;
    let listener = shared.clone();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                let Some(s) = listener.upgrade() else { return };
                if n.channel() == CHANNEL {
                    s.hear(parse(n.payload()));
                }
            }
        }
    });
    within(client.batch_execute(&format!("LISTEN {CHANNEL}"))).await?;
    let notify = within(client.prepare("SELECT pg_notify($1, $2)")).await?;
    let mut tick = tokio::time::interval(SEND_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(s) = shared.upgrade() else {
            return Ok(());
        };
        let items = s.take_outgoing();
        for p in payloads(&items) {
            if let Err(e) = within(client.execute(&notify, &[&CHANNEL, &p])).await {
                s.restore(items);
                return Err(e);
            }
        }
        if client.is_closed() {
            return Err(StoreError::Closed);
        }
        if counters.failovers.load(Ordering::Acquire) != failovers {
            // Perhaps connected to the old primary: the other frontends are on the new one.
            return Ok(());
        }
    }
}

/// A statement's result, within [`super::SESSION_TIMEOUT`].
async fn within<T>(
    q: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(super::SESSION_TIMEOUT, q)
        .await
        .map_err(|_| StoreError::backend(super::TimedOut))?
        .map_err(|e| StoreError::backend(super::PgError::from(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_within_the_size_limit() {
        let items: Vec<_> = (0..2000u64)
            .map(|i| {
                (
                    BucketId {
                        created: 1_800_000_000 + i,
                        seq: (i % 33) as u16,
                    },
                    1_800_000_100 + i,
                )
            })
            .collect();
        let ps = payloads(&items);
        assert!(ps.len() > 1);
        assert!(ps.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let back: Vec<_> = ps.iter().flat_map(|p| parse(p)).collect();
        assert_eq!(back, items);
    }

    #[test]
    fn malformed_words_are_skipped() {
        let got = parse("1.2@3 x.2@3 1.2 1.70000@5 @ 4.5@6");
        assert_eq!(
            got,
            vec![
                (BucketId { created: 1, seq: 2 }, 3),
                (BucketId { created: 4, seq: 5 }, 6)
            ]
        );
    }

    #[test]
    fn the_queues_stay_bounded() {
        let s = Shared::default();
        for i in 0..(MAX_QUEUED as u64 + 10) {
            s.served(BucketId { created: i, seq: 0 }, i);
        }
        assert_eq!(s.take_outgoing().len(), MAX_QUEUED);
        s.hear((0..(MAX_QUEUED as u64 + 10)).map(|i| (BucketId { created: i, seq: 0 }, i)));
        assert_eq!(s.take_heard().len(), MAX_QUEUED);
    }
}
