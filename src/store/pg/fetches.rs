//! Fetch times passed between the frontends of a cluster, for the delete-after-fetch metric: a
//! client's fetch and its delete may go through different frontends, and the one that serves the
//! delete must know the bucket's latest fetch, wherever it was served.
//!
//! They go through PostgreSQL's notifications (`NOTIFY` on one channel, every frontend
//! `LISTEN`s on a connection of its own), never into a table or the write-ahead log: the
//! database server holds them in its notification queue (memory, spilling to `pg_notify/` on
//! its disk) until every listening frontend has read them. Any role that can connect to the
//! database can listen on a channel and notify on it, so every payload is sealed
//! (ChaCha20-Poly1305 under a key derived from the cluster's filler secret, which only the
//! frontends hold): a listener learns when and how much the frontends send, not which buckets
//! were fetched, and a forged or replayed-from-elsewhere payload does not open. Inside, each
//! frontend sends what it served every [`SEND_EVERY`], as `CREATED.SEQ@TIME` words (the bucket
//! ID and the fetch's unix second) separated by spaces, at most [`MAX_WORDS`] bytes a
//! notification. A frontend also hears its own (harmless: the latest fetch of a bucket is a
//! maximum). When the database cannot be reached, what waits is kept (at most [`MAX_QUEUED`]
//! buckets) and sent once it can.

use crate::proto::padding::FillerSecret;
use crate::proto::BucketId;
use crate::store::{Recent, StoreError};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use futures::StreamExt;
use sha3::{Digest, Sha3_256};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio_postgres::{AsyncMessage, NoTls};

/// The notification channel.
pub(super) const CHANNEL: &str = "rdv_fetches";
/// How often a frontend sends the fetches it served.
pub(super) const SEND_EVERY: Duration = Duration::from_millis(250);
/// Longest plaintext of one notification: sealed and in base64 it stays under PostgreSQL's
/// 8000 bytes.
const MAX_WORDS: usize = 5_800;
/// Most buckets waiting to be sent, and most heard fetches waiting to be taken.
const MAX_QUEUED: usize = 65_536;
/// Ticks without anything to send after which the connection is checked (every 10 s).
const KEEPALIVE_TICKS: u32 = 40;
/// Pause before connecting again after the connection failed.
const RETRY: Duration = Duration::from_secs(1);

