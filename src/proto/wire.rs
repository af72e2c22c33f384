//! Wire messages and framing.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of a postcard-encoded
//! [`Request`] (client to server) or [`Response`] (server to client). The length is checked
//! against a maximum before anything is allocated or decoded. Postcard encodes enum variants by
//! their index: variants are only ever appended, never reordered (golden vectors pin the bytes).

use super::answer::{MailboxAddr, SealedAnswer};
use super::answer_stamp::AnswerChallenge;
use super::bucket::{BucketId, DeleteCheck, DeleteToken, Locator};
use super::seal::SealedLink;
use super::stamp::{Challenge, ServerName, Stamp, StampSeed};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The newest protocol version this implementation speaks. Version 2 adds the answer mailboxes
/// ([`Request::PutAnswer`], [`Request::FetchAnswer`]); version 3 adds stamps
/// ([`Request::Challenge`], [`Request::StampedStore`], [`Response::StampedBucket`]); version 4
/// adds stamped answers ([`Request::AnswerChallenge`], [`Request::StampedPutAnswer`],
/// [`Response::AnswerChallenge`]); everything of the earlier versions is unchanged.
pub const PROTOCOL_VERSION: u16 = 4;
/// The oldest protocol version this implementation speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;
/// The first version with answer mailboxes.
pub const ANSWER_VERSION: u16 = 2;
/// The first version with stamps.
pub const STAMP_VERSION: u16 = 3;
/// The first version with stamped answers.
pub const ANSWER_STAMP_VERSION: u16 = 4;
/// Length of the frame header.
pub const FRAME_HEADER_LEN: usize = 4;
/// Default maximum frame body, enough for a full bucket (64 × 256 bytes plus overhead).
pub const DEFAULT_MAX_FRAME: u32 = 20 * 1024;
/// Longest error message a server sends (and a client accepts); longer ones are cut.
pub const MAX_ERROR_MESSAGE: usize = 200;

/// A request from client to server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // a Store carries 256 inline bytes on purpose
pub enum Request {
    /// Version exchange; must be the first request on a connection.
    Hello {
        /// Lowest version the client speaks.
        min_version: u16,
        /// Highest version the client speaks.
        max_version: u16,
    },
    /// Ask for the server's parameters and clock.
    Info,
    /// Store a sealed link without a stamp (in the free stream's open bucket).
    Store {
        /// The link.
        link: SealedLink,
        /// Hash of the initiator's deletion token.
        delete_check: DeleteCheck,
    },
    /// Fetch a bucket by locator.
    Fetch {
        /// The bucket's locator.
        locator: Locator,
    },
    /// Delete the link whose deletion check matches `token`.
    Delete {
        /// The bucket's locator.
        locator: Locator,
        /// The deletion token.
        token: DeleteToken,
    },
    /// Leave a sealed answer in a mailbox (version 2). Write-once: the first answer stays.
    PutAnswer {
        /// The mailbox.
        mailbox: MailboxAddr,
        /// The sealed answer.
        answer: SealedAnswer,
    },
    /// Fetch a mailbox's answer (version 2).
    FetchAnswer {
        /// The mailbox.
        mailbox: MailboxAddr,
    },
    /// Ask which bucket a store would go into, its seed and the effort asked (version 3).
    Challenge,
    /// Store a sealed link with its stamp in the bucket a challenge named (version 3).
    StampedStore {
        /// The link.
        link: SealedLink,
        /// Hash of the initiator's deletion token.
        delete_check: DeleteCheck,
        /// The bucket the challenge named.
        id: BucketId,
        /// The name the client reached the server by, as its stamp binds it.
        name: ServerName,
        /// The stamp for the link in that bucket.
        stamp: Stamp,
    },
    /// Ask for the answer seed of the server's current epoch and the effort asked (version 4).
    AnswerChallenge,
    /// Leave a sealed answer in a mailbox with its stamp (version 4). Write-once, as
    /// [`Request::PutAnswer`].
    StampedPutAnswer {
        /// The mailbox.
        mailbox: MailboxAddr,
        /// The sealed answer.
        answer: SealedAnswer,
        /// The epoch whose seed the stamp was made with.
        epoch: u64,
        /// The stamp for this answer in this mailbox.
        stamp: Stamp,
    },
}

