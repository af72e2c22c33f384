//! The real client against the adversarial server's modes: how often does the client notice?
//!
//! Each mode runs an in-process server (redb store, `ServerConfig::adversary`) at two traffic
//! levels: low (one offer every 10 s) and a burst (40 offers within one second). Every offer is
//! followed by its accept. A detection is an offer the client refuses (its bucket failed the
//! policy) or an accept that fails because the server misbehaved.

use anyhow::Result;
use rdv::client::pipe::PipeConnector;
use rdv::client::{Client, ClientConfig, ErrorKind, OfferError};
use rdv::clock::ManualClock;
use rdv::proto::padding::FillerSecret;
use rdv::proto::{KdfProfile, Passphrase, ServerAddr};
use rdv::server::adversary::Adversary;
use rdv::server::{Server, ServerConfig};
use rdv::store::{DiskStore, DiskStoreConfig, StoreParams};
use std::sync::Arc;

/// One row of the detection table.
pub struct Detection {
    pub mode: String,
    pub level: &'static str,
    pub offers: usize,
    pub detected: usize,
    /// Offers the server answered `Overloaded` (it cannot open more buckets this second without
    /// sequence numbers the client would refuse).
    pub throttled: usize,
    /// Accepts that opened their payload although the server misbehaved.
    pub opened: usize,
    /// Mean real links (not the accepter's own, not dummies) the accepter's bucket held.
    pub others: f64,
    /// Mean count of verified links the accepter was shown (its own included).
    pub verified: f64,
    /// Accepts that were shown at most one verified link: the accepter sees that it has no
    /// company.
    pub alone: usize,
}

/// The stamps' effort in the detection runs: the count does not depend on it.
const EFFORT: u32 = 4;

/// Run `mode` (with `max_seq` as the server's highest sequence number) at one level.
async fn run(
    mode: Option<Adversary>,
    max_seq: u16,
    level: &'static str,
    label: &str,
) -> Result<Detection> {
    const T0: u64 = 1_800_000_000;
    let dir = tempfile::tempdir()?;
    let clock = ManualClock::new(T0);
    let store = DiskStore::open(
        dir.path(),
        DiskStoreConfig {
            params: StoreParams {
                max_seq,
                ..Default::default()
            },
            bucket_capacity: mode.map_or(64, |m| m.bucket_capacity(0)),
            ..Default::default()
        },
        FillerSecret::from_bytes([7; 32]),
    )?;
    let config = ServerConfig {
        adversary: mode,
        stamp_effort: EFFORT,
        ..Default::default()
    };
    let server = Server::new(store, config, Arc::new(clock.clone()))?;
    let mut config = ClientConfig {
        retry_budget: std::time::Duration::ZERO,
        ..Default::default()
    };
    config.policy.min_effort = EFFORT;
    let client = Client::new(
        Arc::new(PipeConnector::to_server(server.clone())),
        config,
        Arc::new(clock.clone()),
    );
    let addr = ServerAddr::parse("adversary.invalid:7625")?;
    let (offers, step) = match level {
        "low" => (20, 10),
        _ => (40, 0),
    };
    let mut d = Detection {
        mode: label.to_string(),
        level,
        offers,
        detected: 0,
        throttled: 0,
        opened: 0,
        others: 0.0,
        verified: 0.0,
        alone: 0,
    };
    let mut buckets = std::collections::HashMap::new();
    let mut opened = Vec::new();
    for i in 0..offers {
        let payload = format!("smp://adv/{i}");
        match client
            .offer(
                &addr,
                payload.as_bytes(),
                Passphrase::new(format!("adversary {i}")),
                KdfProfile::Test,
            )
            .await
        {
            Ok(o) => {
                *buckets.entry(o.bucket).or_insert(0usize) += 1;
                opened.push((o, payload));
            }
            Err(
                OfferError::Refused { .. }
                | OfferError::RefusedChallenge(_)
                | OfferError::UnacceptableServer(_),
            ) => d.detected += 1,
            Err(e) if e.kind() == ErrorKind::ServerMisbehaved => d.detected += 1,
            Err(e) if e.kind() == ErrorKind::Transient => d.throttled += 1,
            Err(e) => anyhow::bail!("{label}: offer {i}: {e}"),
        }
        clock.advance(step);
    }
    for (o, payload) in &opened {
        match client.accept(&o.link, None).await {
            Ok(found) if found.payload.as_slice() == payload.as_bytes() => {
                d.opened += 1;
                d.others += (buckets[&o.bucket] - 1) as f64;
                let k = found.links_verified.unwrap_or(0);
                d.verified += k as f64;
                if k <= 1 {
                    d.alone += 1;
                }
            }
            Ok(_) => anyhow::bail!("{label}: an accept opened the wrong payload"),
            Err(e) if e.kind() == ErrorKind::ServerMisbehaved => d.detected += 1,
            Err(e) => anyhow::bail!("{label}: accept: {e}"),
        }
    }
    if d.opened > 0 {
        d.others /= d.opened as f64;
        d.verified /= d.opened as f64;
    }
    server.shutdown();
    Ok(d)
}

