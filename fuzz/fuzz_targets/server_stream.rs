//! Arbitrary bytes from a peer into the server's connection handler over an in-memory stream:
//! never a panic, the handler always finishes, and everything it sends back is a valid response.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rdv::clock::ManualClock;
use rdv::proto::wire::{decode_frame, FRAME_HEADER_LEN};
use rdv::proto::Response;
use rdv::server::{Server, ServerConfig};
use rdv::store::{MemoryStore, StoreParams};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap())
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let store = MemoryStore::new(StoreParams::default());
        let config = ServerConfig { idle_timeout: Duration::from_secs(5), ..Default::default() };
        let server = Server::new(store, config, Arc::new(ManualClock::new(1_800_000_000))).unwrap();
        let (mut peer, conn) = tokio::io::duplex(1 << 20);
        let task = tokio::spawn(server.clone().serve_stream(conn));
        peer.write_all(data).await.unwrap();
        peer.shutdown().await.unwrap();
        let mut out = Vec::new();
        // Time is paused: idle timeouts fire instantly instead of stalling the fuzzer.
        tokio::time::timeout(Duration::from_secs(60), peer.read_to_end(&mut out)).await.expect("handler finishes").unwrap();
        task.await.unwrap();
        let mut rest = &out[..];
        while !rest.is_empty() {
            assert!(rest.len() >= FRAME_HEADER_LEN, "partial frame header");
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let frame = &rest[..FRAME_HEADER_LEN + len];
            decode_frame::<Response>(frame, u32::MAX).expect("the server only sends valid responses");
            rest = &rest[FRAME_HEADER_LEN + len..];
        }
    });
});
