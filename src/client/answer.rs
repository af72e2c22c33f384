//! The answer channel on the client side (PROTOCOL.md §15).
//!
//! The initiator offers with [`Client::offer_expecting_answer`] and keeps the [`PendingAnswer`]
//! (in memory, or in a state file through [`PendingAnswer::to_text`]). The accepter's
//! [`Client::accept`] returns a [`ReplyTo`] for such a link; [`Client::answer`] seals and leaves
//! the answer. The initiator's [`Client::collect`] fetches the mailbox and opens it. Every step
//! runs on its own connection (over Tor: its own circuit).

use super::{unexpected, Client, ConnectionError, Offer, Sent};
use super::{AnswerError, CollectError, DeleteError, OfferError};
use crate::proto::answer::{self, AnswerSecret};
use crate::proto::schedule::LookSchedule;
use crate::proto::wire::ANSWER_VERSION;
use crate::proto::{
    AnswerPublic, DeleteToken, ErrorCode, KdfProfile, LinkKey, Locator, MailboxAddr, Passphrase,
    Request, Response, ServerAddr,
};
use futures::stream::{FuturesUnordered, StreamExt};
use rand::RngCore;
use std::fmt;
use std::time::Duration;
use zeroize::Zeroizing;

/// What an accepter needs to answer a link: the link's servers (every one holds the mailbox),
/// the link key and the initiator's answer key. `Debug` is redacted.
pub struct ReplyTo {
    pub(super) servers: Vec<ServerAddr>,
    pub(super) key: LinkKey,
    pub(super) to: AnswerPublic,
}

impl fmt::Debug for ReplyTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyTo")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

/// What the initiator keeps until it collects the answer: where the link's copies are, the link
/// key, the answer secret, the link's deletion token, and when looking may start. Every secret
/// is zeroized on drop; `Debug` is redacted.
pub struct PendingAnswer {
    /// Every server holding a copy of the link and the copy's bucket, the link's main server
    /// first (the mailbox is on each of them).
    copies: Vec<(ServerAddr, Locator)>,
    token: DeleteToken,
    key: LinkKey,
    secret: AnswerSecret,
    link_expires: u64,
    polls_from: u64,
}

impl fmt::Debug for PendingAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAnswer")
            .field("servers", &self.servers().collect::<Vec<_>>())
            .field("link_expires", &self.link_expires)
            .field("polls_from", &self.polls_from)
            .finish_non_exhaustive()
    }
}

/// The first line of a pending answer's text form (version 2); version 1 is still read.
const TEXT_MAGIC: &str = "rdv-pending-answer 2";
const TEXT_MAGIC_V1: &str = "rdv-pending-answer 1";

/// A pending answer's text form does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a pending-answer state file: {0}")]
pub struct PendingAnswerError(&'static str);

fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn unb64_32(s: &str, what: &'static str) -> Result<Zeroizing<[u8; 32]>, PendingAnswerError> {
    use base64::Engine;
    let v = Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| PendingAnswerError(what))?,
    );
    let mut out = Zeroizing::new([0u8; 32]);
    if v.len() != 32 {
        return Err(PendingAnswerError(what));
    }
    out.copy_from_slice(&v);
    Ok(out)
}

impl PendingAnswer {
    /// The link's main server.
    pub fn server(&self) -> &ServerAddr {
        &self.copies[0].0
    }

    /// Every server holding the link (and the mailbox), the main one first.
    pub fn servers(&self) -> impl Iterator<Item = &ServerAddr> {
        self.copies.iter().map(|(s, _)| s)
    }

    /// When the link expires (unix seconds): no accepter can fetch it after that, so an answer
    /// that has not arrived by then is not coming.
    pub fn link_expires(&self) -> u64 {
        self.link_expires
    }

    /// When the link's bucket closes on this machine's clock (unix seconds): the first look into
    /// the mailbox comes after it (PROTOCOL.md §15.4). 0 for a state file of version 1.
    pub fn polls_from(&self) -> u64 {
        self.polls_from
    }

