//! Protocol operations, each on its own connection, through the library's client: a fresh
//! connection and version exchange per operation (over Tor every operation gets its own
//! circuit), then one request.

use anyhow::{anyhow, bail, ensure, Result};
use rand::rngs::StdRng;
use rand::{Rng, RngCore};
use rdv::client::direct::DirectConnector;
use rdv::client::{Client, ClientConfig, Connection};
use rdv::clock::SystemClock;
use rdv::proto::{
    BucketId, ClientPolicy, DeleteCheck, Locator, Request, Response, SealedLink,
    MAX_LINKS_PER_BUCKET, SEALED_LINK_LEN,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The open window of the servers the load generator starts (`rdv serve`'s default).
const WINDOW_SECS: u64 = 600;

/// Whether stores check the returned ID against the default client policy (off only against a
/// server whose admission cap was lifted to measure the store's own capacity).
static CHECK_POLICY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Stop checking IDs against the client policy (for `--max-seq` servers).
pub(crate) fn skip_policy_check() {
    CHECK_POLICY.store(false, std::sync::atomic::Ordering::Relaxed);
}

/// A client that connects to `addr` over plain TCP.
pub(crate) fn client(addr: SocketAddr) -> Client {
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(20),
        request_timeout: Duration::from_secs(20),
        // Workers keep one connection for many requests.
        connection_budget: None,
        ..Default::default()
    };
    Client::new(
        Arc::new(DirectConnector::to(addr.to_string())),
        config,
        Arc::new(SystemClock),
    )
}

/// A new connection after the version exchange (the connector has the address; the one passed
/// here only names the server in errors).
pub(crate) async fn connect(c: &Client) -> Result<Connection> {
    let named = rdv::proto::ServerAddr {
        host: "127.0.0.1".into(),
        port: 7625,
    };
    Ok(c.connect(&named).await?)
}

/// One store on `conn`; the returned ID is checked against the default client policy, as a
/// real client would, so a server that hands out IDs clients refuse shows up as failures.
pub(crate) async fn store_on(
    conn: &mut Connection,
    link: SealedLink,
    check: DeleteCheck,
) -> Result<BucketId> {
    let req = Request::Store {
        link,
        delete_check: check,
    };
    match conn.request(&req).await? {
        Response::Stored { id } => {
            if CHECK_POLICY.load(std::sync::atomic::Ordering::Relaxed) {
                ClientPolicy::default()
                    .check(id, rdv::clock::Clock::now(&SystemClock), WINDOW_SECS)
                    .map_err(|v| anyhow!("store: the default client policy refuses the ID: {v}"))?;
            }
            Ok(id)
        }
        r => bail!("store: unexpected {}", r.kind()),
    }
}

/// A store on a fresh connection.
pub(crate) async fn store(c: &Client, link: SealedLink, check: DeleteCheck) -> Result<BucketId> {
    let mut conn = connect(c).await?;
    store_on(&mut conn, link, check).await
}

/// A fetch on a fresh connection; the answer must be a full bucket.
pub(crate) async fn fetch(c: &Client, locator: Locator) -> Result<Vec<SealedLink>> {
    let mut conn = connect(c).await?;
    match conn.request(&Request::Fetch { locator }).await? {
        Response::Bucket { links } => {
            ensure!(
                links.len() == MAX_LINKS_PER_BUCKET,
                "fetch: {} links, not a full bucket",
                links.len()
            );
            Ok(links)
        }
        r => bail!("fetch: unexpected {}", r.kind()),
    }
}

/// A random sealed link and check value (the server never looks inside).
pub(crate) fn random_link(rng: &mut StdRng) -> (SealedLink, DeleteCheck) {
    let mut b = [0u8; SEALED_LINK_LEN];
    rng.fill_bytes(&mut b);
    (SealedLink(b), DeleteCheck(rng.gen()))
}
