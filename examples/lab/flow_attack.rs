//! The linking attack on the whole answer flow, on the record of what the server saw. Pure: no
//! IO, no clock, no randomness.
//!
//! Beyond stores, fetches and deletes (`attack.rs`), the server sees every look into a mailbox
//! (`FetchAnswer`) and every answer put into one (`PutAnswer`), each with its time and the
//! mailbox's name, but not which link or bucket a mailbox belongs to. The attacker knows the
//! clients' policy (when initiators start looking, how often, when they delete; how soon an
//! accepter answers) and chains what it sees, as a Bayesian would:
//!
//! 1. **Mailbox → link.** For each mailbox, how likely each stored link is its owner: the first
//!    look's time against the link's store (or its bucket's close, when looks wait for it), and,
//!    when initiators delete after the answer, the link's delete time against the look that
//!    found the answer. Summed over mailboxes, this also says how likely each link is to expect
//!    an answer at all.
//! 2. **Answer → fetch.** For each put, how likely each earlier fetch is the accept that sent
//!    it, by the accepter's delay between fetch and answer.
//! 3. **Fetch → link.** For an accept, the candidates are the links of the fetched bucket stored
//!    before it and not deleted by then, each weighed by the accept-delay model (as in
//!    `attack.rs`) and by a likelihood ratio: if the fetch sent an answer, by how likely the
//!    candidate owns that answer's mailbox; if not, by how likely the candidate expects no
//!    answer. The two are mixed by how likely the fetch sent an answer.
//!
//! Every density gets a small floor (a user who strays from the policy now and then), so that
//! one odd request does not rule the right candidate out.

use crate::attack::{exp_density, score, Linking, StoredLink};

/// A fetch of a bucket, as the server saw it.
#[derive(Clone, Copy, Debug)]
pub struct Fetch {
    pub at: f64,
    pub bucket: usize,
}

/// A request naming a mailbox (a look or a put), as the server saw it.
#[derive(Clone, Copy, Debug)]
pub struct MailboxRequest {
    pub at: f64,
    /// The mailbox (an opaque label: the server sees the name, not whose it is).
    pub mailbox: usize,
}

/// Everything the server saw.
#[derive(Clone, Debug, Default)]
pub struct FlowView {
    pub links: Vec<StoredLink>,
    /// When each bucket counts as closed to every client: its window's end plus the client
    /// policy's allowed skew (and a second), the moment clients act on. The server knows the
    /// policy, so the attacker knows it too.
    pub close: Vec<f64>,
    pub fetches: Vec<Fetch>,
    pub puts: Vec<MailboxRequest>,
    pub looks: Vec<MailboxRequest>,
    /// Mailbox labels are `0..mailboxes`.
    pub mailboxes: usize,
}

/// What the attacker knows of the clients' policy.
#[derive(Clone, Copy, Debug)]
pub struct FlowModel {
    /// Mean of the exponential delay from hand-over to accept.
    pub mean_accept_delay: f64,
    /// Links are handed over when their bucket closes (`--hold`).
    pub hold: bool,
    /// Initiators start looking after their bucket closes (else right after their store).
    pub looks_from_close: bool,
    /// Mean delay of the first look after that moment.
    pub first_look_mean: f64,
    /// Mean delay of the accepter's answer after its fetch.
    pub put_mean: f64,
    /// When initiators that expect an answer delete their link.
    pub delete: DeleteModel,
    /// Cover traffic: how much more likely a looked-into mailbox is a decoy than any one link's
    /// (decoy mailboxes started per second, over the share of links that expect an answer; 0
    /// without cover). Decoys start at uniformly random moments, so their weight does not
    /// depend on the time of the first look.
    pub decoy_weight: f64,
}

/// When initiators that expect an answer delete their link.
#[derive(Clone, Copy, Debug)]
pub enum DeleteModel {
    /// They do not: the link expires.
    Never,
    /// After the look that found the answer, an exponential delay of this mean.
    AfterAnswer(f64),
    /// This long after the bucket closed, plus a uniform share of a tenth of it (at most ten
    /// minutes): a moment that has nothing to do with any fetch.
    AfterClose(f64),
}

/// Weight of "a user strayed from the policy": the floor under every density.
const STRAY: f64 = 0.01;
/// The floor's density: one stray request anywhere in a day.
const STRAY_SPAN: f64 = 86_400.0;

fn robust(density: f64) -> f64 {
    (1.0 - STRAY) * density + STRAY / STRAY_SPAN
}

/// What the attack derives once per run.
pub struct Prepared {
    /// Per mailbox: the links that may own it, with their posterior probability.
    owners: Vec<Vec<(usize, f64)>>,
    /// Per link: how likely it expects an answer (owns some mailbox).
    expects: Vec<f64>,
    /// Per fetch: the puts it may have sent, with their probability.
    sent: Vec<Vec<(usize, f64)>>,
}

