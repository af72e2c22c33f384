//! `rdv accept`, `rdv delete` and `rdv info`.

use crate::cli::{AcceptArgs, DeleteArgs, InfoArgs};
use crate::term::read_passphrase_interactive;
use crate::transport::make_client;
use anyhow::{anyhow, Context, Result};
use rdv::proto::{ClientPolicy, DeleteToken, Passphrase, RdvLink, ServerAddr};
use std::io::Write;
use std::time::Duration;

/// Run `rdv accept`.
pub(crate) async fn run(a: AcceptArgs) -> Result<()> {
    let link = RdvLink::parse(a.link.trim()).context("invalid link")?;
    let passphrase = match (&link.passphrase, &a.passphrase) {
        (_, Some(p)) => Some(Passphrase::new(p.clone())),
        (Some(_), None) => None,
        (None, None) => read_passphrase_interactive()?,
    };
    let client = make_client(&a.transport, &link.server, ClientPolicy::default()).await?;
    let found = client.accept(&link, passphrase).await?;
    eprintln!(
        "opened link {} of {} in the bucket",
        found.index + 1,
        found.tried
    );
    let mut out = std::io::stdout().lock();
    out.write_all(&found.payload)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Run `rdv delete`.
pub(crate) async fn delete(a: DeleteArgs) -> Result<()> {
    let link = RdvLink::parse(a.link.trim()).context("invalid link")?;
    let token = DeleteToken::parse(a.token.trim()).ok_or_else(|| {
        anyhow!("--token must be the 43-character delete token printed by rdv offer")
    })?;
    let client = make_client(&a.transport, &link.server, ClientPolicy::default()).await?;
    client.delete(&link, &token).await?;
    println!("deleted");
    Ok(())
}

/// Run `rdv info`.
pub(crate) async fn info(a: InfoArgs) -> Result<()> {
    let server = ServerAddr::parse(&a.server).with_context(|| format!("server {:?}", a.server))?;
    let client = make_client(&a.transport, &server, ClientPolicy::default()).await?;
    let i = client.info(&server).await?;
    println!("protocol version: {}", i.version);
    println!("links per bucket: {}", i.max_links_per_bucket);
    println!(
        "open window: {}",
        humantime::format_duration(Duration::from_secs(i.open_window_secs))
    );
    println!(
        "ttl: {}",
        humantime::format_duration(Duration::from_secs(i.ttl_secs))
    );
    println!("server time: {}", i.server_time);
    Ok(())
}
