//! The command line's side of errors: the library's messages say what went wrong; the hints here
//! say which flag or variable to use about it; the codes name the error for `--json`
//! (docs/JSON.md lists them, and they stay stable).

use rdv::client::{
    AcceptError, AnswerError, CollectError, ConnectError, ConnectStage, ConnectionError,
    DeleteError, ErrorKind, OfferError,
};
use rdv::proto::{ErrorCode, PolicyViolation};
use rdv::tor::auth::AuthKeyError;
use rdv::tor::TorError;
use rdv::ConfigError;

/// An error the command line itself raises, with its code. Its `Debug` output leaves out what
/// the command got (it may hold secrets), and dropped, it wipes it.
#[derive(thiserror::Error)]
#[error("{message}")]
pub(crate) struct CliError {
    pub(crate) code: &'static str,
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    /// What the command got before it failed, for its JSON result (see [`Partial`]).
    pub(crate) got: Option<serde_json::Map<String, serde_json::Value>>,
}

impl CliError {
    /// An error with a code of its own.
    pub(crate) fn new(code: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        CliError {
            code,
            kind,
            message: message.into(),
            got: None,
        }
    }
}

impl Drop for CliError {
    fn drop(&mut self) {
        if let Some(got) = &mut self.got {
            crate::out::wipe_fields(got);
        }
    }
}

impl std::fmt::Debug for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CliError")
            .field("code", &self.code)
            .field("kind", &self.kind)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

/// What a command (or the agent, for it) got before it failed: a [`Partial`] context's
/// fields, or those of the first [`CliError`] that has some.
pub(crate) fn partial(e: &anyhow::Error) -> Option<&serde_json::Map<String, serde_json::Value>> {
    e.downcast_ref::<Partial>().map(|p| &p.fields).or_else(|| {
        e.chain()
            .find_map(|c| c.downcast_ref::<CliError>()?.got.as_ref())
    })
}

/// What a command got before it failed, for its JSON result: added as context to the failure,
/// its fields go into the result beside `error` (an accepted link's payload when its answer
/// could not be sent, so that a script need not fetch the bucket again). Shown as `message`;
/// its `Debug` output leaves the fields out (they may hold secrets), and dropped, it wipes them.
pub(crate) struct Partial {
    pub(crate) message: &'static str,
    pub(crate) fields: serde_json::Map<String, serde_json::Value>,
}

impl std::fmt::Display for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message)
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        crate::out::wipe_fields(&mut self.fields);
    }
}

impl std::fmt::Debug for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partial")
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

/// A settings error, named by its command-line flag (or by its key in the configuration file,
/// see `crate::config::Origins`).
pub(crate) fn flag(e: ConfigError) -> anyhow::Error {
    anyhow::Error::new(CliError::new(
        "invalid_setting",
        ErrorKind::BadInput,
        format!("--{}: {}", e.key.replace('_', "-"), e.reason),
    ))
}

/// Print an error: on standard error with its causes and a hint where one helps, and with
/// `--json` also as the JSON result.
pub(crate) fn print(e: &anyhow::Error, command: Option<&str>) {
    let message = format!("{e:#}");
    eprintln!("error: {message}");
    if let Some(h) = hint(e) {
        eprintln!("hint: {h}");
    }
    if crate::out::json() {
        let (code, kind) = code(e);
        crate::out::emit_error(command, code, kind.as_str(), &message, partial(e));
    }
}

