//! The command line's side of errors: the library's messages say what went wrong; the hints here
//! say which flag or variable to use about it.

use rdv::client::{AcceptError, ConnectError, DeleteError, OfferError};
use rdv::tor::TorError;
use rdv::ConfigError;

/// A settings error, named by its command-line flag.
pub(crate) fn flag(e: ConfigError) -> anyhow::Error {
    anyhow::anyhow!("--{}: {}", e.key.replace('_', "-"), e.reason)
}

/// Print an error with its causes, and a hint where one helps.
pub(crate) fn print(e: &anyhow::Error) {
    eprintln!("error: {e:#}");
    if let Some(h) = hint(e) {
        eprintln!("hint: {h}");
    }
}

fn hint(e: &anyhow::Error) -> Option<&'static str> {
    for cause in e.chain() {
        if let Some(e) = cause.downcast_ref::<AcceptError>() {
            return match e {
                AcceptError::PassphraseRequired => {
                    Some("give the passphrase with --passphrase, RDV_PASSPHRASE or at the prompt")
                }
                AcceptError::PassphraseConflict => Some(
                    "a link that carries its own passphrase (&p=) must be used alone: unset --passphrase / RDV_PASSPHRASE, or ask the sender for the two-channel link",
                ),
                _ => None,
            };
        }
        if let Some(OfferError::Refused { .. }) = cause.downcast_ref::<OfferError>() {
            return Some(
                "the server may be isolating you, or just busy: try again later or another server",
            );
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
        if cause.downcast_ref::<ConnectError>().is_some() {
            return None;
        }
    }
    None
}
