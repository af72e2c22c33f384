//! Shared helpers for the integration tests.
#![allow(dead_code)]

use rdv::client::direct::DirectConnector;
use rdv::client::pipe::PipeConnector;
use rdv::client::{Client, ClientConfig};
use rdv::clock::{Clock, ManualClock};
use rdv::proto::padding::FillerSecret;
use rdv::proto::ServerAddr;
use rdv::server::{Server, ServerConfig};
use rdv::store::{DiskStore, DiskStoreConfig, MemoryStore, StoreParams};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

pub mod pg;
pub mod proxy;
#[allow(unused_imports)]
pub use pg::free_port;
pub mod tornet;

/// A fixed, plausible "now" for tests with a manual clock.
pub const T0: u64 = 1_800_000_000;

/// Start an in-process server on a real loopback TCP port over a disk store in `dir`.
pub async fn start_server(
    dir: &Path,
    params: StoreParams,
    config: ServerConfig,
    clock: Arc<dyn Clock>,
) -> (Arc<Server<DiskStore>>, SocketAddr) {
    let store = DiskStore::open(
        dir,
        DiskStoreConfig {
            params,
            ..Default::default()
        },
        FillerSecret::from_bytes([7; 32]),
    )
    .expect("open store");
    let server = Server::new(store, config, clock).expect("valid settings");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server.clone().run_tcp(listener));
    (server, addr)
}

/// [`start_server`] with default store parameters and limits.
pub async fn start_default(
    dir: &Path,
    clock: Arc<dyn Clock>,
) -> (Arc<Server<DiskStore>>, SocketAddr) {
    start_server(dir, StoreParams::default(), ServerConfig::default(), clock).await
}

/// An in-process server over a memory store, reached through in-memory pipes: for tests on
/// tokio's paused clock (the memory store never waits on a thread, so paused time stays exact).
pub fn pipe_server(
    params: StoreParams,
    config: ServerConfig,
    clock: Arc<dyn Clock>,
) -> (Arc<Server<MemoryStore>>, Client) {
    let server = Server::new(MemoryStore::new(params), config, clock.clone()).expect("settings");
    let c = Client::new(
        Arc::new(PipeConnector::to_server(server.clone())),
        ClientConfig::default(),
        clock,
    );
    (server, c)
}

/// A raw in-memory stream to `server`, as a peer that speaks frames by hand.
pub fn raw_pipe<S: rdv::store::BucketStore>(server: &Arc<Server<S>>) -> tokio::io::DuplexStream {
    let (client, end) = tokio::io::duplex(64 * 1024);
    tokio::spawn(server.clone().serve_stream(end));
    client
}

/// Any server address: pipes ignore it.
pub fn pipe_addr() -> ServerAddr {
    ServerAddr::parse("127.0.0.1:7625").expect("addr")
}

/// A direct-TCP client using `clock`.
pub fn client(addr: SocketAddr, clock: Arc<dyn Clock>) -> Client {
    Client::new(
        Arc::new(DirectConnector::to(addr.to_string())),
        ClientConfig::default(),
        clock,
    )
}

/// [`client`] for a server started with `--stamp-effort 1`, stamping at that effort too: by
/// default a client stamps at 64 at least, whatever the server asks (its floor), and tests that
/// make thousands of stores in a debug build then took minutes (tests/disk_full.rs 25 min, and
/// tests/crash.rs acknowledged too few stores to check, in a full run on 2026-12-08).
pub fn cheap_client(addr: SocketAddr, clock: Arc<dyn Clock>) -> Client {
    let config = ClientConfig {
        policy: rdv::proto::ClientPolicy {
            min_effort: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    Client::new(
        Arc::new(DirectConnector::to(addr.to_string())),
        config,
        clock,
    )
}

/// The server address of `addr` as it goes into links.
pub fn server_addr(addr: SocketAddr) -> ServerAddr {
    ServerAddr::parse(&addr.to_string()).expect("addr")
}

/// Version exchange on a raw stream; whether the server answered with Hello (a server at its
/// connection limit answers Busy instead).
pub async fn raw_hello<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S) -> bool {
    use rdv::framed::{read_msg, write_msg};
    use rdv::proto::{wire::DEFAULT_MAX_FRAME, Request, Response};
    let hello = Request::Hello {
        min_version: 1,
        max_version: 1,
    };
    write_msg(s, &hello, DEFAULT_MAX_FRAME).await.is_ok()
        && matches!(
            read_msg::<Response, _>(s, u32::MAX).await,
            Ok(Response::Hello { version: 1 })
        )
}

/// A stamped answer (protocol version 4) of `answer` to `mailbox`, with a challenge asked on
/// `s` (a connection that agreed on version 4), solved from nonce zero.
pub async fn stamped_put_answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    mailbox: rdv::proto::MailboxAddr,
    answer: rdv::proto::SealedAnswer,
) -> rdv::proto::Request {
    use rdv::framed::{read_msg, write_msg};
    use rdv::proto::{answer_stamp, wire::DEFAULT_MAX_FRAME, Request, Response};
    write_msg(s, &Request::AnswerChallenge, DEFAULT_MAX_FRAME)
        .await
        .unwrap();
    let Ok(Response::AnswerChallenge(ch)) = read_msg::<Response, _>(s, u32::MAX).await else {
        panic!("no answer challenge");
    };
    let stamp = answer_stamp::solve_answer(&ch, &mailbox, &answer, [0; 16], 100_000).unwrap();
    Request::StampedPutAnswer {
        mailbox,
        answer,
        epoch: ch.epoch,
        stamp,
    }
}

