//! The client's configuration: `$XDG_CONFIG_HOME/rdv/config.toml` (or `~/.config/rdv/config.toml`,
//! or the file `RDV_CONFIG` names) and `RDV_SERVER`, under the flags of `offer`, `accept`,
//! `collect`, `delete`, `info` and `agent`: a default server, KDF profile and Tor settings, so
//! that an offer does not need the 62-character onion address every time. A flag given on the
//! command line wins, then the environment, then the file, then the built-in default.
//! `rdv config` prints the effective values and where each came from.

use crate::cli::{InfoArgs, OfferArgs, TransportArgs};
use crate::config::given;
use crate::config::Dur;
use anyhow::Result;
use clap::ArgMatches;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The file.
#[derive(Default, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientFile {
    /// The server (or servers, for a multi-server link) an offer goes to.
    server: Option<Servers>,
    /// The KDF profile of offers.
    kdf: Option<String>,
    #[serde(default)]
    tor: TorSection,
}

/// One server or several.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a server as \"HOST:PORT\", or a list of up to 5 of them"
)]
enum Servers {
    One(String),
    Many(Vec<String>),
}

impl Servers {
    fn list(&self) -> Vec<String> {
        match self {
            Servers::One(s) => vec![s.clone()],
            Servers::Many(v) => v.clone(),
        }
    }
}

/// How to reach servers.
#[derive(Default, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TorSection {
    /// An arti configuration file (another Tor network).
    config: Option<PathBuf>,
    /// arti's state and cache directory.
    dir: Option<PathBuf>,
    /// A running tor's SocksPort instead of the embedded Tor.
    socks: Option<String>,
    bootstrap_timeout: Option<Dur>,
    connect_timeout: Option<Dur>,
    attempt_timeout: Option<Dur>,
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Origin {
    Env(&'static str),
    File(String),
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Env(v) => write!(f, "environment ({v})"),
            Origin::File(key) => write!(f, "config file ({key})"),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// The file as loaded (an empty one when there is none).
pub(crate) struct Loaded {
    /// Where the file is looked for, and whether it was there.
    pub(crate) path: Option<PathBuf>,
    pub(crate) found: bool,
    file: ClientFile,
}

/// Where the file is: `RDV_CONFIG`, else `$XDG_CONFIG_HOME/rdv/config.toml`, else
/// `~/.config/rdv/config.toml`.
fn default_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RDV_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("rdv").join("config.toml"));
    }
    std::env::var_os("HOME").map(|h| {
        PathBuf::from(h)
            .join(".config")
            .join("rdv")
            .join("config.toml")
    })
}

/// Read the file (absent is fine, unless `RDV_CONFIG` names it; unreadable or malformed is an
/// error naming the file and, from the TOML parser, the key and line).
pub(crate) fn load() -> Result<Loaded> {
    let path = default_path();
    let named = std::env::var_os("RDV_CONFIG").is_some_and(|p| !p.is_empty());
    let Some(p) = path.clone() else {
        return Ok(Loaded {
            path,
            found: false,
            file: ClientFile::default(),
        });
    };
    if !named && !p.exists() {
        return Ok(Loaded {
            path,
            found: false,
            file: ClientFile::default(),
        });
    }
    let mut file: ClientFile = crate::config::read(&p)?;
    // Relative paths are relative to the file's directory.
    let base = p.parent().unwrap_or(Path::new("."));
    for d in [&mut file.tor.config, &mut file.tor.dir]
        .into_iter()
        .flatten()
    {
        if d.is_relative() {
            *d = base.join(&*d);
        }
    }
    Ok(Loaded {
        path,
        found: true,
        file,
    })
}

