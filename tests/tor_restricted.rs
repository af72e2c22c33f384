//! Restricted discovery over a real private Tor network on loopback (scripts/tornet.sh):
//! (a) a server started with an empty `--authorized-clients` directory is reachable by its own
//!     health probe only (which has a key of its own);
//! (b) the operator's workflow: a client runs `rdv keygen --server ONION`, the operator saves the
//!     printed line as `alice.auth` and restarts; then alice offers and accepts with
//!     `--client-key`, while a client without a key and one with a key the server does not know
//!     both fail, with the `client_auth` code, without waiting out the connect budget.
//!
//! Needs `tor` and `tor-gencert` on PATH; without them this test FAILS (it never skips).

mod common;

use common::tornet::{require_tor, Serve, Tornet};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BASE_PORT: u16 = 16500;

fn rdv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rdv"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rdv")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn field(out: &Output, name: &str) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name:?} in output; stderr:\n{}", stderr(out)))
        .trim()
        .to_string()
}

/// Transport arguments for a client of its own.
fn transport<'a>(arti: &'a str, tor_dir: &'a str, key: Option<&'a str>) -> Vec<&'a str> {
    let mut v = vec!["--tor-config", arti, "--tor-dir", tor_dir];
    if let Some(k) = key {
        v.extend(["--client-key", k]);
    }
    v
}

#[test]
fn only_authorized_clients_reach_a_restricted_server() {
    require_tor();
    let tmp = tempfile::tempdir().unwrap();
    let t = |p: &str| tmp.path().join(p);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let net = Tornet::start(&t("tornet"), BASE_PORT);
    let arti = s(&net.arti_toml());
    use std::os::unix::fs::PermissionsExt;
    // The operator's directory, private as arti requires.
    let clients = t("authorized");
    std::fs::create_dir(&clients).unwrap();
    std::fs::set_permissions(&clients, std::fs::Permissions::from_mode(0o700)).unwrap();
    let serve_args = ["--tor-config", &arti, "--authorized-clients", &s(&clients)];

    // (a) No client yet: the server still starts, warns, and its own probe gets through.
    let started = Instant::now();
    let serve = Serve::start(&serve_args, &t("srv"), &t("srv.log"));
    let onion = serve.wait_line("onion address:", Duration::from_secs(120), &t("srv.log"));
    serve.wait_line(
        "onion service reachable:",
        Duration::from_secs(240),
        &t("srv.log"),
    );
    eprintln!(
        "restricted service reachable by its probe after {:?}",
        started.elapsed()
    );
    let log = std::fs::read_to_string(t("srv.log")).unwrap();
    assert!(log.contains("holds no client key yet"), "{log}");

    // (b) alice makes a key for this server; the operator authorizes it and restarts.
    let alice = t("alice.key");
    let out = rdv(&["keygen", "--server", &onion, "--out", &s(&alice)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let public = String::from_utf8(out.stdout).unwrap();
    let auth = clients.join("alice.auth");
    std::fs::write(&auth, &public).unwrap();
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o600)).unwrap();
    // mallory has a well-formed key for this server that the operator never saw.
    let mallory = t("mallory.key");
    assert!(rdv(&["keygen", "--server", &onion, "--out", &s(&mallory)])
        .status
        .success());
    serve.stop();
    let serve = Serve::start(&serve_args, &t("srv"), &t("srv2.log"));
    let onion2 = serve.wait_line("onion address:", Duration::from_secs(120), &t("srv2.log"));
    assert_eq!(onion2, onion);
    serve.wait_line(
        "onion service reachable:",
        Duration::from_secs(240),
        &t("srv2.log"),
    );
    let log = std::fs::read_to_string(t("srv2.log")).unwrap();
    assert!(!log.contains("holds no client key yet"), "{log}");

    // alice offers (retrying while the new descriptor propagates) and accepts.
    let (alice_dir, alice_dir2) = (s(&t("alice-tor")), s(&t("alice-tor2")));
    let alice_key = s(&alice);
    let payload = "simplex:/contact#/?smp=smp%3A%2F%2Fprivate.example";
    let deadline = Instant::now() + Duration::from_secs(180);
    let offered = loop {
        let mut args = vec![
            "offer",
            "--server",
            &onion,
            "--payload",
            payload,
            "--kdf",
            "moderate",
            "--two-channel",
            "--connect-timeout",
            "60s",
        ];
        args.extend(transport(&arti, &alice_dir, Some(alice_key.as_str())));
        let out = rdv(&args);
        if out.status.success() {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "alice's offer kept failing:\n{}",
            stderr(&out)
        );
        eprintln!(
            "offer not through yet: {}",
            stderr(&out).lines().last().unwrap_or("")
        );
        std::thread::sleep(Duration::from_secs(3));
    };
    let link = field(&offered, "link:");
    let pass = field(&offered, "passphrase:");
    let mut args = vec![
        "accept",
        &link,
        "--passphrase",
        &pass,
        "--connect-timeout",
        "150s",
    ];
    args.extend(transport(&arti, &alice_dir2, Some(alice_key.as_str())));
    let out = rdv(&args);
    assert!(
        out.status.success(),
        "alice's accept failed:\n{}",
        stderr(&out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), payload);
    // The private copy of the key was removed with the client.
    let leftovers: Vec<_> = std::fs::read_dir(&alice_dir2)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("client-auth-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Without a key, and with mallory's: no connection, the client_auth code, and no retries
    // up to the whole budget (the budget is 10 minutes: failing well before it shows that the
    // error was not retried).
    for (who, key) in [("nobody", None), ("mallory", Some(s(&mallory)))] {
        let dir = s(&t(&format!("{who}-tor")));
        let began = Instant::now();
        let mut args = vec![
            "--json",
            "accept",
            &link,
            "--passphrase",
            &pass,
            "--connect-timeout",
            "10m",
        ];
        args.extend(transport(&arti, &dir, key.as_deref()));
        let out = rdv(&args);
        let took = began.elapsed();
        assert!(
            !out.status.success(),
            "{who} got through:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{who}: no JSON: {}", stderr(&out)));
        assert_eq!(v["error"]["code"], "client_auth", "{who}: {v}");
        assert!(
            stderr(&out).contains("--client-key"),
            "{who}: no hint: {}",
            stderr(&out)
        );
        assert!(took < Duration::from_secs(300), "{who}: took {took:?}");
        eprintln!("{who}: refused after {took:?}");
    }
    serve.stop();
    drop(net);
}
