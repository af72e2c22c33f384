//! The whole answer flow against a real server: offers that expect an answer and offers that do
//! not, accepts, answers, every look the initiators make into their mailboxes, and their
//! deletes, each at the moment the client policy under test sends it. Like `sim.rs`: an
//! in-process server over the redb store, the library client through in-memory pipes, a manual
//! clock.
//!
//! Recorded is what the server's request stream shows (`flow_attack::FlowView`): the time and
//! bucket of every store and fetch, which link each delete names, and the time and mailbox of
//! every look and answer. The ground truth (which fetch accepted which link, which links were
//! answered) is kept apart to score the attack.

use crate::attack::{Linking, StoredLink};
use crate::flow_attack::{self, DeleteModel, Fetch, FlowModel, FlowView, MailboxRequest};
use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rdv::client::pipe::PipeConnector;
use rdv::client::{Client, ClientConfig, Offer, PendingAnswer, ReplyTo};
use rdv::clock::ManualClock;
use rdv::proto::padding::FillerSecret;
use rdv::proto::schedule::exponential;
use rdv::proto::{KdfProfile, Passphrase, ServerAddr};
use rdv::server::{Server, ServerConfig};
use rdv::store::{DiskStore, DiskStoreConfig, StoreParams};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// What clients do in the answer flow.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub label: &'static str,
    /// Initiators hand the link over when the bucket closes (`--hold`).
    pub hold: bool,
    /// The first look waits for the bucket's close (else it comes right after the store).
    pub looks_from_close: bool,
    /// Mean pause between looks, seconds.
    pub look_mean: f64,
    /// Pauses are exponential (else fixed, and the first look comes right at its moment).
    pub poisson: bool,
    /// The accepter answers this long after its fetch (mean, exponential); `None`: at once.
    pub put_delay: Option<f64>,
    /// When initiators delete their link.
    pub delete: Delete,
}

/// When initiators delete their link.
#[derive(Clone, Copy, Debug)]
pub enum Delete {
    /// Never: the link expires.
    Never,
    /// This long after the look that found the answer (mean, exponential; 0: at once).
    AfterAnswer(f64),
    /// This long after the bucket closed; every initiator (`all`) or only those that expect an
    /// answer.
    AfterClose { after: f64, all: bool },
}

impl Policy {
    /// What the attacker knows of it.
    fn model(&self, mean_accept_delay: f64, decoy_weight: f64) -> FlowModel {
        // "At once" still takes a moment: the attacker's model of it is a mean of a second.
        let at_once = |mean: f64| mean.max(1.0);
        FlowModel {
            mean_accept_delay,
            hold: self.hold,
            looks_from_close: self.looks_from_close,
            first_look_mean: if self.poisson {
                self.look_mean
            } else {
                at_once(0.0)
            },
            put_mean: at_once(self.put_delay.unwrap_or(0.0)),
            delete: match self.delete {
                Delete::Never => DeleteModel::Never,
                Delete::AfterAnswer(mean) => DeleteModel::AfterAnswer(at_once(mean)),
                // Deletes of every link tell nothing about who expects an answer.
                Delete::AfterClose { all: true, .. } => DeleteModel::Never,
                Delete::AfterClose { after, all: false } => DeleteModel::AfterClose(after),
            },
            decoy_weight,
        }
    }
}

/// One run.
#[derive(Clone, Copy, Debug)]
pub struct FlowRun {
    /// Offers per minute (Poisson).
    pub rate_per_min: f64,
    /// The server's open window, seconds.
    pub window: u64,
    /// Offers arrive during this long, seconds.
    pub duration: u64,
    /// Mean accept delay after the hand-over, seconds (exponential).
    pub mean_accept_delay: f64,
    /// Share of offers that expect (and get) an answer.
    pub answered_share: f64,
    pub policy: Policy,
    pub seed: u64,
    /// Cover traffic on the whole server: decoy mailboxes started per hour (each looked into
    /// like a real one for an exponential time of mean 10 min) and decoy fetches per hour, as
    /// `rdv agent --cover-mailboxes/--cover-fetches` sends them.
    pub cover: Cover,
}

/// Cover traffic (rates per hour, for the whole server).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cover {
    pub mailboxes_per_hour: f64,
    pub fetches_per_hour: f64,
}