impl Loaded {
    /// Put the file's Tor settings under the transport flags that were not given.
    pub(crate) fn apply_transport(&self, t: &mut TransportArgs, m: Option<&ArgMatches>) {
        let f = &self.file.tor;
        // A transport chosen on the command line is not mixed with the file's other one.
        let chose = |ids: &[&str]| ids.iter().any(|id| given(m, id));
        if let (Some(s), false) = (
            &f.socks,
            chose(&["direct", "socks", "tor_config", "tor_dir", "client_key"]),
        ) {
            t.socks = Some(s.clone());
        }
        if f.socks.is_none() || t.socks.is_none() {
            if let (Some(c), false) = (&f.config, chose(&["direct", "socks", "tor_config"])) {
                t.tor_config = Some(c.clone());
            }
            if let (Some(d), false) = (&f.dir, chose(&["direct", "socks", "tor_dir"])) {
                t.tor_dir = Some(d.clone());
            }
        }
        for (id, v, slot) in [
            (
                "bootstrap_timeout",
                f.bootstrap_timeout,
                &mut t.bootstrap_timeout,
            ),
            ("connect_timeout", f.connect_timeout, &mut t.connect_timeout),
            ("attempt_timeout", f.attempt_timeout, &mut t.attempt_timeout),
        ] {
            if let (Some(v), false) = (v, given(m, id)) {
                *slot = v.0;
            }
        }
    }

    /// The server `rdv info` asks when none is given, on the command line or as --direct's
    /// value: the first configured one.
    pub(crate) fn apply_info(&self, a: &mut InfoArgs, m: Option<&ArgMatches>) {
        self.apply_transport(&mut a.transport, m);
        let direct_target = a.transport.direct.as_ref().is_some_and(|d| !d.is_empty());
        if a.server.is_none() && !direct_target {
            a.server = env_server().or_else(|| {
                let list = self.file.server.as_ref()?.list();
                list.into_iter().next()
            });
        }
    }

    /// The offer's servers and KDF profile when not given on the command line; an error naming
    /// the file when the file's KDF profile is one an offer cannot use (it would otherwise be
    /// reported as a `--kdf` that was never given).
    pub(crate) fn apply_offer(&self, a: &mut OfferArgs, m: Option<&ArgMatches>) -> Result<()> {
        self.apply_transport(&mut a.transport, m);
        let direct_target = a.transport.direct.as_ref().is_some_and(|d| !d.is_empty());
        if a.server.is_empty() && !direct_target {
            if let Some(s) = env_server() {
                a.server = vec![s];
            } else if let Some(s) = &self.file.server {
                a.server = s.list();
            }
        }
        if let (Some(k), false) = (&self.file.kdf, given(m, "kdf")) {
            if let Err(e) = check_kdf(k) {
                let file = self.path.as_deref().unwrap_or(Path::new("config.toml"));
                anyhow::bail!("{}: kdf = {k:?}: {e}", file.display());
            }
            a.kdf = k.clone();
        }
        Ok(())
    }

