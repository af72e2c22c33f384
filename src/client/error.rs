//! Client errors: one type per operation, all sharing [`ConnectionError`], each with a
//! [`ErrorKind`] that tells the caller what to do about it.

use crate::proto::answer::AnswerSealError;
use crate::proto::kdf::KdfError;
use crate::proto::seal::SealError;
use crate::proto::{ErrorCode, PolicyViolation};
use std::fmt;

/// What the caller should do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Trying again later may succeed: the network, Tor, or a busy server.
    Transient,
    /// The input is wrong: the link, the passphrase, the token, the payload or a setting.
    BadInput,
    /// The server broke the protocol, or failed the client's checks.
    ServerMisbehaved,
    /// Something failed on this machine.
    Local,
}

impl ErrorKind {
    /// A stable lower-case name (`transient`, `bad-input`, `server`, `local`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::BadInput => "bad-input",
            ErrorKind::ServerMisbehaved => "server",
            ErrorKind::Local => "local",
        }
    }

    /// The kind [`ErrorKind::as_str`] names, if it names one.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            ErrorKind::Transient,
            ErrorKind::BadInput,
            ErrorKind::ServerMisbehaved,
            ErrorKind::Local,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }
}

/// How far a connection attempt got before it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectStage {
    /// The address itself is unusable (checked locally, nothing was sent).
    Address,
    /// A plain TCP connection.
    Tcp,
    /// Joining the Tor network.
    Bootstrap,
    /// Finding the onion service's descriptor.
    Descriptor,
    /// Reaching the onion service's introduction points.
    Introduction,
    /// Meeting the onion service at the rendezvous point.
    Rendezvous,
    /// Opening the stream once a circuit exists.
    Stream,
    /// Talking to a SOCKS proxy (an existing tor).
    Socks,
    /// The onion service is in restricted discovery mode and this client has no key for it,
    /// or a key it does not accept.
    ClientAuth,
}

impl fmt::Display for ConnectStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectStage::Address => "address check",
            ConnectStage::Tcp => "TCP connect",
            ConnectStage::Bootstrap => "Tor bootstrap",
            ConnectStage::Descriptor => "onion service descriptor",
            ConnectStage::Introduction => "onion service introduction",
            ConnectStage::Rendezvous => "onion service rendezvous",
            ConnectStage::Stream => "stream",
            ConnectStage::Socks => "SOCKS proxy",
            ConnectStage::ClientAuth => "client authorization (restricted discovery)",
        })
    }
}

/// A connection could not be established.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {addr} (failed at: {stage})")]
pub struct ConnectError {
    /// The address tried.
    pub addr: String,
    /// Where it failed.
    pub stage: ConnectStage,
    /// Whether trying again can help (false for a malformed address or a refused port).
    pub retryable: bool,
    /// The transport's own error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl ConnectError {
    /// A failure at `stage` of connecting to `addr`.
    pub fn new(
        addr: impl Into<String>,
        stage: ConnectStage,
        retryable: bool,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        ConnectError {
            addr: addr.into(),
            stage,
            retryable,
            source: source.into(),
        }
    }

    /// Whether nothing listens at the address: a plain TCP server that is down, or no SOCKS
    /// proxy (tor not running). Not worth retrying at once, but not the user's input either: it
    /// may be up later.
    pub fn nothing_listens(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*self.source);
        let refused = std::iter::from_fn(|| {
            let c = cause?;
            cause = c.source();
            Some(c)
        })
        .any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        });
        matches!(self.stage, ConnectStage::Tcp | ConnectStage::Socks) && refused
    }
}

/// A failure of the connection or of one request on it: shared by every operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// Could not connect.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Connecting, or waiting for an answer, took too long.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The connection broke after it was set up (the server went away mid-request, or the
    /// circuit to it broke).
    #[error("the connection to {server} broke during a request")]
    Io {
        /// The server (`HOST:PORT`).
        server: String,
        /// What broke.
        #[source]
        source: std::io::Error,
    },
    /// The other side sent something that is not a valid rdv answer.
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    /// The other side does not speak the rdv protocol at all.
    #[error("the other side does not speak the rdv protocol ({0})")]
    NotRdv(String),
    /// The server answered with an error.
    #[error("the server refused: {message} ({})", code_name(*.code))]
    Server {
        /// Error code.
        code: ErrorCode,
        /// The server's message, cleaned of control characters.
        message: String,
    },
}

fn code_name(c: ErrorCode) -> String {
    match c {
        ErrorCode::Unknown(n) => format!("error code {n}"),
        c => format!("{c:?}"),
    }
}

