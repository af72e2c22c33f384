//! A deliberately misbehaving server: the client refuses with a clear error, never panics, and
//! deletes its link where it can. The server is a hand-written handler behind in-memory pipes, so
//! the tests run on tokio's paused clock (the silent server's 2 s timeout costs no real time).

mod common;

use common::*;
use rdv::client::pipe::PipeConnector;
use rdv::client::{
    AcceptError, AnswerError, Client, ClientConfig, CollectError, ConnectionError, ErrorKind,
    Offer, OfferError,
};
use rdv::clock::{Clock, ManualClock};
use rdv::framed::{read_msg, write_msg};
use rdv::proto::{
    BucketId, DeleteCheck, KdfProfile, Locator, Passphrase, PolicyViolation, RdvLink, Request,
    Response, Salt, SealedLink, ServerInfo,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, DuplexStream};

#[derive(Clone, Copy, Debug)]
enum Evil {
    FutureId,
    StaleId,
    HugeSeq,
    HugeWindow,
    /// Advertises a bucket lifetime no longer than its open window.
    TtlWithinWindow,
    /// Advertises each connection an open window of its own (60 s, 120 s, …), every one
    /// within the policy, and puts every link into one bucket.
    WindowPerConnection,
    GarbageFrame,
    OversizeFrame,
    TooManyLinks,
    WrongAnswer,
    HangUp,
    Silent,
    ControlCharsInError,
    /// Speaks version 2 and answers a mailbox fetch with something else.
    WrongMailboxAnswer,
    /// Claims a version the client never offered.
    FutureVersion,
    /// Speaks version 3 and answers a fetch with a bucket without stamps, as if it had none to
    /// show (a real one full of its own dummies, say).
    HidesStamps,
    /// Speaks version 4 and asks an answer's stamp of the largest effort there is.
    HugeAnswerEffort,
    /// Speaks version 4 and refuses every answer's stamp.
    RefusesAnswerStamps,
    /// Speaks version 4 and answers an answer challenge with something else.
    WrongAnswerChallenge,
    /// Speaks version 3, answers every request just inside the client's request timeout, and
    /// says that the bucket closed to every stamped store.
    SlowAndClosing,
    /// Speaks version 3, names a bucket of its own choosing (a victim's) in every challenge,
    /// keeps every stamp it is sent, and says that the bucket closed.
    HarvestsClosing,
    /// As [`Evil::HarvestsClosing`], but says `Busy` (the client comes back on a new
    /// connection).
    HarvestsBusy,
    /// As [`Evil::HarvestsClosing`], but shows the named bucket full of verified links (it
    /// paid a stamp for each), as an honest server's full bucket is.
    HarvestsFull,
    /// As [`Evil::HarvestsBusy`] on its first connection, then speaks version 2 (where a store
    /// carries no stamp).
    HarvestsDowngrading,
    /// Names a bucket whose window has passed (within the client's skew), and says it closed
    /// once the client's clock ([`Seen::clock`]) has moved on past the time a server takes
    /// stamped stores after a window.
    ClosesLate,
}

/// The bucket [`Evil::ClosesLate`] names: its window (600 s) passed 100 s ago.
const LATE_BUCKET: BucketId = BucketId {
    created: T0 - 700,
    seq: 0,
};

/// The seed the evil server's challenges name.
const EVIL_SEED: rdv::proto::StampSeed = rdv::proto::StampSeed([2; 32]);

/// A fetch answer for bucket `id`: 64 entries, each with a valid stamp of effort 1 if `full`,
/// else with junk.
fn evil_bucket(id: BucketId, full: bool) -> Response {
    let name = rdv::proto::stamp::ServerName::of(&pipe_addr());
    let ch = rdv::proto::stamp::Challenge {
        id,
        seed: EVIL_SEED,
        effort: 1,
    };
    let entries = (0..64u8)
        .map(|i| {
            let link = SealedLink([i; 256]);
            let stamp = if full {
                rdv::proto::stamp::solve(&name, &ch, &link, [0; 16], u64::MAX).unwrap()
            } else {
                rdv::proto::Stamp([i; rdv::proto::stamp::STAMP_LEN])
            };
            rdv::proto::wire::StampedEntry { link, stamp }
        })
        .collect();
    Response::StampedBucket {
        seed: EVIL_SEED,
        entries,
    }
}

