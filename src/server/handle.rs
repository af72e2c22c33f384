//! Executing one request after the version exchange: the bucket and mailbox operations.

use super::limits::{Source, STORE_RETRY, STORE_WAIT};
use super::session::error;
use super::Server;
use crate::proto::{ErrorCode, Request, Response, ServerInfo, MAX_LINKS_PER_BUCKET};
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
                        Ok(id) => return Response::Stored { id },
                        // Full for this second: wait for the next one, keeping the turn.
                        Err(StoreError::Overloaded(_))
                            if tokio::time::Instant::now() + STORE_RETRY < deadline =>
                        {
                            tokio::time::sleep(STORE_RETRY).await
                        }
                        Err(e) => return store_error(e),
                    }
                }
            }
            Request::Fetch { locator } => {
                match self.store.fetch(locator, self.expiry_now()).await {
                    Ok(Some(mut links)) => {
                        links.truncate(MAX_LINKS_PER_BUCKET);
                        let filler = self.filler(&locator, links.len());
                        links.extend(filler);
                        Response::Bucket { links }
                    }
                    Ok(None) => error(
                        ErrorCode::NotFound,
                        "no such bucket (never existed, or expired)",
                    ),
                    Err(e) => store_error(e),
                }
            }
            Request::Delete { locator, token } => {
                match self
                    .store
                    .delete(locator, token.check(), self.expiry_now())
                    .await
                {
                    Ok(true) => Response::Deleted,
                    Ok(false) => error(
                        ErrorCode::NotFound,
                        "no link with this deletion token in this bucket",
                    ),
                    Err(e) => store_error(e),
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
                    Ok(PutAnswer::Stored) => Response::AnswerStored,
                    Ok(PutAnswer::AlreadyAnswered) => error(
                        ErrorCode::AlreadyAnswered,
                        "this mailbox holds an answer already; the first one stays",
                    ),
                    Err(e) => store_error(e),
                }
            }
            Request::FetchAnswer { mailbox } => {
                match self.store.fetch_answer(mailbox, self.expiry_now()).await {
                    Ok(Some(answer)) => Response::Answer { answer },
                    Ok(None) => Response::Answer {
                        answer: crate::proto::padding::answer_filler(
                            self.store.filler_secret(),
                            &mailbox,
                        ),
                    },
                    Err(e) => store_error(e),
                }
            }
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
