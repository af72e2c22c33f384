//! Multi-server links against servers that compare notes: every link stored on several
//! in-process servers, accepted and answered, its answer collected, each step taken by the
//! library client's own code (`offer_to_all_expecting_answer`, `accept`, `answer`,
//! `collect_scheduled`, `trail`) with its own random pauses, on paused tokio time (a simulated
//! day passes in seconds). Every connection goes through a tap that notes what the server sees:
//! the time of each store and of each delete (which names its stored link), and of each look
//! into and answer left in each mailbox. The attack
//! (`copies_attack.rs`) then pairs each copy with its link's copies on the other servers.
//!
//! Unlike `flow.rs`, which models the single-server flow's timing rules, this runs the client's
//! code itself: what it measures is what the shipped client does.

use crate::copies_attack::{self, Class, Feature, Record, Request as Saw, Seen};
use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rdv::agent::schedule::scheduled_delete_at;
use rdv::client::{Client, ClientConfig, ConnectError, Connector, Stream};
use rdv::clock::Clock;
use rdv::framed::{read_msg, write_msg};
use rdv::proto::schedule::{exponential, LookSchedule};
use rdv::proto::wire::DEFAULT_MAX_FRAME;
use rdv::proto::{KdfProfile, MailboxAddr, Passphrase, Request, Response, ServerAddr};
use rdv::server::{Server, ServerConfig};
use rdv::store::{MemoryStore, StoreParams};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// What the client does with a multi-server link.
#[derive(Clone, Copy, Debug)]
pub struct CopyPolicy {
    pub label: &'static str,
    /// `--spread`: the mean pause between the copies' stores, answers and one-time looks.
    pub spread: Duration,
    /// After the first answer, the other copies go on looking until their own answer comes
    /// (`Client::trail`, what `rdv offer --wait` and the agent do); else their looks stop.
    pub trail: bool,
    /// The accepter answers every copy (else only the one it fetched).
    pub answer_every_copy: bool,
    /// Whether and when the initiator deletes the link.
    pub delete: DeleteWhen,
}

/// When the initiator deletes a link, if it does.
#[derive(Clone, Copy, Debug)]
pub enum DeleteWhen {
    /// The link expires (the default).
    Never,
    /// `rdv delete` as soon as the first answer is in, with this `--spread` (one copy at once,
    /// each other at a moment of its own within it; 10 minutes by default).
    AfterAnswer(Duration),
    /// The agent's `--delete-after-close`: each copy this long after its own bucket's close,
    /// plus its own share of a tenth of it (at most ten minutes).
    AfterClose(Duration),
}

/// One run.
#[derive(Clone, Copy, Debug)]
pub struct CopiesRun {
    /// Offers per minute (Poisson), every one on all the servers and expecting an answer.
    pub rate_per_min: f64,
    /// Offers arrive during this long, seconds.
    pub duration: u64,
    /// The servers' open window, seconds.
    pub window: u64,
    /// Mean accept delay after the hand-over, seconds (exponential).
    pub mean_accept_delay: f64,
    /// Servers per link.
    pub servers: usize,
    pub policy: CopyPolicy,
    pub seed: u64,
}

/// A run's record and what became of its answers.
pub struct CopiesOutcome {
    pub record: Record,
    pub links: usize,
    /// Copies whose own answer the initiator opened, of all copies answered.
    pub collected_copies: usize,
    pub answered_copies: usize,
    pub looks: usize,
    pub servers: usize,
}

pub const T0: u64 = 1_800_000_000;

/// Wall time that follows the runtime's (paused) time from `T0` since `origin`, `offset`
/// seconds off (a wrong clock; 0 for the true time).
pub struct Following {
    pub origin: Instant,
    pub offset: f64,
}

impl Clock for Following {
    fn now(&self) -> u64 {
        self.now_precise().as_secs()
    }
    fn now_precise(&self) -> Duration {
        let true_time = Duration::from_secs(T0) + self.origin.elapsed();
        let shift = Duration::from_secs_f64(self.offset.abs());
        if self.offset < 0.0 {
            true_time.saturating_sub(shift)
        } else {
            true_time + shift
        }
    }
    fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// `make()`'s future run to its end on a paused runtime of its own (on a thread of its own: the
/// caller's runtime cannot host it), a simulated day passing in seconds; `what` names the run if
/// it panics.
pub fn on_paused_runtime<T, F>(
    what: &'static str,
    make: impl FnOnce() -> F + Send + 'static,
) -> Result<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T>>,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()?
            .block_on(make())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the {what} run panicked"))?
}

