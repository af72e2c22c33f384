//! The connection state machine of PROTOCOL.md §9, as pure state: events in, [`Step`]s out.
//!
//! The connection's IO loop (`conn.rs`) reads frames and the clock and does what the step says;
//! every decision (version exchange, rate limit, which error closes the connection) is made here.

use super::limits::RateLimiter;
use crate::proto::wire::{
    self, negotiate, sanitize_message, ANSWER_STAMP_VERSION, ANSWER_VERSION, MIN_PROTOCOL_VERSION,
    STAMP_VERSION,
};
use crate::proto::{ErrorCode, Request, Response, PROTOCOL_VERSION};
use tokio::time::Instant;

/// What the connection does next.
#[derive(Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // a Store request carries its 256-byte link inline on purpose
pub(crate) enum Step {
    /// Send this answer and wait for the next frame.
    Reply(Response),
    /// Send this answer, then close.
    ReplyAndClose(Response),
    /// Execute this request (greeted, within the rate) and send its answer.
    Handle(Request),
}

/// One connection's protocol state.
#[derive(Debug)]
pub(crate) struct Session {
    /// The version agreed in the Hello exchange; `None` before it.
    version: Option<u16>,
    limiter: RateLimiter,
}

/// An error answer with a cleaned message.
pub(crate) fn error(code: ErrorCode, message: impl AsRef<str>) -> Response {
    Response::Error {
        code,
        message: sanitize_message(message.as_ref()),
    }
}

impl Session {
    /// A new connection: not greeted, a full rate bucket.
    pub(crate) fn new(rate_per_sec: u32, rate_burst: u32, now: Instant) -> Self {
        Session {
            version: None,
            limiter: RateLimiter::new(rate_per_sec, rate_burst, now),
        }
    }

    /// The version agreed (the newest before Hello; requests are only handled after it).
    pub(crate) fn version(&self) -> u16 {
        self.version.unwrap_or(PROTOCOL_VERSION)
    }

    /// A complete frame body arrived at `now`.
    pub(crate) fn on_frame(&mut self, body: &[u8], now: Instant) -> Step {
        let req: Request = match wire::decode_body(body) {
            Ok(r) => r,
            Err(e) => return Step::ReplyAndClose(error(ErrorCode::Malformed, e.to_string())),
        };
        if !self.limiter.allow(now) {
            return Step::Reply(error(
                ErrorCode::RateLimited,
                "too many requests on this connection, slow down",
            ));
        }
        match (self.version, req) {
            (
                None,
                Request::Hello {
                    min_version,
                    max_version,
                },
            ) => match negotiate(min_version, max_version) {
                Some(version) => {
                    self.version = Some(version);
                    Step::Reply(Response::Hello { version })
                }
                None => Step::ReplyAndClose(error(
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "this server speaks versions {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}, the client {min_version}..={max_version}"
                    ),
                )),
            },
            (None, _) => Step::ReplyAndClose(error(ErrorCode::HelloRequired, "send Hello first")),
            (Some(_), Request::Hello { .. }) => {
                Step::Reply(error(ErrorCode::Malformed, "Hello was already exchanged"))
            }
            (Some(v), req @ (Request::PutAnswer { .. } | Request::FetchAnswer { .. }))
                if v < ANSWER_VERSION =>
            {
                Step::Reply(error(
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "{} needs protocol version {ANSWER_VERSION}; this connection agreed on {v}",
                        req.kind()
                    ),
                ))
            }
            (Some(v), req @ (Request::Challenge | Request::StampedStore { .. }))
                if v < STAMP_VERSION =>
            {
                Step::Reply(error(
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "{} needs protocol version {STAMP_VERSION}; this connection agreed on {v}",
                        req.kind()
                    ),
                ))
            }
            (Some(v), req @ (Request::AnswerChallenge | Request::StampedPutAnswer { .. }))
                if v < ANSWER_STAMP_VERSION =>
            {
                Step::Reply(error(
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "{} needs protocol version {ANSWER_STAMP_VERSION}; this connection agreed on {v}",
                        req.kind()
                    ),
                ))
            }
            (Some(_), req) => Step::Handle(req),
        }
    }

    /// The length prefix announced more than the maximum; the body is not read.
    pub(crate) fn on_too_large(&self, len: u32, max: u32) -> Step {
        Step::ReplyAndClose(error(
            ErrorCode::FrameTooLarge,
            format!("frame of {len} bytes exceeds the maximum of {max}"),
        ))
    }

    /// No complete frame within the idle timeout.
    pub(crate) fn on_idle_timeout(&self) -> Step {
        Step::ReplyAndClose(error(ErrorCode::TimedOut, "idle timeout"))
    }

    /// The server is shutting down.
    pub(crate) fn on_shutdown(&self) -> Step {
        Step::ReplyAndClose(error(ErrorCode::ShuttingDown, "server is shutting down"))
    }
}

