//! The client library: offer (store a sealed link), accept (fetch and trial-decrypt), delete.
//!
//! Every operation opens its own connection through a [`Connector`]: over Tor each gets its own
//! isolated circuit, so the server cannot tie a client's store, fetch and delete together.

pub mod direct;
#[cfg(feature = "tor")]
pub mod tor;

use crate::clock::Clock;
use crate::io::{read_msg, write_msg, FrameIoError};
use crate::proto::kdf::{self, KdfError, KdfLimits};
use crate::proto::seal::{self, SealError};
use crate::proto::wire::{sanitize_message, DEFAULT_MAX_FRAME};
use crate::proto::{
    BucketId, ClientPolicy, DeleteToken, ErrorCode, KdfProfile, LinkKey, Passphrase,
    PolicyViolation, RdvLink, Request, Response, Salt, ServerAddr, ServerInfo,
    MAX_LINKS_PER_BUCKET, PROTOCOL_VERSION,
};
use futures::future::BoxFuture;
use rand::RngCore;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to a server.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Opens streams to servers. Each call must give a fresh, unlinkable connection.
pub trait Connector: Send + Sync {
    /// Connect to `addr`.
    fn connect<'a>(
        &'a self,
        addr: &'a ServerAddr,
    ) -> BoxFuture<'a, Result<Box<dyn Stream>, ClientError>>;
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The anti-fingerprinting policy.
    pub policy: ClientPolicy,
    /// Bounds on KDF work a link may ask for.
    pub kdf_limits: KdfLimits,
    /// Timeout for establishing a connection (includes Tor descriptor lookup and circuit).
    pub connect_timeout: Duration,
    /// Timeout for each request on an open connection.
    pub request_timeout: Duration,
    /// Largest response frame accepted.
    pub max_frame: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            policy: ClientPolicy::default(),
            kdf_limits: KdfLimits::default(),
            connect_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(60),
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

/// Client errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Could not connect.
    #[error("cannot connect to {addr}: {detail}")]
    Connect {
        /// The server.
        addr: String,
        /// Why.
        detail: String,
    },
    /// An operation took too long.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The connection failed mid-way.
    #[error("connection to the server failed: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent something that is not a valid answer.
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    /// The server answered with an error.
    #[error("the server refused: {message} ({code:?})")]
    Server {
        /// Error code.
        code: ErrorCode,
        /// The server's message, sanitized.
        message: String,
    },
    /// The bucket ID failed the anti-fingerprinting policy.
    #[error("refused the server's bucket: {violation}; {}", if *.deleted { "the link was deleted from the server" } else { "the link could NOT be deleted from the server" })]
    Refused {
        /// What was wrong.
        violation: PolicyViolation,
        /// Whether the link was deleted again.
        deleted: bool,
    },
    /// The server's advertised parameters fail the policy; nothing was stored.
    #[error("refused the server: {0}; nothing was stored")]
    UnacceptableServer(PolicyViolation),
    /// Key derivation failed or the link asks for too much work.
    #[error(transparent)]
    Kdf(#[from] KdfError),
    /// The payload cannot be sealed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Trial decryption found nothing.
    #[error("no link in this bucket opens with this passphrase (wrong passphrase, or the link was deleted)")]
    NoMatch {
        /// How many links were tried.
        tried: usize,
    },
    /// The bucket does not exist (any more).
    #[error("the bucket is not on the server: it never existed, expired, or the link is wrong")]
    NotFound,
    /// A link without passphrase and none given.
    #[error("this link carries no passphrase: give it with --passphrase (two-channel mode)")]
    PassphraseRequired,
    /// The transport could not be set up (e.g. Tor bootstrap).
    #[error("transport: {0}")]
    Transport(String),
}

impl ClientError {
    fn from_frame(e: FrameIoError) -> Self {
        match e {
            FrameIoError::Closed => {
                ClientError::Protocol("the server closed the connection without answering".into())
            }
            FrameIoError::Io(e) => ClientError::Io(e),
            FrameIoError::Frame(e) => ClientError::Protocol(e.to_string()),
        }
    }
}

/// A link stored on a server. Its `Debug` output is redacted.
pub struct Offer {
    /// The link, with the passphrase inside (use [`RdvLink::without_passphrase`] for two channels).
    pub link: RdvLink,
    /// The bucket the link went into.
    pub bucket: BucketId,
    /// The token that deletes the link.
    pub delete_token: DeleteToken,
    /// The server's advertised parameters.
    pub server_info: ServerInfo,
}

