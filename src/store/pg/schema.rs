//! The database layout: tables, the meta row, creation and verification.
//!
//! Tables (all names start with `rdv_`, so that the database can hold other things):
//! - `rdv_meta`: one row (`id = 1`): the format version, the filler secret, the store settings
//!   every frontend must share, the link, answer and mark counters, the newest bucket ID, the GC
//!   floor and the stamped stream's open bucket (ID and links assigned to it);
//! - `rdv_free_open`: at most one row, the open bucket of stores without a stamp (ID and links
//!   assigned to it), created when missing (a database of an earlier version gets it at the next
//!   start);
//! - `rdv_buckets`: locator → postcard bucket (the same bytes as the redb store's), with its ID
//!   and its numbers of links and of deleted links' marks in columns for the allocator and for
//!   garbage collection (the marks' columns are added to a database of an earlier version at
//!   the next start);
//! - `rdv_mailboxes`: mailbox address → postcard answer, with its creation time in a column;
//! - `rdv_expiry_hold`: at most one row, the cluster's expiry hold (`crate::store::hold`),
//!   created when missing (a database of an earlier version gets it at the next start).

use crate::proto::padding::FillerSecret;
use crate::proto::BucketId;
use crate::store::codec::{decode, decode_answer};
use crate::store::{StoreError, StoreParams};
use tokio_postgres::{Client, GenericClient, Row};

/// The layout this code reads and writes.
const FORMAT_VERSION: i32 = 1;

/// Session advisory lock held while the tables are created, so that frontends starting at once
/// do not race on `CREATE TABLE` ("rdv" in ASCII).
const INIT_LOCK: i64 = 0x0072_6476;