/// What one store handle sends and hears.
#[derive(Debug, Default)]
pub(super) struct Shared {
    outgoing: Mutex<HashMap<BucketId, u64>>,
    heard: Recent<(BucketId, u64), MAX_QUEUED>,
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
        self.heard.take()
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

/// The plaintexts that carry `items`, each at most [`MAX_WORDS`] bytes.
pub(super) fn payloads(items: &[(BucketId, u64)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for (id, at) in items {
        let word = format!("{}.{}@{}", id.created, id.seq, at);
        if !cur.is_empty() && cur.len() + 1 + word.len() > MAX_WORDS {
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

/// The fetches in an opened payload; words that do not parse are skipped.
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

/// Seals and opens the payloads with the cluster's key.
pub(super) struct Sealer(ChaCha20Poly1305);

impl Sealer {
    /// The key every frontend of the database derives from its filler secret.
    pub(super) fn new(secret: &FillerSecret) -> Self {
        let mut h = Sha3_256::new();
        h.update(b"rdv fetch exchange v1");
        h.update(secret.expose());
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&h.finalize());
        Sealer(ChaCha20Poly1305::new(Key::from_slice(&key[..])))
    }

    /// `words` sealed under a fresh random nonce, in base64.
    pub(super) fn seal(&self, words: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        // Encrypting into a Vec cannot fail for sizes this small.
        let ct = self
            .0
            .encrypt(Nonce::from_slice(&nonce), words.as_bytes())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        STANDARD_NO_PAD.encode(out)
    }

    /// The words of a sealed payload, or `None` if it does not open.
    pub(super) fn open(&self, payload: &str) -> Option<String> {
        let raw = STANDARD_NO_PAD.decode(payload).ok()?;
        if raw.len() < 12 {
            return None;
        }
        let (nonce, ct) = raw.split_at(12);
        let pt = self.0.decrypt(Nonce::from_slice(nonce), ct).ok()?;
        String::from_utf8(pt).ok()
    }
}

/// Send and hear fetches until the store handle is gone, connecting again after failures and
/// after a failover (the writer's count of them is in `counters`).
pub(super) async fn run(
    database: tokio_postgres::Config,
    shared: Weak<Shared>,
    counters: Arc<super::writer::Counters>,
    sealer: Arc<Sealer>,
) {
    while shared.strong_count() > 0 {
        if let Err(e) = session(&database, &shared, &counters, &sealer).await {
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
    sealer: &Arc<Sealer>,
) -> Result<(), StoreError> {
    let failovers = counters.failovers.load(Ordering::Acquire);
    let (client, mut conn) =
        tokio::time::timeout(2 * super::SESSION_TIMEOUT, database.connect(NoTls))
            .await
            .map_err(|_| StoreError::backend(super::TimedOut))?
            .map_err(super::PgError::from)
            .map_err(StoreError::backend)?;
    let listener = shared.clone();
    let opener = sealer.clone();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                let Some(s) = listener.upgrade() else { return };
                if n.channel() == CHANNEL {
                    // A payload that does not open is not from a frontend of this cluster.
                    if let Some(words) = opener.open(n.payload()) {
                        s.heard.add(parse(&words));
                    }
                }
            }
        }
    });
    within(client.batch_execute(&format!("LISTEN {CHANNEL}"))).await?;
    let notify = within(client.prepare("SELECT pg_notify($1, $2)")).await?;
    let mut tick = tokio::time::interval(SEND_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut quiet = 0u32;
    loop {
        tick.tick().await;
        let Some(s) = shared.upgrade() else {
            return Ok(());
        };
        let items = s.take_outgoing();
        quiet = if items.is_empty() { quiet + 1 } else { 0 };
        if quiet >= KEEPALIVE_TICKS {
            // A frontend that serves no fetches would never notice a connection gone
            // half-open, and would stop hearing the others: ask something now and then.
            quiet = 0;
            within(client.simple_query("SELECT 1")).await?;
        }
        for p in payloads(&items) {
            let p = sealer.seal(&p);
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
        assert!(ps.iter().all(|p| p.len() <= MAX_WORDS));
        let back: Vec<_> = ps.iter().flat_map(|p| parse(p)).collect();
        assert_eq!(back, items);
    }

    #[test]
    fn payloads_open_only_under_the_clusters_key() {
        let ours = Sealer::new(&FillerSecret::from_bytes([1; 32]));
        let theirs = Sealer::new(&FillerSecret::from_bytes([2; 32]));
        let words = "x".repeat(MAX_WORDS);
        let sealed = ours.seal(&words);
        assert!(sealed.len() < 8000, "{}", sealed.len());
        assert!(!sealed.contains("xxxx"));
        assert_eq!(ours.open(&sealed).as_deref(), Some(words.as_str()));
        assert_eq!(theirs.open(&sealed), None);
        // A forger without the key, or one who changes a sealed payload, gets nothing in.
        assert_eq!(ours.open("1800000000.0@18446744073709551615"), None);
        let mut raw = STANDARD_NO_PAD.decode(&sealed).unwrap();
        raw[20] ^= 1;
        assert_eq!(ours.open(&STANDARD_NO_PAD.encode(raw)), None);
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
        s.heard
            .add((0..(MAX_QUEUED as u64 + 10)).map(|i| (BucketId { created: i, seq: 0 }, i)));
        assert_eq!(s.take_heard().len(), MAX_QUEUED);
    }
}