/// A response from server to client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // an Answer carries 256 inline bytes on purpose
pub enum Response {
    /// The version the server chose.
    Hello {
        /// Chosen version.
        version: u16,
    },
    /// Server parameters.
    Info(ServerInfo),
    /// The link is durably stored in this bucket.
    Stored {
        /// The bucket the link went into.
        id: BucketId,
    },
    /// A bucket's links, always padded with random filler to a full bucket so that the answer's
    /// size does not tell how full the bucket is.
    Bucket {
        /// Exactly [`super::MAX_LINKS_PER_BUCKET`] links.
        links: Vec<SealedLink>,
    },
    /// The link was deleted.
    Deleted,
    /// The request failed.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// Human-readable detail (at most [`MAX_ERROR_MESSAGE`] bytes).
        message: String,
    },
    /// The answer is durably stored in its mailbox.
    AnswerStored,
    /// A mailbox's content: its answer, or — when there is none (yet, or any more) — filler of
    /// the same size that the server derives from its secret and the mailbox, so that the
    /// answer's size and repeated fetches do not tell whether an answer is there.
    Answer {
        /// The answer or the filler.
        answer: SealedAnswer,
    },
    /// The bucket a store goes into now (version 3).
    Challenge(Challenge),
    /// A bucket's entries with their stamps, padded to a full bucket like [`Response::Bucket`]
    /// (version 3): entries without a valid stamp (filler, links stored without one) carry
    /// filler bytes in its place.
    StampedBucket {
        /// The bucket's seed.
        seed: StampSeed,
        /// Exactly [`super::MAX_LINKS_PER_BUCKET`] entries.
        entries: Vec<StampedEntry>,
    },
    /// The answer seed of the current epoch and the effort asked (version 4).
    AnswerChallenge(AnswerChallenge),
}

/// One entry of a [`Response::StampedBucket`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StampedEntry {
    /// The sealed link (or filler).
    pub link: SealedLink,
    /// Its stamp (or filler).
    pub stamp: Stamp,
}

impl Request {
    /// The request's name, for logs (never its contents).
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "Hello",
            Request::Info => "Info",
            Request::Store { .. } => "Store",
            Request::Fetch { .. } => "Fetch",
            Request::Delete { .. } => "Delete",
            Request::PutAnswer { .. } => "PutAnswer",
            Request::FetchAnswer { .. } => "FetchAnswer",
            Request::Challenge => "Challenge",
            Request::StampedStore { .. } => "StampedStore",
            Request::AnswerChallenge => "AnswerChallenge",
            Request::StampedPutAnswer { .. } => "StampedPutAnswer",
        }
    }
}

impl Response {
    /// The response's name, for logs and errors (never its contents).
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Hello { .. } => "Hello",
            Response::Info(_) => "Info",
            Response::Stored { .. } => "Stored",
            Response::Bucket { .. } => "Bucket",
            Response::Deleted => "Deleted",
            Response::Error { .. } => "Error",
            Response::AnswerStored => "AnswerStored",
            Response::Answer { .. } => "Answer",
            Response::Challenge(_) => "Challenge",
            Response::StampedBucket { .. } => "StampedBucket",
            Response::AnswerChallenge(_) => "AnswerChallenge",
        }
    }
}

/// The server's advertised parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Protocol version in use.
    pub version: u16,
    /// Links per bucket.
    pub max_links_per_bucket: u16,
    /// How long a bucket stays open for new links, seconds.
    pub open_window_secs: u64,
    /// How long a bucket is kept, seconds from its creation.
    pub ttl_secs: u64,
    /// The server's clock, unix seconds.
    pub server_time: u64,
    /// The largest frame body the server accepts.
    pub max_frame: u32,
}

