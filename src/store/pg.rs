//! The shared store: buckets in PostgreSQL, for several `rdv serve` frontends on one database.
//!
//! - [`schema`]: tables, the meta row (counters, allocator state, settings, filler secret),
//!   creation and verification;
//! - [`writer`]: the writer task of one frontend, which groups its concurrent writes into
//!   shared transactions and reconnects by itself after a failure.
//!
//! The semantics are those of the redb store ([`super::DiskStore`]): a write is acknowledged only
//! after the transaction that holds it has committed (PostgreSQL's commit is durable with the
//! server's default `synchronous_commit = on`); a failed transaction fails every operation of its
//! batch and keeps nothing of it. What sharing adds: every write transaction of every frontend
//! first locks the one meta row (`SELECT … FOR UPDATE`), which holds the stamped stream's open
//! bucket, the newest bucket ID, the GC floor and the counters, and guards the row of the free
//! stream's open bucket. So the whole cluster fills one open bucket per stream at a time, bucket IDs are unique and only grow cluster-wide, the quota counts every frontend's
//! links, and garbage collection (part of a write transaction) never runs twice at once. The
//! filler secret is written once, by the first frontend, and read by every other one, so a fetch
//! is padded the same whichever frontend answers.
//!
//! Reads (fetches) go through a few connections of their own and never wait for the lock.

mod fetches;
mod schema;
mod writer;

use super::ops::Op;
use super::{BucketStore, Entry, PutAnswer, StoreError, StoreParams, StoredLink, WriteKind};
use crate::proto::padding::FillerSecret;
use crate::proto::{BucketId, DeleteCheck, Locator, MailboxAddr, SealedAnswer, SealedLink, Stamp};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, NoTls, Statement};

/// How long a statement, a lock wait, an idle transaction or unacknowledged TCP data may last
/// before the database (or the kernel) gives up on it; a batch gets twice this.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(15);

/// Settings of the PostgreSQL store.
#[derive(Clone)]
pub struct PgStoreConfig {
    /// Where the database is (parsed from a `postgres://` URL or a `key=value` string).
    pub database: tokio_postgres::Config,
    /// Retention settings. Every frontend of one database must use the same (the first one
    /// records them; a frontend with others is refused).
    pub params: StoreParams,
    /// Commit every write on its own instead of grouping (only to measure what group commit
    /// saves). Default: `false`.
    pub commit_per_store: bool,
    /// Most operations in one transaction. Default: 1024.
    pub max_batch: usize,
    /// Connections for reads. Default: 4.
    pub read_connections: usize,
    /// Links per bucket before a new one opens. Default: 64. **Testing only** (see
    /// [`super::DiskStoreConfig::bucket_capacity`]).
    pub bucket_capacity: usize,
    /// The stamp effort this frontend asks of stores (`rdv serve --stamp-effort`), which every
    /// frontend of one database must share: a client counts a bucket shown full at the effort its
    /// challenge asked, so a frontend asking less let another's stamps count as unproven. The first
    /// frontend that gives one records it; a frontend asking another is refused. Default: `None`
    /// (not checked, nothing recorded).
    pub stamp_effort: Option<u32>,
}

impl std::fmt::Debug for PgStoreConfig {
    /// Never the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStoreConfig")
            .field("database", &describe(&self.database))
            .field("params", &self.params)
            .field("commit_per_store", &self.commit_per_store)
            .field("max_batch", &self.max_batch)
            .field("read_connections", &self.read_connections)
            .field("bucket_capacity", &self.bucket_capacity)
            .field("stamp_effort", &self.stamp_effort)
            .finish()
    }
}

