//! The `rdv1:` link: what the initiator hands to the accepter.
//!
//! ```text
//! rdv1:HOST:PORT?l=LOCATOR&s=SALT&k=KDF[&m=LOCATOR@HOST:PORT]...[&p=PASSPHRASE]
//! ```
//!
//! - `HOST` is a v3 `.onion` address, a DNS name, an IPv4 address or a bracketed IPv6 address,
//!   lower case; `PORT` is decimal.
//! - `l` is the bucket locator (32 bytes) and `s` the salt (16 bytes), both unpadded base64url.
//! - `k` is the KDF profile (`default`, `moderate`, `test` or `argon2id:m=KIB,t=T,p=P`).
//! - `m`, up to [`MAX_MIRRORS`] times, names a further server holding its own sealed copy of
//!   the payload, in the bucket with that locator (a multi-server link); every server in a link
//!   is different.
//! - `p`, present only in one-channel mode, is the passphrase, percent-encoded (every byte outside
//!   `A-Z a-z 0-9 - . _ ~` as `%XX`).
//!
//! Fields appear in exactly this order, each once. The parser is strict and names what is wrong.

use super::bucket::Locator;
use super::kdf::{KdfProfile, Passphrase, Salt, SALT_LEN};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::fmt;
use zeroize::Zeroizing;

/// The scheme prefix.
pub const SCHEME: &str = "rdv1:";
/// The longest link the parser looks at.
pub const MAX_LINK_LEN: usize = 2048;

/// A server address as written in a link.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    /// Host: onion address, DNS name, IPv4, or IPv6 (without brackets).
    pub host: String,
    /// TCP port (or onion virtual port).
    pub port: u16,
}

impl ServerAddr {
    /// Parse `HOST:PORT` (IPv6 in brackets).
    pub fn parse(s: &str) -> Result<Self, LinkError> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, p) = rest.split_once("]:").ok_or(LinkError::BadAddress(
                "missing ]:PORT after an IPv6 address",
            ))?;
            match h.parse::<std::net::Ipv6Addr>() {
                Err(_) => return Err(LinkError::BadAddress("not a valid IPv6 address inside [ ]")),
                Ok(a) if a.to_ipv4_mapped().is_some() => {
                    return Err(LinkError::BadAddress(
                        "an IPv4-mapped IPv6 address: write the IPv4 address instead",
                    ))
                }
                Ok(a) if a.to_string() != h => {
                    return Err(LinkError::BadAddress(
                        "IPv6 address must be in canonical form (RFC 5952: lower case, shortest)",
                    ))
                }
                Ok(_) => {}
            }
            (h.to_string(), p)
        } else {
            let (h, p) = s
                .rsplit_once(':')
                .ok_or(LinkError::BadAddress("missing :PORT"))?;
            validate_host(h)?;
            (h.to_string(), p)
        };
        if port.len() > 1 && port.starts_with('0') {
            return Err(LinkError::BadAddress("port must not have leading zeros"));
        }
        if p_is_bad(port) {
            return Err(LinkError::BadAddress(
                "port must be a decimal number from 1 to 65535",
            ));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| LinkError::BadAddress("port must be a decimal number from 1 to 65535"))?;
        if port == 0 {
            return Err(LinkError::BadAddress(
                "port must be a decimal number from 1 to 65535",
            ));
        }
        Ok(ServerAddr { host, port })
    }

    /// Whether the host is an onion service.
    pub fn is_onion(&self) -> bool {
        self.host.ends_with(".onion")
    }
}

fn p_is_bad(p: &str) -> bool {
    p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())
}

