//! Multi-server links against real servers on disk over loopback TCP: a copy on each server
//! (copies that share nothing), accept from any, one server down or hostile, all down, delete
//! everywhere, and an offer that fails at one server taking its other copies back.

mod common;

use common::{manual_clock, start_default};
use rdv::client::direct::DirectConnector;
use rdv::client::{AcceptError, Client, ClientConfig, OfferError};
use rdv::clock::ManualClock;
use rdv::proto::{KdfProfile, Passphrase, RdvLink, ServerAddr};
use rdv::store::BucketStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

fn client(clock: &ManualClock) -> Client {
    Client::new(
        Arc::new(DirectConnector::default()),
        ClientConfig {
            connect_timeout: Duration::from_secs(5),
            retry_budget: Duration::ZERO,
            copy_spread: Duration::ZERO,
            ..Default::default()
        },
        Arc::new(clock.clone()),
    )
}

fn addr(a: std::net::SocketAddr) -> ServerAddr {
    ServerAddr::parse(&a.to_string()).unwrap()
}

/// `n` servers on their own data directories (kept alive by the first value), on `clock`, and
/// their addresses.
async fn disk_servers(
    clock: &ManualClock,
    n: usize,
) -> (
    Vec<tempfile::TempDir>,
    Vec<Arc<rdv::server::Server<rdv::store::DiskStore>>>,
    Vec<ServerAddr>,
) {
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut servers, mut addrs) = (Vec::new(), Vec::new());
    for d in &dirs {
        let (s, a) = start_default(d.path(), Arc::new(clock.clone())).await;
        servers.push(s);
        addrs.push(addr(a));
    }
    (dirs, servers, addrs)
}

/// `n` servers on their own data directories, on `clock`, each reached through a proxy that
/// cuts the connection of a put of an answer while `cut` names that server (`usize::MAX`: none):
/// the directories, the servers and the proxies' addresses.
async fn put_cutting_servers(
    clock: &ManualClock,
    n: usize,
    cut: &Arc<std::sync::atomic::AtomicUsize>,
) -> (
    Vec<tempfile::TempDir>,
    Vec<Arc<rdv::server::Server<rdv::store::DiskStore>>>,
    Vec<ServerAddr>,
) {
    let (dirs, servers, direct) = disk_servers(clock, n).await;
    let mut addrs = Vec::new();
    for (i, a) in direct.iter().enumerate() {
        let cut = cut.clone();
        let proxy = common::proxy::frame_proxy(
            a.to_string().parse().unwrap(),
            move |r| {
                cut.load(std::sync::atomic::Ordering::SeqCst) == i
                    && matches!(
                        r,
                        rdv::proto::Request::PutAnswer { .. }
                            | rdv::proto::Request::StampedPutAnswer { .. }
                    )
            },
            |_| {},
        )
        .await;
        addrs.push(addr(proxy));
    }
    (dirs, servers, addrs)
}

/// An offer of `payload` under `pass` on every server of `addrs`, expecting an answer.
async fn offer_expecting(
    c: &Client,
    addrs: &[ServerAddr],
    payload: &[u8],
    pass: Passphrase,
) -> (rdv::client::Offer, rdv::client::PendingAnswer) {
    c.offer_to_all_expecting_answer(addrs, payload, pass, KdfProfile::Test)
        .await
        .unwrap()
}

/// A TCP server that answers every connection with garbage.
async fn hostile() -> ServerAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(&[0xFF; 64]).await;
            });
        }
    });
    addr(a)
}

/// An address where nothing listens.
async fn down() -> ServerAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    addr(a)
}

/// The single-server link to copy `i` of a multi-server link.
fn only(link: &RdvLink, i: usize) -> RdvLink {
    let (server, locator) = link.servers()[i].clone();
    RdvLink {
        server,
        locator,
        mirrors: Vec::new(),
        ..link.clone()
    }
}

/// With every copy answered (`--answer-every-copy`), a mirror that says "answered already" when
/// it is not (it stored the answer, or dropped it) keeps the answer from no one: the other servers took it and the initiator finds it there.
/// The accepter is told which server said so and that the others took the answer, not only
/// that someone else may hold the link (before: neither the server nor the others were named).
#[tokio::test]
async fn a_mirror_that_says_answered_already_is_named() {
    use rdv::proto::{ErrorCode, Response};
    let clock = manual_clock();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut addrs = Vec::new();
    let mut servers = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let (s, a) = start_default(d.path(), Arc::new(clock.clone())).await;
        servers.push(s);
        addrs.push(addr(if i < 2 {
            a
        } else {
            common::proxy::frame_proxy(
                a,
                |_| false,
                |resp| {
                    if matches!(resp, Response::AnswerStored) {
                        *resp = Response::Error {
                            code: ErrorCode::AlreadyAnswered,
                            message: "answered already".into(),
                        };
                    }
                },
            )
            .await
        }));
    }
    let c = client(&clock).with_answer_every_copy(true);
    let (offer, pending) = offer_expecting(
        &c,
        &addrs,
        b"smp://lying-mirror",
        Passphrase::new("lying mirror pass"),
    )
    .await;
    let reply = c.accept(&offer.link, None).await.unwrap().reply.unwrap();
    let e = c.answer(&reply, b"smp://reply").await.unwrap_err();
    match &e {
        rdv::client::AnswerError::AlreadyAnswered { server, took } => {
            assert_eq!(server, &addrs[2].to_string());
            assert_eq!(*took, 2);
        }
        other => panic!("{other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains(&addrs[2].to_string()) && text.contains("2 other servers"),
        "{text}"
    );
    assert_eq!(servers[0].store().answer_count(), 1);
    assert_eq!(servers[1].store().answer_count(), 1);
    let got = c.collect(&pending).await.unwrap().expect("the answer");
    assert_eq!(&got[..], b"smp://reply");
}