/// A manual clock at [`T0`].
pub fn manual_clock() -> ManualClock {
    ManualClock::new(T0)
}

/// A real `rdv serve --no-onion --listen 127.0.0.1:0` process; killed when dropped.
pub struct ServerProcess {
    /// The process.
    pub child: std::process::Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Start on `data` with extra arguments; stderr discarded.
    pub fn start(data: &Path, extra: &[&str]) -> Self {
        Self::start_with(data, extra, &[], std::process::Stdio::null())
    }

    /// Start with extra arguments, environment and a stderr destination.
    pub fn start_with(
        data: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        stderr: std::process::Stdio,
    ) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rdv"))
            .args(["serve", "--no-onion", "--listen", "127.0.0.1:0"])
            .args(extra)
            .arg("--data")
            .arg(data)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start rdv serve");
        // The settings summary comes first, then the listeners.
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut seen = String::new();
        let addr = loop {
            let mut line = String::new();
            if out.read_line(&mut line).expect("read") == 0 {
                panic!("the server did not start cleanly: {seen:?}");
            }
            if let Some(a) = line.trim().strip_prefix("listening on ") {
                break a.parse().expect("address");
            }
            assert!(line.starts_with("settings: "), "unexpected output {line:?}");
            seen.push_str(&line);
        };
        // Keep reading: a server whose standard output is closed dies at its next line (the
        // `metrics on` line, for one).
        std::thread::spawn(move || {
            let mut sink = String::new();
            while out.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        ServerProcess { child, addr }
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(ok.success());
        self.child.wait().expect("wait")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run the `rdv` binary with `args`, `stdin` as its standard input (empty if `None`) and `env`
/// on top of an environment without any of rdv's secret variables; wait for it.
pub fn run_rdv(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> std::process::Output {
    run_rdv_into(args, stdin, env, std::process::Stdio::piped())
}

/// `rdv ARGS` with standard output on `/dev/full`, where every write fails (as on a full disk
/// under a redirect): its status and standard error.
pub fn run_rdv_on_full_disk(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    run_rdv_into(args, None, env, full.into())
}

/// `rdv ARGS` with standard output to `stdout`.
fn run_rdv_into(
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
    stdout: std::process::Stdio,
) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_rdv"))
        .args(args)
        .env_remove("RDV_PASSPHRASE")
        .env_remove("RDV_LINK")
        .env_remove("RDV_DELETE_TOKEN")
        .env_remove("RDV_ANSWER")
        // The user's own client configuration stays out of the tests unless they set one.
        .env_remove("RDV_SERVER")
        .env("RDV_CONFIG", "")
        .env("XDG_CONFIG_HOME", "/nonexistent/rdv-tests")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rdv");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait for rdv")
}

/// A sample of a server's metrics at `addr` (0 if absent). The metrics listener starts right
/// after the TCP listener: retried for a while.
pub fn metric(addr: SocketAddr, name: &str) -> f64 {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let scrape = std::net::TcpStream::connect(addr).and_then(|mut s| {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        });
        match scrape {
            Ok(text) => break text,
            Err(e) if Instant::now() < deadline => {
                eprintln!("metrics at {addr} not there yet: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("metrics at {addr}: {e}"),
        }
    };
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A running `rdv agent`, ended (SIGKILL) when dropped: also when a test fails, so that no
/// agent is left holding a tmpfs or a socket.
pub struct AgentChild(pub std::process::Child);

impl Drop for AgentChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `rdv agent --direct` with its state directory at `state`, its socket at `socket` and `extra`
/// flags, once it listens.
pub fn start_agent(
    state: &std::path::Path,
    socket: &std::path::Path,
    extra: &[&str],
) -> AgentChild {
    use std::io::{BufRead, BufReader};
    let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_rdv"))
        .args(["agent", "--direct", "--socket"])
        .arg(socket)
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(agent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("agent listening on "), "{line:?}");
    AgentChild(agent)
}