/// Declares [`ErrorCode`] and both directions of its wire mapping from one list, so the two can
/// never disagree.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $n:literal, transient: $t:literal;)*) => {
        /// Error codes. Encoded as a `u16`; codes this version does not know decode as
        /// [`ErrorCode::Unknown`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $name,)*
            /// A code this version does not know.
            Unknown(u16),
        }

        impl ErrorCode {
            /// The code's number on the wire.
            pub fn to_u16(self) -> u16 {
                match self {
                    $(ErrorCode::$name => $n,)*
                    ErrorCode::Unknown(n) => n,
                }
            }
            /// The code for a number from the wire.
            pub fn from_u16(n: u16) -> Self {
                match n {
                    $($n => ErrorCode::$name,)*
                    n => ErrorCode::Unknown(n),
                }
            }
            /// Whether retrying later may succeed.
            pub fn is_transient(self) -> bool {
                match self {
                    $(ErrorCode::$name => $t,)*
                    ErrorCode::Unknown(_) => false,
                }
            }
        }
    };
}

error_codes! {
    /// No common protocol version.
    UnsupportedVersion = 1, transient: false;
    /// The frame did not decode.
    Malformed = 2, transient: false;
    /// The frame exceeds the maximum size.
    FrameTooLarge = 3, transient: false;
    /// A request came before the version exchange.
    HelloRequired = 4, transient: false;
    /// No such bucket (never stored, expired, or collected), or nothing to delete.
    NotFound = 5, transient: false;
    /// Too many requests on this connection.
    RateLimited = 6, transient: true;
    /// Too many connections.
    Busy = 7, transient: true;
    /// The server's storage quota is full.
    QuotaExceeded = 8, transient: false;
    /// Storage failed (e.g. disk full); the request was not done.
    StorageFailure = 9, transient: true;
    /// The connection was idle too long.
    TimedOut = 10, transient: true;
    /// The server is shutting down.
    ShuttingDown = 11, transient: true;
    /// Internal error.
    Internal = 12, transient: false;
    /// The server admits no more stores this second (every bucket ID clients accept is used);
    /// the store was not executed. Retry after a short pause.
    Overloaded = 13, transient: true;
    /// The mailbox holds an answer already; the first answer stays (version 2).
    AlreadyAnswered = 14, transient: false;
    /// The bucket a stamped store names takes no more links (full, or its window has passed):
    /// ask for a new challenge (version 3).
    BucketClosed = 15, transient: true;
    /// The stamp does not verify for this link in this bucket, claims less than the effort
    /// asked, or the link is in the bucket already (version 3).
    BadStamp = 16, transient: false;
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_u16().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u16::deserialize(d).map(ErrorCode::from_u16)
    }
}

/// Framing and decoding errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix exceeds the maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Announced length.
        len: u32,
        /// Maximum.
        max: u32,
    },
    /// The body did not decode as the expected message, or had trailing bytes.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// Fewer bytes than the header announces (over a stream: the peer stopped in the middle of
    /// a frame, which a server answers by closing, or by `TimedOut` if the stream stays open).
    #[error("truncated frame: the header announces {announced} bytes, {present} present")]
    Truncated {
        /// Bytes the header announces.
        announced: usize,
        /// Bytes there are.
        present: usize,
    },
    /// The message is larger than the peer's maximum.
    #[error("message encodes to {len} bytes, more than the maximum frame of {max}")]
    EncodeTooLarge {
        /// Encoded size.
        len: usize,
        /// Maximum.
        max: u32,
    },
}

/// Parse a frame header, checking the announced length against `max` before anything else.
pub fn parse_header(header: [u8; FRAME_HEADER_LEN], max: u32) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len as usize)
}

/// What a postcard decoding error means for an rdv message, in words a user can act on (the
/// decoder's own texts, such as "Serde Deserialization Error", say nothing to them).
fn decode_error(e: postcard::Error) -> FrameError {
    use postcard::Error as P;
    FrameError::Malformed(
        match e {
            P::DeserializeUnexpectedEnd => "the message ends before all its fields",
            P::DeserializeBadVarint => "a number is not a valid varint for its type",
            P::DeserializeBadBool | P::DeserializeBadOption => "a field has an impossible value",
            P::DeserializeBadChar | P::DeserializeBadUtf8 => "a text field is not valid UTF-8",
            P::DeserializeBadEnum | P::SerdeDeCustom => {
                "unknown message type or error code layout, or a field of the wrong length"
            }
            _ => "the message does not decode",
        }
        .to_string(),
    )
}

