//! Percentiles, units and markdown tables.

use crate::runner::Sample;
use crate::OpKind;
use std::collections::BTreeMap;
use std::time::Duration;

/// Latency percentiles of the successful samples of one kind.
pub(crate) struct Summary {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
}

pub(crate) fn summarize<'a>(
    samples: impl IntoIterator<Item = &'a Sample>,
    kind: OpKind,
) -> Summary {
    let mut lat = Vec::new();
    let mut failed = 0;
    for s in samples.into_iter().filter(|s| s.kind == kind) {
        if s.ok {
            lat.push(s.latency);
        } else {
            failed += 1;
        }
    }
    lat.sort_unstable();
    // Nearest rank.
    let pct = |p: f64| -> Duration {
        if lat.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len());
        lat[rank - 1]
    };
    Summary {
        ok: lat.len() as u64,
        failed,
        p50: pct(0.50),
        p99: pct(0.99),
        max: lat.last().copied().unwrap_or_default(),
    }
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub(crate) fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

pub(crate) fn print_errors(errors: &BTreeMap<String, u64>) {
    for (e, n) in errors {
        println!("  errors: {n} × {e}");
    }
}

/// Print a markdown table.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let cells: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:>width$}", width = w[i]))
            .collect();
        println!("| {} |", cells.join(" | "));
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    println!(
        "|{}|",
        w.iter()
            .map(|n| format!("{}:", "-".repeat(n + 1)))
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in rows {
        line(r.clone());
    }
}
