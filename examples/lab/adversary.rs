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
}

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
        ..Default::default()
    };
    let server = Server::new(store, config, Arc::new(clock.clone()))?;
    let client = Client::new(
        Arc::new(PipeConnector::to_server(server.clone())),
        ClientConfig {
            retry_budget: std::time::Duration::ZERO,
            ..Default::default()
        },
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
            }
            Ok(_) => anyhow::bail!("{label}: an accept opened the wrong payload"),
            Err(e) if e.kind() == ErrorKind::ServerMisbehaved => d.detected += 1,
            Err(e) => anyhow::bail!("{label}: accept: {e}"),
        }
    }
    if d.opened > 0 {
        d.others /= d.opened as f64;
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