/// Encode a message as a complete frame (header and body).
pub fn encode_frame<T: Serialize>(msg: &T, max: u32) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; FRAME_HEADER_LEN];
    let mut out = postcard::to_extend(msg, std::mem::take(&mut out))
        .map_err(|_| FrameError::Malformed("the message does not encode".into()))?;
    let body = out.len() - FRAME_HEADER_LEN;
    if body > max as usize {
        return Err(FrameError::EncodeTooLarge { len: body, max });
    }
    out[..FRAME_HEADER_LEN].copy_from_slice(&(body as u32).to_be_bytes());
    Ok(out)
}

/// Decode a frame body. Trailing bytes are an error: one frame carries exactly one message.
pub fn decode_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, FrameError> {
    let (msg, rest) = postcard::take_from_bytes(body).map_err(decode_error)?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} bytes after the end of the message",
            rest.len()
        )));
    }
    Ok(msg)
}

/// Decode a complete frame (header and body) from a buffer that holds exactly one frame.
pub fn decode_frame<'a, T: Deserialize<'a>>(frame: &'a [u8], max: u32) -> Result<T, FrameError> {
    let header: [u8; FRAME_HEADER_LEN] = frame
        .get(..FRAME_HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(FrameError::Truncated {
            announced: FRAME_HEADER_LEN,
            present: frame.len(),
        })?;
    let len = parse_header(header, max)?;
    let body = &frame[FRAME_HEADER_LEN..];
    if body.len() < len {
        return Err(FrameError::Truncated {
            announced: len,
            present: body.len(),
        });
    }
    if body.len() > len {
        return Err(FrameError::Malformed(format!(
            "{} bytes after the frame the header announces",
            body.len() - len
        )));
    }
    decode_body(body)
}

/// Negotiate a version from a client's range: the newest both speak; `None` if there is no
/// overlap (or the range is empty).
pub fn negotiate(min_version: u16, max_version: u16) -> Option<u16> {
    let v = max_version.min(PROTOCOL_VERSION);
    (v >= min_version.max(MIN_PROTOCOL_VERSION)).then_some(v)
}

/// Whether `c` changes the order in which text around it is displayed (a Unicode bidirectional
/// control: embeddings, overrides, isolates, marks). Text from elsewhere shown with one in it
/// can read differently from what it is ("Trojan Source").
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether `c` is shown as nothing (or as a line break) though it is there: the line and
/// paragraph separators, the soft hyphen, zero-width spaces and word joiners, the byte-order
/// mark, invisible operators, Hangul fillers, interlinear annotation marks and the tag
/// characters. Text from elsewhere with one in it can look like other text ("pay" and "pa\u{ad}y"
/// print alike) or hide a message in plain sight. The joiners U+200C and U+200D are not among
/// them: scripts and emoji need them, and they hide nothing on their own.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'
            | '\u{034f}'
            | '\u{115f}'
            | '\u{1160}'
            | '\u{17b4}'
            | '\u{17b5}'
            | '\u{180b}'..='\u{180f}'
            | '\u{200b}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{2060}'..='\u{2064}'
            | '\u{206a}'..='\u{206f}'
            | '\u{3164}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{feff}'
            | '\u{ffa0}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0000}'..='\u{e0fff}'
    )
}

/// Whether `c` must not reach a terminal as it is from a peer or a server: a control character,
/// a bidirectional control, or an invisible character ([`is_invisible`]).
pub fn is_unsafe_to_show(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || is_invisible(c)
}

