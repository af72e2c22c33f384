//! Executing one request after the version exchange: the bucket and mailbox operations.

use super::limits::{Source, STORE_RETRY, STORE_WAIT};
use super::session::error;
use super::Server;
use crate::proto::{BucketId, SealedLink, SEALED_LINK_LEN};
use crate::proto::{ErrorCode, Request, Response, ServerInfo, MAX_LINKS_PER_BUCKET};
use crate::server::adversary::Adversary;
use crate::store::{BucketStore, PutAnswer, StoreError};

impl<S: BucketStore> Server<S> {
    /// Answer one request of a connection from `source` that agreed on `version`.
    pub(crate) async fn handle(&self, req: Request, version: u16, source: &Source) -> Response {
        let now = self.clock.now();
        match req {
            Request::Hello { .. } => error(ErrorCode::Malformed, "Hello was already exchanged"),
            Request::Info => {
                let p = self.store.params();
                Response::Info(ServerInfo {
                    version,
                    max_links_per_bucket: MAX_LINKS_PER_BUCKET as u16,
                    open_window_secs: p.open_window_secs,
                    ttl_secs: p.ttl_secs,
                    server_time: now,
                    max_frame: self.config.max_frame,
                })
            }
            Request::Store { link, delete_check } => {
                let Some(_turn) = self.store_gate.admit(source).await else {
                    return error(ErrorCode::ShuttingDown, "server is shutting down");
                };
                let deadline = tokio::time::Instant::now() + STORE_WAIT;
                loop {
                    let now = self.clock.now();
                    match self.store.store(link.clone(), delete_check, now).await {
                        Ok(id) => {
                            let locator = id.locator();
                            self.metrics.stored(id, locator, now);
                            source.set_last_stored(locator);
                            if let Some(a) = self.config.adversary {
                                return self.misbehave_on_store(a, id, now).await;
                            }
                            return Response::Stored { id };
                        }
                        // Full for this second: wait for the next one, keeping the turn.
                        Err(StoreError::Overloaded(_))
                            if tokio::time::Instant::now() + STORE_RETRY < deadline =>
                        {
                            tokio::time::sleep(STORE_RETRY).await
                        }
                        Err(e) => {
                            self.metrics.store_refused(match e {
                                StoreError::QuotaExceeded { .. } => "quota",
                                StoreError::Overloaded(_) => "overloaded",
                                _ => "failed",
                            });
                            return store_error(e);
                        }
                    }
                }
            }
            Request::Fetch { locator } => {
                match self.store.fetch(locator, self.expiry_now()).await {
                    Ok(Some(mut links)) => {
                        links.truncate(MAX_LINKS_PER_BUCKET);
                        self.metrics
                            .fetched(&locator, links.len(), self.clock.now());
                        let filler = self.filler(&locator, links.len());
                        links.extend(filler);
                        if self.config.adversary == Some(Adversary::Truncate) {
                            links.truncate(MAX_LINKS_PER_BUCKET - 1);
                        }
                        Response::Bucket { links }
                    }
                    Ok(None) => {
                        self.metrics.fetch_missed("not_found");
                        error(
                            ErrorCode::NotFound,
                            "no such bucket (never existed, or expired)",
                        )
                    }
                    Err(e) => {
                        self.metrics.fetch_missed("failed");
                        store_error(e)
                    }
                }
            }
            Request::Delete { locator, token } => {
                match self
                    .store
                    .delete(locator, token.check(), self.expiry_now())
                    .await
                {
                    Ok(true) => {
                        let same = source.last_stored_is(&locator);
                        self.metrics.deleted(&locator, self.clock.now(), same);
                        Response::Deleted
                    }
                    Ok(false) => {
                        self.metrics.delete_missed("nothing");
                        error(
                            ErrorCode::NotFound,
                            "no link with this deletion token in this bucket",
                        )
                    }
                    Err(e) => {
                        self.metrics.delete_missed("failed");
                        store_error(e)
                    }
                }
            }
            Request::PutAnswer { mailbox, answer } => {
                // A write like a store: the same fair admission.
                let Some(_turn) = self.store_gate.admit(source).await else {
                    return error(ErrorCode::ShuttingDown, "server is shutting down");
                };
                match self
                    .store
                    .put_answer(mailbox, answer, self.expiry_now())
                    .await
                {
                    Ok(PutAnswer::Stored) => {
                        self.metrics.answer("put_stored");
                        Response::AnswerStored
                    }
                    Ok(PutAnswer::AlreadyAnswered) => {
                        self.metrics.answer("put_already");
                        error(
                            ErrorCode::AlreadyAnswered,
                            "this mailbox holds an answer already; the first one stays",
                        )
                    }
                    Err(e) => {
                        self.metrics.answer("failed");
                        store_error(e)
                    }
                }
            }
            Request::FetchAnswer { mailbox } => {
                match self.store.fetch_answer(mailbox, self.expiry_now()).await {
                    Ok(Some(answer)) => {
                        self.metrics.answer("fetch_found");
                        Response::Answer { answer }
                    }
                    Ok(None) => {
                        self.metrics.answer("fetch_empty");
                        Response::Answer {
                            answer: crate::proto::padding::answer_filler(
                                self.store.filler_secret(),
                                &mailbox,
                            ),
                        }
                    }
                    Err(e) => {
                        self.metrics.answer("failed");
                        store_error(e)
                    }
                }
            }
        }
    }
}

impl<S: BucketStore> Server<S> {
    /// The adversarial server's answer to a store that went into `id`.
    async fn misbehave_on_store(&self, a: Adversary, id: BucketId, now: u64) -> Response {
        if a == Adversary::Dummies {
            // Fill the rest of the bucket with random links nobody can open.
            for _ in 1..MAX_LINKS_PER_BUCKET {
                let mut bytes = [0u8; SEALED_LINK_LEN];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
                let mut check = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut check);
                let check = crate::proto::DeleteToken::from_bytes(check).check();
                match self.store.store(SealedLink(bytes), check, now).await {
                    Ok(other) if other == id => {}
                    _ => break,
                }
            }
        }
        Response::Stored {
            id: a.rewrite_id(id),
        }
    }
}

/// The answer for a store failure. The cause is logged here, never sent.
fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::QuotaExceeded { .. } => error(ErrorCode::QuotaExceeded, e.to_string()),
        StoreError::Backend(_) => {
            tracing::warn!(error = %crate::config::report(&e), "storage failure");
            error(
                ErrorCode::StorageFailure,
                "storage failure on the server: the request was not done (retry later)",
            )
        }
        StoreError::Overloaded(_) => error(
            ErrorCode::Overloaded,
            "the server admits no more stores this second; retry shortly",
        ),
        StoreError::Closed => error(ErrorCode::ShuttingDown, "server is shutting down"),
        _ => {
            tracing::error!(error = %crate::config::report(&e), "store error");
            error(ErrorCode::Internal, "internal server error")
        }
    }
}
