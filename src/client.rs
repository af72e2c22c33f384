//! The client library: offer (store a sealed link), accept (fetch and trial-decrypt), delete, and
//! the answer channel (see [`answer`]): answer an accepted link, collect the answer.
//!
//! Every operation opens its own connection through a [`Connector`]: over Tor each gets its own
//! isolated circuit, so the server cannot tie a client's store, fetch and delete together.
//!
//! Transports: [`direct`] (plain TCP, for tests), [`pipe`] (in memory, to a server in the same
//! process), and with the `tor` feature `tor` (embedded arti) and `socks` (a tor already running).

mod answer;
mod cover;
pub mod direct;
mod error;
mod multi;
pub mod pipe;
#[cfg(feature = "tor")]
mod retry;
#[cfg(feature = "tor")]
pub mod socks;
pub mod spares;
#[cfg(feature = "tor")]
pub mod tor;
pub mod wake;

pub use answer::{
    AnswerDigest, Collected, LinkCopy, PendingAnswer, PendingAnswerError, ReplyTo, Trailed,
};
pub use error::{
    AcceptError, AnswerError, CollectError, ConnectError, ConnectStage, ConnectionError,
    DeleteError, ErrorKind, OfferError,
};

use crate::clock::Clock;
use crate::framed::{read_msg, write_msg, FrameIoError};
use crate::proto::kdf::{self, KdfLimits};
use crate::proto::seal::{self, SealError, NONCE_LEN};
use crate::proto::stamp::{Challenge, ServerName, FULL_SLACK, LATE_STORE_SECS};
use crate::proto::wire::{
    sanitize_message, DEFAULT_MAX_FRAME, MIN_PROTOCOL_VERSION, STAMP_VERSION,
};
use crate::proto::{
    AnswerPublic, BucketId, ClientPolicy, DeleteToken, ErrorCode, KdfProfile, LinkKey, Passphrase,
    RdvLink, Request, Response, Salt, SealedLink, ServerAddr, ServerInfo, MAX_LINKS_PER_BUCKET,
    PROTOCOL_VERSION,
};
use futures::future::BoxFuture;
use rand::{CryptoRng, RngCore};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to a server.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Opens streams to servers. Each call must give a fresh, unlinkable connection.
pub trait Connector: Send + Sync {
    /// Connect to `addr`.
    fn connect<'a>(
        &'a self,
        addr: &'a ServerAddr,
    ) -> BoxFuture<'a, Result<Box<dyn Stream>, ConnectError>>;

    /// Make a spare for a later connection to `addr` and keep at most `keep` of them for it
    /// ([`spares`]): part of a connection's set-up done ahead; the server sees a connection that
    /// closes without a byte. `Ok(false)` where the transport has nothing to make ahead (the
    /// default).
    fn warm<'a>(
        &'a self,
        addr: &'a ServerAddr,
        keep: usize,
    ) -> BoxFuture<'a, Result<bool, ConnectError>> {
        let _ = (addr, keep);
        Box::pin(async { Ok(false) })
    }

    /// Spares made and taken so far.
    fn spare_counts(&self) -> SpareCounts {
        SpareCounts::default()
    }
}

/// What a connector did with spares ([`Connector::warm`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpareCounts {
    /// Spares made.
    pub made: u64,
    /// Spares an operation's connection was opened on (taken and connected).
    pub taken: u64,
    /// Warm-ups that failed (no connection, or its circuit did not close), and spares taken
    /// whose connection failed or was given up (an attempt on a spare cut off by its timeout
    /// counts in neither).
    pub failed: u64,
    /// Spares ready now.
    pub ready: u64,
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The anti-fingerprinting policy.
    pub policy: ClientPolicy,
    /// Bounds on KDF work a link may ask for.
    pub kdf_limits: KdfLimits,
    /// Timeout for establishing a connection (includes Tor descriptor lookup and circuit).
    /// Default: 120 s.
    pub connect_timeout: Duration,
    /// Timeout for each request on an open connection. Default: 60 s.
    pub request_timeout: Duration,
    /// How long the server may take, in all, to answer the requests of one connection (the
    /// time between sending each request and reading its answer, added up; the client's own
    /// work between requests, such as a stamp, does not count). A server answering each request
    /// just inside [`ClientConfig::request_timeout`] (and closing every bucket it offers a stamp
    /// for) then holds a store for this long, not for a dozen request timeouts. `None`:
    /// requests are bounded one by one only (a load generator that keeps one connection for
    /// many requests). Default: 3 min.
    pub connection_budget: Option<Duration>,
    /// Largest response frame accepted, bytes. Default: 20 480.
    pub max_frame: u32,
    /// How long to keep retrying, with growing pauses, when the server answers that it is busy
    /// (no free connection slot, or no room for a store this second). Default: 60 s.
    pub retry_budget: Duration,
    /// The newest protocol version offered in the version exchange. Default:
    /// [`PROTOCOL_VERSION`]; lower only to act as an older client (tests, the lab).
    pub max_version: u16,
    /// How many key derivations (memory-hard: 64 MiB with the default profile, up to what
    /// [`ClientConfig::kdf_limits`] allows for a link) one client runs at once; more wait for
    /// a turn. Default: the number of cores, at most 4.
    pub max_parallel_kdf: usize,
    /// Mean of the random pause (exponential) before storing or counting each further copy of
    /// a multi-server link, and before fetching the next copy after one failed, so that servers
    /// comparing notes cannot chain one link's copies by their times. Deletes of such a link
    /// ([`Client::delete`], [`Client::delete_each`], [`Client::retire`]) take one copy at once
    /// and each other at a moment of its own drawn uniformly within this long. Zero: one right
    /// after another. Default: 30 s.
    pub copy_spread: Duration,
    /// Leave the answer to a multi-server link (format 3) in every copy's mailbox, a spread
    /// pause apart, so that it survives the server that took it going down before the
    /// initiator looks. Default `false`: only in the mailbox of the copy the accept fetched,
    /// and in the next copy's only when that server did not take it. Every copy answered, the
    /// puts' times (and the looks that find them) pair the copies for servers comparing notes
    /// far above chance (the lab's `copies` section, docs/ANONYMITY.md).
    pub answer_every_copy: bool,
    /// The mean pause before storing each further copy of a multi-server link, when it is to
    /// differ from [`ClientConfig::copy_spread`] (which every other pause of such a link
    /// keeps): `rdv offer --hold` waits for the buckets' closes anyway, and spends two minutes
    /// there (the lab's copies section: stores paired 23-27 % at 30 s, 7-10 % at 2 min, chance
    /// under 1 %). Default `None`: the copy spread.
    pub store_spread: Option<Duration>,
}

/// The default of [`ClientConfig::copy_spread`].
pub const DEFAULT_COPY_SPREAD: Duration = Duration::from_secs(30);

