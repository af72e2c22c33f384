//! A full disk: the server runs on a small tmpfs. Stores fail with a clear error, nothing already
//! stored is damaged, and once space returns the server stores again without a restart.
//!
//! Mounting a tmpfs needs root (as in CI); without it this test fails with a message saying so.

mod common;

use common::*;
use rdv::client::ClientError;
use rdv::clock::{Clock, SystemClock};
use rdv::proto::{ErrorCode, KdfProfile, Passphrase};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (this test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_stores_cleanly_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&tmp.path().join("mnt"), "2m");
    let data = fs.0.join("data");
    let server = ServerProcess::start(&data, &["--rate", "100000"]);
    let addr = server.addr;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let c = client(addr, clock);
    let sa = server_addr(addr);

    let mut stored = Vec::new();
    let mut failure = None;
    for i in 0..20_000 {
        let payload = format!("payload {i}");
        match c
            .offer(
                &sa,
                payload.as_bytes(),
                Passphrase::new(format!("pw-{i}")),
                KdfProfile::Test,
            )
            .await
        {
            Ok(o) => stored.push((o.link, payload)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("a 2 MiB disk must fill up");
    match &failure {
        ClientError::Server {
            code: ErrorCode::StorageFailure,
            message,
        } => {
            assert!(message.contains("nothing was stored"), "{message}")
        }
        other => panic!("expected a storage failure, got {other:?}"),
    }
    assert!(
        stored.len() > 10,
        "some stores fit before the disk filled: {}",
        stored.len()
    );
    // Nothing already stored is damaged, and fetches keep working on the full disk.
    for (link, payload) in &stored {
        assert_eq!(
            &c.accept(link, None)
                .await
                .expect("stored link still opens")
                .payload[..],
            payload.as_bytes()
        );
    }
    // While the disk stays full, every further store either fits into space the failed commit
    // left free or fails with the same clear error; the server never crashes.
    let mut failures = 0;
    for i in 0..200 {
        match c
            .offer(
                &sa,
                format!("more {i}").as_bytes(),
                Passphrase::new(format!("pw-more-{i}")),
                KdfProfile::Test,
            )
            .await
        {
            Ok(o) => stored.push((o.link, format!("more {i}"))),
            Err(ClientError::Server {
                code: ErrorCode::StorageFailure,
                ..
            }) => failures += 1,
            Err(e) => panic!("unexpected error on a full disk: {e:?}"),
        }
    }
    assert!(
        failures > 150,
        "the disk is still full: {failures} of 200 stores failed"
    );

    // Space returns: stores succeed again without restarting the server.
    fs.resize("64m");
    let mut recovered = None;
    for _ in 0..5 {
        if let Ok(o) = c
            .offer(
                &sa,
                b"after the disk grew",
                Passphrase::new("pw-after"),
                KdfProfile::Test,
            )
            .await
        {
            recovered = Some(o);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let o = recovered.expect("the server stores again once space returns");
    assert_eq!(
        &c.accept(&o.link, None).await.unwrap().payload[..],
        b"after the disk grew"
    );
    for (link, payload) in &stored {
        assert_eq!(
            &c.accept(link, None).await.unwrap().payload[..],
            payload.as_bytes()
        );
    }
}
