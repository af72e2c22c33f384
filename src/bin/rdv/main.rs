//! The `rdv` command line: a thin layer over the library.
//!
//! - `cli`: the argument schema;
//! - `serve`, `offer`, `accept` (with `delete` and `info`), `answer` (`collect`, and the
//!   answer's side of `offer` and `accept`), `demo`: one subcommand each;
//! - `transport`: which connector the transport flags select;
//! - `term`: logging, progress, prompts and terminal output;
//! - `error`: hints that name command-line flags, around the library's errors.

#![forbid(unsafe_code)]

mod accept;
mod answer;
mod cli;
mod demo;
mod error;
mod offer;
mod serve;
mod term;
mod transport;

use clap::Parser;
use cli::{Cli, Cmd};
use std::time::Duration;

fn main() -> std::process::ExitCode {
    rdv::tor::install_crypto_provider();
    let cli = Cli::parse();
    term::init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve(a) => serve::run(a).await,
            Cmd::Offer(a) => offer::run(a).await,
            Cmd::Accept(a) => accept::run(a).await,
            Cmd::Collect(a) => answer::collect(a).await,
            Cmd::Delete(a) => accept::delete(a).await,
            Cmd::Info(a) => accept::info(a).await,
            Cmd::Demo => demo::run().await,
        }
    });
    // arti keeps background tasks; do not wait for them.
    rt.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error::print(&e);
            std::process::ExitCode::FAILURE
        }
    }
}
