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
    /// The arti config file could not be read or is invalid.
    #[error("arti configuration: {0}")]
    Config(String),
    /// arti failed to start or bootstrap.
    #[error("Tor bootstrap failed: {0}")]
    Bootstrap(String),
    /// Bootstrap did not finish in time.
    #[error("Tor bootstrap did not finish within {0:?} (is the network reachable? for a private network pass --tor-config)")]
    BootstrapTimeout(Duration),
}

fn toml_string(p: &Path) -> String {
    let s = p.display().to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Build the arti configuration: the file's settings, with our storage directories.
pub fn load_config(settings: &TorSettings) -> Result<TorClientConfig, TorError> {
    let mut sources = ConfigurationSources::new_empty();
    if let Some(f) = &settings.config_file {
        if !f.is_file() {
            return Err(TorError::Config(format!(
                "{} is not a readable file",
                f.display()
            )));
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
    let tree = sources
        .load()
        .map_err(|e| TorError::Config(e.to_string()))?;
    tor_config::resolve::<TorClientConfig>(&tree).map_err(|e| TorError::Config(e.to_string()))
}

/// Create a Tor client and bootstrap it, reporting progress through `progress` (a fraction from 0
/// to 1 and a description).
pub async fn bootstrap(
    settings: &TorSettings,
    progress: impl Fn(f32, &str) + Send + 'static,
) -> Result<Tor, TorError> {
    for d in [&settings.state_dir, &settings.cache_dir] {
        std::fs::create_dir_all(d)
            .map_err(|e| TorError::Config(format!("cannot create {}: {e}", d.display())))?;
        restrict_permissions(d);
    }
    let config = load_config(settings)?;
    let client = TorClient::builder()
        .config(config)
        .create_unbootstrapped()
        .map_err(|e| TorError::Bootstrap(e.to_string()))?;
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
        Ok(Err(e)) => Err(TorError::Bootstrap(e.to_string())),
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