impl std::fmt::Debug for Offer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offer")
            .field("link", &self.link)
            .field("bucket", &"[redacted]")
            .field("server_info", &self.server_info)
            .finish_non_exhaustive()
    }
}

/// What an accept found. Its `Debug` output leaves the payload out.
pub struct Accepted {
    /// The payload.
    pub payload: seal::Payload,
    /// How many links the bucket answer held (always a full bucket from an honest server).
    pub tried: usize,
    /// Index of the link that opened.
    pub index: usize,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field(
                "payload",
                &format_args!("[{} bytes redacted]", self.payload.len()),
            )
            .field("tried", &self.tried)
            .field("index", &self.index)
            .finish()
    }
}

/// One open connection after the version exchange.
pub struct Connection {
    stream: Box<dyn Stream>,
    max_frame: u32,
    timeout: Duration,
}

impl Connection {
    /// Send a request and read the answer; server errors become [`ClientError::Server`].
    pub async fn request(&mut self, req: &Request) -> Result<Response, ClientError> {
        let fut = async {
            write_msg(&mut self.stream, req, self.max_frame)
                .await
                .map_err(ClientError::from_frame)?;
            read_msg::<Response, _>(&mut self.stream, self.max_frame)
                .await
                .map_err(ClientError::from_frame)
        };
        let resp = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| ClientError::Timeout("waiting for the server's answer"))??;
        match resp {
            Response::Error { code, message } => Err(ClientError::Server {
                code,
                message: sanitize_message(&message),
            }),
            r => Ok(r),
        }
    }
}

fn unexpected(what: &str, r: &Response) -> ClientError {
    ClientError::Protocol(format!("expected {what}, got {}", r.kind()))
}

/// The rdv client.
pub struct Client {
    connector: Arc<dyn Connector>,
    config: ClientConfig,
    clock: Arc<dyn Clock>,
}

impl Client {
    /// A client that connects through `connector`.
    pub fn new(connector: Arc<dyn Connector>, config: ClientConfig, clock: Arc<dyn Clock>) -> Self {
        Client {
            connector,
            config,
            clock,
        }
    }

    /// Open a connection and exchange versions.
    pub async fn connect(&self, addr: &ServerAddr) -> Result<Connection, ClientError> {
        let stream =
            tokio::time::timeout(self.config.connect_timeout, self.connector.connect(addr))
                .await
                .map_err(|_| ClientError::Timeout("connecting to the server"))??;
        let mut c = Connection {
            stream,
            max_frame: self.config.max_frame,
            timeout: self.config.request_timeout,
        };
        match c
            .request(&Request::Hello {
                min_version: PROTOCOL_VERSION,
                max_version: PROTOCOL_VERSION,
            })
            .await?
        {
            Response::Hello { version } if version == PROTOCOL_VERSION => Ok(c),
            Response::Hello { version } => Err(ClientError::Protocol(format!(
                "server chose unsupported version {version}"
            ))),
            r => Err(unexpected("Hello", &r)),
        }
    }

    /// Ask a server for its parameters.
    pub async fn info(&self, addr: &ServerAddr) -> Result<ServerInfo, ClientError> {
        let mut c = self.connect(addr).await?;
        Self::info_on(&mut c).await
    }

    async fn info_on(c: &mut Connection) -> Result<ServerInfo, ClientError> {
        match c.request(&Request::Info).await? {
            Response::Info(i) => Ok(i),
            r => Err(unexpected("Info", &r)),
        }
    }

    /// Derive a key on a blocking thread.
    pub async fn derive_key(
        &self,
        passphrase: &Passphrase,
        salt: &Salt,
        kdf: KdfProfile,
    ) -> Result<LinkKey, ClientError> {
        let (p, s, limits) = (passphrase.clone(), salt.clone(), self.config.kdf_limits);
        tokio::task::spawn_blocking(move || kdf::derive_key(&p, &s, kdf, &limits))
            .await
            .map_err(|e| ClientError::Transport(format!("key derivation task failed: {e}")))?
            .map_err(ClientError::from)
    }