impl PgStoreConfig {
    /// Settings for the database at `url` (`postgres://USER@HOST:PORT/DBNAME`, a socket
    /// directory as `host=/run/postgresql`, or any connection string PostgreSQL's libpq takes
    /// in those two forms), with the defaults otherwise.
    pub fn new(url: &str) -> Result<Self, crate::ConfigError> {
        let mut database = tokio_postgres::Config::from_str(url).map_err(|e| {
            crate::ConfigError::new(
                "store",
                format!("not a PostgreSQL connection string ({e}); write it like postgres://rdv@127.0.0.1:5432/rdv"),
            )
        })?;
        if database.get_connect_timeout().is_none() {
            database.connect_timeout(Duration::from_secs(10));
        }
        // A database that stops answering is an error, not a hang: TCP gives up on unacknowledged
        // data and on a silent peer within seconds, and the server ends a statement, a lock wait
        // or a transaction left idle (a frontend frozen while holding the meta-row lock) itself.
        database.tcp_user_timeout(SESSION_TIMEOUT);
        database.keepalives_idle(Duration::from_secs(10));
        let ours = format!(
            "-c statement_timeout={ms} -c lock_timeout={ms} -c idle_in_transaction_session_timeout={ms} -c synchronous_commit=on -c default_transaction_isolation=read\\ committed -c client_min_messages=warning",
            ms = SESSION_TIMEOUT.as_millis()
        );
        let options = match database.get_options() {
            Some(theirs) => format!("{theirs} {ours}"),
            None => ours,
        };
        database.options(options);
        Ok(PgStoreConfig {
            database,
            params: StoreParams::default(),
            commit_per_store: false,
            max_batch: 1024,
            read_connections: 4,
            bucket_capacity: crate::proto::MAX_LINKS_PER_BUCKET,
            stamp_effort: None,
        })
    }

    /// Check the settings.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        self.params.validate()?;
        if self.max_batch == 0 {
            return Err(crate::ConfigError::new("max_batch", "must be at least 1"));
        }
        if !(1..=64).contains(&self.read_connections) {
            return Err(crate::ConfigError::new(
                "read_connections",
                "must be from 1 to 64",
            ));
        }
        if !(1..=crate::proto::MAX_LINKS_PER_BUCKET).contains(&self.bucket_capacity) {
            return Err(crate::ConfigError::new(
                "bucket_capacity",
                "must be from 1 to 64",
            ));
        }
        let max_effort = crate::server::ServerConfig::MAX_EFFORT;
        if self
            .stamp_effort
            .is_some_and(|e| !(1..=max_effort).contains(&e))
        {
            return Err(crate::ConfigError::new(
                "stamp_effort",
                format!("must be from 1 to {max_effort}"),
            ));
        }
        if self.database.get_hosts().is_empty() {
            return Err(crate::ConfigError::new(
                "store",
                "the connection string names no host (add @HOST:PORT or host=...)",
            ));
        }
        // rdv speaks to PostgreSQL without TLS: over the network that would hand the password,
        // the filler secret and every answer to whoever is on the path, unless the operator
        // says the path is protected otherwise (a VPN, a tunnel) with sslmode=disable.
        let remote = self.database.get_hosts().iter().find(|h| match h {
            Host::Tcp(name) => !is_loopback(name),
            #[cfg(unix)]
            Host::Unix(_) => false,
        });
        // hostaddr= is where the connection really goes, whatever host= says.
        let remote = self
            .database
            .get_hostaddrs()
            .iter()
            .find(|ip| !ip.is_loopback())
            .map(|ip| ip.to_string())
            .or_else(|| match remote {
                Some(Host::Tcp(name)) => Some(name.clone()),
                _ => None,
            });
        if let (Some(name), false) = (
            remote,
            self.database.get_ssl_mode() == tokio_postgres::config::SslMode::Disable,
        ) {
            return Err(crate::ConfigError::new(
                "store",
                format!("{name} is not a loopback address and rdv connects without TLS: use a Unix socket (host=/run/postgresql), loopback, or a protected path (VPN, SSH tunnel) and say so with sslmode=disable"),
            ));
        }
        Ok(())
    }

    /// The database's address for messages: user, host, port and database name, never the
    /// password.
    pub fn describe(&self) -> String {
        describe(&self.database)
    }
}