/// What the evil server saw: the stores' deletion checks and the deletes' locators and tokens.
#[derive(Default)]
struct Seen {
    infos: AtomicUsize,
    deletes: AtomicUsize,
    /// Stamped answers received.
    answers: AtomicUsize,
    stores: AtomicUsize,
    /// Store challenges answered.
    challenges: AtomicUsize,
    /// (bucket named, stamp) per stamped store received.
    stamps: Mutex<Vec<(BucketId, rdv::proto::stamp::Stamp)>>,
    /// Fetches received.
    fetches: AtomicUsize,
    /// The client's clock, for [`Evil::ClosesLate`] to move on.
    clock: Mutex<Option<ManualClock>>,
    /// (locator of the handed-out bucket, check value stored) per store.
    stored: Mutex<Vec<(Locator, DeleteCheck)>>,
    /// (locator, token's check value) per delete.
    deleted: Mutex<Vec<(Locator, DeleteCheck)>>,
}

/// A connector to the evil server in `mode`.
fn evil_server(mode: Evil) -> (PipeConnector, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let s2 = seen.clone();
    let connector = PipeConnector::new(move |s| {
        tokio::spawn(evil_connection(mode, s, s2.clone()));
    });
    (connector, seen)
}

async fn evil_connection(mode: Evil, mut s: DuplexStream, seen: Arc<Seen>) {
    let max = u32::MAX;
    loop {
        let Ok(req) = read_msg::<Request, _>(&mut s, 1 << 20).await else {
            return;
        };
        if let Evil::SlowAndClosing = mode {
            tokio::time::sleep(SLOW_ANSWER).await;
        }
        let resp = match (mode, req) {
            (Evil::HangUp, Request::Hello { .. }) => return,
            (Evil::SlowAndClosing, Request::Hello { .. }) => Response::Hello { version: 3 },
            (Evil::SlowAndClosing, Request::Challenge) => {
                seen.challenges.fetch_add(1, Ordering::SeqCst);
                Response::Challenge(rdv::proto::stamp::Challenge {
                    id: BucketId {
                        created: T0,
                        seq: 0,
                    },
                    seed: rdv::proto::StampSeed([2; 32]),
                    effort: 1,
                })
            }
            (Evil::SlowAndClosing, Request::StampedStore { .. }) => Response::Error {
                code: rdv::proto::ErrorCode::BucketClosed,
                message: "closed just now".into(),
            },
            (
                Evil::SlowAndClosing
                | Evil::HarvestsClosing
                | Evil::HarvestsBusy
                | Evil::HarvestsFull
                | Evil::ClosesLate,
                Request::Fetch { locator },
            ) => {
                seen.fetches.fetch_add(1, Ordering::SeqCst);
                let id = seen
                    .stamps
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(id, _)| *id)
                    .find(|id| id.locator() == locator)
                    .unwrap_or(BucketId {
                        created: T0,
                        seq: 0,
                    });
                let full = matches!(mode, Evil::HarvestsFull);
                tokio::task::spawn_blocking(move || evil_bucket(id, full))
                    .await
                    .unwrap()
            }
            (Evil::ClosesLate, Request::Hello { .. }) => Response::Hello { version: 3 },
            (Evil::ClosesLate, Request::Challenge) => {
                seen.challenges.fetch_add(1, Ordering::SeqCst);
                Response::Challenge(rdv::proto::stamp::Challenge {
                    id: LATE_BUCKET,
                    seed: EVIL_SEED,
                    effort: 1,
                })
            }
            (Evil::ClosesLate, Request::StampedStore { id, stamp, .. }) => {
                seen.stamps.lock().unwrap().push((id, stamp));
                if let Some(c) = &*seen.clock.lock().unwrap() {
                    c.advance(200);
                }
                Response::Error {
                    code: rdv::proto::ErrorCode::BucketClosed,
                    message: "closed".into(),
                }
            }
            (Evil::HarvestsDowngrading, Request::Hello { .. }) => Response::Hello {
                version: if seen.stamps.lock().unwrap().is_empty() {
                    3
                } else {
                    2
                },
            },
            (
                Evil::HarvestsClosing | Evil::HarvestsBusy | Evil::HarvestsFull,
                Request::Hello { .. },
            ) => Response::Hello { version: 3 },
            (
                Evil::HarvestsClosing
                | Evil::HarvestsBusy
                | Evil::HarvestsFull
                | Evil::HarvestsDowngrading,
                Request::Challenge,
            ) => {
                // Another victim's bucket each time, every one within the policy.
                let n = seen.challenges.fetch_add(1, Ordering::SeqCst) as u16;
                Response::Challenge(rdv::proto::stamp::Challenge {
                    id: BucketId {
                        created: T0,
                        seq: n % 32,
                    },
                    seed: EVIL_SEED,
                    effort: 1,
                })
            }
            (
                Evil::HarvestsClosing
                | Evil::HarvestsBusy
                | Evil::HarvestsFull
                | Evil::HarvestsDowngrading,
                Request::StampedStore { id, stamp, .. },
            ) => {
                seen.stamps.lock().unwrap().push((id, stamp));
                Response::Error {
                    code: match mode {
                        Evil::HarvestsBusy | Evil::HarvestsDowngrading => {
                            rdv::proto::ErrorCode::Busy
                        }
                        _ => rdv::proto::ErrorCode::BucketClosed,
                    },
                    message: "try again".into(),
                }
            }
            (Evil::Silent, _) => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                return;
            }
            (Evil::WrongMailboxAnswer, Request::Hello { .. }) => Response::Hello { version: 2 },
            (Evil::FutureVersion, Request::Hello { .. }) => Response::Hello {
                version: rdv::proto::PROTOCOL_VERSION + 1,
            },
            (Evil::HidesStamps, Request::Hello { .. }) => Response::Hello { version: 3 },
            (
                Evil::HugeAnswerEffort | Evil::RefusesAnswerStamps | Evil::WrongAnswerChallenge,
                Request::Hello { .. },
            ) => Response::Hello { version: 4 },
            (Evil::WrongAnswerChallenge, Request::AnswerChallenge) => Response::Deleted,
            (_, Request::AnswerChallenge) => {
                Response::AnswerChallenge(rdv::proto::answer_stamp::AnswerChallenge {
                    epoch: 1,
                    seed: rdv::proto::StampSeed([1; 32]),
                    effort: match mode {
                        Evil::HugeAnswerEffort => u32::MAX,
                        _ => 1,
                    },
                })
            }
            (_, Request::StampedPutAnswer { .. }) => {
                seen.answers.fetch_add(1, Ordering::SeqCst);
                Response::Error {
                    code: rdv::proto::ErrorCode::BadStamp,
                    message: "no".into(),
                }
            }
            (_, Request::Hello { .. }) => Response::Hello { version: 1 },
            (Evil::HugeWindow, Request::Info) => Response::Info(info(10_000_000)),
            (Evil::WindowPerConnection, Request::Info) => {
                let n = seen.infos.fetch_add(1, Ordering::SeqCst) as u64;
                Response::Info(info(60 * (1 + n % 10)))
            }
            (Evil::TtlWithinWindow, Request::Info) => Response::Info(ServerInfo {
                ttl_secs: 600,
                ..info(600)
            }),
            (_, Request::Info) => Response::Info(info(600)),
            (_, Request::Store { delete_check, .. }) => {
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
                        let message =
                            "evil \x1b[2J\x1b]0;pwned\x07 message".to_string() + &"x".repeat(5000);
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
                seen.stored
                    .lock()
                    .unwrap()
                    .push((id.locator(), delete_check));
                Response::Stored { id }
            }
            (_, Request::Delete { locator, token }) => {
                seen.deletes.fetch_add(1, Ordering::SeqCst);
                seen.deleted.lock().unwrap().push((locator, token.check()));
                Response::Deleted
            }
            (Evil::HidesStamps, Request::Fetch { .. }) => Response::Bucket {
                links: vec![SealedLink([1; 256]); 64],
            },
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
            // Only Evil::WrongMailboxAnswer agrees on version 2, only Evil::HidesStamps on 3.
            (
                _,
                Request::PutAnswer { .. }
                | Request::FetchAnswer { .. }
                | Request::Challenge
                | Request::StampedStore { .. },
            ) => Response::Deleted,
        };
        if write_msg(&mut s, &resp, max).await.is_err() {
            return;
        }
    }
}

