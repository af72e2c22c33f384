//! The on-disk layout: tables, meta keys, the format version, creation and verification.
//!
//! Tables:
//! - `buckets`: locator (32 bytes) → postcard [`StoredBucket`]
//! - `expiry`: (created, seq) → () — bucket IDs in creation order, for garbage collection
//! - `meta`: the format version, the link and answer counters, the newest bucket ID, the GC
//!   floor, the expiry mark (the latest expiry time garbage collection used) and the expiry
//!   hold (`hold_from`, `hold_to`, `hold_credit`, see `crate::store::hold`; keys a database
//!   without a hold lacks, so no format change)
//! - `secrets`: the fetch-padding secret
//! - `mailboxes`: mailbox address (32 bytes) → postcard [`StoredAnswer`]
//! - `mailbox_expiry`: (created, mailbox address) → () — answers in creation order
//!
//! The two mailbox tables came with protocol version 2 without a format change: a database of
//! an older version gets them at its first answer, and until then readers take a missing table
//! for an empty one.

use crate::proto::padding::FillerSecret;
use crate::proto::BucketId;
use crate::store::StoreError;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

pub(super) const BUCKETS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("buckets");
pub(super) const EXPIRY: TableDefinition<(u64, u16), ()> = TableDefinition::new("expiry");
pub(super) const MAILBOXES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("mailboxes");
pub(super) const MAILBOX_EXPIRY: TableDefinition<(u64, [u8; 32]), ()> =
    TableDefinition::new("mailbox_expiry");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SECRETS: TableDefinition<&str, &[u8; 32]> = TableDefinition::new("secrets");

const META_LINKS: &str = "links";
const META_ANSWERS: &str = "answers";
const META_MARKS: &str = "marks";
/// The link count written with `marks`: a version that does not count marks changes the links
/// and not this, and its changes to the marks (buckets it collected) are counted again.
const META_MARKS_LINKS: &str = "marks_links";
const META_LAST_CREATED: &str = "last_created";
const META_LAST_SEQ: &str = "last_seq";
const META_GC_FLOOR: &str = "gc_floor";
const META_EXPIRY_MARK: &str = "expiry_mark";
const META_HOLD_FROM: &str = "hold_from";
const META_HOLD_TO: &str = "hold_to";
const META_HOLD_CREDIT: &str = "hold_credit";
const META_FORMAT: &str = "format";
const SECRET_FILLER: &str = "filler";
/// The on-disk format this code reads and writes.
const FORMAT_VERSION: u64 = 1;

/// The counters kept in the meta table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Meta {
    /// The newest bucket ID ever handed out.
    pub(super) last: Option<BucketId>,
    /// Links stored.
    pub(super) links: u64,
    /// Answers stored.
    pub(super) answers: u64,
    /// Marks of deleted links kept (`None` in a database written before they were counted).
    pub(super) marks: Option<u64>,
    /// The newest creation second of a collected bucket.
    pub(super) floor: Option<u64>,
    /// The latest expiry time garbage collection used (unix seconds).
    pub(super) mark: Option<u64>,
    /// The expiry hold in force ([`crate::store::hold`]).
    pub(super) hold: Option<crate::store::ExpiryHold>,
}

