//! Restricted discovery (onion-service client authorization): the keys, in the formats C tor and
//! arti share.
//!
//! A private rendezvous node publishes its descriptor encrypted to a list of client keys; only a
//! client holding one of the matching secrets can find the service at all. Each authorized client
//! has an X25519 key pair:
//! - the operator puts the public half in a directory, one `NAME.auth` file per client, holding
//!   `descriptor:x25519:<BASE32 public key>` (C tor's `authorized_clients/` format);
//! - the client keeps the secret half in a file holding
//!   `<56-character onion address>:descriptor:x25519:<BASE32 secret key>` (C tor's
//!   `ClientOnionAuthDir` `.auth_private` format, so the same file works with a C tor client).

use data_encoding::BASE32_NOPAD;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// The prefix both halves share after the address.
const KEY_PREFIX: &str = "descriptor:x25519:";

/// Most bytes read from a key file (a real one is under 120).
const KEY_FILE_LIMIT: u64 = 4096;

/// A problem with a client key or the authorized-clients directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthKeyError {
    /// The onion address is not a valid v3 address.
    #[error("{0:?} is not a valid v3 onion address")]
    BadAddress(String),
    /// A key line is malformed.
    #[error("{what}: expected {expected}")]
    Malformed {
        /// Which file or line.
        what: String,
        /// The format expected.
        expected: &'static str,
    },
    /// A file or directory could not be read.
    #[error("cannot read {}", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The authorized-clients directories hold no key at all: the service would be
    /// unreachable for everybody.
    #[error("no authorized client key (files NAME.auth containing descriptor:x25519:<base32 key>) in {}: the service would be unreachable for everybody", .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NoClients(Vec<PathBuf>),
    /// A file in the authorized-clients directory is unusable (arti would skip it silently).
    #[error("{}: {reason}", .path.display())]
    BadClientFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// An onion address as the key files spell it: 56 lower-case characters, without `.onion`.
fn onion56(address: &str) -> Result<String, AuthKeyError> {
    let host = address.split(':').next().unwrap_or_default();
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix(".onion").unwrap_or(&host).to_string();
    let full = format!("{host}.onion");
    tor_hsservice::HsId::from_str(&full)
        .map_err(|_| AuthKeyError::BadAddress(address.to_string()))?;
    Ok(host)
}

/// 32 bytes from unpadded base32 (either case).
fn decode_key(b32: &str) -> Option<Zeroizing<[u8; 32]>> {
    let bytes = Zeroizing::new(
        BASE32_NOPAD
            .decode(b32.to_ascii_uppercase().as_bytes())
            .ok()?,
    );
    let mut out = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return None;
    }
    out.copy_from_slice(&bytes);
    Some(out)
}

