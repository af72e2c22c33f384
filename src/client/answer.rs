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
use crate::proto::answer_stamp;
use crate::proto::schedule::LookSchedule;
use crate::proto::wire::{ANSWER_STAMP_VERSION, ANSWER_VERSION};
use crate::proto::{
    AnswerPublic, DeleteToken, ErrorCode, KdfProfile, LinkKey, Locator, MailboxAddr, Passphrase,
    Request, Response, SealedAnswer, ServerAddr,
};
use futures::stream::{FuturesUnordered, StreamExt};
use rand::RngCore;
use std::fmt;
use std::time::Duration;
use zeroize::Zeroizing;

/// What an accepter needs to answer a link: the link's servers in link order (every one holds a
/// mailbox: the same one, or one per copy), the link key and the initiator's answer key.
/// `Debug` is redacted.
pub struct ReplyTo {
    pub(super) servers: Vec<ServerAddr>,
    /// The place in `servers` of the copy the accept fetched.
    pub(super) fetched_from: Option<usize>,
    pub(super) mailboxes: answer::MailboxNames,
    pub(super) key: LinkKey,
    pub(super) to: AnswerPublic,
}

impl ReplyTo {
    /// A link on several servers with a mailbox per copy (format 3): its answer goes to one
    /// copy, or a pause apart to each ([`ClientConfig::answer_every_copy`]). `false` for a link
    /// of one server and for a shared mailbox (format 2: the same answer everywhere at once).
    ///
    /// [`ClientConfig::answer_every_copy`]: super::ClientConfig::answer_every_copy
    pub fn copies_answered_apart(&self) -> bool {
        matches!(self.mailboxes, answer::MailboxNames::PerCopy) && self.servers.len() > 1
    }
}

impl fmt::Debug for ReplyTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyTo")
            .field("servers", &self.servers)
            .field("mailboxes", &self.mailboxes)
            .finish_non_exhaustive()
    }
}

/// An answer that opened, and the copy of the link whose mailbox held it. `Debug` is redacted.
pub struct Collected {
    /// The answer.
    pub answer: Zeroizing<Vec<u8>>,
    /// The copy's place in the link ([`PendingAnswer::copies`]).
    pub copy: usize,
}

impl fmt::Debug for Collected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collected")
            .field("copy", &self.copy)
            .finish_non_exhaustive()
    }
}

/// What an answer is, for telling another apart from it without keeping it: SHA3-256 of its
/// bytes. A trail kept across a restart keeps this, not the answer.
#[derive(Clone, PartialEq, Eq)]
pub struct AnswerDigest(pub [u8; 32]);

impl AnswerDigest {
    /// The digest of `answer`.
    pub fn of(answer: &[u8]) -> Self {
        use sha3::Digest;
        AnswerDigest(sha3::Sha3_256::digest(answer).into())
    }
}

impl fmt::Debug for AnswerDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AnswerDigest(..)")
    }
}

/// What [`Client::trail`] found at a link's other copies.
#[derive(Debug, Default)]
pub struct Trailed {
    /// How many copies' own answers opened.
    pub opened: usize,
    /// The servers whose copy held another answer than the one collected first.
    pub differing: Vec<ServerAddr>,
}

/// One copy of a link that expects an answer: its server (which holds the mailbox too), its
/// bucket, and when that bucket closes on this machine's clock (unix seconds; no look at this
/// server comes before it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkCopy {
    /// The server.
    pub server: ServerAddr,
    /// The copy's bucket.
    pub locator: Locator,
    /// When the copy's bucket closes here (0: unknown, from a state file of version 1).
    pub polls_from: u64,
}

/// What the initiator keeps until it collects the answer: where the link's copies are, the link
/// key, the answer secret and the link's deletion token. Every secret is zeroized on drop;
/// `Debug` is redacted.
pub struct PendingAnswer {
    /// Every copy of the link, the main one first.
    copies: Vec<LinkCopy>,
    /// How the copies' mailboxes are named (per copy for a multi-server link in format 3).
    mailboxes: answer::MailboxNames,
    token: DeleteToken,
    key: LinkKey,
    secret: AnswerSecret,
    link_expires: u64,
}

impl fmt::Debug for PendingAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAnswer")
            .field("servers", &self.servers().collect::<Vec<_>>())
            .field("link_expires", &self.link_expires)
            .finish_non_exhaustive()
    }
}

/// The first line of a pending answer's text form (version 2, or 3 for a link with a mailbox
/// per copy); version 1 is still read.
const TEXT_MAGIC: &str = "rdv-pending-answer 2";
const TEXT_MAGIC_PER_COPY: &str = "rdv-pending-answer 3";
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

/// A decimal integer as the state file writes it: digits only, no sign, no leading zero.
fn decimal(s: &str, what: &'static str) -> Result<u64, PendingAnswerError> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical
        .then(|| s.parse().ok())
        .flatten()
        .ok_or(PendingAnswerError(what))
}

