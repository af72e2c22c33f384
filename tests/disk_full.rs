//! A full disk: the server runs on a small tmpfs. Stores fail with the documented error, nothing
//! already stored is damaged, fetches keep answering (also after a restart on the full disk), and
//! once space returns the server reopens its database by itself and stores again, without a
//! restart and without needing a client's store to notice.
//!
//! Mounting a tmpfs needs root (as in CI); without it this test fails with a message saying so.

mod common;

use common::*;
use rdv::client::{ConnectionError, OfferError};
use rdv::clock::{Clock, SystemClock};
use rdv::proto::{ErrorCode, KdfProfile, Passphrase, RdvLink, ServerAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (this test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A directory made read-only in place (a read-only bind mount over it), as on a file system
/// that went read-only after errors; writable again when dropped.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn over(dir: &Path) -> Self {
        for args in [&["--bind"][..], &["-o", "remount,bind,ro"]] {
            let out = Command::new("mount")
                .args(args)
                .arg(dir)
                .arg(dir)
                .output()
                .expect("run mount");
            assert!(
                out.status.success(),
                "cannot make {} read-only (this test needs root): {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ReadOnly(dir.to_path_buf())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Every answer to a store on a full disk is either success or the documented storage failure.
fn storage_failure(e: &OfferError) -> bool {
    matches!(
        e,
        OfferError::Connection(ConnectionError::Server {
            code: ErrorCode::StorageFailure,
            ..
        })
    )
}

async fn offer(
    c: &rdv::client::Client,
    sa: &ServerAddr,
    text: &str,
) -> Result<RdvLink, OfferError> {
    c.offer(
        sa,
        text.as_bytes(),
        Passphrase::new(format!("pw-{text}")),
        KdfProfile::Test,
    )
    .await
    .map(|o| o.link)
}

/// Store until the disk is full: the first failure must be a storage failure.
async fn fill(
    c: &rdv::client::Client,
    sa: &ServerAddr,
    tag: &str,
    stored: &mut Vec<(RdvLink, String)>,
) {
    for i in 0..20_000 {
        let text = format!("{tag} {i}");
        match offer(c, sa, &text).await {
            Ok(link) => stored.push((link, text)),
            Err(e) => {
                assert!(storage_failure(&e), "expected a storage failure, got {e:?}");
                assert!(e.to_string().contains("the request was not done"), "{e}");
                return;
            }
        }
    }
    panic!("a 2 MiB disk must fill up");
}

async fn all_open(c: &rdv::client::Client, stored: &[(RdvLink, String)], when: &str) {
    for (link, text) in stored {
        let got = c
            .accept(link, None)
            .await
            .unwrap_or_else(|e| panic!("{when}: a stored link does not open: {e}"));
        assert_eq!(&got.payload[..], text.as_bytes(), "{when}");
    }
}

/// Wait (bounded) until the server's log says its writer is up: its newest line about the
/// writer is "writes resume", not a failed commit. The server logs both; nothing is timed.
fn wait_for_writer(log: &Path) {
    for _ in 0..300 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let last = |needle: &str| lines.iter().rposition(|l| l.contains(needle));
        match (last("writes resume"), last("store commit failed")) {
            (Some(up), Some(down)) if up > down => return,
            (Some(_), None) => return,
            _ => {}
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    panic!(
        "the server's writer never came back up; its last lines:\n{}",
        tail.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_keeps_reads_fails_writes_cleanly_and_recovers_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&tmp.path().join("mnt"), "2m");
    let data = fs.0.join("data");
    let log = tmp.path().join("server.log");
    let start = |data: &Path| {
        ServerProcess::start_with(
            data,
            // The default quota would stop stores before the disk fills: lift it. Stamps at the
            // least effort: filling the disk takes thousands of stores.
            &[
                "--rate",
                "100000",
                "--max-links",
                "100000000",
                "--stamp-effort",
                "1",
            ],
            &[("RUST_LOG", "info")],
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap()
                .into(),
        )
    };
    let server = start(&data);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let c = cheap_client(server.addr, clock.clone());
    let sa = server_addr(server.addr);

    let mut stored = Vec::new();
    fill(&c, &sa, "payload", &mut stored).await;
    assert!(
        stored.len() > 10,
        "some stores fit before the disk filled: {}",
        stored.len()
    );
    // The writer is down now; every fetch still answers from the last committed state.
    all_open(&c, &stored, "right after the failure").await;
    // While the disk stays full, every store either fits or fails with the same clear error.
    for i in 0..50 {
        match offer(&c, &sa, &format!("more {i}")).await {
            Ok(link) => stored.push((link, format!("more {i}"))),
            Err(e) => assert!(
                storage_failure(&e),
                "unexpected error on a full disk: {e:?}"
            ),
        }
    }
    all_open(&c, &stored, "on the full disk").await;

    // A SIGTERM restart on the full disk: the server comes back and serves every link.
    assert!(server.terminate().success());
    let server = start(&data);
    let c = cheap_client(server.addr, clock);
    let sa = server_addr(server.addr);
    all_open(&c, &stored, "after a restart on the full disk").await;
    fill(&c, &sa, "after restart", &mut stored).await;
    all_open(&c, &stored, "full again after the restart").await;

    // Space returns. Nobody stores anything: the writer reopens its database by itself (it retries
    // every second), and the first store after that succeeds.
    fs.resize("64m");
    wait_for_writer(&log);
    let link = offer(&c, &sa, "after the disk grew")
        .await
        .expect("the first store after the recovery succeeds");
    stored.push((link, "after the disk grew".into()));
    all_open(&c, &stored, "after the recovery").await;
}

/// With the default quota (half of the space the store can use), a restart while another
/// program has filled the disk: the quota is not derived as "almost nothing" and frozen, and
/// once the space returns stores go in again without a restart. (The quota used to become 1
/// link at such a start, and every store `QuotaExceeded` until the next restart.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_a_disk_someone_else_filled_keeps_a_usable_quota() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&tmp.path().join("mnt"), "8m");
    let data = fs.0.join("data");
    // The quota is derived again every garbage-collection interval.
    let start = |data: &Path| {
        ServerProcess::start(
            data,
            &[
                "--rate",
                "100000",
                "--stamp-effort",
                "1",
                "--gc-interval",
                "1s",
            ],
        )
    };
    let server = start(&data);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut stored = Vec::new();
    {
        let c = cheap_client(server.addr, clock.clone());
        let sa = server_addr(server.addr);
        for i in 0..20 {
            let text = format!("before {i}");
            stored.push((offer(&c, &sa, &text).await.expect("a store"), text));
        }
    }
    // Another program fills the disk.
    let hog = fs.0.join("hog");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&hog).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    assert!(server.terminate().success());
    let server = start(&data);
    let c = cheap_client(server.addr, clock.clone());
    let sa = server_addr(server.addr);
    all_open(&c, &stored, "after a restart on the full disk").await;
    // Space returns: stores go in again (the writer reopens, the quota follows the disk).
    std::fs::remove_file(&hog).unwrap();
    let mut last = None;
    for _ in 0..60 {
        match offer(&c, &sa, "after the space returned").await {
            Ok(link) => {
                stored.push((link, "after the space returned".into()));
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(last.is_none(), "no store went in within 30 s: {last:?}");
    all_open(&c, &stored, "after the recovery").await;
}

/// The agent's flags here: the servers' short windows, and looks every second.
const AGENT_FLAGS: [&str; 6] = [
    "--max-skew",
    "2s",
    "--max-window",
    "3s",
    "--poll-every",
    "1s",
];

/// Fill the file system at `dir` up (a file `filler` there).
fn fill_up(dir: &Path) {
    use std::io::Write;
    let mut filler = std::fs::File::create(dir.join("filler")).unwrap();
    while filler.write_all(&[7u8; 4096]).is_ok() {}
}

/// `rdv offer --agent SOCKET --expect-answer` to the server at `addr`: the link and the
/// agent's ID of the offer.
fn offer_expecting_answer(socket: &str, addr: &str) -> (String, String) {
    let offered = run_rdv(
        &[
            "offer",
            "--agent",
            socket,
            "--server",
            addr,
            "--payload",
            "p",
            "--kdf",
            "test",
            "--expect-answer",
        ],
        None,
        &[],
    );
    let text = String::from_utf8_lossy(&offered.stdout).into_owned();
    assert!(offered.status.success(), "{text}");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_owned()
    };
    (field("link"), field("offer"))
}

/// The agent's state directory on a full disk: an answer that comes meanwhile cannot be written
/// there, but it is not lost: `collect` gets it from the agent's memory. Before, the agent said
/// the answer was lost, stopped looking, and `collect` answered "no answer yet" until a restart.
#[test]
fn an_answer_that_cannot_be_saved_is_still_collected() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        &tmp.path().join("data"),
        &["--open-window", "3s", "--stamp-effort", "4"],
    );
    let addr = server.addr.to_string();
    let fs = Tmpfs::mount(&tmp.path().join("fs"), "1m");
    let socket = tmp.path().join("run").join("agent.sock");
    let socket_s = socket.to_str().unwrap();
    let agent = start_agent(&fs.0.join("state"), &socket, &AGENT_FLAGS);
    let (link, offer) = offer_expecting_answer(socket_s, &addr);
    // The disk fills up.
    fill_up(&fs.0);
    let accepted = run_rdv(
        &["accept", "--direct", &link, "--answer", "the answer"],
        None,
        &[],
    );
    assert!(accepted.status.success());
    let collected = run_rdv(
        &[
            "collect", "--agent", socket_s, "--offer", &offer, "--wait", "60s",
        ],
        None,
        &[],
    );
    assert!(
        collected.status.success(),
        "{}",
        String::from_utf8_lossy(&collected.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&collected.stdout).trim(),
        "the answer"
    );
    drop(agent);
}

/// Poll the agent's `status` (a fresh connection each time, for at most a minute) until
/// `ready` holds for it.
fn status_until(socket: &Path, ready: impl Fn(&serde_json::Value) -> bool, why: &str) {
    use std::io::{BufRead, BufReader, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
        s.write_all(b"{\"id\": 1, \"op\": \"status\"}\n").unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if ready(&v["result"]) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{why}: {v}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// An answer held in memory (the disk was full) is written once space returns, even after a
/// `collect` whose reply reached nobody (before, that collect ended the saving and the answer
/// lived in memory only); and an agent killed with a link it never handed over starts again
/// on a full disk and takes that link back (before, the start wrote a file first and failed).
#[test]
fn a_full_disk_loses_no_answer_and_stops_no_start() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let m = format!("127.0.0.1:{}", free_port());
    let server = ServerProcess::start(
        &tmp.path().join("data"),
        &[
            "--open-window",
            "3s",
            "--stamp-effort",
            "4",
            "--metrics",
            &m,
        ],
    );
    let m: std::net::SocketAddr = m.parse().unwrap();
    let addr = server.addr.to_string();
    let fs = Tmpfs::mount(&tmp.path().join("fs"), "1m");
    let state = fs.0.join("state");
    let socket = tmp.path().join("run").join("agent.sock");
    let socket_s = socket.to_str().unwrap();
    let agent = start_agent(&state, &socket, &AGENT_FLAGS);
    let offered = run_rdv(
        &[
            "--json",
            "offer",
            "--agent",
            socket_s,
            "--server",
            &addr,
            "--payload",
            "p",
            "--kdf",
            "test",
            "--expect-answer",
        ],
        None,
        &[],
    );
    let o: serde_json::Value = serde_json::from_slice(&offered.stdout).unwrap();
    let (link, offer) = (o["link"].as_str().unwrap(), o["offer"].as_str().unwrap());
    fill_up(&fs.0);
    let accepted = run_rdv(&["accept", "--direct", link, "--answer", "kept"], None, &[]);
    assert!(accepted.status.success());
    status_until(
        &socket,
        |r| r["pending"][0]["answered"] == true,
        "the answer never came",
    );
    // A collect whose client is gone before the reply: the line ends at the connection's end
    // (no newline), so the agent reads it only once the client has gone.
    let mut gone = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    gone.write_all(
        format!("{{\"id\": 2, \"op\": \"collect\", \"offer\": \"{offer}\"}}").as_bytes(),
    )
    .unwrap();
    drop(gone);
    std::thread::sleep(std::time::Duration::from_secs(1));
    std::fs::remove_file(fs.0.join("filler")).unwrap();
    let answer_file = state.join("answers").join(offer);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while !answer_file.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the answer was never written once space returned"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // A held offer, and the agent killed while it waits: the link was never handed over.
    let mut held = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    held.write_all(
        format!("{{\"id\": 3, \"op\": \"offer\", \"servers\": [\"{addr}\"], \"payload\": \"h\", \"kdf\": \"test\", \"hold\": true}}\n")
            .as_bytes(),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_dir(state.join("undelivered"))
        .unwrap()
        .count()
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no record of the held link"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let stored = metric(m, "rdv_links_stored");
    drop(agent);
    fill_up(&fs.0);
    let agent = start_agent(&state, &socket, &AGENT_FLAGS);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while metric(m, "rdv_links_stored") != stored - 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the held link was not taken back"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(held);
    drop(agent);
}

/// An answer collected while the agent's files cannot be removed (the file system went
/// read-only, as one with errors does) reaches one caller: the next `collect` is told the offer
/// is gone, and `status` no longer lists it; the files go once the disk takes writes again.
/// Before, every `collect` got the same answer again (a helper's attack).
#[test]
fn a_collected_answer_is_not_handed_out_again_when_its_files_stay() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        &tmp.path().join("data"),
        &["--open-window", "3s", "--stamp-effort", "4"],
    );
    let addr = server.addr.to_string();
    let state = tmp.path().join("state");
    let socket = tmp.path().join("run").join("agent.sock");
    let socket_s = socket.to_str().unwrap();
    let agent = start_agent(&state, &socket, &AGENT_FLAGS);
    let (link, offer) = offer_expecting_answer(socket_s, &addr);
    let accepted = run_rdv(
        &["accept", "--direct", &link, "--answer", "the answer"],
        None,
        &[],
    );
    assert!(accepted.status.success());
    let listed = |v: &serde_json::Value| {
        v["pending"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["offer"] == offer.as_str())
    };
    status_until(
        &socket,
        |v| {
            v["pending"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["offer"] == offer.as_str() && p["answered"] == true)
        },
        "the answer is in",
    );
    let read_only = ["offers", "answers"].map(|d| ReadOnly::over(&state.join(d)));
    let collect = || {
        run_rdv(
            &["collect", "--json", "--agent", socket_s, "--offer", &offer],
            None,
            &[],
        )
    };
    let first = collect();
    let out = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(first.status.success(), "{out}");
    assert!(out.contains("\"answer\":\"the answer\""), "{out}");
    let again = collect();
    let out = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(!again.status.success(), "handed out again: {out}");
    assert!(out.contains("\"code\":\"no_such_offer\""), "{out}");
    status_until(&socket, |v| !listed(v), "the collected offer is not listed");
    let files = || std::fs::read_dir(state.join("offers")).unwrap().count();
    assert!(files() > 0, "the files stay while the disk is read-only");
    // Writable again: the files go within the 30 s of the next try.
    drop(read_only);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while files() > 0 {
        assert!(std::time::Instant::now() < deadline, "the files stayed");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    drop(agent);
}

/// `rdv offer` whose standard output fills the disk after the link's line went out (the QR
/// codes do not fit): the link is not taken back, since whoever read that line holds it, and
/// the error says so. One whose very first line fails is taken back (`cli_users`). Before
/// (review, 2026-12-06), any failed line took the link back, also after it had been read.
#[test]
fn an_offer_whose_output_fills_the_disk_after_the_link_keeps_the_link() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&tmp.path().join("mnt"), "4k");
    let m = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let server = ServerProcess::start(
        &tmp.path().join("data"),
        &["--open-window", "3s", "--metrics", &m.to_string()],
    );
    let out_path = fs.0.join("out");
    let out = Command::new(env!("CARGO_BIN_EXE_rdv"))
        .args(["offer", "--direct", &server.addr.to_string()])
        .args(["--payload", "p", "--kdf", "test", "--qr"])
        .env("RDV_PASSPHRASE", "correct horse battery staple river")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("the link's line was written before this"), "{e}");
    // Bytes: the disk filled up in the middle of a QR code's character.
    let written = std::fs::read(&out_path).unwrap();
    assert!(written.starts_with(b"link: rdv1:"), "{written:?}");
    assert_eq!(
        metric(m, "rdv_links_stored"),
        1.0,
        "the link was taken back"
    );
}
