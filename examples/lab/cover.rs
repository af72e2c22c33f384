//! What cover traffic buys: the answer flow (`flow.rs`) with the decoy mailboxes and decoy
//! fetches `rdv agent --cover-mailboxes/--cover-fetches` sends, at several rates, against an
//! attacker that knows the rates (a decoy is one more explanation of every looked-into mailbox).

use crate::{flow, flow_policies, measure_flow};
use anyhow::Result;

/// The section: for the default policy and the overrides that lose anonymity through their
/// looks, the effective set with and without cover.
pub async fn section(duration: u64, quick: bool) -> Result<()> {
    let policies = flow_policies();
    let default = policies[4];
    let picked = [
        default,
        policies[7],
        policies[6],
        flow::Policy {
            label: "default, the accepter answers after 5 min (mean)",
            put_delay: Some(300.0),
            ..default
        },
    ];
    // Per hour, for the whole server (6 offers a minute: 180 real mailboxes and 360 accepts an
    // hour); the same rate of decoy mailboxes and of decoy fetches.
    let rates: &[f64] = if quick {
        &[0.0, 720.0]
    } else {
        &[0.0, 180.0, 720.0, 3600.0]
    };
    println!("\n## Cover traffic (the answer flow at 6 offers/min, window 10 min, accept delay mean 10 min; half the offers expect an answer)\n");
    println!("| client policy | decoy mailboxes and decoy fetches per hour (each) | cover requests per hour seen | answered: effective set 2^H | answered: top guess right | never answered: effective set | never answered: top guess right |");
    println!("|---|---|---|---|---|---|---|");
    for (i, policy) in picked.into_iter().enumerate() {
        for &rate in rates {
            let run = flow::FlowRun {
                rate_per_min: 6.0,
                window: 600,
                duration,
                mean_accept_delay: 600.0,
                answered_share: 0.5,
                policy,
                // The same traffic for every rate of a policy: only the cover differs.
                seed: 6000 + i as u64,
                cover: flow::Cover {
                    mailboxes_per_hour: rate,
                    fetches_per_hour: rate,
                },
            };
            let (r, seen) = measure_flow(run).await?;
            println!(
                "| {} | {:.0} | {:.0} | {:.1} | {:.0} % | {:.1} | {:.0} % |",
                policy.label,
                rate,
                seen,
                r.answered.0,
                100.0 * r.answered.1,
                r.unanswered.0,
                100.0 * r.unanswered.1,
            );
        }
    }
    Ok(())
}