/// What the servers saw, as the tap noted it, with the link each request was made for.
#[derive(Default)]
struct Tap {
    requests: Vec<(Saw, usize)>,
    /// Stores seen, on every server: each store's item number.
    stores: usize,
    /// The item number of each link's store on each server, by (server, link): what a delete
    /// names (the server finds its entry by the token).
    stored: HashMap<(usize, usize), usize>,
    mailboxes: HashMap<(usize, MailboxAddr), usize>,
}

impl Tap {
    fn mailbox(&mut self, server: usize, m: MailboxAddr) -> usize {
        let next = self.mailboxes.len();
        *self.mailboxes.entry((server, m)).or_insert(next)
    }
}

/// A connector for the clients of link `link`: each connection to server `s` goes through a task
/// that passes its requests and responses on and notes them.
struct Tapped {
    servers: Arc<Vec<Arc<Server<MemoryStore>>>>,
    names: Arc<HashMap<String, usize>>,
    tap: Arc<Mutex<Tap>>,
    origin: Instant,
    link: usize,
}

impl Connector for Tapped {
    fn connect<'a>(
        &'a self,
        addr: &'a ServerAddr,
    ) -> futures::future::BoxFuture<'a, Result<Box<dyn Stream>, ConnectError>> {
        Box::pin(async move {
            let s = *self
                .names
                .get(&addr.to_string())
                .expect("the lab's own servers only");
            let (client, mut near) = tokio::io::duplex(64 * 1024);
            let (mut far, server) = tokio::io::duplex(64 * 1024);
            tokio::spawn(self.servers[s].clone().serve_stream(server));
            let (tap, origin, link) = (self.tap.clone(), self.origin, self.link);
            tokio::spawn(async move {
                while let Ok(req) = read_msg::<Request, _>(&mut near, DEFAULT_MAX_FRAME).await {
                    let at = origin.elapsed().as_secs_f64();
                    let mailbox = match &req {
                        Request::FetchAnswer { mailbox } => Some((*mailbox, Seen::Look)),
                        Request::PutAnswer { mailbox, .. }
                        | Request::StampedPutAnswer { mailbox, .. } => Some((*mailbox, Seen::Put)),
                        _ => None,
                    };
                    if let Request::Delete { .. } = &req {
                        let mut t = tap.lock().unwrap();
                        if let Some(&item) = t.stored.get(&(s, link)) {
                            t.requests.push((
                                Saw {
                                    server: s,
                                    item,
                                    seen: Seen::Delete,
                                    at,
                                },
                                link,
                            ));
                        }
                    }
                    if let Some((m, seen)) = mailbox {
                        let mut t = tap.lock().unwrap();
                        let item = t.mailbox(s, m);
                        t.requests.push((
                            Saw {
                                server: s,
                                item,
                                seen,
                                at,
                            },
                            link,
                        ));
                    }
                    if write_msg(&mut far, &req, DEFAULT_MAX_FRAME).await.is_err() {
                        break;
                    }
                    let Ok(resp) = read_msg::<Response, _>(&mut far, u32::MAX).await else {
                        break;
                    };
                    if let Response::Stored { .. } = resp {
                        let mut t = tap.lock().unwrap();
                        let item = t.stores;
                        t.stores += 1;
                        t.stored.insert((s, link), item);
                        t.requests.push((
                            Saw {
                                server: s,
                                item,
                                seen: Seen::Store,
                                at,
                            },
                            link,
                        ));
                    }
                    if write_msg(&mut near, &resp, u32::MAX).await.is_err() {
                        break;
                    }
                }
            });
            Ok(Box::new(client) as Box<dyn Stream>)
        })
    }
}

/// Run `r` on a paused runtime of its own (on a thread of its own: the caller's runtime cannot
/// host it).
pub fn run(r: &CopiesRun) -> Result<CopiesOutcome> {
    let r = *r;
    on_paused_runtime("multi-server", move || run_paused(r))
}