fn validate_host(h: &str) -> Result<(), LinkError> {
    if h.is_empty() {
        return Err(LinkError::BadAddress("empty host"));
    }
    if h.len() > 253 {
        return Err(LinkError::BadAddress(
            "host name longer than 253 characters",
        ));
    }
    if let Some(name) = h.strip_suffix(".onion") {
        // Exactly one v3 label: no subdomains, nothing that would need brackets on output.
        if name.len() != 56 || !name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')) {
            return Err(LinkError::BadAddress(
                "an onion address must be 56 base32 characters (a-z, 2-7) before .onion",
            ));
        }
        return check_onion(name);
    }
    for label in h.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(LinkError::BadAddress(
                "host must be lower-case letters, digits, '-' and '.'",
            ));
        }
    }
    Ok(())
}

/// The length of a v3 onion address's decoded name: key, checksum, version.
const ONION_NAME_LEN: usize = 35;

/// Version and checksum of a v3 onion address (`name` is its 56 base32 characters), so that a
/// mistyped address fails at once instead of after a search of the Tor network.
fn check_onion(name: &str) -> Result<(), LinkError> {
    let bytes = data_encoding::BASE32_NOPAD
        .decode(name.to_ascii_uppercase().as_bytes())
        .map_err(|_| {
            LinkError::BadAddress(
                "an onion address must be 56 base32 characters (a-z, 2-7) before .onion",
            )
        })?;
    let Ok(bytes) = <[u8; ONION_NAME_LEN]>::try_from(bytes) else {
        return Err(LinkError::BadAddress(
            "an onion address must be 56 base32 characters (a-z, 2-7) before .onion",
        ));
    };
    if bytes[34] != 3 {
        return Err(LinkError::BadAddress(
            "not a version 3 onion address (those end in 'd' before .onion)",
        ));
    }
    let key: [u8; 32] = bytes[..32].try_into().expect("32 of 35 bytes");
    if onion_checksum(&key) != bytes[32..34] {
        return Err(LinkError::BadAddress(
            "the onion address's checksum does not match: a character is mistyped",
        ));
    }
    Ok(())
}

/// The first two bytes of SHA3-256(".onion checksum" || key || 3).
fn onion_checksum(key: &[u8; 32]) -> [u8; 2] {
    use sha3::{Digest, Sha3_256};
    let mut h = Sha3_256::new();
    h.update(b".onion checksum");
    h.update(key);
    h.update([3u8]);
    let d = h.finalize();
    [d[0], d[1]]
}

/// The v3 onion host name (with `.onion`) of the service whose identity key is `key`.
pub fn onion_host(key: &[u8; 32]) -> String {
    let mut bytes = [0u8; ONION_NAME_LEN];
    bytes[..32].copy_from_slice(key);
    bytes[32..34].copy_from_slice(&onion_checksum(key));
    bytes[34] = 3;
    format!(
        "{}.onion",
        data_encoding::BASE32_NOPAD
            .encode(&bytes)
            .to_ascii_lowercase()
    )
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The most further servers (`m` fields) a link names: five servers in all.
pub const MAX_MIRRORS: usize = 4;

const FIRST_COPY_LABEL: &[u8] = b"rdv first copy v1";

/// The place (0 for the link's own server, 1 to 4 for its mirrors) of the copy every accepter
/// of a multi-server link of `copies` copies and link key `key` fetches (and answers) first:
/// `SHA3-256("rdv first copy v1" || K)`, its first 8 bytes as a big-endian integer, modulo
/// `copies`. The same for every holder of the key, so that whoever answers second meets the
/// first answer in the same mailbox and is told (`AlreadyAnswered`); drawn uniformly over the
/// links by the key, so servers see nothing but an ordinary fetch. `copies` 0 or 1: 0.
pub fn first_copy(key: &super::kdf::LinkKey, copies: usize) -> usize {
    use sha3::{Digest, Sha3_256};
    if copies <= 1 {
        return 0;
    }
    let h = Sha3_256::new()
        .chain_update(FIRST_COPY_LABEL)
        .chain_update(key.expose())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[..8]);
    // At most five copies: the remainder's bias is below 2^-61.
    (u64::from_be_bytes(first) % copies as u64) as usize
}

