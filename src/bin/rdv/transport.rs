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
/// (`NAME.lock`, outside arti's keystore) is made and locked before the directory, and stays
/// locked while the client runs, so that another client's clean-up can tell a live copy from
/// a stale one.
pub(crate) struct KeyCopy {
    dir: PathBuf,
    lock: Option<(PathBuf, std::fs::File)>,
}

impl KeyCopy {
    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for KeyCopy {
    fn drop(&mut self) {
        // The directory first, then the lock file, unlocked last.
        let _ = std::fs::remove_dir_all(&self.dir);
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

/// A key copy without a lock file (made by an rdv before lock files) older than this is stale.
const KEY_COPY_OLD: std::time::Duration = std::time::Duration::from_secs(60);

impl Session {
    /// The same session, storing the copies of a multi-server link a random pause of mean
    /// `spread` apart ([`rdv::client::ClientConfig::copy_spread`]).
    pub(crate) fn with_copy_spread(mut self, spread: std::time::Duration) -> Self {
        self.client = self.client.with_copy_spread(spread);
        self
    }

    /// The same session, storing the copies of a multi-server link a random pause of mean
    /// `spread` apart when given ([`rdv::client::ClientConfig::store_spread`]).
    pub(crate) fn with_store_spread(mut self, spread: Option<std::time::Duration>) -> Self {
        self.client = self.client.with_store_spread(spread);
        self
    }

    /// The same session, answering every copy of a multi-server link when `every`
    /// ([`rdv::client::ClientConfig::answer_every_copy`]).
    pub(crate) fn with_answer_every_copy(mut self, every: bool) -> Self {
        self.client = self.client.with_answer_every_copy(every);
        self
    }
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
    // A fresh name; its lock file first, made new (never an existing file or a symlink) and
    // locked, then the directory: no moment where the copy exists and its lock is free.
    let mut random = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
    let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let dir = tor_dir.join(format!("{KEY_COPY_PREFIX}{name}"));
    let lock_path = key_copy_lock(&dir);
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock_path)
        .and_then(|f| f.lock().map(|()| f))
        .with_context(|| format!("creating {}", lock_path.display()))?;
    let mut copy = KeyCopy {
        dir,
        lock: Some((lock_path, lock)),
    };
    let mut builder = std::fs::DirBuilder::new();
    // arti refuses a keystore that others can read.
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    if let Err(e) = builder.create(&copy.dir) {
        // Not ours: nothing to remove but the lock file.
        let dir = std::mem::take(&mut copy.dir);
        drop(copy);
        return Err(e).with_context(|| format!("creating {}", dir.display()));
    }
    let path = copy.path().join("rdv.auth_private");
    use std::io::Write;
    crate::term::create_private(&path)
        .and_then(|mut f| f.write_all(key.to_private_line().as_bytes()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(copy))
}

/// Remove what clients killed before they could clean up left in `tor_dir`: key copies whose
/// lock no running client holds, lock files whose copy is gone and whose lock is free, and
/// copies without a lock file (from an rdv before lock files) older than a minute. Anything
/// else (a lock that cannot be opened or tried) is left alone.
fn remove_stale_key_copies(tor_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(tor_dir) else {
        return;
    };
    let free = |lock: &Path| -> Option<std::fs::File> {
        let f = std::fs::File::open(lock).ok()?;
        f.try_lock().ok().map(|()| f)
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(KEY_COPY_PREFIX) {
            continue;
        }
        let path = e.path();
        if let Some(dir) = name.strip_suffix(".lock") {
            // A lock file left alone by a kill between the two removals.
            if !tor_dir.join(dir).exists() {
                if let Some(held) = free(&path) {
                    let _ = std::fs::remove_file(&path);
                    drop(held);
                }
            }
            continue;
        }
        let lock_path = key_copy_lock(&path);
        let held = match std::fs::symlink_metadata(&lock_path) {
            Ok(_) => match free(&lock_path) {
                Some(f) => f,
                // A running client's, or a lock that cannot be tried: keep.
                None => continue,
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age >= KEY_COPY_OLD);
                if old {
                    let _ = std::fs::remove_dir_all(&path);
                }
                continue;
            }
            Err(_) => continue,
        };
        let _ = std::fs::remove_dir_all(&path);
        let _ = std::fs::remove_file(&lock_path);
        drop(held);
    }
}

/// Build a client for `servers` (the main one first; none for the agent, which serves any
/// server) according to the transport flags.
pub(crate) async fn make_client(
    t: &TransportArgs,
    servers: &[ServerAddr],
    policy: ClientPolicy,
) -> Result<Session> {
    let server = servers.first();
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
            let who = match servers {
                [] => "each server sees".to_owned(),
                [one] => format!("the server at {one} sees"),
                [first @ .., last] => {
                    let first: Vec<String> = first.iter().map(|s| s.to_string()).collect();
                    format!("the servers at {} and {last} see", first.join(", "))
                }
            };
            eprintln!("WARNING: --direct bypasses Tor: {who} your IP address. Use it for local testing only.");
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
            for server in servers.iter().filter(|s| !s.is_onion()) {
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