async fn run_paused(r: CopiesRun) -> Result<CopiesOutcome> {
    let origin = Instant::now();
    let clock: Arc<dyn Clock> = Arc::new(Following {
        origin,
        offset: 0.0,
    });
    let params = StoreParams {
        open_window_secs: r.window,
        ttl_secs: 7 * 86400,
        max_seq: 32,
        ..Default::default()
    };
    let servers: Vec<_> = (0..r.servers)
        .map(|_| {
            Server::new(
                MemoryStore::new(params),
                ServerConfig::default(),
                clock.clone(),
            )
        })
        .collect::<Result<_, _>>()?;
    let addrs: Vec<ServerAddr> = (0..r.servers)
        .map(|s| ServerAddr::parse(&format!("copy{s}.lab.invalid:7625")))
        .collect::<Result<_, _>>()?;
    let names: Arc<HashMap<String, usize>> =
        Arc::new((0..r.servers).map(|s| (addrs[s].to_string(), s)).collect());
    let servers = Arc::new(servers);
    let tap = Arc::new(Mutex::new(Tap::default()));
    let client = |link: usize, spread: Duration| {
        Client::new(
            Arc::new(Tapped {
                servers: servers.clone(),
                names: names.clone(),
                tap: tap.clone(),
                origin,
                link,
            }),
            ClientConfig {
                // The answer flow does not depend on stamps: the clients speak version 2.
                max_version: 2,
                policy: rdv::proto::ClientPolicy {
                    max_open_window_secs: r.window,
                    ..Default::default()
                },
                copy_spread: spread,
                answer_every_copy: r.policy.answer_every_copy,
                ..Default::default()
            },
            clock.clone(),
        )
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(r.seed);
    let mut arrivals = Vec::new();
    let mut t = 0.0;
    loop {
        t += exponential(Duration::from_secs_f64(60.0 / r.rate_per_min), rng.gen()).as_secs_f64();
        if t >= r.duration as f64 {
            break;
        }
        let delay = exponential(Duration::from_secs_f64(r.mean_accept_delay), rng.gen());
        arrivals.push((t, delay));
    }
    let schedule = LookSchedule::default();
    let mut tasks = Vec::new();
    for (i, &(at, delay)) in arrivals.iter().enumerate() {
        tokio::time::sleep_until(origin + Duration::from_secs_f64(at)).await;
        let (initiator, accepter) = (client(i, r.policy.spread), client(i, r.policy.spread));
        let deleter = match r.policy.delete {
            DeleteWhen::AfterAnswer(spread) => client(i, spread),
            _ => client(i, r.policy.spread),
        };
        let addrs = addrs.clone();
        let trail = r.policy.trail;
        let delete = r.policy.delete;
        let clock = clock.clone();
        tasks.push(tokio::spawn(async move {
            let payload = format!("smp://lab/{i}");
            let (offer, pending) = initiator
                .offer_to_all_expecting_answer(
                    &addrs,
                    payload.as_bytes(),
                    Passphrase::new(format!("lab passphrase {i}")),
                    KdfProfile::Test,
                )
                .await
                .with_context(|| format!("offer {i}"))?;
            // What a delete needs, kept before the link goes to the accepter.
            let (link, token) = (offer.link.clone(), offer.delete_token.clone());
            let copies: Vec<_> = (0..offer.copies.len())
                .filter_map(|c| Some((offer.copy(c)?, offer.copies[c])))
                .collect();
            // Handed over at once (the default), accepted after the delay, answered at once.
            let accept = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let found = accepter
                    .accept(&offer.link, None)
                    .await
                    .with_context(|| format!("accept {i}"))?;
                anyhow::ensure!(found.payload.as_slice() == payload.as_bytes());
                let reply = found.reply.context("the link expects an answer")?;
                accepter
                    .answer(&reply, format!("answer {i}").as_bytes())
                    .await
                    .with_context(|| format!("answer {i}"))
            });
            let wait = Duration::from_secs(6 * 3600);
            let first = initiator
                .collect_scheduled(&pending, schedule, wait)
                .await
                .with_context(|| format!("collect {i}"))?;
            anyhow::ensure!(first.answer.as_slice() == format!("answer {i}").as_bytes());
            // The delete, if any, goes its own way beside the looks at the other copies.
            let deleted = tokio::spawn(async move {
                match delete {
                    DeleteWhen::Never => Ok(()),
                    DeleteWhen::AfterAnswer(_) => deleter
                        .delete(&link, &token)
                        .await
                        .with_context(|| format!("delete {i}")),
                    DeleteWhen::AfterClose(after) => {
                        let deletes = copies.into_iter().map(|((copy, token), times)| {
                            let deleter = &deleter;
                            let clock = &clock;
                            async move {
                                // As the agent: the delay after this copy's own close,
                                // plus its own share of a tenth of it (at most ten minutes);
                                // none for a copy that expires first.
                                let Some(at) = scheduled_delete_at(
                                    times.closes_at,
                                    after.as_secs(),
                                    times.expires_at,
                                    rand::random(),
                                ) else {
                                    return Ok(());
                                };
                                let at = Duration::from_secs(at)
                                    + Duration::from_secs_f64(rand::random::<f64>());
                                tokio::time::sleep(at.saturating_sub(clock.now_precise())).await;
                                deleter.delete(&copy, &token).await
                            }
                        });
                        for d in futures::future::join_all(deletes).await {
                            d.with_context(|| format!("delete {i}"))?;
                        }
                        Ok(())
                    }
                }
            });
            let mut opened = 1;
            if trail {
                let t = initiator
                    .trail(&pending, schedule, first.copy, &first.answer)
                    .await;
                anyhow::ensure!(t.differing.is_empty(), "link {i}: another answer");
                opened += t.opened;
            }
            accept.await??;
            deleted.await??;
            Ok::<usize, anyhow::Error>(opened)
        }));
    }
    let mut collected = 0;
    for t in tasks {
        collected += t.await??;
    }
    for s in servers.iter() {
        s.shutdown();
    }
    let tap = std::mem::take(&mut *tap.lock().unwrap());
    let links = arrivals.len();
    let truth: HashMap<(usize, Class, usize), usize> = tap
        .requests
        .iter()
        .map(|(saw, link)| ((saw.server, saw.seen.class(), saw.item), *link))
        .collect();
    let requests: Vec<Saw> = tap.requests.iter().map(|(saw, _)| *saw).collect();
    let looks = requests
        .iter()
        .filter(|s| matches!(s.seen, Seen::Look))
        .count();
    Ok(CopiesOutcome {
        record: Record::new(r.servers, &requests, |s, c, i| {
            truth.get(&(s, c, i)).copied()
        }),
        links,
        collected_copies: collected,
        answered_copies: if r.policy.answer_every_copy {
            links * r.servers
        } else {
            links
        },
        looks,
        servers: r.servers,
    })
}

