//! Servers that compare notes on multi-server links: which stored link, or which mailbox, on one
//! server is the same link's copy on another. Pure: no IO, no clock, no randomness.
//!
//! Each server sees, per copy, the time of its store and of its delete if one comes (a delete
//! names its entry), and per mailbox the times of every look into it and of the answer left
//! there. The attacker knows the client software: it learns, from
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
    /// A delete of stored link `item`.
    Delete,
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
    Delete,
}

impl Feature {
    pub fn class(self) -> Class {
        match self {
            Feature::Store | Feature::Delete => Class::Stored,
            _ => Class::Mailbox,
        }
    }
}

impl Seen {
    /// What the request is about: a stored link or a mailbox.
    pub fn class(self) -> Class {
        match self {
            Seen::Store | Seen::Delete => Class::Stored,
            Seen::Look | Seen::Put => Class::Mailbox,
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
    delete: Option<f64>,
}

impl Times {
    fn get(&self, f: Feature) -> Option<f64> {
        match f {
            Feature::Store => self.store,
            Feature::FirstLook => self.first_look,
            Feature::Put => self.put,
            Feature::LastLook => self.last_look,
            Feature::Delete => self.delete,
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
            let t = items.entry((r.server, r.seen.class(), r.item)).or_default();
            match r.seen {
                Seen::Store => t.store = Some(r.at),
                Seen::Delete => t.delete = Some(t.delete.map_or(r.at, |d: f64| d.min(r.at))),
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
/// differences, pooled and apart for each pair of answered states (whether each of the two
/// mailboxes got an answer: the copy answered and one left unanswered end their looks
/// differently).
pub struct Learnt {
    pooled: HashMap<Feature, Density>,
    by_state: HashMap<(Feature, bool, bool), Density>,
}

/// Fewer samples than this for a pair of answered states: the pooled density serves.
const MIN_SAMPLES: usize = 10;

const FEATURES: [Feature; 5] = [
    Feature::Store,
    Feature::FirstLook,
    Feature::Put,
    Feature::LastLook,
    Feature::Delete,
];

impl Learnt {
    fn density(&self, f: Feature, a: &Times, b: &Times) -> &Density {
        self.by_state
            .get(&(f, a.put.is_some(), b.put.is_some()))
            .unwrap_or(&self.pooled[&f])
    }

    /// How likely `b` on one server is the copy of `a` on another, by `features`.
    fn weight(&self, features: &[Feature], a: &Times, b: &Times) -> f64 {
        let mut w = 1.0;
        for &f in features {
            let d = self.density(f, a, b);
            w *= match (a.get(f), b.get(f)) {
                (Some(ta), Some(tb)) => d.at(tb - ta),
                (None, None) => 1.0,
                _ => d.mismatch,
            };
        }
        w
    }
}

/// Learn from `training` (its ground truth is the attacker's own simulation).
pub fn learn(training: &Record) -> Learnt {
    let mut pooled = HashMap::new();
    let mut by_state = HashMap::new();
    for f in FEATURES {
        let by_link = training.by_link(f.class());
        // Per pair of answered states, then pooled: (differences, mismatches).
        let mut samples: HashMap<(bool, bool), (Vec<f64>, usize)> = HashMap::new();
        for (&(link, x), &a) in &by_link {
            for y in (0..training.servers).filter(|&y| y != x) {
                let Some(&b) = by_link.get(&(link, y)) else {
                    continue;
                };
                let ta = training.items[&(x, f.class(), a)];
                let tb = training.items[&(y, f.class(), b)];
                let e = samples
                    .entry((ta.put.is_some(), tb.put.is_some()))
                    .or_default();
                match (ta.get(f), tb.get(f)) {
                    (Some(va), Some(vb)) => e.0.push(vb - va),
                    (None, None) => {}
                    _ => e.1 += 1,
                }
            }
        }
        let (mut all, mut all_mismatches) = (Vec::new(), 0);
        for (&(pa, pb), (diffs, mismatches)) in &samples {
            if diffs.len() + mismatches >= MIN_SAMPLES {
                by_state.insert((f, pa, pb), Density::learn(diffs, *mismatches));
            }
            all.extend_from_slice(diffs);
            all_mismatches += mismatches;
        }
        pooled.insert(f, Density::learn(&all, all_mismatches));
    }
    Learnt { pooled, by_state }
}

/// The attack with `features` (all of one class) on every copy of every link of `run`: for each
/// link and each ordered pair of servers (x, y), its item on x against every item of that class
/// on y, each weighed on its own ([`Paired::alone`]), and, all of x's items matched one-to-one
/// with y's at once (each link has one copy per server), whether the best such matching pairs
/// it right ([`Paired::matched`]).
pub fn pair(run: &Record, learnt: &Learnt, features: &[Feature]) -> Paired {
    let Some(class) = features.first().map(|f| f.class()) else {
        return Paired::default();
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
    let link_of = |s: usize, i: usize| run.truth.get(&(s, class, i)).copied();
    let mut out = Paired::default();
    for x in 0..run.servers {
        for y in (0..run.servers).filter(|&y| y != x) {
            let weights: Vec<Vec<f64>> = on[x]
                .iter()
                .map(|(_, a)| {
                    on[y]
                        .iter()
                        .map(|(_, b)| learnt.weight(features, a, b))
                        .collect()
                })
                .collect();
            let matching = assign(&weights);
            for (n, (i, _)) in on[x].iter().enumerate() {
                let Some(link) = link_of(x, *i) else {
                    continue;
                };
                let Some(&target) = by_link.get(&(link, y)) else {
                    continue;
                };
                let target_pos = on[y].iter().position(|(j, _)| *j == target);
                out.alone.push(score(&weights[n], target_pos));
                out.matched
                    .push(matching[n].is_some() && matching[n] == target_pos);
            }
        }
    }
    out
}

/// The attack's results: per copy, its own ranking, and whether the one-to-one matching got it.
#[derive(Debug, Default)]
pub struct Paired {
    pub alone: Vec<Linking>,
    pub matched: Vec<bool>,
}

/// The matching of rows to columns (each at most once) that maximizes the sum of the log
/// weights: for each row, its column (`None` for rows beyond the columns). The Hungarian
/// algorithm on costs `-ln w` (weights floored so that every cost is finite), O(n^3).
fn assign(weights: &[Vec<f64>]) -> Vec<Option<usize>> {
    let rows = weights.len();
    let cols = weights.first().map_or(0, Vec::len);
    let n = rows.max(cols);
    if n == 0 {
        return Vec::new();
    }
    // A square cost matrix, padded with zero-cost dummies.
    let cost = |r: usize, c: usize| -> f64 {
        if r < rows && c < cols {
            -weights[r][c].max(1e-300).ln()
        } else {
            0.0
        }
    };
    // Potentials and the matching, 1-based with 0 as the virtual start (the classic form).
    let (mut u, mut v) = (vec![0.0; n + 1], vec![0.0; n + 1]);
    let mut col_row = vec![0usize; n + 1];
    let mut way = vec![0usize; n + 1];
    for r in 1..=n {
        col_row[0] = r;
        let mut c0 = 0;
        let mut min = vec![f64::INFINITY; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[c0] = true;
            let r0 = col_row[c0];
            let (mut delta, mut c1) = (f64::INFINITY, 0);
            for c in 1..=n {
                if used[c] {
                    continue;
                }
                let reduced = cost(r0 - 1, c - 1) - u[r0] - v[c];
                if reduced < min[c] {
                    min[c] = reduced;
                    way[c] = c0;
                }
                if min[c] < delta {
                    delta = min[c];
                    c1 = c;
                }
            }
            for c in 0..=n {
                if used[c] {
                    u[col_row[c]] += delta;
                    v[c] -= delta;
                } else {
                    min[c] -= delta;
                }
            }
            c0 = c1;
            if col_row[c0] == 0 {
                break;
            }
        }
        loop {
            let c1 = way[c0];
            col_row[c0] = col_row[c1];
            c0 = c1;
            if c0 == 0 {
                break;
            }
        }
    }
    let mut of_row = vec![None; rows];
    for (c, &r) in col_row.iter().enumerate().skip(1) {
        if (1..=rows).contains(&r) && c <= cols {
            of_row[r - 1] = Some(c - 1);
        }
    }
    of_row
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
        assert_eq!(out.alone.len(), 100);
        assert!(out.alone.iter().all(|l| l.top_guess == 1.0), "{out:?}");
        assert!(out.matched.iter().all(|m| *m), "{out:?}");
    }

    #[test]
    fn copies_stored_far_apart_at_random_are_not() {
        // Lags spread evenly over the whole run: the attacker learns nothing it can use.
        let lag = |i: usize| ((i * 37) % 50) as f64 * 100.0 - 2500.0;
        let training = stores(50, lag);
        let run = stores(50, |i| lag((i * 13) % 50));
        let out = pair(&run, &learn(&training), &[Feature::Store]);
        let right = out.alone.iter().map(|l| l.top_guess).sum::<f64>() / out.alone.len() as f64;
        assert!(right < 0.2, "{right}");
    }

    /// Copies stored far apart at random but deleted in one instant (each link at a moment
    /// of its own): the deletes pair them, the stores do not.
    #[test]
    fn copies_deleted_in_one_instant_are_paired_by_their_deletes() {
        let lag = |i: usize| ((i * 37) % 50) as f64 * 100.0 - 2500.0;
        let with_deletes = |lag: &dyn Fn(usize) -> f64| {
            let mut r = stores(50, lag);
            let mut requests = Vec::new();
            for i in 0..50 {
                for server in 0..2 {
                    requests.push(Request {
                        server,
                        item: i,
                        seen: Seen::Delete,
                        at: 10_000.0 + 100.0 * ((i * 7) % 50) as f64,
                    });
                }
            }
            let deletes = Record::new(2, &requests, |_, _, i| Some(i));
            for (k, t) in deletes.items {
                r.items.entry(k).or_default().delete = t.delete;
            }
            r
        };
        let training = with_deletes(&lag);
        let run = with_deletes(&|i| lag((i * 13) % 50));
        let learnt = learn(&training);
        let right = |f: &[Feature]| {
            let out = pair(&run, &learnt, f);
            out.alone.iter().map(|l| l.top_guess).sum::<f64>() / out.alone.len() as f64
        };
        assert!(right(&[Feature::Store]) < 0.2);
        assert_eq!(right(&[Feature::Delete]), 1.0);
        assert_eq!(right(&[Feature::Store, Feature::Delete]), 1.0);
    }

    /// Two rows that each prefer the same column: the matching gives it to the one that
    /// gains more, and the other its second choice.
    #[test]
    fn the_matching_maximizes_the_whole() {
        let w = vec![vec![0.9, 0.1], vec![0.8, 0.7]];
        assert_eq!(assign(&w), [Some(0), Some(1)]);
        let w = vec![vec![0.9, 0.85], vec![0.9, 0.1]];
        assert_eq!(assign(&w), [Some(1), Some(0)]);
        // More rows than columns: one row is left out.
        let w = vec![vec![0.5], vec![0.9], vec![0.1]];
        assert_eq!(assign(&w), [None, Some(0), None]);
        assert!(assign(&[]).is_empty());
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
        assert_eq!(learnt.pooled[&Feature::Put].mismatch, 1.0);
        assert_eq!(
            pair(&r, &learnt, &[Feature::Put, Feature::FirstLook])
                .alone
                .len(),
            2
        );
    }
}