/// A moment in unix seconds as the state file writes it ([`decimal`]), at most
/// [`crate::clock::LAST_RFC3339_SECOND`]: a later one is no real bucket's (a client refuses a
/// server whose buckets would live that long), and every tool that shows it as a date would
/// fail on it.
fn moment(s: &str, what: &'static str, past: &'static str) -> Result<u64, PendingAnswerError> {
    decimal(s, what).and_then(|t| {
        (t <= crate::clock::LAST_RFC3339_SECOND)
            .then_some(t)
            .ok_or(PendingAnswerError(past))
    })
}

impl PendingAnswer {
    /// The link's main server.
    pub fn server(&self) -> &ServerAddr {
        &self.copies[0].server
    }

    /// Every server holding the link (and the mailbox), the main one first.
    pub fn servers(&self) -> impl Iterator<Item = &ServerAddr> {
        self.copies.iter().map(|c| &c.server)
    }

    /// Every copy of the link, the main one first.
    pub fn copies(&self) -> &[LinkCopy] {
        &self.copies
    }

    /// When the link expires (unix seconds): no accepter can fetch it after that, so an answer
    /// that has not arrived by then is not coming.
    pub fn link_expires(&self) -> u64 {
        self.link_expires
    }

    /// When the earliest-closing copy's bucket closes on this machine's clock (unix seconds):
    /// the earliest moment a look is allowed anywhere (PROTOCOL.md §15.4). 0 for a state file
    /// of version 1.
    pub fn polls_from(&self) -> u64 {
        self.copies.iter().map(|c| c.polls_from).min().unwrap_or(0)
    }

    /// The text form, for a state file (it holds secrets: keep it private, delete it after).
    /// PROTOCOL.md §15.4 describes it.
    pub fn to_text(&self) -> Zeroizing<String> {
        let magic = match self.mailboxes {
            answer::MailboxNames::Shared => TEXT_MAGIC,
            answer::MailboxNames::PerCopy => TEXT_MAGIC_PER_COPY,
        };
        let mut t = Zeroizing::new(format!("{magic}\n"));
        for c in &self.copies {
            t.push_str(&format!(
                "copy {} {} {}\n",
                c.server,
                b64(&c.locator.0),
                c.polls_from
            ));
        }
        t.push_str(&format!(
            "token {}\nkey {}\nsecret {}\nlink-expires {}\n",
            self.token.to_text().as_str(),
            Zeroizing::new(b64(self.key.expose())).as_str(),
            Zeroizing::new(b64(self.secret.expose())).as_str(),
            self.link_expires,
        ));
        t
    }