impl ConnectionError {
    /// What to do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConnectionError::Connect(e) if e.nothing_listens() => ErrorKind::Transient,
            ConnectionError::Connect(e) if !e.retryable => ErrorKind::BadInput,
            ConnectionError::Connect(_)
            | ConnectionError::Timeout(_)
            | ConnectionError::Io { .. } => ErrorKind::Transient,
            ConnectionError::Protocol(_) | ConnectionError::NotRdv(_) => {
                ErrorKind::ServerMisbehaved
            }
            ConnectionError::Server { code, .. } if code.is_transient() => ErrorKind::Transient,
            ConnectionError::Server {
                code: ErrorCode::QuotaExceeded,
                ..
            } => ErrorKind::Transient,
            ConnectionError::Server {
                code: ErrorCode::NotFound,
                ..
            } => ErrorKind::BadInput,
            ConnectionError::Server { .. } => ErrorKind::ServerMisbehaved,
        }
    }

    /// The server's error code, if the server answered with one.
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            ConnectionError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Why an offer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// The connection or a request failed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The bucket ID failed the anti-fingerprinting policy.
    #[error("refused the server's bucket ({})", if *.deleted { "the link was deleted from the server" } else { "the link could NOT be deleted from the server" })]
    Refused {
        /// What was wrong.
        #[source]
        violation: PolicyViolation,
        /// Whether the link was deleted again.
        deleted: bool,
    },
    /// The server's advertised parameters fail the policy; nothing was stored.
    #[error("refused the server; nothing was stored")]
    UnacceptableServer(#[source] PolicyViolation),
    /// The bucket a challenge named (or the effort it asked) failed the policy (protocol
    /// version 3): nothing was stored.
    #[error("refused the server's bucket; nothing was stored")]
    RefusedChallenge(#[source] PolicyViolation),
    /// The server answered two stamped stores in a row that the bucket its challenge named
    /// had closed (protocol version 3); nothing was stored, and the link is not stamped for a
    /// third bucket.
    #[error("the server said twice that the bucket it named had closed, after the link's stamp for it was sent; nothing was stored, and the link is not stamped for a third bucket: each stamp sent is an entry the server could count as a verified link in that bucket without your link being there (an honest server has room in its next bucket, so twice in a row comes from a server playing games, or a burst of stores); offer again")]
    ClosedAfterStamp,
    /// The server said the bucket its challenge named had closed, soon after the challenge,
    /// but that bucket shows fewer verified links than a full one (protocol version 3): an
    /// honest server takes stamped stores until well after a bucket's window, so it says that
    /// only of a full bucket (or of one that many links were deleted from). Nothing was stored,
    /// and the link is not stamped for another bucket.
    #[error("the server said the bucket it named had closed, soon after naming it, but that bucket shows only {verified} stamped links of {max}: a server collecting stamps would say so of a bucket with room (the stamp it was sent verifies there whether or not your link is, and could show as someone else's company), and so would an honest one after many deletes in that bucket; nothing was stored, and the link is not stamped for another bucket; offer again, and if it happens again, suspect the server")]
    ClosedNotFull {
        /// Verified links the bucket showed.
        verified: usize,
        /// Links a bucket holds.
        max: usize,
    },
    /// The bucket a challenge named closed while the stamped store waited for its answer
    /// (longer than the protocol lets a server take stamped stores after a bucket's window);
    /// nothing was stored, and the link is not stamped for another bucket.
    #[error("the bucket the server named closed while the stamped store waited for its answer; nothing was stored, and the link is not stamped for another bucket (each stamp sent is an entry the server could count as a verified link in that bucket); offer again")]
    ClosedLate,
    /// Solving a stamp failed to run.
    #[error("solving the stamp failed to run")]
    StampTask(#[source] tokio::task::JoinError),
    /// The KDF parameters are malformed or above the client's limits.
    #[error(transparent)]
    Kdf(#[from] KdfError),
    /// The payload cannot be sealed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The key derivation thread failed.
    #[error("key derivation failed to run")]
    KdfTask(#[source] tokio::task::JoinError),
    /// An answer was asked for and the server has no mailboxes (it speaks an older protocol
    /// version); nothing was stored.
    #[error("the server speaks protocol version {version}, which has no answer mailboxes (version {} needed); nothing was stored", crate::proto::wire::ANSWER_VERSION)]
    NoMailboxes {
        /// The version the server agreed on.
        version: u16,
    },
    /// The list of servers of a multi-server offer is unusable (none, more than five, or one
    /// named twice); nothing was stored.
    #[error("{0}; nothing was stored")]
    Servers(&'static str),
    /// One server of a multi-server offer failed; the copies already stored on the others were
    /// deleted again (as far as they could be).
    #[error("at {server} (the copies on the other servers were deleted again)")]
    AtServer {
        /// The server.
        server: String,
        /// What went wrong there.
        #[source]
        source: Box<OfferError>,
    },
    /// [`Client::interrupt`](super::Client::interrupt) came while a multi-server offer waited
    /// to store its next copy: the copies stored were deleted again (as far as they could be).
    #[error(
        "interrupted before the link was stored everywhere; whatever was stored was deleted again"
    )]
    Interrupted,
}

impl OfferError {
    /// What to do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            OfferError::AtServer { source, .. } => source.kind(),
            OfferError::Servers(_) => ErrorKind::BadInput,
            OfferError::Connection(e) => e.kind(),
            OfferError::Refused { .. }
            | OfferError::UnacceptableServer(_)
            | OfferError::RefusedChallenge(_) => ErrorKind::ServerMisbehaved,
            OfferError::ClosedAfterStamp
            | OfferError::ClosedLate
            | OfferError::ClosedNotFull { .. } => ErrorKind::Transient,
            OfferError::StampTask(_) => ErrorKind::Local,
            OfferError::Kdf(_) | OfferError::Seal(_) | OfferError::NoMailboxes { .. } => {
                ErrorKind::BadInput
            }
            OfferError::KdfTask(_) | OfferError::Interrupted => ErrorKind::Local,
        }
    }
}

/// Why an accept failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The connection or a request failed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The link's KDF parameters are malformed or above the client's limits.
    #[error("the link's KDF parameters are refused")]
    Kdf(#[from] KdfError),
    /// The key derivation thread failed.
    #[error("key derivation failed to run")]
    KdfTask(#[source] tokio::task::JoinError),
    /// Checking the bucket's stamps failed to run.
    #[error("checking the stamps failed to run")]
    StampTask(#[source] tokio::task::JoinError),
    /// Trial decryption found nothing.
    #[error("no link in this bucket opens with this passphrase (wrong passphrase, or the link was deleted)")]
    NoMatch {
        /// How many links were tried.
        tried: usize,
    },
    /// The bucket does not exist (any more).
    #[error("the bucket is not on the server: it never existed, expired, or the link is wrong")]
    NotFound,
    /// A two-channel link and no passphrase.
    #[error("this link carries no passphrase (two-channel mode): the passphrase is needed")]
    PassphraseRequired,
    /// A one-channel link and a passphrase given separately: the two channels would no longer
    /// be checked against each other, so this is refused rather than guessed.
    #[error("this link carries its own passphrase, and another one was given separately: refusing to choose (a link that carries a passphrase can come from anyone who controls the link channel)")]
    PassphraseConflict,
    /// Every server of a multi-server link failed, each in its own way.
    #[error("no server of the link gave the payload: {}", failures_text(.0))]
    AllServers(Vec<(String, AcceptError)>),
}

/// What the other servers of a link did with an answer one server refused as answered already.
fn took_text(took: usize) -> String {
    match took {
        0 => String::new(),
        1 => "; 1 other server of the link took this answer".into(),
        n => format!("; {n} other servers of the link took this answer"),
    }
}

/// `server: error; server: error` with each error's chain.
fn failures_text<E: std::error::Error + 'static>(f: &[(String, E)]) -> String {
    f.iter()
        .map(|(s, e)| format!("{s}: {}", crate::config::report(e)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The kind of a set of failures: retrying helps if it helps for any of them.
fn kind_of_all(kinds: impl Iterator<Item = ErrorKind>) -> ErrorKind {
    let kinds: Vec<_> = kinds.collect();
    for k in [
        ErrorKind::Transient,
        ErrorKind::ServerMisbehaved,
        ErrorKind::BadInput,
    ] {
        if kinds.contains(&k) {
            return k;
        }
    }
    ErrorKind::Local
}

impl AcceptError {
    /// What to do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AcceptError::Connection(e) => e.kind(),
            AcceptError::Kdf(_)
            | AcceptError::NoMatch { .. }
            | AcceptError::NotFound
            | AcceptError::PassphraseRequired
            | AcceptError::PassphraseConflict => ErrorKind::BadInput,
            AcceptError::KdfTask(_) | AcceptError::StampTask(_) => ErrorKind::Local,
            AcceptError::AllServers(f) => kind_of_all(f.iter().map(|(_, e)| e.kind())),
        }
    }
}

/// Why a delete failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeleteError {
    /// The connection or a request failed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// Nothing matched: the bucket is gone, or it holds no link with this token (wrong token, or
    /// already deleted).
    #[error("nothing to delete: no link with this token in this bucket (already deleted, wrong token, or the bucket expired)")]
    NothingToDelete,
    /// No server of a multi-server link deleted its copy.
    #[error("no server of the link deleted its copy: {}", failures_text(.0))]
    AllServers(Vec<(String, DeleteError)>),
}

impl DeleteError {
    /// What to do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DeleteError::Connection(e) => e.kind(),
            DeleteError::NothingToDelete => ErrorKind::BadInput,
            DeleteError::AllServers(f) => kind_of_all(f.iter().map(|(_, e)| e.kind())),
        }
    }
}

