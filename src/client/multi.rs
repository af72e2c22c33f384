//! Multi-server links: one payload on several rendezvous servers, so that one server down or
//! blocked does not stop the rendezvous.
//!
//! Each server gets its own sealed copy (the same link key, a fresh nonce, so the copies have
//! nothing in common that servers comparing blobs could match) in a bucket of its own, with a
//! delete token of its own derived from the offer's token. The copies are stored in a random
//! order, a random pause apart ([`ClientConfig::copy_spread`](super::ClientConfig::copy_spread)),
//! and the accepter
//! fetches one copy, the link's first copy (drawn by the link key: the same for every accepter,
//! uniform over links), the next (in a random order) only if that one fails, so that servers
//! comparing notes can chain neither the stores nor the fetches of one link by their times; it
//! fails only when all fail, saying how each failed.

use super::{AcceptError, Accepted, Client, DeleteError, Offer, OfferError, Stored};
use crate::proto::link::{Mirror, MAX_MIRRORS};
use crate::proto::seal::{self, NONCE_LEN};
use crate::proto::{
    AnswerPublic, DeleteToken, KdfProfile, LinkKey, Locator, Passphrase, RdvLink, ServerAddr,
};
use rand::seq::SliceRandom;
use rand::RngCore;
use std::time::Duration;

/// The copies of `link` (server and locator) in a random order.
fn in_random_order(link: &RdvLink) -> Vec<(ServerAddr, Locator)> {
    let mut copies = link.servers();
    copies.shuffle(&mut rand::rngs::OsRng);
    copies
}

/// The copies of `link` in the order an accept tries them: the link's first copy
/// ([`crate::proto::link::first_copy`], the same for every holder of `key`), then the next
/// ones after it in the link, round ([`crate::proto::link::copy_order`]).
fn in_accept_order(link: &RdvLink, key: &LinkKey) -> Vec<(ServerAddr, Locator)> {
    let copies = link.servers();
    let first = crate::proto::link::first_copy(key, copies.len());
    crate::proto::link::copy_order(first, copies.len())
        .map(|j| copies[j].clone())
        .collect()
}

/// Failures by server, in the link's order, so that a message reads like the link.
fn in_link_order<E>(link: &RdvLink, mut failures: Vec<(String, E)>) -> Vec<(String, E)> {
    let order: Vec<String> = link.servers().iter().map(|(s, _)| s.to_string()).collect();
    failures.sort_by_key(|(s, _)| order.iter().position(|o| o == s));
    failures
}

