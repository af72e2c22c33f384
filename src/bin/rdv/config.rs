//! `rdv serve --config FILE`: the TOML configuration file.
//!
//! The file holds the same settings as `serve`'s flags, in sections (rdv.example.toml shows them
//! all). A flag given on the command line wins over the file; the file wins over the defaults.
//! Unknown keys and wrong types are errors naming the key. Relative paths in the file are relative
//! to the file's directory. The library checks the values (`validate()`), whichever the source.

use crate::cli::{parse_vanguards, ServeArgs};
use anyhow::{Context, Result};
use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Most bytes read from a configuration file.
const FILE_LIMIT: u64 = 1 << 20;

/// A duration written as text (`"10m"`, `"7days"`, `"30s"`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Dur(pub(crate) Duration);

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::cli::parse_span(&s).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration ({e}); write it like \"30s\", \"10m\" or \"7days\""
            ))
        })
    }
}

/// The whole file.
#[derive(Default, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServeFile {
    /// Data directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<PathBuf>,
    /// TCP listeners.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) listen: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) onion: OnionSection,
    #[serde(default)]
    pub(crate) tor: TorSection,
    #[serde(default)]
    pub(crate) store: StoreSection,
    #[serde(default)]
    pub(crate) limits: LimitsSection,
    #[serde(default)]
    pub(crate) health: HealthSection,
    #[serde(default)]
    pub(crate) metrics: MetricsSection,
    #[serde(default)]
    pub(crate) stamps: StampsSection,
}

/// `[stamps]`.
#[derive(Default, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct StampsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) effort: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) required: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) unstamped_share: Option<u8>,
}

/// `[metrics]`.
#[derive(Default, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetricsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) allow_remote: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) batch: Option<usize>,
}

/// `[onion]`.
#[derive(Default, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct OnionSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) nickname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_streams_per_circuit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) intro_rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) intro_burst: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) intro_points: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_rendezvous: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) vanguards: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pow: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) authorized_clients: Option<PathBuf>,
}

/// `[tor]`.
#[derive(Default, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct TorSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) config: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bootstrap_timeout: Option<Dur>,
}

/// `[store]`.
#[derive(Default, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) backend: Option<crate::store::Backend>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) open_window: Option<Dur>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ttl: Option<Dur>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_links: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) answer_share: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) gc_interval: Option<Dur>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) gc_batch: Option<usize>,
}

/// `[limits]`.
#[derive(Default, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) waiting_room: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) idle_timeout: Option<Dur>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rate: Option<u32>,
}

/// `[health]`.
#[derive(Default, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) probe_interval: Option<Dur>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) warn_unreachable_after: Option<Dur>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) exit_when_unreachable: Option<Dur>,
}

/// Where each setting that came from the file is, by its flag's name (`open_window` →
/// `store.open_window`), so that a value the library refuses is named as the file spells it.
#[derive(Default, Debug)]
pub(crate) struct Origins {
    file: Option<PathBuf>,
    keys: HashMap<&'static str, &'static str>,
}

impl Origins {
    /// The configuration file, if a setting came from it.
    pub(crate) fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Whether the setting with this flag's id came from the file.
    pub(crate) fn in_file(&self, flag_id: &str) -> bool {
        self.keys.contains_key(flag_id)
    }

    /// Name a setting for an error message: `FILE: store.ttl` if it came from the file,
    /// `--ttl` otherwise.
    pub(crate) fn name(&self, flag_id: &str) -> String {
        match (self.keys.get(flag_id), &self.file) {
            (Some(key), Some(file)) => format!("{} ({key})", file.display()),
            _ => format!("--{}", flag_id.replace('_', "-")),
        }
    }
}

/// Parse a configuration file's text (`file` names it in errors).
pub(crate) fn parse<T: serde::de::DeserializeOwned>(text: &str, file: &Path) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        // toml's message names the key and quotes the line (never a password from it).
        let message = crate::store::redact_passwords(e.to_string().trim_end());
        anyhow::anyhow!("{}: {message}", file.display())
    })
}

/// Read and parse a configuration file (the server's, or the client's).
pub(crate) fn read<T: serde::de::DeserializeOwned>(file: &Path) -> Result<T> {
    let bytes = crate::term::read_file_limited(file, FILE_LIMIT, "a configuration file")
        .with_context(|| format!("reading the configuration file {}", file.display()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        anyhow::anyhow!(
            "the configuration file {} is not UTF-8 text",
            file.display()
        )
    })?;
    parse(text, file)
}

