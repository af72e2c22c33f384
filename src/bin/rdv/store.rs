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
    c.validate()?;
    Ok(StoreChoice::Postgres(Box::new(c)))
}

/// A password written into `--store` on the command line is readable by every user of the
/// machine (the process list): refuse it, and say where it goes instead.
pub(crate) fn refuse_password_in_argv(a: &ServeArgs, origins: &Origins) -> Result<()> {
    if origins.in_file("store") || !is_postgres(&a.store) {
        return Ok(());
    }
    let has_password = PgStoreConfig::new(&a.store)
        .map(|c| c.database.get_password().is_some())
        .unwrap_or(false);
    if has_password {
        bail!("--store holds a password, which every user of this machine can read in the process list: put the connection string in the configuration file (store.backend, --config FILE) or the password in the PGPASSWORD environment variable");
    }
    Ok(())
}
