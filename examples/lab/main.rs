//! The metadata lab: how many other links a user's link hides among, measured on a real server
//! under a traffic model, and how well an honest-but-curious server can link accepts to offers.
//!
//! ```sh
//! cargo run --release --example lab                 # the full set (about ten minutes)
//! cargo run --release --example lab -- --quick      # fewer, shorter runs
//! cargo run --release --example lab -- --out docs/lab
//! cargo run --release --example lab -- --only flow  # one section (buckets, delay, flow, cover, copies, clock, stamps, adversary)
//! ```
//!
//! Prints Markdown tables and writes SVG plots (`k_vs_rate.svg`, `degree_vs_delay.svg`,
//! `answer_flow.svg`) into `--out` (default `target/lab`). docs/ANONYMITY.md explains the model,
//! the attack and the figures. Each run drives an in-process server over the redb store through
//! the library client (`sim.rs`; the answer flow in `flow.rs`, with cover traffic, `cover.rs`); the attack sees only the server's
//! request stream (`attack.rs`; `flow_attack.rs` for the answer flow); the server's own metrics
//! are read back and must agree with the lab's count. Multi-server links (`copies.rs`) run the
//! client's own code on three in-process servers on paused time, against servers that compare
//! notes (`copies_attack.rs`).

mod adversary;
mod attack;
mod clock;
mod copies;
mod copies_attack;
mod cover;
mod flow;
mod flow_attack;
mod plot;
mod sim;

use anyhow::{ensure, Result};
use attack::TimingModel;
use rdv::server::adversary::Adversary;
use sim::Model;

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

/// Expected real links per bucket when every link opens or joins the current bucket and
/// buckets hold at most 64: the first link opens it, then N ~ Poisson(λ·W) more arrive in its
/// window, so E[min(64, 1 + N)] (which is about min(64, 1 + λ·W) away from the cap).
fn expected_k_close(rate_per_min: f64, window: u64) -> f64 {
    let mu = rate_per_min / 60.0 * window as f64;
    // P(N = n) by recurrence; the tail beyond 63 counts as 64.
    let mut p = (-mu).exp();
    let (mut e, mut below) = (0.0, 0.0);
    for n in 0..63u32 {
        e += p * f64::from(1 + n);
        below += p;
        p *= mu / f64::from(n + 1);
    }
    e + (1.0 - below) * 64.0
}

struct Row {
    label: String,
    rate: f64,
    window: u64,
    k_close: f64,
    k_fetch: f64,
    degree: f64,
    /// Mean of 2^entropy: the number of equally likely candidates the attacker is left with.
    effective: f64,
    top_right: f64,
    accepts: usize,
}

async fn measure(label: &str, m: Model) -> Result<Row> {
    let o = sim::run(&m).await?;
    // The server's own histograms count what the lab counts.
    let lab_close: f64 = o.k_close.iter().map(|k| *k as f64).sum();
    let lab_fetch: f64 = o.accepts.iter().map(|a| a.candidates as f64).sum();
    ensure!(
        o.server_k_close == (lab_close, o.k_close.len() as f64),
        "{label}: the server's rdv_bucket_links_at_close {:?} != the lab's ({lab_close}, {})",
        o.server_k_close,
        o.k_close.len()
    );
    ensure!(
        o.server_k_fetch == (lab_fetch, o.accepts.len() as f64),
        "{label}: the server's rdv_fetch_candidates {:?} != the lab's ({lab_fetch}, {})",
        o.server_k_fetch,
        o.accepts.len()
    );
    Ok(Row {
        label: label.to_string(),
        rate: m.rate_per_min,
        window: m.window,
        k_close: mean(o.k_close.iter().map(|k| *k as f64)),
        k_fetch: mean(o.accepts.iter().map(|a| a.candidates as f64)),
        degree: mean(o.accepts.iter().map(|a| a.degree)),
        effective: mean(o.accepts.iter().map(|a| a.entropy.exp2())),
        top_right: mean(o.accepts.iter().map(|a| a.top_guess)),
        accepts: o.accepts.len(),
    })
}

