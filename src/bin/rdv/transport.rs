//! The transport flags → a connector, and the client built on it.

use crate::cli::TransportArgs;
use crate::term::progress_printer;
use anyhow::{anyhow, Result};
use rdv::client::direct::DirectConnector;
use rdv::client::socks::SocksConnector;
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
    if let Some(proxy) = &t.socks {
        let connector = Arc::new(SocksConnector::new(proxy.clone()));
        return Ok(client_with(connector, t, policy, t.connect_timeout));
    }
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
                vanguards: rdv::tor::Vanguards::Lite,
            };
            if !server.is_onion() {
                eprintln!(
                    "note: {} is not an onion address; connecting through a Tor exit",
                    server.host
                );
            }
            let tor = tor::bootstrap(&settings, progress_printer("Tor bootstrap")).await?;
            let mut c = TorConnector::new(tor);
            c.attempt_timeout = t.attempt_timeout;
            c.budget = t.connect_timeout;
            // The connector keeps to the budget itself and says which stage failed; the
            // client's own limit is only a safety net behind it.
            let connector = Arc::new(c);
            return Ok(client_with(
                connector,
                t,
                policy,
                t.connect_timeout + std::time::Duration::from_secs(10),
            ));
        }
    };
    Ok(client_with(connector, t, policy, t.connect_timeout))
}

fn client_with(
    connector: Arc<dyn Connector>,
    _t: &TransportArgs,
    policy: ClientPolicy,
    connect_timeout: std::time::Duration,
) -> Client {
    let config = ClientConfig {
        policy,
        connect_timeout,
        ..Default::default()
    };
    Client::new(connector, config, Arc::new(SystemClock))
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