/// A run's results.
#[derive(Debug, Default)]
pub struct FlowOutcome {
    /// The attack on every accept, and whether that link was answered.
    pub accepts: Vec<(Linking, bool)>,
    /// Looks into mailboxes per answered offer.
    pub looks_per_answer: f64,
    /// Mean time from the accepter's answer to the look that found it, seconds.
    pub answer_latency: f64,
    /// Cover requests the server saw per hour (decoy looks and decoy fetches).
    pub cover_per_hour: f64,
    /// From the server's own metrics: deletes within 60 s of their bucket's latest fetch, and
    /// deletes in all.
    pub server_deletes_within_60s: f64,
    pub server_deletes: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Offer(usize),
    Accept(usize),
    Put(usize),
    Look(usize),
    Delete(usize),
    /// A decoy mailbox starts (its index among decoys).
    DecoyStart(usize),
    /// A look into decoy mailbox `i`.
    DecoyLook(usize),
    DecoyFetch,
}

struct Link {
    offer: Offer,
    pending: Option<PendingAnswer>,
    reply: Option<ReplyTo>,
    /// The accept's fetch (an index into the view's fetches).
    fetch: Option<usize>,
    /// The mailbox's label, once the server has seen it.
    mailbox: Option<usize>,
    put_at: Option<f64>,
    found_at: Option<f64>,
}

fn draw(rng: &mut impl Rng, mean: f64) -> f64 {
    exponential(Duration::from_secs_f64(mean), rng.gen()).as_secs_f64()
}