const CREATE: &str = "
CREATE TABLE IF NOT EXISTS rdv_meta (
    id integer PRIMARY KEY CHECK (id = 1),
    format integer NOT NULL,
    filler bytea NOT NULL CHECK (length(filler) = 32),
    open_window bigint NOT NULL,
    ttl bigint NOT NULL,
    max_seq integer NOT NULL,
    max_links bigint,
    bucket_capacity integer NOT NULL,
    links bigint NOT NULL CHECK (links >= 0),
    answers bigint NOT NULL CHECK (answers >= 0),
    last_created bigint,
    last_seq integer,
    gc_floor bigint,
    open_created bigint,
    open_seq integer,
    open_count integer,
    marks bigint NOT NULL DEFAULT 0 CHECK (marks >= 0),
    stamp_effort bigint CHECK (stamp_effort > 0)
);
CREATE TABLE IF NOT EXISTS rdv_buckets (
    locator bytea PRIMARY KEY,
    created bigint NOT NULL,
    seq integer NOT NULL,
    links integer NOT NULL CHECK (links >= 0),
    marks integer NOT NULL DEFAULT 0 CHECK (marks >= 0),
    body bytea NOT NULL,
    UNIQUE (created, seq)
);
CREATE TABLE IF NOT EXISTS rdv_mailboxes (
    mailbox bytea PRIMARY KEY,
    created bigint NOT NULL,
    body bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS rdv_mailboxes_created ON rdv_mailboxes (created);
";

/// The expiry hold (one row at most; see `crate::store::hold`), a table of its own so that a
/// database created before it gets it without touching the tables running frontends write to.
const CREATE_HOLD: &str = "
CREATE TABLE IF NOT EXISTS rdv_expiry_hold (
    id integer PRIMARY KEY CHECK (id = 1),
    hold_from bigint NOT NULL CHECK (hold_from >= 0),
    hold_to bigint NOT NULL CHECK (hold_to >= hold_from),
    credit bigint NOT NULL CHECK (credit >= 0)
);
";
/// The open bucket of stores without a stamp (one row at most), a table of its own for the same
/// reason as the expiry hold's.
const CREATE_FREE: &str = "
CREATE TABLE IF NOT EXISTS rdv_free_open (
    id integer PRIMARY KEY CHECK (id = 1),
    created bigint NOT NULL CHECK (created >= 0),
    seq integer NOT NULL CHECK (seq >= 0),
    count integer NOT NULL CHECK (count >= 0)
);
";
/// No open bucket of stores without a stamp.
pub(super) const CLEAR_FREE: &str = "DELETE FROM rdv_free_open WHERE id = 1";
/// Set the open bucket of stores without a stamp.
pub(super) const WRITE_FREE: &str = "INSERT INTO rdv_free_open (id, created, seq, count) \
     VALUES (1, $1, $2, $3) ON CONFLICT (id) DO UPDATE SET created = EXCLUDED.created, \
     seq = EXCLUDED.seq, count = EXCLUDED.count";
/// The expiry hold in force, if any.
pub(super) const GET_HOLD: &str =
    "SELECT hold_from, hold_to, credit FROM rdv_expiry_hold WHERE id = 1";
/// Merge a hold into the one in force; returns the result.
pub(super) const MERGE_HOLD: &str = "INSERT INTO rdv_expiry_hold (id, hold_from, hold_to, credit) \
     VALUES (1, $1, $2, $3) ON CONFLICT (id) DO UPDATE SET \
     hold_from = LEAST(rdv_expiry_hold.hold_from, EXCLUDED.hold_from), \
     hold_to = GREATEST(rdv_expiry_hold.hold_to, EXCLUDED.hold_to), \
     credit = GREATEST(rdv_expiry_hold.credit, EXCLUDED.credit) \
     RETURNING hold_from, hold_to, credit";
/// End the hold in force.
pub(super) const END_HOLD: &str = "DELETE FROM rdv_expiry_hold WHERE id = 1";

/// The hold in a row of [`GET_HOLD`] or [`MERGE_HOLD`].
pub(super) fn hold_from_row(
    row: &tokio_postgres::Row,
) -> Result<crate::store::ExpiryHold, StoreError> {
    let get = |i: usize| -> Result<u64, StoreError> {
        u64::try_from(row.try_get::<_, i64>(i)?)
            .map_err(|e| StoreError::corrupt("a negative time in the expiry hold", e))
    };
    Ok(crate::store::ExpiryHold::new(get(0)?, get(1)?, get(2)?))
}

/// The meta row, locked, and the transaction's ID (to ask about its fate if the answer to its
/// commit is lost).
pub(super) const LOCK_META: &str = "SELECT links, answers, last_created, last_seq, gc_floor, \
     open_created, open_seq, open_count, marks, txid_current() FROM rdv_meta WHERE id = 1 FOR UPDATE";
/// The meta row without locking it.
const READ_META: &str = "SELECT links, answers, last_created, last_seq, gc_floor, \
     open_created, open_seq, open_count, marks FROM rdv_meta WHERE id = 1";
/// The open bucket of stores without a stamp. Read in a statement of its own once the meta row
/// is locked (whose lock guards it): joined to the locking statement, a transaction that waited
/// for the lock saw the row as it was before the holder's commit, and opened a bucket too many
/// (`tests/pg_store.rs` caught it: 50 links through three frontends in 3 buckets).
pub(super) const READ_FREE: &str = "SELECT created, seq, count FROM rdv_free_open WHERE id = 1";
pub(super) const WRITE_META: &str = "UPDATE rdv_meta SET links = $1, answers = $2, \
     last_created = $3, last_seq = $4, gc_floor = $5, open_created = $6, open_seq = $7, \
     open_count = $8, marks = $9 WHERE id = 1";
pub(super) const GET_BUCKET: &str = "SELECT body FROM rdv_buckets WHERE locator = $1";
pub(super) const MAX_SEQ: &str = "SELECT max(seq) FROM rdv_buckets WHERE created = $1";
pub(super) const INSERT_BUCKET: &str =
    "INSERT INTO rdv_buckets (locator, created, seq, links, body) VALUES ($1, $2, $3, 0, $4)";
pub(super) const UPDATE_BUCKET: &str =
    "UPDATE rdv_buckets SET links = $2, body = $3, marks = $4 WHERE locator = $1";
pub(super) const GET_ANSWER: &str = "SELECT created, body FROM rdv_mailboxes WHERE mailbox = $1";
pub(super) const DELETE_ANSWER: &str = "DELETE FROM rdv_mailboxes WHERE mailbox = $1";
pub(super) const INSERT_ANSWER: &str =
    "INSERT INTO rdv_mailboxes (mailbox, created, body) VALUES ($1, $2, $3)";
/// Oldest first, at most `$2`. The columns are enough: a body that no longer decodes does not
/// stop garbage collection (which would fail every batch holding a GC, on every frontend).
pub(super) const GC_BUCKETS: &str = "DELETE FROM rdv_buckets WHERE locator IN \
     (SELECT locator FROM rdv_buckets WHERE created <= $1 ORDER BY created, seq LIMIT $2) \
     RETURNING created, links, marks";
pub(super) const GC_ANSWERS: &str = "DELETE FROM rdv_mailboxes WHERE mailbox IN \
     (SELECT mailbox FROM rdv_mailboxes WHERE created <= $1 ORDER BY created LIMIT $2) \
     RETURNING created";

/// The meta row's changing part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Meta {
    pub(super) links: u64,
    pub(super) answers: u64,
    /// Marks of deleted links kept.
    pub(super) marks: u64,
    /// The newest bucket ID ever handed out.
    pub(super) last: Option<BucketId>,
    /// The newest creation second of a collected bucket.
    pub(super) floor: Option<u64>,
    /// The stamped stream's open bucket and the links assigned to it.
    pub(super) open: Option<(BucketId, usize)>,
    /// The open bucket of stores without a stamp and the links assigned to it (not in the
    /// meta row: [`read_free`]).
    pub(super) free: Option<(BucketId, usize)>,
}

