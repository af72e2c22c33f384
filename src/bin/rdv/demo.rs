//! `rdv demo`: a complete rendezvous on loopback, with the answer, needing nothing but this
//! binary.

use anyhow::{Context, Result};
use rdv::client::direct::DirectConnector;
use rdv::client::{generate_passphrase, AcceptError, Client, ClientConfig};
use rdv::clock::SystemClock;
use rdv::proto::padding::FillerSecret;
use rdv::proto::{KdfProfile, Passphrase, ServerAddr};
use rdv::server::{Server, ServerConfig};
use rdv::store::{BucketStore, DiskStore, DiskStoreConfig};
use std::sync::Arc;
use std::time::Instant;

const OTHERS: usize = 40;

/// The demo server's open window, seconds: short, so that the initiator's first look for the
/// answer (which waits for the bucket to close) comes within the demo.
const WINDOW: u64 = 4;

/// The clock difference the demo's client allows with its server (both run on this machine's
/// clock): a bucket counts as closed to every client this long after its window, so the first
/// look waits for it. A real client allows 2 minutes.
const SKEW: u64 = 2;

/// The demo's stamp effort: low, so that 41 stamps take a few seconds (a real server asks 64,
/// about 0.2 s of one core per offer).
const EFFORT: u32 = 8;

