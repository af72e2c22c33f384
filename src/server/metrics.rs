//! Privacy-safe server metrics: aggregates of what the server sees anyway, in Prometheus'
//! (OpenMetrics) text format.
//!
//! No metric has a bucket ID, a locator, a client or a timestamp in it: only counts and
//! histograms with coarse bounds. The anonymity measures (docs/ANONYMITY.md):
//! - `rdv_bucket_links_at_close`: real links in a bucket when its open window ends (k_close);
//! - `rdv_fetch_candidates`: real links in the bucket a fetch returns, at that moment (k_fetch:
//!   the set the fetched link hides in, since it was stored before the fetch);
//! - `rdv_delete_after_fetch_seconds`: time from a bucket's latest fetch to a delete in it (a
//!   short one ties the delete to that fetch).
//!
//! To compute them the server keeps, in memory only, a small record per recent bucket, at most
//! [`MAX_TRACKED`] of each kind, dropped once the bucket expires: the end of the window of each
//! bucket its own store handle opened, and the latest fetch of each bucket it served (or heard
//! of from another frontend of a cluster, [`Metrics::heard_fetch`]). When a window ends the
//! server reads the bucket's links from the store ([`crate::server::Server::refresh_metrics`]),
//! so that k_close counts every frontend's links, and only the frontend that opened the bucket
//! reports it: summed over a cluster's frontends every figure is the cluster's. After a restart
//! the records start empty (a bucket opened before it is not reported).
//!
//! The three histograms are released in batches: each value waits in memory until
//! [`Metrics::with_batch`] values (8 by default) of its histogram are waiting, and then all go
//! in at once. So two scrapes around one fetch or delete do not show that request's count or
//! delay: whoever scrapes sees values at least a batch at a time. (Someone who makes all but
//! one request of a batch itself still learns the last one's: batching raises the cost, it does
//! not remove the need to keep the endpoint to the operator.)

use crate::proto::{BucketId, Locator};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::Mutex;

/// Most buckets tracked at once (about 100 bytes each); the oldest go first.
pub const MAX_TRACKED: usize = 200_000;

/// Bounds of the link-count histograms (1 to 64 links).
const LINK_BOUNDS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 24.0, 32.0, 48.0, 64.0];
/// Bounds of the delete-after-fetch histogram: 1 s to a week.
const DELAY_BOUNDS: [f64; 10] = [
    1.0,
    10.0,
    60.0,
    300.0,
    1800.0,
    3600.0,
    6.0 * 3600.0,
    86400.0,
    3.0 * 86400.0,
    7.0 * 86400.0,
];

/// An operation's outcome, the only label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// The histograms that are released in batches.
#[derive(Clone, Copy)]
enum Batched {
    LinksAtClose = 0,
    FetchCandidates = 1,
    DeleteAfterFetch = 2,
}

/// A bucket whose window is to be counted: (end of its window, its locator).
pub(crate) type Window = (u64, Locator);

#[derive(Default)]
struct Tracker {
    /// Values not released into their histogram yet, by [`Batched`].
    pending: [Vec<f64>; 3],
    /// Buckets this server's store opened whose window has not been counted yet.
    windows: BTreeSet<Window>,
    /// The latest fetch of each recent bucket: locator → (the bucket's creation, fetch time).
    fetches: HashMap<Locator, (u64, u64)>,
    /// `fetches` by the bucket's creation, for dropping expired ones and the oldest.
    fetch_order: BTreeSet<(u64, Locator)>,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    links_at_close: Histogram,
    fetch_candidates: Histogram,
    delete_after_fetch: Histogram,
    buckets_opened: Counter,
    stores: Family<Outcome, Counter>,
    fetches: Family<Outcome, Counter>,
    deletes: Family<Outcome, Counter>,
    answers: Family<Outcome, Counter>,
    refusals_seen: Counter,
    connections: Counter,
    slots_in_use: Gauge,
    connections_open: Gauge,
    links_stored: Gauge,
    link_marks: Gauge,
    links_quota: Gauge,
    tracker: Mutex<Tracker>,
    open_window: u64,
    ttl: u64,
    /// Values of one histogram released together.
    batch: usize,
}

