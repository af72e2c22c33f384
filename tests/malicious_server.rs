//! A deliberately misbehaving server: the client refuses with a clear error, never panics, and
//! deletes its link where it can.

mod common;

use common::*;
use rdv::client::{Client, ClientConfig, ClientError};
use rdv::clock::{Clock, ManualClock};
use rdv::io::{read_msg, write_msg};
use rdv::proto::{
    BucketId, KdfProfile, Locator, Passphrase, PolicyViolation, RdvLink, Request, Response, Salt,
    SealedLink, ServerInfo,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

#[derive(Clone, Copy, Debug)]
enum Evil {
    FutureId,
    StaleId,
    HugeSeq,
    HugeWindow,
    GarbageFrame,
    OversizeFrame,
    TooManyLinks,
    WrongAnswer,
    HangUp,
    Silent,
    ControlCharsInError,
}

struct Seen {
    deletes: AtomicUsize,
    stores: AtomicUsize,
}

async fn evil_server(mode: Evil) -> (std::net::SocketAddr, Arc<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Seen {
        deletes: AtomicUsize::new(0),
        stores: AtomicUsize::new(0),
    });
    let s2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let seen = s2.clone();
            tokio::spawn(async move {
                let max = u32::MAX;
                loop {
                    let Ok(req) = read_msg::<Request, _>(&mut s, 1 << 20).await else {
                        return;
                    };
                    let resp = match (mode, req) {
                        (Evil::HangUp, Request::Hello { .. }) => return,
                        (Evil::Silent, _) => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            return;
                        }
                        (_, Request::Hello { .. }) => Response::Hello { version: 1 },
                        (Evil::HugeWindow, Request::Info) => Response::Info(info(10_000_000)),
                        (_, Request::Info) => Response::Info(info(600)),
                        (_, Request::Store { .. }) => {
                            seen.stores.fetch_add(1, Ordering::SeqCst);
                            let id = match mode {
                                Evil::FutureId => BucketId {
                                    created: T0 + 3600,
                                    seq: 0,
                                },
                                Evil::StaleId => BucketId {
                                    created: T0 - 86_400,
                                    seq: 0,
                                },
                                Evil::HugeSeq => BucketId {
                                    created: T0,
                                    seq: 5000,
                                },
                                Evil::GarbageFrame => {
                                    let _ = s
                                        .write_all(&[0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef, 0xff])
                                        .await;
                                    continue;
                                }
                                Evil::OversizeFrame => {
                                    let _ = s.write_all(&0x7fff_ffffu32.to_be_bytes()).await;
                                    continue;
                                }
                                Evil::WrongAnswer => {
                                    let _ = write_msg(&mut s, &Response::Deleted, max).await;
                                    continue;
                                }
                                Evil::ControlCharsInError => {
                                    let message = "evil \x1b[2J\x1b]0;pwned\x07 message"
                                        .to_string()
                                        + &"x".repeat(5000);
                                    let _ = write_msg(
                                        &mut s,
                                        &Response::Error {
                                            code: rdv::proto::ErrorCode::Internal,
                                            message,
                                        },
                                        max,
                                    )
                                    .await;
                                    continue;
                                }
                                _ => BucketId {
                                    created: T0,
                                    seq: 0,
                                },
                            };
                            Response::Stored { id }
                        }
                        (_, Request::Delete { .. }) => {
                            seen.deletes.fetch_add(1, Ordering::SeqCst);
                            Response::Deleted
                        }
                        (Evil::TooManyLinks, Request::Fetch { .. }) => Response::Bucket {
                            links: vec![SealedLink([1; 256]); 65],
                        },
                        (Evil::GarbageFrame, Request::Fetch { .. }) => {
                            let _ = s.write_all(&[0, 0, 0, 2, 0x03, 0xff]).await;
                            continue;
                        }
                        (Evil::OversizeFrame, Request::Fetch { .. }) => {
                            let _ = s.write_all(&u32::MAX.to_be_bytes()).await;
                            continue;
                        }
                        (_, Request::Fetch { .. }) => Response::Stored {
                            id: BucketId { created: 0, seq: 0 },
                        },
                    };
                    if write_msg(&mut s, &resp, max).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn info(window: u64) -> ServerInfo {
    ServerInfo {
        version: 1,
        max_links_per_bucket: 64,
        open_window_secs: window,
        ttl_secs: 86_400,
        server_time: T0,
        max_frame: 20_000,
    }
}

fn client_for(addr: std::net::SocketAddr) -> Client {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    let config = ClientConfig {
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    Client::new(
        Arc::new(rdv::client::direct::DirectConnector::to(addr.to_string())),
        config,
        clock,
    )
}

async fn offer(mode: Evil) -> (Result<rdv::client::Offer, ClientError>, Arc<Seen>) {
    let (addr, seen) = evil_server(mode).await;
    let r = client_for(addr)
        .offer(
            &server_addr(addr),
            b"secret payload",
            Passphrase::new("pass-word-x"),
            KdfProfile::Test,
        )
        .await;
    (r, seen)
}

#[tokio::test]
async fn suspicious_ids_are_refused_and_the_link_deleted() {
    for (mode, check) in [
        (
            Evil::FutureId,
            (|v: &PolicyViolation| matches!(v, PolicyViolation::FromTheFuture { .. }))
                as fn(&PolicyViolation) -> bool,
        ),
        (Evil::StaleId, |v| {
            matches!(v, PolicyViolation::TooOld { .. })
        }),
        (Evil::HugeSeq, |v| {
            matches!(v, PolicyViolation::SeqTooHigh { seq: 5000, .. })
        }),
    ] {
        let (r, seen) = offer(mode).await;
        match r {
            Err(ClientError::Refused {
                violation,
                deleted: true,
            }) => assert!(check(&violation), "{mode:?}: {violation}"),
            other => panic!("{mode:?}: expected a refusal, got {other:?}"),
        }
        assert_eq!(
            seen.deletes.load(Ordering::SeqCst),
            1,
            "{mode:?}: the link was deleted"
        );
        let msg = offer(mode).await.0.unwrap_err().to_string();
        assert!(
            msg.contains("refused the server's bucket") && msg.contains("deleted"),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn an_overlong_open_window_is_refused_before_storing() {
    let (r, seen) = offer(Evil::HugeWindow).await;
    assert!(
        matches!(
            r,
            Err(ClientError::UnacceptableServer(
                PolicyViolation::WindowTooLong { .. }
            ))
        ),
        "{r:?}"
    );
    assert_eq!(seen.stores.load(Ordering::SeqCst), 0, "nothing was stored");
}

#[tokio::test]
async fn broken_frames_are_protocol_errors() {
    for mode in [Evil::GarbageFrame, Evil::OversizeFrame, Evil::WrongAnswer] {
        let (r, _) = offer(mode).await;
        assert!(
            matches!(r, Err(ClientError::Protocol(_))),
            "{mode:?}: {r:?}"
        );
    }
    let (r, _) = offer(Evil::HangUp).await;
    let e = r.unwrap_err();
    assert!(
        matches!(e, ClientError::Protocol(_) | ClientError::Io(_)),
        "{e:?}"
    );
    let (r, _) = offer(Evil::Silent).await;
    assert!(matches!(r, Err(ClientError::Timeout(_))), "{r:?}");
}

#[tokio::test]
async fn server_error_messages_are_sanitized() {
    let (r, _) = offer(Evil::ControlCharsInError).await;
    let e = r.unwrap_err().to_string();
    assert!(!e.chars().any(|c| c.is_control()), "{e:?}");
    assert!(e.len() < 400, "message cut: {} bytes", e.len());
}

#[tokio::test]
async fn hostile_fetch_answers_are_refused() {
    let link = |addr: std::net::SocketAddr| RdvLink {
        server: server_addr(addr),
        locator: Locator([1; 32]),
        salt: Salt([2; 16]),
        kdf: KdfProfile::Test,
        passphrase: Some(Passphrase::new("pw")),
    };
    for mode in [
        Evil::TooManyLinks,
        Evil::GarbageFrame,
        Evil::OversizeFrame,
        Evil::FutureId,
    ] {
        let (addr, _) = evil_server(mode).await;
        let r = client_for(addr).accept(&link(addr), None).await;
        assert!(
            matches!(r, Err(ClientError::Protocol(_))),
            "{mode:?}: {r:?}"
        );
    }
    // A link asking for absurd KDF work is refused before anything is fetched.
    let (addr, _) = evil_server(Evil::FutureId).await;
    let mut l = link(addr);
    l.kdf = KdfProfile::Custom(rdv::proto::KdfParams {
        m_kib: 4 << 20,
        t: 1,
        p: 1,
    });
    let r = client_for(addr).accept(&l, None).await;
    assert!(matches!(r, Err(ClientError::Kdf(_))), "{r:?}");
}