/// A multi-server link counts as closed (for `--hold` and the first looks) only once every
/// copy's bucket is closed to every client: the mirror whose bucket was created last decides
/// (its clock is 30 s ahead, within the policy's skew). Before, `--hold` waited for the first
/// server's close only, and handed the link over while the mirror's bucket still took links.
#[tokio::test]
async fn a_held_multi_server_link_waits_for_the_last_copy_to_close() {
    let clock = manual_clock();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut addrs = Vec::new();
    let mut servers = Vec::new();
    for (d, ahead) in dirs.iter().zip([0, 30]) {
        let (s, a) = common::start_server(
            d.path(),
            rdv::store::StoreParams::default(),
            rdv::server::ServerConfig::default(),
            Arc::new(ManualClock::new(common::T0 + ahead)),
        )
        .await;
        servers.push(s);
        addrs.push(addr(a));
    }
    let policy = rdv::proto::ClientPolicy::default();
    let offer = client(&clock)
        .offer_to_all(&addrs, b"p", Passphrase::new("pw pw pw"), KdfProfile::Test)
        .await
        .unwrap();
    let created = common::T0;
    assert_eq!(offer.bucket.created, created);
    assert_eq!(
        offer.closes_at,
        created + 30 + policy.max_open_window_secs + policy.max_skew_secs + 1,
        "the link counts as closed before the mirror's bucket is"
    );
    drop(servers);
}

#[tokio::test]
async fn a_copy_on_every_server_and_any_one_is_enough() {
    let clock = manual_clock();
    let (_dirs, servers, addrs) = disk_servers(&clock, 3).await;
    let c = client(&clock);
    let offer = c
        .offer_to_all(
            &addrs,
            b"smp://multi",
            Passphrase::new("multi pass"),
            KdfProfile::Test,
        )
        .await
        .unwrap();
    let link = offer.link.clone();
    assert_eq!(link.mirrors.len(), 2);
    assert_eq!(RdvLink::parse(&link.to_uri()).unwrap(), link);
    for s in &servers {
        assert_eq!(s.store().link_count(), 1);
    }
    // Every copy opens on its own, and the copies share no byte pattern a server could match:
    // each server's stored blob is different.
    let mut blobs = Vec::new();
    for i in 0..3 {
        let a = c.accept(&only(&link, i), None).await.unwrap();
        assert_eq!(a.payload.as_slice(), b"smp://multi");
        blobs.push(a.index);
    }
    let raw: Vec<Vec<u8>> = {
        use rdv::framed::{read_msg, write_msg};
        use rdv::proto::{wire::DEFAULT_MAX_FRAME, Request, Response};
        let mut v = Vec::new();
        for (i, (server, locator)) in link.servers().into_iter().enumerate() {
            let mut s = tokio::net::TcpStream::connect(server.to_string())
                .await
                .unwrap();
            assert!(common::raw_hello(&mut s).await);
            write_msg(&mut s, &Request::Fetch { locator }, DEFAULT_MAX_FRAME)
                .await
                .unwrap();
            let Ok(Response::Bucket { links }) = read_msg(&mut s, u32::MAX).await else {
                panic!("no bucket")
            };
            v.push(links[blobs[i]].0.to_vec());
        }
        v
    };
    assert!(raw[0] != raw[1] && raw[1] != raw[2] && raw[0] != raw[2]);
    for w in raw[0].windows(16) {
        assert!(
            !raw[1].windows(16).any(|x| x == w),
            "copies share a 16-byte run"
        );
    }

    // The whole link: any server will do, even when the others are down or hostile.
    assert_eq!(
        c.accept(&link, None).await.unwrap().payload.as_slice(),
        b"smp://multi"
    );
    let mut broken = link.clone();
    broken.server = down().await;
    broken.mirrors[0].server = hostile().await;
    let a = c.accept(&broken, None).await.unwrap();
    assert_eq!(a.payload.as_slice(), b"smp://multi");

    // All down or hostile: an error naming each, in the link's order.
    broken.mirrors[1].server = down().await;
    match c.accept(&broken, None).await {
        Err(AcceptError::AllServers(f)) => {
            let names: Vec<_> = f.iter().map(|(s, _)| s.clone()).collect();
            let want: Vec<_> = broken
                .servers()
                .iter()
                .map(|(s, _)| s.to_string())
                .collect();
            assert_eq!(names, want);
            let text = AcceptError::AllServers(f).to_string();
            for w in &want {
                assert!(text.contains(w.as_str()), "{text}");
            }
        }
        other => panic!("{other:?}"),
    }

    // Delete removes every copy (each with its own token).
    c.delete(&link, &offer.delete_token).await.unwrap();
    for s in &servers {
        assert_eq!(s.store().link_count(), 0);
    }
    // A copy's token is not another server's token.
    assert_ne!(
        offer.delete_token.for_server(1).check(),
        offer.delete_token.for_server(2).check()
    );
    assert!(c.accept(&link, None).await.is_err());
}

/// The copies go to the servers in a random order, not the link's first server first every
/// time (which told servers comparing notes whose store came first); the link still names its
/// servers in the order given, and each copy is deleted with its own token.
#[tokio::test]
async fn the_copies_are_stored_in_a_random_order() {
    let clock = manual_clock();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let stores: Arc<std::sync::Mutex<Vec<usize>>> = Arc::default();
    let (mut servers, mut addrs) = (Vec::new(), Vec::new());
    for (i, d) in dirs.iter().enumerate() {
        let (s, a) = start_default(d.path(), Arc::new(clock.clone())).await;
        servers.push(s);
        let stores = stores.clone();
        let proxy = common::proxy::frame_proxy(
            a,
            |_| false,
            move |r| {
                if r.kind() == "Stored" {
                    stores.lock().unwrap().push(i);
                }
            },
        )
        .await;
        addrs.push(addr(proxy));
    }
    let c = client(&clock);
    let mut firsts = Vec::new();
    for _ in 0..16 {
        stores.lock().unwrap().clear();
        let offer = c
            .offer_to_all(&addrs, b"p", Passphrase::new("pw pw pw"), KdfProfile::Test)
            .await
            .unwrap();
        let seen = stores.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        firsts.push(seen[0]);
        assert_eq!(offer.link.server, addrs[0]);
        assert_eq!(offer.link.mirrors[0].server, addrs[1]);
        for i in 0..2 {
            let a = c.accept(&only(&offer.link, i), None).await.unwrap();
            assert_eq!(a.payload.as_slice(), b"p");
        }
        c.delete(&offer.link, &offer.delete_token).await.unwrap();
    }
    for s in &servers {
        assert_eq!(s.store().link_count(), 0, "every copy was deleted");
    }
    // Always the first server first: 1 chance in 32 768 for a random order.
    assert!(firsts.contains(&0) && firsts.contains(&1), "{firsts:?}");
}

