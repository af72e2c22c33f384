//! Embedded Tor (arti): building a client from an optional arti TOML file, bootstrapping with
//! visible progress.
//!
//! The configuration is strict: a TOML syntax error, a value of the wrong type or a key arti does
//! not know is an error naming the file and the key, never a warning followed by a silent attempt
//! on the public network.

use arti_client::config::{ConfigurationSource, ConfigurationSources};
use arti_client::{TorClient, TorClientConfig};
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tor_config::load::ConfigResolveOptions;
use tor_config::sources::MustRead;
use tor_rtcompat::PreferredRuntime;

pub mod auth;

/// The Tor client type used throughout.
pub type Tor = Arc<TorClient<PreferredRuntime>>;

/// Vanguards: which relays onion-service circuits may use for their middle hops, against guard
/// discovery attacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Vanguards {
    /// Vanguards-lite (arti's default when built with vanguards): the right choice for clients
    /// and most services.
    #[default]
    Lite,
    /// Full vanguards: for services facing a strong adversary; slower circuits.
    Full,
    /// None.
    Disabled,
}

impl Vanguards {
    /// The value arti's configuration takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Vanguards::Lite => "lite",
            Vanguards::Full => "full",
            Vanguards::Disabled => "disabled",
        }
    }
}

/// Where arti keeps its state and how it joins the network.
#[derive(Clone, Debug)]
pub struct TorSettings {
    /// An arti TOML file (e.g. the private test network's); `None` for the public Tor network.
    pub config_file: Option<PathBuf>,
    /// arti's state directory (keys, guards). Two clients must never share one.
    pub state_dir: PathBuf,
    /// arti's cache directory (directory documents).
    pub cache_dir: PathBuf,
    /// How long bootstrapping may take.
    pub bootstrap_timeout: Duration,
    /// Vanguards mode; rdv's setting wins over the file's.
    pub vanguards: Vanguards,
    /// A directory of client keys for onion services in restricted discovery mode (C tor's
    /// `ClientOnionAuthDir` format: `*.auth_private` files, see [`auth`]). It must not be
    /// readable by others.
    pub client_auth_dir: Option<PathBuf>,
}