/// The [`ClientConfig::store_spread`] of an offer held for its buckets' closes (`rdv offer
/// --hold`, an agent's held offer) when no spread was chosen: it waits for the closes anyway.
pub const HOLD_STORE_SPREAD: Duration = Duration::from_secs(120);

/// The default of [`ClientConfig::max_parallel_kdf`]: one derivation per core gains nothing
/// beyond the cores, and four at most keeps a long-running client's memory bounded.
pub fn default_parallel_kdf() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            policy: ClientPolicy::default(),
            kdf_limits: KdfLimits::default(),
            connect_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(60),
            connection_budget: Some(Duration::from_secs(180)),
            max_frame: DEFAULT_MAX_FRAME,
            retry_budget: Duration::from_secs(60),
            max_version: PROTOCOL_VERSION,
            max_parallel_kdf: default_parallel_kdf(),
            copy_spread: DEFAULT_COPY_SPREAD,
            answer_every_copy: false,
            store_spread: None,
        }
    }
}

fn from_frame(e: FrameIoError, server: &str) -> ConnectionError {
    match e {
        FrameIoError::Closed => {
            ConnectionError::Protocol(format!("{server} closed the connection without answering"))
        }
        FrameIoError::Io(source) => ConnectionError::Io {
            server: server.to_string(),
            source,
        },
        FrameIoError::Frame(e) => ConnectionError::Protocol(e.to_string()),
    }
}

/// A link stored on a server. Its `Debug` output is redacted.
pub struct Offer {
    /// The link, with the passphrase inside (use [`RdvLink::without_passphrase`] for two channels).
    pub link: RdvLink,
    /// The bucket the link went into.
    pub bucket: BucketId,
    /// The token that deletes the link.
    pub delete_token: DeleteToken,
    /// The server's advertised parameters.
    pub server_info: ServerInfo,
    /// When every bucket the link went into is closed to every client, on this machine's clock
    /// (unix seconds): the latest over the copies of the bucket's creation time plus the
    /// server's open window plus the policy's allowed clock skew. A client that keeps to the ID
    /// policy stores into no bucket older than that, whatever the server says its time is:
    /// the server's `server_time` is not used, so a server that lies about it cannot make a
    /// client hand a link over, or look for its answer, while the bucket still takes links.
    pub closes_at: u64,
    /// When the link has expired on every server it went to (unix seconds, taken on this
    /// machine's clock): the latest over the copies of the bucket's creation time plus the
    /// server's link lifetime. After it no accepter can fetch the link, so no answer comes and
    /// nothing is left to delete. Like [`Offer::closes_at`] it does not use the server's
    /// `server_time`.
    pub expires_at: u64,
    /// When each copy's bucket closes and its link expires, in link order (one entry for a
    /// link on one server). [`Offer::closes_at`] and [`Offer::expires_at`] are the latest.
    pub copies: Vec<CopyTimes>,
}

/// When one copy of a link closes to every client and expires, on this machine's clock (unix
/// seconds), as [`Offer::closes_at`] and [`Offer::expires_at`] for that copy alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyTimes {
    /// When the copy's bucket is closed to every client.
    pub closes_at: u64,
    /// When the copy has expired on its server.
    pub expires_at: u64,
    /// At least how far this machine's clock was ahead of the server's (negative: behind) when
    /// the server answered before the store, in whole seconds: its `server_time` (whole
    /// seconds) against this clock halfway through that request, less the most that half the
    /// request's round trip and the server's rounding can account for (0 when they account for
    /// all of it). Used for a warning only ([`CLOCK_WARN_SECS`]): a server can say any time it
    /// likes.
    pub clock_ahead: i64,
}

/// Beyond this difference (seconds) between this machine's clock and a server's, the command
/// line and the agent warn: the looks and deletes an initiator times on its own clock show the
/// server that clock's error, and errors of tens of seconds tell initiators apart
/// (docs/ANONYMITY.md, "Clock errors"). The difference is counted net of what the request's
/// latency and the rounding to whole seconds can account for ([`CopyTimes::clock_ahead`]).
pub const CLOCK_WARN_SECS: u64 = 10;

impl Offer {
    /// The copy (its place in the link) whose server's clock differs most from this machine's,
    /// and by how much ([`CopyTimes::clock_ahead`]), if that is beyond [`CLOCK_WARN_SECS`].
    pub fn clock_off(&self) -> Option<(usize, i64)> {
        self.copies
            .iter()
            .map(|c| c.clock_ahead)
            .enumerate()
            .max_by_key(|(_, a)| a.unsigned_abs())
            .filter(|(_, a)| a.unsigned_abs() > CLOCK_WARN_SECS)
    }

    /// Copy `index` of the link (in link order) on its own: the link to that server alone and
    /// the token that deletes the copy there, so that each copy can be deleted at a moment of
    /// its own. `None` past the last copy.
    pub fn copy(&self, index: usize) -> Option<(RdvLink, DeleteToken)> {
        copy_of(&self.link, &self.delete_token, index)
    }
}

/// Copy `index` of `link` (in link order) on its own, with the token that deletes it there,
/// from the link's deletion token `token`. `None` past the last copy.
pub fn copy_of(
    link: &RdvLink,
    token: &DeleteToken,
    index: usize,
) -> Option<(RdvLink, DeleteToken)> {
    let copy = link.copy(index)?;
    Some((copy, token.for_server(u8::try_from(index).ok()?)))
}

impl std::fmt::Debug for Offer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offer")
            .field("link", &self.link)
            .field("bucket", &"[redacted]")
            .field("server_info", &self.server_info)
            .field("closes_at", &self.closes_at)
            .field("expires_at", &self.expires_at)
            .field("copies", &self.copies)
            .finish_non_exhaustive()
    }
}

/// What an accept found. Its `Debug` output leaves the payload out.
pub struct Accepted {
    /// The payload.
    pub payload: seal::Payload,
    /// How many links the bucket answer held (always a full bucket from an honest server).
    pub tried: usize,
    /// Index of the link that opened.
    pub index: usize,
    /// What answering needs, when the link expects an answer.
    pub reply: Option<ReplyTo>,
    /// How many of the bucket's entries carry a valid stamp of at least the policy's effort
    /// (protocol version 3): the real links this one hides among, itself included, as far as
    /// the client can check; for a multi-server link, the copy fetched (one: the link's first
    /// copy, [`crate::proto::link::first_copy`], unless that one failed).
    /// `None` from a server without stamps.
    pub links_verified: Option<usize>,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field(
                "payload",
                &format_args!("[{} bytes redacted]", self.payload.len()),
            )
            .field("tried", &self.tried)
            .field("index", &self.index)
            .field("expects_answer", &self.reply.is_some())
            .field("links_verified", &self.links_verified)
            .finish()
    }
}

