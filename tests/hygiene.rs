//! Secret hygiene: a full offer / accept / delete with RUST_LOG=trace on server and clients, and
//! no passphrase, salt, key, locator, token or payload in any log line.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::ServerProcess;
use rdv::proto::{kdf, KdfLimits, KdfProfile, Passphrase, RdvLink};
use std::process::{Command, Output, Stdio};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn rdv(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_rdv"))
        .args(args)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rdv {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn no_secret_reaches_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let server = ServerProcess::start_with(
        &dir.path().join("data"),
        &[],
        &[("RUST_LOG", "trace")],
        std::fs::File::create(&log_path).unwrap().into(),
    );
    let addr = server.addr.to_string();

    let payload = "smp://very-secret-server.example/queue-4711";
    let pass = "tarot-lantern-gravel-mosaic";
    let offer = rdv(&[
        "offer",
        "--direct",
        &addr,
        "--payload",
        payload,
        "--passphrase",
        pass,
        "--kdf",
        "test",
        "--two-channel",
    ]);
    let stdout = String::from_utf8_lossy(&offer.stdout).to_string();
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_string()
    };
    let (link_text, token) = (field("link:"), field("delete-token:"));
    let accept = rdv(&[
        "accept",
        &link_text,
        "--passphrase",
        pass,
        "--direct",
        &addr,
    ]);
    assert_eq!(String::from_utf8_lossy(&accept.stdout).trim(), payload);
    let delete = rdv(&["delete", &link_text, "--token", &token, "--direct"]);
    server.kill();

    let link = RdvLink::parse(&link_text).unwrap();
    let raw = raw_key(pass, link.salt.expose());
    // The independently derived key is the one that opens the link.
    let key = kdf::derive_key(
        &Passphrase::new(pass),
        &link.salt,
        KdfProfile::Test,
        &KdfLimits::default(),
    )
    .unwrap();
    let probe = rdv::proto::seal::seal(
        &rdv::proto::LinkKey::from_bytes(raw.clone().try_into().unwrap()),
        b"probe",
        [9; 24],
    )
    .unwrap();
    assert!(
        rdv::proto::seal::open(&key, &probe).is_ok(),
        "independent Argon2id gives the same key"
    );
    // The bucket ID hashes to the locator, so it is as secret: find it by search.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let id = (now - 600..now + 60)
        .flat_map(|created| (0..4).map(move |seq| rdv::proto::BucketId { created, seq }))
        .find(|id| id.locator() == link.locator)
        .expect("the bucket ID behind the locator");
    let secrets = [
        ("payload", payload.to_string()),
        ("passphrase", pass.to_string()),
        ("locator (base64)", URL_SAFE_NO_PAD.encode(link.locator.0)),
        ("locator (hex)", hex(&link.locator.0)),
        ("salt (base64)", URL_SAFE_NO_PAD.encode(link.salt.expose())),
        ("salt (hex)", hex(link.salt.expose())),
        ("delete token", token.clone()),
        ("link", link_text.clone()),
        ("bucket ID", id.to_string()),
        ("bucket creation time", id.created.to_string()),
    ];
    let server_log = std::fs::read_to_string(&log_path).unwrap();
    let logs = [
        ("server", server_log),
        ("offer", String::from_utf8_lossy(&offer.stderr).to_string()),
        (
            "accept",
            String::from_utf8_lossy(&accept.stderr).to_string(),
        ),
        (
            "delete",
            String::from_utf8_lossy(&delete.stderr).to_string(),
        ),
    ];
    let total: usize = logs.iter().map(|(_, l)| l.lines().count()).sum();
    assert!(
        logs[0].1.contains("request answered"),
        "the server logged its requests:\n{}",
        logs[0].1
    );
    assert!(
        logs[2].1.contains("trial decryption"),
        "the accepter logged its work:\n{}",
        logs[2].1
    );
    assert!(total > 5, "trace logging produced output ({total} lines)");
    for (who, log) in &logs {
        for (what, secret) in &secrets {
            assert!(
                !log.contains(secret.as_str()),
                "the {what} appears in the {who} log:\n{log}"
            );
        }
        // The key never leaves the process.
        assert!(
            !log.contains(&hex(&raw)) && !log.contains(&URL_SAFE_NO_PAD.encode(&raw)),
            "the key appears in the {who} log"
        );
    }
}