/// Section 4: the count of verified links an accepter is shown, against the real links in the
/// bucket at its fetch, on an honest server at several rates.
async fn stamps(duration: u64) -> Result<()> {
    println!("\n## Verified links shown vs real links in the bucket (honest server, window 10 min, accept delay mean 10 min)\n");
    println!("| offers/min | accepts | mean real links at the fetch (k_fetch) | mean verified links shown | accepts where the two differ |");
    println!("|---|---|---|---|---|");
    for (i, rate) in [0.5, 2.0, 6.0, 20.0].into_iter().enumerate() {
        let m = Model {
            rate_per_min: rate,
            window: 600,
            duration: duration.min(3600),
            timing: TimingModel {
                mean_accept_delay: 600.0,
                hold: false,
                mean_delete_delay: None,
            },
            seed: 5000 + i as u64,
            stamps: true,
        };
        let o = sim::run(&m).await?;
        let n = o.verified.len();
        let differ = o.verified.iter().filter(|(k, v)| Some(*k) != *v).count();
        println!(
            "| {rate} | {n} | {:.1} | {:.1} | {differ} |",
            mean(o.verified.iter().map(|(k, _)| *k as f64)),
            mean(o.verified.iter().map(|(_, v)| v.unwrap_or(0) as f64)),
        );
        ensure!(
            differ == 0,
            "at {rate}/min the count differs from the bucket in {differ} accepts"
        );
    }
    Ok(())
}

/// Section 5: the client against every adversarial mode, and what deception costs a server
/// that pays for stamps on its fakes.
async fn adversaries(quick: bool) -> Result<()> {
    println!("\n## The client against an adversarial server\n");
    println!("| server | traffic | offers | detected by the client's policy | throttled (Overloaded) | accepts that opened | other real links in the accepter's bucket | verified links shown (mean) | accepts shown no company (≤ 1) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for d in adversary::table().await? {
        println!(
            "| {} | {} | {} | {} ({:.0} %) | {} | {} | {:.1} | {:.1} | {} of {} |",
            d.mode,
            match d.level {
                "low" => "1 offer / 10 s",
                _ => "40 offers in 1 s",
            },
            d.offers,
            d.detected,
            100.0 * d.detected as f64 / d.offers as f64,
            d.throttled,
            d.opened,
            d.others,
            d.verified,
            d.alone,
            d.opened
        );
    }
    let effort = rdv::proto::stamp::DEFAULT_EFFORT;
    let per_stamp = adversary::stamp_seconds(effort, if quick { 5 } else { 20 });
    println!("\n## What deceiving a client costs a server that stamps its fakes (effort {effort}; one stamp took {per_stamp:.3} s of one core in this run)\n");
    println!("| mode | fakes stamped per victim | verified links the victim's accepter is shown | server seconds per deceived user | server cores kept busy deceiving one new victim every 10 s |");
    println!("|---|---|---|---|---|");
    let budgets: &[usize] = if quick { &[7] } else { &[7, 31, 63] };
    for mode in [Adversary::Isolate, Adversary::Dummies] {
        for &b in budgets {
            let c = adversary::cost(mode, b, effort).await?;
            // The victim's own stamp is its client's work, not the server's.
            let server = (c.seconds - per_stamp).max(0.0);
            println!(
                "| {} | {} | {} | {:.1} | {:.2} |",
                c.mode,
                c.budget,
                c.shown,
                server,
                server / 10.0
            );
        }
    }
    Ok(())
}