/// A time or counter as PostgreSQL's `bigint`.
pub(super) fn int(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt {
        what: "a time or counter is beyond what the database column holds",
        source: None,
    })
}

/// A `bigint` read back as unsigned.
fn uint(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt {
        what: "a negative time or counter in the database",
        source: None,
    })
}

/// A sequence number read back.
fn seq(v: i32) -> Result<u16, StoreError> {
    u16::try_from(v).map_err(|_| StoreError::Corrupt {
        what: "a bucket sequence number out of range in the database",
        source: None,
    })
}

fn id(created: Option<i64>, s: Option<i32>) -> Result<Option<BucketId>, StoreError> {
    Ok(match (created, s) {
        (Some(c), Some(s)) => Some(BucketId {
            created: uint(c)?,
            seq: seq(s)?,
        }),
        _ => None,
    })
}

/// An open bucket from the columns `at`, `at + 1` (its ID) and `at + 2` (its count).
fn open_from_row(r: &Row, at: usize) -> Result<Option<(BucketId, usize)>, StoreError> {
    Ok(match id(r.try_get(at)?, r.try_get(at + 1)?)? {
        Some(b) => {
            let n: Option<i32> = r.try_get(at + 2)?;
            let n = usize::try_from(n.unwrap_or(0)).map_err(|_| StoreError::Corrupt {
                what: "a negative open-bucket count in the database",
                source: None,
            })?;
            Some((b, n))
        }
        None => None,
    })
}

/// The meta row as [`LOCK_META`] selects it.
pub(super) fn meta_from_row(r: &Row) -> Result<Meta, StoreError> {
    let open = open_from_row(r, 5)?;
    Ok(Meta {
        links: uint(r.try_get(0)?)?,
        answers: uint(r.try_get(1)?)?,
        marks: uint(r.try_get(8)?)?,
        last: id(r.try_get(2)?, r.try_get(3)?)?,
        floor: r.try_get::<_, Option<i64>>(4)?.map(uint).transpose()?,
        open,
        free: None,
    })
}