/// Why answering failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// The connection or a request failed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The answer cannot be sealed (too long, or the link's answer key is invalid).
    #[error(transparent)]
    Seal(#[from] AnswerSealError),
    /// The mailbox holds an answer already: this link was answered before (by this accepter,
    /// or by someone else who holds the link and its passphrase). For a multi-server link, the
    /// server that said so, and how many of the link's other servers took this answer. With
    /// every copy answered
    /// ([`ClientConfig::answer_every_copy`](super::ClientConfig::answer_every_copy)) a server
    /// that says so falsely keeps the answer from no one; with one copy answered (the
    /// default) it keeps it from the initiator, as a server of a single-server link can. Every
    /// accepter that follows the copy order ([`crate::proto::link::first_copy`],
    /// [`crate::proto::link::copy_order`]) answers the same copy, so an earlier answer is met
    /// there unless a server failed for one of the two; one that answers another copy on
    /// purpose is not met.
    #[error("this link was answered already (says {server}); the first answer stays (if it was not you, someone else holds the link and its passphrase){}", took_text(*.took))]
    AlreadyAnswered {
        /// The server whose mailbox holds an answer.
        server: String,
        /// How many of the link's other servers took this answer.
        took: usize,
    },
    /// The server has no mailboxes (it speaks an older protocol version).
    #[error("the server speaks protocol version {version}, which has no answer mailboxes")]
    NoMailboxes {
        /// The version the server agreed on.
        version: u16,
    },
    /// No server of a multi-server link took the answer.
    #[error("no server of the link took the answer: {}", failures_text(.0))]
    AllServers(Vec<(String, AnswerError)>),
    /// The server's answer challenge asks for more stamp effort than the client's policy
    /// allows (protocol version 4); nothing was sent.
    #[error("the server's answer challenge was refused; nothing was sent")]
    RefusedChallenge(#[source] PolicyViolation),
    /// The thread that solves the answer's stamp failed.
    #[error("the answer's stamp could not be made")]
    StampTask(#[source] tokio::task::JoinError),
}

impl AnswerError {
    /// What to do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AnswerError::Connection(e) => e.kind(),
            AnswerError::Seal(_) | AnswerError::AlreadyAnswered { .. } => ErrorKind::BadInput,
            AnswerError::NoMailboxes { .. } | AnswerError::RefusedChallenge(_) => {
                ErrorKind::ServerMisbehaved
            }
            AnswerError::StampTask(_) => ErrorKind::Local,
            AnswerError::AllServers(f) => kind_of_all(f.iter().map(|(_, e)| e.kind())),
        }
    }
}

