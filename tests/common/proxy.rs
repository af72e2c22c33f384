//! A TCP proxy on loopback that delays every byte by a fixed time in each direction, so that a
//! test client is paced like a client over Tor (one circuit round trip between an answer and its
//! next request), not at loopback speed.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Forward what `from` sends to `to`, each chunk `delay` after it arrived (order kept).
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx
                        .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    while let Some((at, chunk)) = rx.recv().await {
        tokio::time::sleep_until(at).await;
        if to.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
    reader.abort();
}

/// Start a proxy to `target` adding `delay` each way; it runs until the runtime ends. Returns
/// the address clients connect to.
pub async fn latency_proxy(target: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy address");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::join!(delayed_copy(cr, sw, delay), delayed_copy(sr, cw, delay));
            });
        }
    });
    addr
}

/// Start a proxy to the rdv server at `target` that tells every client the server's time is
/// `ahead` seconds later than the server says (every `Info`'s `server_time`), and passes
/// everything else on unchanged: a server lying about its time. It runs until the runtime ends.
/// Returns the address clients connect to.
pub async fn time_lying_proxy(target: SocketAddr, ahead: u64) -> SocketAddr {
    frame_proxy(
        target,
        |_| false,
        move |resp| {
            if let rdv::proto::Response::Info(info) = resp {
                info.server_time = info.server_time.saturating_add(ahead);
            }
        },
    )
    .await
}

/// Start a proxy to the rdv server at `target` that passes requests and answers on frame by
/// frame: a request for which `cut` holds closes the client's connection instead (the server
/// never sees it), and `alter` may change each answer. It runs until the runtime ends. Returns
/// the address clients connect to.
pub async fn frame_proxy(
    target: SocketAddr,
    cut: impl Fn(&rdv::proto::Request) -> bool + Send + Sync + 'static,
    alter: impl Fn(&mut rdv::proto::Response) + Send + Sync + 'static,
) -> SocketAddr {
    proxy(target, cut, |_| false, |_| None, alter).await
}

/// [`frame_proxy`] that holds each request for which `delay` gives a time that long before
/// passing it on, or closing the client's connection if `cut` holds for it (a server slow to
/// answer, then failing). Returns the address clients connect to.
pub async fn delaying_proxy(
    target: SocketAddr,
    delay: impl Fn(&rdv::proto::Request) -> Option<Duration> + Send + Sync + 'static,
    cut: impl Fn(&rdv::proto::Request) -> bool + Send + Sync + 'static,
) -> SocketAddr {
    proxy(target, cut, |_| false, delay, |_| {}).await
}

/// [`frame_proxy`] that passes everything but never answers a request for which `stall`
/// holds: the connection stays open and silent (a server that hangs on it).
pub async fn stalling_proxy(
    target: SocketAddr,
    stall: impl Fn(&rdv::proto::Request) -> bool + Send + Sync + 'static,
) -> SocketAddr {
    proxy(target, |_| false, stall, |_| None, |_| {}).await
}

async fn proxy(
    target: SocketAddr,
    cut: impl Fn(&rdv::proto::Request) -> bool + Send + Sync + 'static,
    stall: impl Fn(&rdv::proto::Request) -> bool + Send + Sync + 'static,
    delay: impl Fn(&rdv::proto::Request) -> Option<Duration> + Send + Sync + 'static,
    alter: impl Fn(&mut rdv::proto::Response) + Send + Sync + 'static,
) -> SocketAddr {
    use rdv::framed::{read_msg, write_msg};
    use rdv::proto::{Request, Response};
    let (cut, stall, delay, alter) = (
        std::sync::Arc::new(cut),
        std::sync::Arc::new(stall),
        std::sync::Arc::new(delay),
        std::sync::Arc::new(alter),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy address");
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (cut, stall, delay, alter) =
                (cut.clone(), stall.clone(), delay.clone(), alter.clone());
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(target).await else {
                    return;
                };
                // One answer to each request, in order, as the protocol has it.
                while let Ok(req) = read_msg::<Request, _>(&mut client, 1 << 20).await {
                    if stall(&req) {
                        // Silent until the client goes away.
                        let mut rest = Vec::new();
                        let _ = tokio::io::AsyncReadExt::read_to_end(&mut client, &mut rest).await;
                        return;
                    }
                    if let Some(d) = delay(&req) {
                        tokio::time::sleep(d).await;
                    }
                    if cut(&req) || write_msg(&mut server, &req, u32::MAX).await.is_err() {
                        return;
                    }
                    let Ok(mut resp) = read_msg::<Response, _>(&mut server, u32::MAX).await else {
                        return;
                    };
                    alter(&mut resp);
                    if write_msg(&mut client, &resp, u32::MAX).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}
