//! Embedded Tor (arti): building a client from an optional arti TOML file, bootstrapping with
//! visible progress.

use arti_client::config::{ConfigurationSource, ConfigurationSources};
use arti_client::{TorClient, TorClientConfig};
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tor_config::sources::MustRead;
use tor_rtcompat::PreferredRuntime;

/// The Tor client type used throughout.
pub type Tor = Arc<TorClient<PreferredRuntime>>;

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
    #[error("invalid arti configuration{}", .file.as_ref().map(|f| format!(" in {}", f.display())).unwrap_or_default())]
    Config {
        /// The file, if one was given.
        file: Option<PathBuf>,
        /// arti's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// arti failed to start.
    #[error("cannot start arti")]
    Create(#[source] arti_client::Error),
    /// arti failed to bootstrap.
    #[error("Tor bootstrap failed")]
    Bootstrap(#[source] arti_client::Error),
    /// Bootstrap did not finish in time.
    #[error("Tor bootstrap did not finish within {}", humantime::format_duration(*.0))]
    BootstrapTimeout(Duration),
}

fn toml_string(p: &Path) -> String {
    let s = p.display().to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Build the arti configuration: the file's settings, with our storage directories.
pub fn load_config(settings: &TorSettings) -> Result<TorClientConfig, TorError> {
    let mut sources = ConfigurationSources::new_empty();
    let config_error = |source: Box<dyn std::error::Error + Send + Sync>| TorError::Config {
        file: settings.config_file.clone(),
        source,
    };
    if let Some(f) = &settings.config_file {
        if !f.is_file() {
            return Err(TorError::ConfigMissing(f.clone()));
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
    let tree = sources.load().map_err(|e| config_error(e.into()))?;
    tor_config::resolve::<TorClientConfig>(&tree).map_err(|e| config_error(e.into()))
}

/// Create a Tor client and bootstrap it, reporting progress through `progress` (a fraction from 0
/// to 1 and a description).
pub async fn bootstrap(
    settings: &TorSettings,
    progress: impl Fn(f32, &str) + Send + 'static,
) -> Result<Tor, TorError> {
    for d in [&settings.state_dir, &settings.cache_dir] {
        std::fs::create_dir_all(d).map_err(|source| TorError::Dir {
            path: d.clone(),
            source,
        })?;
        restrict_permissions(d);
    }
    let config = load_config(settings)?;
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
        Err(_) => Err(TorError::BootstrapTimeout(settings.bootstrap_timeout)),
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
