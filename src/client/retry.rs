//! Attempts within a budget, shared by the transports that reach onion services (embedded arti
//! and a tor's SOCKS port).
//!
//! Each attempt is bounded on its own ([`Patience::attempt_timeout`]) and attempts are retried
//! within the overall budget ([`Patience::budget`]) when retrying can help, after a short pause
//! that grows (1 s, 2 s, … 5 s): one lost rendezvous costs one attempt, not the whole budget. A
//! service the network says is not there ends the attempts early: at the second "unknown to its
//! introduction points" answer (a second after the first, for a service that has just restarted
//! and published anew), or once "no directory has its descriptor" has lasted
//! [`Patience::absent_grace`] (a service publishes some seconds after it starts; directories
//! change hands at the end of each time period; a tor that has just started may still be
//! fetching the directory information that says which directories to ask).

use super::{ConnectError, ConnectStage, Stream};
use futures::future::BoxFuture;
use std::time::Duration;
use tokio::time::Instant;

/// How long to keep trying.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Patience {
    /// Longest single attempt.
    pub attempt_timeout: Duration,
    /// Longest time for all attempts together.
    pub budget: Duration,
    /// How long "no directory has a descriptor" may last before the service is taken to be
    /// absent.
    pub absent_grace: Duration,
}

/// How many attempts a service whose introduction points do not know it gets: the second, a
/// second after the first, finds a service that has just restarted and published anew.
const UNKNOWN_ATTEMPTS: u32 = 2;

/// How the network says the onion service is not there (not a lost circuit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Absence {
    /// Every directory asked answered that it has no descriptor.
    NoDescriptor,
    /// Every introduction point tried answered that it does not know the service.
    Unknown,
}

impl Absence {
    fn why(self) -> &'static str {
        match self {
            Absence::NoDescriptor => "no directory has a descriptor for this onion service: it does not exist, has not published yet, or has been offline for hours",
            Absence::Unknown => "the onion service's introduction points do not know it: it is down (or restarted and has not published its new descriptor yet)",
        }
    }
}

/// One failed attempt, as the transport classifies it.
pub(crate) struct Failure {
    /// Where it failed.
    pub stage: ConnectStage,
    /// Whether another attempt can help.
    pub retryable: bool,
    /// Whether the network said the service is not there.
    pub absence: Option<Absence>,
    /// At most this many attempts for an answer like this one (`None`: as many as the budget
    /// allows), for answers that say too little to be worth many more tries.
    pub most_attempts: Option<u32>,
    /// The transport's own error.
    pub error: Box<dyn std::error::Error + Send + Sync>,
}

/// One connection attempt.
pub(crate) type Attempt = BoxFuture<'static, Result<Box<dyn Stream>, Failure>>;

/// An attempt ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("no connection within {} (the descriptor, introduction or rendezvous did not complete; {attempts} attempt{})", humantime::format_duration(*.per_attempt), if *.attempts == 1 { "" } else { "s" })]
struct AttemptTimedOut {
    per_attempt: Duration,
    attempts: u32,
}

/// The last attempt's error, with how many attempts there were.
#[derive(Debug, thiserror::Error)]
#[error("after {attempts} attempt{}", if *.attempts == 1 { "" } else { "s" })]
struct Attempts {
    attempts: u32,
    #[source]
    last: Box<dyn std::error::Error + Send + Sync>,
}

/// The budget ran out during an attempt; the error of the latest attempt that failed with an
/// answer.
#[derive(Debug, thiserror::Error)]
#[error("no connection within {} ({attempts} attempts; the last one was cut short, an earlier one failed)", humantime::format_duration(*.budget))]
struct BudgetSpent {
    attempts: u32,
    budget: Duration,
    #[source]
    last: Box<dyn std::error::Error + Send + Sync>,
}

/// The service is not there (see [`Absence`]).
#[derive(Debug, thiserror::Error)]
#[error("{why} ({attempts} attempts)")]
struct Absent {
    why: &'static str,
    attempts: u32,
    #[source]
    last: Box<dyn std::error::Error + Send + Sync>,
}

