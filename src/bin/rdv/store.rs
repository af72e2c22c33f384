//! `rdv serve --store`: which backend holds the buckets. `redb` (the default) is a database file
//! in the data directory; a PostgreSQL connection string is a database several frontends share.

use crate::cli::ServeArgs;
use crate::config::Origins;
use anyhow::{bail, Result};
use rdv::store::{DiskStoreConfig, PgStoreConfig, StoreParams};
use rdv::ConfigError;

/// The default quota of a PostgreSQL store when none is given: ten million links (some 7 GB in
/// the database). The disk it lives on is not ours to measure, as the data directory's is.
pub(crate) const PG_DEFAULT_QUOTA: u64 = 10_000_000;

/// The store `serve` opens.
pub(crate) enum StoreChoice {
    /// redb in the data directory.
    Redb(DiskStoreConfig),
    /// A shared PostgreSQL database.
    Postgres(Box<PgStoreConfig>),
}

impl StoreChoice {
    /// Links per bucket (testing only: an isolating adversary).
    pub(crate) fn set_bucket_capacity(&mut self, n: usize) {
        match self {
            StoreChoice::Redb(c) => c.bucket_capacity = n,
            StoreChoice::Postgres(c) => c.bucket_capacity = n,
        }
    }
}

/// `--store`'s value: `redb`, or a PostgreSQL connection string, which may hold the database's
/// password (from the configuration file). `Debug` never shows that password.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub(crate) struct Backend(pub(crate) String);

impl Backend {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The value without a password, if it holds one (`--print-config`, `Debug`); one that
    /// does not parse (and might hold one) is not shown.
    pub(crate) fn redacted(&self) -> String {
        if self.0 == "redb" {
            return self.0.clone();
        }
        match PgStoreConfig::new(&self.0) {
            Ok(c) if c.database.get_password().is_some() => c.describe(),
            Ok(_) => self.0.clone(),
            Err(_) => "(a connection string that does not parse)".into(),
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Backend(s.to_owned()))
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Backend").field(&self.redacted()).finish()
    }
}

/// Whether `--store`'s value names PostgreSQL.
fn is_postgres(backend: &str) -> bool {
    backend.starts_with("postgres://")
        || backend.starts_with("postgresql://")
        || backend.contains('=')
}

/// The store settings the flags ask for, checked.
pub(crate) fn choose(a: &ServeArgs, params: StoreParams) -> Result<StoreChoice, ConfigError> {
    let backend = a.store.as_str();
    if backend == "redb" {
        let c = DiskStoreConfig {
            params,
            commit_per_store: a.commit_per_store,
            ..Default::default()
        };
        c.validate()?;
        return Ok(StoreChoice::Redb(c));
    }
    if !is_postgres(backend) {
        return Err(ConfigError::new(
            "store",
            "expected redb or a PostgreSQL connection string (postgres://USER@HOST:PORT/DB, or host=... dbname=...)",
        ));
    }
    let mut c = PgStoreConfig::new(backend)?;
    if c.database.get_password().is_none() {
        if let Some(pw) = std::env::var_os("PGPASSWORD") {
            use std::os::unix::ffi::OsStrExt;
            c.database.password(pw.as_bytes());
        }
    }
    c.params = params;
    c.commit_per_store = a.commit_per_store;
    c.stamp_effort = Some(a.stamp_effort);
    c.validate()?;
    Ok(StoreChoice::Postgres(Box::new(c)))
}

/// A password written into `--store` on the command line is readable by every user of the
/// machine (the process list): refuse it, and say where it goes instead. In the configuration
/// file it is fine, if only its owner can read the file (a warning otherwise).
pub(crate) fn refuse_password_in_argv(a: &ServeArgs, origins: &Origins) -> Result<()> {
    if !is_postgres(a.store.as_str()) {
        return Ok(());
    }
    let has_password = PgStoreConfig::new(a.store.as_str())
        .map(|c| c.database.get_password().is_some())
        .unwrap_or(false);
    if !has_password {
        return Ok(());
    }
    if !origins.in_file("store") {
        bail!("--store holds a password, which every user of this machine can read in the process list: put the connection string in the configuration file (store.backend, --config FILE) or the password in the PGPASSWORD environment variable");
    }
    #[cfg(unix)]
    if let Some(file) = origins.file() {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(file) {
            if meta.permissions().mode() & 0o077 != 0 {
                eprintln!(
                    "WARNING: {} holds the database password (store.backend) and other users can read it: chmod 600 it",
                    file.display()
                );
            }
        }
    }
    Ok(())
}