/// A sample of the server's metrics text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Run `r`.
pub async fn run(r: &FlowRun) -> Result<FlowOutcome> {
    const T0: u64 = 1_800_000_000;
    let p = r.policy;
    let dir = tempfile::tempdir()?;
    let clock = ManualClock::new(T0);
    let params = StoreParams {
        open_window_secs: r.window,
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
    // Each metrics value at once: the lab reads the server's exact figures.
    let config = ServerConfig {
        metrics_batch: 1,
        ..Default::default()
    };
    let server = Server::new(store, config, Arc::new(clock.clone()))?;
    // The answer flow does not depend on stamps: the clients speak version 2.
    let client = Client::new(
        Arc::new(PipeConnector::to_server(server.clone())),
        ClientConfig {
            max_version: 2,
            // Clients configured for the server's window (`--max-window`): the close counts
            // from it.
            policy: rdv::proto::ClientPolicy {
                max_open_window_secs: r.window,
                ..Default::default()
            },
            ..Default::default()
        },
        Arc::new(clock.clone()),
    );
    let addr = ServerAddr::parse("lab.invalid:7625")?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(r.seed);

    // (time, order of scheduling, event): events of one second run in the order they were
    // scheduled, so "right after" stays after.
    let mut queue: BinaryHeap<Reverse<(u64, u64, Event)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |q: &mut BinaryHeap<_>, at: f64, ev: Event| {
        seq += 1;
        q.push(Reverse((at.ceil() as u64, seq, ev)));
    };
    let mut t = 0.0;
    let mut n = 0;
    loop {
        t += draw(&mut rng, 60.0 / r.rate_per_min);
        if t >= r.duration as f64 {
            break;
        }
        push(&mut queue, t, Event::Offer(n));
        n += 1;
    }
    // Cover, from the first offer's time until nearly every accept has come.
    let cover_end = (r.duration + r.window) as f64 + 3.0 * r.mean_accept_delay;
    for (rate, ev) in [
        (r.cover.mailboxes_per_hour, Event::DecoyStart(0)),
        (r.cover.fetches_per_hour, Event::DecoyFetch),
    ] {
        if rate <= 0.0 {
            continue;
        }
        let mut t = 0.0;
        let mut k = 0;
        loop {
            t += draw(&mut rng, 3600.0 / rate);
            if t >= cover_end {
                break;
            }
            let ev = match ev {
                Event::DecoyStart(_) => Event::DecoyStart(k),
                e => e,
            };
            push(&mut queue, t, ev);
            k += 1;
        }
    }
    // Per decoy mailbox: its label and when its looks stop.
    let mut decoys: HashMap<usize, (usize, f64)> = HashMap::new();
    let mut cover_requests = 0usize;

    let mut view = FlowView::default();
    let mut links: Vec<Link> = Vec::with_capacity(n);
    let mut buckets: HashMap<rdv::proto::BucketId, usize> = HashMap::new();
    let mut now = 0u64;
    let mut order = 0u64;
    let mut at_now = |now: u64| {
        order += 1;
        now as f64 + order as f64 * 1e-9
    };
    let mut looks = 0usize;
    let mailbox_of = |view: &mut FlowView, link: &mut Link| {
        *link.mailbox.get_or_insert_with(|| {
            view.mailboxes += 1;
            view.mailboxes - 1
        })
    };
    while let Some(Reverse((at, _, ev))) = queue.pop() {
        if at > now {
            clock.advance(at - now);
            now = at;
        }
        match ev {
            Event::Offer(i) => {
                let payload = format!("smp://lab/{i}");
                let pass = Passphrase::new(format!("lab passphrase {i}"));
                let answered = rng.gen_bool(r.answered_share);
                let (offer, pending) = if answered {
                    let (o, pa) = client
                        .offer_expecting_answer(&addr, payload.as_bytes(), pass, KdfProfile::Test)
                        .await
                        .with_context(|| format!("offer {i}"))?;
                    (o, Some(pa))
                } else {
                    let o = client
                        .offer(&addr, payload.as_bytes(), pass, KdfProfile::Test)
                        .await
                        .with_context(|| format!("offer {i}"))?;
                    (o, None)
                };
                let next = buckets.len();
                let b = *buckets.entry(offer.bucket).or_insert(next);
                if b == view.close.len() {
                    // The moment the client acts on (its hand-over with --hold, its first
                    // look, a delete after the close): the bucket closed to every client, from
                    // the bucket ID and the policy, as the library computes it.
                    debug_assert!(offer.closes_at >= offer.bucket.created + r.window);
                    view.close.push((offer.closes_at - T0) as f64);
                }
                view.links.push(StoredLink {
                    stored: at_now(now),
                    bucket: b,
                    deleted: None,
                });
                let close = view.close[b];
                let handed = if p.hold { close } else { now as f64 };
                push(
                    &mut queue,
                    handed + draw(&mut rng, r.mean_accept_delay),
                    Event::Accept(i),
                );
                if let Delete::AfterClose { after, all } = p.delete {
                    if all || pending.is_some() {
                        // As the agent: the delay plus a share of a tenth of it (at most
                        // ten minutes), drawn for each link.
                        let spread =
                            rdv::agent::schedule::scheduled_delete_spread(after as u64) as f64;
                        push(
                            &mut queue,
                            close + after + rng.gen::<f64>() * spread,
                            Event::Delete(i),
                        );
                    }
                }
                if pending.is_some() {
                    let from = if p.looks_from_close {
                        close
                    } else {
                        now as f64
                    };
                    let first = if p.poisson {
                        from + draw(&mut rng, p.look_mean)
                    } else {
                        from
                    };
                    push(&mut queue, first, Event::Look(i));
                }
                links.push(Link {
                    offer,
                    pending,
                    reply: None,
                    fetch: None,
                    mailbox: None,
                    put_at: None,
                    found_at: None,
                });
            }
            Event::Accept(i) => {
                let found = client
                    .accept(&links[i].offer.link, None)
                    .await
                    .with_context(|| format!("accept {i}"))?;
                anyhow::ensure!(
                    found.payload.as_slice() == format!("smp://lab/{i}").as_bytes(),
                    "accept {i} opened the wrong payload"
                );
                let bucket = view.links[i].bucket;
                links[i].fetch = Some(view.fetches.len());
                view.fetches.push(Fetch {
                    at: at_now(now),
                    bucket,
                });
                if let Some(reply) = found.reply {
                    links[i].reply = Some(reply);
                    let put = now as f64 + p.put_delay.map_or(0.0, |m| draw(&mut rng, m));
                    push(&mut queue, put, Event::Put(i));
                }
            }
            Event::Put(i) => {
                let reply = links[i].reply.take().context("a put without an accept")?;
                client
                    .answer(&reply, format!("answer {i}").as_bytes())
                    .await
                    .with_context(|| format!("answer {i}"))?;
                let mailbox = mailbox_of(&mut view, &mut links[i]);
                let at = at_now(now);
                links[i].put_at = Some(at);
                view.puts.push(MailboxRequest { at, mailbox });
            }
            Event::Look(i) => {
                let pending = links[i]
                    .pending
                    .as_ref()
                    .context("a look without an offer")?;
                let answer = client
                    .collect(pending)
                    .await
                    .with_context(|| format!("look {i}"))?;
                looks += 1;
                let mailbox = mailbox_of(&mut view, &mut links[i]);
                let at = at_now(now);
                view.looks.push(MailboxRequest { at, mailbox });
                match answer {
                    Some(a) => {
                        anyhow::ensure!(
                            a.as_slice() == format!("answer {i}").as_bytes(),
                            "look {i} opened the wrong answer"
                        );
                        links[i].found_at = Some(at);
                        if let Delete::AfterAnswer(mean) = p.delete {
                            let d = now as f64
                                + if mean > 0.0 {
                                    draw(&mut rng, mean)
                                } else {
                                    0.0
                                };
                            push(&mut queue, d, Event::Delete(i));
                        }
                    }
                    None => {
                        let pause = if p.poisson {
                            draw(&mut rng, p.look_mean)
                        } else {
                            p.look_mean
                        };
                        push(&mut queue, now as f64 + pause, Event::Look(i));
                    }
                }
            }
            Event::DecoyStart(k) => {
                let label = view.mailboxes;
                view.mailboxes += 1;
                let until = now as f64
                    + draw(
                        &mut rng,
                        rdv::agent::schedule::DECOY_MAILBOX_MEAN.as_secs_f64(),
                    );
                decoys.insert(k, (label, until));
                push(&mut queue, now as f64, Event::DecoyLook(k));
            }
            Event::DecoyLook(k) => {
                let (label, until) = decoys[&k];
                let mut mailbox = [0u8; 32];
                rng.fill(&mut mailbox[..]);
                mailbox[..8].copy_from_slice(&(k as u64).to_be_bytes());
                client
                    .decoy_look(&addr, rdv::proto::MailboxAddr(mailbox))
                    .await
                    .with_context(|| format!("decoy look {k}"))?;
                cover_requests += 1;
                view.looks.push(MailboxRequest {
                    at: at_now(now),
                    mailbox: label,
                });
                // The first look at or past its end is its last, as a real mailbox's.
                if (now as f64) < until {
                    let next = now as f64 + draw(&mut rng, p.look_mean);
                    push(&mut queue, next, Event::DecoyLook(k));
                }
            }
            Event::DecoyFetch => {
                // A bucket with links in it, as an agent knows the buckets it stored into.
                if view.links.is_empty() {
                    continue;
                }
                let b = view.links[rng.gen_range(0..view.links.len())].bucket;
                let id = *buckets
                    .iter()
                    .find(|(_, v)| **v == b)
                    .map(|(id, _)| id)
                    .context("a known bucket")?;
                client
                    .decoy_fetch(&addr, id.locator())
                    .await
                    .context("decoy fetch")?;
                cover_requests += 1;
                view.fetches.push(Fetch {
                    at: at_now(now),
                    bucket: b,
                });
            }
            Event::Delete(i) => {
                let offer = &links[i].offer;
                client
                    .delete(&offer.link, &offer.delete_token)
                    .await
                    .with_context(|| format!("delete {i}"))?;
                view.links[i].deleted = Some(at_now(now));
            }
        }
    }
    server.refresh_metrics().await;
    let text = server.metrics_text();
    server.shutdown();

    // The attacker knows the cover's rate: a decoy mailbox explains a look as well as a link
    // does, weighed by how many decoys there are per link that expects an answer.
    let decoy_weight = r.cover.mailboxes_per_hour / 3600.0 / r.answered_share.max(1e-9);
    let model = p.model(r.mean_accept_delay, decoy_weight);
    let prep = flow_attack::prepare(&view, &model);
    let mut outcome = FlowOutcome {
        server_deletes_within_60s: sample(
            &text,
            "rdv_delete_after_fetch_seconds_bucket{le=\"60.0\"}",
        ),
        server_deletes: sample(&text, "rdv_delete_after_fetch_seconds_count"),
        cover_per_hour: cover_requests as f64 * 3600.0 / cover_end,
        ..Default::default()
    };
    let answered: Vec<&Link> = links.iter().filter(|l| l.pending.is_some()).collect();
    outcome.looks_per_answer = looks as f64 / answered.len().max(1) as f64;
    outcome.answer_latency = answered
        .iter()
        .filter_map(|l| Some(l.found_at? - l.put_at?))
        .sum::<f64>()
        / answered.len().max(1) as f64;
    for (i, l) in links.iter().enumerate() {
        let fetch = l.fetch.context("every offer is accepted")?;
        outcome.accepts.push((
            flow_attack::link_accept(&view, &model, &prep, fetch, i),
            l.pending.is_some(),
        ));
    }
    Ok(outcome)
}