/// Write the meta row's changing part (inside the transaction that locked it).
pub(super) async fn write_meta(
    t: &impl GenericClient,
    stmt: &tokio_postgres::Statement,
    m: &Meta,
) -> Result<(), StoreError> {
    let links = int(m.links)?;
    let answers = int(m.answers)?;
    let marks = int(m.marks)?;
    let last_created = m.last.map(|b| int(b.created)).transpose()?;
    let last_seq = m.last.map(|b| i32::from(b.seq));
    let floor = m.floor.map(int).transpose()?;
    let open_created = m.open.map(|(b, _)| int(b.created)).transpose()?;
    let open_seq = m.open.map(|(b, _)| i32::from(b.seq));
    let open_count = m.open.map(|(_, n)| i32::try_from(n).unwrap_or(i32::MAX));
    t.execute(
        stmt,
        &[
            &links,
            &answers,
            &last_created,
            &last_seq,
            &floor,
            &open_created,
            &open_seq,
            &open_count,
            &marks,
        ],
    )
    .await?;
    Ok(())
}

/// The open bucket of stores without a stamp ([`READ_FREE`], once the meta row is locked).
pub(super) async fn read_free(
    t: &impl GenericClient,
    stmt: &(impl tokio_postgres::ToStatement + Send + Sync + ?Sized),
) -> Result<Option<(BucketId, usize)>, StoreError> {
    match t.query_opt(stmt, &[]).await? {
        Some(r) => open_from_row(&r, 0),
        None => Ok(None),
    }
}

/// Write the open bucket of stores without a stamp (inside the transaction that locked the meta
/// row).
/// ([`WRITE_FREE`], or [`CLEAR_FREE`] for none).
pub(super) async fn write_free(
    t: &impl GenericClient,
    (write, clear): (&tokio_postgres::Statement, &tokio_postgres::Statement),
    free: Option<(BucketId, usize)>,
) -> Result<(), StoreError> {
    match free {
        Some((id, n)) => {
            let n = i32::try_from(n).unwrap_or(i32::MAX);
            t.execute(write, &[&int(id.created)?, &i32::from(id.seq), &n])
                .await?;
        }
        None => {
            t.execute(clear, &[]).await?;
        }
    }
    Ok(())
}

/// Columns added to the tables of [`CREATE`] since the first version: (table, column, type
/// and constraints).
const ADDED_COLUMNS: [(&str, &str, &str); 3] = [
    (
        "rdv_meta",
        "marks",
        "bigint NOT NULL DEFAULT 0 CHECK (marks >= 0)",
    ),
    (
        "rdv_buckets",
        "marks",
        "integer NOT NULL DEFAULT 0 CHECK (marks >= 0)",
    ),
    (
        "rdv_meta",
        "stamp_effort",
        "bigint CHECK (stamp_effort > 0)",
    ),
];

/// Count the marks a database of a version before they were counted holds, into each bucket's
/// column just added (their sum goes into the meta row right after, [`repair_mark_count`]). A
/// bucket that does not decode counts none.
async fn count_old_marks(t: &tokio_postgres::Transaction<'_>) -> Result<(), StoreError> {
    use futures::TryStreamExt;
    // Row by row (every body at once would be the whole store in memory), keeping only the
    // buckets with marks.
    let rows = t
        .query_raw(
            "SELECT locator, body FROM rdv_buckets",
            std::iter::empty::<i32>(),
        )
        .await?;
    futures::pin_mut!(rows);
    let (mut read, mut marked) = (0u64, Vec::new());
    while let Some(row) = rows.try_next().await? {
        read += 1;
        let Ok(b) = decode(row.try_get(1)?) else {
            continue;
        };
        if !b.gone.is_empty() {
            let locator: Vec<u8> = row.try_get(0)?;
            marked.push((locator, i32::try_from(b.gone.len()).unwrap_or(i32::MAX)));
        }
    }
    let mut total = 0i64;
    for (locator, marks) in &marked {
        t.execute(
            "UPDATE rdv_buckets SET marks = $2 WHERE locator = $1",
            &[locator, marks],
        )
        .await?;
        total += i64::from(*marks);
    }
    tracing::info!(
        buckets = read,
        with_marks = marked.len(),
        marks = total,
        "counted the deleted links' marks the shared database held"
    );
    Ok(())
}

