//! The agent: a long-running client (`rdv agent`) that keeps Tor warm, owns the client state
//! (offers waiting for answers) across restarts, carries out the answer flow's schedule over
//! hours, and serves a local API to the command line and to applications (docs/AGENT.md).
//!
//! This part of the library holds what is not IO-bound: the API's messages ([`api`]), the state
//! directory ([`state`]), and the pure scheduling decisions ([`schedule`]). The process itself
//! (the socket, the Tor client, the tasks) is `rdv agent` in the binary.

pub mod api;
pub mod schedule;
pub mod state;