/// A client interrupted (an agent's stop, Ctrl-C) before an offer connects stores nothing:
/// the offer fails with `Interrupted` after its key derivation, without connecting. Before, it
/// stored the link and a stopping agent or an interrupted command deleted it again at once
/// (a store and a delete for the server to see).
#[tokio::test]
async fn an_interrupted_client_stores_nothing() {
    let clock = manual_clock();
    let c = client(&clock);
    c.interrupt();
    // Nothing listens there: a connection attempt would fail otherwise.
    let r = c
        .offer(
            &down().await,
            b"p",
            Passphrase::new("pw pw pw"),
            KdfProfile::Test,
        )
        .await;
    assert!(matches!(r, Err(OfferError::Interrupted)), "{r:?}");
}

#[tokio::test]
async fn an_offer_that_fails_at_one_server_takes_its_copies_back() {
    let clock = manual_clock();
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let (s1, a1) = start_default(d1.path(), Arc::new(clock.clone())).await;
    let (s2, a2) = start_default(d2.path(), Arc::new(clock.clone())).await;
    let c = client(&clock);
    let dead = down().await;
    let servers = [addr(a1), addr(a2), dead.clone()];
    match c
        .offer_to_all(
            &servers,
            b"p",
            Passphrase::new("pw pw pw"),
            KdfProfile::Test,
        )
        .await
    {
        Err(OfferError::AtServer { server, .. }) => assert_eq!(server, dead.to_string()),
        other => panic!("{other:?}"),
    }
    assert_eq!(s1.store().link_count(), 0, "the first copy was taken back");
    assert_eq!(s2.store().link_count(), 0, "the second copy was taken back");
    // Bad lists are refused before anything is stored.
    for bad in [vec![], vec![addr(a1), addr(a1)], vec![addr(a1); 6]] {
        assert!(matches!(
            c.offer_to_all(&bad, b"p", Passphrase::new("pw pw pw"), KdfProfile::Test)
                .await,
            Err(OfferError::Servers(_))
        ));
    }
    assert_eq!(s1.store().link_count(), 0);
}

/// Each copy of a multi-server link that expects an answer has a mailbox of its own, and the
/// answer left there is sealed for it alone: servers comparing notes see no mailbox name and no
/// answer bytes in common (before, the same mailbox and the same 256 bytes were on every server,
/// which told them that their copies belong together). The initiator looks at each server into
/// that server's mailbox, and the answer comes through; the state file keeps the naming.
#[tokio::test]
async fn each_copy_has_a_mailbox_and_an_answer_of_its_own() {
    use rdv::proto::Request;
    use std::sync::Mutex;
    let clock = manual_clock();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // Per server: the mailboxes answers were put into (with the answer), and looked into.
    type Seen = Arc<Mutex<(Vec<([u8; 32], Vec<u8>)>, Vec<[u8; 32]>)>>;
    let seen: Vec<Seen> = (0..3).map(|_| Arc::default()).collect();
    // Across the servers, in order: which server saw the accept's fetch and each answer put.
    let order: Arc<Mutex<Vec<(usize, &str)>>> = Arc::default();
    let (mut servers, mut addrs) = (Vec::new(), Vec::new());
    for (n, (d, seen)) in dirs.iter().zip(&seen).enumerate() {
        let (s, a) = start_default(d.path(), Arc::new(clock.clone())).await;
        servers.push(s);
        let (seen, order) = (seen.clone(), order.clone());
        let watch = move |r: &Request| {
            let mut seen = seen.lock().unwrap();
            match r {
                Request::PutAnswer { mailbox, answer }
                | Request::StampedPutAnswer {
                    mailbox, answer, ..
                } => {
                    seen.0.push((mailbox.0, answer.0.to_vec()));
                    order.lock().unwrap().push((n, "put"));
                }
                Request::FetchAnswer { mailbox } => seen.1.push(mailbox.0),
                Request::Fetch { .. } => order.lock().unwrap().push((n, "fetch")),
                _ => {}
            }
            false
        };
        addrs.push(addr(common::proxy::frame_proxy(a, watch, |_| {}).await));
    }
    let c = client(&clock).with_answer_every_copy(true);
    let (offer, pending) = offer_expecting(
        &c,
        &addrs,
        b"smp://own-mailboxes",
        Passphrase::new("own mailboxes pass"),
    )
    .await;
    let text = pending.to_text();
    assert!(text.starts_with("rdv-pending-answer 3\n"), "{}", &*text);
    let pending = rdv::client::PendingAnswer::from_text(&text).unwrap();
    let reply = c.accept(&offer.link, None).await.unwrap().reply.unwrap();
    c.answer(&reply, b"smp://reply").await.unwrap();
    let got = c.collect(&pending).await.unwrap().expect("the answer");
    assert_eq!(&got[..], b"smp://reply");
    let puts: Vec<_> = seen.iter().map(|s| s.lock().unwrap().0.clone()).collect();
    for (i, p) in puts.iter().enumerate() {
        assert_eq!(p.len(), 1, "server {i}: one answer put");
    }
    for i in 0..3 {
        for j in 0..i {
            assert_ne!(
                puts[i][0].0, puts[j][0].0,
                "servers {i} and {j}: one mailbox name"
            );
            assert_ne!(
                puts[i][0].1, puts[j][0].1,
                "servers {i} and {j}: the same answer"
            );
        }
        // The initiator looked into the mailbox the answer went to, there and nowhere else.
        let looks = seen[i].lock().unwrap().1.clone();
        assert!(!looks.is_empty(), "server {i}: no look");
        assert!(looks.iter().all(|m| *m == puts[i][0].0), "server {i}");
    }
    assert!(servers.iter().all(|s| s.store().answer_count() == 1));
    // The first answer went to the server the accept fetched from: drawn among all of them, it
    // went elsewhere in most answers, right after the fetch, and tied the fetch to that copy
    // for servers comparing notes (a helper's attack, 2026-12-06).
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 4, "{order:?}");
    assert_eq!(order[0].1, "fetch", "{order:?}");
    assert_eq!(order[1], (order[0].0, "put"), "{order:?}");
}