/// How long [`Evil::SlowAndClosing`] takes to answer: just inside [`client_for`]'s request
/// timeout.
const SLOW_ANSWER: Duration = Duration::from_millis(1900);

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

fn client_for(connector: PipeConnector) -> Client {
    client_with(connector, |_| {})
}

/// [`client_for`], with settings changed by `change`.
fn client_with(connector: PipeConnector, change: impl FnOnce(&mut ClientConfig)) -> Client {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    let mut config = ClientConfig {
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    change(&mut config);
    Client::new(Arc::new(connector), config, clock)
}

async fn offer(mode: Evil) -> (Result<Offer, OfferError>, Arc<Seen>) {
    let (connector, seen) = evil_server(mode);
    (offer_by(&client_for(connector)).await, seen)
}

/// The test offer, made by `client`.
async fn offer_by(client: &Client) -> Result<Offer, OfferError> {
    client
        .offer(
            &pipe_addr(),
            b"secret payload",
            Passphrase::new("pass-word-x"),
            KdfProfile::Test,
        )
        .await
}

#[tokio::test(start_paused = true)]
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
            Err(
                ref e @ OfferError::Refused {
                    ref violation,
                    deleted: true,
                },
            ) => {
                assert!(check(violation), "{mode:?}: {violation}");
                assert_eq!(e.kind(), ErrorKind::ServerMisbehaved);
            }
            other => panic!("{mode:?}: expected a refusal, got {other:?}"),
        }
        assert_eq!(
            seen.deletes.load(Ordering::SeqCst),
            1,
            "{mode:?}: the link was deleted"
        );
        // The delete names the bucket the server handed out, with the token of that store.
        assert_eq!(
            *seen.deleted.lock().unwrap(),
            *seen.stored.lock().unwrap(),
            "{mode:?}: the delete's locator and token match the store"
        );
        let msg = offer(mode).await.0.unwrap_err().to_string();
        assert!(
            msg.contains("refused the server's bucket") && msg.contains("deleted"),
            "{msg}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_overlong_open_window_is_refused_before_storing() {
    let (r, seen) = offer(Evil::HugeWindow).await;
    assert!(
        matches!(
            r,
            Err(OfferError::UnacceptableServer(
                PolicyViolation::WindowTooLong { .. }
            ))
        ),
        "{r:?}"
    );
    assert_eq!(seen.stores.load(Ordering::SeqCst), 0, "nothing was stored");
}