/// Values of one anonymity histogram released together, by default.
pub const DEFAULT_BATCH: usize = 8;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics for a store with this open window and TTL (seconds).
    pub fn new(open_window: u64, ttl: u64) -> Self {
        let mut registry = Registry::with_prefix("rdv");
        let links_at_close = Histogram::new(LINK_BOUNDS);
        let fetch_candidates = Histogram::new(LINK_BOUNDS);
        let delete_after_fetch = Histogram::new(DELAY_BOUNDS);
        let m = Metrics {
            links_at_close,
            fetch_candidates,
            delete_after_fetch,
            buckets_opened: Counter::default(),
            stores: Family::default(),
            fetches: Family::default(),
            deletes: Family::default(),
            answers: Family::default(),
            refusals_seen: Counter::default(),
            connections: Counter::default(),
            slots_in_use: Gauge::default(),
            connections_open: Gauge::default(),
            links_stored: Gauge::default(),
            link_marks: Gauge::default(),
            links_quota: Gauge::default(),
            tracker: Mutex::default(),
            open_window,
            ttl,
            batch: DEFAULT_BATCH,
            registry: Registry::default(),
        };
        registry.register(
            "bucket_links_at_close",
            "Real links in a bucket when its open window ends (k_close)",
            m.links_at_close.clone(),
        );
        registry.register(
            "fetch_candidates",
            "Real links in the fetched bucket at the moment of each fetch (k_fetch)",
            m.fetch_candidates.clone(),
        );
        registry.register(
            "delete_after_fetch_seconds",
            "Time from a bucket's latest fetch to a delete in it",
            m.delete_after_fetch.clone(),
        );
        registry.register(
            "buckets_opened",
            "Buckets this server opened (a store or a challenge that created one) since it started",
            m.buckets_opened.clone(),
        );
        registry.register("stores", "Store requests by outcome", m.stores.clone());
        registry.register("fetches", "Fetch requests by outcome", m.fetches.clone());
        registry.register("deletes", "Delete requests by outcome", m.deletes.clone());
        registry.register(
            "answers",
            "Answer mailbox requests by kind and outcome",
            m.answers.clone(),
        );
        registry.register(
            "refusals_seen",
            "Deletes of a link stored on the same connection or circuit (what a client refusing its bucket looks like)",
            m.refusals_seen.clone(),
        );
        registry.register(
            "connections",
            "Connections (or onion streams) accepted",
            m.connections.clone(),
        );
        registry.register(
            "connections_open",
            "Connections open now",
            m.connections_open.clone(),
        );
        registry.register(
            "slots_in_use",
            "Connection slots held now",
            m.slots_in_use.clone(),
        );
        registry.register(
            "links_stored",
            "Links stored now (every bucket)",
            m.links_stored.clone(),
        );
        registry.register(
            "link_marks",
            "Marks of links deleted within their bucket's store window, each keeping the link's place in the quota until its bucket expires",
            m.link_marks.clone(),
        );
        registry.register(
            "links_quota",
            "Most links stored at once (0: no quota)",
            m.links_quota.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Release the anonymity histograms' values `batch` at a time (at least 1; 1 releases each
    /// at once, for a lab that compares exact figures).
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Hold `v` for `which`; release that histogram's values once a batch is waiting.
    fn observe(&self, t: &mut Tracker, which: Batched, v: f64) {
        let pending = &mut t.pending[which as usize];
        pending.push(v);
        if pending.len() >= self.batch {
            let h = match which {
                Batched::LinksAtClose => &self.links_at_close,
                Batched::FetchCandidates => &self.fetch_candidates,
                Batched::DeleteAfterFetch => &self.delete_after_fetch,
            };
            for v in pending.drain(..) {
                h.observe(v);
            }
        }
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forget the fetches of buckets that have expired by `now`, and the oldest beyond
    /// [`MAX_TRACKED`].
    fn sweep(&self, t: &mut Tracker, now: u64) {
        while let Some(&(created, loc)) = t.fetch_order.first() {
            let expired = created.saturating_add(self.ttl) <= now;
            if !expired && t.fetch_order.len() <= MAX_TRACKED {
                break;
            }
            t.fetch_order.pop_first();
            t.fetches.remove(&loc);
        }
    }

    /// This server's store opened bucket `id` ([`crate::store::BucketStore::take_opened`]):
    /// its window is counted when it ends.
    pub fn opened(&self, id: BucketId) {
        self.buckets_opened.inc();
        let mut t = self.tracker();
        t.windows
            .insert((id.created.saturating_add(self.open_window), id.locator()));
        if t.windows.len() > MAX_TRACKED {
            t.windows.pop_first();
        }
    }

    /// The first window after `after` that has ended by `now` and is still to be counted.
    /// Windows of buckets that have expired uncounted are dropped.
    pub(crate) fn window_due(&self, now: u64, after: Option<Window>) -> Option<Window> {
        let mut t = self.tracker();
        let expired = |end: u64| {
            end.saturating_sub(self.open_window)
                .saturating_add(self.ttl)
                <= now
        };
        while t.windows.first().is_some_and(|w| expired(w.0)) {
            t.windows.pop_first();
        }
        let next = match after {
            Some(a) => t.windows.range((Excluded(a), Unbounded)).next(),
            None => t.windows.first(),
        };
        next.filter(|w| w.0 <= now).copied()
    }

    /// Window `w` ended with `links` real links in its bucket (`None`: the bucket is gone). Only
    /// the first report of a window counts (two refreshes may read it at once).
    pub(crate) fn window_counted(&self, w: Window, links: Option<usize>) {
        let mut t = self.tracker();
        if t.windows.remove(&w) {
            if let Some(k) = links {
                self.observe(&mut t, Batched::LinksAtClose, k as f64);
            }
        }
    }

    /// Windows waiting to be counted (for tests of the memory bound).
    pub fn windows_waiting(&self) -> usize {
        self.tracker().windows.len()
    }

    /// A store was acknowledged.
    pub(crate) fn stored(&self) {
        self.stores
            .get_or_create(&Outcome { outcome: "stored" })
            .inc();
    }

    /// A store was refused (`outcome`: `quota`, `overloaded`, `failed`).
    pub(crate) fn store_refused(&self, outcome: &'static str) {
        self.stores.get_or_create(&Outcome { outcome }).inc();
    }

    /// A fetch of bucket `id`, whose locator is `loc` (the caller has it already), found `real`
    /// links.
    pub fn fetched(&self, id: BucketId, loc: Locator, real: usize, now: u64) {
        self.fetches
            .get_or_create(&Outcome { outcome: "found" })
            .inc();
        let mut t = self.tracker();
        self.observe(&mut t, Batched::FetchCandidates, real as f64);
        self.note_fetch(&mut t, id, loc, now, now);
    }

    /// Another frontend of the cluster served a fetch of bucket `id` at `at`, heard at `now`
    /// (a time ahead of `now`, from a frontend whose clock runs ahead, counts as `now`).
    pub fn heard_fetch(&self, id: BucketId, at: u64, now: u64) {
        let loc = id.locator();
        let mut t = self.tracker();
        self.note_fetch(&mut t, id, loc, at.min(now), now);
    }

    fn note_fetch(&self, t: &mut Tracker, id: BucketId, loc: Locator, at: u64, now: u64) {
        match t.fetches.get_mut(&loc) {
            Some((_, last)) => *last = (*last).max(at),
            None => {
                t.fetches.insert(loc, (id.created, at));
                t.fetch_order.insert((id.created, loc));
            }
        }
        self.sweep(t, now);
    }

    /// A fetch found nothing (`not_found`) or failed (`failed`).
    pub(crate) fn fetch_missed(&self, outcome: &'static str) {
        self.fetches.get_or_create(&Outcome { outcome }).inc();
    }

    /// A delete removed a link; `same_source` when the link was stored on the same connection
    /// or circuit.
    pub fn deleted(&self, locator: &Locator, now: u64, same_source: bool) {
        self.deletes
            .get_or_create(&Outcome { outcome: "deleted" })
            .inc();
        if same_source {
            self.refusals_seen.inc();
        }
        let mut t = self.tracker();
        self.sweep(&mut t, now);
        let since_fetch = t.fetches.get(locator).map(|(_, f)| now.saturating_sub(*f));
        if let Some(d) = since_fetch {
            self.observe(&mut t, Batched::DeleteAfterFetch, d as f64);
        }
    }

    /// A delete matched nothing (`nothing`) or failed (`failed`).
    pub(crate) fn delete_missed(&self, outcome: &'static str) {
        self.deletes.get_or_create(&Outcome { outcome }).inc();
    }

    /// An answer-mailbox request and its outcome (`put_stored`, `put_already`,
    /// `put_overloaded`, `put_quota`, `put_bad_stamp`, `fetch_found`, `fetch_empty`, `failed`).
    pub(crate) fn answer(&self, outcome: &'static str) {
        self.answers.get_or_create(&Outcome { outcome }).inc();
    }

    /// A connection or stream was accepted.
    pub(crate) fn connection(&self) {
        self.connections.inc();
    }

    /// The text exposition at `now`, with the current gauges.
    pub fn encode(
        &self,
        now: u64,
        open: usize,
        slots: usize,
        stored: u64,
        marks: u64,
        quota: Option<u64>,
    ) -> String {
        {
            let mut t = self.tracker();
            self.sweep(&mut t, now);
        }
        let as_gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.connections_open.set(as_gauge(open as u64));
        self.slots_in_use.set(as_gauge(slots as u64));
        self.links_stored.set(as_gauge(stored));
        self.link_marks.set(as_gauge(marks));
        self.links_quota.set(as_gauge(quota.unwrap_or(0)));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The latest fetch of the bucket at `locator` these metrics know of (for tests).
    pub fn latest_fetch(&self, locator: &Locator) -> Option<u64> {
        self.tracker().fetches.get(locator).map(|(_, at)| *at)
    }

    /// Buckets whose latest fetch is tracked now (for tests of the memory bound).
    pub fn tracked(&self) -> usize {
        self.tracker().fetches.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(created: u64, seq: u16) -> BucketId {
        BucketId { created, seq }
    }

    /// The value of a sample line `name value`.
    fn value(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    #[test]
    fn windows_are_counted_once_when_they_end_and_fetches_see_theirs() {
        let m = Metrics::new(600, 3600).with_batch(1);
        let a = id(1000, 0);
        m.opened(a);
        m.fetched(a, a.locator(), 3, 1010);
        m.deleted(&a.locator(), 1070, false);
        // Still open: nothing to count yet.
        assert_eq!(m.window_due(1599, None), None);
        let w = m.window_due(1600, None).unwrap();
        assert_eq!(w, (1600, a.locator()));
        // Two refreshes read it at once: the first report counts, the second does nothing.
        m.window_counted(w, Some(2));
        m.window_counted(w, Some(2));
        assert_eq!(m.window_due(1600, None), None);
        let text = m.encode(1600, 0, 0, 2, 0, None);
        assert_eq!(value(&text, "rdv_bucket_links_at_close_count"), 1.0);
        assert_eq!(value(&text, "rdv_bucket_links_at_close_sum"), 2.0);
        assert_eq!(value(&text, "rdv_fetch_candidates_sum"), 3.0);
        assert_eq!(value(&text, "rdv_delete_after_fetch_seconds_sum"), 60.0);
        assert_eq!(value(&text, "rdv_buckets_opened_total"), 1.0);
        // Expired buckets are forgotten.
        m.encode(1000 + 3600, 0, 0, 0, 0, None);
        assert_eq!(m.tracked(), 0);
    }

    /// A window that could not be read stays due, after the ones that could; one whose bucket
    /// expired uncounted is dropped.
    #[test]
    fn unread_windows_wait_and_expired_ones_go() {
        let m = Metrics::new(600, 3600).with_batch(1);
        let (a, b) = (id(1000, 0), id(1000, 1));
        m.opened(a);
        m.opened(b);
        let first = m.window_due(1600, None).unwrap();
        let second = m.window_due(1600, Some(first)).unwrap();
        assert_ne!(first, second);
        assert_eq!(m.window_due(1600, Some(second)), None);
        m.window_counted(second, Some(5));
        assert_eq!(m.window_due(1700, None), Some(first));
        assert_eq!(m.window_due(1000 + 3600, None), None);
        assert_eq!(m.windows_waiting(), 0);
        let text = m.encode(4600, 0, 0, 0, 0, None);
        assert_eq!(value(&text, "rdv_bucket_links_at_close_count"), 1.0);
        assert_eq!(value(&text, "rdv_buckets_opened_total"), 2.0);
    }

    /// A heard fetch time ahead of the hearer's clock neither empties the records nor makes a
    /// later delete look like one right after it.
    #[test]
    fn heard_fetches_from_the_future_are_held_to_now() {
        let m = Metrics::new(600, 3600).with_batch(1);
        let a = id(1000, 0);
        m.fetched(a, a.locator(), 1, 1010);
        m.heard_fetch(id(1000, 1), u64::MAX, 1020);
        assert_eq!(m.tracked(), 2);
        assert_eq!(m.latest_fetch(&id(1000, 1).locator()), Some(1020));
        m.heard_fetch(a, 5000, 1030);
        m.deleted(&a.locator(), 1090, false);
        let text = m.encode(1090, 0, 0, 0, 0, None);
        assert_eq!(value(&text, "rdv_delete_after_fetch_seconds_sum"), 60.0);
    }

    #[test]
    fn memory_stays_bounded() {
        let m = Metrics::new(1, 1 << 40);
        for i in 0..(MAX_TRACKED as u64 + 1000) {
            let b = id(i / 33, (i % 33) as u16);
            m.opened(b);
            m.fetched(b, b.locator(), 1, i / 33);
        }
        assert!(m.tracked() <= MAX_TRACKED, "{}", m.tracked());
        assert!(
            m.windows_waiting() <= MAX_TRACKED,
            "{}",
            m.windows_waiting()
        );
    }

    /// Two scrapes around one fetch and one delete show neither the fetch's count nor the
    /// delete's delay; a batch later they are all in, exactly.
    #[test]
    fn two_scrapes_around_one_request_reveal_nothing_of_it() {
        let m = Metrics::new(600, 7 * 86400);
        let a = id(1000, 0);
        m.opened(a);
        let before = m.encode(1001, 0, 0, 1, 0, None);
        m.fetched(a, a.locator(), 3, 1002);
        m.deleted(&a.locator(), 1006, false);
        let after = m.encode(1007, 0, 0, 1, 0, None);
        let anonymity = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| {
                    l.starts_with("rdv_fetch_candidates") || l.starts_with("rdv_delete_after_fetch")
                })
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(anonymity(&before), anonymity(&after));
        // Seven more fetches: the batch of eight goes in together.
        for i in 0..7 {
            m.fetched(a, a.locator(), 1, 1010 + i);
        }
        let text = m.encode(1020, 0, 0, 1, 0, None);
        assert_eq!(value(&text, "rdv_fetch_candidates_count"), 8.0);
        assert_eq!(value(&text, "rdv_fetch_candidates_sum"), 10.0);
        assert_eq!(value(&text, "rdv_delete_after_fetch_seconds_count"), 0.0);
    }
}