    /// The effective client settings with their origins, for `rdv config` (no flags there: the
    /// command line of another command would win over these), and what an offer would refuse
    /// of them, each as "NAME (from ORIGIN): WHY".
    pub(crate) fn effective(&self) -> (Vec<(&'static str, String, Origin)>, Vec<String>) {
        let key = |k: &str| Origin::File(k.to_string());
        let f = &self.file;
        let mut out = Vec::new();
        let mut invalid = Vec::new();
        let (server, from) = match (env_server(), &f.server) {
            (Some(s), _) => (s, Origin::Env("RDV_SERVER")),
            (None, Some(s)) => (s.list().join(" "), key("server")),
            (None, None) => ("(none: give --server)".into(), Origin::Default),
        };
        // Checked here too, so that a mistake shows before the first offer.
        let count = server.split(' ').count();
        let bad = server
            .split(' ')
            .filter(|_| from != Origin::Default)
            .find_map(|s| {
                rdv::proto::ServerAddr::parse(s)
                    .err()
                    .map(|e| e.to_string())
            })
            .or_else(|| {
                (count > 1 + rdv::proto::link::MAX_MIRRORS).then(|| {
                    format!(
                        "{count} servers; a link names at most {}",
                        1 + rdv::proto::link::MAX_MIRRORS
                    )
                })
            });
        if let Some(why) = &bad {
            invalid.push(format!("server (from {from}): {why}"));
        }
        let bad = bad.map(|e| format!("  INVALID: {e}")).unwrap_or_default();
        out.push(("server", format!("{server}{bad}"), from));
        out.push(match &f.kdf {
            Some(k) => {
                let bad = match check_kdf(k) {
                    Err(e) => {
                        invalid.push(format!("kdf (from {}): {e}", key("kdf")));
                        format!("  INVALID: {e}")
                    }
                    Ok(p) if p.params().is_weak() => {
                        "  WEAK: less work than 'moderate'; whoever sees a link guesses its passphrase cheaply".into()
                    }
                    Ok(_) => String::new(),
                };
                ("kdf", format!("{k}{bad}"), key("kdf"))
            }
            None => ("kdf", "default".into(), Origin::Default),
        });
        let transport = match &f.tor.socks {
            Some(s) => (format!("SOCKS proxy {s}"), key("tor.socks")),
            None => ("embedded Tor (arti)".into(), Origin::Default),
        };
        out.push(("transport", transport.0, transport.1));
        if f.tor.socks.is_none() {
            out.push(match &f.tor.config {
                Some(c) => ("tor.config", c.display().to_string(), key("tor.config")),
                None => (
                    "tor.config",
                    "(the public Tor network)".into(),
                    Origin::Default,
                ),
            });
            out.push(match &f.tor.dir {
                Some(d) => ("tor.dir", d.display().to_string(), key("tor.dir")),
                None => (
                    "tor.dir",
                    crate::transport::default_tor_dir()
                        .map(|d| d.display().to_string())
                        .unwrap_or_else(|e| format!("({e})")),
                    Origin::Default,
                ),
            });
        }
        let dur = |v: Option<Dur>, default: &str, k: &str| match v {
            Some(d) => (humantime::format_duration(d.0).to_string(), key(k)),
            None => (default.to_string(), Origin::Default),
        };
        for (name, v, default) in [
            ("tor.bootstrap_timeout", f.tor.bootstrap_timeout, "3m"),
            ("tor.connect_timeout", f.tor.connect_timeout, "2m"),
            ("tor.attempt_timeout", f.tor.attempt_timeout, "30s"),
        ] {
            let (value, from) = dur(v, default, name);
            out.push((name, value, from));
        }
        (out, invalid)
    }
}

/// A KDF profile as an offer checks it: known, within the limits every client accepts, and
/// parameters Argon2id takes.
pub(crate) fn check_kdf(k: &str) -> Result<rdv::proto::KdfProfile, rdv::proto::kdf::KdfError> {
    let p = rdv::proto::KdfProfile::parse(k)?;
    rdv::proto::kdf::check_profile(p, &rdv::proto::KdfLimits::default())?;
    Ok(p)
}

/// `RDV_SERVER`, if set and not empty.
fn env_server() -> Option<String> {
    std::env::var("RDV_SERVER").ok().filter(|s| !s.is_empty())
}

/// Run `rdv config`.
pub(crate) fn print() -> Result<()> {
    let loaded = load()?;
    let file = match (&loaded.path, loaded.found) {
        (Some(p), true) => p.display().to_string(),
        (Some(p), false) => format!("{} (not there: built-in defaults)", p.display()),
        (None, _) => "(none: neither HOME nor XDG_CONFIG_HOME is set)".into(),
    };
    // What an offer would refuse makes the command fail (after the listing, in text), so that a
    // script checking a configuration does not have to read the text.
    let (settings, invalid) = loaded.effective();
    let failed = || {
        anyhow::Error::new(crate::error::CliError::new(
            "invalid_setting",
            rdv::client::ErrorKind::BadInput,
            format!(
                "{} client setting(s) wrong, as an offer would find them: {}",
                invalid.len(),
                invalid.join("; ")
            ),
        ))
    };
    if crate::out::json() {
        if !invalid.is_empty() {
            return Err(failed());
        }
        let mut f = serde_json::Map::new();
        f.insert("config_file".into(), file.into());
        f.insert("config_file_found".into(), loaded.found.into());
        let mut s = serde_json::Map::new();
        for (name, value, from) in &settings {
            s.insert(
                (*name).into(),
                serde_json::json!({ "value": value, "from": from.to_string() }),
            );
        }
        f.insert("settings".into(), s.into());
        crate::out::emit("config", f)?;
        return Ok(());
    }
    println!("config file: {file}");
    let width = settings.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
    for (name, value, from) in settings {
        println!("{name:width$}  {value}    ({from})");
    }
    if !invalid.is_empty() {
        return Err(failed());
    }
    Ok(())
}
