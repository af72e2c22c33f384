//! The transport flags → a connector, and the client built on it.

use crate::cli::TransportArgs;
use crate::out::note;
use crate::term::progress_printer;
use anyhow::{anyhow, bail, Context, Result};
use rdv::client::direct::DirectConnector;
use rdv::client::socks::SocksConnector;
use rdv::client::tor::TorConnector;
use rdv::client::{Client, ClientConfig, Connector};
use rdv::clock::SystemClock;
use rdv::proto::{ClientPolicy, ServerAddr};
use rdv::tor::auth::ClientKey;
use rdv::tor::{self, TorSettings};
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

/// A client, and what must live as long as it does (a private copy of the client key).
pub(crate) struct Session {
    client: Client,
    _client_key_dir: Option<tempfile::TempDir>,
}

impl std::ops::Deref for Session {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl From<Client> for Session {
    fn from(client: Client) -> Self {
        Session {
            client,
            _client_key_dir: None,
        }
    }
}

/// The name of the private copies of `--client-key` under arti's directory.
const KEY_COPY_PREFIX: &str = "client-auth-";

/// `--client-key FILE`, checked against the server (if the client is for one), copied into a private directory under
/// arti's for arti's C-tor-format client keystore (removed when the session ends).
fn client_key_dir(
    t: &TransportArgs,
    server: Option<&ServerAddr>,
    tor_dir: &Path,
) -> Result<Option<tempfile::TempDir>> {
    let Some(file) = &t.client_key else {
        return Ok(None);
    };
    let key = ClientKey::read(file).context("--client-key")?;
    if let Some(server) = server.filter(|s| !key.is_for(&s.host)) {
        bail!(
            "--client-key {}: the key is for {}, not for {}",
            file.display(),
            key.service(),
            server.host
        );
    }
    std::fs::create_dir_all(tor_dir).with_context(|| format!("creating {}", tor_dir.display()))?;
    // A client killed before it could clean up leaves its copy behind; one client uses a tor
    // directory at a time (arti locks it), so every copy there now is stale.
    if let Ok(entries) = std::fs::read_dir(tor_dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(KEY_COPY_PREFIX) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = tempfile::Builder::new()
        .prefix(KEY_COPY_PREFIX)
        .tempdir_in(tor_dir)
        .with_context(|| format!("creating a key directory in {}", tor_dir.display()))?;
    // arti refuses a keystore that others can read.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.path().display()))?;
    }
    let path = dir.path().join("rdv.auth_private");
    use std::io::Write;
    crate::term::create_private(&path)
        .and_then(|mut f| f.write_all(key.to_private_line().as_bytes()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(dir))
}

/// Build a client for `server` (or, for the agent, for any server) according to the transport
/// flags.
pub(crate) async fn make_client(
    t: &TransportArgs,
    server: Option<&ServerAddr>,
    policy: ClientPolicy,
) -> Result<Session> {
    if t.client_key.is_some() && t.socks.is_some() {
        bail!("--client-key works with the embedded Tor; with --socks, put the key file (it is in C tor's format) in tor's ClientOnionAuthDir instead");
    }
    if let Some(proxy) = &t.socks {
        let mut c = SocksConnector::new(proxy.clone());
        c.budget = t.connect_timeout;
        // As with the embedded Tor: the connector keeps to the budget and names the stage.
        let timeout = t.connect_timeout + std::time::Duration::from_secs(10);
        return Ok(client_with(Arc::new(c), t, policy, timeout).into());
    }
    let connector: Arc<dyn Connector> = match &t.direct {
        Some(target) if target.is_empty() => {
            // To each server the link (or the command line) names.
            let who = server.map_or("each server".to_owned(), |s| format!("the server at {s}"));
            eprintln!("WARNING: --direct bypasses Tor: {who} sees your IP address. Use it for local testing only.");
            Arc::new(DirectConnector::default())
        }
        Some(target) => {
            eprintln!("WARNING: --direct bypasses Tor: the server at {target} sees your IP address. Use it for local testing only.");
            Arc::new(DirectConnector::to(target.clone()))
        }
        None => {
            let dir = match &t.tor_dir {
                Some(d) => d.clone(),
                None => default_tor_dir()?,
            };
            let keys = client_key_dir(t, server, &dir)?;
            let settings = TorSettings {
                config_file: t.tor_config.clone(),
                state_dir: dir.join("state"),
                cache_dir: dir.join("cache"),
                bootstrap_timeout: t.bootstrap_timeout,
                vanguards: rdv::tor::Vanguards::Lite,
                client_auth_dir: keys.as_ref().map(|k| k.path().to_path_buf()),
            };
            if let Some(server) = server.filter(|s| !s.is_onion()) {
                note!(
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
            return Ok(Session {
                client: client_with(
                    connector,
                    t,
                    policy,
                    t.connect_timeout + std::time::Duration::from_secs(10),
                ),
                _client_key_dir: keys,
            });
        }
    };
    Ok(client_with(connector, t, policy, t.connect_timeout).into())
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