/// The key the accepter derives, computed independently with Argon2id (profile `test`).
fn raw_key(pass: &str, salt: &[u8]) -> Vec<u8> {
    use argon2::{Algorithm, Argon2, Params, Version};
    let params = Params::new(64, 1, 1, Some(32)).unwrap();
    let mut out = vec![0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(pass.as_bytes(), salt, &mut out)
        .unwrap();
    out
}

/// The answer channel with RUST_LOG=trace everywhere: the answer, the initiator's answer secret,
/// the link key kept in the state file and the mailbox address never reach a log line.
#[test]
fn no_answer_secret_reaches_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let server = ServerProcess::start_with(
        &dir.path().join("data"),
        &["--open-window", "2s"],
        &[("RUST_LOG", "trace")],
        std::fs::File::create(&log_path).unwrap().into(),
    );
    let addr = server.addr.to_string();
    let state = dir.path().join("pending");
    let payload = "smp://initiator-secret.example/q-1";
    let answer = "smp://accepter-secret.example/r-2";
    let offer = rdv(&[
        "offer",
        "--direct",
        &addr,
        "--payload",
        payload,
        "--passphrase",
        "orbit-velvet-copper-lagoon",
        "--kdf",
        "test",
        "--max-skew",
        "2s",
        "--max-window",
        "2s",
        "--expect-answer",
        "--state",
        state.to_str().unwrap(),
    ]);
    let link = String::from_utf8_lossy(&offer.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("link: ").map(str::to_string))
        .unwrap();
    let state_text = std::fs::read_to_string(&state).unwrap();
    let value = |name: &str| -> String {
        state_text
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|l| l.strip_prefix(' ')))
            .unwrap()
            .to_string()
    };
    let raw = |name: &str| -> [u8; 32] {
        URL_SAFE_NO_PAD
            .decode(value(name))
            .unwrap()
            .try_into()
            .unwrap()
    };
    let (key, secret) = (raw("key"), raw("secret"));
    let mailbox = rdv::proto::answer::mailbox(
        &rdv::proto::LinkKey::from_bytes(key),
        &rdv::proto::AnswerSecret::from_bytes(secret).public(),
    );
    let accept = rdv(&["accept", &link, "--direct", "--answer", answer]);
    let collect = rdv(&[
        "collect",
        "--direct",
        "--state",
        state.to_str().unwrap(),
        "--wait",
        "1m",
        "--poll-every",
        "1s",
    ]);
    assert_eq!(String::from_utf8_lossy(&collect.stdout).trim(), answer);
    server.kill();
    let secrets = [
        ("answer", answer.to_string()),
        ("payload", payload.to_string()),
        ("link key (base64)", value("key")),
        ("link key (hex)", hex(&key)),
        ("answer secret (base64)", value("secret")),
        ("answer secret (hex)", hex(&secret)),
        ("mailbox (hex)", hex(&mailbox.0)),
        ("mailbox (base64)", URL_SAFE_NO_PAD.encode(mailbox.0)),
        ("delete token", value("token")),
        ("link", link.clone()),
    ];
    let logs = [
        ("server", std::fs::read_to_string(&log_path).unwrap()),
        ("offer", String::from_utf8_lossy(&offer.stderr).to_string()),
        (
            "accept",
            String::from_utf8_lossy(&accept.stderr).to_string(),
        ),
        (
            "collect",
            String::from_utf8_lossy(&collect.stderr).to_string(),
        ),
    ];
    assert!(
        logs[0].1.contains("PutAnswer") && logs[0].1.contains("FetchAnswer"),
        "the server logged the answer requests:\n{}",
        logs[0].1
    );
    for (who, log) in &logs {
        for (what, secret) in &secrets {
            assert!(
                !log.contains(secret.as_str()),
                "the {what} appears in the {who} log:\n{log}"
            );
        }
    }
}