/// The order in which an accepter of a multi-server link tries its copies, starting at place
/// `from` (the fetch: [`first_copy`]; the answer: the copy fetched): `from`, `from + 1`, … modulo
/// `copies`. The same for every holder of the key, so that two accepters whose first copy
/// failed both go on to the same next copy (drawn at random, they went on to different ones and
/// answered both, unaware of each other); a server, which knows neither the key nor the
/// link's list of servers, learns nothing from it.
pub fn copy_order(from: usize, copies: usize) -> impl Iterator<Item = usize> {
    (0..copies).map(move |i| (from + i) % copies.max(1))
}

/// A further server of a multi-server link, with the locator of its copy's bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// The server.
    pub server: ServerAddr,
    /// The bucket of the copy on it.
    pub locator: Locator,
}

/// A parsed `rdv1:` link. Its `Debug` output is redacted; [`RdvLink::to_uri`] writes it out.
#[derive(Clone, PartialEq, Eq)]
pub struct RdvLink {
    /// The rendezvous server.
    pub server: ServerAddr,
    /// The bucket's locator.
    pub locator: Locator,
    /// Further servers, each with its own copy (empty for a single-server link).
    pub mirrors: Vec<Mirror>,
    /// The KDF salt.
    pub salt: Salt,
    /// The KDF profile.
    pub kdf: KdfProfile,
    /// The passphrase, in one-channel mode.
    pub passphrase: Option<Passphrase>,
}

impl fmt::Debug for RdvLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RdvLink")
            .field("server", &self.server)
            .field(
                "mirrors",
                &self.mirrors.iter().map(|m| &m.server).collect::<Vec<_>>(),
            )
            .field("kdf", &self.kdf)
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "[redacted]"),
            )
            .finish_non_exhaustive()
    }
}

/// What is wrong with a link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// Longer than [`MAX_LINK_LEN`].
    #[error("link is longer than {MAX_LINK_LEN} characters")]
    TooLong,
    /// Does not start with `rdv1:`.
    #[error("link must start with \"rdv1:\"")]
    BadScheme,
    /// Whitespace or control characters inside.
    #[error("link contains whitespace or control characters (was it split across lines?)")]
    BadCharacters,
    /// No `?` separating address and fields.
    #[error("link has no '?' after the server address")]
    MissingQuery,
    /// The server address is malformed.
    #[error("bad server address: {0}")]
    BadAddress(&'static str),
    /// A field is missing.
    #[error("link lacks the {0:?} field")]
    MissingField(&'static str),
    /// A field is unknown, duplicated, or out of order.
    #[error(
        "unexpected field {0:?} (expected l, s, k, then m up to 4 times, and optionally p, in that order)"
    )]
    UnexpectedField(String),
    /// The locator is not 32 bytes of canonical base64url.
    #[error("locator (l): {0}")]
    BadLocator(Base64Problem),
    /// The salt is not 16 bytes of canonical base64url.
    #[error("salt (s): {0}")]
    BadSalt(Base64Problem),
    /// The KDF profile is not valid.
    #[error("KDF profile (k): {0}")]
    BadKdf(super::kdf::KdfError),
    /// The passphrase encoding is wrong.
    #[error("passphrase (p): {0}")]
    BadPassphrase(&'static str),
    /// A further server (`m`) is malformed, repeated, or one too many.
    #[error("further server (m): {0}")]
    BadMirror(String),
}

impl From<super::kdf::KdfError> for LinkError {
    fn from(e: super::kdf::KdfError) -> Self {
        LinkError::BadKdf(e)
    }
}

/// What is wrong with a fixed-size base64url field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Base64Problem {
    /// The wrong number of characters.
    #[error("must be {want} characters of unpadded base64url, not {got}")]
    Length {
        /// Characters expected.
        want: usize,
        /// Characters found.
        got: usize,
    },
    /// A character outside `A-Z a-z 0-9 - _`.
    #[error("has a character outside base64url (A-Z a-z 0-9 - _)")]
    Alphabet,
    /// Decodes, but is not the one canonical spelling.
    #[error("is not canonical: the unused low bits of the last character must be zero")]
    NotCanonical,
}