/// The answer to a connection that finds no free slot.
pub(crate) fn busy() -> Response {
    error(ErrorCode::Busy, "too many connections, try again later")
}

/// The last answer of a connection closed to make room for a newcomer.
pub(crate) fn evicted() -> Response {
    error(
        ErrorCode::Busy,
        "all connection slots are taken: this idle connection was closed to make room",
    )
}

#[cfg(test)]
mod tests {
    //! One test per row of the table in PROTOCOL.md §9.
    use super::*;
    use crate::proto::wire::{encode_frame, DEFAULT_MAX_FRAME, FRAME_HEADER_LEN};
    use crate::proto::Locator;

    fn body(r: &Request) -> Vec<u8> {
        encode_frame(r, DEFAULT_MAX_FRAME).unwrap()[FRAME_HEADER_LEN..].to_vec()
    }
    fn hello(min: u16, max: u16) -> Vec<u8> {
        body(&Request::Hello {
            min_version: min,
            max_version: max,
        })
    }
    fn code(s: &Step) -> (ErrorCode, bool) {
        match s {
            Step::Reply(Response::Error { code, .. }) => (*code, false),
            Step::ReplyAndClose(Response::Error { code, .. }) => (*code, true),
            other => panic!("expected an error step, got {other:?}"),
        }
    }
    fn session() -> (Session, Instant) {
        let now = Instant::now();
        (Session::new(20, 40, now), now)
    }

    #[test]
    fn busy_answers_busy() {
        assert!(matches!(
            busy(),
            Response::Error {
                code: ErrorCode::Busy,
                ..
            }
        ));
    }

    #[test]
    fn shutdown_replies_and_closes() {
        let (s, _) = session();
        assert_eq!(code(&s.on_shutdown()), (ErrorCode::ShuttingDown, true));
    }

    #[test]
    fn idle_timeout_replies_and_closes() {
        let (s, _) = session();
        assert_eq!(code(&s.on_idle_timeout()), (ErrorCode::TimedOut, true));
    }

    #[test]
    fn oversize_frame_replies_and_closes() {
        let (s, _) = session();
        assert_eq!(
            code(&s.on_too_large(1 << 30, DEFAULT_MAX_FRAME)),
            (ErrorCode::FrameTooLarge, true)
        );
    }

    #[test]
    fn undecodable_body_replies_malformed_and_closes() {
        let (mut s, now) = session();
        assert_eq!(
            code(&s.on_frame(&[0xff, 0xff], now)),
            (ErrorCode::Malformed, true)
        );
        let mut trailing = hello(1, 1);
        trailing.push(0);
        assert_eq!(
            code(&s.on_frame(&trailing, now)),
            (ErrorCode::Malformed, true)
        );
    }

    #[test]
    fn rate_limited_request_is_not_executed_and_the_connection_stays_open() {
        let now = Instant::now();
        let mut s = Session::new(1, 2, now);
        assert_eq!(
            s.on_frame(&hello(1, 1), now),
            Step::Reply(Response::Hello { version: 1 })
        );
        assert!(matches!(
            s.on_frame(&body(&Request::Info), now),
            Step::Handle(Request::Info)
        ));
        // Every decoded request takes a token, Hello included: the burst of 2 is used up.
        assert_eq!(
            code(&s.on_frame(&body(&Request::Info), now)),
            (ErrorCode::RateLimited, false)
        );
        let later = now + std::time::Duration::from_secs(1);
        assert!(matches!(
            s.on_frame(&body(&Request::Info), later),
            Step::Handle(Request::Info)
        ));
    }

