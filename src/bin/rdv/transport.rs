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
    _client_key_dir: Option<KeyCopy>,
}

/// A private copy of `--client-key` for arti, removed when dropped. A lock file beside it
/// (`NAME.lock`, outside arti's keystore) stays locked while the client runs, so that another
/// client's clean-up can tell it from a stale copy.
pub(crate) struct KeyCopy {
    // Dropped in this order: the directory goes first, then the lock file.
    dir: tempfile::TempDir,
    lock: Option<(PathBuf, std::fs::File)>,
}

impl KeyCopy {
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for KeyCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.dir.path());
        if let Some((path, _file)) = self.lock.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The lock file of the key copy in `dir`.
fn key_copy_lock(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// A key copy without a lock file younger than this may be one being set up right now.
const KEY_COPY_SETUP: std::time::Duration = std::time::Duration::from_secs(60);

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
) -> Result<Option<KeyCopy>> {
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
    remove_stale_key_copies(tor_dir);
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
    // Locked before the key is written: a copy with a lock nobody holds is never a live one.
    let lock_path = key_copy_lock(dir.path());
    let lock = std::fs::File::create(&lock_path)
        .and_then(|f| f.lock().map(|()| f))
        .with_context(|| format!("locking {}", lock_path.display()))?;
    let copy = KeyCopy {
        dir,
        lock: Some((lock_path, lock)),
    };
    let path = copy.path().join("rdv.auth_private");
    use std::io::Write;
    crate::term::create_private(&path)
        .and_then(|mut f| f.write_all(key.to_private_line().as_bytes()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(copy))
}

/// Remove the key copies that clients killed before they could clean up left in `tor_dir`:
/// those whose lock no running client holds (or, without a lock file, older than a minute: a
/// copy is locked right after it is made, before its key is written).
fn remove_stale_key_copies(tor_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(tor_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(KEY_COPY_PREFIX) || name.ends_with(".lock") {
            continue;
        }
        let lock_path = key_copy_lock(&e.path());
        let held = match std::fs::File::open(&lock_path) {
            Ok(f) => match f.try_lock() {
                Ok(()) => Some(f),
                // A running client's.
                Err(std::fs::TryLockError::WouldBlock) => continue,
                Err(std::fs::TryLockError::Error(_)) => None,
            },
            Err(_) => {
                let young = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_none_or(|age| age < KEY_COPY_SETUP);
                if young {
                    continue;
                }
                None
            }
        };
        let _ = std::fs::remove_dir_all(e.path());
        let _ = std::fs::remove_file(&lock_path);
        drop(held);
    }
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
