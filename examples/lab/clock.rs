//! Clock errors: what the moments of an unanswered offer's looks tell the server about the
//! initiator's clock, and whether that lets it tell which mailboxes are one person's.
//!
//! An initiator's looks are timed on its own clock: the first comes a random pause after the
//! bucket's close as that clock shows it, the wait ends at the close plus the wait on it. A clock
//! `e` seconds ahead makes every such moment come `e` seconds early in the server's time, in each
//! of that initiator's offers: a fingerprint, if the server can read it off precisely enough.
//!
//! Each run: `clients` initiators, each with a clock error of its own (uniform within ±`spread`
//! seconds: the client's ID policy refuses buckets dated more than its skew, 2 minutes, away
//! from its clock, so larger errors do not get this far), offer once per round into that round's
//! bucket, expect an answer that never comes, and wait `--wait 10m` for it with the default look
//! schedule, through the library client's own code (`collect_scheduled`) on paused tokio time,
//! each request delayed on its way by a circuit's latency (uniform 0.2-1.0 s; a look is two
//! requests, its connection's Hello and the look). The server notes
//! each look's moment and mailbox. The attacker knows each mailbox's bucket and the wait (both
//! favourable to it), reads a clock estimate off each mailbox (its first look against the close,
//! its last against the close plus the wait, the later of the two readings: every pause and
//! latency only makes a look later), and pairs the mailboxes of consecutive rounds one-to-one by
//! sorting both rounds' estimates (the best pairing on a line). Compared: the shipped rule (the
//! last look is the first of the schedule past the wait's end) and the rule before it (the last
//! look at the end itself), the latter modelled from the same clients and fresh latencies.

use crate::copies::{Following, T0};
use anyhow::{ensure, Context, Result};
use rand::{Rng, SeedableRng};
use rdv::client::{Client, ClientConfig, CollectError, ConnectError, Connector, Stream};
use rdv::framed::{read_msg, write_msg};
use rdv::proto::schedule::LookSchedule;
use rdv::proto::wire::DEFAULT_MAX_FRAME;
use rdv::proto::{KdfProfile, Passphrase, Request, Response, ServerAddr};
use rdv::server::{Server, ServerConfig};
use rdv::store::{MemoryStore, StoreParams};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The wait of every offer (`rdv offer --wait 10m`).
const WAIT: Duration = Duration::from_secs(600);

/// Rounds start this far apart: each round's looks are over before the next.
const ROUND: f64 = 7200.0;

/// A look as the server saw it: the mailbox (as the server names it), when, and for the score
/// only, whose and in which round.
#[derive(Clone, Copy)]
struct Look {
    mailbox: [u8; 32],
    at: f64,
    client: usize,
    round: usize,
}

/// A connector whose connections carry requests to the server after a circuit's latency, noting
/// each look.
struct Tapped {
    server: Arc<Server<MemoryStore>>,
    looks: Arc<Mutex<Vec<Look>>>,
    latency: Arc<Mutex<rand::rngs::StdRng>>,
    origin: Instant,
    client: usize,
    round: usize,
}

impl Connector for Tapped {
    fn connect<'a>(
        &'a self,
        _addr: &'a ServerAddr,
    ) -> futures::future::BoxFuture<'a, Result<Box<dyn Stream>, ConnectError>> {
        Box::pin(async move {
            let (client, mut near) = tokio::io::duplex(64 * 1024);
            let (mut far, server) = tokio::io::duplex(64 * 1024);
            tokio::spawn(self.server.clone().serve_stream(server));
            let (looks, latency, origin) = (self.looks.clone(), self.latency.clone(), self.origin);
            let (who, round) = (self.client, self.round);
            tokio::spawn(async move {
                while let Ok(req) = read_msg::<Request, _>(&mut near, DEFAULT_MAX_FRAME).await {
                    let delay = latency.lock().unwrap().gen_range(0.2..1.0);
                    tokio::time::sleep(Duration::from_secs_f64(delay)).await;
                    if let Request::FetchAnswer { mailbox } = &req {
                        looks.lock().unwrap().push(Look {
                            mailbox: mailbox.0,
                            at: origin.elapsed().as_secs_f64(),
                            client: who,
                            round,
                        });
                    }
                    if write_msg(&mut far, &req, DEFAULT_MAX_FRAME).await.is_err() {
                        break;
                    }
                    let Ok(resp) = read_msg::<Response, _>(&mut far, u32::MAX).await else {
                        break;
                    };
                    if write_msg(&mut near, &resp, u32::MAX).await.is_err() {
                        break;
                    }
                }
            });
            Ok(Box::new(client) as Box<dyn Stream>)
        })
    }
}