    #[test]
    fn hello_greets_with_the_newest_common_version() {
        let (mut s, now) = session();
        assert_eq!(
            s.on_frame(&hello(1, 5), now),
            Step::Reply(Response::Hello { version: 4 })
        );
        assert_eq!(s.version(), 4);
        let (mut s, now) = session();
        assert_eq!(
            s.on_frame(&hello(1, 2), now),
            Step::Reply(Response::Hello { version: 2 })
        );
        assert_eq!(s.version(), 2);
        let (mut s, now) = session();
        assert_eq!(
            s.on_frame(&hello(1, 1), now),
            Step::Reply(Response::Hello { version: 1 })
        );
        assert_eq!(s.version(), 1);
    }

    #[test]
    fn hello_without_a_common_version_replies_unsupported_and_closes() {
        let (mut s, now) = session();
        assert_eq!(
            code(&s.on_frame(&hello(5, 6), now)),
            (ErrorCode::UnsupportedVersion, true)
        );
        let (mut s, now) = session();
        assert_eq!(
            code(&s.on_frame(&hello(0, 0), now)),
            (ErrorCode::UnsupportedVersion, true)
        );
        let (mut s, now) = session();
        assert_eq!(
            code(&s.on_frame(&hello(3, 2), now)),
            (ErrorCode::UnsupportedVersion, true)
        );
    }

    #[test]
    fn anything_before_hello_replies_hello_required_and_closes() {
        let (mut s, now) = session();
        let fetch = body(&Request::Fetch {
            locator: Locator([0; 32]),
        });
        assert_eq!(
            code(&s.on_frame(&fetch, now)),
            (ErrorCode::HelloRequired, true)
        );
    }

    #[test]
    fn second_hello_replies_malformed_and_stays_open() {
        let (mut s, now) = session();
        s.on_frame(&hello(1, 1), now);
        assert_eq!(
            code(&s.on_frame(&hello(1, 1), now)),
            (ErrorCode::Malformed, false)
        );
    }

    #[test]
    fn answer_requests_on_a_version_1_connection_are_refused_and_it_stays_open() {
        use crate::proto::{MailboxAddr, SealedAnswer};
        let (mut s, now) = session();
        s.on_frame(&hello(1, 1), now);
        let put = Request::PutAnswer {
            mailbox: MailboxAddr([1; 32]),
            answer: SealedAnswer([2; 256]),
        };
        let fetch = Request::FetchAnswer {
            mailbox: MailboxAddr([1; 32]),
        };
        assert_eq!(
            code(&s.on_frame(&body(&put), now)),
            (ErrorCode::UnsupportedVersion, false)
        );
        assert_eq!(
            code(&s.on_frame(&body(&fetch), now)),
            (ErrorCode::UnsupportedVersion, false)
        );
        let (mut s, now) = session();
        s.on_frame(&hello(1, 2), now);
        assert_eq!(s.on_frame(&body(&put), now), Step::Handle(put.clone()));
    }

    #[test]
    fn stamped_answers_on_a_version_3_connection_are_refused_and_it_stays_open() {
        use crate::proto::{MailboxAddr, SealedAnswer, Stamp};
        let put = Request::StampedPutAnswer {
            mailbox: MailboxAddr([1; 32]),
            answer: SealedAnswer([2; 256]),
            epoch: 1,
            stamp: Stamp([3; 36]),
        };
        let (mut s, now) = session();
        s.on_frame(&hello(1, 3), now);
        for r in [&Request::AnswerChallenge, &put] {
            assert_eq!(
                code(&s.on_frame(&body(r), now)),
                (ErrorCode::UnsupportedVersion, false)
            );
        }
        let (mut s, now) = session();
        s.on_frame(&hello(1, 4), now);
        assert_eq!(s.on_frame(&body(&put), now), Step::Handle(put.clone()));
    }

    #[test]
    fn requests_after_hello_are_handled() {
        let (mut s, now) = session();
        s.on_frame(&hello(1, 1), now);
        let fetch = Request::Fetch {
            locator: Locator([1; 32]),
        };
        assert_eq!(s.on_frame(&body(&fetch), now), Step::Handle(fetch));
        assert_eq!(
            s.on_frame(&body(&Request::Info), now),
            Step::Handle(Request::Info)
        );
    }
}