/// The least of the copies' verified counts (`None` if one copy's server has no stamps), or,
/// when no copy answered, the failure (each server's, in link order, for several).
fn least_count(
    link: &RdvLink,
    counts: &[Option<usize>],
    mut failures: Vec<(String, AcceptError)>,
) -> Result<Option<usize>, AcceptError> {
    if counts.is_empty() {
        if failures.len() == 1 {
            return Err(failures.remove(0).1);
        }
        return Err(AcceptError::AllServers(in_link_order(link, failures)));
    }
    Ok(counts
        .iter()
        .try_fold(usize::MAX, |m, c| c.map(|c| m.min(c))))
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
            .map(|(offer, _key)| offer)
    }

    /// [`Client::offer_to_all`], every copy sealed with `answer_to` inside when given (and then
    /// stored only on servers with mailboxes): the offer and the link key.
    pub(super) async fn offer_to_all_with(
        &self,
        servers: &[ServerAddr],
        payload: &[u8],
        passphrase: Passphrase,
        kdf: KdfProfile,
        answer_to: Option<&AnswerPublic>,
    ) -> Result<(Offer, LinkKey), OfferError> {
        let secrets = super::OfferSecrets::draw(&mut rand::rngs::OsRng);
        match servers {
            [] => return Err(OfferError::Servers("no server given")),
            [only] => {
                return self
                    .offer_with(only, payload, passphrase, kdf, secrets, answer_to)
                    .await
            }
            _ => {}
        }
        if servers.len() > MAX_MIRRORS + 1 {
            return Err(OfferError::Servers("at most 5 servers in one link"));
        }
        if servers
            .iter()
            .enumerate()
            .any(|(i, a)| servers[..i].contains(a))
        {
            return Err(OfferError::Servers("a server is named twice"));
        }
        let super::OfferSecrets { salt, nonce, token } = secrets;
        let key = self
            .link_key(payload, &passphrase, &salt, kdf, answer_to.is_some())
            .await?;
        // The copies go in a random order: the link's first server first every time told
        // servers comparing notes which of two copies' stores came first.
        let mut order: Vec<usize> = (0..servers.len()).collect();
        order.shuffle(&mut rand::rngs::OsRng);
        let mut stored: Vec<(usize, Stored)> = Vec::new();
        for (n, &i) in order.iter().enumerate() {
            // A pause of its own before each further copy (exponential, so that nothing in
            // its length points to the copy before): stored one right after another, the
            // copies of one link were chained across servers comparing notes by their store
            // times (a helper's attack rebuilt 16 of 18 links' chains on loopback). A process
            // stopping meanwhile takes back what was stored (nobody has the link yet).
            if n > 0 && self.store_pause().await {
                self.take_back(servers, &stored, &token).await;
                return Err(OfferError::Interrupted);
            }
            let nonce = match n {
                0 => nonce,
                _ => {
                    let mut fresh = [0u8; NONCE_LEN];
                    rand::rngs::OsRng.fill_bytes(&mut fresh);
                    fresh
                }
            };
            let sealed = match answer_to {
                None => seal::seal(&key, payload, nonce),
                // A mailbox of its own on each server (format 3): one name everywhere told
                // servers comparing notes that their copies belong together.
                Some(to) => seal::seal_expecting_answer_in(
                    &key,
                    payload,
                    to,
                    crate::proto::answer::MailboxNames::PerCopy,
                    nonce,
                ),
            };
            let result = match sealed {
                Ok(sealed) => {
                    let token = token.for_server(i as u8);
                    self.store_sealed(&servers[i], sealed, &token, answer_to.is_some())
                        .await
                }
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(s) => stored.push((i, s)),
                Err(e) => {
                    self.take_back(servers, &stored, &token).await;
                    return Err(OfferError::AtServer {
                        server: servers[i].to_string(),
                        source: Box::new(e),
                    });
                }
            }
        }
        // In link order: the first server's copy is the link's main one.
        stored.sort_by_key(|(i, _)| *i);
        let copies: Vec<super::CopyTimes> = stored
            .iter()
            .map(|(_, s)| super::CopyTimes {
                closes_at: s.closes_here,
                expires_at: s.id.created.saturating_add(s.info.ttl_secs),
                clock_ahead: s.clock_ahead,
            })
            .collect();
        let mut stored = stored.into_iter().map(|(_, s)| s);
        let Some(main) = stored.next() else {
            return Err(OfferError::Servers("no server given"));
        };
        let mirrors = stored
            .zip(&servers[1..])
            .map(|(s, server)| Mirror {
                server: server.clone(),
                locator: s.id.locator(),
            })
            .collect();
        let link = RdvLink {
            server: servers[0].clone(),
            locator: main.id.locator(),
            mirrors,
            salt,
            kdf,
            passphrase: Some(passphrase),
        };
        let offer = Offer {
            link,
            bucket: main.id,
            delete_token: token,
            server_info: main.info,
            closes_at: copies
                .iter()
                .map(|c| c.closes_at)
                .max()
                .unwrap_or(main.closes_here),
            expires_at: copies
                .iter()
                .map(|c| c.expires_at)
                .max()
                .unwrap_or_default(),
            copies,
        };
        Ok((offer, key))
    }

    /// Delete the copies stored so far (by their index in `servers`) of a failed multi-server
    /// offer (best effort: they expire anyway), each at a moment of its own drawn uniformly
    /// within [`ClientConfig::copy_spread`] from now, none at once; interrupted
    /// ([`Client::interrupt`]), the rest at once. A store failure is the server's to provoke
    /// (a bucket ID the policy refuses, a dropped connection): deleted at once, the copies
    /// stored before named themselves within milliseconds of it, to servers comparing notes.
    ///
    /// [`ClientConfig::copy_spread`]: super::ClientConfig::copy_spread
    async fn take_back(
        &self,
        servers: &[ServerAddr],
        stored: &[(usize, Stored)],
        token: &DeleteToken,
    ) {
        let copies = stored
            .iter()
            .map(|(i, s)| (*i, servers[*i].clone(), s.id.locator()))
            .collect();
        let _ = self.delete_spread(copies, token, false).await;
    }

    /// Accept a multi-server link: one copy, the link's first copy (drawn by its key, the same for
    /// every accepter that follows this order: one who answers after another meets that answer in
    /// the same mailbox and is told; drawn afresh for each accept, two accepters fetched different
    /// copies and answered both, unaware of each other), and the next (the following ones in the
    /// link, round, again the same for every accepter) only when that one fails (unreachable, not
    /// found, no link opens, a broken answer), one after another. Fetched from every server at
    /// once, the copies' fetches came in the same instant: servers comparing notes grouped them,
    /// chained each link's copies by their store times, and cut an accept's set down to the links
    /// stored on exactly those servers; a fetch with no twin elsewhere ruled out every multi-server
    /// link of its bucket, so users of one server lost their set too (a helper's attack,
    /// 2026-12-06: with three colluding servers the top guess was right for 60 % of single-server
    /// accepts, chance 11 %).
    pub(crate) async fn accept_from_any(
        &self,
        link: &RdvLink,
        key: LinkKey,
    ) -> Result<Accepted, AcceptError> {
        let mut failures = Vec::new();
        for (n, (server, locator)) in in_accept_order(link, &key).into_iter().enumerate() {
            // The next copy a pause after a failure, not at once: a server that fails on
            // purpose (not found, an empty bucket, a connection dropped) would otherwise pair
            // its own fetch with the next server's, for servers comparing notes.
            if n > 0 {
                let _ = self.spread_pause().await;
            }
            let fetched = match self.fetch_at(&server, locator).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::debug!(error = %crate::config::report(&e), "a server of the link failed; the next copy");
                    failures.push((server.to_string(), e));
                    continue;
                }
            };
            let tried = fetched.links.len();
            match seal::trial_open(&key, &fetched.links) {
                Some((index, opened)) => {
                    return Ok(Accepted {
                        payload: opened.payload,
                        tried,
                        index,
                        links_verified: fetched.verified,
                        reply: opened.answer_to.map(|to| super::ReplyTo {
                            fetched_from: link.servers().iter().position(|(s, _)| *s == server),
                            servers: link.servers().into_iter().map(|(s, _)| s).collect(),
                            mailboxes: opened.mailboxes,
                            key,
                            to,
                        }),
                    })
                }
                None => failures.push((server.to_string(), AcceptError::NoMatch { tried })),
            }
        }
        Err(AcceptError::AllServers(in_link_order(link, failures)))
    }

    /// How many verified links every copy of a multi-server link hides among: the least count
    /// over the copies that answer (`None` if one answers without stamps), each fetched once,
    /// in a random order and a pause apart (as an accept fetches one of them), so that an
    /// initiator's `--min-k` holds for whichever copy its accepter fetches; an error only if
    /// every copy fails.
    pub(crate) async fn verified_copies(
        &self,
        link: &RdvLink,
    ) -> Result<Option<usize>, AcceptError> {
        let mut counts = Vec::new();
        let mut failures = Vec::new();
        for (n, (server, locator)) in in_random_order(link).into_iter().enumerate() {
            if n > 0 {
                let _ = self.spread_pause().await;
            }
            match self.fetch_at(&server, locator).await {
                Ok(f) => counts.push(f.verified),
                Err(e) => failures.push((server.to_string(), e)),
            }
        }
        least_count(link, &counts, failures)
    }

    /// [`Client::verified_links`] for an offer being held: each copy's bucket fetched a random
    /// pause (exponential, mean `mean`) after *its own* close on this machine's clock, the
    /// least count over the copies that answer (`None` if one answers without stamps); an error
    /// only if every copy fails. Waiting for the latest close and then fetching every copy
    /// told a server whose bucket closed earlier when another server's closed (a helper's
    /// measurement, 2026-12-06: each count fetch a median 76 s, up to 236 s, after its own
    /// close; the count fetches paired buckets across servers 15 % of the time, chance 5 %).
    /// The fetches are concurrent, each at its own moment; the call ends with the last.
    pub async fn verified_after_closes(
        &self,
        offer: &super::Offer,
        mean: Duration,
    ) -> Result<Option<usize>, AcceptError> {
        let copies = offer.link.servers();
        let mut fetches: futures::stream::FuturesUnordered<_> = copies
            .iter()
            .zip(&offer.copies)
            .map(|((server, locator), times)| async move {
                super::wake::past(
                    self.clock.as_ref(),
                    Duration::from_secs(times.closes_at),
                    mean,
                )
                .await;
                (server, self.fetch_at(server, *locator).await)
            })
            .collect();
        let mut counts = Vec::new();
        let mut failures = Vec::new();
        while let Some((server, r)) = futures::StreamExt::next(&mut fetches).await {
            match r {
                Ok(f) => counts.push(f.verified),
                Err(e) => failures.push((server.to_string(), e)),
            }
        }
        least_count(&offer.link, &counts, failures)
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

    /// Delete the copies at `copies` (in link order, so that each gets its own token): one copy,
    /// drawn at random, at once, and each other at a moment of its own drawn uniformly within
    /// [`ClientConfig::copy_spread`] from now: deletes one right after another would chain the
    /// copies again, across servers comparing notes, as the stores would have. Deletes chained a spread pause apart (exponential, as
    /// the stores) were not enough: a delete names its entry, so each server learns the entry's
    /// store time with it, and a helper's attack (2026-12-06, three servers, 16 links a run)
    /// paired 57-62 % of the copies by their deletes and stores against 28-38 % by the stores
    /// alone (chance 5 %); `rdv delete` now gives them ten minutes. The outcomes come in link
    /// order. Interrupted ([`Client::interrupt`]: a stop taking links back), the rest at once.
    ///
    /// [`ClientConfig::copy_spread`]: super::ClientConfig::copy_spread
    async fn delete_each_copy(
        &self,
        copies: &[(ServerAddr, Locator)],
        token: &DeleteToken,
    ) -> Vec<(ServerAddr, Result<(), DeleteError>)> {
        let copies = copies
            .iter()
            .enumerate()
            .map(|(i, (server, locator))| (i, server.clone(), *locator))
            .collect();
        self.delete_spread(copies, token, true).await
    }

    /// Delete `copies` (each with its place in the link, which names its token), each at a
    /// moment of its own drawn uniformly within [`ClientConfig::copy_spread`] from now, but
    /// one drawn at random at once if `one_at_once`; interrupted ([`Client::interrupt`]), the
    /// rest at once. The outcomes come in link order.
    ///
    /// [`ClientConfig::copy_spread`]: super::ClientConfig::copy_spread
    async fn delete_spread(
        &self,
        copies: Vec<(usize, ServerAddr, Locator)>,
        token: &DeleteToken,
        one_at_once: bool,
    ) -> Vec<(ServerAddr, Result<(), DeleteError>)> {
        let start = tokio::time::Instant::now();
        let within = self.config.copy_spread;
        let mut order: Vec<(Duration, usize)> = (0..copies.len())
            .map(|k| (within.mul_f64(rand::random::<f64>()), k))
            .collect();
        if one_at_once {
            if let Some(first) = order.choose_mut(&mut rand::rngs::OsRng) {
                first.0 = Duration::ZERO;
            }
        }
        order.sort();
        let mut interrupted = self.interrupted.subscribe();
        let mut out: Vec<(usize, ServerAddr, Result<(), DeleteError>)> =
            Vec::with_capacity(copies.len());
        for (at, k) in order {
            let stopped = *interrupted.borrow();
            if !stopped {
                let late = tokio::select! {
                    late = super::wake::until_instant(start + at) => late,
                    _ = interrupted.wait_for(|i| *i) => false,
                };
                // A stop (a suspend) passed this moment, and maybe the next ones too: a fresh
                // pause, so that they do not all come at once.
                if late && !*interrupted.borrow() {
                    super::wake::pause(within / 4).await;
                }
            }
            let (i, server, locator) = &copies[k];
            let r = self
                .delete_at(server, *locator, &token.for_server(*i as u8))
                .await;
            out.push((*i, server.clone(), r));
        }
        out.sort_by_key(|(i, _, _)| *i);
        out.into_iter().map(|(_, s, r)| (s, r)).collect()
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