    /// The text form, for a state file (it holds secrets: keep it private, delete it after).
    /// PROTOCOL.md §15.4 describes it.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut t = Zeroizing::new(format!(
            "{TEXT_MAGIC}\nserver {}\nlocator {}\n",
            self.copies[0].0,
            b64(&self.copies[0].1 .0)
        ));
        for (server, locator) in &self.copies[1..] {
            t.push_str(&format!("mirror {server} {}\n", b64(&locator.0)));
        }
        t.push_str(&format!(
            "token {}\nkey {}\nsecret {}\nlink-expires {}\npolls-from {}\n",
            self.token.to_text().as_str(),
            Zeroizing::new(b64(self.key.expose())).as_str(),
            Zeroizing::new(b64(self.secret.expose())).as_str(),
            self.link_expires,
            self.polls_from,
        ));
        t
    }

    /// Parse the text form (version 2, or version 1 without `mirror` and `polls-from` lines).
    /// Fields come in the order [`PendingAnswer::to_text`] writes them.
    pub fn from_text(s: &str) -> Result<Self, PendingAnswerError> {
        let mut lines = s.lines().peekable();
        let v1 = match lines.next() {
            Some(TEXT_MAGIC) => false,
            Some(TEXT_MAGIC_V1) => true,
            _ => {
                return Err(PendingAnswerError(
                    "the first line is not \"rdv-pending-answer 2\" (or 1)",
                ))
            }
        };
        fn value<'a>(
            l: Option<&'a str>,
            name: &'static str,
        ) -> Result<&'a str, PendingAnswerError> {
            l.and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .ok_or(PendingAnswerError(name))
        }
        let server = ServerAddr::parse(value(lines.next(), "server")?)
            .map_err(|_| PendingAnswerError("server address"))?;
        let locator = Locator(*unb64_32(value(lines.next(), "locator")?, "locator")?);
        let mut copies = vec![(server, locator)];
        while !v1 && lines.peek().is_some_and(|l| l.starts_with("mirror ")) {
            let m = value(lines.next(), "mirror")?;
            let (server, locator) = m.split_once(' ').ok_or(PendingAnswerError("mirror"))?;
            let server =
                ServerAddr::parse(server).map_err(|_| PendingAnswerError("mirror address"))?;
            copies.push((server, Locator(*unb64_32(locator, "mirror locator")?)));
        }
        if copies.len() > 1 + crate::proto::link::MAX_MIRRORS {
            return Err(PendingAnswerError("too many mirror lines"));
        }
        let token =
            DeleteToken::parse(value(lines.next(), "token")?).ok_or(PendingAnswerError("token"))?;
        let key = LinkKey::from_bytes(*unb64_32(value(lines.next(), "key")?, "key")?);
        let secret = AnswerSecret::from_bytes(*unb64_32(value(lines.next(), "secret")?, "secret")?);
        let link_expires = value(lines.next(), "link-expires")?
            .parse()
            .map_err(|_| PendingAnswerError("link-expires"))?;
        let polls_from = if v1 {
            0
        } else {
            value(lines.next(), "polls-from")?
                .parse()
                .map_err(|_| PendingAnswerError("polls-from"))?
        };
        if lines.any(|l| !l.trim().is_empty()) {
            return Err(PendingAnswerError("unexpected lines at the end"));
        }
        Ok(PendingAnswer {
            copies,
            token,
            key,
            secret,
            link_expires,
            polls_from,
        })
    }
}

impl Client {
    /// [`Client::offer`] for a link that expects an answer: the link carries a fresh answer key,
    /// and the [`PendingAnswer`] holds what collecting the answer needs. The payload may be at
    /// most [`crate::proto::seal::MAX_PAYLOAD_WITH_ANSWER`] bytes. A server without mailboxes
    /// is refused before anything is stored.
    pub async fn offer_expecting_answer(
        &self,
        server: &ServerAddr,
        payload: &[u8],
        passphrase: Passphrase,
        kdf: KdfProfile,
    ) -> Result<(Offer, PendingAnswer), OfferError> {
        self.offer_to_all_expecting_answer(std::slice::from_ref(server), payload, passphrase, kdf)
            .await
    }