/// Apply the file to the flags: every setting the file has and the command line does not.
/// `from_cli(id)` says whether the flag with clap id `id` was given on the command line.
pub(crate) fn apply(
    f: ServeFile,
    file: &Path,
    base: &Path,
    a: &mut ServeArgs,
    from_cli: impl Fn(&str) -> bool,
) -> Result<Origins> {
    let mut origins = Origins::default();
    let relative = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
    macro_rules! set {
        ($value:expr, $id:literal, $key:literal, $field:expr) => {
            if let Some(v) = $value {
                if !from_cli($id) {
                    $field = v;
                    origins.keys.insert($id, $key);
                }
            }
        };
    }
    set!(f.data.map(relative).map(Some), "data", "data", a.data);
    set!(f.listen, "listen", "listen", a.listen);
    let o = f.onion;
    set!(
        o.enabled.map(|e| !e),
        "no_onion",
        "onion.enabled",
        a.no_onion
    );
    set!(o.port, "onion_port", "onion.port", a.onion_port);
    set!(o.nickname, "nickname", "onion.nickname", a.nickname);
    set!(
        o.max_streams_per_circuit,
        "max_streams_per_circuit",
        "onion.max_streams_per_circuit",
        a.max_streams_per_circuit
    );
    set!(o.intro_rate, "intro_rate", "onion.intro_rate", a.intro_rate);
    set!(
        o.intro_burst,
        "intro_burst",
        "onion.intro_burst",
        a.intro_burst
    );
    set!(
        o.intro_points,
        "intro_points",
        "onion.intro_points",
        a.intro_points
    );
    set!(
        o.max_rendezvous,
        "max_rendezvous",
        "onion.max_rendezvous",
        a.max_rendezvous
    );
    if let Some(v) = &o.vanguards {
        let parsed = parse_vanguards(v)
            .map_err(|e| anyhow::anyhow!("{}: onion.vanguards = {v:?}: {e}", file.display()))?;
        set!(Some(parsed), "vanguards", "onion.vanguards", a.vanguards);
    }
    set!(o.pow, "pow", "onion.pow", a.pow);
    set!(
        o.authorized_clients.map(relative).map(Some),
        "authorized_clients",
        "onion.authorized_clients",
        a.authorized_clients
    );
    let t = f.tor;
    set!(
        t.config.map(relative).map(Some),
        "tor_config",
        "tor.config",
        a.tor_config
    );
    set!(
        t.bootstrap_timeout.map(|d| d.0),
        "bootstrap_timeout",
        "tor.bootstrap_timeout",
        a.bootstrap_timeout
    );
    let s = f.store;
    set!(s.backend, "store", "store.backend", a.store);
    set!(
        s.open_window.map(|d| d.0),
        "open_window",
        "store.open_window",
        a.open_window
    );
    set!(s.ttl.map(|d| d.0), "ttl", "store.ttl", a.ttl);
    set!(
        s.max_links.map(Some),
        "max_links",
        "store.max_links",
        a.max_links
    );
    set!(
        s.answer_share,
        "answer_share",
        "store.answer_share",
        a.answer_share
    );
    set!(
        s.gc_interval.map(|d| d.0),
        "gc_interval",
        "store.gc_interval",
        a.gc_interval
    );
    set!(s.gc_batch, "gc_batch", "store.gc_batch", a.gc_batch);
    let l = f.limits;
    set!(
        l.max_connections,
        "max_connections",
        "limits.max_connections",
        a.max_connections
    );
    set!(
        l.waiting_room,
        "waiting_room",
        "limits.waiting_room",
        a.waiting_room
    );
    set!(
        l.idle_timeout.map(|d| d.0),
        "idle_timeout",
        "limits.idle_timeout",
        a.idle_timeout
    );
    set!(l.rate, "rate", "limits.rate", a.rate);
    let h = f.health;
    set!(
        h.probe_interval.map(|d| d.0),
        "probe_interval",
        "health.probe_interval",
        a.probe_interval
    );
    set!(
        h.warn_unreachable_after.map(|d| d.0),
        "warn_unreachable_after",
        "health.warn_unreachable_after",
        a.warn_unreachable_after
    );
    set!(
        h.exit_when_unreachable.map(|d| Some(d.0)),
        "exit_when_unreachable",
        "health.exit_when_unreachable",
        a.exit_when_unreachable
    );
    let m = f.metrics;
    set!(m.listen.map(Some), "metrics", "metrics.listen", a.metrics);
    set!(
        m.allow_remote,
        "metrics_allow_remote",
        "metrics.allow_remote",
        a.metrics_allow_remote
    );
    set!(m.batch, "metrics_batch", "metrics.batch", a.metrics_batch);
    let st = f.stamps;
    set!(st.effort, "stamp_effort", "stamps.effort", a.stamp_effort);
    set!(
        st.required,
        "require_stamps",
        "stamps.required",
        a.require_stamps
    );
    set!(
        st.unstamped_share,
        "unstamped_share",
        "stamps.unstamped_share",
        a.unstamped_share
    );
    if !origins.keys.is_empty() {
        origins.file = Some(base.to_path_buf());
    }
    Ok(origins)
}