    /// Parse the text form (version 2 or 3, or version 1 with `server` and `locator` lines
    /// instead of `copy` lines). Fields come in the order [`PendingAnswer::to_text`] writes them.
    pub fn from_text(s: &str) -> Result<Self, PendingAnswerError> {
        fn value<'a>(
            l: Option<&'a str>,
            name: &'static str,
        ) -> Result<&'a str, PendingAnswerError> {
            l.and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .ok_or(PendingAnswerError(name))
        }
        let mut lines = s.lines().peekable();
        let mut copies = Vec::new();
        let first = lines.next();
        let mailboxes = match first {
            Some(TEXT_MAGIC_PER_COPY) => answer::MailboxNames::PerCopy,
            _ => answer::MailboxNames::Shared,
        };
        match first {
            Some(TEXT_MAGIC | TEXT_MAGIC_PER_COPY) => {
                while lines.peek().is_some_and(|l| l.starts_with("copy ")) {
                    let mut f = value(lines.next(), "copy")?.split(' ');
                    let (Some(server), Some(locator), Some(from), None) =
                        (f.next(), f.next(), f.next(), f.next())
                    else {
                        return Err(PendingAnswerError("copy"));
                    };
                    copies.push(LinkCopy {
                        server: ServerAddr::parse(server)
                            .map_err(|_| PendingAnswerError("copy server address"))?,
                        locator: Locator(*unb64_32(locator, "copy locator")?),
                        polls_from: moment(
                            from,
                            "copy polls-from",
                            "copy polls-from: a time past the year 9999",
                        )?,
                    });
                }
                if copies.is_empty() || copies.len() > 1 + crate::proto::link::MAX_MIRRORS {
                    return Err(PendingAnswerError("copy lines (one to five)"));
                }
            }
            Some(TEXT_MAGIC_V1) => {
                let server = ServerAddr::parse(value(lines.next(), "server")?)
                    .map_err(|_| PendingAnswerError("server address"))?;
                let locator = Locator(*unb64_32(value(lines.next(), "locator")?, "locator")?);
                copies.push(LinkCopy {
                    server,
                    locator,
                    polls_from: 0,
                });
            }
            _ => {
                return Err(PendingAnswerError(
                    "the first line is not \"rdv-pending-answer 2\" (or 3, or 1)",
                ))
            }
        }
        let token =
            DeleteToken::parse(value(lines.next(), "token")?).ok_or(PendingAnswerError("token"))?;
        let key = LinkKey::from_bytes(*unb64_32(value(lines.next(), "key")?, "key")?);
        let secret = AnswerSecret::from_bytes(*unb64_32(value(lines.next(), "secret")?, "secret")?);
        let link_expires = moment(
            value(lines.next(), "link-expires")?,
            "link-expires",
            "link-expires: a time past the year 9999",
        )?;
        if lines.any(|l| !l.trim().is_empty()) {
            return Err(PendingAnswerError("unexpected lines at the end"));
        }
        Ok(PendingAnswer {
            copies,
            mailboxes,
            token,
            key,
            secret,
            link_expires,
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
    /// [`Client::offer_to_all`]): the accepter leaves the answer on the server it fetched from
    /// (on another when that one does not take it, or on every server it reaches:
    /// [`ClientConfig::answer_every_copy`](super::ClientConfig::answer_every_copy)), and
    /// collecting looks on all of them (PROTOCOL.md §15.7).
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
        let mailboxes = match servers.len() {
            1 => answer::MailboxNames::Shared,
            _ => answer::MailboxNames::PerCopy,
        };
        let pending = PendingAnswer {
            mailboxes,
            copies: offer
                .link
                .servers()
                .into_iter()
                .zip(&offer.copies)
                .map(|((server, locator), times)| LinkCopy {
                    server,
                    locator,
                    polls_from: times.closes_at,
                })
                .collect(),
            token: offer.delete_token.clone(),
            key,
            secret,
            link_expires: offer.expires_at,
        };
        Ok((offer, pending))
    }

    /// Answer an accepted link: seal `payload` (at most [`answer::MAX_ANSWER`] bytes) with a
    /// fresh ephemeral key and leave it in the link's mailbox. A link with a mailbox per copy
    /// (format 3, multi-server) gets an answer sealed for a copy's own mailbox, with keys of
    /// its own: first for the copy the accept fetched (its server saw the fetch), then, a
    /// random pause apart and in copy order ([`crate::proto::link::copy_order`]), for the next
    /// copy only if that server did not take it, unless [`ClientConfig::answer_every_copy`]
    /// (then for every copy). A link
    /// with a shared mailbox (format 2) gets the same answer on every server at once. Done
    /// when every server asked that could be reached took it; a mailbox answers only once, and
    /// one server saying so is [`AnswerError::AlreadyAnswered`] (naming it, and how many other
    /// servers took this answer): one copy answered is the link answered, so the puts end
    /// there unless every copy is answered.
    ///
    /// [`ClientConfig::answer_every_copy`]: super::ClientConfig::answer_every_copy
    pub async fn answer(&self, reply: &ReplyTo, payload: &[u8]) -> Result<(), AnswerError> {
        let results = match reply.mailboxes {
            answer::MailboxNames::Shared => {
                let (mailbox, sealed) = seal_one(reply, 0, payload)?;
                futures::future::join_all(reply.servers.iter().map(|server| async move {
                    (server, self.put_answer_at(server, mailbox, sealed).await)
                }))
                .await
            }
            answer::MailboxNames::PerCopy => {
                // The server the accept fetched from first (it saw the fetch, so its put tells
                // it nothing new), then the copies after it in the link, round, as the fetch
                // went on (the same for every accepter, so that two whose first copy failed
                // meet on the next): a first put drawn among all the servers went to another
                // one in most answers, some milliseconds after the fetch, which tied the fetch
                // to that other copy for servers comparing notes (a helper's attack,
                // 2026-12-06: 15 of 20 answered links so tied).
                let n = reply.servers.len();
                let from = reply
                    .fetched_from
                    .unwrap_or_else(|| crate::proto::link::first_copy(&reply.key, n));
                let order: Vec<(u8, &ServerAddr)> = crate::proto::link::copy_order(from, n)
                    .map(|j| (u8::try_from(j).unwrap_or(u8::MAX), &reply.servers[j]))
                    .collect();
                let mut results = Vec::new();
                for (n, (index, server)) in order.into_iter().enumerate() {
                    // A pause of its own before each further answer: left at once, the puts of
                    // one answer were paired by their times across servers comparing notes.
                    if n > 0 {
                        let _ = self.spread_pause().await;
                    }
                    // With every copy answered, each mailbox answers for itself: one that says
                    // it was answered before (a lying server may) keeps the answer from no other.
                    let (mailbox, sealed) = seal_one(reply, index, payload)?;
                    let r = self.put_answer_at(server, mailbox, sealed).await;
                    // One copy answered is enough (the default): every copy answered, the
                    // puts' times and the looks that find them paired the copies for servers
                    // comparing notes (the lab's copies section: 41-54 % of the mailboxes,
                    // against 8-14 % so; chance under 1 %). Another server is asked only when
                    // this one did not take it, down or refusing; one that says it was answered
                    // ends it, as for a single-server link.
                    let done = matches!(r, Ok(()) | Err(AnswerError::AlreadyAnswered { .. }));
                    results.push((server, r));
                    if done && !self.config.answer_every_copy {
                        break;
                    }
                }
                results
            }
        };
        let stored = results.iter().filter(|(_, r)| r.is_ok()).count();
        let mut failures = Vec::new();
        for (server, r) in results {
            match r {
                Ok(()) => {}
                Err(AnswerError::AlreadyAnswered { server, .. }) => {
                    return Err(AnswerError::AlreadyAnswered {
                        server,
                        took: stored,
                    })
                }
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

    /// Leave the answer in its mailbox on `server`, on a connection of its own: with a stamp
    /// when the server speaks version 4, without one when it speaks 2 or 3.
    async fn put_answer_at(
        &self,
        server: &ServerAddr,
        mailbox: MailboxAddr,
        sealed: SealedAnswer,
    ) -> Result<(), AnswerError> {
        // A server with no room for another answer this second said so without storing it,
        // and one that took the connection's slot back or saw the stamp's epoch end in between
        // stored nothing either: again on a fresh connection, with growing pauses, as for a
        // store.
        let mut backoff = super::Backoff::new(self.config.retry_budget);
        // A stamp made is kept for the retries (the seed is every client's for the epoch, so
        // sending it again ties nothing new together). Refused, it is made again once: its
        // epoch may have passed (a solve of over ten minutes, or the server's clock jumped); a
        // stamp refused again is refused for good.
        let mut stamp = None;
        let mut new_epoch = true;
        let sent = loop {
            match self
                .put_answer_once(server, mailbox, sealed, &mut stamp)
                .await
            {
                Err(AnswerError::Connection(e))
                    if super::busy(
                        &e,
                        &[
                            ErrorCode::Overloaded,
                            ErrorCode::RateLimited,
                            ErrorCode::Busy,
                        ],
                    ) && backoff.wait().await =>
                {
                    tracing::debug!("the server took no answer now; retrying");
                }
                Err(AnswerError::Connection(e))
                    if new_epoch && super::busy(&e, &[ErrorCode::BadStamp]) =>
                {
                    new_epoch = false;
                    stamp = None;
                    tracing::debug!(
                        "the answer's stamp was refused; once more, with a new challenge"
                    );
                }
                r => break r,
            }
        };
        match sent {
            Err(AnswerError::Connection(ConnectionError::Server {
                code: ErrorCode::AlreadyAnswered,
                ..
            })) => Err(AnswerError::AlreadyAnswered {
                server: server.to_string(),
                took: 0,
            }),
            r => r,
        }
    }

    /// One attempt of [`Client::put_answer_at`], with the stamp of an earlier attempt if there
    /// is one (`stamp`, its epoch and the stamp; a new one is kept there). The answer challenge
    /// is asked on the connection that carries the answer: a seed fetched on another
    /// connection would let the server tie the two together.
    async fn put_answer_once(
        &self,
        server: &ServerAddr,
        mailbox: MailboxAddr,
        sealed: SealedAnswer,
        stamp: &mut Option<(u64, crate::proto::Stamp)>,
    ) -> Result<(), AnswerError> {
        let mut c = self.connect(server).await?;
        let version = c.version();
        if version < ANSWER_VERSION {
            return Err(AnswerError::NoMailboxes { version });
        }
        let put = if let (true, Some((epoch, stamp))) = (version >= ANSWER_STAMP_VERSION, *stamp) {
            Request::StampedPutAnswer {
                mailbox,
                answer: sealed,
                epoch,
                stamp,
            }
        } else if version >= ANSWER_STAMP_VERSION {
            let challenge = match c.request(&Request::AnswerChallenge).await? {
                Response::AnswerChallenge(ch) => ch,
                r => return Err(unexpected("AnswerChallenge", &r).into()),
            };
            let max = self.config.policy.max_effort;
            if challenge.effort > max {
                return Err(AnswerError::RefusedChallenge(
                    crate::proto::PolicyViolation::EffortTooHigh {
                        asked: challenge.effort,
                        max,
                    },
                ));
            }
            let mut start = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut start);
            let solved = tokio::task::spawn_blocking(move || {
                answer_stamp::solve_answer(&challenge, &mailbox, &sealed, start, u64::MAX)
            })
            .await
            .map_err(AnswerError::StampTask)?
            .map_err(|_| ConnectionError::Protocol("the stamp budget ran out".into()))?;
            *stamp = Some((challenge.epoch, solved));
            Request::StampedPutAnswer {
                mailbox,
                answer: sealed,
                epoch: challenge.epoch,
                stamp: solved,
            }
        } else {
            Request::PutAnswer {
                mailbox,
                answer: sealed,
            }
        };
        match c.request(&put).await? {
            Response::AnswerStored => Ok(()),
            r => Err(unexpected("AnswerStored", &r).into()),
        }
    }

    /// Look into the mailbox once, on every server of the link at once (each on its own
    /// connection): the answer, or `None` if nothing there opens (no answer yet; a server that
    /// answers with anything else than the real answer looks the same). An error only when no
    /// server could be asked. This is one look now at every copy, whatever the schedule:
    /// [`Client::look`] and [`Client::collect_scheduled`] keep the timing rules.
    pub async fn collect(
        &self,
        pending: &PendingAnswer,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, CollectError> {
        let all: Vec<usize> = (0..pending.copies.len()).collect();
        let found = self.look_at_copies(pending, &all).await?;
        Ok(found.map(|c| c.answer))
    }

    /// One look now, at the copies whose bucket has closed (every copy, if the schedule is
    /// early): [`CollectError::TooEarly`] when none has. The copies of a multi-server link are
    /// looked at one after another in a random order, a random pause apart
    /// ([`ClientConfig::copy_spread`](super::ClientConfig::copy_spread)), until an answer
    /// opens: looked at in the same instant, their looks paired the copies for servers
    /// comparing notes. [`Client::trail`] then looks at the others until each finds an answer
    /// of its own or a random end.
    pub async fn look(
        &self,
        pending: &PendingAnswer,
        schedule: LookSchedule,
    ) -> Result<Option<Collected>, CollectError> {
        let now = self.clock.now();
        let mut open: Vec<usize> = (0..pending.copies.len())
            .filter(|&j| schedule.start(now, pending.copies[j].polls_from) <= now)
            .collect();
        if open.is_empty() {
            return Err(CollectError::TooEarly {
                polls_from: pending.polls_from(),
            });
        }
        rand::seq::SliceRandom::shuffle(&mut open[..], &mut rand::rngs::OsRng);
        let mut failures = Vec::new();
        let mut asked = 0;
        for (n, &j) in open.iter().enumerate() {
            // Interrupted, the looks end: the rest at once would pair those copies.
            if n > 0 && self.spread_pause().await {
                break;
            }
            asked += 1;
            match self.look_at_copies(pending, &[j]).await {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) => {}
                Err(e) => failures.push((pending.copies[j].server.to_string(), e)),
            }
        }
        // Counted against the copies looked at: interrupted after every one of them failed,
        // that is the failure, not "no answer" (the copies not looked at told nothing).
        Self::none_or_failures(failures, asked)
    }

    /// Look at the copies at places `copies` of the link, each on its own connection, all at
    /// once: the first answer that opens, `None` if none does, an error only when no copy
    /// could be looked at.
    async fn look_at_copies(
        &self,
        pending: &PendingAnswer,
        copies: &[usize],
    ) -> Result<Option<Collected>, CollectError> {
        let mut looks: FuturesUnordered<_> = copies
            .iter()
            .map(|&j| async move {
                let server = &pending.copies[j].server;
                (
                    j,
                    self.look_at(server, mailbox_at(pending, j), pending).await,
                )
            })
            .collect();
        let mut failures = Vec::new();
        while let Some((copy, r)) = looks.next().await {
            match r {
                Ok(Some(answer)) => return Ok(Some(Collected { answer, copy })),
                Ok(None) => {}
                Err(e) => failures.push((pending.copies[copy].server.to_string(), e)),
            }
        }
        Self::none_or_failures(failures, copies.len())
    }

    /// Wait for a look into `mailbox` at `server` that is on its way ([`Client::look_at`]) to
    /// end, or take one that ended with nobody waiting for it: what the server answered it (the
    /// sealed answer or filler), if it was asked.
    async fn look_settled(
        &self,
        server: &ServerAddr,
        mailbox: MailboxAddr,
    ) -> Option<answer::SealedAnswer> {
        let key = (server.to_string(), mailbox.0);
        let mut on_its_way = self.looking.lock().ok()?.get(&key).cloned()?;
        let end = on_its_way
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|e| *e);
        if let Ok(mut l) = self.looking.lock() {
            if l.get(&key).is_some_and(|r| r.same_channel(&on_its_way)) {
                l.remove(&key);
            }
        }
        end.flatten()
    }

    /// No answer from `asked` copies, `failures` of which could not be looked at: `None`
    /// (warning of each failure) when some could, the error(s) when none could.
    fn none_or_failures<T>(
        mut failures: Vec<(String, CollectError)>,
        asked: usize,
    ) -> Result<Option<T>, CollectError> {
        if failures.len() < asked {
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

    /// One look into `mailbox` at `server`. The request goes on to its end on a task of its
    /// own even when the caller stops waiting for it: dropped on its way (the first answer
    /// opened at another copy, a forget), the look's connection ended within moments of that
    /// event, a rendezvous left or a request never read, which no other client does; it
    /// paired a link's copies for servers comparing notes (a helper's review, 2026-12-07).
    /// Such a look is noted while on its way, and what the server answered it is kept once it
    /// ends until [`Client::look_settled`] takes it: a look that asked again instead fetched
    /// the answer twice, the second time a pause after the first, which no link of one copy
    /// does (seen as a third answer fetched for a link of two copies under load).
    async fn look_at(
        &self,
        server: &ServerAddr,
        mailbox: MailboxAddr,
        pending: &PendingAnswer,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, CollectError> {
        let detached = self.shared();
        let to = server.clone();
        let key = (server.to_string(), mailbox.0);
        let (ended, on_its_way) = tokio::sync::watch::channel(None);
        if let Ok(mut l) = self.looking.lock() {
            // Ends nobody took (their copies never looked at again) are let go when many, and
            // so are looks whose task ended without telling (the runtime shutting down).
            if l.len() >= KEPT_LOOK_ENDS {
                l.retain(|_, r| r.borrow().is_none() && r.has_changed().is_ok());
            }
            l.insert(key.clone(), on_its_way.clone());
        }
        let sent = tokio::spawn(async move {
            let sent = detached
                .request_fresh(&to, &Request::FetchAnswer { mailbox }, ANSWER_VERSION)
                .await;
            let held = match &sent {
                Ok(Sent::Answer(Response::Answer { answer })) => Some(*answer),
                _ => None,
            };
            let _ = ended.send(Some(held));
            sent
        })
        .await;
        // Waited for to its end: this look's end is this caller's, not one to keep.
        if let Ok(mut l) = self.looking.lock() {
            if l.get(&key).is_some_and(|r| r.same_channel(&on_its_way)) {
                l.remove(&key);
            }
        }
        let sent = match sent {
            Ok(sent) => sent?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down (the process ends).
            Err(_) => {
                return Err(ConnectionError::Io {
                    server: server.to_string(),
                    source: std::io::Error::other("the process is ending"),
                }
                .into())
            }
        };
        match sent {
            Sent::OldServer(version) => Err(CollectError::NoMailboxes { version }),
            Sent::Answer(Response::Answer { answer }) => {
                Ok(answer::open_answer_from(&pending.key, &pending.secret, mailbox, &answer).ok())
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
                .delete_at(pending.server(), pending.copies[0].locator, &pending.token)
                .await;
        }
        let copies: Vec<_> = pending
            .copies
            .iter()
            .map(|c| (c.server.clone(), c.locator))
            .collect();
        self.delete_copies(&copies, &pending.token).await
    }

    /// Look into the mailbox on `schedule` until an answer opens or `wait` has passed since looking
    /// started ([`CollectError::NoAnswerYet`]). Every copy of the link has a schedule of its own,
    /// anchored to its own bucket: no look at a server before that copy's bucket closes (unless the
    /// schedule is early), then looks after exponential pauses, the last one the first that comes
    /// at or past the wait's end (on average a look pause past it: a look at the end itself would
    /// show the server this machine's clock error). Transient connection failures in between are
    /// retried at the next look, and so is every failure at a copy of a multi-server link; other
    /// failures end a single-server link's looks. The first answer that opens wins (a look on its
    /// way at another copy goes on to its end, [`Client::look_at`]); [`Client::trail`] then looks
    /// at the other copies until each finds an answer of its own or a random end.
    ///
    /// A multi-server link whose looks begin at once (its buckets closed before, or the schedule is
    /// early) begins each copy's looks a random pause (exponential, of the spread) later: begun in
    /// the same instant, the first looks of its copies paired them for servers comparing notes.
    pub async fn collect_scheduled(
        &self,
        pending: &PendingAnswer,
        schedule: LookSchedule,
        wait: Duration,
    ) -> Result<Collected, CollectError> {
        let mut copies: FuturesUnordered<_> = (0..pending.copies.len())
            .map(|j| async move { (j, self.collect_copy(pending, j, schedule, wait).await) })
            .collect();
        let mut failures = Vec::new();
        let mut unanswered = 0;
        while let Some((j, r)) = copies.next().await {
            match r {
                Ok(answer) => return Ok(Collected { answer, copy: j }),
                Err(CollectError::NoAnswerYet) => unanswered += 1,
                Err(e) => failures.push((pending.copies[j].server.to_string(), e)),
            }
        }
        if unanswered > 0 {
            for (server, e) in &failures {
                tracing::warn!(%server, error = %crate::config::report(e), "this server could not be asked for the answer");
            }
            return Err(CollectError::NoAnswerYet);
        }
        if failures.len() == 1 {
            return Err(failures.remove(0).1);
        }
        Err(CollectError::AllServers(failures))
    }

    /// After the answer opened at copy `answered` of a multi-server link: look at each other copy
    /// on `schedule`, all at once, until its own answer opens there or a random end (exponential)
    /// has passed since its looks began, the last look the first past it. The end's mean is six
    /// times the sum of the look mean and one [`ClientConfig::copy_spread`] per further copy (that
    /// sum is about the time an accepter answering every copy takes to reach the last one and be
    /// found there): with once the sum, a helper's measurement found 12-17 % of such answers left
    /// uncollected, their trail over before they came; with twice, the lab's copies section found
    /// 14 % of the copies paired by their last looks (a copy answered nowhere ends its looks at its
    /// trail's end, which counts from the collect elsewhere), 6-8 % with six times, at about seven
    /// more looks per copy. The number of copies whose answer opened, and the servers whose copy
    /// held another answer than `first` (the answer that opened): someone else answered that copy
    /// before, so someone else holds the link and its passphrase. Each copy's looks go on as they
    /// were (memoryless pauses): no extra pause where they go on, which would leave a gap in that
    /// server's looks around the moment the first answer was collected elsewhere.
    ///
    /// Stopped when the first answer opened, the looks of every copy ended in the same moment and
    /// (with every copy answered) the other copies' answers stayed uncollected: both told servers
    /// comparing notes which copies belong together (single-server links do not leave their
    /// answer). Each copy now ends when it collects an answer of its own, as a link of its own
    /// does, or (by default the accepter answers one copy) at a random end of its own.
    ///
    /// [`ClientConfig::copy_spread`]: super::ClientConfig::copy_spread
    pub async fn trail(
        &self,
        pending: &PendingAnswer,
        schedule: LookSchedule,
        answered: usize,
        first: &[u8],
    ) -> Trailed {
        self.trail_telling(pending, schedule, answered, first, |_| {})
            .await
    }

    /// [`Client::trail`], calling `differs` with a copy's server as soon as that copy is found
    /// holding another answer than `first`, not only when every copy's looks have ended: that
    /// may be an hour later, and the person whose link someone else holds should know at once.
    pub async fn trail_telling(
        &self,
        pending: &PendingAnswer,
        schedule: LookSchedule,
        answered: usize,
        first: &[u8],
        differs: impl Fn(&ServerAddr),
    ) -> Trailed {
        let plan = self.trail_plan(pending, schedule, answered);
        self.trail_planned(
            pending,
            schedule,
            &plan,
            &AnswerDigest::of(first),
            differs,
            |_| {},
        )
        .await
    }

    /// How long [`Client::trail`] looks at each of the link's other copies after the answer
    /// opened at copy `answered`: (copy, wait) pairs, each wait drawn on its own (exponential,
    /// of the mean [`Client::trail`] gives). A caller that must resume a trail after a restart
    /// keeps these (as moments) and runs them with [`Client::trail_planned`].
    pub fn trail_plan(
        &self,
        pending: &PendingAnswer,
        schedule: LookSchedule,
        answered: usize,
    ) -> Vec<(usize, Duration)> {
        let n = pending.copies.len();
        let further = u32::try_from(n.saturating_sub(1)).unwrap_or(u32::MAX);
        let mean = schedule
            .mean
            .saturating_add(self.config.copy_spread.saturating_mul(further))
            .saturating_mul(6);
        (0..n)
            .filter(|&j| j != answered)
            .map(|j| (j, crate::proto::schedule::exponential(mean, rand::random())))
            .collect()
    }

    /// The trail of `plan` ([`Client::trail_plan`]): each copy named looked at on `schedule`
    /// for its wait; an answer that opens there and is not the one of digest `first` is told
    /// to `differs` at once, and each copy whose looks are over (an answer opened there, or
    /// its end came) to `ended`, with its place in the link.
    pub async fn trail_planned(
        &self,
        pending: &PendingAnswer,
        schedule: LookSchedule,
        plan: &[(usize, Duration)],
        first: &AnswerDigest,
        differs: impl Fn(&ServerAddr),
        ended: impl Fn(usize),
    ) -> Trailed {
        let mut trails: FuturesUnordered<_> =
            plan.iter()
                .filter(|(j, _)| *j < pending.copies.len())
                .map(|&(j, wait)| async move {
                    (j, self.look_on(pending, j, schedule, wait, true).await)
                })
                .collect();
        let mut outcome = Trailed::default();
        while let Some((j, r)) = trails.next().await {
            // A different answer is told before the copy's end: a caller that keeps both (the
            // agent's trail file) never has the copy ended and its server not yet named.
            match r {
                Ok(answer) => {
                    outcome.opened += 1;
                    if AnswerDigest::of(&answer) != *first {
                        differs(&pending.copies[j].server);
                        outcome.differing.push(pending.copies[j].server.clone());
                    }
                }
                Err(CollectError::NoAnswerYet) => {}
                Err(e) => {
                    tracing::info!(error = %crate::config::report(&e), "looking at another copy of the link failed")
                }
            }
            ended(j);
        }
        outcome
    }

    /// [`Client::collect_scheduled`] for copy `index` of the link.
    async fn collect_copy(
        &self,
        pending: &PendingAnswer,
        index: usize,
        schedule: LookSchedule,
        wait: Duration,
    ) -> Result<Zeroizing<Vec<u8>>, CollectError> {
        self.look_on(pending, index, schedule, wait, false).await
    }

    /// The looks at copy `index` on `schedule` for `wait`, the last one the first of the
    /// schedule at or past the wait's end; `going_on`: looks that were going on already (a
    /// trail), which do not take the pause of looks that begin at once.
    async fn look_on(
        &self,
        pending: &PendingAnswer,
        index: usize,
        schedule: LookSchedule,
        wait: Duration,
        going_on: bool,
    ) -> Result<Zeroizing<Vec<u8>>, CollectError> {
        let copy = &pending.copies[index];
        // Looks that would begin now, at every copy of a multi-server link in the same moment,
        // begin for each copy a spread pause of its own later: begun in one instant, their
        // first looks paired the copies (a helper's measurement: first looks about 25 %, chance
        // 6 %). Their ends are apart already, each a look pause of its own past the wait (below).
        let at_once = {
            let now = self.clock.now();
            !going_on && schedule.start(now, copy.polls_from) <= now && pending.copies.len() > 1
        };
        if at_once {
            super::wake::pause(self.config.copy_spread).await;
        }
        let now_precise = self.clock.now_precise();
        let now = now_precise.as_secs();
        let start = schedule.start(now, copy.polls_from);
        // Cut to ten years each: a link's expiry comes from the server's advertised TTL, and a
        // wait from the caller; neither may overflow the clock.
        let span = crate::proto::schedule::MAX_SPAN;
        // Counted to the start on the wall clock with its fraction of a second: counted from
        // whole seconds, the last look came at the close plus the wait plus the fraction of a
        // second at which this began, right after the store for `offer --wait` and the agent,
        // and a server matched that fraction to its stores' (a helper's attack: 10 of 12
        // unanswered mailboxes tied to their links on loopback). Now the end is the same
        // moment for every link of a bucket, and the last look a pause of its own past it.
        //
        // The start is waited for on the wall clock, read again every few seconds: waited for
        // as one sleep, an agent started with its clock a day behind (a laptop before its clock
        // is set) first looked a day after the clock was corrected, past the link's end, and
        // lost the answer (a helper's attack, 2026-12-06). From the start on, the wait is
        // measured on the monotonic clock: a clock set ahead while looking ends no wait early.
        let start_at = Duration::from_secs(start).max(now_precise);
        super::wake::until_wall(self.clock.as_ref(), start_at).await;
        // A look into this mailbox still on its way (one left when the first answer opened
        // elsewhere, before this trail) ends first: two at once, the second a pause after the
        // answer was collected elsewhere, paired the copies. Its answer, if one opened, is
        // this copy's (asked again, the server saw one answer fetched twice); otherwise the
        // next look comes a pause after it, as after any look of these.
        let mailbox = mailbox_at(pending, index);
        if let Some(sealed) = self.look_settled(&copy.server, mailbox).await {
            if let Ok(answer) =
                answer::open_answer_from(&pending.key, &pending.secret, mailbox, &sealed)
            {
                return Ok(answer);
            }
        }
        let began = tokio::time::Instant::now();
        // The end counts from the start on the wall clock, even when the start was noticed late
        // (the process stopped, the machine suspended across it): counted from the moment it
        // was noticed, the ends of every mailbox waiting then would be one moment, and carry
        // the phase of the wait's steps.
        let overdue = self.clock.now_precise().saturating_sub(start_at);
        let until = began + wait.min(span).saturating_sub(overdue);
        // The last look is the first one of the schedule at or past the end, not one at the
        // end: that moment is the close plus the wait on this machine's clock, and a look
        // there told the server this clock's error (to within a circuit's jitter), the same
        // in every offer of this initiator that ends unanswered, so that it could tell which
        // mailboxes are one person's. Past the end the pause is memoryless as every other:
        // the last look's moment says nothing of the clock within a look pause (docs/ANONYMITY.md,
        // "Clock errors"). A late start's first look, the last one too, comes a pause after it.
        let mut next = began + schedule.next_look_in(rand::random());
        let mut warned = false;
        loop {
            let last = next >= until;
            if super::wake::until_instant(next).await {
                // The process was stopped meanwhile: every look due then, of every mailbox,
                // would come in the same instant now and tie those mailboxes together as one
                // user's (a helper's attack saw 7 at once after a SIGCONT). This one comes a
                // fresh pause later, drawn as the schedule draws every pause (memoryless, so the
                // schedule stays what it was).
                super::wake::pause(schedule.mean).await;
            }
            match self.look_at_copies(pending, &[index]).await {
                Ok(Some(found)) => return Ok(found.answer),
                Ok(None) => {}
                // The looks go on whatever the failure, until the wait ends. A copy of a
                // multi-server link ended on one bad answer fell silent, and its trail began
                // its looks again right after the answer was collected from another copy, so a
                // server failing one look on purpose learnt, from servers comparing notes,
                // which of their copies belong together (a helper's review, 2026-12-07). A link
                // on one server ended its wait at a moment that server chose, right after it
                // took the accepter's answer if it liked, and what a user does next (deletes
                // the link, offers again) then tied the link to its mailbox; and only one-shot
                // waiters ended so, which told them apart from the agent's (a helper's review,
                // 2026-12-07).
                Err(e) if !last => {
                    if e.kind() == super::ErrorKind::Transient
                        || std::mem::replace(&mut warned, true)
                    {
                        tracing::info!(error = %crate::config::report(&e), "looking for the answer failed; trying again at the next look");
                    } else {
                        tracing::warn!(server = %copy.server, error = %crate::config::report(&e), "looking for the answer at this server failed, not for a reason that passes by itself; the looks go on all the same until the wait ends (ending the wait now, at a moment the server chose, would help it tie the link to its mailbox)");
                    }
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

/// How many ended looks nobody waited for a client keeps ([`Client::look_at`]) before it
/// lets them go.
const KEPT_LOOK_ENDS: usize = 1024;

/// The mailbox of copy `j` of `pending`'s link.
fn mailbox_at(pending: &PendingAnswer, j: usize) -> MailboxAddr {
    let index = u8::try_from(j).unwrap_or(u8::MAX);
    answer::mailbox_of(
        &pending.key,
        &pending.secret.public(),
        pending.mailboxes,
        index,
    )
}

/// The answer `payload` sealed for copy `index`'s mailbox as `reply` names its mailboxes (the
/// shared one, whatever the index, or the copy's own), each time with a fresh ephemeral key and
/// nonce.
fn seal_one(
    reply: &ReplyTo,
    index: u8,
    payload: &[u8],
) -> Result<(MailboxAddr, SealedAnswer), AnswerError> {
    let mut rng = rand::rngs::OsRng;
    let mut eph = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut eph[..]);
    let mut nonce = [0u8; crate::proto::seal::NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let mailbox = answer::mailbox_of(&reply.key, &reply.to, reply.mailboxes, index);
    let sealed = answer::seal_answer_for(&reply.key, &reply.to, mailbox, payload, *eph, nonce)?;
    Ok((mailbox, sealed))
}