/// By default the accepter leaves the answer to a multi-server link in one copy's mailbox only:
/// the copy it fetched (its server saw the fetch), and another only when that server does not
/// take it; a server saying the link was answered ends the puts. Answered on every copy, the
/// puts' times and the looks that find them paired the copies for servers comparing notes (the
/// lab's copies section: 41-54 % of the mailboxes, against 8-14 % with one copy answered).
#[tokio::test]
async fn the_answer_goes_to_the_copy_fetched_and_to_another_only_when_that_fails() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let clock = manual_clock();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let fetched: Arc<Mutex<Vec<usize>>> = Arc::default();
    // The server whose answer puts are cut (usize::MAX: none).
    let cut = Arc::new(AtomicUsize::new(usize::MAX));
    let (mut servers, mut addrs) = (Vec::new(), Vec::new());
    for (n, d) in dirs.iter().enumerate() {
        let (s, a) = start_default(d.path(), Arc::new(clock.clone())).await;
        servers.push(s);
        let (fetched, cut) = (fetched.clone(), cut.clone());
        let watch = move |r: &rdv::proto::Request| match r {
            rdv::proto::Request::Fetch { .. } => {
                fetched.lock().unwrap().push(n);
                false
            }
            rdv::proto::Request::PutAnswer { .. }
            | rdv::proto::Request::StampedPutAnswer { .. } => cut.load(Ordering::SeqCst) == n,
            _ => false,
        };
        addrs.push(addr(common::proxy::frame_proxy(a, watch, |_| {}).await));
    }
    let answers = || -> Vec<u64> { servers.iter().map(|s| s.store().answer_count()).collect() };
    let c = client(&clock);
    let offer = |payload: &'static [u8]| {
        let (c, addrs) = (&c, &addrs);
        async move {
            c.offer_to_all_expecting_answer(
                addrs,
                payload,
                Passphrase::new("one copy answered"),
                KdfProfile::Test,
            )
            .await
            .unwrap()
        }
    };

    // Every server up: the answer goes to the server the accept fetched from, and nowhere else.
    let (o, pending) = offer(b"smp://one").await;
    let reply = c.accept(&o.link, None).await.unwrap().reply.unwrap();
    let first = *fetched.lock().unwrap().last().unwrap();
    c.answer(&reply, b"smp://reply").await.unwrap();
    let mut expected = vec![0; 3];
    expected[first] = 1;
    assert_eq!(answers(), expected, "fetched from server {first}");
    let got = c.collect(&pending).await.unwrap().expect("the answer");
    assert_eq!(&got[..], b"smp://reply");

    // The fetched server does not take it: one other server gets it.
    let (o, pending) = offer(b"smp://two").await;
    let reply = c.accept(&o.link, None).await.unwrap().reply.unwrap();
    let second = *fetched.lock().unwrap().last().unwrap();
    cut.store(second, Ordering::SeqCst);
    c.answer(&reply, b"smp://reply 2").await.unwrap();
    let now = answers();
    assert_eq!(now[second], expected[second], "the cut server took it");
    assert_eq!(
        now.iter().sum::<u64>(),
        expected.iter().sum::<u64>() + 1,
        "{now:?}"
    );
    let got = c.collect(&pending).await.unwrap().expect("the answer");
    assert_eq!(&got[..], b"smp://reply 2");

    // Answered again, nothing cut: the fetched copy is still empty and takes it, and the puts
    // end there. Once more: that copy says it was answered, and no other server is asked.
    cut.store(usize::MAX, Ordering::SeqCst);
    let before = answers();
    c.answer(&reply, b"smp://again").await.unwrap();
    let after = answers();
    assert_eq!(after[second], before[second] + 1, "{after:?}");
    assert_eq!(after.iter().sum::<u64>(), before.iter().sum::<u64>() + 1);
    match c.answer(&reply, b"smp://thrice").await {
        Err(rdv::client::AnswerError::AlreadyAnswered { took: 0, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        answers(),
        after,
        "another server was asked after `answered`"
    );
}

/// `first` accepts `link` and answers it, then `second` does: the second answer must meet the
/// first (`AlreadyAnswered`, no other server taking it). `i` names the link in a failure.
async fn answer_twice(first: &Client, second: &Client, link: &RdvLink, i: usize) {
    let reply = first.accept(link, None).await.unwrap().reply.unwrap();
    first.answer(&reply, b"smp://first").await.unwrap();
    let reply = second.accept(link, None).await.unwrap().reply.unwrap();
    match second.answer(&reply, b"smp://second").await {
        Err(rdv::client::AnswerError::AlreadyAnswered { took: 0, .. }) => {}
        other => panic!("link {i}: {other:?}"),
    }
}

/// Every accepter of a multi-server link answers the link's first copy, so one who answers after
/// someone else (a link observer with the passphrase, say) meets that answer and is told
/// `AlreadyAnswered`. Before (a reviewer's finding, 2026-12-06), the copy was drawn afresh for
/// each accept: with one copy answered, the second accepter fetched and answered another copy in
/// two links of three here, unaware of the first answer.
#[tokio::test]
async fn a_second_answer_meets_the_first_on_the_link_s_first_copy() {
    let clock = manual_clock();
    let (_dirs, servers, addrs) = disk_servers(&clock, 3).await;
    let (first, second) = (client(&clock), client(&clock));
    for i in 0..6 {
        let (offer, _pending) = first
            .offer_to_all_expecting_answer(
                &addrs,
                b"smp://twice",
                Passphrase::new(format!("answered twice {i}")),
                KdfProfile::Test,
            )
            .await
            .unwrap();
        answer_twice(&first, &second, &offer.link, i).await;
    }
    let answers: u64 = servers.iter().map(|s| s.store().answer_count()).sum();
    assert_eq!(answers, 6);
}

/// Two accepters whose first copy's server is down both go on to the same next copy (copy
/// order goes round the link from the first copy, the same for every holder of the key), so the
/// second meets the first's answer there. Drawn at random, the next copies differed half the
/// time with three servers, and both answers went out unaware of each other.
#[tokio::test]
async fn accepters_whose_first_copy_is_down_meet_on_the_next() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let clock = manual_clock();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // The server that drops every fetch and answer (down, as far as accepters can tell).
    let down = Arc::new(AtomicUsize::new(usize::MAX));
    let mut addrs = Vec::new();
    for (n, d) in dirs.iter().enumerate() {
        let (_, a) = start_default(d.path(), Arc::new(clock.clone())).await;
        let down = down.clone();
        let cut = move |r: &rdv::proto::Request| {
            down.load(Ordering::SeqCst) == n
                && matches!(
                    r,
                    rdv::proto::Request::Fetch { .. }
                        | rdv::proto::Request::PutAnswer { .. }
                        | rdv::proto::Request::StampedPutAnswer { .. }
                )
        };
        addrs.push(addr(common::proxy::frame_proxy(a, cut, |_| {}).await));
    }
    let (first, second) = (client(&clock), client(&clock));
    for i in 0..6 {
        let pass = Passphrase::new(format!("first copy down {i}"));
        let (offer, _pending) = first
            .offer_to_all_expecting_answer(&addrs, b"smp://down", pass.clone(), KdfProfile::Test)
            .await
            .unwrap();
        let key = rdv::proto::kdf::derive_key(
            &pass,
            &offer.link.salt,
            offer.link.kdf,
            &Default::default(),
        )
        .unwrap();
        down.store(rdv::proto::link::first_copy(&key, 3), Ordering::SeqCst);
        answer_twice(&first, &second, &offer.link, i).await;
        down.store(usize::MAX, Ordering::SeqCst);
    }
}

