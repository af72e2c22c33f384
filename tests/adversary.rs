//! `rdv serve --adversary MODE`: refused without `--testing-only`, loud when it runs, and the
//! real client notices the modes its policy can see (the lab, `cargo run --example lab`, measures
//! every mode at two traffic levels).

mod common;

use common::ServerProcess;
use std::process::{Command, Stdio};

/// Run rdv; an offer gets its passphrase from the environment (a one-channel link carries its
/// own, so nothing else does).
fn rdv(args: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rdv"));
    c.args(args).env_remove("RDV_PASSPHRASE");
    if args.contains(&"offer") {
        c.env("RDV_PASSPHRASE", "correct horse battery staple river");
    }
    c.stdin(Stdio::null()).output().unwrap()
}

fn code(out: &std::process::Output) -> String {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v["error"]["code"].as_str().unwrap_or("").to_string()
}

#[test]
fn an_adversarial_server_needs_testing_only_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let out = rdv(&[
        "serve",
        "--data",
        d.to_str().unwrap(),
        "--no-onion",
        "--listen",
        "127.0.0.1:0",
        "--adversary",
        "future-ids",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--testing-only"));
    assert!(!d.exists(), "nothing was created");
    let out = rdv(&[
        "serve",
        "--data",
        "x",
        "--adversary",
        "nonsense",
        "--testing-only",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("isolate, future-ids"));
}

#[test]
fn the_client_catches_what_its_policy_can_see() {
    let dir = tempfile::tempdir().unwrap();
    for (mode, offer_code, accept_code) in [
        ("future-ids", Some("bucket_refused"), None),
        ("stale-ids", Some("bucket_refused"), None),
        ("seq-inflation", Some("bucket_refused"), None),
        ("truncate", None, Some("protocol_violation")),
        // Invisible to the client: the link opens, alone among dummies or in a bucket of its
        // own (docs/ANONYMITY.md: what the policy cannot detect).
        ("dummies", None, None),
        ("isolate", None, None),
    ] {
        let log = dir.path().join(format!("{mode}.log"));
        let server = ServerProcess::start_with(
            &dir.path().join(mode),
            &["--adversary", mode, "--testing-only"],
            &[],
            std::fs::File::create(&log).unwrap().into(),
        );
        let addr = server.addr.to_string();
        let offer = rdv(&[
            "--json",
            "offer",
            "--direct",
            &addr,
            "--payload",
            "smp://x",
            "--kdf",
            "test",
        ]);
        match offer_code {
            Some(c) => {
                assert!(!offer.status.success(), "{mode}: the offer went through");
                assert_eq!(code(&offer), c, "{mode}");
            }
            None => {
                assert!(
                    offer.status.success(),
                    "{mode}: {}",
                    String::from_utf8_lossy(&offer.stderr)
                );
                let v: serde_json::Value = serde_json::from_slice(&offer.stdout).unwrap();
                let link = v["link"].as_str().unwrap();
                let acc = rdv(&["--json", "accept", "--direct", link]);
                match accept_code {
                    Some(c) => {
                        assert!(!acc.status.success(), "{mode}: the accept went through");
                        assert_eq!(code(&acc), c, "{mode}");
                    }
                    None => assert!(acc.status.success(), "{mode}"),
                }
            }
        }
        drop(server);
        let log = std::fs::read_to_string(&log).unwrap();
        assert!(
            log.contains("ADVERSARIAL SERVER"),
            "{mode}: no warning in\n{log}"
        );
    }
}