/// A server that advertises each store connection another open window must not give each
/// link of one bucket a close of its own: the first look at each mailbox (and a held link's
/// hand-over) would come at its own moment, and tell the server which link the mailbox belongs
/// to (a helper's attack recognised 4 of 5 mailboxes so). Every link of the bucket closes at
/// the same second, from the bucket's creation and the client's policy alone.
#[tokio::test(start_paused = true)]
async fn a_window_per_connection_gives_no_link_a_close_of_its_own() {
    let (connector, seen) = evil_server(Evil::WindowPerConnection);
    let c = client_for(connector);
    let mut closes = Vec::new();
    for _ in 0..4 {
        let o = c
            .offer(
                &pipe_addr(),
                b"p",
                Passphrase::new("pass-word-x"),
                KdfProfile::Test,
            )
            .await
            .unwrap();
        assert_eq!(o.bucket.created, T0);
        closes.push(o.closes_at);
    }
    assert_eq!(
        seen.infos.load(Ordering::SeqCst),
        4,
        "four windows were told"
    );
    let policy = rdv::proto::ClientPolicy::default();
    assert!(
        closes
            .iter()
            .all(|&c| c == T0 + policy.max_open_window_secs + policy.max_skew_secs + 1),
        "{closes:?}"
    );
}

/// A server advertising a lifetime within its open window breaks the protocol (the link would
/// be gone while the bucket is open): refused before anything is stored.
#[tokio::test(start_paused = true)]
async fn an_impossible_bucket_lifetime_is_refused_before_storing() {
    let (r, seen) = offer(Evil::TtlWithinWindow).await;
    assert!(
        matches!(
            r,
            Err(OfferError::UnacceptableServer(
                PolicyViolation::TtlNotPastWindow {
                    ttl: 600,
                    window: 600
                }
            ))
        ),
        "{r:?}"
    );
    assert_eq!(seen.stores.load(Ordering::SeqCst), 0, "nothing was stored");
}