/// A multi-server link that expects an answer: the answer is left on every server the accepter
/// reaches and looked for on all of them, so that one server down (the link's main one, here)
/// loses nothing (PROTOCOL.md §15.4).
#[tokio::test]
async fn an_answer_to_a_multi_server_link_survives_a_server_down() {
    let clock = manual_clock();
    let (_dirs, servers, addrs) = disk_servers(&clock, 3).await;
    let c = client(&clock).with_answer_every_copy(true);
    let (offer, pending) = offer_expecting(
        &c,
        &addrs,
        b"smp://multi-answer",
        Passphrase::new("multi answer pass"),
    )
    .await;
    assert_eq!(pending.servers().count(), 3);
    // Every copy is a format-3 link with the answer key.
    for i in 0..3 {
        let a = c.accept(&only(&offer.link, i), None).await.unwrap();
        assert!(a.reply.is_some(), "copy {i} expects an answer");
    }
    // The state file keeps every server.
    let text = pending.to_text();
    assert_eq!(text.lines().filter(|l| l.starts_with("copy ")).count(), 3);
    // Each copy has its own close (its own bucket on its own server).
    assert_eq!(pending.copies().len(), 3);
    assert!(pending.copies().iter().all(|c| c.polls_from > 0));
    let pending = rdv::client::PendingAnswer::from_text(&text).unwrap();
    assert_eq!(c.collect(&pending).await.unwrap(), None, "no answer yet");

    // The link's main server goes down; the accepter still gets the payload and answers.
    servers[0].shutdown();
    let found = c.accept(&offer.link, None).await.unwrap();
    let reply = found.reply.unwrap();
    c.answer(&reply, b"smp://reply").await.unwrap();
    assert_eq!(servers[1].store().answer_count(), 1);
    assert_eq!(servers[2].store().answer_count(), 1);
    match c.answer(&reply, b"smp://second").await {
        Err(rdv::client::AnswerError::AlreadyAnswered { took: 0, .. }) => {}
        other => panic!("{other:?}"),
    }
    // The initiator looks on every server: the main one is down, the others have it.
    let got = c.collect(&pending).await.unwrap().expect("the answer");
    assert_eq!(&got[..], b"smp://reply");
    // Retiring deletes the copies that can be reached.
    c.retire(&pending).await.unwrap();
    assert_eq!(servers[1].store().link_count(), 0);
    assert_eq!(servers[2].store().link_count(), 0);

    // Every server down: answering and looking fail, naming each server.
    servers[1].shutdown();
    servers[2].shutdown();
    match c.answer(&reply, b"smp://late").await {
        Err(e @ rdv::client::AnswerError::AllServers(_)) => {
            for a in &addrs {
                assert!(e.to_string().contains(&a.to_string()), "{e}");
            }
        }
        other => panic!("{other:?}"),
    }
    match c.collect(&pending).await {
        Err(rdv::client::CollectError::AllServers(f)) => assert_eq!(f.len(), 3),
        other => panic!("{other:?}"),
    }
}