/// Whether a host name is a loopback address.
fn is_loopback(name: &str) -> bool {
    name == "localhost"
        || name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `postgres://USER@HOST:PORT/DBNAME`, without the password.
fn describe(c: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            };
            match c.get_ports().get(i).or(c.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    let user = c.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = c.get_dbname().unwrap_or("");
    format!("postgres://{user}{}/{db}", hosts.join(","))
}

/// The database could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to PostgreSQL at {at}")]
struct Connect {
    at: String,
    #[source]
    source: PgError,
}

/// A PostgreSQL error as rdv reports and logs it: the SQLSTATE and the primary message of a
/// database error, never its DETAIL, HINT or CONTEXT, which can quote row values (a key
/// violation names the key: a locator) or the statement.
#[derive(Debug)]
pub(crate) struct PgError {
    code: Option<tokio_postgres::error::SqlState>,
    text: String,
}

impl PgError {
    /// The SQLSTATE of a database error.
    pub(crate) fn code(&self) -> Option<&tokio_postgres::error::SqlState> {
        self.code.as_ref()
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for PgError {}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => PgError {
                code: Some(db.code().clone()),
                text: format!(
                    "database error {} ({}): {}",
                    db.code().code(),
                    db.severity(),
                    db.message()
                ),
            },
            None => {
                // Not from the database (a closed connection, a timeout, an IO error): the
                // whole chain, which holds no row data.
                let mut text = e.to_string();
                let mut cur = std::error::Error::source(&e);
                while let Some(s) = cur {
                    let part = s.to_string();
                    if !text.contains(&part) {
                        text.push_str(": ");
                        text.push_str(&part);
                    }
                    cur = s.source();
                }
                PgError { code: None, text }
            }
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::backend(PgError::from(e))
    }
}

/// PostgreSQL did not answer in time.
#[derive(Debug, thiserror::Error)]
#[error("PostgreSQL did not answer within {} s", 2 * SESSION_TIMEOUT.as_secs())]
pub(super) struct TimedOut;

/// Connect, and run the connection on a task of its own (it ends when the client is dropped or
/// the server goes away).
async fn connect(config: &tokio_postgres::Config) -> Result<Client, StoreError> {
    // The connect timeout covers the TCP handshake only: a server that accepts and then says
    // nothing (stopped, overloaded) would hold the startup exchange forever.
    let connecting = tokio::time::timeout(2 * SESSION_TIMEOUT, config.connect(NoTls));
    let (client, conn) = connecting
        .await
        .map_err(|_| StoreError::backend(TimedOut))?
        .map_err(|source| {
            StoreError::backend(Connect {
                at: describe(config),
                source: source.into(),
            })
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %PgError::from(e), "a PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// A read connection with its prepared statements.
struct ReadConn {
    client: Client,
    bucket: Statement,
    answer: Statement,
    /// The writer's failover count when this connection was made.
    failovers: u64,
}

impl ReadConn {
    async fn open(config: &tokio_postgres::Config) -> Result<Self, StoreError> {
        let client = connect(config).await?;
        let prepare = async {
            let bucket = client.prepare(schema::GET_BUCKET).await?;
            let answer = client.prepare(schema::GET_ANSWER).await?;
            Ok::<_, StoreError>((bucket, answer))
        };
        let (bucket, answer) = tokio::time::timeout(2 * SESSION_TIMEOUT, prepare)
            .await
            .map_err(|_| StoreError::backend(TimedOut))??;
        Ok(ReadConn {
            client,
            bucket,
            answer,
            failovers: 0,
        })
    }
}

/// The read connections, each (re)opened when first needed.
struct Readers {
    config: tokio_postgres::Config,
    slots: Vec<tokio::sync::Mutex<Option<Arc<ReadConn>>>>,
    next: AtomicUsize,
    /// Shared with the writer, whose failovers it counts.
    counters: Arc<writer::Counters>,
}

impl Readers {
    /// A connection, round robin; a closed one is opened again (once: concurrent readers of
    /// the slot wait for that one connection instead of each opening their own).
    async fn get(&self) -> Result<(usize, Arc<ReadConn>), StoreError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        // A connection made before the writer found its server read-only (a failover) may be
        // to the old primary, which no longer sees new writes: it is replaced.
        let failovers = self.counters.failovers.load(Ordering::Acquire);
        if let Some(c) = slot
            .as_ref()
            .filter(|c| !c.client.is_closed() && c.failovers == failovers)
        {
            return Ok((i, c.clone()));
        }
        let mut fresh = ReadConn::open(&self.config).await?;
        fresh.failovers = failovers;
        let fresh = Arc::new(fresh);
        *slot = Some(fresh.clone());
        Ok((i, fresh))
    }

    /// Run a read; if it fails because its connection went away, once more on a fresh one.
    async fn read<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: Fn(Arc<ReadConn>) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let (i, conn) = self.get().await?;
        let f = &f;
        let timed = |conn| async move {
            tokio::time::timeout(2 * SESSION_TIMEOUT, f(conn))
                .await
                .unwrap_or_else(|_| Err(StoreError::backend(TimedOut)))
        };
        match timed(conn.clone()).await {
            Err(StoreError::Backend(_)) if conn.client.is_closed() => {
                self.slots[i].lock().await.take();
                let (_, conn) = self.get().await?;
                timed(conn).await
            }
            Err(StoreError::Backend(e)) if e.is::<TimedOut>() => {
                // Requests queued behind the one that hung would hang too: this slot gets a
                // fresh connection at its next read.
                let mut slot = self.slots[i].lock().await;
                if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                    slot.take();
                }
                Err(StoreError::Backend(e))
            }
            r => r,
        }
    }
}

/// The PostgreSQL-backed store of one frontend. Cheap to clone; its writer task ends when the
/// last clone is dropped (after finishing what is queued).
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    readers: Readers,
    tx: mpsc::Sender<Op>,
    params: StoreParams,
    filler: FillerSecret,
    counters: Arc<writer::Counters>,
    describe: String,
    /// The database server's clock when the store was opened: the cluster's shared measure of
    /// time, from which a frontend starts its expiry clock.
    db_clock_at_open: u64,
    /// Fetch times sent to and heard from the other frontends.
    fetches: Arc<fetches::Shared>,
}

