//! The answer channel on the client side (PROTOCOL.md §15).
//!
//! The initiator offers with [`Client::offer_expecting_answer`] and keeps the [`PendingAnswer`]
//! (in memory, or in a state file through [`PendingAnswer::to_text`]). The accepter's
//! [`Client::accept`] returns a [`ReplyTo`] for such a link; [`Client::answer`] seals and leaves
//! the answer. The initiator's [`Client::collect`] fetches the mailbox and opens it. Every step
//! runs on its own connection (over Tor: its own circuit).

use super::{unexpected, Client, ConnectionError, Offer, OfferSecrets};
use super::{AnswerError, CollectError, DeleteError, OfferError};
use crate::proto::answer::{self, AnswerSecret};
use crate::proto::wire::ANSWER_VERSION;
use crate::proto::{
    AnswerPublic, DeleteToken, ErrorCode, KdfProfile, LinkKey, Locator, Passphrase, Request,
    Response, ServerAddr,
};
use rand::RngCore;
use std::fmt;
use std::time::Duration;
use zeroize::Zeroizing;

/// What an accepter needs to answer a link: the server, the link key and the initiator's answer
/// key. `Debug` is redacted.
pub struct ReplyTo {
    pub(super) server: ServerAddr,
    pub(super) key: LinkKey,
    pub(super) to: AnswerPublic,
}

impl fmt::Debug for ReplyTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyTo")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// What the initiator keeps until it collects the answer: the link key, the answer secret and
/// the link's deletion token. Every secret is zeroized on drop; `Debug` is redacted.
pub struct PendingAnswer {
    server: ServerAddr,
    locator: Locator,
    token: DeleteToken,
    key: LinkKey,
    secret: AnswerSecret,
    link_expires: u64,
}

impl fmt::Debug for PendingAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAnswer")
            .field("server", &self.server)
            .field("link_expires", &self.link_expires)
            .finish_non_exhaustive()
    }
}

/// The first line of a pending answer's text form.
const TEXT_MAGIC: &str = "rdv-pending-answer 1";

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
    /// The server the answer will be left on.
    pub fn server(&self) -> &ServerAddr {
        &self.server
    }

    /// When the link expires (unix seconds): no accepter can fetch it after that, so an answer
    /// that has not arrived by then is not coming.
    pub fn link_expires(&self) -> u64 {
        self.link_expires
    }

    /// The text form, for a state file (it holds secrets: keep it private, delete it after).
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{TEXT_MAGIC}\nserver {}\nlocator {}\ntoken {}\nkey {}\nsecret {}\nlink-expires {}\n",
            self.server,
            b64(&self.locator.0),
            self.token.to_text().as_str(),
            Zeroizing::new(b64(self.key.expose())).as_str(),
            Zeroizing::new(b64(self.secret.expose())).as_str(),
            self.link_expires,
        ))
    }

    /// Parse the text form. Fields come in the order [`PendingAnswer::to_text`] writes them.
    pub fn from_text(s: &str) -> Result<Self, PendingAnswerError> {
        let mut lines = s.lines();
        if lines.next() != Some(TEXT_MAGIC) {
            return Err(PendingAnswerError(
                "the first line is not \"rdv-pending-answer 1\"",
            ));
        }
        let mut field = |name: &'static str| -> Result<&str, PendingAnswerError> {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .ok_or(PendingAnswerError(name))
        };
        let server = ServerAddr::parse(field("server")?)
            .map_err(|_| PendingAnswerError("server address"))?;
        let locator = Locator(*unb64_32(field("locator")?, "locator")?);
        let token = DeleteToken::parse(field("token")?).ok_or(PendingAnswerError("token"))?;
        let key = LinkKey::from_bytes(*unb64_32(field("key")?, "key")?);
        let secret = AnswerSecret::from_bytes(*unb64_32(field("secret")?, "secret")?);
        let link_expires = field("link-expires")?
            .parse()
            .map_err(|_| PendingAnswerError("link-expires"))?;
        if lines.any(|l| !l.trim().is_empty()) {
            return Err(PendingAnswerError("unexpected lines after link-expires"));
        }
        Ok(PendingAnswer {
            server,
            locator,
            token,
            key,
            secret,
            link_expires,
        })
    }
}