/// The stable code and kind of an error: the first cause in the chain that has one.
pub(crate) fn code(e: &anyhow::Error) -> (&'static str, ErrorKind) {
    use ErrorKind::*;
    for cause in e.chain() {
        if let Some(e) = cause.downcast_ref::<CliError>() {
            return (e.code, e.kind);
        }
        if let Some(e) = cause.downcast_ref::<AcceptError>() {
            let code = match e {
                AcceptError::NoMatch { .. } => "no_match",
                AcceptError::NotFound => "not_found",
                AcceptError::PassphraseRequired => "passphrase_required",
                AcceptError::PassphraseConflict => "passphrase_conflict",
                AcceptError::Kdf(_) => "kdf_unacceptable",
                AcceptError::AllServers(_) => "all_servers_failed",
                AcceptError::Connection(c) => connection_code(c),
                _ => "local",
            };
            return (code, e.kind());
        }
        if let Some(e) = cause.downcast_ref::<OfferError>() {
            return (offer_code(e), e.kind());
        }
        if let Some(e) = cause.downcast_ref::<DeleteError>() {
            let code = match e {
                DeleteError::NothingToDelete => "nothing_to_delete",
                DeleteError::AllServers(_) => "all_servers_failed",
                DeleteError::Connection(c) => connection_code(c),
                _ => "local",
            };
            return (code, e.kind());
        }
        if let Some(e) = cause.downcast_ref::<AnswerError>() {
            let code = match e {
                AnswerError::AlreadyAnswered { .. } => "already_answered",
                AnswerError::Seal(_) => "answer_invalid",
                AnswerError::NoMailboxes { .. } => "no_mailboxes",
                AnswerError::RefusedChallenge(_) => "effort_refused",
                AnswerError::Connection(c) => connection_code(c),
                _ => "local",
            };
            return (code, e.kind());
        }
        if let Some(e) = cause.downcast_ref::<CollectError>() {
            let code = match e {
                CollectError::NoAnswerYet => "no_answer_yet",
                CollectError::TooEarly { .. } => "too_early",
                CollectError::NoMailboxes { .. } => "no_mailboxes",
                CollectError::Connection(c) => connection_code(c),
                _ => "local",
            };
            return (code, e.kind());
        }
        if let Some(c) = cause.downcast_ref::<ConnectionError>() {
            return (connection_code(c), c.kind());
        }
        if let Some(c) = cause.downcast_ref::<ConnectError>() {
            return (
                connect_code(c),
                if c.retryable { Transient } else { BadInput },
            );
        }
        if let Some(t) = cause.downcast_ref::<TorError>() {
            return match t {
                TorError::Config { .. }
                | TorError::UnknownKeys { .. }
                | TorError::OwnKeys { .. }
                | TorError::ConfigMissing(_) => ("tor_config", BadInput),
                TorError::Bootstrap(_) | TorError::BootstrapTimeout { .. } => {
                    ("tor_bootstrap", Transient)
                }
                _ => ("local", Local),
            };
        }
        if let Some(e) = cause.downcast_ref::<rdv::agent::state::StateError>() {
            return match e {
                rdv::agent::state::StateError::BadId(_) => ("no_such_offer", BadInput),
                _ => ("state", Local),
            };
        }
        if let Some(e) = cause.downcast_ref::<AuthKeyError>() {
            return match e {
                AuthKeyError::BadAddress(_) => ("bad_address", BadInput),
                _ => ("client_key", BadInput),
            };
        }
        if let Some(e) = cause.downcast_ref::<rdv::proto::link::LinkError>() {
            return match e {
                rdv::proto::link::LinkError::BadAddress(_) => ("bad_address", BadInput),
                _ => ("invalid_link", BadInput),
            };
        }
        if cause.downcast_ref::<rdv::proto::kdf::KdfError>().is_some() {
            return ("kdf_unacceptable", BadInput);
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return ("io", Local);
        }
    }
    ("invalid_input", BadInput)
}

/// The code of an offer's failure (at the server of a multi-server offer that failed).
fn offer_code(e: &OfferError) -> &'static str {
    match e {
        OfferError::Refused { .. } | OfferError::RefusedChallenge(_) => "bucket_refused",
        OfferError::ClosedAfterStamp | OfferError::ClosedLate => "bucket_closed",
        OfferError::ClosedNotFull { .. } => "bucket_closed_not_full",
        OfferError::UnacceptableServer(_) => "server_unacceptable",
        OfferError::Kdf(_) => "kdf_unacceptable",
        OfferError::Seal(_) => "payload_invalid",
        OfferError::NoMailboxes { .. } => "no_mailboxes",
        OfferError::Servers(_) => "invalid_input",
        OfferError::AtServer { source, .. } => offer_code(source),
        OfferError::Connection(c) => connection_code(c),
        OfferError::Interrupted => "cancelled",
        _ => "local",
    }
}

