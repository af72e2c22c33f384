//! One subcommand each.

pub(crate) mod agent;
pub(crate) mod cluster;
pub(crate) mod gc;
pub(crate) mod group_commit;
pub(crate) mod load;
pub(crate) mod scale;
pub(crate) mod tor;