/// Whether an error is the server refusing a request for lack of mailboxes.
fn no_mailboxes(c: &super::Connection) -> Option<u16> {
    (c.version() < ANSWER_VERSION).then_some(c.version())
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
        let mut rng = rand::rngs::OsRng;
        let secrets = OfferSecrets::draw(&mut rng);
        let mut b = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut b[..]);
        let secret = AnswerSecret::from_bytes(*b);
        let to = secret.public();
        let (offer, key) = self
            .offer_with(server, payload, passphrase, kdf, secrets, Some(&to))
            .await?;
        let pending = PendingAnswer {
            server: server.clone(),
            locator: offer.link.locator,
            token: offer.delete_token.clone(),
            key,
            secret,
            link_expires: offer
                .bucket
                .created
                .saturating_add(offer.server_info.ttl_secs),
        };
        Ok((offer, pending))
    }

    /// Answer an accepted link: seal `payload` (at most [`answer::MAX_ANSWER`] bytes) with a
    /// fresh ephemeral key and leave it in the link's mailbox. A mailbox answers only once.
    pub async fn answer(&self, reply: &ReplyTo, payload: &[u8]) -> Result<(), AnswerError> {
        let mut rng = rand::rngs::OsRng;
        let mut eph = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut eph[..]);
        let mut nonce = [0u8; crate::proto::seal::NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let (mailbox, sealed) = answer::seal_answer(&reply.key, &reply.to, payload, *eph, nonce)?;
        let mut c = self.connect(&reply.server).await?;
        if let Some(version) = no_mailboxes(&c) {
            return Err(AnswerError::NoMailboxes { version });
        }
        let put = Request::PutAnswer {
            mailbox,
            answer: sealed,
        };
        match c.request(&put).await {
            Ok(Response::AnswerStored) => Ok(()),
            Ok(r) => Err(unexpected("AnswerStored", &r).into()),
            Err(ConnectionError::Server {
                code: ErrorCode::AlreadyAnswered,
                ..
            }) => Err(AnswerError::AlreadyAnswered),
            Err(e) => Err(e.into()),
        }
    }

    /// Look into the mailbox once: the answer, or `None` if nothing there opens (no answer yet;
    /// a server that answers with anything else than the real answer looks the same).
    pub async fn collect(
        &self,
        pending: &PendingAnswer,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, CollectError> {
        let mailbox = answer::mailbox(&pending.key, &pending.secret.public());
        let mut c = self.connect(&pending.server).await?;
        if let Some(version) = no_mailboxes(&c) {
            return Err(CollectError::NoMailboxes { version });
        }
        match c.request(&Request::FetchAnswer { mailbox }).await? {
            Response::Answer { answer } => {
                Ok(answer::open_answer(&pending.key, &pending.secret, &answer).ok())
            }
            r => Err(unexpected("Answer", &r).into()),
        }
    }

    /// Delete the offered link from its bucket (once answered, it has done its job), on a
    /// connection of its own.
    pub async fn retire(&self, pending: &PendingAnswer) -> Result<(), DeleteError> {
        self.delete_at(&pending.server, pending.locator, &pending.token)
            .await
    }

    /// [`Client::collect`] every `interval` (each time on a fresh connection) until an answer
    /// opens or `wait` has passed ([`CollectError::NoAnswerYet`]). Transient connection failures
    /// in between are retried; others end the wait.
    pub async fn collect_within(
        &self,
        pending: &PendingAnswer,
        wait: Duration,
        interval: Duration,
    ) -> Result<Zeroizing<Vec<u8>>, CollectError> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            match self.collect(pending).await {
                Ok(Some(a)) => return Ok(a),
                Ok(None) => {}
                Err(CollectError::Connection(e))
                    if e.kind() == super::ErrorKind::Transient
                        && tokio::time::Instant::now() + interval < until =>
                {
                    tracing::info!(error = %crate::config::report(&e), "collecting failed; trying again");
                }
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() + interval >= until {
                return Err(CollectError::NoAnswerYet);
            }
            tokio::time::sleep(interval).await;
        }
    }
}