/// The code of a failure to connect.
fn connect_code(e: &ConnectError) -> &'static str {
    match e.stage {
        ConnectStage::Address => "bad_address",
        ConnectStage::ClientAuth => "client_auth",
        _ if e.retryable || e.nothing_listens() => "unreachable",
        _ => "refused",
    }
}

/// The code of a connection or request failure.
fn connection_code(c: &ConnectionError) -> &'static str {
    match c {
        ConnectionError::Connect(e) => connect_code(e),
        ConnectionError::Timeout(_) => "timeout",
        ConnectionError::Io { .. } => "connection_lost",
        ConnectionError::Protocol(_) | ConnectionError::NotRdv(_) => "protocol_violation",
        ConnectionError::Server { code, .. } => match code {
            ErrorCode::Busy
            | ErrorCode::RateLimited
            | ErrorCode::BucketClosed
            | ErrorCode::Overloaded
            | ErrorCode::ShuttingDown => "server_busy",
            ErrorCode::TimedOut => "timeout",
            ErrorCode::StorageFailure => "server_storage",
            ErrorCode::BadStamp => "stamp_refused",
            ErrorCode::QuotaExceeded => "server_full",
            ErrorCode::NotFound => "not_found",
            _ => "server_error",
        },
        _ => "server_error",
    }
}

fn hint(e: &anyhow::Error) -> Option<&'static str> {
    for cause in e.chain() {
        match cause.downcast_ref::<AcceptError>() {
            Some(AcceptError::PassphraseRequired) => {
                return Some("give the passphrase with --passphrase, RDV_PASSPHRASE or at the prompt")
            }
            Some(AcceptError::PassphraseConflict) => return Some(
                "a link that carries its own passphrase (&p=) must be used alone: unset --passphrase / RDV_PASSPHRASE, or ask the sender for the two-channel link",
            ),
            _ => {}
        }
        if let Some(e) = cause.downcast_ref::<OfferError>() {
            let violation = match e {
                OfferError::Refused { violation, .. } | OfferError::RefusedChallenge(violation) => {
                    Some(violation)
                }
                _ => None,
            };
            // A bucket from the future or the past by this machine's clock: the server's clock
            // may be wrong, but so may this one (a machine started before its clock was set).
            if matches!(
                violation,
                Some(PolicyViolation::FromTheFuture { .. } | PolicyViolation::TooOld { .. })
            ) {
                return Some("the bucket's time and this machine's clock disagree: is this machine's clock right? If it is, the server's is wrong (or it plays games): try another server");
            }
            if let OfferError::Refused { .. } = e {
                return Some(
                    "the server may be isolating you, or just busy: try again later or another server",
                );
            }
        }
        if let Some(DeleteError::NothingToDelete) = cause.downcast_ref::<DeleteError>() {
            return None;
        }
        if let Some(TorError::BootstrapTimeout { config_file, .. }) =
            cause.downcast_ref::<TorError>()
        {
            return Some(match config_file {
                None => "is the Tor network reachable? For a private network pass --tor-config FILE; to use a tor that is already running, --socks HOST:PORT",
                Some(_) => "are the network's relays and authorities running, and do the addresses in the arti configuration match them?",
            });
        }
        if let Some(c) = connect_error(cause) {
            if c.stage == ConnectStage::ClientAuth {
                return Some("the server is in restricted discovery mode: pass a key its operator authorized with --client-key FILE (made by rdv keygen)");
            }
            if c.nothing_listens() {
                return Some(match c.stage {
                    ConnectStage::Socks => "nothing listens at that SOCKS address: is tor running, with its SocksPort there?",
                    _ => "nothing listens at that address: is the server running, on that port?",
                });
            }
            return None;
        }
    }
    None
}

