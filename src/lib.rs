//! rdv: a private rendezvous server and client, reached over Tor.
//!
//! An initiator seals a connection link into a fixed-size blob and stores it in a shared bucket on
//! a rendezvous server; the accepter gets the server address, the bucket's locator and a
//! passphrase, fetches the bucket and trial-decrypts it. See `docs/PROTOCOL.md`.
//!
//! Layers, from pure to effectful:
//! - [`proto`]: sealed links, key derivation, bucket IDs, frames, the client policy, `rdv1:` links.
//!   No IO, no clock, no randomness.
//! - [`store`]: the bucket store (redb on disk with group commit; in memory for tests).
//! - [`server`]: connection handling over any byte stream, TCP and onion-service listeners.
//! - [`client`]: offer, accept and delete over Tor or direct TCP.
//! - [`agent`]: the long-running client's API messages, state directory and cover schedule
//!   (the process itself is `rdv agent`).
//!
//! ```
//! use rdv::proto::{kdf, seal, KdfLimits, KdfProfile, Passphrase, Salt};
//!
//! let salt = Salt::from_bytes([7; 16]); // random in real use, carried in the link
//! let key = kdf::derive_key(&Passphrase::new("kobad-lisuf-mutag-ronif-zapol"), &salt,
//!                           KdfProfile::Test, &KdfLimits::default())?;
//! let sealed = seal::seal(&key, b"smp://example/queue", [1; 24])?;
//! assert_eq!(sealed.0.len(), 256);
//! assert_eq!(&seal::open(&key, &sealed)?[..], b"smp://example/queue");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod agent;
pub mod client;
pub mod clock;
pub mod config;
pub mod framed;
pub mod proto;
pub mod server;
pub mod store;
#[cfg(feature = "tor")]
pub mod tor;

pub use config::ConfigError;
