//! One run of the traffic model against a real server: an in-process `rdv` server over the redb
//! store in a temporary directory, reached by the library client through in-memory pipes, on a
//! manual clock so that hours of traffic take seconds. Every operation is a real request
//! (offers seal and store, accepts fetch and trial-decrypt 64 links, deletes prove their token).
//!
//! What is recorded is what the server's request stream shows: the time and bucket of each
//! store, fetch and delete (a delete names its link through the token's check). Which fetch
//! belongs to which offer is kept apart, as the ground truth the attack is scored against.

use crate::attack::{self, Linking, StoredLink, TimingModel};
use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rdv::client::pipe::PipeConnector;
use rdv::client::{Client, ClientConfig};
use rdv::clock::ManualClock;
use rdv::proto::padding::FillerSecret;
use rdv::proto::{KdfProfile, Passphrase, ServerAddr};
use rdv::server::{Server, ServerConfig};
use rdv::store::{DiskStore, DiskStoreConfig, StoreParams};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

/// One traffic model.
#[derive(Clone, Copy, Debug)]
pub struct Model {
    /// Offers per minute (Poisson).
    pub rate_per_min: f64,
    /// The server's open window, seconds.
    pub window: u64,
    /// Simulated time, seconds (offers arrive during it; accepts may come later).
    pub duration: u64,
    /// The timing of honest users (also what the attacker knows).
    pub timing: TimingModel,
    /// Seed of the run's randomness.
    pub seed: u64,
    /// Clients stamp their links and accepters count stamps (protocol version 3, at the
    /// lowest effort: what is counted does not depend on it); otherwise they speak version 2.
    pub stamps: bool,
}

/// A run's results.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Real links per bucket when its window closed.
    pub k_close: Vec<usize>,
    /// The attack on each accept.
    pub accepts: Vec<Linking>,
    /// The server's own metrics at the end: (k_close sum, count), (k_fetch sum, count).
    pub server_k_close: (f64, f64),
    pub server_k_fetch: (f64, f64),
    /// Per accept: the real links in the bucket (k_fetch) and what the accepter counted.
    pub verified: Vec<(usize, Option<usize>)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Offer(usize),
    Accept(usize),
    Delete(usize),
}

fn exp_sample(rng: &mut impl Rng, mean: f64) -> f64 {
    let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    -mean * u.ln()
}

/// A sample `rdv_NAME_sum` and `_count` from the server's metrics text.
fn sum_count(text: &str, name: &str) -> (f64, f64) {
    let get = |suffix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{suffix} "))?.parse().ok())
            .unwrap_or(0.0)
    };
    (get("_sum"), get("_count"))
}