/// The attack's results on a run, one per feature set.
pub fn attack(
    training: &CopiesOutcome,
    run: &CopiesOutcome,
) -> Vec<(&'static str, copies_attack::Paired)> {
    let learnt = copies_attack::learn(&training.record);
    let sets: [(&str, &[Feature]); 7] = [
        ("stores", &[Feature::Store]),
        ("first looks", &[Feature::FirstLook]),
        ("answers left", &[Feature::Put]),
        ("last looks", &[Feature::LastLook]),
        (
            "mailboxes (all three)",
            &[Feature::FirstLook, Feature::Put, Feature::LastLook],
        ),
        ("deletes", &[Feature::Delete]),
        ("stores and deletes", &[Feature::Store, Feature::Delete]),
    ];
    sets.into_iter()
        .map(|(name, f)| (name, copies_attack::pair(&run.record, &learnt, f)))
        .collect()
}

/// The section: per policy, how well servers comparing notes pair each copy with its link's
/// copies on the other servers, signal by signal.
pub fn section(duration: u64) -> Result<()> {
    let spread = |s: u64| Duration::from_secs(s);
    let policies = [
        CopyPolicy {
            label: "--spread 0s --answer-every-copy, looks stop at the first answer (rdv before 2026-12-06)",
            spread: Duration::ZERO,
            trail: false,
            answer_every_copy: true,
            delete: DeleteWhen::Never,
        },
        CopyPolicy {
            label: "--spread 30s --answer-every-copy, looks stop at the first answer",
            spread: spread(30),
            trail: false,
            answer_every_copy: true,
            delete: DeleteWhen::Never,
        },
        CopyPolicy {
            label: "--spread 30s --answer-every-copy, every copy looks until its own answer",
            spread: spread(30),
            trail: true,
            answer_every_copy: true,
            delete: DeleteWhen::Never,
        },
        CopyPolicy {
            label: "default: --spread 30s, the fetched copy answered, every copy looks on",
            spread: spread(30),
            trail: true,
            answer_every_copy: false,
            delete: DeleteWhen::Never,
        },
        CopyPolicy {
            label: "--spread 2m, the fetched copy answered, every copy looks on",
            spread: spread(120),
            trail: true,
            answer_every_copy: false,
            delete: DeleteWhen::Never,
        },
        CopyPolicy {
            label: "default, and `rdv delete --spread 0s` once the answer is in",
            spread: spread(30),
            trail: true,
            answer_every_copy: false,
            delete: DeleteWhen::AfterAnswer(Duration::ZERO),
        },
        CopyPolicy {
            label: "default, and `rdv delete` (its default --spread 10m) once the answer is in",
            spread: spread(30),
            trail: true,
            answer_every_copy: false,
            delete: DeleteWhen::AfterAnswer(spread(600)),
        },
        CopyPolicy {
            label: "default, and `rdv delete --spread 1h` once the answer is in",
            spread: spread(30),
            trail: true,
            answer_every_copy: false,
            delete: DeleteWhen::AfterAnswer(spread(3600)),
        },
        CopyPolicy {
            label: "default, and the agent's `--delete-after-close 3h`",
            spread: spread(30),
            trail: true,
            answer_every_copy: false,
            delete: DeleteWhen::AfterClose(spread(3 * 3600)),
        },
    ];
    let reference = |policy: CopyPolicy, seed: u64| CopiesRun {
        rate_per_min: 2.0,
        duration,
        window: 600,
        mean_accept_delay: 600.0,
        servers: 3,
        policy,
        seed,
    };
    println!("\n## Multi-server links against servers that compare notes (3 servers, 2 offers/min on all three, each expecting an answer; window 10 min, accept delay mean 10 min, looks every 30 s on average)\n");
    println!("Per copy: the effective set 2^H among the other server's copies and how often the attacker's first guess is its link's copy there, by the signal used; matched one-to-one: how often the best matching of all of one server's copies with another's at once pairs a copy right. Chance: one in the links of the run.\n");
    println!("| client policy | links | stores | first looks | answers left | last looks | mailboxes (all three) | deletes | stores and deletes | stores, matched one-to-one | mailboxes, matched one-to-one | stores and deletes, matched one-to-one | copies' answers collected | looks per copy |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, policy) in policies.into_iter().enumerate() {
        let training = run(&reference(policy, 7000 + i as u64))?;
        let measured = run(&reference(policy, 7100 + i as u64))?;
        let results = attack(&training, &measured);
        let mut cells: Vec<String> = results
            .iter()
            .map(|(_, p)| {
                let n = p.alone.len().max(1) as f64;
                format!(
                    "{:.1} / {:.0} %",
                    p.alone.iter().map(|l| l.entropy.exp2()).sum::<f64>() / n,
                    100.0 * p.alone.iter().map(|l| l.top_guess).sum::<f64>() / n
                )
            })
            .collect();
        // Matched one-to-one: the stores, the mailboxes by all their times, the stores with
        // their deletes.
        for (_, p) in [&results[0], &results[4], &results[6]] {
            let right = p.matched.iter().filter(|m| **m).count();
            cells.push(format!(
                "{:.0} %",
                100.0 * right as f64 / p.matched.len().max(1) as f64
            ));
        }
        println!(
            "| {} | {} | {} | {:.0} % | {:.0} |",
            policy.label,
            measured.links,
            cells.join(" | "),
            100.0 * measured.collected_copies as f64 / measured.answered_copies.max(1) as f64,
            measured.looks as f64 / (measured.links * measured.servers).max(1) as f64,
        );
    }
    Ok(())
}