/// A client's secret key for one onion service.
pub struct ClientKey {
    onion56: String,
    secret: StaticSecret,
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKey")
            .field("service", &self.onion56)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl ClientKey {
    /// A fresh key for the service at `address` (`….onion`, with or without a port), from 32
    /// random bytes the caller draws from the OS.
    pub fn from_random(address: &str, random: [u8; 32]) -> Result<Self, AuthKeyError> {
        let random = Zeroizing::new(random);
        Ok(ClientKey {
            onion56: onion56(address)?,
            secret: StaticSecret::from(*random),
        })
    }

    /// The service this key is for, `….onion`.
    pub fn service(&self) -> String {
        format!("{}.onion", self.onion56)
    }

    /// The line the service operator puts in `NAME.auth`: `descriptor:x25519:<BASE32>`.
    pub fn public_line(&self) -> String {
        public_line(&PublicKey::from(&self.secret))
    }

    /// The private file's content, one line (C tor's `.auth_private` format). A secret.
    pub fn to_private_line(&self) -> Zeroizing<String> {
        let b32 = Zeroizing::new(BASE32_NOPAD.encode(self.secret.as_bytes()));
        Zeroizing::new(format!("{}:{KEY_PREFIX}{}", self.onion56, &*b32))
    }

    /// Parse the private file's content.
    pub fn from_private_line(text: &str) -> Result<Self, AuthKeyError> {
        let malformed = || AuthKeyError::Malformed {
            what: "client key".into(),
            expected: "<56-character onion address>:descriptor:x25519:<base32 secret key>",
        };
        let text = text.trim();
        let (onion, rest) = text.split_once(':').ok_or_else(malformed)?;
        let b32 = rest.strip_prefix(KEY_PREFIX).ok_or_else(malformed)?;
        let bytes = decode_key(b32).ok_or_else(malformed)?;
        Ok(ClientKey {
            onion56: onion56(onion)?,
            secret: StaticSecret::from(*bytes),
        })
    }

    /// Read a private key file.
    pub fn read(path: &Path) -> Result<Self, AuthKeyError> {
        let text = read_limited(path)?;
        ClientKey::from_private_line(&text).map_err(|e| match e {
            AuthKeyError::Malformed { expected, .. } => AuthKeyError::Malformed {
                what: path.display().to_string(),
                expected,
            },
            e => e,
        })
    }

    /// Whether this key is for the service at `address` (host, with or without `.onion`).
    pub fn is_for(&self, address: &str) -> bool {
        onion56(address).is_ok_and(|o| o == self.onion56)
    }
}

/// `descriptor:x25519:<BASE32>` for a public key.
fn public_line(pk: &PublicKey) -> String {
    format!("{KEY_PREFIX}{}", BASE32_NOPAD.encode(pk.as_bytes()))
}

fn read_limited(path: &Path) -> Result<Zeroizing<String>, AuthKeyError> {
    use std::io::Read;
    let mut text = Zeroizing::new(String::new());
    std::fs::File::open(path)
        .and_then(|f| f.take(KEY_FILE_LIMIT).read_to_string(&mut text))
        .map_err(|source| AuthKeyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(text)
}

/// Parse a public key line (`descriptor:x25519:<BASE32>`, surrounding whitespace ignored).
pub fn parse_public_line(text: &str) -> Option<[u8; 32]> {
    let b32 = text.trim().strip_prefix(KEY_PREFIX)?;
    decode_key(b32).map(|k| *k)
}

/// Whether `name` is a client nickname arti accepts for `NAME.auth`: `[a-z0-9_-]`, not empty,
/// not starting with `-`.
fn valid_nickname(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// arti reads the keys only from a directory and files that nobody but their owner (this user)
/// can read or write, and silently skips the rest: refuse what it would skip.
fn private_to_owner(path: &Path, fix: &str) -> Result<(), AuthKeyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|source| AuthKeyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let me = rustix::process::geteuid().as_raw();
        let reason = if meta.mode() & 0o077 != 0 {
            format!(
                "its mode is {:o}: arti ignores keys that others can read or write ({fix} {})",
                meta.mode() & 0o777,
                path.display()
            )
        } else if meta.uid() != me && meta.uid() != 0 {
            format!(
                "it belongs to user {}, not to this user ({me}): arti ignores it",
                meta.uid()
            )
        } else {
            return Ok(());
        };
        Err(AuthKeyError::BadClientFile {
            path: path.to_path_buf(),
            reason,
        })
    }
    #[cfg(not(unix))]
    {
        let _ = (path, fix);
        Ok(())
    }
}

/// Check an authorized-clients directory as arti will read it, and return the clients' names
/// (perhaps none). Every `*.auth` file must have a valid name and key (arti would skip a bad one
/// with a warning: here it is an error, so that a typo does not lock a client out silently);
/// other files are ignored, as arti does.
pub fn check_authorized_clients(dir: &Path) -> Result<Vec<String>, AuthKeyError> {
    let io = |source| AuthKeyError::Io {
        path: dir.to_path_buf(),
        source,
    };
    private_to_owner(dir, "chmod 700")?;
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("auth") {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if !valid_nickname(&name) {
            return Err(AuthKeyError::BadClientFile {
                path,
                reason: "the name before .auth must be lower-case letters, digits, _ and -, not starting with -".into(),
            });
        }
        private_to_owner(&path, "chmod 600")?;
        let text = read_limited(&path)?;
        if parse_public_line(&text).is_none() {
            return Err(AuthKeyError::BadClientFile {
                path,
                reason: "expected one line descriptor:x25519:<base32 public key> (the line rdv keygen prints)".into(),
            });
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// The client nickname of the server's own health probe.
const PROBE_NICKNAME: &str = "rdv_health_probe";

/// A restricted server's key for its own health probe: the probe connects to the service as a
/// client would, so it needs a key the service accepts. A fresh one at every start, in a
/// directory of the server's own (never the operator's authorized-clients directory):
/// `authorized/rdv_health_probe.auth` for the service, `client/` for the server's Tor client.
pub struct ProbeKey {
    dir: PathBuf,
    secret: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for ProbeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeKey")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Create `dir` afresh with mode 0700.
fn fresh_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Write a new file with mode 0600.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

impl ProbeKey {
    /// A new probe key under `dir` (replacing an earlier one), from 32 random bytes.
    pub fn create(dir: &Path, random: [u8; 32]) -> Result<Self, AuthKeyError> {
        let secret = Zeroizing::new(random);
        let io = |source| AuthKeyError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let key = ProbeKey {
            dir: dir.to_path_buf(),
            secret,
        };
        fresh_private_dir(&key.authorized_dir()).map_err(io)?;
        fresh_private_dir(&key.client_dir()).map_err(io)?;
        let public = public_line(&PublicKey::from(&StaticSecret::from(*key.secret)));
        write_private(
            &key.authorized_dir().join(format!("{PROBE_NICKNAME}.auth")),
            &public,
        )
        .map_err(io)?;
        Ok(key)
    }

    /// The directory of the probe's public key, for the service (next to the operator's).
    pub fn authorized_dir(&self) -> PathBuf {
        self.dir.join("authorized")
    }

    /// The client keystore directory for the server's Tor client.
    pub fn client_dir(&self) -> PathBuf {
        self.dir.join("client")
    }

    /// Once the service's address is known: put the secret where the server's Tor client looks.
    pub fn activate(&self, address: &str) -> Result<(), AuthKeyError> {
        let key = ClientKey::from_random(address, *self.secret)?;
        let path = self.client_dir().join("probe.auth_private");
        let _ = std::fs::remove_file(&path);
        write_private(&path, &key.to_private_line())
            .map_err(|source| AuthKeyError::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid v3 address (the Tor Project's).
    const ONION: &str = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion";

    #[test]
    fn private_line_round_trips_and_matches_public() {
        let k = ClientKey::from_random(&format!("{ONION}:7625"), [7u8; 32]).unwrap();
        let line = k.to_private_line();
        assert!(line.starts_with(&ONION[..56]));
        let back = ClientKey::from_private_line(&format!("  {}\n", &*line)).unwrap();
        assert_eq!(back.public_line(), k.public_line());
        assert!(back.is_for(ONION) && back.is_for(&ONION[..56]));
        assert_eq!(back.service(), ONION);
        let pk = parse_public_line(&k.public_line()).unwrap();
        assert_eq!(
            pk,
            *PublicKey::from(&StaticSecret::from([7u8; 32])).as_bytes()
        );
        // Lower-case base32 is accepted, as arti and C tor do.
        let lower = format!(
            "{KEY_PREFIX}{}",
            k.public_line()[KEY_PREFIX.len()..].to_lowercase()
        );
        assert_eq!(parse_public_line(&lower), Some(pk));
    }

    #[test]
    fn debug_hides_the_secret() {
        let k = ClientKey::from_random(ONION, [9u8; 32]).unwrap();
        let d = format!("{k:?}");
        let secret = BASE32_NOPAD.encode(&[9u8; 32]);
        assert!(!d.contains(&secret) && d.contains("redacted"), "{d}");
    }

    #[test]
    fn bad_keys_and_addresses_are_refused() {
        assert!(matches!(
            ClientKey::from_random("example.com", [1; 32]),
            Err(AuthKeyError::BadAddress(_))
        ));
        // A wrong checksum (last character changed).
        let bad = format!("{}e.onion", &ONION[..55]);
        assert!(ClientKey::from_random(&bad, [1; 32]).is_err());
        for text in [
            "",
            "garbage",
            &format!("{}:descriptor:x25519:", &ONION[..56]),
            &format!("{}:descriptor:x25519:AAAA", &ONION[..56]),
            &format!(
                "{}:descriptor:ed25519:{}",
                &ONION[..56],
                BASE32_NOPAD.encode(&[1; 32])
            ),
        ] {
            assert!(ClientKey::from_private_line(text).is_err(), "{text:?}");
        }
        assert_eq!(parse_public_line("descriptor:x25519:AAAA"), None);
    }

    /// Write a file with mode 0600.
    fn write_key(path: &Path, text: &str) {
        let _ = std::fs::remove_file(path);
        write_private(path, text).unwrap();
    }

    #[test]
    fn authorized_directory_is_checked_like_arti_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let e = check_authorized_clients(dir.path())
                .unwrap_err()
                .to_string();
            assert!(e.contains("chmod 700"), "{e}");
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        assert!(check_authorized_clients(dir.path()).unwrap().is_empty());
        let k = ClientKey::from_random(ONION, [3; 32]).unwrap();
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        write_key(&dir.path().join("alice.auth"), &(k.public_line() + "\n"));
        assert_eq!(check_authorized_clients(dir.path()).unwrap(), ["alice"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let f = dir.path().join("alice.auth");
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = check_authorized_clients(dir.path())
                .unwrap_err()
                .to_string();
            assert!(e.contains("alice.auth") && e.contains("chmod 600"), "{e}");
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        write_key(&dir.path().join("Bob.auth"), &k.public_line());
        let e = check_authorized_clients(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("Bob.auth"), "{e}");
        std::fs::remove_file(dir.path().join("Bob.auth")).unwrap();
        write_key(&dir.path().join("carol.auth"), "descriptor:x25519:nope");
        let e = check_authorized_clients(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("carol.auth"), "{e}");
        assert!(check_authorized_clients(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn the_probe_key_pairs_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = ProbeKey::create(dir.path(), [5; 32]).unwrap();
        assert_eq!(
            check_authorized_clients(&p.authorized_dir()).unwrap(),
            [PROBE_NICKNAME]
        );
        p.activate(ONION).unwrap();
        let k = ClientKey::read(&p.client_dir().join("probe.auth_private")).unwrap();
        let public =
            std::fs::read_to_string(p.authorized_dir().join("rdv_health_probe.auth")).unwrap();
        assert_eq!(k.public_line(), public);
        assert!(k.is_for(ONION));
        // A restart replaces it.
        let q = ProbeKey::create(dir.path(), [6; 32]).unwrap();
        assert!(std::fs::read_dir(q.client_dir()).unwrap().next().is_none());
        assert!(!format!("{q:?}").contains(&BASE32_NOPAD.encode(&[6; 32])));
    }
}
