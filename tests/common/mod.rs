//! Shared helpers for the integration tests.
#![allow(dead_code)]

use rdv::client::direct::DirectConnector;
use rdv::client::{Client, ClientConfig};
use rdv::clock::{Clock, ManualClock};
use rdv::proto::ServerAddr;
use rdv::server::{Server, ServerConfig};
use rdv::store::{DiskStore, DiskStoreConfig, StoreParams};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// A fixed, plausible "now" for tests with a manual clock.
pub const T0: u64 = 1_800_000_000;

/// Start an in-process server on a real loopback TCP port over a disk store in `dir`.
pub async fn start_server(
    dir: &Path,
    params: StoreParams,
    config: ServerConfig,
    clock: Arc<dyn Clock>,
) -> (Arc<Server<DiskStore>>, SocketAddr) {
    let store = DiskStore::open(
        dir,
        DiskStoreConfig {
            params,
            ..Default::default()
        },
        [7; 32],
    )
    .expect("open store");
    let server = Server::new(store, config, clock);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server.clone().run_tcp(listener));
    (server, addr)
}

/// A direct-TCP client using `clock`.
pub fn client(addr: SocketAddr, clock: Arc<dyn Clock>) -> Client {
    Client::new(
        Arc::new(DirectConnector::to(addr.to_string())),
        ClientConfig::default(),
        clock,
    )
}

/// The server address of `addr` as it goes into links.
pub fn server_addr(addr: SocketAddr) -> ServerAddr {
    ServerAddr::parse(&addr.to_string()).expect("addr")
}

/// A manual clock at [`T0`].
pub fn manual_clock() -> ManualClock {
    ManualClock::new(T0)
}