    /// Seal `payload` under `passphrase`, store it on `server`, and check the bucket ID the server
    /// returns against the policy. A refused ID gets the link deleted again.
    pub async fn offer(
        &self,
        server: &ServerAddr,
        payload: &[u8],
        passphrase: Passphrase,
        kdf: KdfProfile,
    ) -> Result<Offer, ClientError> {
        if payload.len() > seal::MAX_PAYLOAD {
            return Err(SealError::PayloadTooLong { len: payload.len() }.into());
        }
        let mut rng = rand::rngs::OsRng;
        let mut salt = Salt([0; 16]);
        rng.fill_bytes(&mut salt.0);
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        let mut token = DeleteToken([0; 32]);
        rng.fill_bytes(&mut token.0);
        // The slow KDF runs before connecting, so the connection never sits idle.
        let key = self.derive_key(&passphrase, &salt, kdf).await?;
        let sealed = seal::seal(&key, payload, nonce)?;

        let mut c = self.connect(server).await?;
        let info = Self::info_on(&mut c).await?;
        self.config
            .policy
            .check_window(info.open_window_secs)
            .map_err(ClientError::UnacceptableServer)?;
        let id = match c
            .request(&Request::Store {
                link: sealed,
                delete_check: token.check(),
            })
            .await?
        {
            Response::Stored { id } => id,
            r => return Err(unexpected("Stored", &r)),
        };
        tracing::debug!("sealed link stored; checking the bucket ID against the policy");
        if let Err(violation) =
            self.config
                .policy
                .check(id, self.clock.now(), info.open_window_secs)
        {
            tracing::warn!("the bucket ID fails the anti-fingerprinting policy; deleting the link");
            let deleted = matches!(
                c.request(&Request::Delete {
                    locator: id.locator(),
                    token: token.clone()
                })
                .await,
                Ok(Response::Deleted)
            );
            return Err(ClientError::Refused { violation, deleted });
        }
        let link = RdvLink {
            server: server.clone(),
            locator: id.locator(),
            salt,
            kdf,
            passphrase: Some(passphrase),
        };
        Ok(Offer {
            link,
            bucket: id,
            delete_token: token,
            server_info: info,
        })
    }

    /// Fetch the link's bucket and trial-decrypt it. `passphrase` is used when the link carries
    /// none (two-channel mode); a passphrase in the link wins.
    pub async fn accept(
        &self,
        link: &RdvLink,
        passphrase: Option<Passphrase>,
    ) -> Result<Accepted, ClientError> {
        let passphrase = link
            .passphrase
            .clone()
            .or(passphrase)
            .ok_or(ClientError::PassphraseRequired)?;
        // Runs before any network traffic; a link asking for excessive work fails here.
        let key = self.derive_key(&passphrase, &link.salt, link.kdf).await?;
        let links = self.fetch(link).await?;
        let tried = links.len();
        tracing::debug!(entries = tried, "bucket fetched; trial decryption");
        match seal::trial_open(&key, &links) {
            Some((index, payload)) => Ok(Accepted {
                payload,
                tried,
                index,
            }),
            None => Err(ClientError::NoMatch { tried }),
        }
    }

    async fn fetch(&self, link: &RdvLink) -> Result<Vec<crate::proto::SealedLink>, ClientError> {
        let mut c = self.connect(&link.server).await?;
        match c
            .request(&Request::Fetch {
                locator: link.locator,
            })
            .await
        {
            Ok(Response::Bucket { links }) => {
                if links.len() > MAX_LINKS_PER_BUCKET {
                    return Err(ClientError::Protocol(format!(
                        "bucket with {} links, more than {MAX_LINKS_PER_BUCKET}",
                        links.len()
                    )));
                }
                Ok(links)
            }
            Ok(r) => Err(unexpected("Bucket", &r)),
            Err(ClientError::Server {
                code: ErrorCode::NotFound,
                ..
            }) => Err(ClientError::NotFound),
            Err(e) => Err(e),
        }
    }

    /// Delete the link stored with `token` from the link's bucket.
    pub async fn delete(&self, link: &RdvLink, token: &DeleteToken) -> Result<(), ClientError> {
        let mut c = self.connect(&link.server).await?;
        match c
            .request(&Request::Delete {
                locator: link.locator,
                token: token.clone(),
            })
            .await
        {
            Ok(Response::Deleted) => Ok(()),
            Ok(r) => Err(unexpected("Deleted", &r)),
            Err(ClientError::Server {
                code: ErrorCode::NotFound,
                ..
            }) => Err(ClientError::NotFound),
            Err(e) => Err(e),
        }
    }
}

/// Generate a strong passphrase (five pronounceable words, 80 bits).
pub fn generate_passphrase() -> Passphrase {
    let mut r = [0u8; crate::proto::words::RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut r);
    let p = crate::proto::words::passphrase(r);
    zeroize::Zeroize::zeroize(&mut r);
    p
}
