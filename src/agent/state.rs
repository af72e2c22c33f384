//! The agent's state directory: the secrets of the offers it looks after, and the answers that
//! came for them, each in a file of its own, so that they survive a restart of the agent.
//!
//! ```text
//! STATE/               mode 0700, owned by the agent's user (anything else is refused)
//!   offers/ID.pending  the offer's state (the text form of a pending answer), mode 0600
//!   answers/ID         an answer that came and was not collected yet, mode 0600
//!   deletes/ID         a delete to carry out later: `at UNIX-SECONDS`, `link` (without its
//!                      passphrase), `token` lines
//!   undelivered/ID     a stored link whose reply has not gone out yet (or one taken back whose
//!                      delete failed): `link`, `token`, the `offer` ID and the `delete` IDs
//!                      (one line per copy) kept for it; a start takes the link back (nobody
//!                      received it)
//!   trails/ID          the looks at an answered multi-server offer's other copies
//!                      ([`TrailKept`]): the first answer's digest, each copy's end, and the
//!                      offer's state (its keys), until those looks end; a start resumes them
//!   warnings/ID        what an ended trail found when a copy held another answer
//!                      ([`TrailWarning`], no secret): kept until the warning is forgotten
//!   decoys/ID          a decoy mailbox of the cover traffic ([`DecoyKept`], no secret): its
//!                      server, address and end, so that a start resumes its looks
//!   lock               locked while an agent runs here, mode 0600
//! ```
//!
//! `STATE/lock` and, where the file system allows, the directory itself are locked (`flock`)
//! while an agent runs on it. Files are written to a temporary name (`*.tmp`), synced and
//! renamed, so a crash leaves either the old file or the new one; the temporary files a crash
//! leaves behind, and answers whose offer file is gone, are removed by [`StateDir::sweep`] when
//! an agent starts. Removing a file does not wipe its blocks on disk
//! (docs/THREAT-MODEL.md).

use crate::client::PendingAnswer;

mod decoys;
pub use decoys::DecoyKept;
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Reading or writing failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The directory belongs to another user or others can read it.
    #[error("{}: {why}; the agent keeps secrets there and uses only a directory of its own user that nobody else can read", path.display())]
    NotPrivate {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A state file does not parse.
    #[error("{}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: crate::client::PendingAnswerError,
    },
    /// Another agent runs on this directory.
    #[error("{}: another agent uses this state directory (a second agent needs --state-dir of its own as well as --socket)", path.display())]
    InUse {
        /// The directory.
        path: PathBuf,
    },
    /// An offer ID that the agent never hands out.
    #[error("not an offer ID of this agent: {0:?}")]
    BadId(String),
    /// A delete file does not parse.
    #[error("{}: not a delete file of this agent", path.display())]
    BadDelete {
        /// The file.
        path: PathBuf,
    },
    /// A trail file does not parse.
    #[error("{}: not a trail file of this agent", path.display())]
    BadTrail {
        /// The file.
        path: PathBuf,
    },
    /// A warning file does not parse.
    #[error("{}: not a warning file of this agent", path.display())]
    BadWarning {
        /// The file.
        path: PathBuf,
    },
    /// A decoy file does not parse.
    #[error("{}: not a decoy file of this agent", path.display())]
    BadDecoy {
        /// The file.
        path: PathBuf,
    },
    /// A record of an undelivered link does not parse.
    #[error("{}: not a record of an undelivered link of this agent", path.display())]
    BadUndelivered {
        /// The file.
        path: PathBuf,
    },
}

/// What a look through a part of the state directory found: the files that read, by ID, and
/// why the others could not be used. A file that cannot be read is left in place (it may be
/// the only copy of an offer's secrets) and named, never a reason to stop.
#[derive(Debug)]
pub struct Scan<T> {
    /// The files that read, by ID, in ID order.
    pub kept: Vec<(String, T)>,
    /// The files that did not, with why.
    pub unreadable: Vec<StateError>,
}

/// A delete the agent carries out later, at a moment that has nothing to do with any fetch.
pub struct LaterDelete {
    /// When (unix seconds).
    pub at: u64,
    /// The link, as text.
    pub link: Zeroizing<String>,
    /// Its deletion token, as text.
    pub token: Zeroizing<String>,
}

impl std::fmt::Debug for LaterDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaterDelete")
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

/// The looks at the other copies of an answered multi-server offer (a trail,
/// [`crate::client::Client::trail`]), kept so that a restart resumes them: stopped with the
/// agent, every copy's looks ended in the same moment, and a copy holding someone else's
/// answer was never found.
pub struct TrailKept {
    /// The digest of the answer that opened first.
    pub first: crate::client::AnswerDigest,
    /// Each copy still looked at (its place in the link) and when its looks end (unix
    /// seconds).
    pub until: Vec<(usize, u64)>,
    /// The servers of the copies found holding another answer so far.
    pub differing: Vec<String>,
    /// The offer's state: its copies and keys.
    pub pending: PendingAnswer,
}

impl std::fmt::Debug for TrailKept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrailKept")
            .field("until", &self.until)
            .field("differing", &self.differing)
            .finish_non_exhaustive()
    }
}

/// The first line of a trail file.
const TRAIL_MAGIC: &str = "rdv-trail-1";

