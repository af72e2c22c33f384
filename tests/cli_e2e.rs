//! The command line against a real server process over `--direct`: what a user sees, exit
//! statuses included. (`tests/cli.rs` pins help and usage errors, which need no server.)

mod common;

use common::ServerProcess;
use std::process::{Command, Output, Stdio};

fn rdv(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    common::run_rdv(args, stdin, env)
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

/// A KDF profile that makes offline guessing cheap is named on stderr, whatever its spelling:
/// `test`, and explicit parameters asking less than `moderate`.
#[test]
fn a_weak_kdf_profile_gets_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let addr = server.addr.to_string();
    for (kdf, says) in [
        (
            "test",
            "the 'test' KDF profile makes passphrase guessing cheap",
        ),
        (
            "argon2id:m=64,t=2,p=4",
            "the KDF profile argon2id:m=64,t=2,p=4 asks less work than 'moderate'",
        ),
    ] {
        let out = rdv(
            &["offer", "--direct", &addr, "--payload", "p", "--kdf", kdf],
            None,
            &[],
        );
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{e}");
        assert!(e.contains(says), "{kdf}: {e}");
    }
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

/// A secret on the command line is warned about with `--json` and `-q` too: scripts, which
/// use `--json`, are the likeliest to put one there. Before, the warning was a note, and
/// `--json` and `-q` dropped it.
#[test]
fn a_secret_on_the_command_line_is_warned_about_with_json_and_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let addr = server.addr.to_string();
    let o = offer(&addr, "smp://argv/q", "argv-test-passphrase-k", false);
    let link = field(&o, "link:");
    for quiet in ["--json", "-q"] {
        let out = rdv(&[quiet, "accept", "--direct", &link], None, &[]);
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{e}");
        assert!(
            e.contains("WARNING: a link with its passphrase on the command line"),
            "{quiet}: {e}"
        );
    }
    // From the environment: nothing to warn about.
    let out = rdv(
        &["--json", "accept", "--direct"],
        None,
        &[("RDV_LINK", &link)],
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("command line"));
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
    // One token in 64 starts with `-`: `--token -…` takes it as the token (here a wrong one,
    // so the server has nothing to delete), not as an unknown flag.
    let dashed = format!("-{}", "A".repeat(42));
    let out = rdv(
        &["delete", &link, "--direct", "--token", &dashed],
        None,
        &[],
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("nothing to delete"), "{e}");
}