/// The connection failure inside an error, if it is one. (The operations' errors wrap it
/// transparently, so it is not a link of its own in the chain of causes.)
fn connect_error<'a>(cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a ConnectError> {
    let connection = cause
        .downcast_ref::<ConnectionError>()
        .or_else(|| match cause.downcast_ref::<AcceptError>()? {
            AcceptError::Connection(c) => Some(c),
            _ => None,
        })
        .or_else(|| match cause.downcast_ref::<OfferError>()? {
            OfferError::Connection(c) => Some(c),
            OfferError::AtServer { source, .. } => match &**source {
                OfferError::Connection(c) => Some(c),
                _ => None,
            },
            _ => None,
        })
        .or_else(|| match cause.downcast_ref::<DeleteError>()? {
            DeleteError::Connection(c) => Some(c),
            _ => None,
        })
        .or_else(|| match cause.downcast_ref::<AnswerError>()? {
            AnswerError::Connection(c) => Some(c),
            _ => None,
        })
        .or_else(|| match cause.downcast_ref::<CollectError>()? {
            CollectError::Connection(c) => Some(c),
            _ => None,
        });
    match connection {
        Some(ConnectionError::Connect(c)) => Some(c),
        Some(_) => None,
        None => cause.downcast_ref::<ConnectError>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_auth_failure() -> ConnectionError {
        ConnectionError::Connect(ConnectError::new(
            "x.onion:7625",
            ConnectStage::ClientAuth,
            false,
            "no key",
        ))
    }

    /// Every error code a server can send comes out with the code and kind docs/JSON.md gives
    /// that code (a transient storage failure was once `server_error`, documented as `server`).
    #[test]
    fn every_server_error_code_has_the_kind_its_documented_code_has() {
        let doc = include_str!("../../../docs/JSON.md");
        let documented = |code: &str| {
            doc.lines()
                .find_map(|l| {
                    let rest = l.strip_prefix(&format!("| `{code}` | "))?;
                    Some(rest.split(" |").next()?.trim().to_owned())
                })
                .unwrap_or_else(|| panic!("docs/JSON.md has no row for {code}"))
        };
        for n in 1..=64u16 {
            let c = ErrorCode::from_u16(n);
            if matches!(c, ErrorCode::Unknown(_)) {
                continue;
            }
            let e = anyhow::Error::new(OfferError::Connection(ConnectionError::Server {
                code: c,
                message: String::new(),
            }));
            let (name, kind) = code(&e);
            assert_eq!(documented(name), kind.as_str(), "{c:?} comes out as {name}");
        }
    }

    #[test]
    fn a_missing_client_key_gets_its_code_and_hint_through_every_operation() {
        let errors: Vec<anyhow::Error> = vec![
            AcceptError::Connection(client_auth_failure()).into(),
            OfferError::Connection(client_auth_failure()).into(),
            DeleteError::Connection(client_auth_failure()).into(),
            AnswerError::Connection(client_auth_failure()).into(),
            CollectError::Connection(client_auth_failure()).into(),
            anyhow::Error::new(client_auth_failure()).context("info"),
        ];
        for e in errors {
            assert_eq!(code(&e), ("client_auth", ErrorKind::BadInput), "{e:#}");
            assert!(
                hint(&e).is_some_and(|h| h.contains("--client-key")),
                "{e:#}"
            );
        }
    }

    #[test]
    fn codes_follow_the_first_typed_cause() {
        let e: anyhow::Error = AcceptError::NoMatch { tried: 64 }.into();
        assert_eq!(code(&e), ("no_match", ErrorKind::BadInput));
        let e = anyhow::Error::new(AcceptError::NotFound).context("while accepting");
        assert_eq!(code(&e).0, "not_found");
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = anyhow::Error::new(io).context("reading the state file");
        assert_eq!(code(&e), ("io", ErrorKind::Local));
        let e = anyhow::anyhow!("the payload is empty");
        assert_eq!(code(&e), ("invalid_input", ErrorKind::BadInput));
        let refused = ConnectionError::Connect(ConnectError::new(
            "127.0.0.1:1",
            ConnectStage::Tcp,
            false,
            "refused",
        ));
        assert_eq!(code(&AcceptError::Connection(refused).into()).0, "refused");
        // Nothing listening (a server down, no tor at the SOCKS port) may change later.
        for stage in [ConnectStage::Tcp, ConnectStage::Socks] {
            let down = ConnectionError::Connect(ConnectError::new(
                "127.0.0.1:1",
                stage,
                false,
                std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            ));
            let e = AcceptError::Connection(down).into();
            assert_eq!(code(&e), ("unreachable", ErrorKind::Transient));
            assert!(hint(&e).is_some_and(|h| h.contains("nothing listens")));
        }
    }
}
