//! The offers between their request and the delivery of their reply: what claims a stored
//! link for its reply, hands it over, or takes it back (a reply that cannot be delivered, a
//! stop), and the other requests a stop lets finish.

use super::ops::Agent;
use crate::error::CliError;
use anyhow::Result;
use rdv::agent::state::Undelivered;
use rdv::client::ErrorKind;
use rdv::proto::{DeleteToken, RdvLink};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// How often the files of a delivered answer that could not be removed are tried again.
const FORGET_RETRY: Duration = Duration::from_secs(30);

impl Agent {
    /// Claim an offer's link for its reply, before the reply is sent: `Ok(false)` if a stop
    /// took the link back already (the reply must then say so, not hand over a deleted link).
    /// Claimed, a stop leaves it to the reply's delivery, and its record as undelivered goes
    /// (from here on a crash leaves the link on the server rather than take back a link its
    /// caller may hold). An error if that record cannot be removed: the reply must not go out.
    pub(super) fn claim(&self, back: &TakeBack) -> Result<bool> {
        let Some(record) = self.offers.claim(back.key) else {
            return Ok(false);
        };
        if let Some(record) = record {
            self.state.forget_undelivered(&record)?;
        }
        Ok(true)
    }

    /// A collected answer's reply was delivered: the offer's secrets and its answer go. Files
    /// that cannot be removed now leave the offer gone for the API all the same (an answer
    /// reaches one caller), and are removed by a task that tries again every 30 s.
    pub(super) fn collected(self: &Arc<Self>, offer: &str) {
        if let Ok(mut u) = self.unsaved.lock() {
            u.remove(offer);
        }
        if let Err(e) = self.state.forget(offer) {
            tracing::warn!(
                "a collected answer's files could not be removed (trying again every 30 s; the offer is gone for collect and status meanwhile, but a restart before then looks for the answer again): {}",
                rdv::config::report(&e)
            );
            if let Ok(mut d) = self.delivered.lock() {
                d.insert(offer.to_owned());
            }
            let (me, offer) = (self.clone(), offer.to_owned());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(FORGET_RETRY).await;
                    if me.state.forget(&offer).is_ok() {
                        if let Ok(mut d) = me.delivered.lock() {
                            d.remove(&offer);
                        }
                        return;
                    }
                }
            });
        }
        self.collect_ended(offer);
    }

    /// Whether `offer`'s answer was delivered and only its files are left.
    pub(super) fn was_delivered(&self, offer: &str) -> bool {
        self.delivered.lock().is_ok_and(|d| d.contains(offer))
    }

    /// A collect of `offer` is over (its reply delivered, failed, or without an answer): the
    /// next one may have the answer, if it is still kept.
    pub(super) fn collect_ended(&self, offer: &str) {
        if let Ok(mut c) = self.collecting.lock() {
            c.remove(offer);
        }
    }

    /// An offer's reply was delivered: its link is somebody's now.
    pub(super) fn handed_over(&self, back: TakeBack) {
        self.offers.settle(back.key);
    }

    /// Take back an offer whose link was handed to nobody: what was kept for it is forgotten,
    /// its later delete dropped, and the link deleted from the server. Says what happened.
    pub(super) async fn take_back(&self, back: TakeBack) -> &'static str {
        match self.offers.settle(back.key) {
            Some(s) => self.take_back_link(s).await,
            None => "nothing was handed over, and the link was taken back",
        }
    }

    /// The agent is stopping: refuse new offers, wake those held for their bucket's close (they
    /// take their links back), and wait for the offers in flight to deliver their replies or
    /// take their links back, for two thirds of `within`; then take back every stored offer
    /// whose reply has not been claimed, and wait for the rest until `within` (an offer whose
    /// store finishes now takes itself back). Returns how many links were taken back since the
    /// stop began, and how many could not be (their records stay: the next start tries again).
    pub(super) async fn stop_offers(&self, within: Duration) -> (usize, usize) {
        let start = tokio::time::Instant::now();
        self.offers.stopping.send_replace(true);
        // Multi-server offers waiting to store a further copy take back what they stored, and
        // deletes of copies (the take-backs below) go without their pauses.
        self.client.interrupt();
        let all_settled = || {
            tokio::time::timeout_at(
                start + within,
                self.offers
                    .in_flight
                    .clone()
                    .acquire_many_owned(OFFER_PERMITS),
            )
        };
        let settle_by = start + within * 2 / 3;
        let _ = tokio::time::timeout_at(settle_by, all_settled()).await;
        let left = self.offers.drain();
        let mut cut = left.len();
        for s in left {
            if tokio::time::timeout_at(start + within, self.take_back_link(s))
                .await
                .is_err()
            {
                break;
            }
            cut -= 1;
        }
        let _ = all_settled().await;
        (
            self.offers.taken_back.load(Ordering::Relaxed),
            self.offers.lost.load(Ordering::Relaxed) + cut,
        )
    }

    pub(super) async fn take_back_link(&self, s: Stored) -> &'static str {
        let Stored {
            link, token, kept, ..
        } = s;
        let record = kept.record.clone();
        if let Some(id) = &kept.offer {
            self.stop_looking(id);
            let _ = self.state.forget(id);
        }
        for id in &kept.deletes {
            if let Some(t) = self.deleters.lock().ok().and_then(|mut d| d.remove(id)) {
                t.abort();
            }
            let _ = self.state.forget_delete(id);
        }
        let deleted = self.client.delete(&link, &token).await.is_ok();
        // A link that could not be deleted keeps its record (written again if a claim removed
        // it already): the next start tries again.
        if let Some(record) = &record {
            let kept = match deleted {
                true => self.state.forget_undelivered(record),
                false => {
                    let (link, token) = kept_text(&link, &token);
                    let u = Undelivered {
                        link,
                        token,
                        offer: None,
                        deletes: Vec::new(),
                    };
                    self.state.save_undelivered(record, &u)
                }
            };
            if let Err(e) = kept {
                tracing::warn!(error = %rdv::config::report(&e), "the record of a link taken back could not be kept up to date");
            }
        }
        if self.offers.is_stopping() {
            let count = match deleted {
                true => &self.offers.taken_back,
                false => &self.offers.lost,
            };
            count.fetch_add(1, Ordering::Relaxed);
        }
        // Told to those who saw it `stored`: before, the offer just went (a helper's attack,
        // 2026-12-07), and a `collect` of it said `no_such_offer`.
        let mut f = serde_json::Map::new();
        if let Some(id) = &kept.offer {
            f.insert("offer".into(), serde_json::json!(id));
        }
        let servers: Vec<String> = link.servers().iter().map(|(s, _)| s.to_string()).collect();
        f.insert("servers".into(), serde_json::json!(servers));
        f.insert("deleted".into(), serde_json::json!(deleted));
        self.event(rdv::agent::api::event::TAKEN_BACK, f);
        match deleted {
            true => "nothing was handed over, and the link was deleted from the server",
            false => "nothing was handed over; the link could not be deleted now (the next start of the agent tries again; it expires by itself otherwise)",
        }
    }
}