impl LinkError {
    /// A stable name of the error's class, for test vectors and scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            LinkError::TooLong => "too-long",
            LinkError::BadScheme => "scheme",
            LinkError::BadCharacters => "characters",
            LinkError::MissingQuery => "query",
            LinkError::BadAddress(_) => "address",
            LinkError::MissingField(_) => "missing-field",
            LinkError::UnexpectedField(_) => "field",
            LinkError::BadLocator(_) => "locator",
            LinkError::BadSalt(_) => "salt",
            LinkError::BadKdf(_) => "kdf",
            LinkError::BadPassphrase(_) => "passphrase",
            LinkError::BadMirror(_) => "mirror",
        }
    }
}

impl RdvLink {
    /// Parse a link strictly.
    pub fn parse(s: &str) -> Result<Self, LinkError> {
        if s.len() > MAX_LINK_LEN {
            return Err(LinkError::TooLong);
        }
        let rest = s.strip_prefix(SCHEME).ok_or(LinkError::BadScheme)?;
        if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(LinkError::BadCharacters);
        }
        let (addr, query) = rest.split_once('?').ok_or(LinkError::MissingQuery)?;
        let server = ServerAddr::parse(addr)?;
        // Every item is NAME=VALUE; an item without '=' is an error of its own.
        if let Some(bare) = query.split('&').find(|kv| !kv.contains('=')) {
            return Err(LinkError::UnexpectedField(format!(
                "{} (without '=')",
                bare.chars().take(20).collect::<String>()
            )));
        }
        let mut fields = query.split('&').filter_map(|kv| kv.split_once('='));
        let mut next = |name: &'static str| -> Result<&str, LinkError> {
            match fields.next() {
                Some((k, v)) if k == name => Ok(v),
                Some((k, _)) => Err(LinkError::UnexpectedField(k.chars().take(20).collect())),
                None => Err(LinkError::MissingField(name)),
            }
        };
        let l = next("l")?;
        let locator = decode_fixed::<32>(l)
            .map(Locator)
            .map_err(LinkError::BadLocator)?;
        let s_field = next("s")?;
        let salt = decode_fixed::<SALT_LEN>(s_field)
            .map(Salt::from_bytes)
            .map_err(LinkError::BadSalt)?;
        let k = next("k")?;
        let kdf = KdfProfile::parse(k)?;
        if kdf.to_string() != k {
            return Err(LinkError::BadKdf(super::kdf::KdfError::BadParams));
        }
        let mut mirrors: Vec<Mirror> = Vec::new();
        let mut after = fields.next();
        while let Some(("m", v)) = after {
            if mirrors.len() == MAX_MIRRORS {
                return Err(LinkError::BadMirror(format!(
                    "at most {MAX_MIRRORS} further servers"
                )));
            }
            let (l, a) = v
                .split_once('@')
                .ok_or_else(|| LinkError::BadMirror("expected LOCATOR@HOST:PORT".into()))?;
            let locator = decode_fixed::<32>(l)
                .map(Locator)
                .map_err(|p| LinkError::BadMirror(format!("locator {p}")))?;
            let other = ServerAddr::parse(a).map_err(|e| LinkError::BadMirror(e.to_string()))?;
            if other == server || mirrors.iter().any(|m| m.server == other) {
                return Err(LinkError::BadMirror(format!(
                    "the server {other} is named twice"
                )));
            }
            mirrors.push(Mirror {
                server: other,
                locator,
            });
            after = fields.next();
        }
        let passphrase = match after {
            None => None,
            Some(("p", v)) => {
                let p = Passphrase::new(percent_decode(v)?);
                if *Zeroizing::new(percent_encode(p.expose())) != v {
                    return Err(LinkError::BadPassphrase(
                        "non-canonical %-escape (escape only what needs it, upper-case hex)",
                    ));
                }
                Some(p)
            }
            Some((k, _)) => return Err(LinkError::UnexpectedField(k.chars().take(20).collect())),
        };
        if let Some((k, _)) = fields.next() {
            return Err(LinkError::UnexpectedField(k.chars().take(20).collect()));
        }
        Ok(RdvLink {
            server,
            locator,
            mirrors,
            salt,
            kdf,
            passphrase,
        })
    }

    /// The link as one line. Contains the passphrase in one-channel mode: treat as a secret.
    pub fn to_uri(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(format!(
            "{SCHEME}{}?l={}&s={}&k={}",
            self.server,
            URL_SAFE_NO_PAD.encode(self.locator.0),
            URL_SAFE_NO_PAD.encode(self.salt.expose()),
            self.kdf
        ));
        for m in &self.mirrors {
            s.push_str(&format!(
                "&m={}@{}",
                URL_SAFE_NO_PAD.encode(m.locator.0),
                m.server
            ));
        }
        if let Some(p) = &self.passphrase {
            s.push_str("&p=");
            s.push_str(&Zeroizing::new(percent_encode(p.expose())));
        }
        s
    }

    /// Every server of the link with its copy's locator, the first server first.
    pub fn servers(&self) -> Vec<(ServerAddr, Locator)> {
        std::iter::once((self.server.clone(), self.locator))
            .chain(self.mirrors.iter().map(|m| (m.server.clone(), m.locator)))
            .collect()
    }

    /// Copy `index` of the link (in link order, the first server's first) as a link to that
    /// server alone, passphrase and all: what deleting that copy on its own needs, with the
    /// deletion token's [`for_server`](crate::proto::DeleteToken::for_server) of the same
    /// index. `None` past the last copy.
    pub fn copy(&self, index: usize) -> Option<RdvLink> {
        let (server, locator) = self.servers().into_iter().nth(index)?;
        Some(RdvLink {
            server,
            locator,
            mirrors: Vec::new(),
            ..self.clone()
        })
    }

    /// The same link without its passphrase (two-channel mode).
    pub fn without_passphrase(&self) -> RdvLink {
        RdvLink {
            passphrase: None,
            ..self.clone()
        }
    }
}