#[tokio::test(start_paused = true)]
async fn broken_frames_are_protocol_errors() {
    for mode in [Evil::GarbageFrame, Evil::OversizeFrame, Evil::WrongAnswer] {
        let (r, _) = offer(mode).await;
        match r {
            Err(e @ OfferError::Connection(ConnectionError::Protocol(_))) => {
                assert_eq!(e.kind(), ErrorKind::ServerMisbehaved)
            }
            other => panic!("{mode:?}: {other:?}"),
        }
    }
    let (r, _) = offer(Evil::HangUp).await;
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            OfferError::Connection(
                ConnectionError::NotRdv(_)
                    | ConnectionError::Protocol(_)
                    | ConnectionError::Io { .. }
            )
        ),
        "{e:?}"
    );
    let t = tokio::time::Instant::now();
    let (r, _) = offer(Evil::Silent).await;
    assert!(
        matches!(r, Err(OfferError::Connection(ConnectionError::Timeout(_)))),
        "{r:?}"
    );
    assert_eq!(
        t.elapsed(),
        Duration::from_secs(2),
        "the request timeout, exactly"
    );
}

/// Something that is not an rdv server at all (here: an HTTP server) gets a message saying so.
#[tokio::test(start_paused = true)]
async fn a_peer_that_does_not_speak_rdv_is_named_as_such() {
    let connector = PipeConnector::new(|mut s: DuplexStream| {
        tokio::spawn(async move {
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        });
    });
    let e = client_for(connector).info(&pipe_addr()).await.unwrap_err();
    assert!(matches!(e, ConnectionError::NotRdv(_)), "{e:?}");
    assert!(
        e.to_string().contains("does not speak the rdv protocol"),
        "{e}"
    );
}

/// A server that answers each request just inside the request timeout held an offer for
/// request timeout after request timeout (a dozen minutes at the defaults, when it could
/// have the client ask for five challenges). The connection's budget ends it.
#[tokio::test(start_paused = true)]
async fn a_slow_server_cannot_hold_an_offer_past_the_connection_budget() {
    let (connector, seen) = evil_server(Evil::SlowAndClosing);
    let budget = Duration::from_secs(7);
    let client = client_with(connector, |c| c.connection_budget = Some(budget));
    let t = tokio::time::Instant::now();
    let r = offer_by(&client).await;
    let took = t.elapsed();
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            OfferError::Connection(ConnectionError::Timeout(why)) if why.contains("longer than a client allows one connection")
        ),
        "{e}"
    );
    assert!(took <= budget + SLOW_ANSWER, "{took:?}");
    // Hello, Info and the challenge fitted (three slow answers), not the store's answer.
    assert_eq!(seen.challenges.load(Ordering::SeqCst), 1);
    // Without a budget the store is answered, and the error is a different one (the bucket
    // it says closed shows no verified link: no second stamp).
    let (connector, seen) = evil_server(Evil::SlowAndClosing);
    let client = client_with(connector, |c| c.connection_budget = None);
    let e = offer_by(&client).await.unwrap_err();
    assert!(matches!(e, OfferError::ClosedNotFull { .. }), "{e}");
    assert_eq!(seen.challenges.load(Ordering::SeqCst), 1);
}

/// A server that names its victims' buckets in its challenges and refuses the stamped stores
/// (`BucketClosed`, or `Busy` so that the client comes back) keeps each stamp it is sent, which
/// verifies in the bucket it named whether or not it stores the link there, so it could show it
/// there as a verified link without paying for it. Before, the client asked for a new
/// challenge after `BucketClosed` (five stamps per connection) and began again after `Busy` (a
/// helper's attack, 2026-12-07: some 60 stamps, for as many buckets, from one offer that still
/// succeeded); then (two stamps per link at most) it still asked for one new challenge, so that
/// every honest offer gave such a server one entry for free and succeeded. Now a `BucketClosed`
/// soon after the challenge is believed only of a bucket that shows itself full: otherwise
/// the offer fails, visibly, after one stamp.
#[tokio::test(start_paused = true)]
async fn a_server_that_refuses_stamped_stores_gets_one_stamp_and_a_visible_failure() {
    for mode in [
        Evil::HarvestsClosing,
        Evil::HarvestsBusy,
        Evil::HarvestsFull,
    ] {
        let (connector, seen) = evil_server(mode);
        let client = client_with(connector, |c| c.policy.min_effort = 1);
        let e = offer_by(&client).await.unwrap_err();
        let stamps = seen.stamps.lock().unwrap().clone();
        let distinct: std::collections::HashSet<_> = stamps.iter().collect();
        let most = match mode {
            // Shown a full bucket, the client believes it, once.
            Evil::HarvestsFull => 2,
            _ => 1,
        };
        assert_eq!(distinct.len(), most, "{mode:?}: {} stamps", distinct.len());
        assert_eq!(seen.challenges.load(Ordering::SeqCst), most, "{mode:?}");
        match mode {
            Evil::HarvestsClosing => {
                assert!(
                    matches!(e, OfferError::ClosedNotFull { verified: 0, .. }),
                    "{e}"
                );
                // Deletes in an honest bucket can look the same: not called misbehaviour.
                assert_eq!(e.kind(), ErrorKind::Transient);
                assert_eq!(seen.fetches.load(Ordering::SeqCst), 1);
            }
            Evil::HarvestsFull => {
                assert!(matches!(e, OfferError::ClosedAfterStamp), "{e}");
                assert_eq!(stamps.len(), 2);
            }
            _ => {
                // Sent again as it was, on each new connection, until the retries ran out.
                assert!(stamps.len() > 1, "{} stores", stamps.len());
                assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
            }
        }
    }
    // A server that asks for almost no work (effort 1) and shows a bucket "full" of such
    // stamps (a fraction of a second of its time) is not believed by a client of the default
    // floor: fullness is counted at the challenge's effort but never below the client's floor
    // (or the default, if lower). The one stamp it got shows the floor's effort.
    let (connector, seen) = evil_server(Evil::HarvestsFull);
    let e = offer_by(&client_for(connector)).await.unwrap_err();
    assert!(matches!(e, OfferError::ClosedNotFull { .. }), "{e}");
    let stamps = seen.stamps.lock().unwrap().clone();
    assert_eq!(stamps.len(), 1);
    let floor = ClientConfig::default().policy.min_effort;
    assert!(stamps.iter().all(|(_, s)| s.effort() >= floor));
}

