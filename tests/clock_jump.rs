//! The real `rdv serve` with a wall clock that jumps, through libfaketime (Debian's `faketime`
//! package; `.ci/run` installs it): +1 day and back, then -30 days and back. Clients keep the true
//! time. After each correction the very next offer is accepted, and links stored before the jump
//! stay. Only the wall clock is faked (`FAKETIME_DONT_FAKE_MONOTONIC=1`): elapsed time is real,
//! which is what the server's expiry bound relies on.

mod common;

use common::*;
use rdv::client::OfferError;
use rdv::clock::{Clock, SystemClock};
use rdv::proto::{KdfProfile, Passphrase, PolicyViolation};
use std::path::Path;
use std::sync::Arc;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

fn set_offset(file: &Path, offset: &str) {
    std::fs::write(file, format!("{offset}\n")).unwrap();
}

/// `rdv serve` in `dir/data` with its wall clock offset by what `offset` says (read anew at
/// every reading), elapsed time real.
fn faked_server(dir: &Path, offset: &Path, args: &[&str]) -> ServerProcess {
    ServerProcess::start_with(
        &dir.join("data"),
        args,
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", offset.to_str().unwrap()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
        std::process::Stdio::null(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_clock_jumps_and_is_corrected_hands_out_acceptable_ids_at_once() {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install Debian's faketime package (apt-get install -y faketime)"
    );
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("faketime");
    set_offset(&offset, "+0");
    let server = faked_server(dir.path(), &offset, &["--open-window", "10m"]);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let c = client(server.addr, clock);
    let sa = server_addr(server.addr);
    let mut n = 0;
    let mut offer = |text: &'static str| {
        n += 1;
        let pass = Passphrase::new(format!("faketime-pass-{n}"));
        let (c, sa) = (&c, &sa);
        async move { c.offer(sa, text.as_bytes(), pass, KdfProfile::Test).await }
    };
    let kept = offer("stored before any jump").await.unwrap();

    for (jump, expect_refusal) in [("+1d", "future"), ("-30d", "old")] {
        set_offset(&offset, jump);
        match offer("during the jump").await {
            // Refused at the challenge: nothing was stored.
            Err(OfferError::RefusedChallenge(violation)) => match (&violation, expect_refusal) {
                (PolicyViolation::FromTheFuture { .. }, "future")
                | (PolicyViolation::TooOld { .. }, "old") => {}
                _ => panic!("{jump}: unexpected refusal {violation}"),
            },
            other => panic!("{jump}: expected the client to refuse, got {other:?}"),
        }
        // The command line says which clocks to check (this machine's may be the wrong one).
        let out = run_rdv(
            &[
                "offer",
                "--direct",
                &server.addr.to_string(),
                "--payload",
                "x",
                "--kdf",
                "test",
            ],
            None,
            &[("RDV_PASSPHRASE", "faketime-command-line")],
        );
        assert!(!out.status.success());
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains("is this machine's clock right?"), "{jump}: {e}");
        set_offset(&offset, "+0");
        let after = offer("right after the correction").await;
        assert!(after.is_ok(), "{jump}, corrected: {after:?}");
    }
    let got = c.accept(&kept.link, None).await.unwrap();
    assert_eq!(&got.payload[..], b"stored before any jump");
}