/// The answer flow's policies: what rdv 0.1 did, today's default, and each override.
fn flow_policies() -> Vec<flow::Policy> {
    let default = flow::Policy {
        label: "default: looks from the close at random (mean 30 s), link left to expire",
        hold: false,
        looks_from_close: true,
        look_mean: 30.0,
        poisson: true,
        put_delay: None,
        delete: flow::Delete::Never,
    };
    let before = flow::Policy {
        label: "rdv 0.1: looks from the store every 10 s, delete after the answer",
        looks_from_close: false,
        look_mean: 10.0,
        poisson: false,
        delete: flow::Delete::AfterAnswer(0.0),
        ..default
    };
    vec![
        before,
        flow::Policy {
            label: "rdv 0.1 with --keep-link",
            delete: flow::Delete::Never,
            ..before
        },
        flow::Policy {
            label: "rdv 0.1, the accepter answers after 5 min (mean)",
            put_delay: Some(300.0),
            delete: flow::Delete::Never,
            ..before
        },
        flow::Policy {
            label: "looks from the close every 10 s, delete after the answer",
            looks_from_close: true,
            ..before
        },
        default,
        flow::Policy {
            label: "default with --hold",
            hold: true,
            ..default
        },
        flow::Policy {
            label: "default with --poll-every 2s",
            look_mean: 2.0,
            ..default
        },
        flow::Policy {
            label: "default with --early (looks from the store)",
            looks_from_close: false,
            ..default
        },
        flow::Policy {
            label: "default with --delete-now",
            delete: flow::Delete::AfterAnswer(0.0),
            ..default
        },
        flow::Policy {
            label: "default, delete at a random moment (mean 2 h after the answer)",
            delete: flow::Delete::AfterAnswer(7200.0),
            ..default
        },
        flow::Policy {
            label: "default, links that expect an answer deleted 3 h after the close",
            delete: flow::Delete::AfterClose {
                after: 3.0 * 3600.0,
                all: false,
            },
            ..default
        },
        flow::Policy {
            label: "default, every link deleted 3 h after the close",
            delete: flow::Delete::AfterClose {
                after: 3.0 * 3600.0,
                all: true,
            },
            ..default
        },
    ]
}

/// Effective set and top-guess accuracy of answered and never-answered links.
struct FlowRow {
    answered: (f64, f64),
    unanswered: (f64, f64),
    looks: f64,
    latency: f64,
    deletes_60s: f64,
    deletes: f64,
}

/// One run of the answer flow: its row, and the cover requests per hour the server saw.
async fn measure_flow(run: flow::FlowRun) -> Result<(FlowRow, f64)> {
    let o = flow::run(&run).await?;
    let class = |answered: bool| {
        let v: Vec<_> = o.accepts.iter().filter(|(_, a)| *a == answered).collect();
        (
            mean(v.iter().map(|(l, _)| l.entropy.exp2())),
            mean(v.iter().map(|(l, _)| l.top_guess)),
        )
    };
    let row = FlowRow {
        answered: class(true),
        unanswered: class(false),
        looks: o.looks_per_answer,
        latency: o.answer_latency,
        deletes_60s: o.server_deletes_within_60s,
        deletes: o.server_deletes,
    };
    Ok((row, o.cover_per_hour))
}