fn decode_fixed<const N: usize>(s: &str) -> Result<[u8; N], Base64Problem> {
    let want = (N * 4).div_ceil(3);
    if s.len() != want {
        return Err(Base64Problem::Length {
            want,
            got: s.chars().count(),
        });
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Base64Problem::Alphabet);
    }
    // A stray low bit in the last character decodes (or not) but is not the canonical spelling.
    let v = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| Base64Problem::NotCanonical)?,
    );
    if *Zeroizing::new(URL_SAFE_NO_PAD.encode(&*v)) != s {
        return Err(Base64Problem::NotCanonical);
    }
    v.as_slice()
        .try_into()
        .map_err(|_| Base64Problem::NotCanonical)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encode every byte outside the unreserved set.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if is_unreserved(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Result<String, LinkError> {
    if s.is_empty() {
        return Err(LinkError::BadPassphrase("empty"));
    }
    let b = s.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(b.len()));
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .ok_or(LinkError::BadPassphrase("truncated %-escape"))?;
            let hex =
                std::str::from_utf8(hex).map_err(|_| LinkError::BadPassphrase("bad %-escape"))?;
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(LinkError::BadPassphrase("bad %-escape"));
            }
            out.push(
                u8::from_str_radix(hex, 16)
                    .map_err(|_| LinkError::BadPassphrase("bad %-escape"))?,
            );
            i += 3;
        } else if is_unreserved(b[i]) {
            out.push(b[i]);
            i += 1;
        } else {
            return Err(LinkError::BadPassphrase(
                "characters outside A-Z a-z 0-9 - . _ ~ must be %-escaped",
            ));
        }
    }
    let text = std::str::from_utf8(&out)
        .map_err(|_| LinkError::BadPassphrase("not UTF-8 after decoding"))?;
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_order_goes_round_the_link_from_where_it_starts() {
        assert_eq!(copy_order(0, 3).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(copy_order(2, 3).collect::<Vec<_>>(), [2, 0, 1]);
        assert_eq!(copy_order(4, 5).collect::<Vec<_>>(), [4, 0, 1, 2, 3]);
        assert_eq!(copy_order(0, 1).collect::<Vec<_>>(), [0]);
        assert_eq!(copy_order(0, 0).count(), 0);
    }

    /// The first copy is the same for a key every time, in range, and spread evenly over the
    /// copies across keys (3000 keys over 3 copies: each within 1000 +- 150, some 6 standard
    /// deviations; the keys are fixed, so this cannot flake).
    #[test]
    fn the_first_copy_is_the_key_s_and_even_over_keys() {
        use crate::proto::kdf::LinkKey;
        let key = |i: u32| {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_be_bytes());
            LinkKey::from_bytes(b)
        };
        assert_eq!(first_copy(&key(7), 0), 0);
        assert_eq!(first_copy(&key(7), 1), 0);
        for n in 2..=5 {
            let mut seen = vec![0u32; n];
            for i in 0..3000 {
                let f = first_copy(&key(i), n);
                assert_eq!(f, first_copy(&key(i), n));
                seen[f] += 1;
            }
            let each = 3000 / n as u32;
            assert!(
                seen.iter().all(|&c| c.abs_diff(each) <= each * 15 / 100),
                "{n} copies: {seen:?}"
            );
        }
    }

    fn sample(pass: Option<&str>) -> RdvLink {
        RdvLink {
            server: ServerAddr {
                host: "127.0.0.1".into(),
                port: 7000,
            },
            locator: Locator([7; 32]),
            mirrors: Vec::new(),
            salt: Salt::from_bytes([9; 16]),
            kdf: KdfProfile::Test,
            passphrase: pass.map(Passphrase::new),
        }
    }

    #[test]
    fn round_trip() {
        for p in [None, Some("kobad-lisuf"), Some("with space & ümlaut%")] {
            let l = sample(p);
            assert_eq!(RdvLink::parse(&l.to_uri()).unwrap(), l);
        }
    }

    #[test]
    fn ipv6_and_onion_hosts() {
        let a = ServerAddr::parse("[::1]:80").unwrap();
        assert_eq!(a.to_string(), "[::1]:80");
        let onion = format!("{}:80", onion_host(&[7; 32]));
        assert!(ServerAddr::parse(&onion).unwrap().is_onion());
        // An arti-made address, and what a typo does to it.
        let real = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion:7625";
        assert!(ServerAddr::parse(real).is_ok());
        let typo = real.replacen("2gzy", "2gzz", 1);
        let e = ServerAddr::parse(&typo).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
        let v0 = format!("{}.onion:7625", "a".repeat(56));
        let e = ServerAddr::parse(&v0).unwrap_err().to_string();
        assert!(e.contains("version 3"), "{e}");
        assert!(ServerAddr::parse(&format!("{}.onion:80", "a".repeat(55))).is_err());
        assert!(ServerAddr::parse(&format!("x_y:z.{}.onion:80", "a".repeat(56))).is_err());
        assert!(ServerAddr::parse(&format!("www.{}.onion:80", "a".repeat(56))).is_err());
        assert!(ServerAddr::parse("Example.com:80").is_err());
        assert!(ServerAddr::parse("host:0").is_err());
        assert!(ServerAddr::parse("host:+80").is_err());
        assert!(ServerAddr::parse("host").is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let d = format!("{:?}", sample(Some("secret-words")));
        assert!(!d.contains("secret"), "{d}");
    }
}
