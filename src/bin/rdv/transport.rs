//! The transport flags → a connector, and the client built on it.

use crate::cli::TransportArgs;
use crate::term::progress_printer;
use anyhow::{anyhow, Result};
use rdv::client::direct::DirectConnector;
use rdv::client::tor::TorConnector;
use rdv::client::{Client, ClientConfig, Connector};
use rdv::clock::SystemClock;
use rdv::proto::{ClientPolicy, ServerAddr};
use rdv::tor::{self, TorSettings};
use std::path::PathBuf;
use std::sync::Arc;

/// Build a client for `server` according to the transport flags.
pub(crate) async fn make_client(
    t: &TransportArgs,
    server: &ServerAddr,
    policy: ClientPolicy,
) -> Result<Client> {
    let connector: Arc<dyn Connector> = match &t.direct {
        Some(target) => {
            let target = if target.is_empty() {
                server.to_string()
            } else {
                target.clone()
            };
            eprintln!("WARNING: --direct bypasses Tor: the server at {target} sees your IP address. Use it for local testing only.");
            Arc::new(DirectConnector::to(target))
        }
        None => {
            let dir = match &t.tor_dir {
                Some(d) => d.clone(),
                None => default_tor_dir()?,
            };
            let settings = TorSettings {
                config_file: t.tor_config.clone(),
                state_dir: dir.join("state"),
                cache_dir: dir.join("cache"),
                bootstrap_timeout: t.bootstrap_timeout,
            };
            if !server.is_onion() {
                eprintln!(
                    "note: {} is not an onion address; connecting through a Tor exit",
                    server.host
                );
            }
            let tor = tor::bootstrap(&settings, progress_printer("Tor bootstrap")).await?;
            Arc::new(TorConnector::new(tor))
        }
    };
    let config = ClientConfig {
        policy,
        connect_timeout: t.connect_timeout,
        ..Default::default()
    };
    Ok(Client::new(connector, config, Arc::new(SystemClock)))
}

/// arti's directory when `--tor-dir` is not given: `$XDG_DATA_HOME/rdv/arti` or
/// `~/.local/share/rdv/arti`.
pub(crate) fn default_tor_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(d).join("rdv").join("arti"));
    }
    let home = std::env::var_os("HOME")
        .ok_or_else(|| anyhow!("neither HOME nor XDG_DATA_HOME is set: pass --tor-dir"))?;
    Ok(PathBuf::from(home)
        .join(".local")
        .join("share")
        .join("rdv")
        .join("arti"))
}