/// Whether the flag with clap id `id` was given on the command line (or in its environment
/// variable), so that a configuration file must not override it.
pub(crate) fn given(matches: Option<&ArgMatches>, id: &str) -> bool {
    matches.is_some_and(|m| {
        matches!(
            m.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    })
}

/// Read `--config` (if given) into the flags, with the command line winning.
pub(crate) fn load(a: &mut ServeArgs, matches: Option<&ArgMatches>) -> Result<Origins> {
    let Some(file) = a.config.clone() else {
        return Ok(Origins::default());
    };
    let parsed: ServeFile = read(&file)?;
    let from_cli = |id: &str| given(matches, id);
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let mut origins = apply(parsed, &file, &base, a, from_cli)?;
    if origins.file.is_some() {
        origins.file = Some(file);
    }
    Ok(origins)
}

/// The effective settings as a configuration file (`serve --print-config`): feeding it back
/// gives the same settings.
pub(crate) fn effective(a: &ServeArgs) -> ServeFile {
    let abs = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
    ServeFile {
        data: a.data.as_ref().map(abs),
        listen: Some(a.listen.clone()),
        onion: OnionSection {
            enabled: Some(!a.no_onion),
            port: Some(a.onion_port),
            nickname: Some(a.nickname.clone()),
            max_streams_per_circuit: Some(a.max_streams_per_circuit),
            intro_rate: Some(a.intro_rate),
            intro_burst: Some(a.intro_burst),
            intro_points: Some(a.intro_points),
            max_rendezvous: Some(a.max_rendezvous),
            vanguards: Some(a.vanguards.as_str().to_string()),
            pow: Some(a.pow),
            authorized_clients: a.authorized_clients.as_ref().map(abs),
        },
        tor: TorSection {
            config: a.tor_config.as_ref().map(abs),
            bootstrap_timeout: Some(Dur(a.bootstrap_timeout)),
        },
        store: StoreSection {
            backend: Some(crate::store::Backend(a.store.redacted())),
            open_window: Some(Dur(a.open_window)),
            ttl: Some(Dur(a.ttl)),
            max_links: a.max_links,
            answer_share: Some(a.answer_share),
            gc_interval: Some(Dur(a.gc_interval)),
            gc_batch: Some(a.gc_batch),
        },
        limits: LimitsSection {
            max_connections: Some(a.max_connections),
            waiting_room: Some(a.waiting_room),
            idle_timeout: Some(Dur(a.idle_timeout)),
            rate: Some(a.rate),
        },
        health: HealthSection {
            probe_interval: Some(Dur(a.probe_interval)),
            warn_unreachable_after: Some(Dur(a.warn_unreachable_after)),
            exit_when_unreachable: a.exit_when_unreachable.map(Dur),
        },
        metrics: MetricsSection {
            listen: a.metrics.clone(),
            allow_remote: Some(a.metrics_allow_remote),
            batch: Some(a.metrics_batch),
        },
        stamps: StampsSection {
            effort: Some(a.stamp_effort),
            required: Some(a.require_stamps),
            unstamped_share: Some(a.unstamped_share),
        },
    }
}

/// The TOML text of [`effective`].
pub(crate) fn effective_text(a: &ServeArgs) -> Result<String> {
    let mut text = String::from(
        "# rdv serve: effective settings (rdv serve --print-config).\n\
         # max_links absent: from the free disk space, derived again every gc_interval (redb); 10000000 (PostgreSQL).\n\
         # exit_when_unreachable absent: keep running. metrics.listen absent: no metrics.\n",
    );
    text.push_str(&toml::to_string(&effective(a)).context("writing the settings as TOML")?);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Cmd};
    use clap::{CommandFactory, FromArgMatches};

    /// Parse `rdv serve ARGS…` as main does, with the configuration file applied.
    fn serve(args: &[&str]) -> Result<(ServeArgs, Origins)> {
        let argv = ["rdv", "serve"].iter().chain(args);
        let m = Cli::command().try_get_matches_from(argv)?;
        let Cmd::Serve(mut a) = Cli::from_arg_matches(&m)?.cmd else {
            unreachable!()
        };
        let o = load(&mut a, m.subcommand_matches("serve"))?;
        Ok((a, o))
    }

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    #[test]
    fn the_file_sets_and_the_command_line_wins() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "rdv.toml",
            "data = \"state\"\nlisten = [\"127.0.0.1:9\"]\n\
             [onion]\nenabled = false\nport = 80\nvanguards = \"full\"\nauthorized_clients = \"/abs/clients\"\n\
             [store]\nttl = \"2days\"\nopen_window = \"5m\"\nmax_links = 77\n\
             [limits]\nrate = 7\nmax_connections = 9\n\
             [health]\nexit_when_unreachable = \"1h\"\n[metrics]\nlisten = \"127.0.0.1:9464\"\n\
             [tor]\nconfig = \"arti.toml\"\n",
        );
        let (a, o) = serve(&["--config", &f, "--rate", "3", "--listen", "127.0.0.1:1"]).unwrap();
        // From the file, relative paths against the file's directory.
        assert_eq!(a.data.as_deref(), Some(dir.path().join("state").as_path()));
        assert_eq!(
            a.tor_config.as_deref(),
            Some(dir.path().join("arti.toml").as_path())
        );
        assert_eq!(
            a.authorized_clients.as_deref(),
            Some(Path::new("/abs/clients"))
        );
        assert!(a.no_onion);
        assert_eq!(a.onion_port, 80);
        assert_eq!(a.vanguards, rdv::tor::Vanguards::Full);
        assert_eq!(a.ttl, Duration::from_secs(2 * 86400));
        assert_eq!(a.open_window, Duration::from_secs(300));
        assert_eq!(a.max_links, Some(77));
        assert_eq!(a.max_connections, 9);
        assert_eq!(a.exit_when_unreachable, Some(Duration::from_secs(3600)));
        assert_eq!(a.metrics.as_deref(), Some("127.0.0.1:9464"));
        // The command line wins, lists included.
        assert_eq!(a.rate, 3);
        assert_eq!(a.listen, ["127.0.0.1:1"]);
        // Untouched by either: the default.
        assert_eq!(a.idle_timeout, Duration::from_secs(30));
        // Names for errors.
        assert_eq!(o.name("ttl"), format!("{f} (store.ttl)"));
        assert_eq!(o.name("rate"), "--rate");
        assert_eq!(o.name("idle_timeout"), "--idle-timeout");
        // A flag given explicitly with its default value still wins over the file.
        let (a, _) = serve(&["--config", &f, "--ttl", "7d"]).unwrap();
        assert_eq!(a.ttl, Duration::from_secs(7 * 86400));
        let (a, _) = serve(&["--config", &f, "--onion-port", "7625"]).unwrap();
        assert_eq!(a.onion_port, 7625);
    }

    #[test]
    fn the_store_backend_comes_from_the_file_and_a_password_never_from_argv() {
        let dir = tempfile::tempdir().unwrap();
        let url = "postgres://rdv:pw-in-file@127.0.0.1:5432/rdv";
        let f = write(
            dir.path(),
            "pg.toml",
            &format!("data = \"d\"\n[store]\nbackend = \"{url}\"\n"),
        );
        let (a, o) = serve(&["--config", &f]).unwrap();
        assert_eq!(a.store.as_str(), url);
        // Nor does Debug (of the settings, or of the file's sections).
        let shown = format!("{a:?}");
        assert!(!shown.contains("pw-in-file"), "{shown}");
        assert!(
            shown.contains("postgres://rdv@127.0.0.1:5432/rdv"),
            "{shown}"
        );
        let file: ServeFile = toml::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let shown = format!("{file:?}");
        assert!(!shown.contains("pw-in-file"), "{shown}");
        crate::store::refuse_password_in_argv(&a, &o).expect("a password in the file is fine");
        assert!(matches!(
            crate::serve::settings(&a).unwrap().0,
            crate::store::StoreChoice::Postgres(_)
        ));
        // --print-config never writes the password out.
        let text = effective_text(&a).unwrap();
        assert!(!text.contains("pw-in-file"), "{text}");
        assert!(
            text.contains("backend = \"postgres://rdv@127.0.0.1:5432/rdv\""),
            "{text}"
        );
        // On the command line a password is refused, without one it is taken.
        let (a, o) = serve(&["--data", "d", "--store", url]).unwrap();
        let e = crate::store::refuse_password_in_argv(&a, &o).unwrap_err();
        assert!(e.to_string().contains("process list"), "{e}");
        let (a, o) = serve(&["--data", "d", "--store", "postgres://rdv@127.0.0.1/rdv"]).unwrap();
        crate::store::refuse_password_in_argv(&a, &o).unwrap();
        // A syntax error on that line: toml quotes the line, never with the password.
        let bad = write(
            dir.path(),
            "bad.toml",
            "[store]\nbackend = \"postgres://rdv:pw\\qin-file@127.0.0.1/rdv\"\n",
        );
        let e = format!("{:#}", serve(&["--config", &bad]).unwrap_err());
        assert!(e.contains("postgres://rdv:****@"), "{e}");
        assert!(!e.contains("in-file"), "{e}");
        // Neither redb nor a connection string: named.
        let (a, _) = serve(&["--data", "d", "--store", "sqlite"]).unwrap();
        let e = crate::serve::settings(&a).err().expect("refused");
        assert_eq!(e.key, "store");
    }

    #[test]
    fn print_config_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "a.toml",
            "data = \"d\"\n[store]\nttl = \"3h\"\n[health]\nprobe_interval = \"90s\"\n[onion]\nintro_points = 5\n",
        );
        let (a, _) = serve(&["--config", &f, "--rate", "11", "--listen", "127.0.0.1:5"]).unwrap();
        let first = effective_text(&a).unwrap();
        let g = write(dir.path(), "b.toml", &first);
        let (b, _) = serve(&["--config", &g]).unwrap();
        assert_eq!(effective(&a), effective(&b));
        assert_eq!(effective_text(&b).unwrap(), first);
        assert_eq!(b.rate, 11);
        assert_eq!(b.ttl, Duration::from_secs(3 * 3600));
        assert_eq!(b.intro_points, 5);
        assert_eq!(b.listen, ["127.0.0.1:5"]);
        // Defaults are written out in full, and read back as themselves.
        let (c, _) = serve(&["--data", "x"]).unwrap();
        let h = write(dir.path(), "c.toml", &effective_text(&c).unwrap());
        let (d, _) = serve(&["--config", &h]).unwrap();
        assert_eq!(effective(&c), effective(&d));
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_named() {
        let dir = tempfile::tempdir().unwrap();
        for (text, wanted) in [
            ("[store]\nttll = \"1d\"\n", "ttll"),
            ("[onoin]\nport = 1\n", "onoin"),
            ("datadir = \"x\"\n", "datadir"),
            ("[limits]\nrate = \"fast\"\n", "rate"),
            ("[store]\nttl = \"soon\"\n", "not a duration"),
            ("[onion]\nport = 70000\n", "port"),
            ("[store\n", "expected"),
        ] {
            let f = write(dir.path(), "bad.toml", text);
            let e = format!("{:#}", serve(&["--config", &f]).unwrap_err());
            assert!(
                e.contains(wanted) && e.contains("bad.toml"),
                "{text:?}: {e}"
            );
        }
        let f = write(dir.path(), "v.toml", "[onion]\nvanguards = \"max\"\n");
        let e = format!("{:#}", serve(&["--config", &f]).unwrap_err());
        assert!(
            e.contains("onion.vanguards") && e.contains("lite, full or disabled"),
            "{e}"
        );
        assert!(e.contains("v.toml"), "the file is named: {e}");
        let e = format!(
            "{:#}",
            serve(&["--config", "/nonexistent/rdv.toml"]).unwrap_err()
        );
        assert!(e.contains("/nonexistent/rdv.toml"), "{e}");
    }

    #[test]
    fn the_example_file_parses_and_matches_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("rdv.example.toml");
        let (a, _) = serve(&["--config", example.to_str().unwrap()]).unwrap();
        let (d, _) = serve(&["--data", "/var/lib/rdv"]).unwrap();
        let mut ea = effective(&a);
        let mut ed = effective(&d);
        // The example names a data directory and a client-key directory (commented out or not);
        // everything else it shows is the default.
        ea.onion.authorized_clients = None;
        ed.onion.authorized_clients = None;
        ea.tor.config = None;
        ed.tor.config = None;
        assert_eq!(ea, ed);
        // And it names every setting the effective configuration has (a key left out of the
        // example is one nobody finds), commented out where it has no default.
        let text = std::fs::read_to_string(&example).unwrap();
        let all: toml::Table = toml::from_str(&toml::to_string(&ed).unwrap()).unwrap();
        let named = |key: &str| {
            text.lines().any(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.starts_with(&format!("{key} ="))
            })
        };
        for (section, keys) in &all {
            match keys {
                toml::Value::Table(keys) => {
                    assert!(text.contains(&format!("[{section}]")), "[{section}]");
                    for key in keys.keys() {
                        assert!(named(key), "the example lacks {section}.{key}");
                    }
                }
                _ => assert!(named(section), "the example lacks {section}"),
            }
        }
    }
}