/// `text` with every password of a connection string in it replaced by `****` (the
/// `user:PASSWORD@` of a URL, a `password=` pair): for messages that quote what the user wrote,
/// such as the configuration file parser's, which shows the offending line.
pub(crate) fn redact_passwords(text: &str) -> String {
    redact_key_values(&redact_urls(text))
}

/// The `user:PASSWORD@` of every URL in `text`. The password may hold any character but
/// white space (a raw `/`, `?`, `@` or quote included): everything from the first `:` after
/// `://` to the last `@` before the next white space goes.
fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(char::is_whitespace).unwrap_or(tail.len());
        let url = &tail[..end];
        match (url.find(':'), url.rfind('@')) {
            (Some(colon), Some(at)) if colon < at && !url[..colon].contains('/') => {
                out.push_str(&url[..colon + 1]);
                out.push_str("****");
                out.push_str(&url[at..]);
            }
            _ => out.push_str(url),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The value of every `password=` pair (libpq's key/value form and URL query parameters), with
/// white space around `=` allowed, as libpq reads it: a single-quoted value up to its closing
/// quote, any other up to the next white space that no backslash escapes (so the rest of a URL
/// query after it goes too).
fn redact_key_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("password") {
        let (head, tail) = rest.split_at(i + "password".len());
        out.push_str(head);
        let after_key = tail.trim_start();
        let Some(value) = after_key.strip_prefix('=') else {
            rest = tail;
            continue;
        };
        let value = value.trim_start();
        out.push_str(&tail[..tail.len() - value.len()]);
        out.push_str("****");
        let (body, quote) = match value.strip_prefix('\'') {
            Some(quoted) => (quoted, true),
            None => (value, false),
        };
        let mut escaped = false;
        let end = body.char_indices().find(|&(_, c)| {
            let end = !escaped && if quote { c == '\'' } else { c.is_whitespace() };
            escaped = !escaped && c == '\\';
            end
        });
        let len = match (end, quote) {
            (Some((j, _)), true) => j + 2,
            (Some((j, _)), false) => j,
            (None, _) => value.len(),
        };
        rest = &value[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact_passwords;

    #[test]
    fn passwords_are_redacted_from_quoted_text() {
        let line = r#"backend = "postgres://rdv:s3cr\et@db:5432/x" extra"#;
        let r = redact_passwords(line);
        assert!(!r.contains("s3cr"), "{r}");
        assert!(r.contains("postgres://rdv:****@db:5432/x"), "{r}");
        let kv = redact_passwords("host=db password=s3cret user=rdv");
        assert_eq!(kv, "host=db password=**** user=rdv");
        let q = redact_passwords("postgres://db/x?password=s3cret&sslmode=disable");
        assert_eq!(q, "postgres://db/x?password=****");
        assert_eq!(
            redact_passwords("postgres://rdv@db/x"),
            "postgres://rdv@db/x"
        );
        assert_eq!(redact_passwords("no url here"), "no url here");
    }

    /// The forms that slipped through before: a raw `/` or `@` in a URL's password, spaces
    /// around `=`, a quoted value with spaces and an escaped quote.
    #[test]
    fn passwords_with_awkward_characters_are_redacted_whole() {
        let r = redact_passwords("postgres://rdv:pa/ss@w?rd@db:5432/x");
        assert_eq!(r, "postgres://rdv:****@db:5432/x");
        let r = redact_passwords("host=db password = s3cret user=rdv");
        assert_eq!(r, "host=db password = **** user=rdv");
        let r = redact_passwords(r"host=db password='s3 cr\'et' user=rdv");
        assert_eq!(r, "host=db password=**** user=rdv");
        assert!(!redact_passwords("password=' open ended").contains("open"));
        // libpq ends an unquoted value only at white space, and a backslash escapes it.
        assert_eq!(redact_passwords("password=pa&ss x"), "password=**** x");
        assert_eq!(redact_passwords(r"password=sec\ ret x"), "password=**** x");
        assert_eq!(redact_passwords("password=\"abc x"), "password=**** x");
        let r = redact_passwords("postgres://rdv:pa'ss@db/x");
        assert_eq!(r, "postgres://rdv:****@db/x");
        // Not a char boundary anywhere near: no panic on other scripts.
        let r = redact_passwords("пароль password=секрет postgres://ю:я@db/x");
        assert!(!r.contains("секрет") && !r.contains(":я@"), "{r}");
        // A port and a path are not a password.
        assert_eq!(
            redact_passwords("postgres://db:5432/x"),
            "postgres://db:5432/x"
        );
        assert_eq!(
            redact_passwords("the password is required"),
            "the password is required"
        );
    }
}