/// Errors setting up Tor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TorError {
    /// A state or cache directory could not be created.
    #[error("cannot create {}", .path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The arti configuration file is missing.
    #[error("the arti configuration {} is not a readable file", .0.display())]
    ConfigMissing(PathBuf),
    /// The arti configuration could not be read or is invalid.
    #[error("invalid arti configuration{}: {}", in_file(.file), crate::config::report(&**.cause))]
    Config {
        /// The file, if one was given.
        file: Option<PathBuf>,
        /// arti's error (its whole chain is in the message).
        cause: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The arti configuration has keys arti does not know (a misspelled section, say).
    #[error("unknown key{} in the arti configuration{}: {}", if .keys.len() == 1 { "" } else { "s" }, in_file(.file), .keys.join(", "))]
    UnknownKeys {
        /// The file, if one was given.
        file: Option<PathBuf>,
        /// The keys, as dotted paths.
        keys: Vec<String>,
    },
    /// The arti configuration sets what rdv sets itself (it would be overridden without a word).
    #[error("the arti configuration{} sets {}, which rdv sets itself (state and cache: the data directory or --tor-dir; vanguards: --vanguards; client keys: --client-key); remove {} from the file", in_file(.file), .keys.join(", "), if .keys.len() == 1 { "it" } else { "them" })]
    OwnKeys {
        /// The file.
        file: Option<PathBuf>,
        /// The keys, as dotted paths.
        keys: Vec<String>,
    },
    /// arti failed to start.
    #[error("cannot start arti")]
    Create(#[source] arti_client::Error),
    /// arti failed to bootstrap.
    #[error("Tor bootstrap failed")]
    Bootstrap(#[source] arti_client::Error),
    /// Bootstrap did not finish in time.
    #[error("Tor bootstrap did not finish within {}{}", humantime::format_duration(*.timeout), match .config_file { Some(f) => format!(" (network from {})", f.display()), None => " (public Tor network)".into() })]
    BootstrapTimeout {
        /// The limit.
        timeout: Duration,
        /// The configuration used, if any.
        config_file: Option<PathBuf>,
    },
}

fn in_file(f: &Option<PathBuf>) -> String {
    f.as_ref()
        .map(|f| format!(" in {}", f.display()))
        .unwrap_or_default()
}

fn toml_string(p: &Path) -> String {
    let s = p.display().to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Build the arti configuration: the file's settings, with our storage directories and
/// vanguards mode. Every problem is an error naming the file and the key.
pub fn load_config(settings: &TorSettings) -> Result<TorClientConfig, TorError> {
    let config_error = |cause: Box<dyn std::error::Error + Send + Sync>| TorError::Config {
        file: settings.config_file.clone(),
        cause,
    };
    let mut sources = ConfigurationSources::new_empty();
    if let Some(f) = &settings.config_file {
        if !f.is_file() {
            return Err(TorError::ConfigMissing(f.clone()));
        }
        let own = own_keys(f, settings.client_auth_dir.is_some());
        if !own.is_empty() {
            return Err(TorError::OwnKeys {
                file: Some(f.clone()),
                keys: own,
            });
        }
        sources.push_source(ConfigurationSource::from_path(f), MustRead::MustRead);
    }
    sources.push_option(format!(
        "storage.state_dir = {}",
        toml_string(&settings.state_dir)
    ));
    sources.push_option(format!(
        "storage.cache_dir = {}",
        toml_string(&settings.cache_dir)
    ));
    sources.push_option(format!(
        "vanguards.mode = \"{}\"",
        settings.vanguards.as_str()
    ));
    if let Some(dir) = &settings.client_auth_dir {
        sources.push_option(format!(
            "storage.keystore.ctor.clients = [{{ id = \"rdv-client-auth\", path = {} }}]",
            toml_string(dir)
        ));
    }
    let tree = sources.load().map_err(|e| config_error(e.into()))?;
    let resolved = tor_config::resolve_return_results::<TorClientConfig>(
        &tree,
        &ConfigResolveOptions::default(),
    )
    .map_err(|e| config_error(e.into()))?;
    if !resolved.unrecognized.is_empty() {
        return Err(TorError::UnknownKeys {
            file: settings.config_file.clone(),
            keys: resolved
                .unrecognized
                .iter()
                .map(|k| k.to_string())
                .collect(),
        });
    }
    Ok(resolved.value)
}

/// The keys of the arti configuration file `f` that rdv sets itself, and would override: the
/// state and cache directories, the vanguards mode, and (with `client_keys`) the C-tor-format
/// client keystores. A file that does not parse is left to arti to report.
fn own_keys(f: &Path, client_keys: bool) -> Vec<String> {
    let Some(table) = std::fs::read_to_string(f)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
    else {
        return Vec::new();
    };
    let has = |path: &[&str]| {
        let mut cur = &table;
        for (i, k) in path.iter().enumerate() {
            match cur.get(*k) {
                Some(toml::Value::Table(t)) if i + 1 < path.len() => cur = t,
                Some(_) if i + 1 == path.len() => return true,
                _ => return false,
            }
        }
        false
    };
    let mut keys = vec![
        &["storage", "state_dir"][..],
        &["storage", "cache_dir"][..],
        &["vanguards", "mode"][..],
    ];
    if client_keys {
        keys.push(&["storage", "keystore", "ctor", "clients"][..]);
    }
    keys.into_iter()
        .filter(|p| has(p))
        .map(|p| p.join("."))
        .collect()
}

/// Create a Tor client and bootstrap it, reporting progress through `progress` (a fraction from 0
/// to 1 and a description).
pub async fn bootstrap(
    settings: &TorSettings,
    progress: impl Fn(f32, &str) + Send + 'static,
) -> Result<Tor, TorError> {
    // The configuration is checked before anything is created on disk.
    let config = load_config(settings)?;
    for d in [&settings.state_dir, &settings.cache_dir] {
        std::fs::create_dir_all(d).map_err(|source| TorError::Dir {
            path: d.clone(),
            source,
        })?;
        restrict_permissions(d);
    }
    let client = TorClient::builder()
        .config(config)
        .create_unbootstrapped()
        .map_err(TorError::Create)?;
    let mut events = client.bootstrap_events();
    let reporter = tokio::spawn(async move {
        while let Some(status) = events.next().await {
            progress(status.as_frac(), &status.to_string());
            if status.ready_for_traffic() {
                break;
            }
        }
    });
    let result = tokio::time::timeout(settings.bootstrap_timeout, client.bootstrap()).await;
    reporter.abort();
    match result {
        Err(_) => Err(TorError::BootstrapTimeout {
            timeout: settings.bootstrap_timeout,
            config_file: settings.config_file.clone(),
        }),
        Ok(Err(e)) => Err(TorError::Bootstrap(e)),
        Ok(Ok(())) => Ok(client),
    }
}

/// arti refuses state directories others can write to.
fn restrict_permissions(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
}

/// Install the rustls crypto provider arti's TLS needs. Call once at start; later calls do nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The arti-client version rdv is built with.
pub const ARTI_VERSION: &str = env!("RDV_ARTI_CLIENT_VERSION");
