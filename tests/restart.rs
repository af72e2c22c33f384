//! The real `rdv serve` process: restart on the same data dir (after SIGTERM and after SIGKILL)
//! keeps every acknowledged link.

mod common;

use common::*;
use rdv::clock::{Clock, SystemClock};
use rdv::proto::{KdfProfile, Passphrase};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

struct ServerProc {
    child: Child,
    addr: std::net::SocketAddr,
}

impl ServerProc {
    fn start(data: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rdv"))
            .args(["serve", "--no-onion", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rdv serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        ServerProc {
            addr: addr.parse().unwrap(),
            child,
        }
    }

    fn signal(&mut self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let st = self.child.wait().unwrap();
        if sig == "-TERM" {
            assert!(st.success(), "graceful shutdown exits 0, got {st:?}");
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_every_acknowledged_link() {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut offers = Vec::new();
    let mut srv = ServerProc::start(dir.path());
    let c = client(srv.addr, clock.clone());
    for i in 0..70 {
        let o = c
            .offer(
                &server_addr(srv.addr),
                format!("link {i}").as_bytes(),
                Passphrase::new(format!("p{i}-xyz")),
                KdfProfile::Test,
            )
            .await
            .unwrap();
        offers.push((i, o));
    }
    srv.signal("-TERM");

    let mut srv = ServerProc::start(dir.path());
    let c = client(srv.addr, clock.clone());
    for (i, o) in &offers {
        // The links name the first server's port; the direct connector goes to the new one.
        let got = c.accept(&o.link, None).await.unwrap();
        assert_eq!(&got.payload[..], format!("link {i}").as_bytes());
    }
    // Acknowledged stores survive SIGKILL too.
    let o = c
        .offer(
            &server_addr(srv.addr),
            b"just before the crash",
            Passphrase::new("crash-pass"),
            KdfProfile::Test,
        )
        .await
        .unwrap();
    srv.signal("-KILL");
    let srv = ServerProc::start(dir.path());
    let c = client(srv.addr, clock);
    assert_eq!(
        &c.accept(&o.link, None).await.unwrap().payload[..],
        b"just before the crash"
    );
    assert_eq!(
        &c.accept(&offers[0].1.link, None).await.unwrap().payload[..],
        b"link 0"
    );
    // After a restart a store opens a new bucket, never reusing an ID.
    let n = c
        .offer(
            &server_addr(srv.addr),
            b"after",
            Passphrase::new("after-pass"),
            KdfProfile::Test,
        )
        .await
        .unwrap();
    assert!(offers.iter().all(|(_, x)| x.bucket < n.bucket));
}