/// An accept of a multi-server link fetches one copy, the link's first copy (drawn by its key:
/// the same every time, spread over links; the next only if that one fails), and is shown that
/// copy's count: only that server sees the fetch. Before, every
/// server was asked at once, and servers comparing notes grouped the simultaneous fetches and
/// chained them to one link's copies (a helper's attack cut single-server users' sets too).
/// The initiator's own count (`rdv offer --hold`) fetches every copy, a pause apart, and is
/// the least, so that `--min-k` holds whichever copy the accepter fetches.
#[tokio::test]
async fn an_accept_fetches_the_link_s_first_copy() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let clock = manual_clock();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let fetches: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::default()).collect();
    let mut addrs = Vec::new();
    for (d, seen) in dirs.iter().zip(&fetches) {
        let config = rdv::server::ServerConfig {
            stamp_effort: 2,
            ..Default::default()
        };
        let (_, a) = common::start_server(
            d.path(),
            Default::default(),
            config,
            Arc::new(clock.clone()),
        )
        .await;
        let seen = seen.clone();
        let proxy = common::proxy::frame_proxy(
            a,
            move |req| {
                if matches!(req, rdv::proto::Request::Fetch { .. }) {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                false
            },
            |_| {},
        )
        .await;
        addrs.push(addr(proxy));
    }
    let mut config = ClientConfig {
        connect_timeout: Duration::from_secs(5),
        retry_budget: Duration::ZERO,
        copy_spread: Duration::ZERO,
        ..Default::default()
    };
    config.policy.min_effort = 2;
    let c = Client::new(
        Arc::new(DirectConnector::default()),
        config,
        Arc::new(clock.clone()),
    );
    // Company on the main server only.
    for i in 0..4 {
        c.offer(
            &addrs[0],
            b"other",
            Passphrase::new(format!("p{i}")),
            KdfProfile::Test,
        )
        .await
        .unwrap();
    }
    let offer = c
        .offer_to_all(&addrs, b"both", Passphrase::new("mine"), KdfProfile::Test)
        .await
        .unwrap();
    let counts = || -> Vec<usize> { fetches.iter().map(|f| f.load(Ordering::SeqCst)).collect() };
    // One fetch, at one server: the link's first copy, every time, showing that copy's count (5
    // on the busy main server, 1 on the quiet mirror).
    let first = rdv::proto::link::first_copy(
        &rdv::proto::kdf::derive_key(
            &Passphrase::new("mine"),
            &offer.link.salt,
            offer.link.kdf,
            &Default::default(),
        )
        .unwrap(),
        2,
    );
    for _ in 0..5 {
        let before = counts();
        let a = c.accept(&offer.link, None).await.unwrap();
        assert_eq!(a.payload.as_slice(), b"both");
        let after = counts();
        let new: Vec<usize> = (0..2).map(|s| after[s] - before[s]).collect();
        let mut expected = vec![0, 0];
        expected[first] = 1;
        assert_eq!(new, expected, "fetches at each server");
        assert_eq!(
            a.links_verified,
            Some([5, 1][first]),
            "the fetched copy's count"
        );
    }
    // The initiator's own count (`offer --hold --min-k`) holds for whichever copy an accepter
    // fetches: every copy once, the least.
    let before = counts();
    assert_eq!(c.verified_links(&offer.link).await.unwrap(), Some(1));
    let after = counts();
    assert_eq!((after[0] - before[0], after[1] - before[1]), (1, 1));
    // Over links, the first copies are spread: 16 links, both copies drawn (all on one: 1 in
    // 30 000 runs).
    let mut drawn = [0usize; 2];
    for i in 0..16 {
        let o = c
            .offer_to_all(
                &addrs,
                b"more",
                Passphrase::new(format!("more {i}")),
                KdfProfile::Test,
            )
            .await
            .unwrap();
        let before = counts();
        c.accept(&o.link, None).await.unwrap();
        let after = counts();
        drawn[(0..2).find(|&s| after[s] > before[s]).unwrap()] += 1;
    }
    assert!(drawn.iter().all(|&n| n > 0), "{drawn:?}");
}

/// After a copy fails, the next is fetched a random pause later, not at once: a server that
/// fails on purpose (it drops the connection, answers "not found" or an empty bucket) would
/// otherwise pair its own fetch with the next server's, for servers comparing notes.
#[tokio::test]
async fn the_next_copy_is_fetched_a_pause_after_a_failure() {
    use std::sync::Mutex;
    use std::time::Instant;
    let clock = manual_clock();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    // When each server saw a fetch (the first one drops every fetch's connection).
    let fetched: Vec<Arc<Mutex<Vec<Instant>>>> = (0..2).map(|_| Arc::default()).collect();
    let mut addrs = Vec::new();
    for (i, (d, seen)) in dirs.iter().zip(&fetched).enumerate() {
        let (_, a) = start_default(d.path(), Arc::new(clock.clone())).await;
        let seen = seen.clone();
        let proxy = common::proxy::frame_proxy(
            a,
            move |req| {
                let fetch = matches!(req, rdv::proto::Request::Fetch { .. });
                if fetch {
                    seen.lock().unwrap().push(Instant::now());
                }
                fetch && i == 0
            },
            |_| {},
        )
        .await;
        addrs.push(addr(proxy));
    }
    let c = client(&clock);
    // A link whose first copy (the one every accept fetches first) is on the failing server.
    let mut offer = None;
    for i in 0.. {
        let pass = Passphrase::new(format!("after a failure {i}"));
        let o = c
            .offer_to_all(&addrs, b"after", pass.clone(), KdfProfile::Test)
            .await
            .unwrap();
        let key = rdv::proto::kdf::derive_key(&pass, &o.link.salt, o.link.kdf, &Default::default())
            .unwrap();
        if rdv::proto::link::first_copy(&key, 2) == 0 {
            offer = Some(o);
            break;
        }
    }
    let offer = offer.unwrap();
    let c = c.with_copy_spread(Duration::from_secs(1));
    let mut gaps = Vec::new();
    for _ in 0..24 {
        let before = fetched[0].lock().unwrap().len();
        let a = c.accept(&offer.link, None).await.unwrap();
        assert_eq!(a.payload.as_slice(), b"after");
        let failed = fetched[0].lock().unwrap().get(before).copied();
        if let Some(failed) = failed {
            let next = *fetched[1].lock().unwrap().last().unwrap();
            gaps.push(next - failed);
        }
    }
    // The failing copy first every time.
    assert_eq!(gaps.len(), 24);
    let short = gaps
        .iter()
        .filter(|g| **g < Duration::from_millis(50))
        .count();
    // A pause of mean 1 s is under 50 ms one time in 20; at once, every gap is.
    assert!(short * 2 < gaps.len().max(2), "{gaps:?}");
}