/// Set the meta row's count of marks to the sum of the buckets' (a cheap read of one column),
/// if they disagree: a frontend of a version that does not count marks, run since (going back
/// to it, or one left running through an upgrade), collected buckets holding marks without
/// counting them off, and the quota stayed taken by marks that were gone. (Marks it added to a
/// bucket stay out of the bucket's column until that bucket is written again.) The meta row is
/// locked first, as every write does, so no write changes the buckets meanwhile. Whether the
/// count changed.
async fn repair_mark_count(t: &tokio_postgres::Transaction<'_>) -> Result<bool, StoreError> {
    t.query_one("SELECT marks FROM rdv_meta WHERE id = 1 FOR UPDATE", &[])
        .await?;
    let fixed = t
        .execute(
            "UPDATE rdv_meta SET marks = s.sum FROM \
             (SELECT coalesce(sum(marks), 0)::bigint AS sum FROM rdv_buckets) s \
             WHERE id = 1 AND marks <> s.sum",
            &[],
        )
        .await?;
    Ok(fixed > 0)
}

/// Record `effort` as the cluster's stamp effort if none is yet; refuse it if another is.
async fn record_stamp_effort(
    t: &tokio_postgres::Transaction<'_>,
    effort: u32,
) -> Result<(), StoreError> {
    let effort = i64::from(effort);
    let recorded: Option<i64> = t
        .query_one("SELECT stamp_effort FROM rdv_meta WHERE id = 1", &[])
        .await?
        .try_get(0)?;
    match recorded {
        None => {
            t.execute(
                "UPDATE rdv_meta SET stamp_effort = $1 WHERE id = 1",
                &[&effort],
            )
            .await?;
        }
        Some(r) if r != effort => {
            return Err(StoreError::Config(crate::ConfigError::new(
                "stamp_effort",
                format!(
                    "is {effort} here but {r} in the shared database: every frontend of one database must ask the same stamp effort (a client counts a bucket shown full at the effort its challenge asked; change it in rdv_meta with every frontend stopped)"
                ),
            )));
        }
        Some(_) => {}
    }
    Ok(())
}

/// Create the tables if needed and the meta row if this is the first frontend (with
/// `filler_seed` as the filler secret and `params` as the shared settings); check the format
/// and that `params` match the recorded settings. Returns the meta row, the filler secret and
/// the database server's clock (unix seconds).
pub(super) async fn init(
    client: &mut Client,
    params: &StoreParams,
    (capacity, stamp_effort): (usize, Option<u32>),
    filler_seed: FillerSecret,
) -> Result<(Meta, FillerSecret, u64), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&INIT_LOCK])
        .await?;
    let r = init_locked(client, params, (capacity, stamp_effort), filler_seed).await;
    // Also released when the connection closes, should this fail.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&INIT_LOCK])
        .await;
    let r = r?;
    unlocked?;
    Ok(r)
}

