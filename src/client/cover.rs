//! Cover requests, for a long-running client (`rdv agent`) that sends them at random moments:
//! each is the same exchange a real operation makes, so the server cannot tell them apart from
//! one.

use super::{AcceptError, Client, ConnectionError, Sent};
use crate::proto::wire::ANSWER_VERSION;
use crate::proto::{Locator, MailboxAddr, Request, Response, ServerAddr};

impl Client {
    /// Look into `mailbox` on `server`, as a look for an answer does (a fresh connection,
    /// `Hello`, `FetchAnswer`), and drop what comes back. For a mailbox nobody uses, an honest
    /// server answers filler, as it does for a mailbox still waiting for its answer.
    pub async fn decoy_look(
        &self,
        server: &ServerAddr,
        mailbox: MailboxAddr,
    ) -> Result<(), ConnectionError> {
        let look = Request::FetchAnswer { mailbox };
        match self.request_fresh(server, &look, ANSWER_VERSION).await? {
            Sent::Answer(Response::Answer { .. }) | Sent::OldServer(_) => Ok(()),
            Sent::Answer(r) => Err(super::unexpected("Answer", &r)),
        }
    }

    /// Fetch the bucket at `locator` on `server`, as an accept does, and drop it.
    pub async fn decoy_fetch(
        &self,
        server: &ServerAddr,
        locator: Locator,
    ) -> Result<(), AcceptError> {
        self.fetch_at(server, locator).await.map(|_| ())
    }
}