/// Run `m`.
pub async fn run(m: &Model) -> Result<Outcome> {
    const T0: u64 = 1_800_000_000;
    let dir = tempfile::tempdir()?;
    let clock = ManualClock::new(T0);
    let params = StoreParams {
        open_window_secs: m.window,
        ttl_secs: 7 * 86400,
        max_links: None,
        max_seq: 32,
        ..Default::default()
    };
    let store = DiskStore::open(
        dir.path(),
        DiskStoreConfig {
            params,
            ..Default::default()
        },
        FillerSecret::from_bytes([7; 32]),
    )
    .context("opening the store")?;
    let server = Server::new(
        store,
        ServerConfig {
            stamp_effort: 1,
            // Each value at once: the lab compares the server's figures with its own exactly.
            metrics_batch: 1,
            ..Default::default()
        },
        Arc::new(clock.clone()),
    )?;
    let mut config = ClientConfig {
        max_version: if m.stamps { 3 } else { 2 },
        ..Default::default()
    };
    config.policy.min_effort = 1;
    // Clients configured for the server's window (`--max-window`): the close counts from it.
    config.policy.max_open_window_secs = m.window;
    let client = Client::new(
        Arc::new(PipeConnector::to_server(server.clone())),
        config,
        Arc::new(clock.clone()),
    );
    let addr = ServerAddr::parse("lab.invalid:7625")?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(m.seed);

    // The schedule: offers first; accepts and deletes are scheduled as offers land.
    let mut queue: BinaryHeap<Reverse<(u64, Event)>> = BinaryHeap::new();
    let mut t = 0.0;
    let mut n = 0;
    loop {
        t += exp_sample(&mut rng, 60.0 / m.rate_per_min);
        if t >= m.duration as f64 {
            break;
        }
        queue.push(Reverse((t as u64, Event::Offer(n))));
        n += 1;
    }

    let mut offers = Vec::with_capacity(n);
    let mut links: Vec<StoredLink> = Vec::with_capacity(n);
    let mut buckets: HashMap<rdv::proto::BucketId, usize> = HashMap::new();
    let mut close: Vec<f64> = Vec::new();
    // When each bucket counts as closed to every client (the hand-over with --hold).
    let mut closed_to_all: Vec<f64> = Vec::new();
    let mut accepted_at: HashMap<usize, f64> = HashMap::new();
    let mut outcome = Outcome::default();
    let mut now = 0u64;
    // Requests in one second are told apart by their order, as the server sees them.
    let mut order = 0u64;
    let mut at_now = |now: u64| {
        order += 1;
        now as f64 + order as f64 * 1e-9
    };
    while let Some(Reverse((at, ev))) = queue.pop() {
        if at > now {
            clock.advance(at - now);
            now = at;
            // Windows that ended by now are counted before anything happens at this time, as
            // the server's refresh loop counts them the moment they end.
            server.refresh_metrics().await;
        }
        match ev {
            Event::Offer(i) => {
                let payload = format!("smp://lab/{i}");
                let offer = client
                    .offer(
                        &addr,
                        payload.as_bytes(),
                        Passphrase::new(format!("lab passphrase {i}")),
                        KdfProfile::Test,
                    )
                    .await
                    .with_context(|| format!("offer {i}"))?;
                let next = buckets.len();
                let b = *buckets.entry(offer.bucket).or_insert(next);
                if b == close.len() {
                    close.push((offer.bucket.created - T0 + m.window) as f64);
                    closed_to_all.push((offer.closes_at - T0) as f64);
                }
                links.push(StoredLink {
                    stored: at_now(now),
                    bucket: b,
                    deleted: None,
                });
                let handed = if m.timing.hold {
                    closed_to_all[b]
                } else {
                    now as f64
                };
                let accept = handed + exp_sample(&mut rng, m.timing.mean_accept_delay);
                queue.push(Reverse((accept.ceil() as u64, Event::Accept(i))));
                offers.push(offer);
            }
            Event::Accept(i) => {
                let found = client
                    .accept(&offers[i].link, None)
                    .await
                    .with_context(|| format!("accept {i}"))?;
                anyhow::ensure!(
                    found.payload.as_slice() == format!("smp://lab/{i}").as_bytes(),
                    "accept {i} opened the wrong payload"
                );
                let at = at_now(now);
                let real = links
                    .iter()
                    .filter(|l| {
                        l.bucket == links[i].bucket
                            && l.stored <= at
                            && l.deleted.is_none_or(|d| d > at)
                    })
                    .count();
                outcome.verified.push((real, found.links_verified));
                accepted_at.insert(i, at);
                if let Some(mean) = m.timing.mean_delete_delay {
                    let d = now as f64 + exp_sample(&mut rng, mean);
                    // The delete follows its accept.
                    queue.push(Reverse((d.ceil() as u64, Event::Delete(i))));
                }
            }
            Event::Delete(i) => {
                client
                    .delete(&offers[i].link, &offers[i].delete_token)
                    .await
                    .with_context(|| format!("delete {i}"))?;
                links[i].deleted = Some(at_now(now));
            }
        }
    }
    // Close every window, then read what the server itself measured.
    clock.advance(m.window + 1);
    server.refresh_metrics().await;
    let text = server.metrics_text();
    outcome.server_k_close = sum_count(&text, "rdv_bucket_links_at_close");
    outcome.server_k_fetch = sum_count(&text, "rdv_fetch_candidates");

    for (b, c) in close.iter().enumerate() {
        let k = links
            .iter()
            .filter(|l| l.bucket == b && l.deleted.is_none_or(|d| d >= *c))
            .count();
        outcome.k_close.push(k);
    }
    let mut accepted: Vec<_> = accepted_at.into_iter().collect();
    accepted.sort_by_key(|(i, _)| *i);
    for (i, at) in accepted {
        outcome.accepts.push(attack::link(
            &links,
            &closed_to_all,
            links[i].bucket,
            at,
            i,
            &m.timing,
        ));
    }
    server.shutdown();
    Ok(outcome)
}
