//! Servers that compare notes on multi-server links: which stored link, or which mailbox, on one
//! server is the same link's copy on another. Pure: no IO, no clock, no randomness.
//!
//! Each server sees, per copy, the time of its store, and per mailbox the times of every look
//! into it and of the answer left there. The attacker knows the client software: it learns, from
//! a training run it simulated itself (the lab's own, under another seed), how the times of one
//! link's copies differ across servers, feature by feature, and then ranks every candidate on the
//! other server by the product of those learnt densities (naive Bayes). The result per copy is
//! the entropy of that ranking and whether its first guess is right ([`crate::attack::score`]).

use crate::attack::{score, Linking};
use std::collections::HashMap;

/// What a server tells apart: its stored links and its mailboxes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Stored,
    Mailbox,
}

/// One request a server saw.
#[derive(Clone, Copy, Debug)]
pub enum Seen {
    /// A store, answered with a bucket: a stored link of its own (`item`).
    Store,
    /// A look into mailbox `item`.
    Look,
    /// An answer left in mailbox `item`.
    Put,
}

/// A request as a server saw it: `item` numbers the server's stored links or mailboxes.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    pub server: usize,
    pub item: usize,
    pub seen: Seen,
    pub at: f64,
}

/// A timing feature of a stored link or a mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Feature {
    Store,
    FirstLook,
    Put,
    LastLook,
}

impl Feature {
    pub fn class(self) -> Class {
        match self {
            Feature::Store => Class::Stored,
            _ => Class::Mailbox,
        }
    }
}

/// The times of one stored link or mailbox.
#[derive(Clone, Copy, Debug, Default)]
struct Times {
    store: Option<f64>,
    first_look: Option<f64>,
    last_look: Option<f64>,
    put: Option<f64>,
}

impl Times {
    fn get(&self, f: Feature) -> Option<f64> {
        match f {
            Feature::Store => self.store,
            Feature::FirstLook => self.first_look,
            Feature::Put => self.put,
            Feature::LastLook => self.last_look,
        }
    }
}

/// What colluding servers saw, item by item, and (kept apart, to learn from and to score) which
/// link each item belongs to.
pub struct Record {
    /// (server, class, item) -> times.
    items: HashMap<(usize, Class, usize), Times>,
    /// (server, class, item) -> link.
    truth: HashMap<(usize, Class, usize), usize>,
    servers: usize,
}

impl Record {
    /// The record of `requests`; `link_of(server, class, item)` is the ground truth.
    pub fn new(
        servers: usize,
        requests: &[Request],
        link_of: impl Fn(usize, Class, usize) -> Option<usize>,
    ) -> Record {
        let mut items: HashMap<(usize, Class, usize), Times> = HashMap::new();
        for r in requests {
            let class = match r.seen {
                Seen::Store => Class::Stored,
                _ => Class::Mailbox,
            };
            let t = items.entry((r.server, class, r.item)).or_default();
            match r.seen {
                Seen::Store => t.store = Some(r.at),
                Seen::Put => t.put = Some(t.put.map_or(r.at, |p: f64| p.min(r.at))),
                Seen::Look => {
                    t.first_look = Some(t.first_look.map_or(r.at, |f: f64| f.min(r.at)));
                    t.last_look = Some(t.last_look.map_or(r.at, |l: f64| l.max(r.at)));
                }
            }
        }
        let truth = items
            .keys()
            .filter_map(|&(s, c, i)| Some(((s, c, i), link_of(s, c, i)?)))
            .collect();
        Record {
            items,
            truth,
            servers,
        }
    }

    /// Every (link, server) -> item of `class`.
    fn by_link(&self, class: Class) -> HashMap<(usize, usize), usize> {
        self.truth
            .iter()
            .filter(|((_, c, _), _)| *c == class)
            .map(|(&(s, _, i), &link)| ((link, s), i))
            .collect()
    }
}