/// One open connection after the version exchange.
pub struct Connection {
    stream: Box<dyn Stream>,
    /// The server, for errors.
    server: String,
    max_frame: u32,
    timeout: Duration,
    /// What is left of the connection's budget ([`ClientConfig::connection_budget`]).
    budget_left: Option<Duration>,
    version: u16,
}

impl Connection {
    /// The protocol version agreed with the server.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Send a request and read the answer; server errors become [`ConnectionError::Server`].
    pub async fn request(&mut self, req: &Request) -> Result<Response, ConnectionError> {
        let server = &self.server;
        let stream = &mut self.stream;
        let max_frame = self.max_frame;
        let fut = async move {
            write_msg(stream, req, max_frame)
                .await
                .map_err(|e| from_frame(e, server))?;
            read_msg::<Response, _>(stream, max_frame)
                .await
                .map_err(|e| from_frame(e, server))
        };
        let limit = self
            .budget_left
            .map_or(self.timeout, |left| left.min(self.timeout));
        let asked = tokio::time::Instant::now();
        let resp = tokio::time::timeout(limit, fut).await;
        if let Some(left) = &mut self.budget_left {
            *left = left.saturating_sub(asked.elapsed());
        }
        let resp = resp.map_err(|_| {
            if limit < self.timeout {
                ConnectionError::Timeout(
                    "waiting for the server's answer: its answers on this connection, added up, \
                     took longer than a client allows one connection (3 min by default; a \
                     server this slow holds every operation for minutes)",
                )
            } else {
                ConnectionError::Timeout("waiting for the server's answer")
            }
        })??;
        match resp {
            Response::Error { code, message } => Err(ConnectionError::Server {
                code,
                message: sanitize_message(&message),
            }),
            r => Ok(r),
        }
    }
}

/// Pauses between retries of a busy server: 100 ms doubling up to 5 s, each with up to 50 %
/// random jitter so that many clients do not retry in step.
struct Backoff {
    next: Duration,
    until: tokio::time::Instant,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new(budget: Duration) -> Self {
        Backoff {
            next: Self::FIRST,
            until: tokio::time::Instant::now() + budget,
        }
    }

    /// Sleep before the next attempt; `false` when the budget does not allow another one.
    async fn wait(&mut self) -> bool {
        let jitter = self.next.mul_f64(rand::random::<f64>() * 0.5);
        let pause = self.next + jitter;
        if tokio::time::Instant::now() + pause > self.until {
            return false;
        }
        tokio::time::sleep(pause).await;
        self.next = (self.next * 2).min(Self::MAX);
        true
    }
}

/// A link stored on one server.
pub(crate) struct Stored {
    /// Its bucket.
    pub(crate) id: BucketId,
    /// The server's parameters, as they were just before the store.
    pub(crate) info: ServerInfo,
    /// When the bucket is closed to every client, on this machine's clock (unix seconds;
    /// [`Offer::closes_at`]).
    pub(crate) closes_here: u64,
    /// [`CopyTimes::clock_ahead`].
    pub(crate) clock_ahead: i64,
}

/// [`CopyTimes::clock_ahead`] for a request sent at `sent` and answered at `got` (this clock)
/// with the server's time `server_time` (whole seconds, so its moment is within the second
/// after): the difference halfway through, less half the round trip and half a second,
/// towards 0.
fn clock_ahead(sent: Duration, got: Duration, server_time: u64) -> i64 {
    let mid = (sent.as_secs_f64() + got.as_secs_f64()) / 2.0;
    let ahead = mid - (server_time as f64 + 0.5);
    let slack = got.saturating_sub(sent).as_secs_f64() / 2.0 + 0.5;
    let net = (ahead.abs() - slack).max(0.0).floor();
    // As i64, saturating: a server may claim any time.
    let net = if net >= i64::MAX as f64 {
        i64::MAX
    } else {
        net as i64
    };
    if ahead < 0.0 {
        -net
    } else {
        net
    }
}

/// A fetched bucket: its 64 entries, and how many carry a valid stamp (`None` from a server
/// without stamps).
pub(crate) struct Fetched {
    pub(crate) links: Vec<SealedLink>,
    pub(crate) verified: Option<usize>,
}

/// What [`Client::request_fresh`] got (short-lived: its size does not matter).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Sent {
    /// The server's answer.
    Answer(Response),
    /// The server agreed on this older version, which lacks the request: nothing was sent.
    OldServer(u16),
}

/// Whether a server error says "busy, try again shortly".
fn busy(e: &ConnectionError, codes: &[ErrorCode]) -> bool {
    matches!(e, ConnectionError::Server { code, .. } if codes.contains(code))
}

/// An rdv server pads every bucket answer to a full bucket; anything else is not one.
fn a_full_bucket(n: usize) -> Result<(), ConnectionError> {
    if n == MAX_LINKS_PER_BUCKET {
        Ok(())
    } else {
        Err(ConnectionError::Protocol(format!(
            "a bucket answer with {n} entries (always exactly {MAX_LINKS_PER_BUCKET})"
        )))
    }
}

/// The entries of bucket `locator` on the server named `name` whose stamps verify at `min`
/// effort or more ([`crate::proto::stamp::count_verified`]), counted off the async runtime
/// (about 50 µs per real entry); the entries are handed back.
async fn count_off_runtime(
    name: ServerName,
    locator: crate::proto::Locator,
    seed: crate::proto::StampSeed,
    entries: Vec<crate::proto::wire::StampedEntry>,
    min: u32,
) -> Result<(Vec<crate::proto::wire::StampedEntry>, usize), tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        let n = crate::proto::stamp::count_verified(
            &name,
            &locator,
            &seed,
            entries.iter().map(|e| (&e.link, &e.stamp)),
            min,
        );
        (entries, n)
    })
    .await
}

fn unexpected(what: &str, r: &Response) -> ConnectionError {
    ConnectionError::Protocol(format!("expected {what}, got {}", r.kind()))
}

/// How many stamps one link gets on one server at most ([`Client::stamped_store_on`]): one,
/// and one more after the server said the bucket closed.
pub const STAMPS_PER_LINK: u32 = 2;

/// A link's stamped store on one server, across connections ([`Client::stamped_store_on`]).
#[derive(Default)]
struct Stamped {
    /// The store once its stamp has gone out, with the bucket it names.
    sent: Option<(BucketId, Request)>,
    /// Stamps made for the link so far.
    stamps: u32,
    /// The effort the server asked in the challenge of the store sent.
    effort: u32,
}

/// The random values of one offer.
struct OfferSecrets {
    salt: Salt,
    nonce: [u8; NONCE_LEN],
    token: DeleteToken,
}