/// The cluster's expiry hold read again (another frontend may have set it since this one last
/// looked): asked only when something looks expired, which is rare.
async fn fresh_hold<'c>(
    client: &tokio_postgres::Client,
    counters: &'c writer::Counters,
) -> Result<&'c super::hold::HoldCell, StoreError> {
    let h = match client.query_opt(schema::GET_HOLD, &[]).await? {
        Some(row) => Some(schema::hold_from_row(&row)?),
        None => None,
    };
    counters.hold.set(h);
    Ok(&counters.hold)
}

impl PgStore {
    /// The unexpired bucket at `locator`, from committed state (a reader connection).
    async fn read_bucket(
        &self,
        locator: Locator,
        now: u64,
    ) -> Result<Option<super::StoredBucket>, StoreError> {
        let ttl = self.inner.params.ttl_secs;
        let counters = &self.inner.counters;
        self.inner
            .readers
            .read(|c| async move {
                let key: &[u8] = &locator.0;
                let Some(row) = c.client.query_opt(&c.bucket, &[&key]).await? else {
                    return Ok(None);
                };
                let b = super::codec::decode(row.try_get::<_, &[u8]>(0)?)?;
                if b.id.locator() != locator {
                    return Err(StoreError::Corrupt {
                        what: "a bucket is stored under a wrong locator",
                        source: None,
                    });
                }
                let expired = |hold: &super::hold::HoldCell| b.expired(hold.apply(now, ttl), ttl);
                if expired(&counters.hold) && expired(fresh_hold(&c.client, counters).await?) {
                    return Ok(None);
                }
                Ok(Some(b))
            })
            .await
    }

    /// Connect to the database, create the tables if they do not exist yet, and start the
    /// writer. `filler_seed` becomes the fetch-padding secret if this is the database's first
    /// frontend; otherwise the secret already there is used.
    pub async fn open(
        config: PgStoreConfig,
        filler_seed: FillerSecret,
    ) -> Result<Self, StoreError> {
        config.validate()?;
        let mut client = connect(&config.database).await?;
        let (meta, filler, db_now) = schema::init(
            &mut client,
            &config.params,
            (config.bucket_capacity, config.stamp_effort),
            filler_seed,
        )
        .await?;
        let hold = match client.query_opt(schema::GET_HOLD, &[]).await? {
            Some(row) => Some(schema::hold_from_row(&row)?),
            None => None,
        };
        let counters = Arc::new(writer::Counters {
            hold: super::hold::HoldCell::new(hold),
            links: AtomicU64::new(meta.links),
            answers: AtomicU64::new(meta.answers),
            marks: AtomicU64::new(meta.marks),
            read_at: std::sync::Mutex::new(std::time::Instant::now()),
            commits: AtomicU64::new(0),
            opened: Default::default(),
            failovers: AtomicU64::new(0),
        });
        let max_batch = if config.commit_per_store {
            1
        } else {
            config.max_batch
        };
        let (tx, rx) = mpsc::channel(4 * max_batch);
        let w = writer::Writer::new(
            config.database.clone(),
            client,
            config.params,
            config.bucket_capacity,
            max_batch,
            counters.clone(),
        )
        .await?;
        tokio::spawn(w.run(rx));
        let readers = Readers {
            config: config.database.clone(),
            slots: (0..config.read_connections)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            counters: counters.clone(),
        };
        let shared = Arc::<fetches::Shared>::default();
        tokio::spawn(fetches::run(
            config.database.clone(),
            Arc::downgrade(&shared),
            counters.clone(),
            Arc::new(fetches::Sealer::new(&filler)),
        ));
        Ok(PgStore {
            inner: Arc::new(Inner {
                fetches: shared,
                readers,
                tx,
                params: config.params,
                filler,
                counters,
                describe: config.describe(),
                db_clock_at_open: db_now,
            }),
        })
    }