impl TrailKept {
    /// The file's text: the magic line, `first HEX`, a `copy PLACE UNTIL` line per copy, a
    /// `differs SERVER` line per copy found holding another answer, a `pending` line and the
    /// offer's state.
    fn text(
        first: &crate::client::AnswerDigest,
        until: &[(usize, u64)],
        differing: &[String],
        pending: &PendingAnswer,
    ) -> Zeroizing<String> {
        let mut t = Zeroizing::new(format!("{TRAIL_MAGIC}\nfirst "));
        for b in first.0 {
            t.push_str(&format!("{b:02x}"));
        }
        t.push('\n');
        for (copy, until) in until {
            t.push_str(&format!("copy {copy} {until}\n"));
        }
        for server in differing {
            t.push_str(&format!("differs {server}\n"));
        }
        t.push_str("pending\n");
        t.push_str(&pending.to_text());
        t
    }

    fn from_text(text: &str) -> Option<Self> {
        let (head, pending) = text.split_once("\npending\n")?;
        let mut lines = head.lines();
        if lines.next()? != TRAIL_MAGIC {
            return None;
        }
        let hex = lines.next()?.strip_prefix("first ")?;
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut first = [0u8; 32];
        for (i, b) in first.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        let pending = PendingAnswer::from_text(pending).ok()?;
        let mut until = Vec::new();
        let mut differing = Vec::new();
        for line in lines {
            if let Some(server) = line.strip_prefix("differs ") {
                differing.push(server_text(server)?);
                continue;
            }
            let mut f = line.strip_prefix("copy ")?.split(' ');
            let (Some(copy), Some(at), None) = (f.next(), f.next(), f.next()) else {
                return None;
            };
            let copy: usize = copy.parse().ok()?;
            if copy >= pending.copies().len() {
                return None;
            }
            until.push((copy, at.parse().ok()?));
        }
        Some(TrailKept {
            first: crate::client::AnswerDigest(first),
            until,
            differing,
            pending,
        })
    }
}

/// A server address as kept in a file: one that parses, in its own text form.
fn server_text(s: &str) -> Option<String> {
    crate::proto::ServerAddr::parse(s)
        .ok()
        .map(|a| a.to_string())
        .filter(|a| a == s)
}

/// What an ended trail found when a copy held another answer than the one collected: someone
/// else holds the link and its passphrase. Kept (no secret in it) so that the warning reaches
/// a user who looks later, after a restart too, until the offer is forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailWarning {
    /// How many other copies were looked at.
    pub copies: usize,
    /// When the looks ended (unix seconds).
    pub ended_at: u64,
    /// The servers of the copies found holding another answer.
    pub differing: Vec<String>,
}

/// The first line of a warning file.
const WARNING_MAGIC: &str = "rdv-warning-1";

impl TrailWarning {
    /// The file's text: the magic line, `copies N`, `ended UNIX-SECONDS`, a `differs SERVER`
    /// line per copy found holding another answer.
    fn text(&self) -> String {
        let mut t = format!(
            "{WARNING_MAGIC}\ncopies {}\nended {}\n",
            self.copies, self.ended_at
        );
        for server in &self.differing {
            t.push_str(&format!("differs {server}\n"));
        }
        t
    }

    fn from_text(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != WARNING_MAGIC {
            return None;
        }
        let copies = lines.next()?.strip_prefix("copies ")?.parse().ok()?;
        let ended_at = lines.next()?.strip_prefix("ended ")?.parse().ok()?;
        let differing = lines
            .map(|l| l.strip_prefix("differs ").and_then(server_text))
            .collect::<Option<Vec<_>>>()?;
        (!differing.is_empty()).then_some(TrailWarning {
            copies,
            ended_at,
            differing,
        })
    }
}

/// A stored link whose reply has not been delivered yet: what takes it back after a crash.
pub struct Undelivered {
    /// The link without its passphrase, as text.
    pub link: Zeroizing<String>,
    /// Its deletion token, as text.
    pub token: Zeroizing<String>,
    /// The ID its offer's state is kept under, if it expects an answer.
    pub offer: Option<String>,
    /// The IDs of the later deletes decided at the offer, one per copy of the link (none if
    /// none was decided).
    pub deletes: Vec<String>,
}

impl std::fmt::Debug for Undelivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Undelivered")
            .field("offer", &self.offer)
            .field("deletes", &self.deletes)
            .finish_non_exhaustive()
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Whether a kept link and deletion token can be used for a delete (one that could not is
/// named as unusable, and its file kept).
fn usable(link: &str, token: &str) -> bool {
    crate::proto::RdvLink::parse(link.trim()).is_ok()
        && crate::proto::DeleteToken::parse(token.trim()).is_some()
}

/// Most bytes of a state file the agent reads (an offer's state, a delete and an answer are all
/// far smaller).
const FILE_LIMIT: u64 = 64 * 1024;

/// The bytes of the state file at `path`, which must be a regular file (not a symlink, which
/// could point anywhere, nor a FIFO, whose open would hang the agent) of at most
/// [`FILE_LIMIT`] bytes.
fn read_state_file(path: &Path) -> std::io::Result<Zeroizing<Vec<u8>>> {
    use std::io::{Error, ErrorKind, Read};
    if !std::fs::symlink_metadata(path)?.file_type().is_file() {
        return Err(Error::new(
            ErrorKind::InvalidData,
            "not a regular file (a link, a pipe, a device?)",
        ));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    std::fs::File::open(path)?
        .take(FILE_LIMIT + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > FILE_LIMIT {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("larger than {FILE_LIMIT} bytes"),
        ));
    }
    Ok(bytes)
}

/// The text of the state file at `path` ([`read_state_file`]), which must be UTF-8.
fn read_state_text(path: &Path) -> std::io::Result<Zeroizing<String>> {
    let bytes = read_state_file(path)?;
    std::str::from_utf8(&bytes)
        .map(|t| Zeroizing::new(t.to_owned()))
        .map_err(|_| std::io::Error::other("not UTF-8 text"))
}

/// Remove the file at `path` if it is there; whether it was.
fn remove_if_present(path: &Path) -> Result<bool, StateError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("removing", path)(e)),
    }
}