impl OfferSecrets {
    fn draw(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut salt);
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let mut token = [0u8; 32];
        rng.fill_bytes(&mut token);
        let s = OfferSecrets {
            salt: Salt::from_bytes(salt),
            nonce,
            token: DeleteToken::from_bytes(token),
        };
        zeroize::Zeroize::zeroize(&mut salt);
        zeroize::Zeroize::zeroize(&mut token);
        s
    }
}

/// The rdv client.
pub struct Client {
    connector: Arc<dyn Connector>,
    config: ClientConfig,
    clock: Arc<dyn Clock>,
    /// Turns for key derivations ([`ClientConfig::max_parallel_kdf`]).
    kdf_turns: Arc<tokio::sync::Semaphore>,
    /// Set by [`Client::interrupt`].
    interrupted: Arc<tokio::sync::watch::Sender<bool>>,
    /// Looks on their way, by server and mailbox, each told what the server answered when it
    /// ends; the end of a look whose caller stopped waiting is kept until taken
    /// ([`Client::look_at`]).
    looking: LooksOnTheirWay,
}

/// How a look into a mailbox ended: `None` while it is on its way, then what the server
/// answered (the sealed answer or filler the mailbox held; `None` within when it could not be
/// asked).
type LookEnd = Option<Option<crate::proto::answer::SealedAnswer>>;

/// Looks into mailboxes that are on their way, or ended with nobody waiting for them, by
/// server and mailbox.
type LooksOnTheirWay = Arc<
    std::sync::Mutex<
        std::collections::HashMap<(String, [u8; 32]), tokio::sync::watch::Receiver<LookEnd>>,
    >,
>;

impl Client {
    /// End the pauses between the copies of multi-server links, for a process that is
    /// stopping: an offer waiting to store its next copy deletes the copies it stored and
    /// fails with [`OfferError::Interrupted`] (nobody has its link yet), and deletes of copies
    /// go on without pauses (so that taking links back fits in the time a stop has). Fetches
    /// of further copies go on without pauses too. For good: a client interrupted stays so.
    pub fn interrupt(&self) {
        self.interrupted.send_replace(true);
    }

    /// Wait the pause before a further copy of a multi-server link is stored, deleted or
    /// fetched ([`ClientConfig::copy_spread`]), drawn afresh if a stop passes it. `true`: the
    /// client was interrupted ([`Client::interrupt`]), at once or during the pause.
    pub(crate) async fn spread_pause(&self) -> bool {
        let mut interrupted = self.interrupted.subscribe();
        if *interrupted.borrow() {
            return true;
        }
        tokio::select! {
            _ = wake::pause(self.config.copy_spread) => false,
            _ = interrupted.wait_for(|i| *i) => true,
        }
    }

    /// The pause before storing a further copy of a multi-server link
    /// ([`ClientConfig::store_spread`], else the copy spread), drawn afresh if a stop passes
    /// it. `true`: the client was interrupted ([`Client::interrupt`]), at once or during it.
    pub(crate) async fn store_pause(&self) -> bool {
        let mean = self.config.store_spread.unwrap_or(self.config.copy_spread);
        let mut interrupted = self.interrupted.subscribe();
        if *interrupted.borrow() {
            return true;
        }
        tokio::select! {
            _ = wake::pause(mean) => false,
            _ = interrupted.wait_for(|i| *i) => true,
        }
    }

    /// The same client with [`ClientConfig::store_spread`] set to `spread`.
    pub fn with_store_spread(mut self, spread: Option<Duration>) -> Self {
        self.config.store_spread = spread;
        self
    }

    /// The same client with [`ClientConfig::answer_every_copy`] set to `every`.
    pub fn with_answer_every_copy(mut self, every: bool) -> Self {
        self.config.answer_every_copy = every;
        self
    }

    /// A client like this one, sharing everything (for work on a task of its own).
    pub(crate) fn shared(&self) -> Client {
        self.alike_with_store_spread(self.config.store_spread)
    }

    /// A client like this one (its connections, clock, derivation turns and interrupt shared)
    /// with [`ClientConfig::store_spread`] set to `spread`: for one offer of a long-running
    /// client that stores its copies further apart than its others.
    pub fn alike_with_store_spread(&self, spread: Option<Duration>) -> Client {
        let mut config = self.config.clone();
        config.store_spread = spread;
        Client {
            connector: self.connector.clone(),
            config,
            clock: self.clock.clone(),
            kdf_turns: self.kdf_turns.clone(),
            interrupted: self.interrupted.clone(),
            looking: self.looking.clone(),
        }
    }

    /// The same client with [`ClientConfig::copy_spread`] set to `spread`.
    pub fn with_copy_spread(mut self, spread: Duration) -> Self {
        self.config.copy_spread = spread;
        self
    }

    /// A client that connects through `connector`.
    pub fn new(connector: Arc<dyn Connector>, config: ClientConfig, clock: Arc<dyn Clock>) -> Self {
        let kdf_turns = Arc::new(tokio::sync::Semaphore::new(config.max_parallel_kdf.max(1)));
        Client {
            connector,
            config,
            clock,
            kdf_turns,
            interrupted: Arc::new(tokio::sync::watch::Sender::new(false)),
            looking: LooksOnTheirWay::default(),
        }
    }

    /// The client's settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Open a connection and exchange versions. A server without a free connection slot
    /// (`Busy`) is tried again with growing pauses within [`ClientConfig::retry_budget`].
    pub async fn connect(&self, addr: &ServerAddr) -> Result<Connection, ConnectionError> {
        let mut backoff = Backoff::new(self.config.retry_budget);
        loop {
            match self.connect_once(addr).await {
                Err(e) if busy(&e, &[ErrorCode::Busy]) && backoff.wait().await => {
                    tracing::debug!("the server has no free connection slot; retrying");
                }
                r => return r,
            }
        }
    }

