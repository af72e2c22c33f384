//! The load runner: concurrent client tasks, bounded by operation count and duration.

use crate::ops::{self, fetch, random_link, store};
use crate::{OpKind, OP_TIMEOUT, SEQS_PER_SECOND};
use anyhow::{anyhow, bail, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdv::client::{Client, Connection};
use rdv::proto::{seal, BucketId, DeleteCheck, LinkKey, Locator};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which buckets fetches go to.
#[derive(Clone)]
pub(crate) enum Targets {
    /// None (fetch ops are not used).
    None,
    /// The buckets a preload created: IDs `first.created + k / 65536`, seq `k % 65536`.
    Preloaded { first_created: u64, buckets: u64 },
    /// Always this one bucket.
    Fixed(Locator),
    /// One of these buckets, at random.
    List(Arc<Vec<Locator>>),
}

impl Targets {
    pub(crate) fn pick(&self, rng: &mut StdRng) -> Option<Locator> {
        match self {
            Targets::None => None,
            Targets::Preloaded {
                first_created,
                buckets,
            } => Some(preloaded_id(*first_created, rng.gen_range(0..*buckets)).locator()),
            Targets::Fixed(l) => Some(*l),
            Targets::List(ls) if !ls.is_empty() => Some(ls[rng.gen_range(0..ls.len())]),
            Targets::List(_) => None,
        }
    }
}

/// The ID of the `k`-th bucket of a preload into an empty store at a fixed time: the allocator
/// counts seq up within the second and moves on to the next second after seq 65535.
pub(crate) fn preloaded_id(first_created: u64, k: u64) -> BucketId {
    BucketId {
        created: first_created + k / SEQS_PER_SECOND,
        seq: (k % SEQS_PER_SECOND) as u16,
    }
}

#[derive(Clone)]
pub(crate) struct LoadSpec {
    /// Stores reuse one connection per client (isolates the storage engine from TCP setup).
    pub(crate) persistent: bool,
    pub(crate) clients: usize,
    pub(crate) ops: u64,
    pub(crate) duration: Duration,
    /// Weights of store, fetch, rendezvous.
    pub(crate) mix: [u32; 3],
    pub(crate) targets: Targets,
}

pub(crate) struct Sample {
    pub(crate) kind: OpKind,
    pub(crate) end: Instant,
    pub(crate) latency: Duration,
    pub(crate) ok: bool,
}

pub(crate) struct LoadResult {
    pub(crate) samples: Vec<Sample>,
    pub(crate) elapsed: Duration,
    pub(crate) errors: BTreeMap<String, u64>,
}

pub(crate) async fn run_load(addr: SocketAddr, spec: LoadSpec) -> LoadResult {
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + spec.duration;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..spec.clients {
        let (spec, issued) = (spec.clone(), issued.clone());
        set.spawn(client_task(addr, spec, issued, deadline));
    }
    let mut samples = Vec::new();
    let mut errors = BTreeMap::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((s, e)) => {
                samples.extend(s);
                for (k, n) in e {
                    *errors.entry(k).or_insert(0) += n;
                }
            }
            Err(e) => *errors.entry(format!("client task: {e}")).or_insert(0) += 1,
        }
    }
    let elapsed = samples
        .iter()
        .map(|s| s.end)
        .max()
        .map_or(Duration::ZERO, |e| e - start);
    LoadResult {
        samples,
        elapsed,
        errors,
    }
}

pub(crate) async fn client_task(
    addr: SocketAddr,
    spec: LoadSpec,
    issued: Arc<AtomicU64>,
    deadline: Instant,
) -> (Vec<Sample>, BTreeMap<String, u64>) {
    let mut rng = StdRng::from_entropy();
    let client = ops::client(addr);
    let mut conn: Option<Connection> = None;
    let total: u32 = spec.mix.iter().sum();
    let mut samples = Vec::new();
    let mut errors = BTreeMap::new();
    while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < spec.ops {
        let mut r = rng.gen_range(0..total.max(1));
        let kind = if r < spec.mix[0] {
            OpKind::Store
        } else {
            r -= spec.mix[0];
            if r < spec.mix[1] {
                OpKind::Fetch
            } else {
                OpKind::Rendezvous
            }
        };
        let t0 = Instant::now();
        let op = async {
            if spec.persistent && kind == OpKind::Store {
                store_persistent(&client, &mut conn, &mut rng).await
            } else {
                one_op(&client, kind, &spec, &mut rng).await
            }
        };
        let res = match tokio::time::timeout(OP_TIMEOUT, op).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!("timed out after {OP_TIMEOUT:?}")),
        };
        let end = Instant::now();
        if let Err(e) = &res {
            let msg: String = format!("{}: {e:#}", kind.name())
                .chars()
                .take(120)
                .collect();
            *errors.entry(msg).or_insert(0) += 1;
        }
        samples.push(Sample {
            kind,
            end,
            latency: end - t0,
            ok: res.is_ok(),
        });
    }
    (samples, errors)
}

/// A store on the client's long-lived connection (opened, with Hello, on first use).
pub(crate) async fn store_persistent(
    client: &Client,
    conn: &mut Option<Connection>,
    rng: &mut StdRng,
) -> Result<()> {
    if conn.is_none() {
        *conn = Some(ops::connect(client).await?);
    }
    let s = conn.as_mut().ok_or_else(|| anyhow!("no connection"))?;
    let (link, delete_check) = random_link(rng);
    match ops::store_on(s, link, delete_check).await {
        Ok(_) => Ok(()),
        Err(e) => {
            *conn = None;
            Err(e)
        }
    }
}

pub(crate) async fn one_op(
    addr: &Client,
    kind: OpKind,
    spec: &LoadSpec,
    rng: &mut StdRng,
) -> Result<()> {
    match kind {
        OpKind::Store => {
            let (link, check) = random_link(rng);
            store(addr, link, check).await.map(drop)
        }
        OpKind::Fetch => {
            let loc = spec
                .targets
                .pick(rng)
                .ok_or_else(|| anyhow!("no fetch targets"))?;
            fetch(addr, loc).await.map(drop)
        }
        OpKind::Rendezvous => {
            // Initiator: seal and store. Accepter: fetch and trial-decrypt all 64 links. Every
            // rendezvous has its own key (its own salt in real use); the KDF is not run.
            let key = &LinkKey::from_bytes(rng.gen());
            let payload = format!("smp://bench.example/queue/{:016x}", rng.gen::<u64>());
            let link = seal::seal(key, payload.as_bytes(), rng.gen())?;
            let id = store(addr, link, DeleteCheck(rng.gen())).await?;
            let links = fetch(addr, id.locator()).await?;
            match seal::trial_open(key, &links) {
                Some((_, p)) if p.payload[..] == *payload.as_bytes() => Ok(()),
                _ => bail!("own link not found in its bucket"),
            }
        }
    }
}