/// What a request leaves to the delivery of its reply.
pub(super) enum AfterReply {
    /// An offer's stored link.
    Offer(TakeBack),
    /// The answer to this offer went out in the reply: forgotten once delivered, kept for the
    /// next `collect` if not.
    Collected(String),
    /// The answer went out in the reply of a `collect` with `keep`: the collect stays in
    /// progress (another gets `collect_in_progress`) until this connection's `forget` of the
    /// offer forgets it as a delivered answer, or the connection ends (kept for the next one).
    Kept(String),
}

/// A stored offer whose reply is on its way: hand it to [`Agent::handed_over`] once delivered,
/// or to [`Agent::take_back`].
pub(super) struct TakeBack {
    pub(super) key: u64,
}

/// A stored offer without a delivered reply: everything to take it back.
pub(super) struct Stored {
    link: RdvLink,
    token: DeleteToken,
    kept: Kept,
    /// Its reply is being delivered (a stop leaves it alone).
    claimed: bool,
}

impl Stored {
    pub(super) fn of(offer: &rdv::client::Offer) -> Self {
        Stored {
            link: offer.link.clone(),
            token: offer.delete_token.clone(),
            kept: Kept::default(),
            claimed: false,
        }
    }
}

/// The stored offers without a delivered reply, by a random key.
#[derive(Default)]
struct Ledger {
    stored: HashMap<u64, Stored>,
    /// A stop has taken back what was unclaimed: later stores take themselves back.
    drained: bool,
}

/// More offers than can ever be in flight at once: a stop takes them all to know none is left.
const OFFER_PERMITS: u32 = 1 << 20;

/// The offers between their request and the delivery of their reply.
pub(super) struct Offers {
    /// Each stored offer whose reply has not been delivered.
    ledger: Mutex<Ledger>,
    /// One permit per offer in flight.
    in_flight: Arc<Semaphore>,
    /// Set when the agent begins to stop.
    stopping: watch::Sender<bool>,
    /// Links taken back since the stop began.
    taken_back: AtomicUsize,
    /// Links the stop tried to take back and could not delete.
    lost: AtomicUsize,
}

impl Offers {
    pub(super) fn new() -> Self {
        Offers {
            ledger: Mutex::default(),
            in_flight: Arc::new(Semaphore::new(OFFER_PERMITS as usize)),
            stopping: watch::Sender::new(false),
            taken_back: AtomicUsize::new(0),
            lost: AtomicUsize::new(0),
        }
    }

    /// An offer request's place in flight, from before it is carried out until its reply is
    /// delivered (or its link taken back): a stop waits for it. None once the agent is
    /// stopping (the offer is then refused).
    pub(super) fn enter(&self) -> Option<OwnedSemaphorePermit> {
        if self.is_stopping() {
            return None;
        }
        self.in_flight.clone().try_acquire_owned().ok()
    }