    /// Where the database is (never the password).
    pub fn describe(&self) -> &str {
        &self.inner.describe
    }

    /// Write transactions this frontend committed since it opened the store.
    pub fn commits(&self) -> u64 {
        self.inner.counters.commits.load(Ordering::Relaxed)
    }

    /// Check that every bucket and answer in the database decodes, sits under its own key, and
    /// that the counters of the meta row agree; returns (buckets, links).
    pub async fn verify(&self) -> Result<(u64, u64), StoreError> {
        let mut client = connect(&self.inner.readers.config).await?;
        schema::verify(&mut client).await
    }

    async fn send<T>(
        &self,
        op: Op,
        rx: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        // Bounded as a whole, the wait in the queue behind a batch that hangs included: no
        // write waits longer than the documented limit. (An operation given up on here may
        // still be applied later, as one whose commit answer was lost may have been.)
        let sent = async {
            self.inner
                .tx
                .send(op)
                .await
                .map_err(|_| StoreError::Closed)?;
            // A reply dropped unanswered: the writer gave up on the batch (the database
            // stopped answering, see `SESSION_TIMEOUT`).
            rx.await.map_err(|_| StoreError::backend(TimedOut))?
        };
        tokio::time::timeout(2 * SESSION_TIMEOUT, sent)
            .await
            .map_err(|_| StoreError::backend(TimedOut))?
    }
}

impl BucketStore for PgStore {
    async fn store_in(
        &self,
        link: SealedLink,
        check: DeleteCheck,
        target: Option<(BucketId, Stamp)>,
        now: u64,
    ) -> Result<BucketId, StoreError> {
        let (op, rx) = Op::store(link, check, target, now);
        self.send(op, rx).await
    }

    async fn challenge(&self, now: u64) -> Result<BucketId, StoreError> {
        let (op, rx) = Op::challenge(now);
        self.send(op, rx).await
    }

    async fn fetch_entries(
        &self,
        locator: Locator,
        now: u64,
    ) -> Result<Option<(BucketId, Vec<Entry>)>, StoreError> {
        Ok(self.read_bucket(locator, now).await?.map(|b| {
            let entries = b.links.into_iter().map(StoredLink::entry).collect();
            (b.id, entries)
        }))
    }

    async fn delete(
        &self,
        locator: Locator,
        check: DeleteCheck,
        now: u64,
    ) -> Result<bool, StoreError> {
        // Nothing to delete (no such bucket, expired, no link with this check) is answered from
        // a read of committed state: only a delete that will change something takes the
        // cluster's write lock, so a flood of wrong tokens cannot hold up the cluster's writes.
        // (A store is acknowledged only once committed, so its link is already visible here.)
        let there = self
            .read_bucket(locator, now)
            .await?
            .is_some_and(|b| b.links.iter().any(|l| l.check == check));
        if !there {
            return Ok(false);
        }
        let (op, rx) = Op::delete(locator, check, now);
        self.send(op, rx).await
    }

    async fn put_answer_as(
        &self,
        mailbox: MailboxAddr,
        answer: SealedAnswer,
        now: u64,
        kind: WriteKind,
    ) -> Result<PutAnswer, StoreError> {
        let (op, rx) = Op::put_answer(mailbox, answer, now, kind);
        self.send(op, rx).await
    }

    async fn fetch_answer(
        &self,
        mailbox: MailboxAddr,
        now: u64,
    ) -> Result<Option<SealedAnswer>, StoreError> {
        let ttl = self.inner.params.ttl_secs;
        let counters = &self.inner.counters;
        self.inner
            .readers
            .read(|c| async move {
                let key: &[u8] = &mailbox.0;
                let Some(row) = c.client.query_opt(&c.answer, &[&key]).await? else {
                    return Ok(None);
                };
                let a = super::codec::decode_answer(row.try_get::<_, &[u8]>(1)?)?;
                let expired = |hold: &super::hold::HoldCell| a.expired(hold.apply(now, ttl), ttl);
                if expired(&counters.hold) && expired(fresh_hold(&c.client, counters).await?) {
                    return Ok(None);
                }
                Ok(Some(a.answer))
            })
            .await
    }

