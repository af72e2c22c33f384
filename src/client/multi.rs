//! Multi-server links: one payload on several rendezvous servers, so that one server down or
//! blocked does not stop the rendezvous.
//!
//! Each server gets its own sealed copy (the same link key, a fresh nonce, so the copies have
//! nothing in common that servers comparing blobs could match) in a bucket of its own, with a
//! delete token of its own derived from the offer's token. The accepter asks every server at
//! once, each over its own connection (its own circuit over Tor), takes the first copy that
//! opens, and fails only when all fail, saying how each failed. Every server learns of the
//! fetch, so the count of verified links reported is the least any copy's bucket shows.

use super::{AcceptError, Accepted, Client, DeleteError, Offer, OfferError};
use crate::proto::link::{Mirror, MAX_MIRRORS};
use crate::proto::seal::{self, NONCE_LEN};
use crate::proto::{AnswerPublic, KdfProfile, LinkKey, Locator, Passphrase, RdvLink, ServerAddr};
use futures::stream::{FuturesUnordered, StreamExt};
use rand::RngCore;

/// How long an accept of a multi-server link waits for the other copies' counts once one copy
/// opened.
const OTHER_COPIES_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The least of the copies' counts; unknown if any copy proves nothing.
fn least_verified(counts: &[Option<usize>]) -> Option<usize> {
    counts
        .iter()
        .try_fold(usize::MAX, |m, c| c.map(|c| m.min(c)))
}

impl Client {
    /// Seal `payload` under `passphrase` and store a copy on every server of `servers` (the
    /// first one is the link's main server), checking each bucket ID against the policy. If any
    /// server fails, the copies already stored are deleted again and the error names the server.
    /// One server: the same as [`Client::offer`].
    pub async fn offer_to_all(
        &self,
        servers: &[ServerAddr],
        payload: &[u8],
        passphrase: Passphrase,
        kdf: KdfProfile,
    ) -> Result<Offer, OfferError> {
        self.offer_to_all_with(servers, payload, passphrase, kdf, None)
            .await
            .map(|(offer, _key, _closes)| offer)
    }

    /// [`Client::offer_to_all`], every copy sealed with `answer_to` inside when given (and then
    /// stored only on servers with mailboxes): the offer, the link key, and when each copy's
    /// bucket closes on this machine's clock (in link order).
    pub(super) async fn offer_to_all_with(
        &self,
        servers: &[ServerAddr],
        payload: &[u8],
        passphrase: Passphrase,
        kdf: KdfProfile,
        answer_to: Option<&AnswerPublic>,
    ) -> Result<(Offer, LinkKey, Vec<u64>), OfferError> {
        let secrets = super::OfferSecrets::draw(&mut rand::rngs::OsRng);
        let (first, rest) = match servers {
            [] => return Err(OfferError::Servers("no server given")),
            [only] => {
                return self
                    .offer_with(only, payload, passphrase, kdf, secrets, answer_to)
                    .await
                    .map(|(offer, key, closes)| (offer, key, vec![closes]))
            }
            [first, rest @ ..] => (first, rest),
        };
        if rest.len() > MAX_MIRRORS {
            return Err(OfferError::Servers("at most 5 servers in one link"));
        }
        if servers
            .iter()
            .enumerate()
            .any(|(i, a)| servers[..i].contains(a))
        {
            return Err(OfferError::Servers("a server is named twice"));
        }
        // The first server's offer draws the salt and the token and derives the key; the other
        // copies reuse the key with nonces of their own.
        let (mut offer, key, closes) = self
            .offer_with(first, payload, passphrase, kdf, secrets, answer_to)
            .await
            .map_err(|e| OfferError::AtServer {
                server: first.to_string(),
                source: Box::new(e),
            })?;
        let mut stored: Vec<Mirror> = Vec::new();
        let mut all_closes = vec![closes];
        for (i, server) in rest.iter().enumerate() {
            let mut nonce = [0u8; NONCE_LEN];
            rand::rngs::OsRng.fill_bytes(&mut nonce);
            let token = offer.delete_token.for_server((i + 1) as u8);
            let sealed = match answer_to {
                None => seal::seal(&key, payload, nonce),
                Some(to) => seal::seal_expecting_answer(&key, payload, to, nonce),
            };
            let result = match sealed {
                Ok(sealed) => {
                    self.store_sealed(server, sealed, &token, answer_to.is_some())
                        .await
                }
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(s) => {
                    stored.push(Mirror {
                        server: server.clone(),
                        locator: s.id.locator(),
                    });
                    all_closes.push(s.closes_here);
                    offer.expires_at = offer
                        .expires_at
                        .max(s.id.created.saturating_add(s.info.ttl_secs));
                }
                Err(e) => {
                    self.take_back(&offer, &stored).await;
                    return Err(OfferError::AtServer {
                        server: server.to_string(),
                        source: Box::new(e),
                    });
                }
            }
        }
        offer.link.mirrors = stored;
        offer.closes_at = all_closes.iter().copied().max().unwrap_or(offer.closes_at);
        Ok((offer, key, all_closes))
    }

    /// Delete the copies of a failed multi-server offer (best effort: they expire anyway).
    async fn take_back(&self, offer: &Offer, mirrors: &[Mirror]) {
        let _ = self
            .delete_at(&offer.link.server, offer.link.locator, &offer.delete_token)
            .await;
        for (i, m) in mirrors.iter().enumerate() {
            let token = offer.delete_token.for_server((i + 1) as u8);
            let _ = self.delete_at(&m.server, m.locator, &token).await;
        }
    }

