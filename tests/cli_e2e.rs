//! The command line against a real server process over `--direct`: what a user sees, exit
//! statuses included. (`tests/cli.rs` pins help and usage errors, which need no server.)

mod common;

use common::ServerProcess;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn rdv(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rdv"))
        .args(args)
        .env_remove("RDV_PASSPHRASE")
        .env_remove("RDV_LINK")
        .env_remove("RDV_DELETE_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn field(out: &Output, name: &str) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {}", String::from_utf8_lossy(&out.stderr)))
        .trim()
        .to_string()
}

fn offer(addr: &str, payload: &str, pass: &str, two_channel: bool) -> Output {
    let mut args = vec![
        "offer",
        "--direct",
        addr,
        "--payload",
        payload,
        "--kdf",
        "test",
    ];
    if two_channel {
        args.push("--two-channel");
    }
    let out = rdv(&args, None, &[("RDV_PASSPHRASE", pass)]);
    assert!(
        out.status.success(),
        "offer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_swapped_one_channel_link_fails_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let addr = server.addr.to_string();
    let real = offer(&addr, "smp://real/queue", "real-passphrase-words-x", true);
    let real_pass = field(&real, "passphrase:");
    let evil = offer(&addr, "smp://attacker/queue", "attacker-words-xyz-q", false);
    let evil_link = field(&evil, "link:");
    assert!(evil_link.contains("&p="));
    // The accepter got the attacker's link on the link channel, and types the real passphrase.
    let out = rdv(
        &["accept", &evil_link, "--direct", "--passphrase", &real_pass],
        None,
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "non-zero exit");
    assert!(out.stdout.is_empty(), "no payload on standard output");
    assert!(stderr.contains("refusing to choose"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");
    // The same through RDV_PASSPHRASE.
    let out = rdv(
        &["accept", &evil_link, "--direct"],
        None,
        &[("RDV_PASSPHRASE", &real_pass)],
    );
    assert!(!out.status.success() && out.stdout.is_empty());
    // The genuine two-channel link, given on standard input (it stays out of the process list).
    let real_link = field(&real, "link:");
    let out = rdv(
        &["accept", "--direct", "--passphrase", &real_pass],
        Some(&format!("{real_link}\n")),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "smp://real/queue\n");
    // `rdv accept --direct LINK`: the link is not taken for --direct's address.
    let out = rdv(&["accept", "--direct", &evil_link], None, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "smp://attacker/queue\n"
    );
}

#[test]
fn control_characters_in_a_payload_are_escaped_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let addr = server.addr.to_string();
    let payload = "smp://x/q\u{1b}]0;pwned\u{7}\u{1b}[2J";
    let o = offer(&addr, payload, "escape-test-passphrase-q", false);
    let link = field(&o, "link:");
    // A pipe gets the exact bytes.
    let out = rdv(&["accept", "--direct", &link], None, &[]);
    assert!(out.status.success());
    assert_eq!(out.stdout, format!("{payload}\n").into_bytes());
    // A terminal (a pseudo-terminal from `script`) gets them escaped, and a note says so.
    let cmd = format!(
        "{} accept --direct '{}'",
        env!("CARGO_BIN_EXE_rdv"),
        link.replace('\'', "'\\''")
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs a command on a pseudo-terminal");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\u{7}'),
        "{shown:?}"
    );
    assert!(shown.contains("\\u{1b}]0;pwned\\u{7}"), "{shown:?}");
    assert!(shown.contains("shown escaped"), "{shown:?}");
}

#[test]
fn a_delete_token_from_a_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let addr = server.addr.to_string();
    let o = offer(&addr, "smp://one-time/q", "one-time-passphrase-z", false);
    let link = field(&o, "link:");
    let token = field(&o, "delete-token:");
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let out = rdv(
        &["delete", "--direct", "--token-file", file.to_str().unwrap()],
        Some(&link),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Deleting again: nothing to delete, said so.
    let out = rdv(
        &["delete", &link, "--direct"],
        None,
        &[("RDV_DELETE_TOKEN", &token)],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to delete"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