/// One mailbox as the attacker sees it, with the truth to score it.
struct Mailbox {
    round: usize,
    client: usize,
    /// The clock error read off the first look (against the close).
    from_first: f64,
    /// The clock error read off the last look (against the close plus the wait).
    from_last: f64,
    /// The same, had the last look come at the end itself (the rule before).
    from_end_itself: f64,
}

/// What one spread of clock errors gave.
pub struct ClockRow {
    pub spread: f64,
    pub clients: usize,
    pub pairings: usize,
    /// Mailboxes paired with their initiator's mailbox of the next round, of `pairings`: the
    /// shipped rule, and the rule before.
    pub right_now: usize,
    pub right_before: usize,
    /// Spread (standard deviation) of the attacker's clock estimate around the true error,
    /// seconds (shipped, before): its mean offset is known to the attacker and taken out.
    pub error_now: f64,
    pub error_before: f64,
}

/// `rounds` rounds of `clients` unanswered offers whose initiators' clocks are off by up to
/// ±`spread` seconds.
pub fn run(spread: f64, clients: usize, rounds: usize, seed: u64) -> Result<ClockRow> {
    crate::copies::on_paused_runtime("clock", move || run_paused(spread, clients, rounds, seed))
}

async fn run_paused(spread: f64, clients: usize, rounds: usize, seed: u64) -> Result<ClockRow> {
    let origin = Instant::now();
    let params = StoreParams {
        ttl_secs: 86_400,
        ..Default::default()
    };
    let server = Server::new(
        MemoryStore::new(params),
        ServerConfig::default(),
        Arc::new(Following {
            origin,
            offset: 0.0,
        }),
    )?;
    let addr = ServerAddr::parse("clock.lab.invalid:7625")?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let errors: Vec<f64> = (0..clients)
        .map(|_| rng.gen_range(-spread..=spread))
        .collect();
    let looks = Arc::new(Mutex::new(Vec::new()));
    let latency = Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed + 1)));
    // Each mailbox's close (polls_from) and whose it is, from the client's side: the attacker
    // derives the close from the bucket ID it gave out, which the lab does not re-derive.
    let closes: Arc<Mutex<HashMap<[u8; 32], u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for round in 0..rounds {
        for (client, &offset) in errors.iter().enumerate() {
            let start = round as f64 * ROUND + rng.gen_range(0.0..60.0);
            let c = Client::new(
                Arc::new(Tapped {
                    server: server.clone(),
                    looks: looks.clone(),
                    latency: latency.clone(),
                    origin,
                    client,
                    round,
                }),
                ClientConfig {
                    // The answer flow does not depend on stamps: the clients speak version 2.
                    max_version: 2,
                    ..Default::default()
                },
                Arc::new(Following { origin, offset }),
            );
            let addr = addr.clone();
            let closes = closes.clone();
            let looks = looks.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(origin + Duration::from_secs_f64(start)).await;
                let (_offer, pending) = c
                    .offer_expecting_answer(
                        &addr,
                        b"smp://lab",
                        Passphrase::new(format!("clock lab {round} {client}")),
                        KdfProfile::Test,
                    )
                    .await
                    .with_context(|| format!("offer {round}/{client}"))?;
                match c
                    .collect_scheduled(&pending, LookSchedule::default(), WAIT)
                    .await
                {
                    Err(CollectError::NoAnswerYet) => {}
                    other => anyhow::bail!("an unanswered wait ended with {:?}", other.err()),
                }
                // This mailbox's name, from its looks.
                let mine = looks
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|l| l.client == client && l.round == round)
                    .map(|l| l.mailbox)
                    .context("no look")?;
                closes.lock().unwrap().insert(mine, pending.polls_from());
                Ok(())
            }));
        }
    }
    for t in tasks {
        t.await??;
    }
    let looks = looks.lock().unwrap().clone();
    let closes = closes.lock().unwrap().clone();
    let mut by_mailbox: HashMap<[u8; 32], Vec<Look>> = HashMap::new();
    for l in looks {
        by_mailbox.entry(l.mailbox).or_default().push(l);
    }
    ensure!(
        by_mailbox.len() == clients * rounds,
        "a mailbox without looks"
    );
    let mut latency = rand::rngs::StdRng::seed_from_u64(seed + 2);
    let mut mailboxes: Vec<Mailbox> = by_mailbox
        .into_iter()
        .map(|(m, ls)| {
            let close = closes[&m] as f64 - T0 as f64;
            let end = close + WAIT.as_secs_f64();
            let first = ls.iter().map(|l| l.at).fold(f64::INFINITY, f64::min);
            let last = ls.iter().map(|l| l.at).fold(0.0, f64::max);
            let (client, round) = (ls[0].client, ls[0].round);
            // Before: the last look at the end on the client's clock, reaching the server two
            // latencies later (its connection's Hello, then the look itself), as every look here.
            let end_itself =
                end - errors[client] + latency.gen_range(0.2..1.0) + latency.gen_range(0.2..1.0);
            Mailbox {
                round,
                client,
                from_first: close - first,
                from_last: end - last,
                from_end_itself: end - end_itself,
            }
        })
        .collect();
    mailboxes.sort_by_key(|m| (m.round, m.client));
    // Every pause and latency only makes a look later: the later of the two readings is the
    // closer one.
    let now = |m: &Mailbox| m.from_first.max(m.from_last);
    let before = |m: &Mailbox| m.from_first.max(m.from_end_itself);
    let pair = |estimate: &dyn Fn(&Mailbox) -> f64| -> usize {
        (0..rounds - 1)
            .map(|r| {
                let mut a: Vec<&Mailbox> = mailboxes.iter().filter(|m| m.round == r).collect();
                let mut b: Vec<&Mailbox> = mailboxes.iter().filter(|m| m.round == r + 1).collect();
                a.sort_by(|x, y| estimate(x).total_cmp(&estimate(y)));
                b.sort_by(|x, y| estimate(x).total_cmp(&estimate(y)));
                a.iter()
                    .zip(&b)
                    .filter(|(x, y)| x.client == y.client)
                    .count()
            })
            .sum()
    };
    let error = |estimate: &dyn Fn(&Mailbox) -> f64| -> f64 {
        let d: Vec<f64> = mailboxes
            .iter()
            .map(|m| estimate(m) - errors[m.client])
            .collect();
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / d.len() as f64).sqrt()
    };
    Ok(ClockRow {
        spread,
        clients,
        pairings: clients * (rounds - 1),
        right_now: pair(&now),
        right_before: pair(&before),
        error_now: error(&now),
        error_before: error(&before),
    })
}

/// The section: a table for a few spreads of clock errors.
pub fn section(quick: bool) -> Result<()> {
    let (clients, rounds) = if quick { (16, 3) } else { (24, 6) };
    let mut rows = Vec::new();
    for (i, spread) in [1.0, 5.0, 20.0, 100.0].into_iter().enumerate() {
        rows.push(run(spread, clients, rounds, 7000 + i as u64)?);
    }
    println!("\n## Clock errors: pairing one initiator's unanswered mailboxes by its clock ({clients} initiators, {rounds} rounds, `--wait 10m`, looks every 30 s on average)\n");
    println!("| clock errors within | last look | clock read to (s.d.) | mailboxes paired with the same initiator's next one | chance |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        for (rule, right, err) in [
            ("at the wait's end (before)", r.right_before, r.error_before),
            ("first past the end (now)", r.right_now, r.error_now),
        ] {
            println!(
                "| ±{} s | {rule} | {:.1} s | {} of {} ({:.0} %) | {:.0} % |",
                r.spread,
                err,
                right,
                r.pairings,
                100.0 * right as f64 / r.pairings as f64,
                100.0 / r.clients as f64
            );
        }
    }
    Ok(())
}