    /// [`Client::offer_expecting_answer`] with a copy on every server of `servers` (as
    /// [`Client::offer_to_all`]): the accepter leaves the answer on every server it reaches,
    /// and collecting looks on all of them (PROTOCOL.md §15.4).
    pub async fn offer_to_all_expecting_answer(
        &self,
        servers: &[ServerAddr],
        payload: &[u8],
        passphrase: Passphrase,
        kdf: KdfProfile,
    ) -> Result<(Offer, PendingAnswer), OfferError> {
        let mut rng = rand::rngs::OsRng;
        let mut b = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut b[..]);
        let secret = AnswerSecret::from_bytes(*b);
        let to = secret.public();
        let (offer, key) = self
            .offer_to_all_with(servers, payload, passphrase, kdf, Some(&to))
            .await?;
        // When the bucket closes, on this machine's clock.
        let info = &offer.server_info;
        let closes_in = offer
            .bucket
            .created
            .saturating_add(info.open_window_secs)
            .saturating_sub(info.server_time);
        let pending = PendingAnswer {
            copies: offer.link.servers(),
            token: offer.delete_token.clone(),
            key,
            secret,
            link_expires: offer.bucket.created.saturating_add(info.ttl_secs),
            polls_from: self.clock.now().saturating_add(closes_in),
        };
        Ok((offer, pending))
    }

    /// Answer an accepted link: seal `payload` (at most [`answer::MAX_ANSWER`] bytes) with a
    /// fresh ephemeral key and leave it in the link's mailbox, on every server of the link at
    /// once (each on its own connection). Done when every server that could be reached took it;
    /// a mailbox answers only once, and one server saying so is [`AnswerError::AlreadyAnswered`].
    pub async fn answer(&self, reply: &ReplyTo, payload: &[u8]) -> Result<(), AnswerError> {
        let mut rng = rand::rngs::OsRng;
        let mut eph = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut eph[..]);
        let mut nonce = [0u8; crate::proto::seal::NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let (mailbox, sealed) = answer::seal_answer(&reply.key, &reply.to, payload, *eph, nonce)?;
        let put = Request::PutAnswer {
            mailbox,
            answer: sealed,
        };
        let results = futures::future::join_all(reply.servers.iter().map(|server| {
            let put = &put;
            async move { (server, self.put_answer_at(server, put).await) }
        }))
        .await;
        let stored = results.iter().filter(|(_, r)| r.is_ok()).count();
        let mut failures = Vec::new();
        for (server, r) in results {
            match r {
                Ok(()) => {}
                Err(AnswerError::AlreadyAnswered) => return Err(AnswerError::AlreadyAnswered),
                Err(e) if reply.servers.len() == 1 => return Err(e),
                Err(e) => failures.push((server.to_string(), e)),
            }
        }
        if stored == 0 {
            return Err(AnswerError::AllServers(failures));
        }
        for (server, e) in &failures {
            tracing::warn!(%server, error = %crate::config::report(e), "this server did not take the answer");
        }
        Ok(())
    }

    async fn put_answer_at(&self, server: &ServerAddr, put: &Request) -> Result<(), AnswerError> {
        match self.request_fresh(server, put, ANSWER_VERSION).await {
            Ok(Sent::OldServer(version)) => Err(AnswerError::NoMailboxes { version }),
            Ok(Sent::Answer(Response::AnswerStored)) => Ok(()),
            Ok(Sent::Answer(r)) => Err(unexpected("AnswerStored", &r).into()),
            Err(ConnectionError::Server {
                code: ErrorCode::AlreadyAnswered,
                ..
            }) => Err(AnswerError::AlreadyAnswered),
            Err(e) => Err(e.into()),
        }
    }

    /// Look into the mailbox once, on every server of the link at once (each on its own
    /// connection): the answer, or `None` if nothing there opens (no answer yet; a server that
    /// answers with anything else than the real answer looks the same). An error only when no
    /// server could be asked. This is one look now, whatever the schedule:
    /// [`Client::collect_scheduled`] keeps the timing rules.
    pub async fn collect(
        &self,
        pending: &PendingAnswer,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, CollectError> {
        let mailbox = answer::mailbox(&pending.key, &pending.secret.public());
        let mut looks: FuturesUnordered<_> = pending
            .servers()
            .map(|server| async move { (server, self.look_at(server, mailbox, pending).await) })
            .collect();
        let mut failures = Vec::new();
        while let Some((server, r)) = looks.next().await {
            match r {
                Ok(Some(a)) => return Ok(Some(a)),
                Ok(None) => {}
                Err(e) => failures.push((server.to_string(), e)),
            }
        }
        if failures.len() < pending.copies.len() {
            for (server, e) in &failures {
                tracing::warn!(%server, error = %crate::config::report(e), "this server could not be asked for the answer");
            }
            return Ok(None);
        }
        if failures.len() == 1 {
            return Err(failures.remove(0).1);
        }
        Err(CollectError::AllServers(failures))
    }

    async fn look_at(
        &self,
        server: &ServerAddr,
        mailbox: MailboxAddr,
        pending: &PendingAnswer,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, CollectError> {
        match self
            .request_fresh(server, &Request::FetchAnswer { mailbox }, ANSWER_VERSION)
            .await?
        {
            Sent::OldServer(version) => Err(CollectError::NoMailboxes { version }),
            Sent::Answer(Response::Answer { answer }) => {
                Ok(answer::open_answer(&pending.key, &pending.secret, &answer).ok())
            }
            Sent::Answer(r) => Err(unexpected("Answer", &r).into()),
        }
    }

    /// Delete the offered link from its bucket (from every server's, for a multi-server link),
    /// each on a connection of its own. Mind the timing (PROTOCOL.md §15.4): a delete names its
    /// link, and right after the answer it ties the link to the accepter's fetch.
    pub async fn retire(&self, pending: &PendingAnswer) -> Result<(), DeleteError> {
        if pending.copies.len() == 1 {
            return self
                .delete_at(pending.server(), pending.copies[0].1, &pending.token)
                .await;
        }
        self.delete_copies(&pending.copies, &pending.token).await
    }

    /// Look into the mailbox on `schedule` until an answer opens or `wait` has passed since
    /// looking started ([`CollectError::NoAnswerYet`]): no look before the bucket closes (unless
    /// the schedule is early), then looks after exponential pauses, and a last one when the
    /// wait ends. Transient connection failures in between are retried at the next look;
    /// others end the wait.
    pub async fn collect_scheduled(
        &self,
        pending: &PendingAnswer,
        schedule: LookSchedule,
        wait: Duration,
    ) -> Result<Zeroizing<Vec<u8>>, CollectError> {
        let now = self.clock.now();
        let start = schedule.start(now, pending.polls_from);
        let begin = tokio::time::Instant::now() + Duration::from_secs(start - now);
        let until = begin + wait;
        let mut next = tokio::time::Instant::now()
            + schedule.first_look_in(now, pending.polls_from, rand::random());
        loop {
            let last = next >= until;
            tokio::time::sleep_until(next.min(until)).await;
            match self.collect(pending).await {
                Ok(Some(a)) => return Ok(a),
                Ok(None) => {}
                Err(e) if e.kind() == super::ErrorKind::Transient && !last => {
                    tracing::info!(error = %crate::config::report(&e), "looking for the answer failed; trying again at the next look");
                }
                Err(e) => return Err(e),
            }
            if last {
                return Err(CollectError::NoAnswerYet);
            }
            next = tokio::time::Instant::now() + schedule.next_look_in(rand::random());
        }
    }
}