async fn init_locked(
    client: &mut Client,
    params: &StoreParams,
    (capacity, stamp_effort): (usize, Option<u32>),
    filler_seed: FillerSecret,
) -> Result<(Meta, FillerSecret, u64), StoreError> {
    let capacity = i32::try_from(capacity).unwrap_or(i32::MAX);
    let t = client.transaction().await?;
    // The tables are created once. Not every start: CREATE INDEX IF NOT EXISTS would lock a
    // table running frontends write to, and a frontend's role need not own the tables.
    for (table, create) in [
        ("rdv_meta", CREATE),
        ("rdv_expiry_hold", CREATE_HOLD),
        ("rdv_free_open", CREATE_FREE),
    ] {
        let exists: bool = t
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await?
            .try_get(0)?;
        if !exists {
            t.batch_execute(create).await?;
        }
    }
    // Columns added since, added to a database of an earlier version (each once: ALTER TABLE
    // locks the table). The marks it holds already are counted then, once. Found as the tables
    // are (`to_regclass`, by the search path), so that a start never alters them again.
    let mut migrating = false;
    let mut count_marks = false;
    for (table, column, definition) in ADDED_COLUMNS {
        let exists: bool = t
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1::text) \
                 AND attname = $2::text AND NOT attisdropped)",
                &[&table, &column],
            )
            .await?
            .try_get(0)?;
        if !exists {
            if !std::mem::replace(&mut migrating, true) {
                // Reading every bucket once takes longer than a statement may otherwise (on a
                // large store, minutes): cut short, it failed every start the same way.
                t.batch_execute("SET LOCAL statement_timeout = 0").await?;
                tracing::info!("adding this version's columns to the shared database (once; every bucket is read to count the deleted links' marks it holds)");
            }
            t.batch_execute(&format!(
                "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {definition}"
            ))
            .await?;
            count_marks |= column == "marks";
        }
    }
    if count_marks {
        count_old_marks(&t).await?;
    }
    let max_links = params.max_links.map(int).transpose()?;
    t.execute(
        "INSERT INTO rdv_meta (id, format, filler, open_window, ttl, max_seq, max_links, bucket_capacity, links, answers) \
         VALUES (1, $1, $2, $3, $4, $5, $6, $7, 0, 0) ON CONFLICT (id) DO NOTHING",
        &[
            &FORMAT_VERSION,
            &filler_seed.expose().as_slice(),
            &int(params.open_window_secs)?,
            &int(params.ttl_secs)?,
            &i32::from(params.max_seq),
            &max_links,
            &capacity,
        ],
    )
    .await?;
    let row = t
        .query_one(
            "SELECT format, filler, open_window, ttl, max_seq, max_links, bucket_capacity FROM rdv_meta WHERE id = 1",
            &[],
        )
        .await?;
    let format: i32 = row.try_get(0)?;
    if format != FORMAT_VERSION {
        return Err(StoreError::Corrupt {
            what: "the database has a store format this version does not know",
            source: None,
        });
    }
    let filler: &[u8] = row.try_get(1)?;
    let filler: [u8; 32] = filler.try_into().map_err(|_| StoreError::Corrupt {
        what: "the filler secret in the database is not 32 bytes",
        source: None,
    })?;
    let recorded = StoreParams {
        open_window_secs: uint(row.try_get(2)?)?,
        ttl_secs: uint(row.try_get(3)?)?,
        max_seq: seq(row.try_get(4)?)?,
        max_links: row.try_get::<_, Option<i64>>(5)?.map(uint).transpose()?,
        // Not recorded: each frontend refuses past the shares it was given (of the one quota).
        ..*params
    };
    check_same(params, &recorded)?;
    let recorded_capacity: i32 = row.try_get(6)?;
    if recorded_capacity != capacity {
        // An isolating (adversarial, testing-only) frontend must never fill an honest
        // cluster's buckets, nor an honest one a test cluster's.
        return Err(StoreError::Config(crate::ConfigError::new(
            "bucket_capacity",
            format!("is {capacity} links per bucket here but {recorded_capacity} in the shared database: a testing-only adversarial frontend and honest ones never share a database"),
        )));
    }
    if let Some(effort) = stamp_effort {
        record_stamp_effort(&t, effort).await?;
    }
    // Just counted by the migration, or wrong.
    if repair_mark_count(&t).await? && !count_marks {
        tracing::warn!("the shared database's count of deleted links' marks disagreed with its buckets (a version that does not count them ran since): counted again");
    }
    let mut meta = meta_from_row(&t.query_one(READ_META, &[]).await?)?;
    meta.free = read_free(&t, READ_FREE).await?;
    let db_now: f64 = t
        .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
        .await?
        .try_get(0)?;
    t.commit().await?;
    warn_on_clock_skew(db_now);
    Ok((
        meta,
        FillerSecret::from_bytes(filler),
        db_now.max(0.0) as u64,
    ))
}

/// Frontends whose clocks disagree split the open bucket (each sees the other's as from the
/// future or past its window): compare ours with the database's, which they all share.
fn warn_on_clock_skew(db_now: f64) {
    use crate::clock::Clock;
    let ours = crate::clock::SystemClock.now() as f64;
    let skew = ours - db_now;
    // 5 s, plus the second our reading is truncated to.
    if skew.abs() > 6.0 {
        tracing::warn!(
            skew_secs = skew.round(),
            "this machine's clock and the database server's differ: frontends with different clocks split the open bucket (and so the anonymity set); keep every frontend's clock synchronized (NTP)"
        );
    }
}

