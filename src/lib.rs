//! rdv: a private rendezvous server and client, reached over Tor.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod client;
pub mod clock;
pub mod io;
pub mod proto;
pub mod server;
pub mod store;
pub mod tor;