/// Make a server error message safe to send and to print: at most [`MAX_ERROR_MESSAGE`] bytes,
/// control characters, bidirectional controls and invisible characters replaced. Clients apply
/// it to what a server sends too.
pub fn sanitize_message(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = if is_unsafe_to_show(c) { '?' } else { c };
        if out.len() + c.len_utf8() > MAX_ERROR_MESSAGE {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_loses_controls_and_bidirectional_overrides() {
        assert_eq!(
            sanitize_message("ok\u{1b}[2J \u{202e}gpj.exe\u{2066}x\u{200d}"),
            "ok?[2J ?gpj.exe?x\u{200d}"
        );
    }

    #[test]
    fn a_message_loses_invisible_characters() {
        // A soft hyphen, a zero-width space, a byte-order mark, a line separator and a tag
        // character: each would print as nothing (or a line break) and make the text read as
        // something it is not.
        assert_eq!(
            sanitize_message("r\u{ad}dv z\u{200b}ero \u{feff}bom\u{2028}ls\u{e0041}tag"),
            "r?dv z?ero ?bom?ls?tag"
        );
        // Joiners stay: emoji sequences and some scripts need them.
        assert_eq!(sanitize_message("👩\u{200d}🔬"), "👩\u{200d}🔬");
    }

    #[test]
    fn oversize_header_is_refused_before_decoding() {
        assert_eq!(
            parse_header(u32::MAX.to_be_bytes(), DEFAULT_MAX_FRAME),
            Err(FrameError::TooLarge {
                len: u32::MAX,
                max: DEFAULT_MAX_FRAME
            })
        );
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut f = encode_frame(&Request::Info, DEFAULT_MAX_FRAME).unwrap();
        f.push(0);
        let n = (f.len() - 4) as u32;
        f[..4].copy_from_slice(&n.to_be_bytes());
        assert!(matches!(
            decode_frame::<Request>(&f, DEFAULT_MAX_FRAME),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn full_bucket_fits_default_frame() {
        let r = Response::Bucket {
            links: vec![SealedLink([0xff; 256]); 64],
        };
        assert!(encode_frame(&r, DEFAULT_MAX_FRAME).is_ok());
        let entry = StampedEntry {
            link: SealedLink([0xff; 256]),
            stamp: Stamp([0xff; super::super::stamp::STAMP_LEN]),
        };
        let r = Response::StampedBucket {
            seed: StampSeed([0xff; 32]),
            entries: vec![entry; 64],
        };
        assert!(encode_frame(&r, DEFAULT_MAX_FRAME).is_ok());
    }

    #[test]
    fn unknown_error_codes_survive() {
        let r = Response::Error {
            code: ErrorCode::Unknown(999),
            message: String::new(),
        };
        let f = encode_frame(&r, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(decode_frame::<Response>(&f, DEFAULT_MAX_FRAME).unwrap(), r);
        for n in 0..20 {
            assert_eq!(ErrorCode::from_u16(n).to_u16(), n);
        }
    }

    #[test]
    fn a_varint_too_big_for_its_type_is_malformed() {
        // Hello { min_version: 65536 (does not fit a u16, in 3 bytes), max_version: 1 }
        assert!(matches!(
            decode_body::<Request>(&[0x00, 0x80, 0x80, 0x04, 0x01]),
            Err(FrameError::Malformed(_))
        ));
        // The same field zero-padded to 3 bytes (value 1) is accepted by this decoder.
        assert_eq!(
            decode_body::<Request>(&[0x00, 0x81, 0x80, 0x00, 0x01]),
            Ok(Request::Hello {
                min_version: 1,
                max_version: 1
            })
        );
        // Four bytes for a u16 are refused even when the value fits.
        assert!(decode_body::<Request>(&[0x00, 0x81, 0x80, 0x80, 0x00, 0x01]).is_err());
    }

    #[test]
    fn negotiation_picks_the_newest_common_version() {
        assert_eq!(negotiate(1, 1), Some(1));
        assert_eq!(negotiate(1, 2), Some(2));
        assert_eq!(negotiate(1, 9), Some(4));
        assert_eq!(negotiate(2, 2), Some(2));
        assert_eq!(negotiate(3, 3), Some(3));
        assert_eq!(negotiate(4, 4), Some(4));
        assert_eq!(negotiate(0, 0), None);
        assert_eq!(negotiate(5, 9), None);
        assert_eq!(negotiate(2, 1), None);
    }

    #[test]
    fn messages_are_sanitized() {
        assert_eq!(sanitize_message("a\x1b[31mb"), "a?[31mb");
        assert!(sanitize_message(&"é".repeat(500)).len() <= MAX_ERROR_MESSAGE);
    }
}