/// Steps 1 and 2: mailbox owners and answer senders.
pub fn prepare(view: &FlowView, model: &FlowModel) -> Prepared {
    let n = view.mailboxes;
    let mut first = vec![f64::INFINITY; n];
    let mut put = vec![None; n];
    for l in &view.looks {
        first[l.mailbox] = first[l.mailbox].min(l.at);
    }
    for p in &view.puts {
        put[p.mailbox] = Some(p.at);
    }
    // The look that found the answer: the first at or after the put.
    let mut found = vec![f64::INFINITY; n];
    for l in &view.looks {
        if put[l.mailbox].is_some_and(|p| l.at >= p) {
            found[l.mailbox] = found[l.mailbox].min(l.at);
        }
    }
    let mut owners = Vec::with_capacity(n);
    let mut expects = vec![0.0; view.links.len()];
    for m in 0..n {
        if !first[m].is_finite() {
            // Never looked into: nothing ties it to any link.
            owners.push(Vec::new());
            continue;
        }
        let weights: Vec<f64> = view
            .links
            .iter()
            .map(|l| {
                let anchor = if model.looks_from_close {
                    view.close[l.bucket]
                } else {
                    l.stored
                };
                let w = if l.stored <= first[m] {
                    robust(exp_density(first[m] - anchor, model.first_look_mean))
                } else {
                    robust(0.0)
                };
                w * match (model.delete, l.deleted) {
                    (DeleteModel::Never, _) => 1.0,
                    (DeleteModel::AfterAnswer(_), _) if !found[m].is_finite() => 1.0,
                    (DeleteModel::AfterAnswer(mean), Some(d)) => {
                        robust(exp_density(d - found[m], mean))
                    }
                    // The delete comes the delay after the close plus a uniform share of a
                    // tenth of it (at most ten minutes), give or take a second.
                    (DeleteModel::AfterClose(after), Some(d)) => {
                        let spread = rdv::agent::schedule::scheduled_delete_spread(after as u64)
                            as f64
                            + 1.0;
                        let late = d - view.close[l.bucket] - after;
                        robust(if (-1.0..spread).contains(&late) {
                            1.0 / (spread + 1.0)
                        } else {
                            0.0
                        })
                    }
                    (_, None) => robust(0.0),
                }
            })
            .collect();
        // A decoy (cover traffic) is the other explanation of a mailbox.
        let total: f64 = weights.iter().sum::<f64>() + model.decoy_weight;
        let list: Vec<(usize, f64)> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| (i, w / total))
            .filter(|(_, p)| *p > 1e-9)
            .collect();
        for (i, p) in &list {
            expects[*i] += p;
        }
        owners.push(list);
    }
    for e in &mut expects {
        *e = e.min(1.0);
    }
    let mut sent = vec![Vec::new(); view.fetches.len()];
    for (pi, p) in view.puts.iter().enumerate() {
        let weights: Vec<(usize, f64)> = view
            .fetches
            .iter()
            .enumerate()
            .filter(|(_, f)| f.at <= p.at)
            .map(|(fi, f)| (fi, robust(exp_density(p.at - f.at, model.put_mean))))
            .collect();
        let total: f64 = weights.iter().map(|(_, w)| w).sum();
        for (fi, w) in weights {
            let r = w / total;
            if r > 1e-6 {
                sent[fi].push((pi, r));
            }
        }
    }
    Prepared {
        owners,
        expects,
        sent,
    }
}