/// A server that says `Busy` to the stamped store, keeps its stamp, and speaks an older version
/// on the client's next connection: a store without a stamp there would give it the entry for
/// free and succeed (a helper's attack, 2026-12-07). The offer ends instead.
#[tokio::test(start_paused = true)]
async fn a_server_that_downgrades_after_a_stamp_went_out_stores_nothing() {
    let (connector, seen) = evil_server(Evil::HarvestsDowngrading);
    let e = offer_by(&client_for(connector)).await.unwrap_err();
    assert!(
        e.to_string().contains("agreed on protocol version 2"),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::ServerMisbehaved, "{e}");
    assert_eq!(seen.stamps.lock().unwrap().len(), 1);
    assert_eq!(
        seen.stores.load(Ordering::SeqCst),
        0,
        "nothing stored without a stamp"
    );
}

/// A `BucketClosed` that comes later than an honest server could say it of a bucket with room
/// (the stamped store waited past the window and the time after it): the offer ends without a
/// second stamp, and without a fetch (anything could be true by then).
#[tokio::test(start_paused = true)]
async fn a_bucket_closed_late_ends_the_offer_without_a_second_stamp() {
    let (connector, seen) = evil_server(Evil::ClosesLate);
    let clock = ManualClock::new(T0);
    *seen.clock.lock().unwrap() = Some(clock.clone());
    let config = ClientConfig {
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let client = Client::new(Arc::new(connector), config, Arc::new(clock));
    let e = offer_by(&client).await.unwrap_err();
    assert!(matches!(e, OfferError::ClosedLate), "{e}");
    assert_eq!(e.kind(), ErrorKind::Transient);
    assert_eq!(seen.stamps.lock().unwrap().len(), 1);
    assert_eq!(seen.fetches.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn server_error_messages_are_sanitized() {
    let (r, _) = offer(Evil::ControlCharsInError).await;
    let e = r.unwrap_err().to_string();
    assert!(!e.chars().any(|c| c.is_control()), "{e:?}");
    assert!(e.len() < 400, "message cut: {} bytes", e.len());
}

#[tokio::test(start_paused = true)]
async fn hostile_fetch_answers_are_refused() {
    let link = || RdvLink {
        server: pipe_addr(),
        locator: Locator([1; 32]),
        mirrors: Vec::new(),
        salt: Salt::from_bytes([2; 16]),
        kdf: KdfProfile::Test,
        passphrase: Some(Passphrase::new("pw")),
    };
    for mode in [
        Evil::TooManyLinks,
        Evil::GarbageFrame,
        Evil::OversizeFrame,
        Evil::FutureId,
        Evil::HidesStamps,
    ] {
        let (connector, _) = evil_server(mode);
        let r = client_for(connector).accept(&link(), None).await;
        assert!(
            matches!(
                r,
                Err(AcceptError::Connection(ConnectionError::Protocol(_)))
            ),
            "{mode:?}: {r:?}"
        );
    }
    // A link asking for absurd KDF work is refused before anything is fetched.
    let (connector, seen) = evil_server(Evil::FutureId);
    let mut l = link();
    l.kdf = KdfProfile::Custom(rdv::proto::KdfParams {
        m_kib: 4 << 20,
        t: 1,
        p: 1,
    });
    let r = client_for(connector).accept(&l, None).await;
    assert!(matches!(r, Err(AcceptError::Kdf(_))), "{r:?}");
    assert_eq!(seen.stores.load(Ordering::SeqCst), 0);
}

/// An offer that expects an answer goes only to a server with mailboxes: against a version-1
/// server nothing is stored. A server that claims a version never offered, or answers a mailbox
/// fetch with something else, is a protocol error.
/// An offer of `c`'s that expects an answer, and what collecting it needs.
async fn offer_expecting_answer(c: &Client) -> (Offer, rdv::client::PendingAnswer) {
    c.offer_expecting_answer(
        &pipe_addr(),
        b"q",
        Passphrase::new("pw-pw-pw"),
        KdfProfile::Test,
    )
    .await
    .unwrap()
}

/// An offer expecting an answer on an honest in-memory server, to be answered or collected
/// against a broken one: the offer, its pending answer, and the honest server's client.
async fn with_an_honest_server() -> (Offer, rdv::client::PendingAnswer, Client) {
    let (_honest, c) = pipe_server(
        rdv::store::StoreParams::default(),
        rdv::server::ServerConfig::default(),
        Arc::new(ManualClock::new(T0)),
    );
    let (offer, pending) = offer_expecting_answer(&c).await;
    (offer, pending, c)
}

/// An honest server behind a relay that says its time is `ahead` seconds later than it is, in
/// every `Info`.
fn lying_about_its_time(
    server: Arc<rdv::server::Server<rdv::store::MemoryStore>>,
    ahead: u64,
) -> PipeConnector {
    PipeConnector::new(move |mut client| {
        let mut upstream = raw_pipe(&server);
        tokio::spawn(async move {
            while let Ok(req) = read_msg::<Request, _>(&mut client, 1 << 20).await {
                if write_msg(&mut upstream, &req, u32::MAX).await.is_err() {
                    return;
                }
                let Ok(mut resp) = read_msg::<Response, _>(&mut upstream, u32::MAX).await else {
                    return;
                };
                if let Response::Info(info) = &mut resp {
                    info.server_time += ahead;
                }
                if write_msg(&mut client, &resp, u32::MAX).await.is_err() {
                    return;
                }
            }
        });
    })
}

/// A server that says its bucket has already closed cannot make a client look into its mailbox,
/// or hand its link over (`--hold`), while the bucket still takes other clients' links: the
/// close comes from the bucket's ID and the client's own clock. Before, the client took the
/// server's word for the time, and its first look came seconds after its store (which ties the
/// mailbox to the link, and the answer to the accepter's fetch).
#[tokio::test(start_paused = true)]
async fn a_server_that_lies_about_its_time_cannot_bring_the_close_forward() {
    let clock = ManualClock::new(T0);
    let server = rdv::server::Server::new(
        rdv::store::MemoryStore::new(rdv::store::StoreParams::default()),
        rdv::server::ServerConfig::default(),
        Arc::new(clock.clone()),
    )
    .unwrap();
    let window = rdv::store::StoreParams::default().open_window_secs;
    let client = Client::new(
        Arc::new(lying_about_its_time(server.clone(), 3600)),
        ClientConfig::default(),
        Arc::new(clock.clone()),
    );
    let (offer, pending) = offer_expecting_answer(&client).await;
    assert_eq!(offer.bucket.created, T0);
    let closed = T0 + window + rdv::proto::ClientPolicy::default().max_skew_secs + 1;
    assert_eq!(
        offer.closes_at, closed,
        "the held link would be handed over early"
    );
    assert_eq!(
        pending.polls_from(),
        closed,
        "the first look would come while the bucket is open"
    );
    // Nor can it bring the link's end forward: the agent would stop looking for its answer, and
    // drop a delete it was asked for, an hour early.
    let ttl = rdv::store::StoreParams::default().ttl_secs;
    assert_eq!(offer.expires_at, T0 + ttl, "the link's end moved");
    assert_eq!(pending.link_expires(), T0 + ttl);
}

#[tokio::test(start_paused = true)]
async fn the_answer_channel_against_old_and_broken_servers() {
    let (connector, seen) = evil_server(Evil::StaleId);
    let r = client_for(connector)
        .offer_expecting_answer(
            &pipe_addr(),
            b"q",
            Passphrase::new("pass-word-x"),
            KdfProfile::Test,
        )
        .await;
    match r {
        Err(e @ OfferError::NoMailboxes { version: 1 }) => {
            assert!(e.to_string().contains("nothing was stored"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(seen.stores.load(Ordering::SeqCst), 0);

    let (connector, _) = evil_server(Evil::FutureVersion);
    let e = client_for(connector).info(&pipe_addr()).await.unwrap_err();
    assert!(matches!(e, ConnectionError::Protocol(_)), "{e:?}");

    // A pending answer for the broken server, made against an honest one.
    let (_, pending, _) = with_an_honest_server().await;
    let (connector, _) = evil_server(Evil::WrongMailboxAnswer);
    let e = client_for(connector).collect(&pending).await.unwrap_err();
    assert!(
        matches!(e, CollectError::Connection(ConnectionError::Protocol(_))),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::ServerMisbehaved);
}

/// Answer `reply` through the evil server in `mode`: the error, and what the server saw.
async fn answer_against(mode: Evil, reply: &rdv::client::ReplyTo) -> (AnswerError, Arc<Seen>) {
    let (connector, seen) = evil_server(mode);
    let e = client_for(connector).answer(reply, b"a").await.unwrap_err();
    (e, seen)
}

/// An answer's stamp (protocol version 4) against a hostile server: a challenge asking more
/// work than the client allows is refused before anything is sent, a server that refuses every
/// stamp gets the answer twice (a new challenge once) and then an error, not an endless loop,
/// and a wrong answer to the challenge is a protocol error.
#[tokio::test(start_paused = true)]
async fn stamped_answers_against_a_hostile_server() {
    let (offer, _, c) = with_an_honest_server().await;
    let reply = c.accept(&offer.link, None).await.unwrap().reply.unwrap();

    let (e, seen) = answer_against(Evil::HugeAnswerEffort, &reply).await;
    assert!(
        matches!(
            e,
            AnswerError::RefusedChallenge(PolicyViolation::EffortTooHigh { .. })
        ),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::ServerMisbehaved);
    assert_eq!(seen.answers.load(Ordering::SeqCst), 0, "an answer was sent");

    let (e, seen) = answer_against(Evil::RefusesAnswerStamps, &reply).await;
    assert!(
        matches!(
            e,
            AnswerError::Connection(ConnectionError::Server {
                code: rdv::proto::ErrorCode::BadStamp,
                ..
            })
        ),
        "{e:?}"
    );
    assert_eq!(seen.answers.load(Ordering::SeqCst), 2);

    let (e, _) = answer_against(Evil::WrongAnswerChallenge, &reply).await;
    assert!(
        matches!(e, AnswerError::Connection(ConnectionError::Protocol(_))),
        "{e:?}"
    );
}

/// A server that dies in the middle of a request (its connection reset after the version
/// exchange): the error names the server and that the connection broke during a request (it
/// used to be "the connection to the server failed: Stream not connected", no address).
#[tokio::test]
async fn a_server_that_dies_mid_request_is_named() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let hello: Request = read_msg(&mut s, 1 << 16).await.unwrap();
        let Request::Hello { max_version, .. } = hello else {
            panic!("{hello:?}")
        };
        write_msg(
            &mut s,
            &Response::Hello {
                version: max_version,
            },
            1 << 16,
        )
        .await
        .unwrap();
        let _: Request = read_msg(&mut s, 1 << 16).await.unwrap();
        // Gone without a word, as a killed process: a reset, not a clean close.
        s.set_zero_linger().unwrap();
        drop(s);
    });
    let c = Client::new(
        Arc::new(rdv::client::direct::DirectConnector::default()),
        ClientConfig {
            retry_budget: Duration::ZERO,
            ..ClientConfig::default()
        },
        Arc::new(ManualClock::new(T0)),
    );
    let server = rdv::proto::ServerAddr::parse(&addr.to_string()).unwrap();
    let e = c.info(&server).await.unwrap_err();
    let text = rdv::config::report(&e).to_string();
    assert!(text.contains(&addr.to_string()), "{text}");
    assert_eq!(e.kind(), ErrorKind::Transient, "{text}");
}
