//! `rdv serve --check-config` (and the check before `--print-config`): every problem of the
//! effective settings, each named by its flag or by file and key, found without starting
//! anything (no Tor, no database connection, no listener).

use super::{onion_settings, setting_error, settings};
use crate::cli::ServeArgs;
use crate::config::Origins;
use crate::error::CliError;
use anyhow::Result;

/// Settings a server can run with but that clients with the default policy refuse: warned of
/// at start and by `--check-config`, since nobody with default settings could use the server.
pub(crate) fn refused_by_default_clients(a: &ServeArgs, origins: &Origins) -> Vec<String> {
    let policy = rdv::proto::ClientPolicy::default();
    let mut found = Vec::new();
    if a.open_window.as_secs() > policy.max_open_window_secs {
        found.push(format!(
            "{} {}: clients refuse a bucket open longer than {} by default (their --max-window); offers to this server fail with server_unacceptable unless every client raises it",
            origins.name("open_window"),
            humantime::format_duration(a.open_window),
            humantime::format_duration(std::time::Duration::from_secs(policy.max_open_window_secs)),
        ));
    }
    if a.stamp_effort > policy.max_effort {
        found.push(format!(
            "{} {}: clients refuse to pay more than {} by default (their --max-effort); offers to this server fail unless every client raises it",
            origins.name("stamp_effort"),
            a.stamp_effort,
            policy.max_effort,
        ));
    }
    if a.stamp_effort < policy.min_effort {
        found.push(format!(
            "{} {}: clients count a stamp below {} as unproven (their --min-effort), so every accept reports 0 verified links",
            origins.name("stamp_effort"),
            a.stamp_effort,
            policy.min_effort,
        ));
    }
    found
}

/// Every problem found, in a stable order; empty when the settings can run.
pub(crate) async fn problems(a: &ServeArgs, origins: &Origins) -> Vec<String> {
    let mut found = Vec::new();
    let mut note = |e: anyhow::Error| found.push(rdv::config::report(&*e).to_string());
    if let Err(e) = settings(a) {
        note(setting_error(e, origins));
    }
    if let Err(e) = onion_settings(a) {
        note(setting_error(e, origins));
    }
    if let (Some(mode), false) = (a.adversary, a.testing_only) {
        note(anyhow::anyhow!("--adversary {mode} makes the server attack its clients; it runs only with --testing-only as well"));
    }
    match &a.data {
        None => note(anyhow::anyhow!(
            "no data directory: give --data DIR or `data = \"DIR\"` in the configuration file"
        )),
        // Someone else's, or open to others and shared: refused at start (before, the check
        // said the settings were fine and the start then refused them).
        Some(d) => {
            if let Err(e) = rdv::store::db::check_private_dir(d) {
                note(anyhow::Error::new(e).context(origins.name("data")));
            }
        }
    }
    if a.no_onion && a.listen.is_empty() {
        note(anyhow::anyhow!(
            "{} is off and there is no {}: the server would not be reachable at all",
            origins.name("no_onion"),
            origins.name("listen")
        ));
    }
    for addr in &a.listen {
        if let Err(e) = listen_address(addr).await {
            note(anyhow::anyhow!("{} {addr:?}: {e}", origins.name("listen")));
        }
    }
    if let Some(m) = &a.metrics {
        if let Err(e) = super::metrics_address(m, a.metrics_allow_remote, origins) {
            note(e);
        }
    }
    match (a.no_onion, &a.authorized_clients) {
        (true, Some(_)) => note(anyhow::anyhow!(
            "{} restricts the onion service, and the onion service is off",
            origins.name("authorized_clients")
        )),
        (false, Some(dir)) => {
            if let Err(e) = rdv::tor::auth::check_authorized_clients(dir) {
                note(anyhow::Error::new(e).context(origins.name("authorized_clients")));
            }
        }
        _ => {}
    }
    if !a.no_onion {
        let data = a.data.clone().unwrap_or_default();
        let tor = super::tor_settings(a, &data, None);
        if let Err(e) = rdv::tor::load_config(&tor) {
            note(anyhow::Error::new(e).context(origins.name("tor_config")));
        }
    }
    found
}

/// A listen address: `HOST:PORT` that resolves (nothing is bound).
pub(crate) async fn listen_address(addr: &str) -> std::io::Result<()> {
    if addr
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "needs HOST:PORT (e.g. 127.0.0.1:7625)",
        ));
    }
    if tokio::net::lookup_host(addr).await?.next().is_none() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "resolves to no address",
        ));
    }
    Ok(())
}

/// All the problems as one error (code `invalid_setting`), or nothing.
pub(crate) async fn refuse_problems(a: &ServeArgs, origins: &Origins) -> Result<()> {
    let found = problems(a, origins).await;
    if found.is_empty() {
        return Ok(());
    }
    let list = found
        .iter()
        .map(|p| format!("\n  - {p}"))
        .collect::<String>();
    Err(CliError::new(
        "invalid_setting",
        rdv::client::ErrorKind::BadInput,
        format!(
            "{} problem{} in the settings:{list}",
            found.len(),
            if found.len() == 1 { "" } else { "s" }
        ),
    )
    .into())
}