/// Remove `dir/name` if it is there, durably: the directory is synced after the removal.
fn remove_synced(dir: &Path, name: &str) -> Result<(), StateError> {
    if remove_if_present(&dir.join(name))? {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing", dir))?;
    }
    Ok(())
}

/// Create `dir` (and its missing parents) with mode 0700 from the start: no moment with the
/// umask's mode, when others could open it.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The agent's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    /// `STATE/lock` and the directory itself, locked while this agent runs: two agents on one
    /// directory would both look for every answer and both carry out every later delete.
    _lock: std::sync::Arc<(std::fs::File, Option<std::fs::File>)>,
}

/// Lock `file` exclusively without waiting: `Ok(false)` when another process holds it.
fn try_lock(file: &std::fs::File) -> std::io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Whether `id` has the form of an offer ID of an agent (`o` and 16 lowercase hex digits).
pub fn is_offer_id(id: &str) -> bool {
    valid_id(id)
}

/// An offer's ID: `o` and 16 lowercase hex digits.
fn valid_id(id: &str) -> bool {
    id.len() == 17
        && id.starts_with('o')
        && id[1..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A new offer ID from 8 random bytes.
pub fn new_id(random: [u8; 8]) -> String {
    let mut s = String::from("o");
    for b in random {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl StateDir {
    /// Open (and create, mode 0700) the state directory at `root`. A directory of another user,
    /// or one others can read or enter, is refused rather than changed.
    pub fn open(root: &Path) -> Result<Self, StateError> {
        if !root.exists() {
            create_private_dir(root).map_err(io("creating", root))?;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(root).map_err(io("reading", root))?;
            let me = rustix::process::getuid().as_raw();
            if m.uid() != me {
                return Err(StateError::NotPrivate {
                    path: root.to_path_buf(),
                    why: format!("it belongs to user {}, not to this one ({me})", m.uid()),
                });
            }
            if m.mode() & 0o077 != 0 {
                return Err(StateError::NotPrivate {
                    path: root.to_path_buf(),
                    why: format!(
                        "its mode is {:o}; others can read or enter it (chmod 700 it)",
                        m.mode() & 0o777
                    ),
                });
            }
        }
        // A lock file (as earlier versions of the agent lock it), and the directory itself
        // where the file system allows it: the file could be removed while the agent runs and
        // a second agent would then lock a new one, but not the directory. (NFS locks only
        // files opened for writing: there the file's lock is the one that holds.)
        let in_use = || StateError::InUse {
            path: root.to_path_buf(),
        };
        let lock_path = root.join("lock");
        let mut o = std::fs::OpenOptions::new();
        o.create(true).truncate(false).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let file = o.open(&lock_path).map_err(io("opening", &lock_path))?;
        if !try_lock(&file).map_err(io("locking", &lock_path))? {
            return Err(in_use());
        }
        let dir_lock = match std::fs::File::open(root) {
            Ok(d) => match try_lock(&d) {
                Ok(true) => Some(d),
                Ok(false) => return Err(in_use()),
                Err(_) => None,
            },
            Err(_) => None,
        };
        let dir = StateDir {
            root: root.to_path_buf(),
            _lock: std::sync::Arc::new((file, dir_lock)),
        };
        for sub in [
            dir.offers(),
            dir.answers(),
            dir.deletes(),
            dir.undelivered(),
            dir.trails(),
            dir.warnings(),
            dir.decoys(),
        ] {
            // Something else in a subdirectory's place (a file, a dangling link) is named as
            // such: "File exists" alone did not say what to do.
            let in_the_way = std::fs::symlink_metadata(&sub).is_ok_and(|m| !m.is_dir());
            create_private_dir(&sub).map_err(io(
                match in_the_way {
                    true => "not a directory (move it away):",
                    false => "creating",
                },
                &sub,
            ))?;
        }
        Ok(dir)
    }

    /// Remove what a crash can leave behind and nothing reads: temporary files of writes that
    /// never finished (they may hold secrets), and answers whose offer file is gone (a collect
    /// or a forget stopped between its two removals; an offer file moved away takes its answer
    /// with it only if moved together). Only this agent runs on the directory. What cannot be
    /// removed is returned, to be named; it stops nothing.
    pub fn sweep(&self) -> Vec<StateError> {
        let mut failed = Vec::new();
        for sub in [
            self.offers(),
            self.answers(),
            self.deletes(),
            self.undelivered(),
            self.trails(),
            self.warnings(),
            self.decoys(),
        ] {
            let entries = match std::fs::read_dir(&sub) {
                Ok(e) => e,
                Err(e) => {
                    failed.push(io("reading", &sub)(e));
                    continue;
                }
            };
            for e in entries.flatten() {
                let path = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                // Gone, not merely unusable (a dangling link is still the user's to repair).
                let offer_gone = || {
                    std::fs::symlink_metadata(self.offers().join(format!("{name}.pending")))
                        .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
                };
                let orphan_answer = sub == self.answers() && valid_id(&name) && offer_gone();
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                if (name.ends_with(".tmp") || orphan_answer) && !is_dir {
                    if let Err(err) = std::fs::remove_file(&path) {
                        failed.push(io("removing", &path)(err));
                    }
                }
            }
        }
        failed
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    fn offers(&self) -> PathBuf {
        self.root.join("offers")
    }

    fn answers(&self) -> PathBuf {
        self.root.join("answers")
    }

    fn deletes(&self) -> PathBuf {
        self.root.join("deletes")
    }

    fn undelivered(&self) -> PathBuf {
        self.root.join("undelivered")
    }

    fn trails(&self) -> PathBuf {
        self.root.join("trails")
    }

    fn warnings(&self) -> PathBuf {
        self.root.join("warnings")
    }

    /// Keep what the ended trail of offer `id` found ([`TrailWarning`]).
    pub fn save_warning(&self, id: &str, warning: &TrailWarning) -> Result<(), StateError> {
        if !valid_id(id) {
            return Err(StateError::BadId(id.to_owned()));
        }
        Self::write(&self.warnings().join(id), warning.text().as_bytes())
    }

    /// Every warning kept, by offer ID, and the warning files that cannot be read.
    pub fn warnings_kept(&self) -> Result<Scan<TrailWarning>, StateError> {
        Self::scan(
            &self.warnings(),
            |name| Some(name),
            |path, text| {
                TrailWarning::from_text(text).ok_or_else(|| StateError::BadWarning {
                    path: path.to_path_buf(),
                })
            },
        )
    }

    /// Forget the warning kept for offer `id`; `true` if there was one.
    pub fn forget_warning(&self, id: &str) -> Result<bool, StateError> {
        if !valid_id(id) {
            return Err(StateError::BadId(id.to_owned()));
        }
        let removed = remove_if_present(&self.warnings().join(id))?;
        if removed {
            let _ = std::fs::File::open(self.warnings()).and_then(|d| d.sync_all());
        }
        Ok(removed)
    }

    /// Keep the trail of offer `id` ([`TrailKept`]'s fields).
    pub fn save_trail(
        &self,
        id: &str,
        first: &crate::client::AnswerDigest,
        until: &[(usize, u64)],
        differing: &[String],
        pending: &PendingAnswer,
    ) -> Result<(), StateError> {
        if !valid_id(id) {
            return Err(StateError::BadId(id.to_owned()));
        }
        let text = TrailKept::text(first, until, differing, pending);
        Self::write(&self.trails().join(id), text.as_bytes())
    }

    /// Every trail kept, by offer ID, and the trail files that cannot be read.
    pub fn trails_kept(&self) -> Result<Scan<TrailKept>, StateError> {
        Self::scan(
            &self.trails(),
            |name| Some(name),
            |path, text| {
                TrailKept::from_text(text).ok_or_else(|| StateError::BadTrail {
                    path: path.to_path_buf(),
                })
            },
        )
    }

    /// Forget the trail of offer `id` (its looks ended), with the offer's keys it held.
    pub fn forget_trail(&self, id: &str) -> Result<(), StateError> {
        if !valid_id(id) {
            return Err(StateError::BadId(id.to_owned()));
        }
        let path = self.trails().join(id);
        if remove_if_present(&path)? {
            let dir = self.trails();
            let _ = std::fs::File::open(&dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    fn offer_file(&self, id: &str) -> Result<PathBuf, StateError> {
        if !valid_id(id) {
            return Err(StateError::BadId(id.to_owned()));
        }
        Ok(self.offers().join(format!("{id}.pending")))
    }

    fn answer_file(&self, id: &str) -> Result<PathBuf, StateError> {
        if !valid_id(id) {
            return Err(StateError::BadId(id.to_owned()));
        }
        Ok(self.answers().join(id))
    }

    /// Write `bytes` to `path` as a new private file, atomically.
    fn write(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut f = o.open(&tmp).map_err(io("creating", &tmp))?;
        let written = f
            .write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(io("writing", &tmp))
            .and_then(|()| std::fs::rename(&tmp, path).map_err(io("renaming", path)));
        if let Err(e) = written {
            // A partial copy of a secret is not left behind (a full disk, a failed rename).
            drop(f);
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if let Some(dir) = path.parent() {
            // The rename is durable once the directory is.
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    /// Keep an offer's state under `id`.
    pub fn save_pending(&self, id: &str, pending: &PendingAnswer) -> Result<(), StateError> {
        Self::write(&self.offer_file(id)?, pending.to_text().as_bytes())
    }

    /// Every offer kept, by ID, and the offer files that cannot be read. Only a directory that
    /// cannot be listed is an error.
    pub fn pending(&self) -> Result<Scan<PendingAnswer>, StateError> {
        Self::scan(
            &self.offers(),
            |name| name.strip_suffix(".pending"),
            |path, text| {
                PendingAnswer::from_text(text).map_err(|source| StateError::Corrupt {
                    path: path.to_path_buf(),
                    source,
                })
            },
        )
    }

    /// Read every file of `dir` whose name `id_of` turns into a valid ID with `parse`.
    fn scan<T>(
        dir: &Path,
        id_of: impl Fn(&str) -> Option<&str>,
        parse: impl Fn(&Path, &str) -> Result<T, StateError>,
    ) -> Result<Scan<T>, StateError> {
        let mut scan = Scan {
            kept: Vec::new(),
            unreadable: Vec::new(),
        };
        for e in std::fs::read_dir(dir).map_err(io("reading", dir))? {
            let e = e.map_err(io("reading", dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = id_of(&name).filter(|id| valid_id(id)) else {
                continue;
            };
            let path = e.path();
            let text = match read_state_text(&path) {
                // Removed since the listing (a look that ended, a decoy's file): not unreadable,
                // gone. A dangling link is still there, and named.
                Err(err)
                    if err.kind() == std::io::ErrorKind::NotFound
                        && std::fs::symlink_metadata(&path).is_err() =>
                {
                    continue;
                }
                r => r,
            };
            let read = text
                .map_err(io("reading", &path))
                .and_then(|text| parse(&path, &text));
            match read {
                Ok(v) => scan.kept.push((id.to_owned(), v)),
                Err(e) => scan.unreadable.push(e),
            }
        }
        scan.kept.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(scan)
    }

    /// Keep the answer that came for `id` until it is collected.
    pub fn save_answer(&self, id: &str, answer: &[u8]) -> Result<(), StateError> {
        Self::write(&self.answer_file(id)?, answer)
    }

    /// The answer kept for `id`, if one came.
    pub fn answer(&self, id: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StateError> {
        let path = self.answer_file(id)?;
        match read_state_file(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading", &path)(e)),
        }
    }

    /// The offer kept under `id`, if there is one; an error if its file cannot be used.
    pub fn pending_of(&self, id: &str) -> Result<Option<PendingAnswer>, StateError> {
        let path = self.offer_file(id)?;
        let text = match read_state_text(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("reading", &path)(e)),
        };
        PendingAnswer::from_text(&text)
            .map(Some)
            .map_err(|source| StateError::Corrupt { path, source })
    }

    /// Whether an offer is kept under `id`.
    pub fn has(&self, id: &str) -> bool {
        // Whatever is there, not where it points: a link to nothing is an offer file that
        // cannot be read (`status` names it), and `forget` must be able to remove it.
        self.offer_file(id)
            .is_ok_and(|p| std::fs::symlink_metadata(p).is_ok())
    }

    /// Keep a delete to carry out later under `id`.
    pub fn save_delete(&self, id: &str, d: &LaterDelete) -> Result<(), StateError> {
        if !valid_id(id) {
            return Err(StateError::BadId(id.to_owned()));
        }
        let text = Zeroizing::new(format!(
            "at {}\nlink {}\ntoken {}\n",
            d.at,
            d.link.as_str(),
            d.token.as_str()
        ));
        Self::write(&self.deletes().join(id), text.as_bytes())
    }

    /// Every delete kept, by ID, and the delete files that cannot be read.
    pub fn deletes_kept(&self) -> Result<Scan<LaterDelete>, StateError> {
        Self::scan(
            &self.deletes(),
            |name| Some(name),
            |path, text| {
                let mut at = None;
                let (mut link, mut token) = (None, None);
                for line in text.lines() {
                    match line.split_once(' ') {
                        Some(("at", v)) => at = v.parse().ok(),
                        Some(("link", v)) => link = Some(Zeroizing::new(v.to_owned())),
                        Some(("token", v)) => token = Some(Zeroizing::new(v.to_owned())),
                        _ => {}
                    }
                }
                // A link or a token that does not parse could never be deleted: named, kept.
                match (at, link, token) {
                    (Some(at), Some(link), Some(token)) if usable(&link, &token) => {
                        Ok(LaterDelete { at, link, token })
                    }
                    _ => Err(StateError::BadDelete {
                        path: path.to_path_buf(),
                    }),
                }
            },
        )
    }

    /// Keep the record of a stored link whose reply is not delivered yet, under `id`.
    pub fn save_undelivered(&self, id: &str, u: &Undelivered) -> Result<(), StateError> {
        if !valid_id(id) {
            return Err(StateError::BadId(id.to_owned()));
        }
        let mut text = Zeroizing::new(format!(
            "link {}\ntoken {}\n",
            u.link.as_str(),
            u.token.as_str()
        ));
        let named = u.offer.iter().map(|v| ("offer", v));
        for (name, v) in named.chain(u.deletes.iter().map(|v| ("delete", v))) {
            if !valid_id(v) {
                return Err(StateError::BadId(v.clone()));
            }
            text.push_str(&format!("{name} {v}\n"));
        }
        Self::write(&self.undelivered().join(id), text.as_bytes())
    }

    /// The link's reply was delivered (or it was taken back): its record goes.
    pub fn forget_undelivered(&self, id: &str) -> Result<(), StateError> {
        if !valid_id(id) {
            return Err(StateError::BadId(id.to_owned()));
        }
        // Durable before the reply goes out: a power cut must not bring the record back, and
        // with it the take-back of a link its caller holds.
        remove_synced(&self.undelivered(), id)
    }

    /// Every record of a link stored and never handed over (the agent was killed before its
    /// reply went out), by ID, and the records that cannot be read. Each such link is to be
    /// taken back: nobody received it.
    pub fn undelivered_kept(&self) -> Result<Scan<Undelivered>, StateError> {
        Self::scan(
            &self.undelivered(),
            |name| Some(name),
            |path, text| {
                let bad = || StateError::BadUndelivered {
                    path: path.to_path_buf(),
                };
                let (mut link, mut token, mut offer) = (None, None, None);
                let mut deletes = Vec::new();
                for line in text.lines() {
                    match line.split_once(' ') {
                        Some(("link", v)) => link = Some(Zeroizing::new(v.to_owned())),
                        Some(("token", v)) => token = Some(Zeroizing::new(v.to_owned())),
                        Some(("offer", v)) if valid_id(v) => offer = Some(v.to_owned()),
                        Some(("delete", v)) if valid_id(v) => deletes.push(v.to_owned()),
                        _ => return Err(bad()),
                    }
                }
                match (link, token) {
                    (Some(link), Some(token)) if usable(&link, &token) => Ok(Undelivered {
                        link,
                        token,
                        offer,
                        deletes,
                    }),
                    _ => Err(bad()),
                }
            },
        )
    }

    /// Forget a delete (done, or given up).
    pub fn forget_delete(&self, id: &str) -> Result<(), StateError> {
        if !valid_id(id) {
            return Err(StateError::BadId(id.to_owned()));
        }
        // Durable, as every other forget: a crash must not bring back a delete done, to be
        // sent again at a restart's moment.
        remove_synced(&self.deletes(), id)
    }

    /// Forget the offer `id`: its state file (secrets) and its answer (durably: a power cut
    /// must not bring back an answer that was collected). Its trail, if one runs, keeps its own
    /// copy of the secrets until it ends ([`StateDir::forget_trail`]).
    pub fn forget(&self, id: &str) -> Result<(), StateError> {
        for path in [self.offer_file(id)?, self.answer_file(id)?] {
            if !remove_if_present(&path)? {
                continue;
            }
            if let Some(dir) = path.parent() {
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trail file reads back as written, keys and all; one cut short, or naming a copy the
    /// link does not have, is refused (named as unreadable, never half used).
    #[test]
    fn a_trail_file_reads_back_and_a_broken_one_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let d = StateDir::open(&tmp.path().join("state")).unwrap();
        let zeros = "A".repeat(43);
        let pending = PendingAnswer::from_text(&format!(
            "rdv-pending-answer 3\ncopy 127.0.0.1:1 {zeros} 100\ncopy 127.0.0.1:2 {zeros} 200\n\
             token {zeros}\nkey {zeros}\nsecret {zeros}\nlink-expires 900\n"
        ))
        .unwrap();
        let t = TrailKept {
            first: crate::client::AnswerDigest::of(b"smp://answer"),
            until: vec![(1, 1_800_000_123)],
            differing: vec!["127.0.0.1:2".into()],
            pending,
        };
        let id = new_id([7; 8]);
        d.save_trail(&id, &t.first, &t.until, &t.differing, &t.pending)
            .unwrap();
        let kept = d.trails_kept().unwrap();
        assert!(kept.unreadable.is_empty());
        let (got_id, got) = &kept.kept[0];
        assert_eq!(got_id, &id);
        assert!(got.first == t.first);
        assert_eq!(got.until, t.until);
        assert_eq!(got.differing, t.differing);
        assert_eq!(*got.pending.to_text(), *t.pending.to_text());
        let text = TrailKept::text(&t.first, &t.until, &t.differing, &t.pending);
        let path = d.trails().join(&id);
        for broken in [
            text.replace("copy 1 ", "copy 2 "),
            text.replace("first ", "first 0"),
            text[..text.len() / 2].to_owned(),
            text.replace("\npending\n", "\n"),
            text.replace("differs 127.0.0.1:2", "differs 127.0.0.1:2 x"),
            text.replace("differs 127.0.0.1:2", "differs"),
        ] {
            std::fs::write(&path, broken.as_bytes()).unwrap();
            let kept = d.trails_kept().unwrap();
            assert!(kept.kept.is_empty(), "{broken}");
            assert_eq!(kept.unreadable.len(), 1);
        }
        d.forget_trail(&id).unwrap();
        assert!(d.trails_kept().unwrap().unreadable.is_empty());
    }

    /// A warning file reads back as written; one cut short, naming no server or something
    /// that is not a server, is refused (named as unreadable); a forget removes it once.
    #[test]
    fn a_warning_file_reads_back_and_a_broken_one_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let d = StateDir::open(&tmp.path().join("state")).unwrap();
        let w = TrailWarning {
            copies: 2,
            ended_at: 1_800_000_123,
            differing: vec!["127.0.0.1:2".into(), "[::1]:7625".into()],
        };
        let id = new_id([9; 8]);
        d.save_warning(&id, &w).unwrap();
        let kept = d.warnings_kept().unwrap();
        assert!(kept.unreadable.is_empty());
        assert_eq!(kept.kept, vec![(id.clone(), w.clone())]);
        let text = w.text();
        let path = d.warnings().join(&id);
        for broken in [
            text.replace("differs 127.0.0.1:2\n", "")
                .replace("differs [::1]:7625\n", ""),
            text.replace("127.0.0.1:2", "127.0.0.1:2\u{1b}[2J"),
            text.replace("ended ", "ended -"),
            text[..text.len() / 2].to_owned(),
            text.replace(WARNING_MAGIC, "rdv-warning-2"),
        ] {
            std::fs::write(&path, broken.as_bytes()).unwrap();
            let kept = d.warnings_kept().unwrap();
            assert!(kept.kept.is_empty(), "{broken}");
            assert_eq!(kept.unreadable.len(), 1);
        }
        assert!(d.forget_warning(&id).unwrap());
        assert!(!d.forget_warning(&id).unwrap());
        assert!(d.warnings_kept().unwrap().unreadable.is_empty());
    }

    #[test]
    fn ids_are_checked_so_that_no_path_escapes() {
        let id = new_id([0xab; 8]);
        assert_eq!(id, "oabababababababab");
        assert!(valid_id(&id));
        for bad in [
            "",
            "o",
            "oABABABABABABABAB",
            "o../../etc/passw",
            "xabababababababab",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_others_can_read_is_refused_and_a_new_one_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let fresh = t.path().join("state");
        let d = StateDir::open(&fresh).unwrap();
        let mode = std::fs::metadata(d.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        d.save_answer(&new_id([1; 8]), b"answer").unwrap();
        let f = std::fs::metadata(d.answers().join(new_id([1; 8]))).unwrap();
        assert_eq!(f.permissions().mode() & 0o777, 0o600);
        assert_eq!(&d.answer(&new_id([1; 8])).unwrap().unwrap()[..], b"answer");
        d.forget(&new_id([1; 8])).unwrap();
        assert!(d.answer(&new_id([1; 8])).unwrap().is_none());
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            StateDir::open(&open),
            Err(StateError::NotPrivate { .. })
        ));
        assert!(matches!(d.answer("../x"), Err(StateError::BadId(_))));
        // A delete for later survives as a private file, and reads back.
        let (link, token) = usable();
        let later = LaterDelete {
            at: 1_800_000_123,
            link: Zeroizing::new(link.clone()),
            token: Zeroizing::new(token.clone()),
        };
        d.save_delete(&new_id([2; 8]), &later).unwrap();
        let kept = d.deletes_kept().unwrap().kept;
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].1.at, 1_800_000_123);
        assert_eq!(kept[0].1.link.as_str(), link);
        assert!(!format!("{:?}", kept[0].1).contains(&token));
        d.forget_delete(&new_id([2; 8])).unwrap();
        assert!(d.deletes_kept().unwrap().kept.is_empty());
    }

    /// A link and a deletion token that parse.
    fn usable() -> (String, String) {
        let link = crate::proto::RdvLink {
            server: crate::proto::ServerAddr::parse("127.0.0.1:7625").unwrap(),
            locator: crate::proto::Locator([1; 32]),
            mirrors: Vec::new(),
            salt: crate::proto::Salt::from_bytes([2; crate::proto::kdf::SALT_LEN]),
            kdf: crate::proto::KdfProfile::Test,
            passphrase: None,
        };
        let token = crate::proto::DeleteToken::from_bytes([3; 32]);
        (link.to_uri().to_string(), token.to_text().to_string())
    }

    /// An offer file that is a link to nothing is there for `has` (so that `collect` names it
    /// unreadable and `forget` removes it), not "no such offer" (a helper's attack: `status`
    /// listed it as unreadable, and neither `collect` nor `forget` would touch it).
    #[test]
    fn a_dangling_link_is_an_offer_file_that_forget_removes() {
        let t = tempfile::tempdir().unwrap();
        let d = StateDir::open(&t.path().join("state")).unwrap();
        let id = new_id([9; 8]);
        let file = d.offers().join(format!("{id}.pending"));
        std::os::unix::fs::symlink(t.path().join("nowhere"), &file).unwrap();
        assert!(d.has(&id));
        assert!(d.pending_of(&id).is_err());
        d.forget(&id).unwrap();
        assert!(!d.has(&id));
        assert!(std::fs::symlink_metadata(&file).is_err());
    }

    #[test]
    fn an_unreadable_file_is_named_and_the_others_are_read() {
        let t = tempfile::tempdir().unwrap();
        let d = StateDir::open(&t.path().join("state")).unwrap();
        let (link, token) = usable();
        let good = LaterDelete {
            at: 5,
            link: Zeroizing::new(link),
            token: Zeroizing::new(token.clone()),
        };
        d.save_delete(&new_id([3; 8]), &good).unwrap();
        std::fs::write(d.deletes().join(new_id([4; 8])), "at 5\n").unwrap();
        // Every line there, but a link that could never be deleted.
        let bad_link = format!("at 5\nlink rdv1:x\ntoken {token}\n");
        std::fs::write(d.deletes().join(new_id([6; 8])), bad_link).unwrap();
        std::fs::write(
            d.offers().join(format!("{}.pending", new_id([5; 8]))),
            "junk",
        )
        .unwrap();
        // Not the agent's names: not looked at.
        std::fs::write(d.offers().join("notes.txt"), "junk").unwrap();
        let deletes = d.deletes_kept().unwrap();
        assert_eq!(deletes.kept.len(), 1);
        assert_eq!(deletes.kept[0].0, new_id([3; 8]));
        let mut bad: Vec<_> = deletes
            .unreadable
            .iter()
            .map(|e| match e {
                StateError::BadDelete { path } => path.clone(),
                e => panic!("{e:?}"),
            })
            .collect();
        bad.sort();
        assert_eq!(
            bad,
            [
                d.deletes().join(new_id([4; 8])),
                d.deletes().join(new_id([6; 8]))
            ]
        );
        assert!(d.deletes().join(new_id([6; 8])).exists());
        let offers = d.pending().unwrap();
        assert!(offers.kept.is_empty());
        assert!(matches!(
            offers.unreadable.as_slice(),
            [StateError::Corrupt { .. }]
        ));
        assert!(d
            .offers()
            .join(format!("{}.pending", new_id([5; 8])))
            .exists());
    }

    /// What a crash leaves behind and nothing would read is removed at the next open: the
    /// temporary file of a write that never finished (it may hold an offer's secrets), and an
    /// answer whose offer was forgotten. A write that fails leaves no temporary file either.
    #[test]
    fn a_crash_leaves_no_secret_behind_for_good() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("state");
        let d = StateDir::open(&root).unwrap();
        let (kept, orphan) = (new_id([1; 8]), new_id([2; 8]));
        std::fs::write(d.offers().join(format!("{kept}.pending")), "x").unwrap();
        d.save_answer(&kept, b"kept").unwrap();
        d.save_answer(&orphan, b"orphan").unwrap();
        for sub in [d.offers(), d.answers(), d.deletes(), d.undelivered()] {
            std::fs::write(sub.join(format!("{}.tmp", new_id([3; 8]))), "secret").unwrap();
        }
        // A write that fails (here its rename, onto a directory) removes its temporary file.
        let blocked = new_id([4; 8]);
        std::fs::create_dir_all(d.answers().join(&blocked).join("x")).unwrap();
        assert!(d.save_answer(&blocked, b"answer").is_err());
        assert!(!d.answers().join(format!("{blocked}.tmp")).exists());
        drop(d);
        let d = StateDir::open(&root).unwrap();
        assert!(d.sweep().is_empty());
        for sub in [d.offers(), d.answers(), d.deletes(), d.undelivered()] {
            for e in std::fs::read_dir(&sub).unwrap() {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                assert!(!name.ends_with(".tmp"), "{name} left in {}", sub.display());
            }
        }
        assert_eq!(&d.answer(&kept).unwrap().unwrap()[..], b"kept");
        assert!(
            d.answer(&orphan).unwrap().is_none(),
            "an orphan answer was kept"
        );
    }

    /// The directory itself is locked as well as its lock file: a second agent is refused even
    /// when the lock file was removed, and an agent of an earlier version (which locks only the
    /// file) keeps a new one out. The lock file is private.
    #[test]
    fn a_second_agent_on_one_directory_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("state");
        let d = StateDir::open(&root).unwrap();
        let mode = std::fs::metadata(root.join("lock"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_file(root.join("lock")).unwrap();
        assert!(matches!(
            StateDir::open(&root),
            Err(StateError::InUse { .. })
        ));
        drop(d);
        let old = std::fs::OpenOptions::new()
            .write(true)
            .open(root.join("lock"))
            .unwrap();
        old.try_lock().unwrap();
        assert!(matches!(
            StateDir::open(&root),
            Err(StateError::InUse { .. })
        ));
        drop(old);
        assert!(StateDir::open(&root).is_ok());
    }

    /// The record of a link stored and never handed over reads back as it was written, its
    /// secrets out of `Debug`; a damaged one is named, left in place.
    #[test]
    fn an_undelivered_link_is_read_back_and_a_damaged_record_named() {
        let t = tempfile::tempdir().unwrap();
        let d = StateDir::open(&t.path().join("state")).unwrap();
        let (link, token) = usable();
        let (record, offer) = (new_id([5; 8]), new_id([6; 8]));
        // One later delete per copy of a multi-server link.
        let later = vec![new_id([7; 8]), new_id([9; 8])];
        let u = Undelivered {
            link: Zeroizing::new(link.clone()),
            token: Zeroizing::new(token.clone()),
            offer: Some(offer.clone()),
            deletes: later.clone(),
        };
        d.save_undelivered(&record, &u).unwrap();
        assert!(!format!("{u:?}").contains(&token));
        let bad = d.undelivered().join(new_id([8; 8]));
        std::fs::write(&bad, format!("link {link}\ntoken {token}\ngarbage\n")).unwrap();
        let scan = d.undelivered_kept().unwrap();
        assert_eq!(scan.kept.len(), 1);
        let (id, back) = &scan.kept[0];
        assert_eq!(id, &record);
        assert_eq!(back.link.as_str(), link);
        assert_eq!(back.token.as_str(), token);
        assert_eq!(back.offer.as_deref(), Some(offer.as_str()));
        assert_eq!(back.deletes, later);
        assert!(matches!(
            scan.unreadable.as_slice(),
            [StateError::BadUndelivered { .. }]
        ));
        assert!(bad.exists());
        d.forget_undelivered(&record).unwrap();
        assert!(d.undelivered_kept().unwrap().kept.is_empty());
    }

    /// A pipe, a link to an endless device, or a huge file under an offer's name is named as
    /// unusable, not read: a FIFO made the agent's start (and `--check`) hang for good.
    #[test]
    fn only_regular_files_of_sane_size_are_read() {
        let t = tempfile::tempdir().unwrap();
        let d = StateDir::open(&t.path().join("state")).unwrap();
        let fifo = d.offers().join(format!("{}.pending", new_id([7; 8])));
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        std::os::unix::fs::symlink(
            "/dev/zero",
            d.offers().join(format!("{}.pending", new_id([8; 8]))),
        )
        .unwrap();
        std::fs::write(
            d.offers().join(format!("{}.pending", new_id([9; 8]))),
            vec![b'x'; FILE_LIMIT as usize + 1],
        )
        .unwrap();
        let offers = d.pending().unwrap();
        assert!(offers.kept.is_empty());
        assert_eq!(offers.unreadable.len(), 3, "{:?}", offers.unreadable);
        std::os::unix::fs::symlink("/dev/zero", d.answers().join(new_id([8; 8]))).unwrap();
        assert!(d.answer(&new_id([8; 8])).is_err());
    }
}
