//! The terminal: logging, bootstrap progress, prompts.

use anyhow::Result;
use rdv::proto::Passphrase;
use std::io::{IsTerminal, Write};

/// Log to standard error; `RUST_LOG` overrides the default filter.
pub(crate) fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        EnvFilter::new(
            "info,arti_client=warn,tor_=warn,tor_guardmgr=error,tor_relay_selection=error,tor_circmgr=error",
        )
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// A progress callback that prints `what: <arti's status>` on standard error: one line updated
/// in place on a terminal, one line per change otherwise.
pub(crate) fn progress_printer(what: &'static str) -> impl Fn(f32, &str) + Send + 'static {
    let tty = std::io::stderr().is_terminal();
    let last = std::sync::Mutex::new(String::new());
    move |frac, desc| {
        // arti's description already starts with the percentage.
        let line = format!("{what}: {desc}");
        let Ok(mut last) = last.lock() else { return };
        if *last == line {
            return;
        }
        if tty {
            eprint!("\r{line:<100.100}");
            if frac >= 1.0 {
                eprintln!();
            }
        } else {
            eprintln!("{line}");
        }
        *last = line;
    }
}

/// Ask for a passphrase on the terminal; `None` when standard input is not a terminal or the
/// answer is empty.
pub(crate) fn read_passphrase_interactive() -> Result<Option<Passphrase>> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    eprint!("Passphrase: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let p = line.trim_end_matches(['\n', '\r']).to_string();
    Ok((!p.is_empty()).then(|| Passphrase::new(p)))
}