    /// Accept a multi-server link: every server at once, the first copy that opens wins.
    pub(crate) async fn accept_from_any(
        &self,
        link: &RdvLink,
        key: LinkKey,
    ) -> Result<Accepted, AcceptError> {
        let mut tries: FuturesUnordered<_> = link
            .servers()
            .into_iter()
            .map(|(server, locator)| {
                let key = &key;
                async move {
                    let result = self.fetch_at(&server, locator).await.map(|fetched| {
                        let tried = fetched.links.len();
                        let opened =
                            seal::trial_open(key, &fetched.links).map(|(index, opened)| Accepted {
                                payload: opened.payload,
                                tried,
                                index,
                                links_verified: fetched.verified,
                                reply: opened.answer_to.map(|to| super::ReplyTo {
                                    servers: link.servers().into_iter().map(|(s, _)| s).collect(),
                                    key: key.clone(),
                                    to,
                                }),
                            });
                        (fetched.verified, tried, opened)
                    });
                    (server, result)
                }
            })
            .collect();
        let mut failures = Vec::new();
        let mut counts = Vec::new();
        let mut accepted = None;
        while let Some((server, result)) = tries.next().await {
            match result {
                Ok((verified, tried, opened)) => {
                    counts.push(verified);
                    match opened {
                        Some(a) => {
                            accepted = Some(a);
                            break;
                        }
                        None => failures.push((server.to_string(), AcceptError::NoMatch { tried })),
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %crate::config::report(&e), "a server of the link failed");
                    failures.push((server.to_string(), e));
                }
            }
        }
        if let Some(mut a) = accepted {
            // Every server was asked, so each learnt of this fetch: the set is the smallest any
            // of them shows. The others get a little longer to answer, then count as unknown.
            let rest = async {
                while let Some((_, result)) = tries.next().await {
                    if let Ok((verified, _, _)) = result {
                        counts.push(verified);
                    }
                }
            };
            let _ = tokio::time::timeout(OTHER_COPIES_WAIT, rest).await;
            a.links_verified = least_verified(&counts);
            return Ok(a);
        }
        // In the link's order, so that the message reads like the link.
        let order: Vec<String> = link.servers().iter().map(|(s, _)| s.to_string()).collect();
        failures.sort_by_key(|(s, _)| order.iter().position(|o| o == s));
        Err(AcceptError::AllServers(failures))
    }

    /// How many verified links every copy of `link` hides among, as [`Client::accept`] reports
    /// it: the least count over the copies that answer (`None` if one answers without stamps);
    /// an error only if none answers.
    pub(crate) async fn verified_copies(
        &self,
        link: &RdvLink,
    ) -> Result<Option<usize>, AcceptError> {
        let mut counts = Vec::new();
        let mut failures = Vec::new();
        for (server, locator) in link.servers() {
            match self.fetch_at(&server, locator).await {
                Ok(f) => counts.push(f.verified),
                Err(e) => failures.push((server.to_string(), e)),
            }
        }
        if counts.is_empty() {
            return Err(AcceptError::AllServers(failures));
        }
        Ok(least_verified(&counts))
    }

    /// Delete every copy of a multi-server link; done when at least one server deleted its copy.
    /// Delete every copy of `link` and say how each went, in link order (a caller that must
    /// know whether a copy is left, not only whether one was deleted).
    pub async fn delete_each(
        &self,
        link: &RdvLink,
        token: &crate::proto::DeleteToken,
    ) -> Vec<(ServerAddr, Result<(), DeleteError>)> {
        self.delete_each_copy(&link.servers(), token).await
    }

    async fn delete_each_copy(
        &self,
        copies: &[(ServerAddr, Locator)],
        token: &crate::proto::DeleteToken,
    ) -> Vec<(ServerAddr, Result<(), DeleteError>)> {
        let mut out = Vec::with_capacity(copies.len());
        for (i, (server, locator)) in copies.iter().enumerate() {
            let r = self
                .delete_at(server, *locator, &token.for_server(i as u8))
                .await;
            out.push((server.clone(), r));
        }
        out
    }

    pub(crate) async fn delete_everywhere(
        &self,
        link: &RdvLink,
        token: &crate::proto::DeleteToken,
    ) -> Result<(), DeleteError> {
        self.delete_copies(&link.servers(), token).await
    }

    /// Delete the copies at `copies` (the link's servers and buckets, in link order, so that
    /// each gets its own token); done when at least one server deleted its copy.
    pub(crate) async fn delete_copies(
        &self,
        copies: &[(ServerAddr, Locator)],
        token: &crate::proto::DeleteToken,
    ) -> Result<(), DeleteError> {
        let mut failures = Vec::new();
        let mut deleted = 0;
        for (server, outcome) in self.delete_each_copy(copies, token).await {
            match outcome {
                Ok(()) => deleted += 1,
                Err(e) => failures.push((server.to_string(), e)),
            }
        }
        if deleted == 0 {
            return Err(DeleteError::AllServers(failures));
        }
        for (server, e) in &failures {
            tracing::warn!(%server, error = %crate::config::report(e), "this server's copy was not deleted");
        }
        Ok(())
    }
}