    async fn collect_garbage(&self, now: u64, limit: usize) -> Result<usize, StoreError> {
        let (op, rx) = Op::gc(now, limit);
        self.send(op, rx).await
    }

    fn take_opened(&self) -> Vec<BucketId> {
        self.inner.counters.opened.take()
    }

    fn share_fetch(&self, id: BucketId, at: u64) {
        self.inner.fetches.served(id, at);
    }

    fn take_heard_fetches(&self) -> Vec<(BucketId, u64)> {
        self.inner.fetches.take_heard()
    }

    fn params(&self) -> StoreParams {
        self.inner.params
    }

    fn filler_secret(&self) -> &FillerSecret {
        &self.inner.filler
    }

    /// Links stored in the whole database, as of this frontend's last write transaction
    /// (garbage collection runs one every `gc_interval` even when nothing expired).
    fn link_count(&self) -> u64 {
        self.inner.counters.links.load(Ordering::Relaxed)
    }

    fn expiry_mark(&self) -> Option<u64> {
        Some(self.inner.db_clock_at_open)
    }

    fn expiry_hold(&self) -> Option<super::ExpiryHold> {
        self.inner.counters.hold.get()
    }

    async fn hold_expiry(&self, hold: super::ExpiryHold) -> Result<(), StoreError> {
        if self
            .inner
            .counters
            .hold
            .get()
            .is_some_and(|h| h.covers(&hold))
        {
            return Ok(());
        }
        let (op, rx) = Op::hold(hold);
        self.send(op, rx).await
    }

    fn answer_count(&self) -> u64 {
        self.inner.counters.answers.load(Ordering::Relaxed)
    }

    fn mark_count(&self) -> u64 {
        self.inner.counters.marks.load(Ordering::Relaxed)
    }

    /// The counts as of this frontend's last transaction: current for a second. Other
    /// frontends' deletes and collections since then do not show in them.
    fn counts_current(&self) -> bool {
        self.inner.counters.read_within(COUNTS_CURRENT)
    }
}

/// How long the cluster's counts this frontend read in its last transaction stand for the
/// current ones ([`BucketStore::counts_current`]).
const COUNTS_CURRENT: std::time::Duration = std::time::Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let c = PgStoreConfig::new("postgres://rdv:hunter2secret@127.0.0.1:5432/rdvdb").unwrap();
        assert_eq!(c.describe(), "postgres://rdv@127.0.0.1:5432/rdvdb");
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2secret"), "{debug}");
        let kv =
            PgStoreConfig::new("host=/run/postgresql user=rdv password=hunter2secret dbname=x")
                .unwrap();
        assert!(!format!("{kv:?}").contains("hunter2secret"));
        assert_eq!(kv.describe(), "postgres://rdv@/run/postgresql/x");
    }

    #[test]
    fn a_remote_database_without_tls_needs_sslmode_disable() {
        let remote = PgStoreConfig::new("postgres://rdv@db.example:5432/rdv").unwrap();
        let e = remote.validate().unwrap_err();
        assert_eq!(e.key, "store");
        assert!(e.reason.contains("sslmode=disable"), "{}", e.reason);
        // host= says loopback, hostaddr= (where the connection goes) does not.
        let hidden =
            PgStoreConfig::new("host=localhost hostaddr=10.0.0.5 user=rdv dbname=rdv").unwrap();
        let e = hidden.validate().unwrap_err();
        assert!(e.reason.contains("10.0.0.5"), "{}", e.reason);
        PgStoreConfig::new("host=localhost hostaddr=127.0.0.1 user=rdv dbname=rdv")
            .unwrap()
            .validate()
            .unwrap();
        for ok in [
            "postgres://rdv@db.example:5432/rdv?sslmode=disable",
            "postgres://rdv@127.0.0.1:5432/rdv",
            "postgres://rdv@[::1]:5432/rdv",
            "postgres://rdv@localhost/rdv",
            "host=/run/postgresql user=rdv dbname=rdv",
        ] {
            PgStoreConfig::new(ok).unwrap().validate().unwrap();
        }
    }

    #[test]
    fn bad_connection_strings_are_named() {
        let e = PgStoreConfig::new("postgres://[::1").unwrap_err();
        assert_eq!(e.key, "store");
        assert!(e.reason.contains("postgres://"), "{}", e.reason);
        let no_host = PgStoreConfig::new("user=rdv dbname=x").unwrap();
        assert_eq!(no_host.validate().unwrap_err().key, "store");
    }
}