    pub(super) fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// What says when the agent begins to stop.
    pub(super) fn on_stop(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Note a stored offer; its key. None once a stop has taken back the unclaimed ones: the
    /// caller takes this one back itself.
    pub(super) fn note(&self, stored: Stored) -> Option<u64> {
        let mut l = self.ledger();
        if l.drained {
            return None;
        }
        let key = rand::random::<u64>();
        l.stored.insert(key, stored);
        Some(key)
    }

    /// Note what was kept for stored offer `key`; `false` if a stop took it back meanwhile.
    pub(super) fn keep(&self, key: u64, f: impl FnOnce(&mut Kept)) -> bool {
        match self.ledger().stored.get_mut(&key) {
            Some(s) => {
                f(&mut s.kept);
                true
            }
            None => false,
        }
    }

    /// Claim stored offer `key` for its reply: its record as undelivered, if it has one;
    /// `None` if a stop took it back.
    fn claim(&self, key: u64) -> Option<Option<String>> {
        let mut l = self.ledger();
        let s = l.stored.get_mut(&key)?;
        s.claimed = true;
        Some(s.kept.record.clone())
    }

    /// Stored offer `key` is settled (delivered or to be taken back): what takes it back, unless
    /// it was settled before (a stop took it back).
    fn settle(&self, key: u64) -> Option<Stored> {
        self.ledger().stored.remove(&key)
    }

    /// For a stop: every stored offer whose reply has not been claimed, removed; later stores
    /// are not noted any more.
    fn drain(&self) -> Vec<Stored> {
        let mut l = self.ledger();
        l.drained = true;
        let keys: Vec<u64> = l
            .stored
            .iter()
            .filter(|(_, s)| !s.claimed)
            .map(|(k, _)| *k)
            .collect();
        keys.iter().filter_map(|k| l.stored.remove(k)).collect()
    }
}

/// The requests other than offers being carried out, counted so that a stop lets them finish:
/// a delete (a command taking back a link it could not hand over), an accept's answer, a
/// collect. Unlike offers they are still taken while the agent stops.
pub(super) struct Requests(watch::Sender<usize>);

/// One request counted in [`Requests`] until dropped.
pub(super) struct InFlight(watch::Sender<usize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Requests {
    pub(super) fn new() -> Self {
        Requests(watch::Sender::new(0))
    }

    pub(super) fn enter(&self) -> InFlight {
        self.0.send_modify(|n| *n += 1);
        InFlight(self.0.clone())
    }

    /// Wait until no request is in flight, or until `deadline`; how many are left.
    pub(super) async fn settle(&self, deadline: tokio::time::Instant) -> usize {
        let mut n = self.0.subscribe();
        let _ = tokio::time::timeout_at(deadline, n.wait_for(|n| *n == 0)).await;
        let left = *n.borrow();
        left
    }
}

pub(super) fn stopping() -> anyhow::Error {
    CliError::new(
        "agent_stopping",
        ErrorKind::Transient,
        "the agent is stopping; an offer not yet handed over is taken back",
    )
    .into()
}

/// What the agent kept for an offer, to forget if the offer cannot be finished.
#[derive(Default, Clone)]
pub(super) struct Kept {
    pub(super) offer: Option<String>,
    /// The later deletes decided at the offer, one per copy.
    pub(super) deletes: Vec<String>,
    /// Its record as undelivered (`undelivered/ID`).
    pub(super) record: Option<String>,
}

/// A link without its passphrase and its deletion token, as kept in the state directory (a
/// copy of the directory must not open the link).
pub(crate) fn kept_text(
    link: &RdvLink,
    token: &DeleteToken,
) -> (zeroize::Zeroizing<String>, zeroize::Zeroizing<String>) {
    (
        zeroize::Zeroizing::new(link.without_passphrase().to_uri().to_string()),
        zeroize::Zeroizing::new(token.to_text().to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Stored {
        let link = RdvLink::parse(&format!(
            "rdv1:127.0.0.1:7625?l={}&s={}&k=test",
            "A".repeat(43),
            "A".repeat(22)
        ))
        .unwrap();
        Stored {
            link,
            token: DeleteToken::from_bytes([1; 32]),
            kept: Kept::default(),
            claimed: false,
        }
    }

    /// What a stop takes back: every stored offer whose reply was not claimed; a claimed one
    /// is left to its delivery, a reply not yet claimed cannot claim any more (its link is
    /// gone), and an offer stored after the stop's sweep is not noted (it takes itself back).
    #[test]
    fn a_stop_takes_back_the_unclaimed_and_nothing_is_claimed_after_it() {
        let o = Offers::new();
        let (delivering, waiting, kept) = (
            o.note(stored()).unwrap(),
            o.note(stored()).unwrap(),
            o.note(stored()).unwrap(),
        );
        assert!(o.keep(kept, |k| k.offer = Some("o1".into())));
        assert!(o.claim(delivering).is_some());
        let swept = o.drain();
        assert_eq!(swept.len(), 2);
        assert!(swept.iter().any(|s| s.kept.offer.as_deref() == Some("o1")));
        assert!(
            o.claim(waiting).is_none(),
            "a swept link was claimed for a reply"
        );
        assert!(!o.keep(kept, |_| {}));
        assert!(
            o.note(stored()).is_none(),
            "a store after the sweep was noted"
        );
        assert!(o.settle(delivering).is_some(), "the claimed one was swept");
    }
}