/// The copies of a multi-server link are stored, and deleted, a random pause apart
/// (exponential, mean `copy_spread`): stored one right after another, servers comparing notes
/// chained each link's copies by their store times (a helper's attack rebuilt 16 of 18 chains
/// on loopback), and deletes would chain them again.
#[tokio::test]
async fn copies_are_stored_a_random_pause_apart() {
    use std::sync::Mutex;
    use std::time::Instant;
    let clock = manual_clock();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    // When each server saw each connection's first request, and when it last answered.
    let hellos: Vec<Arc<Mutex<Vec<Instant>>>> = (0..2).map(|_| Arc::default()).collect();
    let answered: Vec<Arc<Mutex<Option<Instant>>>> = (0..2).map(|_| Arc::default()).collect();
    let mut addrs = Vec::new();
    for ((d, seen), answered) in dirs.iter().zip(&hellos).zip(&answered) {
        let (_, a) = start_default(d.path(), Arc::new(clock.clone())).await;
        let (seen, answered) = (seen.clone(), answered.clone());
        let proxy = common::proxy::frame_proxy(
            a,
            move |req| {
                if matches!(req, rdv::proto::Request::Hello { .. }) {
                    seen.lock().unwrap().push(Instant::now());
                }
                false
            },
            move |_| *answered.lock().unwrap() = Some(Instant::now()),
        )
        .await;
        addrs.push(addr(proxy));
    }
    let c = client(&clock).with_copy_spread(Duration::from_secs(1));
    const OFFERS: usize = 7;
    let (mut gaps, mut delete_gaps) = (Vec::new(), Vec::new());
    let last_hello = |s: usize| *hellos[s].lock().unwrap().last().unwrap();
    let last_answer = |s: usize| answered[s].lock().unwrap().unwrap();
    for i in 0..OFFERS {
        let t = Instant::now();
        let offer = c
            .offer_to_all(
                &addrs,
                b"spread",
                Passphrase::new(format!("spread {i}")),
                KdfProfile::Test,
            )
            .await
            .unwrap();
        // In a random order too: from the first copy's store answered to the other's first
        // request.
        let first = if last_hello(0) < last_hello(1) { 0 } else { 1 };
        let (first_done, next) = (last_answer(first), last_hello(1 - first));
        assert!(first_done >= t && next > first_done);
        gaps.push(next - first_done);
        // The deletes too, in a random order: from the first copy's delete answered to the
        // other's first request.
        let t = Instant::now();
        let outcomes = c.delete_each(&offer.link, &offer.delete_token).await;
        assert!(outcomes.iter().all(|(_, r)| r.is_ok()), "{outcomes:?}");
        let first = if last_hello(0) < last_hello(1) { 0 } else { 1 };
        let (done, next) = (last_answer(first), last_hello(1 - first));
        assert!(last_hello(first) >= t && next > done);
        delete_gaps.push(next - done);
    }
    // From one server's last answer (its copy stored, or deleted) to the other's first request:
    // the pause and a connection. One right after the other takes a few milliseconds on
    // loopback; a pause of mean 1 s is under 50 ms one time in 20, so four of seven that short
    // is about one run in 5 000.
    for gaps in [gaps, delete_gaps] {
        let short = gaps
            .iter()
            .filter(|g| **g < Duration::from_millis(50))
            .count();
        assert!(short < 4, "{gaps:?}");
    }
}

/// How many looks into a mailbox `server` answered.
fn looks<S: rdv::store::BucketStore>(server: &rdv::server::Server<S>) -> f64 {
    let text = server.metrics_text();
    ["fetch_empty", "fetch_found"]
        .iter()
        .filter_map(|o| {
            text.lines().find_map(|l| {
                l.strip_prefix(&format!("rdv_answers_total{{outcome=\"{o}\"}} "))?
                    .parse::<f64>()
                    .ok()
            })
        })
        .sum()
}

/// A one-time look at a multi-server link (`rdv collect` without --wait) looks at its copies
/// one after another, a spread pause apart: here a year on average, so that after seconds one
/// server has seen a look and the other none. Before, every copy was looked at in the same
/// instant, which paired the copies for servers comparing notes.
#[tokio::test]
async fn a_one_time_look_takes_the_copies_a_pause_apart() {
    let clock = manual_clock();
    let (_dirs, servers, addrs) = disk_servers(&clock, 2).await;
    let (_offer, pending) = offer_expecting(
        &client(&clock),
        &addrs,
        b"smp://one-time",
        Passphrase::new("one time look pass"),
    )
    .await;
    let slow = client(&clock).with_copy_spread(Duration::from_secs(365 * 86_400));
    let early = rdv::proto::schedule::LookSchedule {
        early: true,
        ..Default::default()
    };
    let looked = tokio::time::timeout(Duration::from_secs(10), slow.look(&pending, early)).await;
    assert!(looked.is_err(), "the look took no pause: {looked:?}");
    let mut seen: Vec<f64> = servers.iter().map(|s| looks(s)).collect();
    seen.sort_by(f64::total_cmp);
    assert_eq!(seen, [0.0, 1.0]);
}

