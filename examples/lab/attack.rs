//! The linking attack of an honest-but-curious server, on the record of what it saw. Pure: no
//! IO, no clock, no randomness.
//!
//! The server sees, for every operation, its time and its bucket: stores (each link's own
//! bucket and position), fetches (which bucket, not by whom) and deletes (which link: the delete
//! token's check matches one stored link). For a fetch that is an accept, the candidates are the
//! links of that bucket stored before the fetch and not deleted by then (k_fetch); the attacker
//! weighs each by how likely its age is under the known accept-delay model, and, when
//! initiators delete their link after the accept, by how likely the link's delete time is. The
//! degree of anonymity of that accept is the entropy of the weights over log2 of the number of
//! candidates (1: all equally likely; 0: certain or a single candidate).

/// One stored link, as the server saw it.
#[derive(Clone, Debug)]
pub struct StoredLink {
    /// Store time, seconds.
    pub stored: f64,
    /// Its bucket (an index into the run's buckets).
    pub bucket: usize,
    /// When it was deleted, if it was.
    pub deleted: Option<f64>,
}

/// What the attacker knows about the honest users' behaviour.
#[derive(Clone, Copy, Debug)]
pub struct TimingModel {
    /// Mean of the exponential delay from the moment the link is handed over to the accept.
    pub mean_accept_delay: f64,
    /// The link is handed over when the bucket closes (`--hold`) rather than at once.
    pub hold: bool,
    /// Initiators delete their link after the accept, after an exponential delay of this mean
    /// (`None`: no delete policy).
    pub mean_delete_delay: Option<f64>,
}

/// The attack's result for one accept.
#[derive(Clone, Copy, Debug)]
pub struct Linking {
    /// Candidates (k_fetch).
    pub candidates: usize,
    /// Entropy of the attacker's distribution, bits.
    pub entropy: f64,
    /// Entropy over log2(candidates); 0 with a single candidate.
    pub degree: f64,
    /// The chance that the attacker's first guess (its most likely candidate, ties broken at
    /// random) is the right one.
    pub top_guess: f64,
}

/// The attack on one accept: a fetch at `fetched` of bucket `bucket` whose true link is
/// `target`; `close` is when each bucket counts as closed to every client (its window's end
/// plus the client policy's skew: when a held link is handed over).
pub fn link(
    links: &[StoredLink],
    close: &[f64],
    bucket: usize,
    fetched: f64,
    target: usize,
    model: &TimingModel,
) -> Linking {
    let mut weights = Vec::new();
    let mut target_pos = None;
    for (i, l) in links.iter().enumerate() {
        if l.bucket != bucket || l.stored > fetched || l.deleted.is_some_and(|d| d <= fetched) {
            continue;
        }
        // When this link would have been handed over.
        let handed = if model.hold { close[bucket] } else { l.stored };
        let mut w = exp_density(fetched - handed, model.mean_accept_delay);
        if let Some(mean_del) = model.mean_delete_delay {
            // Under the policy the true link is deleted after its accept: a link never deleted,
            // or deleted before this fetch, is not it (those were skipped above).
            w *= match l.deleted {
                Some(d) => exp_density(d - fetched, mean_del),
                None => 0.0,
            };
        }
        if i == target {
            target_pos = Some(weights.len());
        }
        weights.push(w);
    }
    score(&weights, target_pos)
}

/// The attacker's distribution over candidates from their (unnormalized) weights, and how it
/// fares against the true candidate at `target_pos`.
pub fn score(weights: &[f64], target_pos: Option<usize>) -> Linking {
    let candidates = weights.len();
    let total: f64 = weights.iter().sum();
    let probs: Vec<f64> = if total > 0.0 && total.is_finite() {
        weights.iter().map(|w| w / total).collect()
    } else {
        // The model explains none of them: the attacker is left with a uniform guess.
        vec![1.0 / candidates.max(1) as f64; candidates]
    };
    let entropy: f64 = probs
        .iter()
        .filter(|p| **p > 0.0)
        .map(|p| -p * p.log2())
        .sum();
    let degree = if candidates > 1 {
        entropy / (candidates as f64).log2()
    } else {
        0.0
    };
    let top = probs.iter().copied().fold(0.0, f64::max);
    // Equal within rounding: a tie.
    let tied = |p: f64| p >= top * (1.0 - 1e-9);
    let ties = probs.iter().filter(|p| tied(**p)).count().max(1);
    let top_guess = match target_pos {
        Some(t) if tied(probs[t]) => 1.0 / ties as f64,
        _ => 0.0,
    };
    Linking {
        candidates,
        entropy,
        degree,
        top_guess,
    }
}

/// The density of an exponential distribution of mean `mean` at `x`.
pub fn exp_density(x: f64, mean: f64) -> f64 {
    if x < 0.0 {
        0.0
    } else {
        (-x / mean).exp() / mean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(stored: f64, deleted: Option<f64>) -> StoredLink {
        StoredLink {
            stored,
            bucket: 0,
            deleted,
        }
    }

    #[test]
    fn hold_makes_every_candidate_equally_likely() {
        let links: Vec<_> = (0..8).map(|i| l(i as f64 * 10.0, None)).collect();
        let m = TimingModel {
            mean_accept_delay: 60.0,
            hold: true,
            mean_delete_delay: None,
        };
        let r = link(&links, &[100.0], 0, 150.0, 3, &m);
        assert_eq!(r.candidates, 8);
        assert!((r.degree - 1.0).abs() < 1e-9 && (r.entropy - 3.0).abs() < 1e-9);
        // Eight equally likely candidates: the first guess is right one time in eight.
        assert!((r.top_guess - 0.125).abs() < 1e-12);
    }

    #[test]
    fn a_prompt_delete_gives_the_link_away() {
        let mut links: Vec<_> = (0..8).map(|i| l(i as f64, None)).collect();
        links[5].deleted = Some(205.0);
        let m = TimingModel {
            mean_accept_delay: 60.0,
            hold: false,
            mean_delete_delay: Some(10.0),
        };
        let r = link(&links, &[600.0], 0, 200.0, 5, &m);
        assert_eq!(r.candidates, 8);
        assert_eq!(r.degree, 0.0);
        assert_eq!(r.top_guess, 1.0);
    }

    #[test]
    fn timing_alone_favours_the_links_stored_just_before() {
        let links = vec![l(0.0, None), l(290.0, None)];
        let m = TimingModel {
            mean_accept_delay: 10.0,
            hold: false,
            mean_delete_delay: None,
        };
        let r = link(&links, &[600.0], 0, 300.0, 1, &m);
        assert!(r.top_guess == 1.0 && r.degree < 0.1, "{r:?}");
    }
}