    async fn connect_once(&self, addr: &ServerAddr) -> Result<Connection, ConnectionError> {
        let stream =
            tokio::time::timeout(self.config.connect_timeout, self.connector.connect(addr))
                .await
                .map_err(|_| ConnectionError::Timeout("connecting to the server"))??;
        let mut c = Connection {
            stream,
            server: addr.to_string(),
            max_frame: self.config.max_frame,
            timeout: self.config.request_timeout,
            budget_left: self.config.connection_budget,
            version: MIN_PROTOCOL_VERSION,
        };
        let max_version = self
            .config
            .max_version
            .clamp(MIN_PROTOCOL_VERSION, PROTOCOL_VERSION);
        let hello = Request::Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version,
        };
        match c.request(&hello).await {
            Ok(Response::Hello { version })
                if (MIN_PROTOCOL_VERSION..=max_version).contains(&version) =>
            {
                c.version = version;
                Ok(c)
            }
            Ok(Response::Hello { version }) => Err(ConnectionError::Protocol(format!(
                "server chose unsupported version {version}"
            ))),
            Ok(r) => Err(unexpected("Hello", &r)),
            // The first answer does not even frame or decode: not an rdv server at all.
            Err(ConnectionError::Protocol(why)) => Err(ConnectionError::NotRdv(why)),
            Err(e) => Err(e),
        }
    }

    /// Open a connection to `server` and send `req` on it, if the server agreed on at least
    /// `needs_version` (else [`Sent::OldServer`] with the version it agreed on). A `Busy` answer
    /// (the server took the slot back between the version exchange and the request, or gave none
    /// in time) means the request was not executed: it goes again on a fresh connection, with
    /// growing pauses, within the retry budget.
    pub(crate) async fn request_fresh(
        &self,
        server: &ServerAddr,
        req: &Request,
        needs_version: u16,
    ) -> Result<Sent, ConnectionError> {
        Ok(self.request_on_version(server, req, needs_version).await?.0)
    }

    /// [`Client::request_fresh`], with the protocol version the connection agreed on.
    async fn request_on_version(
        &self,
        server: &ServerAddr,
        req: &Request,
        needs_version: u16,
    ) -> Result<(Sent, u16), ConnectionError> {
        let mut backoff = Backoff::new(self.config.retry_budget);
        loop {
            let mut c = self.connect(server).await?;
            let version = c.version();
            if version < needs_version {
                return Ok((Sent::OldServer(version), version));
            }
            match c.request(req).await {
                Err(e) if busy(&e, &[ErrorCode::Busy]) && backoff.wait().await => {
                    tracing::debug!("the server took the connection's slot back; trying again");
                }
                r => return r.map(|r| (Sent::Answer(r), version)),
            }
        }
    }

    /// [`Client::request_fresh`] for a request of every protocol version, with the version the
    /// connection agreed on.
    async fn request_any(
        &self,
        server: &ServerAddr,
        req: &Request,
    ) -> Result<(Response, u16), ConnectionError> {
        match self
            .request_on_version(server, req, MIN_PROTOCOL_VERSION)
            .await?
        {
            (Sent::Answer(r), v) => Ok((r, v)),
            // `connect` refuses versions below the minimum already.
            (Sent::OldServer(v), _) => Err(ConnectionError::Protocol(format!(
                "the server agreed on version {v}"
            ))),
        }
    }

    /// Make a spare for a later connection to `addr`, keeping at most `keep` ([`Connector::warm`]).
    pub async fn warm(&self, addr: &ServerAddr, keep: usize) -> Result<bool, ConnectError> {
        self.connector.warm(addr, keep).await
    }

    /// What the connector did with spares.
    pub fn spare_counts(&self) -> SpareCounts {
        self.connector.spare_counts()
    }

    /// Ask a server for its parameters.
    pub async fn info(&self, addr: &ServerAddr) -> Result<ServerInfo, ConnectionError> {
        match self.request_any(addr, &Request::Info).await?.0 {
            Response::Info(i) => Ok(i),
            r => Err(unexpected("Info", &r)),
        }
    }

    async fn info_on(c: &mut Connection) -> Result<ServerInfo, ConnectionError> {
        match c.request(&Request::Info).await? {
            Response::Info(i) => Ok(i),
            r => Err(unexpected("Info", &r)),
        }
    }

    /// Derive a key on a blocking thread, once a turn is free (at most
    /// [`ClientConfig::max_parallel_kdf`] at once). The limits are checked first, so a link
    /// asking for excessive work fails at once.
    async fn derive_key(
        &self,
        passphrase: &Passphrase,
        salt: &Salt,
        kdf: KdfProfile,
    ) -> Result<Result<LinkKey, kdf::KdfError>, tokio::task::JoinError> {
        let limits = self.config.kdf_limits;
        if let Err(e) = kdf::check_limits(kdf.params(), &limits) {
            return Ok(Err(e));
        }
        let (p, s) = (passphrase.clone(), salt.clone());
        // The semaphore is never closed.
        let turn = self.kdf_turns.clone().acquire_owned().await;
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            kdf::derive_key(&p, &s, kdf, &limits)
        })
        .await
    }

    /// Seal `payload` under `passphrase`, store it on `server`, and check the bucket ID the server
    /// returns against the policy. A refused ID gets the link deleted again.
    pub async fn offer(
        &self,
        server: &ServerAddr,
        payload: &[u8],
        passphrase: Passphrase,
        kdf: KdfProfile,
    ) -> Result<Offer, OfferError> {
        let secrets = OfferSecrets::draw(&mut rand::rngs::OsRng);
        self.offer_with(server, payload, passphrase, kdf, secrets, None)
            .await
            .map(|(offer, _key)| offer)
    }

    /// Store a link sealed with `answer_to` inside (the link's format 2), on a server that has
    /// answer mailboxes: the offer and the link key that collecting the answer needs.
    async fn offer_with(
        &self,
        server: &ServerAddr,
        payload: &[u8],
        passphrase: Passphrase,
        kdf: KdfProfile,
        secrets: OfferSecrets,
        answer_to: Option<&AnswerPublic>,
    ) -> Result<(Offer, LinkKey), OfferError> {
        let OfferSecrets { salt, nonce, token } = secrets;
        let key = self
            .link_key(payload, &passphrase, &salt, kdf, answer_to.is_some())
            .await?;
        let sealed = match answer_to {
            None => seal::seal(&key, payload, nonce)?,
            Some(to) => seal::seal_expecting_answer(&key, payload, to, nonce)?,
        };

        let Stored {
            id,
            info,
            closes_here,
            clock_ahead,
        } = self
            .store_sealed(server, sealed, &token, answer_to.is_some())
            .await?;
        let link = RdvLink {
            server: server.clone(),
            locator: id.locator(),
            mirrors: Vec::new(),
            salt,
            kdf,
            passphrase: Some(passphrase),
        };
        let expires_at = id.created.saturating_add(info.ttl_secs);
        let offer = Offer {
            link,
            bucket: id,
            delete_token: token,
            server_info: info,
            closes_at: closes_here,
            expires_at,
            copies: vec![CopyTimes {
                closes_at: closes_here,
                expires_at,
                clock_ahead,
            }],
        };
        Ok((offer, key))
    }

    /// Check that `payload` fits a link (one that expects an answer holds less) and derive the
    /// link key, before connecting anywhere (so a connection never sits idle during the slow
    /// KDF). A client interrupted meanwhile (a stop, Ctrl-C) fails here: nothing is stored yet,
    /// so nothing has to be taken back.
    pub(crate) async fn link_key(
        &self,
        payload: &[u8],
        passphrase: &Passphrase,
        salt: &Salt,
        kdf: KdfProfile,
        expects_answer: bool,
    ) -> Result<LinkKey, OfferError> {
        let max = match expects_answer {
            false => seal::MAX_PAYLOAD,
            true => seal::MAX_PAYLOAD_WITH_ANSWER,
        };
        if payload.len() > max {
            return Err(SealError::PayloadTooLong {
                len: payload.len(),
                max,
            }
            .into());
        }
        let key = self
            .derive_key(passphrase, salt, kdf)
            .await
            .map_err(OfferError::KdfTask)??;
        if *self.interrupted.borrow() {
            return Err(OfferError::Interrupted);
        }
        Ok(key)
    }

    /// Store one sealed link on `server` with `token`'s check. Against a server of protocol
    /// version 3: ask for a challenge, check its bucket ID and effort against the policy before
    /// anything is stored, stamp the link and store it into that bucket. Against an older one:
    /// store, then check the bucket ID it got (a refused ID gets the link deleted again). The
    /// bucket, the server's parameters, and when the bucket closes on this machine's clock
    /// (taken when the server's parameters arrived, so that nothing after it, the store
    /// included, shifts it).
    pub(crate) async fn store_sealed(
        &self,
        server: &ServerAddr,
        sealed: SealedLink,
        token: &DeleteToken,
        needs_mailboxes: bool,
    ) -> Result<Stored, OfferError> {
        // A server with no room this second says so instead of handing out an ID clients refuse;
        // one that took the connection's slot back (`Busy`) executed nothing: both are retried,
        // the latter on a fresh connection.
        let mut backoff = Backoff::new(self.config.retry_budget);
        // The stamped store once its stamp has gone out: sent again as it is after a `Busy`,
        // not stamped afresh ([`Client::stamped_store_on`]).
        let mut stamped = Stamped::default();
        let (mut c, info, id, clock_ahead) = loop {
            let mut c = self.connect(server).await?;
            if stamped.stamps > 0 && c.version() < STAMP_VERSION {
                // A stamp went out on an earlier connection: storing without one now would
                // give a server that said `Busy` to the stamped store, kept its stamp and then
                // spoke an older version the link's entry for free, and the offer would
                // succeed (a helper's attack, 2026-12-07).
                return Err(ConnectionError::Protocol(format!(
                    "the server agreed on protocol version {} after version {STAMP_VERSION} or later earlier in this offer; nothing was stored",
                    c.version()
                ))
                .into());
            }
            if needs_mailboxes && c.version() < crate::proto::wire::ANSWER_VERSION {
                return Err(OfferError::NoMailboxes {
                    version: c.version(),
                });
            }
            let sent = self.clock.now_precise();
            let info = match Self::info_on(&mut c).await {
                Err(e) if busy(&e, &[ErrorCode::Busy]) && backoff.wait().await => continue,
                r => r?,
            };
            let clock_ahead = clock_ahead(sent, self.clock.now_precise(), info.server_time);
            self.config
                .policy
                .check_lifetimes(info.open_window_secs, info.ttl_secs)
                .map_err(OfferError::UnacceptableServer)?;
            let stored = if c.version() >= STAMP_VERSION {
                self.stamped_store_on(
                    &mut c,
                    server,
                    &sealed,
                    token,
                    &info,
                    &mut backoff,
                    &mut stamped,
                )
                .await
            } else {
                let store = Request::Store {
                    link: sealed.clone(),
                    delete_check: token.check(),
                };
                Self::store_on(&mut c, &store, &mut backoff)
                    .await
                    .map_err(OfferError::from)
            };
            match stored {
                Ok(id) => break (c, info, id, clock_ahead),
                Err(OfferError::Connection(e))
                    if busy(&e, &[ErrorCode::Busy]) && backoff.wait().await =>
                {
                    tracing::debug!("the server took the connection's slot back; retrying");
                }
                Err(e) => return Err(e),
            }
        };
        if c.version() < STAMP_VERSION {
            tracing::debug!("sealed link stored; checking the bucket ID against the policy");
            if let Err(violation) =
                self.config
                    .policy
                    .check(id, self.clock.now(), info.open_window_secs)
            {
                tracing::warn!(
                    %violation,
                    "the bucket ID fails the anti-fingerprinting policy; deleting the link"
                );
                let delete = Request::Delete {
                    locator: id.locator(),
                    token: token.clone(),
                };
                let deleted = matches!(c.request(&delete).await, Ok(Response::Deleted));
                return Err(OfferError::Refused { violation, deleted });
            }
        }
        Ok(Stored {
            id,
            info,
            closes_here: self.config.policy.closed_to_all(id),
            clock_ahead,
        })
    }

    /// A store without a stamp on `c` (protocol versions 1 and 2), retrying `Overloaded` and
    /// `RateLimited` on the same connection.
    async fn store_on(
        c: &mut Connection,
        store: &Request,
        backoff: &mut Backoff,
    ) -> Result<BucketId, ConnectionError> {
        loop {
            match c.request(store).await {
                Ok(Response::Stored { id }) => return Ok(id),
                Ok(r) => return Err(unexpected("Stored", &r)),
                Err(e)
                    if busy(&e, &[ErrorCode::Overloaded, ErrorCode::RateLimited])
                        && backoff.wait().await =>
                {
                    tracing::debug!("the server has no room for a store now; retrying");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Challenge, check, stamp and store on `c` (protocol version 3). A policy refusal stores
    /// nothing.
    ///
    /// **At most [`STAMPS_PER_LINK`] stamps per link and server.** A stamp verifies in the
    /// bucket it names whether or not the server stores the link there, so every stamp sent
    /// is an entry the server can show in that bucket, counted as a verified link, for free. A
    /// client that asked for a new challenge after every `BucketClosed`, and began again after
    /// `Busy`, stamped its link for bucket after bucket: a server naming its victims' buckets in
    /// the challenges filled them with verified entries it paid nothing for (a helper's attack,
    /// 2026-12-07: 4 a store through new challenges, some 60 through `Busy` and reconnects, one
    /// victim shown 5 verified links in a bucket of its own). So `state` keeps the store once
    /// its stamp has gone out: a later attempt (a fresh connection after `Busy`, which executed
    /// nothing) sends that same store again. `BucketClosed` gets one new challenge, not more
    /// ([`OfferError::ClosedAfterStamp`] then), and only once the client has seen that bucket
    /// full ([`Client::check_closed`]): an honest server says it when more challenges named the
    /// open bucket than it had places left (clients solving at once as it fills, on one server
    /// or through the frontends of a cluster), and the next bucket has room.
    #[allow(clippy::too_many_arguments)]
    async fn stamped_store_on(
        &self,
        c: &mut Connection,
        server: &ServerAddr,
        sealed: &SealedLink,
        token: &DeleteToken,
        info: &ServerInfo,
        backoff: &mut Backoff,
        state: &mut Stamped,
    ) -> Result<BucketId, OfferError> {
        loop {
            let (named, store) = match &state.sent {
                Some(kept) => kept.clone(),
                None => {
                    let challenge = loop {
                        match c.request(&Request::Challenge).await {
                            Ok(Response::Challenge(ch)) => break ch,
                            Ok(r) => return Err(unexpected("Challenge", &r).into()),
                            Err(e)
                                if busy(&e, &[ErrorCode::Overloaded, ErrorCode::RateLimited])
                                    && backoff.wait().await => {}
                            Err(e) => return Err(e.into()),
                        }
                    };
                    let policy = self.config.policy;
                    if let Err(v) =
                        policy.check_challenge(&challenge, self.clock.now(), info.open_window_secs)
                    {
                        // The error says it, with the reason (a log line at warning level came
                        // out even with --quiet, before the error, naming the policy for an
                        // effort refused).
                        tracing::debug!(violation = %v, "the challenge fails the client's policy; nothing stored");
                        return Err(OfferError::RefusedChallenge(v));
                    }
                    // Bound to the server as the link names it: a stamp made here proves
                    // nothing shown by another server.
                    let name = ServerName::of(server);
                    // At least the client's own floor, so that its own stamp counts for a
                    // client that counts like it (a server asking less gets more).
                    let ch = Challenge {
                        effort: challenge.effort.max(policy.min_effort),
                        ..challenge
                    };
                    let link = sealed.clone();
                    let mut start = [0u8; 16];
                    rand::rngs::OsRng.fill_bytes(&mut start);
                    let stamp = tokio::task::spawn_blocking(move || {
                        crate::proto::stamp::solve(&name, &ch, &link, start, u64::MAX)
                    })
                    .await
                    .map_err(OfferError::StampTask)?
                    .map_err(|_| ConnectionError::Protocol("the stamp budget ran out".into()))?;
                    let store = Request::StampedStore {
                        link: sealed.clone(),
                        delete_check: token.check(),
                        id: challenge.id,
                        name,
                        stamp,
                    };
                    state.stamps += 1;
                    state.effort = challenge.effort;
                    state.sent.insert((challenge.id, store)).clone()
                }
            };
            if let Some(id) = self.send_stamped(c, named, &store, backoff).await? {
                return Ok(id);
            }
            // Closed: a new challenge, once, if the bucket is full. Checked before the store
            // is forgotten: after `Busy` on the check, the same store goes again.
            if state.stamps >= STAMPS_PER_LINK {
                state.sent = None;
                return Err(OfferError::ClosedAfterStamp);
            }
            self.check_closed(c, server, (named, state.effort), info, backoff)
                .await?;
            state.sent = None;
            tracing::info!("the server said the bucket closed before the stamped store, and it is full; one new challenge (a stamp sent is an entry a server playing games could count in that bucket)");
        }
    }

    /// The server said bucket `named` (whose challenge asked `effort`) closed to the link's
    /// stamped store on `c`: `Ok` if it shows itself full, so that a new challenge may follow.
    ///
    /// An honest server takes stamped stores until [`LATE_STORE_SECS`] after a bucket's window
    /// (by any clock within the policy's skew), so before then it says `BucketClosed` only of
    /// a full bucket: 64 stamped stores, all of which but deleted links show as verified. A
    /// server that said it of a bucket with room kept the stamp, which verifies in that bucket
    /// whether or not the link is there; a client that stamped its link again elsewhere gave
    /// it an entry for free, one per offer (a helper's attack, 2026-12-07). Now it gets one per
    /// offer that fails, visibly, with [`OfferError::ClosedNotFull`]. Entries are counted at
    /// the challenge's effort (the question is whether the server took 64 stamped stores, each
    /// of which paid what it asked), but at least at the client's floor or the default effort,
    /// whichever is lower. Deletes (of more than [`FULL_SLACK`] links) and stamps made for
    /// another name of the same server also make a full bucket look short: the error does not
    /// call the server a liar. After that time the offer ends ([`OfferError::ClosedLate`]): a
    /// server that held the store that long could say anything.
    async fn check_closed(
        &self,
        c: &mut Connection,
        server: &ServerAddr,
        (named, effort): (BucketId, u32),
        info: &ServerInfo,
        backoff: &mut Backoff,
    ) -> Result<(), OfferError> {
        let policy = self.config.policy;
        let late = named
            .created
            .saturating_add(
                info.open_window_secs
                    .saturating_add(LATE_STORE_SECS)
                    .min(info.ttl_secs),
            )
            .saturating_sub(policy.max_skew_secs);
        if self.clock.now() >= late {
            return Err(OfferError::ClosedLate);
        }
        let locator = named.locator();
        let (seed, entries) = loop {
            match c.request(&Request::Fetch { locator }).await {
                Ok(Response::StampedBucket { seed, entries }) => break (seed, entries),
                Ok(r) => return Err(unexpected("StampedBucket", &r).into()),
                Err(ConnectionError::Server {
                    code: ErrorCode::NotFound,
                    ..
                }) => {
                    return Err(OfferError::ClosedNotFull {
                        verified: 0,
                        max: MAX_LINKS_PER_BUCKET,
                    })
                }
                Err(e)
                    if busy(&e, &[ErrorCode::Overloaded, ErrorCode::RateLimited])
                        && backoff.wait().await => {}
                Err(e) => return Err(e.into()),
            }
        };
        a_full_bucket(entries.len())?;
        // At the challenge's effort, but never below the client's floor or the default one,
        // whichever is lower: a server that asked for almost nothing would otherwise show a
        // bucket "full" of stamps that cost it a fraction of a second, and collect each
        // victim's stamp, made at the floor, for free (a review, 2026-12-07).
        let min = effort.max(policy.min_effort.min(crate::proto::stamp::DEFAULT_EFFORT));
        let (_, verified) = count_off_runtime(ServerName::of(server), locator, seed, entries, min)
            .await
            .map_err(OfferError::StampTask)?;
        if verified + FULL_SLACK < MAX_LINKS_PER_BUCKET {
            return Err(OfferError::ClosedNotFull {
                verified,
                max: MAX_LINKS_PER_BUCKET,
            });
        }
        Ok(())
    }

    /// Send stamped store `store` for bucket `named` on `c`, retrying `Overloaded` and
    /// `RateLimited`: the bucket, or `None` if the server says it closed.
    async fn send_stamped(
        &self,
        c: &mut Connection,
        named: BucketId,
        store: &Request,
        backoff: &mut Backoff,
    ) -> Result<Option<BucketId>, OfferError> {
        loop {
            match c.request(store).await {
                Ok(Response::Stored { id }) if id == named => return Ok(Some(id)),
                Ok(Response::Stored { .. }) => {
                    return Err(ConnectionError::Protocol(
                        "the server stored the link in another bucket than its challenge named"
                            .into(),
                    )
                    .into())
                }
                Ok(r) => return Err(unexpected("Stored", &r).into()),
                Err(ConnectionError::Server {
                    code: ErrorCode::BucketClosed,
                    ..
                }) => return Ok(None),
                Err(e)
                    if busy(&e, &[ErrorCode::Overloaded, ErrorCode::RateLimited])
                        && backoff.wait().await => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Fetch the link's bucket and trial-decrypt it.
    ///
    /// The passphrase is the link's own (one-channel link) or `passphrase` (two-channel link);
    /// both at once is [`AcceptError::PassphraseConflict`], never a silent choice: whoever
    /// controls only the link channel could otherwise send a one-channel link of their own and
    /// have it opened instead.
    pub async fn accept(
        &self,
        link: &RdvLink,
        passphrase: Option<Passphrase>,
    ) -> Result<Accepted, AcceptError> {
        let passphrase = match (&link.passphrase, passphrase) {
            (Some(_), Some(_)) => return Err(AcceptError::PassphraseConflict),
            (Some(p), None) => p.clone(),
            (None, Some(p)) => p,
            (None, None) => return Err(AcceptError::PassphraseRequired),
        };
        // Runs before any network traffic; a link asking for excessive work fails here.
        let key = self
            .derive_key(&passphrase, &link.salt, link.kdf)
            .await
            .map_err(AcceptError::KdfTask)??;
        drop(passphrase);
        if !link.mirrors.is_empty() {
            return self.accept_from_any(link, key).await;
        }
        let fetched = self.fetch_at(&link.server, link.locator).await?;
        let tried = fetched.links.len();
        tracing::debug!(entries = tried, "bucket fetched; trial decryption");
        match seal::trial_open(&key, &fetched.links) {
            Some((index, opened)) => Ok(Accepted {
                payload: opened.payload,
                tried,
                index,
                reply: opened.answer_to.map(|to| ReplyTo {
                    servers: vec![link.server.clone()],
                    fetched_from: Some(0),
                    mailboxes: opened.mailboxes,
                    key,
                    to,
                }),
                links_verified: fetched.verified,
            }),
            None => Err(AcceptError::NoMatch { tried }),
        }
    }

    /// How many entries of the link's bucket carry a valid stamp (the least over the copies of a
    /// multi-server link, each fetched once, a pause apart): at least what an accepter would be
    /// told, whichever copy it fetches. For an initiator, one fetch of its own bucket, timed like an
    /// accept (say, when the bucket closes). `None` from a server without stamps.
    pub async fn verified_links(&self, link: &RdvLink) -> Result<Option<usize>, AcceptError> {
        if !link.mirrors.is_empty() {
            return self.verified_copies(link).await;
        }
        Ok(self.fetch_at(&link.server, link.locator).await?.verified)
    }

    pub(crate) async fn fetch_at(
        &self,
        server: &ServerAddr,
        locator: crate::proto::Locator,
    ) -> Result<Fetched, AcceptError> {
        let fetch = Request::Fetch { locator };
        match self.request_any(server, &fetch).await {
            // A server that speaks stamps must show them: a plain bucket would hide how many of
            // its entries are real behind "this server has no stamps".
            Ok((Response::Bucket { .. }, v)) if v >= STAMP_VERSION => {
                Err(ConnectionError::Protocol(format!(
                    "a bucket without stamps on a version {v} connection"
                ))
                .into())
            }
            Ok((Response::Bucket { links }, _)) => {
                a_full_bucket(links.len())?;
                Ok(Fetched {
                    links,
                    verified: None,
                })
            }
            Ok((Response::StampedBucket { seed, entries }, v)) if v >= STAMP_VERSION => {
                a_full_bucket(entries.len())?;
                let min = self.config.policy.min_effort;
                let (entries, verified) =
                    count_off_runtime(ServerName::of(server), locator, seed, entries, min)
                        .await
                        .map_err(AcceptError::StampTask)?;
                Ok(Fetched {
                    links: entries.into_iter().map(|e| e.link).collect(),
                    verified: Some(verified),
                })
            }
            Ok((r, _)) => Err(unexpected("Bucket", &r).into()),
            Err(ConnectionError::Server {
                code: ErrorCode::NotFound,
                ..
            }) => Err(AcceptError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    /// Delete the link stored with `token` from the link's bucket (from every server's, for a
    /// multi-server link).
    pub async fn delete(&self, link: &RdvLink, token: &DeleteToken) -> Result<(), DeleteError> {
        if !link.mirrors.is_empty() {
            return self.delete_everywhere(link, token).await;
        }
        self.delete_at(&link.server, link.locator, token).await
    }

    pub(crate) async fn delete_at(
        &self,
        server: &ServerAddr,
        locator: crate::proto::Locator,
        token: &DeleteToken,
    ) -> Result<(), DeleteError> {
        let delete = Request::Delete {
            locator,
            token: token.clone(),
        };
        match self.request_any(server, &delete).await.map(|(r, _)| r) {
            Ok(Response::Deleted) => Ok(()),
            Ok(r) => Err(unexpected("Deleted", &r).into()),
            Err(ConnectionError::Server {
                code: ErrorCode::NotFound,
                ..
            }) => Err(DeleteError::NothingToDelete),
            Err(e) => Err(e.into()),
        }
    }
}

/// Generate a strong passphrase (five pronounceable words, 80 bits).
pub fn generate_passphrase() -> Passphrase {
    let mut r = [0u8; crate::proto::words::RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut r);
    let p = crate::proto::words::passphrase(r);
    zeroize::Zeroize::zeroize(&mut r);
    p
}

#[cfg(test)]
mod tests {
    use super::clock_ahead;
    use std::time::Duration;

    /// The difference is counted halfway through the request, less what half the round trip and
    /// the server's whole seconds can account for: a slow circuit alone never makes a clock look
    /// off, whichever way.
    #[test]
    fn a_clock_difference_is_counted_net_of_the_round_trip() {
        let s = Duration::from_secs_f64;
        // Sent at 100, answered at 102 (a 2 s round trip): the server's moment, 85.0-86.0, is
        // 15.5 s before the midpoint, of which 1.5 s could be the round trip and the rounding.
        assert_eq!(clock_ahead(s(100.0), s(102.0), 85), 14);
        assert_eq!(clock_ahead(s(100.0), s(102.0), 120), -18);
        // A server that answers the second the request was sent, over a round trip of 20 s:
        // nothing is off.
        assert_eq!(clock_ahead(s(100.0), s(120.0), 100), 0);
        assert_eq!(clock_ahead(s(100.0), s(120.0), 119), 0);
        // Any time a server claims: no overflow.
        assert_eq!(clock_ahead(s(100.0), s(100.1), u64::MAX), -i64::MAX);
        assert_eq!(clock_ahead(s(1e12), s(1e12), 0), 999_999_999_999);
    }
}