/// Run `attempt` until it connects, fails in a way retrying cannot help, the service is taken
/// to be absent, or the budget is spent. Errors are about `name`.
pub(crate) async fn connect_with_retries<F>(
    name: &str,
    patience: Patience,
    mut attempt: F,
) -> Result<Box<dyn Stream>, ConnectError>
where
    F: FnMut() -> Attempt,
{
    // An absurd budget (a --connect-timeout of centuries) is a very long one, not a panic.
    let deadline = Instant::now()
        .checked_add(patience.budget)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(10 * 365 * 86_400));
    let mut attempts = 0u32;
    let mut unknown = 0u32;
    let mut no_descriptor_since: Option<Instant> = None;
    // The latest attempt that failed with an answer, for when the budget cuts one short.
    let mut answered: Option<(ConnectStage, bool, Box<dyn std::error::Error + Send + Sync>)> = None;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let limit = patience.attempt_timeout.min(left);
        let mut got_answer = false;
        let (stage, retryable, err): (_, _, Box<dyn std::error::Error + Send + Sync>) =
            match tokio::time::timeout(limit, attempt()).await {
                Ok(Ok(s)) => return Ok(s),
                Ok(Err(f)) => {
                    let gone = match f.absence {
                        Some(Absence::Unknown) => {
                            unknown += 1;
                            unknown >= UNKNOWN_ATTEMPTS
                        }
                        Some(Absence::NoDescriptor) => {
                            let since = *no_descriptor_since.get_or_insert_with(Instant::now);
                            since.elapsed() >= patience.absent_grace
                        }
                        None => {
                            no_descriptor_since = None;
                            false
                        }
                    };
                    if let Some(why) = f.absence.filter(|_| gone).map(Absence::why) {
                        // Transient: the service may come back, but not in this operation's
                        // budget as far as anyone can tell.
                        return Err(ConnectError::new(
                            name,
                            f.stage,
                            true,
                            Absent {
                                why,
                                attempts,
                                last: f.error,
                            },
                        ));
                    }
                    got_answer = true;
                    let last = f.error;
                    let retryable = f.retryable && f.most_attempts.is_none_or(|n| attempts < n);
                    if f.retryable && !retryable {
                        // Tried enough; still a transient failure for whoever reports it.
                        let e = Attempts { attempts, last };
                        return Err(ConnectError::new(name, f.stage, true, e));
                    }
                    (f.stage, retryable, Box::new(Attempts { attempts, last }))
                }
                // Cut short by the budget: the attempt before it, which did fail with an answer
                // (an introduction refused, say), says more than "no connection within 1 s".
                Err(_) if limit < patience.attempt_timeout && answered.is_some() => {
                    let (stage, retryable, last) = answered.take().expect("checked");
                    let e = BudgetSpent {
                        attempts,
                        budget: patience.budget,
                        last,
                    };
                    return Err(ConnectError::new(name, stage, retryable, e));
                }
                Err(_) => (
                    ConnectStage::Rendezvous,
                    true,
                    Box::new(AttemptTimedOut {
                        per_attempt: limit,
                        attempts,
                    }),
                ),
            };
        // A short pause, growing, before the next attempt: right after a service restarts,
        // directories may still serve its previous descriptor.
        let pause = Duration::from_secs(u64::from(attempts.min(5)));
        if !retryable || Instant::now() + pause + Duration::from_secs(1) >= deadline {
            return Err(ConnectError::new(name, stage, retryable, err));
        }
        tracing::info!(attempt = attempts, stage = %stage, error = %crate::config::report(&*err), "connecting failed; retrying");
        // A full-length timeout since then makes an older answer stale.
        answered = got_answer.then_some((stage, retryable, err));
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, thiserror::Error)]
    #[error("refused")]
    struct Refused;

    /// When each attempt started.
    type Starts = Arc<Mutex<Vec<Instant>>>;

    /// Attempts that fail as `script` says, one entry per attempt, then connect.
    fn scripted(
        script: Vec<(ConnectStage, bool, Option<Absence>)>,
    ) -> (impl FnMut() -> Attempt, Starts) {
        let times = Arc::new(Mutex::new(Vec::new()));
        let seen = times.clone();
        let mut script = script.into_iter();
        let f = move || {
            seen.lock().unwrap().push(Instant::now());
            let next = script.next();
            Box::pin(async move {
                match next {
                    Some((stage, retryable, absence)) => Err(Failure {
                        stage,
                        retryable,
                        absence,
                        most_attempts: None,
                        error: Box::new(Refused),
                    }),
                    None => Ok(Box::new(tokio::io::duplex(64).0) as Box<dyn Stream>),
                }
            }) as Attempt
        };
        (f, times)
    }

    fn patience() -> Patience {
        Patience {
            attempt_timeout: Duration::from_secs(30),
            budget: Duration::from_secs(120),
            absent_grace: Duration::from_secs(20),
        }
    }

    const NO_DESC: (ConnectStage, bool, Option<Absence>) =
        (ConnectStage::Descriptor, true, Some(Absence::NoDescriptor));

    #[tokio::test(start_paused = true)]
    async fn a_descriptor_that_appears_within_the_grace_connects() {
        let (f, times) = scripted(vec![NO_DESC; 4]);
        assert!(connect_with_retries("x.onion:1", patience(), f)
            .await
            .is_ok());
        assert_eq!(times.lock().unwrap().len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_descriptor_missing_past_the_grace_ends_the_attempts_early() {
        let start = Instant::now();
        let (f, times) = scripted(vec![NO_DESC; 100]);
        let Err(e) = connect_with_retries("x.onion:1", patience(), f).await else {
            panic!("never connects")
        };
        assert_eq!(e.stage, ConnectStage::Descriptor);
        assert!(crate::config::report(&e)
            .to_string()
            .contains("no directory has a descriptor"));
        let took = start.elapsed();
        assert!(took >= patience().absent_grace, "{took:?}");
        assert!(
            took < patience().absent_grace + Duration::from_secs(6),
            "{took:?}"
        );
        assert!(times.lock().unwrap().len() >= 3);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_to_its_introduction_points_twice_ends_the_attempts() {
        let unknown = (ConnectStage::Introduction, true, Some(Absence::Unknown));
        let (f, times) = scripted(vec![unknown; 100]);
        let Err(e) = connect_with_retries("x.onion:1", patience(), f).await else {
            panic!("never connects")
        };
        assert!(crate::config::report(&e)
            .to_string()
            .contains("introduction points do not know it"));
        assert_eq!(times.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn what_retrying_cannot_help_is_tried_once() {
        let (f, times) = scripted(vec![(ConnectStage::Stream, false, None); 3]);
        let Err(e) = connect_with_retries("x.onion:1", patience(), f).await else {
            panic!("refused")
        };
        assert!(!e.retryable);
        assert_eq!(times.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn lost_rendezvous_are_retried_within_the_budget_and_no_further() {
        let start = Instant::now();
        let (f, times) = scripted(vec![(ConnectStage::Rendezvous, true, None); 1000]);
        let Err(e) = connect_with_retries("x.onion:1", patience(), f).await else {
            panic!("never connects")
        };
        assert_eq!(e.stage, ConnectStage::Rendezvous);
        assert!(start.elapsed() <= patience().budget);
        let n = times.lock().unwrap().len();
        assert!(n > 10, "{n} attempts");
    }

    /// A server that crashed: the first attempts are refused at the introduction, the last one
    /// hangs until the budget cuts it short. The error names the introduction, not "no
    /// connection within 1 s" at the rendezvous.
    #[tokio::test(start_paused = true)]
    async fn an_attempt_cut_short_by_the_budget_reports_the_one_before() {
        let p = Patience {
            attempt_timeout: Duration::from_secs(30),
            budget: Duration::from_secs(10),
            absent_grace: Duration::from_secs(20),
        };
        let mut n = 0;
        let attempt = move || {
            n += 1;
            let first = n == 1;
            Box::pin(async move {
                if first {
                    return Err(Failure {
                        stage: ConnectStage::Introduction,
                        retryable: true,
                        absence: None,
                        most_attempts: None,
                        error: Box::new(Refused),
                    });
                }
                futures::future::pending().await
            }) as Attempt
        };
        let Err(e) = connect_with_retries("x.onion:1", p, attempt).await else {
            panic!("never connects")
        };
        assert_eq!(e.stage, ConnectStage::Introduction);
        let text = crate::config::report(&e).to_string();
        assert!(
            text.contains("refused") && text.contains("cut short"),
            "{text}"
        );
    }
}