/// Why collecting an answer failed (an answer not there yet is not an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectError {
    /// The connection or a request failed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The server has no mailboxes (it speaks an older protocol version).
    #[error("the server speaks protocol version {version}, which has no answer mailboxes")]
    NoMailboxes {
        /// The version the server agreed on.
        version: u16,
    },
    /// No answer opened before the wait ended.
    #[error(
        "no answer arrived in time (the mailbox held nothing that opens with this offer's keys)"
    )]
    NoAnswerYet,
    /// No server of a multi-server link could be asked.
    #[error("no server of the link could be asked for the answer: {}", failures_text(.0))]
    AllServers(Vec<(String, CollectError)>),
    /// No copy's bucket has closed yet: a look now would tell the server which link the mailbox
    /// belongs to (PROTOCOL.md §15.4).
    #[error("too early to look: the link's bucket has not closed yet")]
    TooEarly {
        /// When the earliest-closing copy's bucket closes, on this machine's clock (unix
        /// seconds).
        polls_from: u64,
    },
}

impl CollectError {
    /// What to do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CollectError::Connection(e) => e.kind(),
            CollectError::NoMailboxes { .. } => ErrorKind::ServerMisbehaved,
            CollectError::NoAnswerYet | CollectError::TooEarly { .. } => ErrorKind::Transient,
            CollectError::AllServers(f) => kind_of_all(f.iter().map(|(_, e)| e.kind())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorKind;

    #[test]
    fn every_kind_is_found_by_its_name() {
        for k in [
            ErrorKind::Transient,
            ErrorKind::BadInput,
            ErrorKind::ServerMisbehaved,
            ErrorKind::Local,
        ] {
            assert_eq!(ErrorKind::from_name(k.as_str()), Some(k));
        }
        assert_eq!(ErrorKind::from_name("fatal"), None);
    }
}