/// The answer channel on the command line: offer with a state file, accept with an answer,
/// collect (too early before the bucket closes; with --early and --delete-now the state file is
/// removed and the link deleted); the mistakes a user can make get a non-zero exit and say what
/// to do.
#[test]
fn offer_accept_answer_collect_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let addr = server.addr.to_string();
    let state = dir.path().join("pending.answer");
    let state_s = state.to_str().unwrap();

    // Neither --wait nor --state: refused before anything happens.
    let out = rdv(
        &[
            "offer",
            "--direct",
            &addr,
            "--payload",
            "q",
            "--kdf",
            "test",
            "--max-skew",
            "2s",
            "--expect-answer",
        ],
        None,
        &[("RDV_PASSPHRASE", "answer-cli-words-x")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--wait DURATION"));

    let args = [
        "offer",
        "--direct",
        &addr,
        "--payload",
        "smp://a/queue",
        "--kdf",
        "test",
        "--max-skew",
        "2s",
        "--expect-answer",
        "--state",
        state_s,
    ];
    let out = rdv(&args, None, &[("RDV_PASSPHRASE", "answer-cli-words-x")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = field(&out, "link:");
    // The collect it suggests goes the same way as the offer (not through Tor after --direct).
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("rdv collect --direct {addr} --state {state_s}")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the state file is private");
    }
    // The state file is never overwritten.
    let again = rdv(&args, None, &[("RDV_PASSPHRASE", "answer-cli-words-x")]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));

    // Too early to look: the bucket is open (a look now would tie the mailbox to the store).
    let out = rdv(&["collect", "--direct", "--state", state_s], None, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the link's bucket closes at"), "{err}");
    // Looking anyway (--early): nothing to collect yet, a non-zero exit, the state file stays.
    let out = rdv(
        &["collect", "--direct", "--state", state_s, "--early"],
        None,
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no answer yet") && err.contains("warning: --early"),
        "{err}"
    );
    assert!(state.exists());
    // A state file whose times are past the year 9999 (a corrupt one) is refused, naming the
    // file; before, showing its times panicked (exit 101; a helper's review, 2026-12-07).
    let text = std::fs::read_to_string(&state).unwrap();
    let far_times = |line: &str| -> String {
        let mut f: Vec<&str> = line.split(' ').collect();
        if f[0] == "copy" || f[0] == "link-expires" {
            *f.last_mut().unwrap() = "18446744073709551615";
        }
        f.join(" ") + "\n"
    };
    let far = dir.path().join("far.state");
    std::fs::write(&far, text.lines().map(far_times).collect::<String>()).unwrap();
    let out = rdv(
        &["collect", "--direct", "--state", far.to_str().unwrap()],
        None,
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(far.to_str().unwrap()) && err.contains("polls-from"),
        "{err}"
    );

    // Accepting without an answer says that one is asked for.
    let out = rdv(&["accept", &link, "--direct"], None, &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("asks for an answer"));
    // With one (from the environment, out of the process list).
    let out = rdv(
        &["accept", &link, "--direct"],
        None,
        &[("RDV_ANSWER", "smp://b/reply")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "smp://a/queue\n");
    // A second answer is refused.
    let out = rdv(
        &["accept", &link, "--direct", "--answer", "other"],
        None,
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("answered already"));

    let out = rdv(
        &[
            "collect",
            "--direct",
            "--state",
            state_s,
            "--early",
            "--delete-now",
        ],
        None,
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: --delete-now"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "smp://b/reply\n");
    assert!(
        std::fs::read_to_string(&state)
            .unwrap()
            .starts_with("rdv-answer-collected "),
        "the state file's keys are cleared once the answer is in"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("link was deleted"));
    let out = rdv(&["accept", &link, "--direct"], None, &[]);
    assert!(!out.status.success(), "the link is gone");

    // An answer for a link that does not expect one: the payload is shown, the answer not sent.
    let plain = offer(&addr, "smp://plain", "plain-words-correct-x", false);
    let out = rdv(
        &[
            "accept",
            &field(&plain, "link:"),
            "--direct",
            "--answer",
            "x",
        ],
        None,
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not expect an answer"));
    // An answer that is too long is refused before anything is fetched.
    let long = "x".repeat(182);
    let out = rdv(&["accept", &link, "--direct", "--answer", &long], None, &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 181"));
}

/// `rdv offer --expect-answer --wait`: the link is printed at once, the answer when it comes.
#[test]
fn offer_waits_for_the_answer() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    // A short window: the first look waits for the bucket to close.
    let server = ServerProcess::start(dir.path(), &["--open-window", "2s"]);
    let addr = server.addr.to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rdv"))
        .args([
            "offer",
            "--direct",
            &addr,
            "--payload",
            "smp://a",
            "--kdf",
            "test",
            "--max-skew",
            "2s",
            "--max-window",
            "2s",
            "--expect-answer",
            "--wait",
            "60s",
            "--poll-every",
            "1s",
        ])
        .env("RDV_PASSPHRASE", "wait-words-correct-x")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let link = lines
        .next()
        .unwrap()
        .unwrap()
        .strip_prefix("link: ")
        .unwrap()
        .to_string();
    let out = rdv(
        &["accept", &link, "--direct", "--answer", "smp://b\x1b[2J"],
        None,
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success());
    assert!(rest.iter().any(|l| l.starts_with("delete-token: ")));
    // Escaped on its line, whatever it holds.
    assert_eq!(rest.last().unwrap(), "answer: smp://b\\u{1b}[2J");

    // No answer within the wait and no state file: nobody could read a later answer, but the
    // link is not taken down (a delete right after the last look would name the mailbox's link).
    let out = rdv(
        &[
            "offer",
            "--direct",
            &addr,
            "--payload",
            "smp://a",
            "--kdf",
            "test",
            "--max-skew",
            "2s",
            "--max-window",
            "2s",
            "--expect-answer",
            "--wait",
            "2s",
            "--poll-every",
            "1s",
        ],
        None,
        &[("RDV_PASSPHRASE", "wait-words-correct-x")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no answer yet") && err.contains("stays on the server until it expires"),
        "{err}"
    );
    let link = field(&out, "link:");
    let kept = rdv(&["accept", &link, "--direct"], None, &[]);
    assert!(kept.status.success(), "the link stays");
}

/// The main job of the README: `rdv demo` runs a whole rendezvous with an answer.
#[test]
fn the_demo_runs() {
    let out = rdv(&["demo"], None, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("the initiator collects it after") && stdout.contains("s: simplex:"),
        "{stdout}"
    );
    assert!(stdout.contains("a second answer is refused"), "{stdout}");
}

/// A second server on a data directory in use fails at once and says why (it used to start with
/// its writes suspended, as on a full disk).
#[test]
fn a_second_server_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = ServerProcess::start(dir.path(), &[]);
    let out = rdv(
        &[
            "serve",
            "--no-onion",
            "--listen",
            "127.0.0.1:0",
            "--data",
            dir.path().to_str().unwrap(),
        ],
        None,
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
}

/// A server asking for more work than the client pays is refused with the reason, once, and
/// `--quiet` leaves only that error: before, a log line at warning level came first, naming the
/// anti-fingerprinting policy for what was a refused effort.
#[test]
fn an_effort_refused_is_one_error_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let addr = server.addr.to_string();
    let out = rdv(
        &[
            "offer",
            "--direct",
            &addr,
            "--payload",
            "smp://effort",
            "--kdf",
            "test",
            "--max-effort",
            "0",
            "--quiet",
        ],
        None,
        &[("RDV_PASSPHRASE", "effort-refused-words-x")],
    );
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains(" WARN "), "{err}");
    assert!(!err.contains("anti-fingerprinting"), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert!(err.contains("effort"), "{err}");
}

/// `--payload-file -` reads the payload from standard input, as `rdv accept -` reads the link
/// there (before, it looked for a file named `-`), and a trailing newline is not part of it.
#[test]
fn a_payload_file_of_dash_is_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let addr = server.addr.to_string();
    let out = rdv(
        &[
            "offer",
            "--direct",
            &addr,
            "--payload-file",
            "-",
            "--kdf",
            "test",
        ],
        Some("smp://from-stdin\n"),
        &[("RDV_PASSPHRASE", "dash-stdin-words-x")],
    );
    assert!(out.status.success(), "{out:?}");
    let link = field(&out, "link:");
    let accepted = rdv(&["accept", "-", "--direct"], Some(&link), &[]);
    assert!(accepted.status.success(), "{accepted:?}");
    assert_eq!(
        String::from_utf8_lossy(&accepted.stdout),
        "smp://from-stdin\n"
    );
}

/// A listen or metrics address that cannot work stops `rdv serve` before anything starts: no
/// data directory, no "listening on" line (a supervisor that saw it took the server for
/// running), as `--check-config` says of the same settings.
#[test]
fn a_bad_listen_or_metrics_address_stops_serve_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    for (n, bad) in [
        &["--listen", "127.0.0.1:99999"][..],
        &["--listen", "127.0.0.1:0", "--metrics", "0.0.0.0:9464"][..],
    ]
    .into_iter()
    .enumerate()
    {
        let data = dir.path().join(format!("data{n}"));
        let args = [
            &["serve", "--no-onion", "--data", data.to_str().unwrap()][..],
            bad,
        ]
        .concat();
        let out = rdv(&args, None, &[]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad:?}: {stdout}");
        assert!(!stdout.contains("listening on"), "{bad:?}: {stdout}");
        assert!(!data.exists(), "{bad:?}: the data directory was created");
        assert!(
            stderr.contains("127.0.0.1:99999") || stderr.contains("not a loopback address"),
            "{bad:?}: {stderr}"
        );
    }
}

/// What `rdv accept` says of a bucket's verified links: with stamps below the client's minimum
/// effort not even the link's own counts, and the user is told why rather than "0 verified".
/// An initiator stamps at its own floor when the server asks less, so its link counts for an
/// accepter of the same floor; one that lowered its floor stamps at the server's effort.
#[test]
fn accept_says_why_no_stamp_counts_below_the_minimum_effort() {
    let dir = tempfile::tempdir().unwrap();
    for (effort, floor, expect) in [
        ("4", "4", "not even this link's own"),
        ("4", "64", "hides among 1 verified link(s)"),
        ("64", "64", "hides among 1 verified link(s)"),
    ] {
        let data = dir.path().join(format!("{effort}-{floor}"));
        let server = ServerProcess::start(&data, &["--stamp-effort", effort]);
        let addr = server.addr.to_string();
        let args = [
            "offer",
            "--direct",
            &addr,
            "--payload",
            "p",
            "--kdf",
            "test",
            "--min-effort",
            floor,
        ];
        let out = rdv(
            &args,
            None,
            &[("RDV_PASSPHRASE", "correct horse battery staple river")],
        );
        assert!(out.status.success(), "{out:?}");
        let link = field(&out, "link:");
        let out = rdv(&["accept", "--direct", &addr, &link], None, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "effort {effort}: {err}");
    }
}

/// `rdv accept --answer --max-effort N` refuses a server whose answer challenge asks for more
/// (`effort_refused`, nothing sent); before, accept had no such flag and a server asking over
/// 1024 could not be answered at all (a helper's audit of the docs, 2026-12-07).
#[test]
fn accept_takes_max_effort_for_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--stamp-effort", "4"]);
    let addr = server.addr.to_string();
    let state = dir.path().join("st");
    let out = rdv(
        &[
            "offer",
            "--direct",
            &addr,
            "--payload",
            "smp://effort",
            "--kdf",
            "test",
            "--expect-answer",
            "--state",
            state.to_str().unwrap(),
        ],
        None,
        &[("RDV_PASSPHRASE", "max-effort-answer-words")],
    );
    assert!(out.status.success(), "{out:?}");
    let link = field(&out, "link:");
    let refused = rdv(
        &[
            "--json",
            "accept",
            "--direct",
            &link,
            "--answer",
            "smp://back",
            "--max-effort",
            "0",
        ],
        None,
        &[],
    );
    let e: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(e["error"]["code"], "effort_refused", "{e}");
    // Allowed, the same answer goes.
    let answered = rdv(
        &["accept", "--direct", &link, "--answer", "smp://back"],
        None,
        &[],
    );
    assert!(answered.status.success(), "{answered:?}");
}

/// Flags that would be silently ignored are refused: `rdv offer --early` or `--delete-now`
/// without `--wait` (they apply to a wait; before, nothing said they did nothing). A usage
/// error's JSON message names what is missing (before, "the following required arguments were
/// not provided:" and no more). A helper's audit of the docs, 2026-12-07.
#[test]
fn offer_refuses_look_flags_without_a_wait_and_usage_errors_name_the_flag() {
    for flag in ["--early", "--delete-now"] {
        let out = rdv(
            &[
                "--json",
                "offer",
                "--direct",
                "127.0.0.1:9",
                "--payload",
                "x",
                "--expect-answer",
                "--state",
                "/nonexistent/st",
                flag,
            ],
            None,
            &[],
        );
        let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(e["error"]["code"], "invalid_input", "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(flag),
            "{e}"
        );
    }
    let out = rdv(
        &[
            "--json",
            "offer",
            "--direct",
            "127.0.0.1:9",
            "--payload",
            "x",
            "--state",
            "st",
        ],
        None,
        &[],
    );
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["error"]["code"], "usage", "{e}");
    let m = e["error"]["message"].as_str().unwrap();
    assert!(m.contains("--expect-answer"), "{m}");
    assert!(!m.contains('\n'), "{m}");
}
