//! The library API in a few lines: a server over an on-disk store on loopback TCP, then an
//! initiator offering a link and an accepter opening it.
//!
//! Run with `cargo run --example rendezvous`.

use rdv::client::direct::DirectConnector;
use rdv::client::{generate_passphrase, Client, ClientConfig};
use rdv::clock::SystemClock;
use rdv::proto::padding::FillerSecret;
use rdv::proto::{KdfProfile, ServerAddr};
use rdv::server::{Server, ServerConfig};
use rdv::store::{DiskStore, DiskStoreConfig};
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = DiskStore::open(
        dir.path(),
        DiskStoreConfig::default(),
        FillerSecret::from_bytes(rand::random()),
    )?;
    let server = Server::new(store, ServerConfig::default(), Arc::new(SystemClock))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(server.clone().run_tcp(listener));

    // Over Tor, use rdv::client::tor::TorConnector with a bootstrapped arti client instead.
    let client = Client::new(
        Arc::new(DirectConnector::to(addr.to_string())),
        ClientConfig::default(),
        Arc::new(SystemClock),
    );
    let server_addr = ServerAddr::parse(&addr.to_string())?;

    let passphrase = generate_passphrase();
    let offer = client
        .offer(
            &server_addr,
            b"smp://messaging.example/queue",
            passphrase.clone(),
            KdfProfile::Moderate,
        )
        .await?;
    let link = offer.link.without_passphrase();
    println!("link: {}", &*link.to_uri());
    println!("passphrase: {}", passphrase.expose());

    let found = client.accept(&link, Some(passphrase)).await?;
    println!(
        "accepter opened: {}",
        String::from_utf8_lossy(&found.payload)
    );
    Ok(())
}
