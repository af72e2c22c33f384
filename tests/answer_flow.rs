//! The answer flow on the command line, judged by the server's own metrics: the default flow
//! must not tell the server which link was accepted (docs/ANONYMITY.md, "The answer flow").
//!
//! Twelve initiators run `rdv offer --expect-answer --wait 10m --json` into one bucket of a real
//! server (open window 30 s, so that the bucket closes within the test); twelve accepters run
//! `rdv accept LINK --answer …` at random moments over 40 s. Every answer must reach its
//! initiator, and the server's `rdv_delete_after_fetch_seconds` must show no delete within 60 s
//! of a fetch (rdv 0.1 deleted every answered link within 10 s of the accepter's fetch). The same
//! flow with `--delete-now` shows that the metric sees such deletes, and that the user is warned.

mod common;

use common::{free_port, metric, run_rdv, ServerProcess};
use rand::Rng;
use serde_json::Value;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One initiator: the JSON lines it printed, and its standard error.
struct Initiator {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

fn start_initiator(addr: &str, i: usize, extra: &[&str]) -> Initiator {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rdv"))
        .args(["--json", "offer", "--direct", addr, "--kdf", "test"])
        .args(["--payload", &format!("smp://initiator-{i}")])
        .args(["--max-skew", "2s", "--expect-answer", "--wait", "10m"])
        .args(extra)
        .env_remove("RDV_PASSPHRASE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rdv offer");
    let lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    Initiator { child, lines }
}

impl Initiator {
    fn next_event(&mut self) -> Value {
        let line = self.lines.next().expect("another JSON line").expect("read");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }
}

/// Run `n` initiators with `extra` flags and their accepters (at random moments over
/// `spread`); return each initiator's standard error after checking that every answer reached
/// its initiator.
fn rendezvous(addr: SocketAddr, n: usize, extra: &[&str], spread: Duration) -> Vec<String> {
    let addr = addr.to_string();
    let mut initiators: Vec<Initiator> = (0..n).map(|i| start_initiator(&addr, i, extra)).collect();
    // The link goes out as soon as it is stored, so that a program can hand it over.
    let stored: Vec<Value> = initiators.iter_mut().map(|i| i.next_event()).collect();
    for s in &stored {
        assert_eq!(s["event"], "stored", "{s}");
        assert_eq!(s["ok"], true);
    }
    let closes = stored[0]["bucket_closes_at"]
        .as_u64()
        .expect("bucket_closes_at");
    if stored.iter().any(|s| s["bucket_closes_at"] != closes) {
        eprintln!("note: the offers landed in more than one bucket");
    }
    let mut rng = rand::thread_rng();
    let accepters: Vec<_> = stored
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let link = s["link"].as_str().expect("link").to_string();
            let delay = spread.mul_f64(rng.gen());
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let answer = format!("smp://accepter-{i}");
                let out = run_rdv(
                    &["--json", "accept", &link, "--direct", "--answer", &answer],
                    None,
                    &[],
                );
                assert!(
                    out.status.success(),
                    "accept {i}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            })
        })
        .collect();
    for a in accepters {
        a.join().expect("accepter");
    }
    let mut errs = Vec::new();
    for (i, mut init) in initiators.into_iter().enumerate() {
        let waiting = init.next_event();
        assert_eq!(waiting["event"], "waiting", "{waiting}");
        // No look before the bucket closes.
        assert!(
            waiting["looks_from"].as_u64().expect("looks_from") >= closes
                || stored[i]["bucket_closes_at"] != closes
        );
        let answer = init.next_event();
        assert_eq!(answer["event"], "answer", "{answer}");
        assert_eq!(answer["answer"], format!("smp://accepter-{i}"), "{answer}");
        let status = init.child.wait().expect("wait");
        let mut err = String::new();
        std::io::Read::read_to_string(init.child.stderr.as_mut().expect("stderr"), &mut err)
            .expect("stderr");
        assert!(status.success(), "initiator {i}: {err}");
        errs.push(err);
    }
    errs
}

#[test]
fn the_default_answer_flow_leaves_no_delete_near_a_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let m: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server = ServerProcess::start(
        dir.path(),
        &[
            "--open-window",
            "30s",
            "--metrics",
            &m.to_string(),
            "--metrics-batch",
            "1",
        ],
    );
    // The close counts from the longest window the client accepts: the server's here.
    let errs = rendezvous(
        server.addr,
        12,
        &["--max-window", "30s"],
        Duration::from_secs(40),
    );
    for e in &errs {
        assert!(
            !e.contains("warning"),
            "the default flow warns about nothing: {e}"
        );
    }
    assert_eq!(metric(m, "rdv_stores_total{outcome=\"stored\"}"), 12.0);
    assert_eq!(metric(m, "rdv_answers_total{outcome=\"put_stored\"}"), 12.0);
    assert_eq!(metric(m, "rdv_fetches_total{outcome=\"found\"}"), 12.0);
    assert_eq!(
        metric(m, "rdv_delete_after_fetch_seconds_bucket{le=\"60.0\"}"),
        0.0,
        "a delete within 60 s of a fetch ties the link to that fetch"
    );
    assert_eq!(metric(m, "rdv_delete_after_fetch_seconds_count"), 0.0);
}

#[test]
fn delete_now_is_seen_by_the_metric_and_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let m: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server = ServerProcess::start(
        dir.path(),
        &[
            "--open-window",
            "5s",
            "--metrics",
            &m.to_string(),
            "--metrics-batch",
            "1",
        ],
    );
    let errs = rendezvous(
        server.addr,
        3,
        &["--delete-now", "--poll-every", "1s", "--max-window", "5s"],
        Duration::from_secs(3),
    );
    for e in &errs {
        assert!(e.contains("warning: --delete-now"), "{e}");
        assert!(e.contains("warning: --poll-every 1s"), "{e}");
    }
    // Each delete followed its accepter's fetch within the look pauses: all of them inside 60 s.
    assert_eq!(
        metric(m, "rdv_delete_after_fetch_seconds_bucket{le=\"60.0\"}"),
        3.0
    );
}