/// A learnt density of the difference of one feature between two copies of a link.
#[derive(Clone, Debug)]
struct Density {
    /// The density on a grid over the transformed difference `t(d)`.
    grid: Vec<f64>,
    /// How often one copy has the feature and the other not.
    mismatch: f64,
}

/// The grid covers t in [-T_MAX, T_MAX] (|d| up to e^15 s) in steps of T_STEP.
const T_MAX: f64 = 15.0;
const T_STEP: f64 = 0.01;
/// The share of a density spread evenly over the grid: nothing the attacker has not seen is
/// impossible.
const FLOOR: f64 = 1e-4;

/// A difference of seconds, on a scale where near and far differences both matter.
fn transform(d: f64) -> f64 {
    d.signum() * d.abs().ln_1p()
}

impl Density {
    fn learn(diffs: &[f64], mismatches: usize) -> Density {
        let cells = (2.0 * T_MAX / T_STEP) as usize + 1;
        let total = diffs.len() + mismatches;
        let mismatch = if total == 0 {
            0.5
        } else {
            (mismatches as f64 / total as f64).max(1e-3)
        };
        let ts: Vec<f64> = diffs.iter().map(|&d| transform(d)).collect();
        let n = ts.len();
        let uniform = 1.0 / (2.0 * T_MAX);
        if n < 2 {
            return Density {
                grid: vec![uniform; cells],
                mismatch,
            };
        }
        // A Gaussian kernel, Silverman's bandwidth.
        let mean = ts.iter().sum::<f64>() / n as f64;
        let sd = (ts.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
        let mut sorted = ts.clone();
        sorted.sort_by(f64::total_cmp);
        let iqr = sorted[3 * n / 4] - sorted[n / 4];
        let spread = if iqr > 0.0 { sd.min(iqr / 1.34) } else { sd };
        let h = (0.9 * spread * (n as f64).powf(-0.2)).max(0.02);
        let norm = 1.0 / (n as f64 * h * (2.0 * std::f64::consts::PI).sqrt());
        let grid = (0..cells)
            .map(|c| {
                let x = -T_MAX + c as f64 * T_STEP;
                let kde: f64 = ts
                    .iter()
                    .map(|t| (-0.5 * ((x - t) / h).powi(2)).exp())
                    .sum::<f64>()
                    * norm;
                (1.0 - FLOOR) * kde + FLOOR * uniform
            })
            .collect();
        Density { grid, mismatch }
    }

    /// The density of difference `d` seconds.
    fn at(&self, d: f64) -> f64 {
        let t = transform(d).clamp(-T_MAX, T_MAX);
        let c = (((t + T_MAX) / T_STEP).round() as usize).min(self.grid.len() - 1);
        // Back from the transformed scale: dt/dd = 1 / (1 + |d|).
        self.grid[c] / (1.0 + d.abs())
    }
}

/// What the attacker learnt from a training run: per feature, the densities of the copies'
/// differences.
pub struct Learnt(HashMap<Feature, Density>);

const FEATURES: [Feature; 4] = [
    Feature::Store,
    Feature::FirstLook,
    Feature::Put,
    Feature::LastLook,
];

/// Learn from `training` (its ground truth is the attacker's own simulation).
pub fn learn(training: &Record) -> Learnt {
    let mut learnt = HashMap::new();
    for f in FEATURES {
        let by_link = training.by_link(f.class());
        let (mut diffs, mut mismatches) = (Vec::new(), 0);
        for (&(link, x), &a) in &by_link {
            for y in 0..training.servers {
                let Some(&b) = by_link.get(&(link, y)) else {
                    continue;
                };
                if y == x {
                    continue;
                }
                let ta = training.items[&(x, f.class(), a)].get(f);
                let tb = training.items[&(y, f.class(), b)].get(f);
                match (ta, tb) {
                    (Some(ta), Some(tb)) => diffs.push(tb - ta),
                    (None, None) => {}
                    _ => mismatches += 1,
                }
            }
        }
        learnt.insert(f, Density::learn(&diffs, mismatches));
    }
    Learnt(learnt)
}

/// The attack with `features` (all of one class) on every copy of every link of `run`: for each
/// link and each ordered pair of servers (x, y), its item on x against every item of that class
/// on y.
pub fn pair(run: &Record, learnt: &Learnt, features: &[Feature]) -> Vec<Linking> {
    let Some(class) = features.first().map(|f| f.class()) else {
        return Vec::new();
    };
    debug_assert!(features.iter().all(|f| f.class() == class));
    let by_link = run.by_link(class);
    // Items by server, in a fixed order.
    let mut on: Vec<Vec<(usize, Times)>> = vec![Vec::new(); run.servers];
    for (&(s, c, i), t) in &run.items {
        if c == class {
            on[s].push((i, *t));
        }
    }
    for items in &mut on {
        items.sort_by_key(|(i, _)| *i);
    }
    let mut out = Vec::new();
    let mut keys: Vec<_> = by_link.keys().copied().collect();
    keys.sort_unstable();
    for (link, x) in keys {
        let a = run.items[&(x, class, by_link[&(link, x)])];
        for y in (0..run.servers).filter(|&y| y != x) {
            let Some(&target) = by_link.get(&(link, y)) else {
                continue;
            };
            let mut weights = Vec::with_capacity(on[y].len());
            let mut target_pos = None;
            for (n, (i, b)) in on[y].iter().enumerate() {
                if *i == target {
                    target_pos = Some(n);
                }
                let mut w = 1.0;
                for &f in features {
                    let d = &learnt.0[&f];
                    w *= match (a.get(f), b.get(f)) {
                        (Some(ta), Some(tb)) => d.at(tb - ta),
                        (None, None) => 1.0,
                        _ => d.mismatch,
                    };
                }
                weights.push(w);
            }
            out.push(score(&weights, target_pos));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `links` links on two servers, the copies of link i stored at 100 i on server 0 and
    /// `lag(i)` later on server 1; stored item i is link i's.
    fn stores(links: usize, lag: impl Fn(usize) -> f64) -> Record {
        let mut requests = Vec::new();
        for i in 0..links {
            let at = 100.0 * i as f64;
            requests.push(Request {
                server: 0,
                item: i,
                seen: Seen::Store,
                at,
            });
            requests.push(Request {
                server: 1,
                item: i,
                seen: Seen::Store,
                at: at + lag(i),
            });
        }
        Record::new(2, &requests, |_, _, i| Some(i))
    }

    #[test]
    fn copies_stored_in_one_instant_are_paired() {
        let r = stores(50, |_| 0.0);
        let learnt = learn(&r);
        let out = pair(&r, &learnt, &[Feature::Store]);
        assert_eq!(out.len(), 100);
        assert!(out.iter().all(|l| l.top_guess == 1.0), "{out:?}");
    }

    #[test]
    fn copies_stored_far_apart_at_random_are_not() {
        // Lags spread evenly over the whole run: the attacker learns nothing it can use.
        let lag = |i: usize| ((i * 37) % 50) as f64 * 100.0 - 2500.0;
        let training = stores(50, lag);
        let run = stores(50, |i| lag((i * 13) % 50));
        let out = pair(&run, &learn(&training), &[Feature::Store]);
        let right = out.iter().map(|l| l.top_guess).sum::<f64>() / out.len() as f64;
        assert!(right < 0.2, "{right}");
    }

    #[test]
    fn a_feature_one_copy_lacks_counts_as_the_learnt_mismatch() {
        let requests = [
            Request {
                server: 0,
                item: 0,
                seen: Seen::Put,
                at: 10.0,
            },
            Request {
                server: 1,
                item: 0,
                seen: Seen::Look,
                at: 10.0,
            },
        ];
        let r = Record::new(2, &requests, |_, _, _| Some(0));
        let learnt = learn(&r);
        assert_eq!(learnt.0[&Feature::Put].mismatch, 1.0);
        assert_eq!(
            pair(&r, &learnt, &[Feature::Put, Feature::FirstLook]).len(),
            2
        );
    }
}