/// Every mode at both levels (the isolating server twice: throttled at the policy's 33 buckets
/// per second, which no client can see, and handing out sequence numbers beyond it).
pub async fn table() -> Result<Vec<Detection>> {
    let mut rows = Vec::new();
    for level in ["low", "burst"] {
        rows.push(run(None, 32, level, "honest").await?);
        for mode in Adversary::ALL {
            if mode == Adversary::Isolate {
                if level == "low" {
                    rows.push(run(Some(mode), 32, level, "isolate (throttled)").await?);
                }
                rows.push(run(Some(mode), u16::MAX, level, "isolate (unthrottled)").await?);
                continue;
            }
            rows.push(run(Some(mode), 32, level, mode.as_str()).await?);
        }
    }
    Ok(rows)
}

/// What deceiving one client costs a server that pays for stamps on its fakes.
pub struct Cost {
    pub mode: &'static str,
    pub budget: usize,
    /// The count of verified links the victim's accepter was shown.
    pub shown: usize,
    /// Seconds the server spent on the victim's store, its fakes' stamps included.
    pub seconds: f64,
}

/// Seconds one stamp of `effort` takes on this machine (mean of `n`), measured in the run.
pub fn stamp_seconds(effort: u32, n: usize) -> f64 {
    let ch = rdv::proto::stamp::Challenge {
        id: rdv::proto::BucketId {
            created: 1_800_000_000,
            seq: 0,
        },
        seed: rdv::proto::StampSeed([1; 32]),
        effort,
    };
    let name = rdv::proto::stamp::ServerName([2; 32]);
    let t = std::time::Instant::now();
    for i in 0..n {
        let link = rdv::proto::SealedLink([i as u8; 256]);
        let _ = rdv::proto::stamp::solve(&name, &ch, &link, [0; 16], u64::MAX);
    }
    t.elapsed().as_secs_f64() / n as f64
}

/// One victim of an isolating or dummy-filling server that stamps `budget` fakes at `effort`:
/// what its accepter is shown, and the seconds of work the server spent on it.
pub async fn cost(mode: Adversary, budget: usize, effort: u32) -> Result<Cost> {
    const T0: u64 = 1_800_000_000;
    let dir = tempfile::tempdir()?;
    let clock = ManualClock::new(T0);
    let store = DiskStore::open(
        dir.path(),
        DiskStoreConfig {
            bucket_capacity: mode.bucket_capacity(budget),
            ..Default::default()
        },
        FillerSecret::from_bytes([7; 32]),
    )?;
    let config = ServerConfig {
        adversary: Some(mode),
        adversary_stamp_budget: budget,
        stamp_effort: effort,
        ..Default::default()
    };
    let server = Server::new(store, config, Arc::new(clock.clone()))?;
    let mut config = ClientConfig::default();
    config.policy.min_effort = effort;
    let client = Client::new(
        Arc::new(PipeConnector::to_server(server.clone())),
        config,
        Arc::new(clock.clone()),
    );
    let addr = ServerAddr::parse("adversary.invalid:7625")?;
    // The victim's own stamp is the client's work: time the store the fakes follow by itself.
    let t = std::time::Instant::now();
    let o = client
        .offer(
            &addr,
            b"victim",
            Passphrase::new("victim"),
            KdfProfile::Test,
        )
        .await?;
    let total = t.elapsed().as_secs_f64();
    let shown = client
        .accept(&o.link, None)
        .await?
        .links_verified
        .unwrap_or(0);
    server.shutdown();
    Ok(Cost {
        mode: mode.as_str(),
        budget,
        shown,
        seconds: total,
    })
}