/// Step 3: the attack on the accept that is fetch `fetch`, whose true link is `target`.
pub fn link_accept(
    view: &FlowView,
    model: &FlowModel,
    prep: &Prepared,
    fetch: usize,
    target: usize,
) -> Linking {
    let f = view.fetches[fetch];
    let candidates: Vec<usize> = view
        .links
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            l.bucket == f.bucket && l.stored <= f.at && l.deleted.is_none_or(|d| d > f.at)
        })
        .map(|(i, _)| i)
        .collect();
    let sent = &prep.sent[fetch];
    let q: f64 = sent.iter().map(|(_, r)| r).sum::<f64>().min(1.0);
    // How likely each candidate owns the mailbox this fetch answered into.
    let owns: Vec<f64> = candidates
        .iter()
        .map(|&c| {
            sent.iter()
                .map(|&(p, r)| {
                    let m = view.puts[p].mailbox;
                    r * prep.owners[m]
                        .iter()
                        .find(|(l, _)| *l == c)
                        .map_or(0.0, |(_, pr)| *pr)
                })
                .sum()
        })
        .collect();
    let no_answer: Vec<f64> = candidates.iter().map(|&c| 1.0 - prep.expects[c]).collect();
    let ratio = |v: &[f64], i: usize| {
        let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
        if mean > 0.0 {
            v[i] / mean
        } else {
            1.0
        }
    };
    let weights: Vec<f64> = candidates
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let l = &view.links[c];
            let handed = if model.hold {
                view.close[l.bucket]
            } else {
                l.stored
            };
            let timing = exp_density(f.at - handed, model.mean_accept_delay);
            timing * (q * ratio(&owns, i) + (1.0 - q) * ratio(&no_answer, i))
        })
        .collect();
    score(&weights, candidates.iter().position(|&c| c == target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(stored: f64) -> StoredLink {
        StoredLink {
            stored,
            bucket: 0,
            deleted: None,
        }
    }

    /// Eight links stored a minute apart in one bucket that closes at 600; link 5 expects an
    /// answer and is accepted at 700, the answer put right after the fetch.
    fn view(first_look: f64) -> FlowView {
        FlowView {
            links: (0..8).map(|i| link(i as f64 * 60.0)).collect(),
            close: vec![600.0],
            fetches: vec![Fetch {
                at: 700.0,
                bucket: 0,
            }],
            puts: vec![MailboxRequest {
                at: 700.5,
                mailbox: 0,
            }],
            looks: vec![
                MailboxRequest {
                    at: first_look,
                    mailbox: 0,
                },
                MailboxRequest {
                    at: 730.0,
                    mailbox: 0,
                },
            ],
            mailboxes: 1,
        }
    }

    fn model(looks_from_close: bool, delete: DeleteModel) -> FlowModel {
        FlowModel {
            mean_accept_delay: 1e6,
            hold: false,
            looks_from_close,
            first_look_mean: if looks_from_close { 30.0 } else { 1.0 },
            put_mean: 1.0,
            delete,
            decoy_weight: 0.0,
        }
    }

    #[test]
    fn a_look_right_after_the_store_gives_the_accept_away() {
        let v = view(300.2);
        let m = model(false, DeleteModel::Never);
        let r = link_accept(&v, &m, &prepare(&v, &m), 0, 5);
        assert_eq!(r.candidates, 8);
        assert!(r.top_guess == 1.0 && r.entropy < 0.1, "{r:?}");
    }

    #[test]
    fn looks_after_the_close_leave_every_candidate_equal() {
        let v = view(640.0);
        // Handed over at the close: the accept's timing says nothing either.
        let m = FlowModel {
            hold: true,
            ..model(true, DeleteModel::Never)
        };
        let r = link_accept(&v, &m, &prepare(&v, &m), 0, 5);
        assert!((r.entropy - 3.0).abs() < 1e-6, "{r:?}");
        assert!((r.top_guess - 0.125).abs() < 1e-6, "{r:?}");
    }

    #[test]
    fn a_delete_after_the_answer_gives_the_accept_away() {
        let mut v = view(640.0);
        v.links[5].deleted = Some(731.0);
        v.links[2].deleted = Some(3000.0);
        let m = model(true, DeleteModel::AfterAnswer(1.0));
        let r = link_accept(&v, &m, &prepare(&v, &m), 0, 5);
        assert!(r.top_guess == 1.0 && r.entropy < 0.1, "{r:?}");
    }

    #[test]
    fn deletes_at_a_fixed_time_still_tell_which_links_expect_answers() {
        // Links 1, 3 and 5 expect answers and are deleted an hour after the close: the fetch
        // that answered is one of those three.
        let mut v = view(640.0);
        for i in [1, 3, 5] {
            v.links[i].deleted = Some(4200.0);
        }
        let m = model(true, DeleteModel::AfterClose(3600.0));
        let r = link_accept(&v, &m, &prepare(&v, &m), 0, 5);
        assert!((r.entropy - 3f64.log2()).abs() < 0.05, "{r:?}");
    }

    #[test]
    fn a_fetch_that_sends_no_answer_rules_out_links_known_to_expect_one() {
        // Links 0..4 were looked for right after their stores (they expect answers); the fetch
        // at 700 sends no answer, so the attacker looks among links 4..8.
        let mut v = view(0.1);
        v.puts.clear();
        v.looks = (0..4)
            .map(|i| MailboxRequest {
                at: i as f64 * 60.0 + 0.2,
                mailbox: i,
            })
            .collect();
        v.mailboxes = 4;
        let m = model(false, DeleteModel::Never);
        let r = link_accept(&v, &m, &prepare(&v, &m), 0, 6);
        assert!((r.entropy - 2.0).abs() < 0.05, "{r:?}");
    }
}