/// A one-time look interrupted in its pause, after every copy it looked at failed, reports that
/// failure, not "no answer yet" (before, it counted the failures against every copy, those not
/// looked at too, and said that no answer was there).
#[tokio::test]
async fn an_interrupted_one_time_look_whose_looks_failed_says_so() {
    let clock = manual_clock();
    let (_dirs, servers, addrs) = disk_servers(&clock, 2).await;
    let (_offer, pending) = offer_expecting(
        &client(&clock),
        &addrs,
        b"smp://interrupted",
        Passphrase::new("interrupted look pass"),
    )
    .await;
    for s in &servers {
        s.shutdown();
    }
    let slow = client(&clock).with_copy_spread(Duration::from_secs(365 * 86_400));
    let early = rdv::proto::schedule::LookSchedule {
        early: true,
        ..Default::default()
    };
    let (looked, ()) = tokio::join!(slow.look(&pending, early), async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        slow.interrupt();
    });
    assert!(looked.is_err(), "{looked:?}");
}

/// Once the answer is in, the looks at the link's other copies tell when one of them holds
/// another answer: someone else answered that copy first, so someone else holds the link and
/// its passphrase (an answer cannot be made without them). Here a first accepter's answer
/// reaches only server 0, and a second accepter's answer takes server 1.
#[tokio::test]
async fn a_copy_answered_by_someone_else_is_told() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let clock = manual_clock();
    // Server 1's puts are cut while this names it.
    let cut = Arc::new(AtomicUsize::new(usize::MAX));
    let (_dirs, servers, addrs) = put_cutting_servers(&clock, 2, &cut).await;
    let c = client(&clock).with_answer_every_copy(true);
    let (offer, pending) = offer_expecting(
        &c,
        &addrs,
        b"smp://twice",
        Passphrase::new("answered twice pass"),
    )
    .await;
    cut.store(1, Ordering::SeqCst);
    let first = c.accept(&offer.link, None).await.unwrap().reply.unwrap();
    c.answer(&first, b"smp://first").await.unwrap();
    assert_eq!(servers[1].store().answer_count(), 0);
    cut.store(usize::MAX, Ordering::SeqCst);
    let second = c.accept(&offer.link, None).await.unwrap().reply.unwrap();
    match c.answer(&second, b"smp://second").await {
        Err(rdv::client::AnswerError::AlreadyAnswered { took: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
    let early = rdv::proto::schedule::LookSchedule {
        mean: Duration::from_millis(50),
        early: true,
    };
    let found = c
        .collect_scheduled(&pending, early, Duration::from_secs(60))
        .await
        .unwrap();
    let trailed = c.trail(&pending, early, found.copy, &found.answer).await;
    assert_eq!(trailed.opened, 1);
    let other = &pending.copies()[1 - found.copy].server;
    assert_eq!(trailed.differing, std::slice::from_ref(other));
}

/// A copy found holding someone else's answer is told in the moment it is found, while the
/// other copies' looks go on (they may go on for an hour): before, the warning came only when
/// every copy's looks had ended, and a command stopped before that told nothing.
#[tokio::test]
async fn a_different_answer_is_told_while_the_other_copies_are_still_looked_at() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let clock = manual_clock();
    // The server whose puts are cut (none: usize::MAX).
    let cut = Arc::new(AtomicUsize::new(usize::MAX));
    let (_dirs, servers, addrs) = put_cutting_servers(&clock, 3, &cut).await;
    let c = client(&clock);
    let (offer, pending) = offer_expecting(
        &c,
        &addrs,
        b"smp://told",
        Passphrase::new("told at once pass"),
    )
    .await;
    // The real accepter answers the link's first copy; someone else, answering every copy,
    // leaves another answer on one more copy (the third server's put is cut): one copy is
    // never answered, so its looks go on to their random end.
    let first = c.accept(&offer.link, None).await.unwrap().reply.unwrap();
    c.answer(&first, b"smp://first").await.unwrap();
    let held = |i: usize| servers[i].store().answer_count();
    let answered = (0..3).find(|&i| held(i) == 1).unwrap();
    let unanswered = (0..3).find(|&i| i != answered).unwrap();
    cut.store(unanswered, Ordering::SeqCst);
    let every = client(&clock).with_answer_every_copy(true);
    let second = every
        .accept(&offer.link, None)
        .await
        .unwrap()
        .reply
        .unwrap();
    let _ = every.answer(&second, b"smp://second").await;
    assert_eq!((0..3).map(held).sum::<u64>(), 2);
    assert_eq!(held(unanswered), 0);
    let early = rdv::proto::schedule::LookSchedule {
        mean: Duration::from_millis(50),
        early: true,
    };
    let found = c
        .collect_scheduled(&pending, early, Duration::from_secs(60))
        .await
        .unwrap();
    // The trail's end has a mean of hours (six times two spreads of an hour): the copy no
    // one answered is looked at long after the other one's answer opened.
    let long = client(&clock).with_copy_spread(Duration::from_secs(3600));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (ended_tx, mut ended_rx) = tokio::sync::mpsc::unbounded_channel();
    let plan = long.trail_plan(&pending, early, found.copy);
    let first = rdv::client::AnswerDigest::of(&found.answer);
    let trail = long.trail_planned(
        &pending,
        early,
        &plan,
        &first,
        |s| {
            let _ = tx.send(s.clone());
        },
        |copy| {
            let _ = ended_tx.send(copy);
        },
    );
    let told = tokio::select! {
        trailed = trail => panic!("the trail ended first: {trailed:?}"),
        told = rx.recv() => told.unwrap(),
        () = tokio::time::sleep(Duration::from_secs(60)) => {
            panic!("not told within a minute, while the other copy's looks went on")
        }
    };
    // Copies are in the link's order, which is the servers' order here.
    let other = (0..3)
        .find(|&i| i != unanswered && i != found.copy)
        .unwrap();
    assert_eq!(told, pending.copies()[other].server);
    // That copy's looks are over (its answer opened), and told so (an agent keeps only the
    // copies still looked at for a restart); the unanswered one's go on.
    assert_eq!(ended_rx.try_recv(), Ok(other));
    assert!(ended_rx.try_recv().is_err());
}