/// A fresh store started with its clock a day ahead (nothing to tell it otherwise) collects
/// buckets of the wrong seconds; once the clock is corrected, new buckets used to start after
/// those, a day in the future, and clients refused them until real time caught up. Now the very
/// next offer is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_corrected_after_garbage_collection_ran_ahead_hands_out_acceptable_ids() {
    assert!(Path::new(LIBFAKETIME).exists(), "{LIBFAKETIME} is missing");
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("faketime");
    set_offset(&offset, "+1d");
    let server = faked_server(
        dir.path(),
        &offset,
        &["--open-window", "2s", "--ttl", "3s", "--gc-interval", "1s"],
    );
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let c = client(server.addr, clock);
    let sa = server_addr(server.addr);
    // Refused by the client (from the future), but the challenge opened a bucket in the wrong
    // second; it expires and is collected on the server's clock.
    let early = c
        .offer(&sa, b"x", Passphrase::new("ahead-pass-1"), KdfProfile::Test)
        .await;
    assert!(
        matches!(
            early,
            Err(OfferError::RefusedChallenge(
                PolicyViolation::FromTheFuture { .. }
            ))
        ),
        "{early:?}"
    );
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    set_offset(&offset, "+0");
    let after = c
        .offer(
            &sa,
            b"right after the correction",
            Passphrase::new("ahead-pass-2"),
            KdfProfile::Test,
        )
        .await;
    assert!(after.is_ok(), "{after:?}");
}

/// An initiator whose clock is off the server's by more than 10 s is told so by `rdv offer`
/// (the moments of its looks and deletes, timed on that clock, show the server the error, and
/// errors of tens of seconds tell initiators apart: docs/ANONYMITY.md, "Clock errors"); within
/// a few seconds it is not. Here the server's clock is set 30 s ahead and then 30 s behind.
#[test]
fn an_offer_from_a_machine_whose_clock_is_off_warns() {
    let dir = tempfile::tempdir().unwrap();
    for (n, (offset, said)) in [
        ("+30", Some("behind the server's")),
        ("-30", Some("ahead of the server's")),
        ("+0", None),
    ]
    .into_iter()
    .enumerate()
    {
        let file = dir.path().join(format!("faketime-{n}"));
        set_offset(&file, offset);
        let server = faked_server(&dir.path().join(n.to_string()), &file, &[]);
        let out = run_rdv(
            &[
                "offer",
                "--direct",
                &server.addr.to_string(),
                "--payload",
                "p",
                "--kdf",
                "test",
            ],
            None,
            &[("RDV_PASSPHRASE", "correct horse battery staple river")],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        match said {
            Some(said) => {
                // 30 s, less what the request's round trip and the rounding to whole seconds
                // can account for (a slow round trip on a loaded machine: a few seconds less),
                // never more.
                let secs: u64 = stderr
                    .split("warning: this machine's clock is ")
                    .nth(1)
                    .and_then(|rest| rest.strip_suffix('\n').unwrap_or(rest).split(" s ").next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("{offset}: no clock warning: {stderr}"));
                assert!((22..=30).contains(&secs), "{offset}: {stderr}");
                assert!(
                    stderr.contains(&format!("{secs} s {said}")),
                    "{offset}: {stderr}"
                );
            }
            None => assert!(!stderr.contains("clock is"), "{offset}: {stderr}"),
        }
    }
}

/// Through an agent too: `rdv offer --agent` prints the same warning (before, only the agent's
/// log had it, which its user may never read), and `--json`'s `stored` event keeps the fields
/// it has without an agent.
#[test]
fn an_offer_through_an_agent_whose_clock_is_off_warns() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("faketime");
    set_offset(&file, "-30");
    let server = faked_server(&dir.path().join("srv"), &file, &[]);
    let socket = dir.path().join("run").join("agent.sock");
    let agent = start_agent(&dir.path().join("state"), &socket, &[]);
    let addr = server.addr.to_string();
    for json in [false, true] {
        let mut args = vec![
            "offer",
            "--agent",
            socket.to_str().unwrap(),
            "--server",
            &addr,
            "--payload",
            "p",
            "--kdf",
            "test",
        ];
        if json {
            args.insert(0, "--json");
        }
        let out = run_rdv(
            &args,
            None,
            &[("RDV_PASSPHRASE", "correct horse battery staple river")],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("warning: this machine's clock is ")
                && stderr.contains(" s ahead of the server's"),
            "json {json}: {stderr}"
        );
        assert!(!stdout.contains("clock_off"), "{stdout}");
    }
    drop(agent);
}