/// Run the demo.
pub(crate) async fn run() -> Result<()> {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let mut config = DiskStoreConfig::default();
    config.params.open_window_secs = WINDOW;
    let store = DiskStore::open(dir.path(), config, FillerSecret::from_bytes(seed))?;
    let params = store.params();
    let config = ServerConfig {
        stamp_effort: EFFORT,
        ..ServerConfig::default()
    };
    let server = Server::new(store, config, Arc::new(SystemClock))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(server.clone().run_tcp(listener));
    println!(
        "1. rendezvous server on {addr} (plain TCP on loopback; in real use an onion service)"
    );
    println!(
        "   data: {} (redb), open window {} s (a real server: 10 min), ttl {} s",
        dir.path().display(),
        params.open_window_secs,
        params.ttl_secs
    );

    let server_addr = ServerAddr::parse(&addr.to_string())?;
    let mut client_config = ClientConfig::default();
    client_config.policy.min_effort = EFFORT;
    client_config.policy.max_skew_secs = SKEW;
    // The close counts from the longest window the client accepts, not from the one the server
    // advertises (which it could set per connection): the demo's client accepts its server's.
    client_config.policy.max_open_window_secs = WINDOW;
    let client = Client::new(
        Arc::new(DirectConnector::to(addr.to_string())),
        client_config,
        Arc::new(SystemClock),
    );

    println!("2. {OTHERS} other initiators store their sealed links (cheap 'test' KDF to keep the demo quick), each with a stamp: proof of work bound to the bucket (effort {EFFORT} here, 64 on a real server)");
    let mut other_ids = std::collections::BTreeSet::new();
    for i in 0..OTHERS {
        let payload = format!("smp://other-server-{i}.example/queue-{i:04}");
        let o = client
            .offer(
                &server_addr,
                payload.as_bytes(),
                generate_passphrase(),
                KdfProfile::Test,
            )
            .await?;
        other_ids.insert(o.bucket);
    }
    let ids: Vec<String> = other_ids.iter().map(|i| i.to_string()).collect();
    println!("   they landed in bucket(s) {}", ids.join(", "));

    let payload = "simplex:/contact#/?v=2-7&smp=smp%3A%2F%2Fsecret-server.example%2Fq7Jx";
    let passphrase = generate_passphrase();
    println!("3. our initiator seals its connection link ({} bytes) with Argon2id 'default' (64 MiB) and a fresh X25519 answer key, and stores it", payload.len());
    let t = Instant::now();
    let (offer, pending) = client
        .offer_expecting_answer(
            &server_addr,
            payload.as_bytes(),
            passphrase.clone(),
            KdfProfile::Default,
        )
        .await?;
    println!(
        "   bucket ID {} (created {}, sequence {}): passed the anti-fingerprinting check",
        offer.bucket, offer.bucket.created, offer.bucket.seq
    );
    println!(
        "   locator (SHA3-256 of the ID) {}",
        hex(&offer.bucket.locator().0)
    );
    println!("   took {:.2} s", t.elapsed().as_secs_f64());
    let link = offer.link.without_passphrase();
    println!("4. hand-over in two channels:");
    println!("   link:       {}", &*link.to_uri());
    println!("   passphrase: {}", passphrase.expose());
    println!("   (one-channel form: {})", &*offer.link.to_uri());

    println!("5. the accepter fetches the bucket and trial-decrypts every link");
    let t = Instant::now();
    let found = client.accept(&link, Some(passphrase.clone())).await?;
    println!(
        "   tried {} links (the server always pads its reply to a full bucket), link {} opened, {:.2} s",
        found.tried,
        found.index + 1,
        t.elapsed().as_secs_f64()
    );
    println!(
        "   {} of the entries carry a valid stamp: this link hides among {} verified links (a server faking company would have to do the work of each)",
        found.links_verified.unwrap_or(0),
        found.links_verified.unwrap_or(0)
    );
    println!("   payload: {}", String::from_utf8_lossy(&found.payload));
    if found.payload[..] != *payload.as_bytes() {
        anyhow::bail!("the accepter opened a different payload than was offered");
    }

    let reply_link = "simplex:/contact#/?v=2-7&smp=smp%3A%2F%2Faccepter-server.example%2Fr4Kq";
    println!("6. the accepter answers with its own connection link, sealed to the initiator's answer key (forward-secret: X25519 with a throw-away key), into a mailbox only the two can name");
    let reply = found
        .reply
        .as_ref()
        .context("the link should expect an answer")?;
    client.answer(reply, reply_link.as_bytes()).await?;
    println!("   the initiator looks into the mailbox only once the bucket has closed to every client (a look right after its store would tell the server which link the mailbox belongs to), then at random moments (here about a second apart; by default 30 s)");
    let closes_in = offer
        .closes_at
        .saturating_sub(rdv::clock::Clock::now(&SystemClock));
    println!("   waiting {closes_in} s for that: the longest open window the client accepts ({WINDOW} s here, the demo server's; 10 min by default) plus the clock difference a client allows its server ({SKEW} s here, 2 min by default), counted from the bucket's creation");
    let t = Instant::now();
    let schedule = rdv::proto::schedule::LookSchedule {
        mean: std::time::Duration::from_secs(1),
        early: false,
    };
    let answer = client
        .collect_scheduled(&pending, schedule, std::time::Duration::from_secs(30))
        .await
        .context("the answer should be in the mailbox")?
        .answer;
    println!(
        "   the initiator collects it after {:.1} s: {}",
        t.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&answer)
    );
    if answer[..] != *reply_link.as_bytes() {
        anyhow::bail!("the initiator collected a different answer than was given");
    }
    match client.answer(reply, b"a second answer").await {
        Err(e @ rdv::client::AnswerError::AlreadyAnswered { .. }) => {
            println!("   a second answer is refused: {e}")
        }
        other => anyhow::bail!("a second answer should be refused, got {other:?}"),
    }
    drop(pending);

    println!("7. someone with the link but a wrong passphrase:");
    match client
        .accept(&link, Some(Passphrase::new("wrong-guess")))
        .await
    {
        Err(e @ AcceptError::NoMatch { .. }) => println!("   refused: {e}"),
        other => anyhow::bail!("a wrong passphrase should find nothing, got {other:?}"),
    }

    println!(
        "8. the initiator can delete its link with its delete token {}… (by default it lets the link expire: a delete names the link, and right after the answer it would tie the link to the accepter's fetch; here it deletes now to show it)",
        &offer.delete_token.to_text()[..8]
    );
    client.delete(&link, &offer.delete_token).await?;
    match client.accept(&link, Some(passphrase)).await {
        Err(e @ AcceptError::NoMatch { .. }) => println!("   gone: {e}"),
        other => anyhow::bail!("a deleted link should not open, got {other:?}"),
    }
    println!(
        "   the server now holds {} links and {} answer (kept for the ttl; unreadable once both sides dropped their keys)",
        server.store().link_count(),
        server.store().answer_count()
    );
    server.shutdown();
    server.drain().await;
    println!("done in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