/// The meta data and filler secret of an initialised database, checking its format; `None` for a
/// database whose tables do not exist yet. Reads only, so it works on a full disk.
pub(super) fn read_existing(
    db: &impl ReadableDatabase,
) -> Result<Option<(Meta, FillerSecret)>, StoreError> {
    let r = db.begin_read()?;
    let meta = match r.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match meta.get(META_FORMAT)?.map(|g| g.value()) {
        Some(FORMAT_VERSION) => {}
        None => return Ok(None),
        Some(_) => {
            return Err(StoreError::Corrupt {
                what: "the database has a store format this version does not know",
                source: None,
            })
        }
    }
    let m = counted_marks(&r, read_meta_table(&meta)?)?;
    let secrets = match r.open_table(SECRETS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(filler) = secrets
        .get(SECRET_FILLER)?
        .map(|g| FillerSecret::from_bytes(*g.value()))
    else {
        return Ok(None);
    };
    Ok(Some((m, filler)))
}

/// Create the tables of a new database (or check the format of an existing one) and return its
/// meta data and filler secret; a new database keeps `filler_seed` as its secret. An existing
/// database is only read.
pub(super) fn init(
    db: &Database,
    filler_seed: FillerSecret,
) -> Result<(Meta, FillerSecret), StoreError> {
    if let Some(existing) = read_existing(db)? {
        return Ok(existing);
    }
    let mut w = db.begin_write()?;
    w.set_quick_repair(true);
    let out = init_in(&w, filler_seed)?;
    w.commit()?;
    Ok(out)
}

fn init_in(
    w: &WriteTransaction,
    filler_seed: FillerSecret,
) -> Result<(Meta, FillerSecret), StoreError> {
    w.open_table(BUCKETS)?;
    w.open_table(EXPIRY)?;
    let mut meta = w.open_table(META)?;
    let format = meta.get(META_FORMAT)?.map(|g| g.value());
    match format {
        None => {
            meta.insert(META_FORMAT, FORMAT_VERSION)?;
        }
        Some(FORMAT_VERSION) => {}
        Some(_) => {
            return Err(StoreError::Corrupt {
                what: "the database has a store format this version does not know",
                source: None,
            })
        }
    }
    let mut m = read_meta_table(&meta)?;
    // A database without its meta data or secret yet holds no buckets.
    m.marks.get_or_insert(0);
    let mut secrets = w.open_table(SECRETS)?;
    let existing = secrets
        .get(SECRET_FILLER)?
        .map(|g| FillerSecret::from_bytes(*g.value()));
    let filler = match existing {
        Some(f) => f,
        None => {
            secrets.insert(SECRET_FILLER, filler_seed.expose())?;
            filler_seed
        }
    };
    Ok((m, filler))
}

/// The meta data as last committed.
pub(super) fn read_meta(db: &impl ReadableDatabase) -> Result<Meta, StoreError> {
    let r = db.begin_read()?;
    let t = r.open_table(META)?;
    counted_marks(&r, read_meta_table(&t)?)
}

/// `m` with its count of marks, counted in the buckets if the database does not keep it yet
/// (written before marks were counted; every commit writes it from then on), or if a version
/// that does not count them has written since (the link count is not the one written with the
/// marks). A bucket that does not decode counts none, as for links.
fn counted_marks(r: &redb::ReadTransaction, mut m: Meta) -> Result<Meta, StoreError> {
    if m.marks.is_none() {
        m.marks = Some(match open_optional(r, BUCKETS)? {
            Some(t) => count_links_and_marks(&t)?.1,
            None => 0,
        });
    }
    Ok(m)
}

/// The links and marks of every bucket in `buckets` that decodes (a damaged one counts none).
pub(super) fn count_links_and_marks(
    buckets: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
) -> Result<(u64, u64), StoreError> {
    let (mut links, mut marks) = (0u64, 0u64);
    for row in buckets.iter()? {
        if let Ok(b) = decode(row?.1.value()) {
            links += b.links.len() as u64;
            marks += b.gone.len() as u64;
        }
    }
    Ok((links, marks))
}

fn read_meta_table(meta: &impl ReadableTable<&'static str, u64>) -> Result<Meta, StoreError> {
    let get = |k: &str| -> Result<Option<u64>, StoreError> { Ok(meta.get(k)?.map(|g| g.value())) };
    let last = match (get(META_LAST_CREATED)?, get(META_LAST_SEQ)?) {
        (Some(created), Some(seq)) => Some(BucketId {
            created,
            seq: u16::try_from(seq).map_err(|e| StoreError::corrupt("bad last_seq", e))?,
        }),
        _ => None,
    };
    let links = get(META_LINKS)?.unwrap_or(0);
    // Trusted only if written together with the link count as it is.
    let marks = match (get(META_MARKS)?, get(META_MARKS_LINKS)?) {
        (Some(marks), Some(with)) if with == links => Some(marks),
        _ => None,
    };
    Ok(Meta {
        last,
        links,
        answers: get(META_ANSWERS)?.unwrap_or(0),
        marks,
        floor: get(META_GC_FLOOR)?,
        mark: get(META_EXPIRY_MARK)?,
        hold: match (
            get(META_HOLD_FROM)?,
            get(META_HOLD_TO)?,
            get(META_HOLD_CREDIT)?,
        ) {
            (Some(from), Some(to), Some(credit)) => {
                Some(crate::store::ExpiryHold::new(from, to, credit))
            }
            _ => None,
        },
    })
}

/// Write the meta data inside a write transaction.
pub(super) fn write_meta(w: &WriteTransaction, m: &Meta) -> Result<(), StoreError> {
    let mut meta = w.open_table(META)?;
    meta.insert(META_LINKS, m.links)?;
    meta.insert(META_ANSWERS, m.answers)?;
    if let Some(marks) = m.marks {
        meta.insert(META_MARKS, marks)?;
        meta.insert(META_MARKS_LINKS, m.links)?;
    }
    if let Some(last) = m.last {
        meta.insert(META_LAST_CREATED, last.created)?;
        meta.insert(META_LAST_SEQ, u64::from(last.seq))?;
    }
    if let Some(floor) = m.floor {
        meta.insert(META_GC_FLOOR, floor)?;
    }
    if let Some(mark) = m.mark {
        meta.insert(META_EXPIRY_MARK, mark)?;
    }
    match m.hold {
        Some(h) => {
            meta.insert(META_HOLD_FROM, h.from)?;
            meta.insert(META_HOLD_TO, h.to)?;
            meta.insert(META_HOLD_CREDIT, h.credit)?;
        }
        None => {
            meta.remove(META_HOLD_FROM)?;
            meta.remove(META_HOLD_TO)?;
            meta.remove(META_HOLD_CREDIT)?;
        }
    }
    Ok(())
}

pub(super) use crate::store::codec::{decode, decode_answer, encode, encode_answer};

/// A table of a read transaction, `None` if it does not exist yet.
pub(super) fn open_optional<K: redb::Key + 'static, V: redb::Value + 'static>(
    r: &redb::ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
    match r.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Check that every bucket decodes, sits under its own locator and in the expiry index, and that
/// the link counter agrees; returns (buckets, links).
pub(super) fn verify(db: &impl ReadableDatabase) -> Result<(u64, u64), StoreError> {
    let r = db.begin_read()?;
    let t = r.open_table(BUCKETS)?;
    let e = r.open_table(EXPIRY)?;
    let meta = read_meta_table(&r.open_table(META)?)?;
    let (mut buckets, mut links, mut marks) = (0u64, 0u64, 0u64);
    for row in t.iter()? {
        let (k, v) = row?;
        let b = decode(v.value())?;
        if b.id.locator().0 != *k.value() {
            return Err(StoreError::Corrupt {
                what: "a bucket is stored under a wrong locator",
                source: None,
            });
        }
        if e.get((b.id.created, b.id.seq))?.is_none() {
            return Err(StoreError::Corrupt {
                what: "a bucket is missing from the expiry index",
                source: None,
            });
        }
        buckets += 1;
        links += b.links.len() as u64;
        marks += b.gone.len() as u64;
    }
    if links != meta.links {
        return Err(StoreError::Corrupt {
            what: "the link counter disagrees with the stored links",
            source: None,
        });
    }
    if meta.marks.is_some_and(|m| m != marks) {
        return Err(StoreError::Corrupt {
            what: "the mark counter disagrees with the stored marks",
            source: None,
        });
    }
    let mut answers = 0u64;
    if let Some(m) = open_optional(&r, MAILBOXES)? {
        let e = open_optional(&r, MAILBOX_EXPIRY)?;
        for row in m.iter()? {
            let (k, v) = row?;
            let a = decode_answer(v.value())?;
            let indexed = match &e {
                Some(e) => e.get((a.created, *k.value()))?.is_some(),
                None => false,
            };
            if !indexed {
                return Err(StoreError::Corrupt {
                    what: "an answer is missing from the mailbox expiry index",
                    source: None,
                });
            }
            answers += 1;
        }
    }
    if answers != meta.answers {
        return Err(StoreError::Corrupt {
            what: "the answer counter disagrees with the stored answers",
            source: None,
        });
    }
    Ok((buckets, links))
}