/// Section 3: the answer flow at the reference traffic, and against the accept delay.
async fn answer_flow(out: &str, duration: u64, quick: bool) -> Result<()> {
    let reference = |policy: flow::Policy, delay: f64, seed: u64| flow::FlowRun {
        rate_per_min: 6.0,
        window: 600,
        duration,
        mean_accept_delay: delay,
        answered_share: 0.5,
        policy,
        seed,
        cover: flow::Cover::default(),
    };
    println!("\n## The answer flow (6 offers/min, window 10 min, accept delay mean 10 min; half the offers expect an answer)\n");
    println!("| client policy | answered: effective set 2^H | answered: top guess right | never answered: effective set | never answered: top guess right | answered / never answered (set) | top guess, answered / never | looks per answer | answer found after (mean) | server: deletes within 60 s of a fetch / all deletes |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (i, policy) in flow_policies().into_iter().enumerate() {
        let (r, _) = measure_flow(reference(policy, 600.0, 3000 + i as u64)).await?;
        println!(
            "| {} | {:.1} | {:.0} % | {:.1} | {:.0} % | {:.2} | {:.1}× | {:.1} | {:.0} s | {} / {} |",
            policy.label,
            r.answered.0,
            100.0 * r.answered.1,
            r.unanswered.0,
            100.0 * r.unanswered.1,
            r.answered.0 / r.unanswered.0,
            r.answered.1 / r.unanswered.1,
            r.looks,
            r.latency,
            r.deletes_60s,
            r.deletes
        );
    }
    // Against the accept delay: rdv 0.1, the default, and the default with --delete-now.
    let delays: &[f64] = if quick {
        &[120.0, 1200.0]
    } else {
        &[60.0, 300.0, 1200.0, 3600.0]
    };
    let policies = flow_policies();
    let mut series = Vec::new();
    for (c, (name, policy)) in [
        ("rdv 0.1", policies[0]),
        ("default", policies[4]),
        ("--delete-now", policies[8]),
    ]
    .into_iter()
    .enumerate()
    {
        let (mut answered, mut unanswered) = (Vec::new(), Vec::new());
        for (i, &delay) in delays.iter().enumerate() {
            let (r, _) = measure_flow(reference(policy, delay, 4000 + i as u64)).await?;
            answered.push((delay / 60.0, r.answered.0));
            unanswered.push((delay / 60.0, r.unanswered.0));
        }
        series.push(plot::Series::new(format!("{name}: answered"), answered).color(c));
        series.push(plot::Series::dashed(format!("{name}: never answered"), unanswered).color(c));
    }
    plot::lines(
        &format!("{out}/answer_flow.svg"),
        "Effective anonymity set of an accept (6 offers/min, W = 10 min)",
        "mean accept delay, minutes",
        "effective set 2^H",
        true,
        &series,
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "target/lab".into());
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: lab [--quick] [--out DIR] [--only SECTION,...]");
        println!("sections: buckets (links per bucket vs offer rate), delay (anonymity vs accept delay), flow (the answer flow), cover (what the agent's cover traffic buys), copies (multi-server links against servers that compare notes), clock (what unanswered offers' looks tell of the initiator's clock), stamps (verified links vs real ones), adversary (the client against adversarial servers, and what deceiving it costs)");
        return Ok(());
    }
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(str::to_owned).collect());
    let wants = |section: &str| only.as_ref().is_none_or(|o| o.iter().any(|s| s == section));
    std::fs::create_dir_all(&out)?;
    let duration = if quick { 3600 } else { 4 * 3600 };
    let base = TimingModel {
        mean_accept_delay: 600.0,
        hold: false,
        mean_delete_delay: None,
    };

    // 1. Links per bucket against the offer rate, for two open windows.
    if wants("buckets") {
        let rates: &[f64] = if quick {
            &[1.0, 6.0]
        } else {
            &[0.5, 1.0, 2.0, 6.0, 20.0]
        };
        let mut rows = Vec::new();
        for &window in &[120u64, 600] {
            for (i, &rate) in rates.iter().enumerate() {
                let m = Model {
                    rate_per_min: rate,
                    window,
                    duration,
                    timing: base,
                    seed: 1000 + i as u64 + window,
                    stamps: false,
                };
                rows.push(measure(&format!("W={}m λ={rate}/min", window / 60), m).await?);
            }
        }
        println!(
            "## Links per bucket (accept delay: exponential, mean 10 min; no hold, no delete)\n"
        );
        println!("| run | offers/min | window | mean k_close | expected E[min(64, 1+Poisson(λW))] | mean k_fetch | degree | effective set 2^H | attacker's top guess right | accepts |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {} | {} min | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.0} % | {} |",
                r.label,
                r.rate,
                r.window / 60,
                r.k_close,
                expected_k_close(r.rate, r.window),
                r.k_fetch,
                r.degree,
                r.effective,
                100.0 * r.top_right,
                r.accepts
            );
        }
        let series: Vec<plot::Series> = [120u64, 600]
            .iter()
            .flat_map(|&w| {
                let pts = |f: &dyn Fn(&Row) -> f64| {
                    rows.iter()
                        .filter(|r| r.window == w)
                        .map(|r| (r.rate, f(r)))
                        .collect::<Vec<_>>()
                };
                [
                    plot::Series::new(format!("k_close, W={} min", w / 60), pts(&|r| r.k_close)),
                    plot::Series::new(format!("k_fetch, W={} min", w / 60), pts(&|r| r.k_fetch)),
                    plot::Series::dashed(
                        format!("expected, W={} min", w / 60),
                        pts(&|r| expected_k_close(r.rate, w)),
                    ),
                ]
            })
            .collect();
        plot::lines(
            &format!("{out}/k_vs_rate.svg"),
            "Real links per bucket vs offer rate",
            "offers per minute",
            "links",
            true,
            &series,
        )?;
    }

    // 2. Degree of anonymity against the accept delay, for the client's choices.
    if wants("delay") {
        let delays: &[f64] = if quick {
            &[120.0, 1200.0]
        } else {
            &[60.0, 300.0, 1200.0, 3600.0]
        };
        let policies = [
            ("hand over at once", false, None),
            ("--hold", true, None),
            ("delete 30 s after accept", false, Some(30.0)),
            ("--hold, delete 30 s after", true, Some(30.0)),
        ];
        let mut table = Vec::new();
        let mut series = Vec::new();
        for (name, hold, del) in policies {
            let mut pts = Vec::new();
            for (i, &delay) in delays.iter().enumerate() {
                let m = Model {
                    rate_per_min: 6.0,
                    window: 600,
                    duration,
                    timing: TimingModel {
                        mean_accept_delay: delay,
                        hold,
                        mean_delete_delay: del,
                    },
                    seed: 2000 + i as u64,
                    stamps: false,
                };
                let r = measure(name, m).await?;
                pts.push((delay / 60.0, r.degree));
                table.push((name, delay, r));
            }
            series.push(plot::Series::new(name.to_string(), pts));
        }
        println!("\n## Degree of anonymity vs accept delay (6 offers/min, window 10 min)\n");
        println!("| policy | mean accept delay | mean k_fetch | degree | effective set 2^H | attacker's top guess right | accepts |");
        println!("|---|---|---|---|---|---|---|");
        for (name, delay, r) in &table {
            println!(
                "| {name} | {:.0} min | {:.1} | {:.2} | {:.1} | {:.0} % | {} |",
                delay / 60.0,
                r.k_fetch,
                r.degree,
                r.effective,
                100.0 * r.top_right,
                r.accepts
            );
        }
        plot::lines(
            &format!("{out}/degree_vs_delay.svg"),
            "Degree of anonymity vs accept delay (6 offers/min, W = 10 min)",
            "mean accept delay, minutes",
            "degree of anonymity",
            true,
            &series,
        )?;
    }

    // 3. The answer flow: answered links next to never-answered ones, per client policy.
    if wants("flow") {
        answer_flow(&out, duration, quick).await?;
    }
    if wants("cover") {
        cover::section(duration, quick).await?;
    }
    if wants("copies") {
        copies::section(if quick { 1800 } else { 3600 })?;
    }
    if wants("clock") {
        clock::section(quick)?;
    }

    // 4. Stamps: what the accepter is shown against what the bucket holds.
    if wants("stamps") {
        stamps(duration).await?;
    }

    // 5. The client against an adversarial server.
    if wants("adversary") {
        adversaries(quick).await?;
    }
    println!("\nplots: {out}/k_vs_rate.svg, {out}/degree_vs_delay.svg, {out}/answer_flow.svg");
    Ok(())
}