/// Every frontend of one database keeps the same settings: a bucket one of them considers
/// expired must not be served by another, and the quota is one for all.
fn check_same(mine: &StoreParams, recorded: &StoreParams) -> Result<(), StoreError> {
    fn show(v: Option<u64>) -> String {
        v.map_or("no limit".into(), |v| v.to_string())
    }
    let differs: [(&'static str, String, String); 4] = [
        (
            "open_window",
            format!("{} s", mine.open_window_secs),
            format!("{} s", recorded.open_window_secs),
        ),
        (
            "ttl",
            format!("{} s", mine.ttl_secs),
            format!("{} s", recorded.ttl_secs),
        ),
        ("max_links", show(mine.max_links), show(recorded.max_links)),
        (
            "max_seq",
            mine.max_seq.to_string(),
            recorded.max_seq.to_string(),
        ),
    ];
    for (key, a, b) in differs {
        if a != b {
            return Err(StoreError::Config(crate::ConfigError::new(
                key,
                format!(
                    "is {a} here but {b} in the shared database: every frontend of one database must use the same store settings (change them in rdv_meta with every frontend stopped)"
                ),
            )));
        }
    }
    Ok(())
}

/// See [`super::PgStore::verify`].
pub(super) async fn verify(c: &mut Client) -> Result<(u64, u64), StoreError> {
    let t = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let meta = t
        .query_one(
            "SELECT links, answers, marks FROM rdv_meta WHERE id = 1",
            &[],
        )
        .await?;
    let (mut buckets, mut links, mut marks) = (0u64, 0u64, 0u64);
    for row in t
        .query(
            "SELECT locator, created, seq, body, links, marks FROM rdv_buckets",
            &[],
        )
        .await?
    {
        let b = decode(row.try_get(3)?)?;
        if i64::from(row.try_get::<_, i32>(4)?) != b.links.len() as i64 {
            return Err(StoreError::Corrupt {
                what: "a bucket's link count column disagrees with its links",
                source: None,
            });
        }
        if i64::from(row.try_get::<_, i32>(5)?) != b.gone.len() as i64 {
            return Err(StoreError::Corrupt {
                what: "a bucket's mark count column disagrees with its marks",
                source: None,
            });
        }
        marks += b.gone.len() as u64;
        let locator: &[u8] = row.try_get(0)?;
        let columns = BucketId {
            created: uint(row.try_get(1)?)?,
            seq: seq(row.try_get(2)?)?,
        };
        if b.id.locator().0 != locator || columns != b.id {
            return Err(StoreError::Corrupt {
                what: "a bucket is stored under a wrong locator or ID",
                source: None,
            });
        }
        buckets += 1;
        links += b.links.len() as u64;
    }
    if links != uint(meta.try_get(0)?)? {
        return Err(StoreError::Corrupt {
            what: "the link counter disagrees with the stored links",
            source: None,
        });
    }
    if marks != uint(meta.try_get(2)?)? {
        return Err(StoreError::Corrupt {
            what: "the mark counter disagrees with the stored marks",
            source: None,
        });
    }
    let mut answers = 0u64;
    for row in t
        .query("SELECT created, body FROM rdv_mailboxes", &[])
        .await?
    {
        let a = decode_answer(row.try_get(1)?)?;
        if int(a.created)? != row.try_get::<_, i64>(0)? {
            return Err(StoreError::Corrupt {
                what: "an answer's creation time disagrees with its column",
                source: None,
            });
        }
        answers += 1;
    }
    if answers != uint(meta.try_get(1)?)? {
        return Err(StoreError::Corrupt {
            what: "the answer counter disagrees with the stored answers",
            source: None,
        });
    }
    t.commit().await?;
    Ok((buckets, links))
}
